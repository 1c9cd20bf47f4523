#!/usr/bin/env bash
# A cluster across network namespaces: the coordinator and three workers each in its own
# namespace, joined by veth pairs to a bridge, every one-way hop between hosts delayed by the
# same time. For each delay, with speculation off and on (alternating, a fresh cluster each
# time), prints one stream's and eight streams' decode tokens/s next to the single-stream
# bound without speculation (every stage's measured time per token plus four hops of the
# delay; speculation can beat it, several tokens per round).
#
#   sudo deploy/bench-netns.sh [MODEL] [GEN_TOKENS]        DELAYS="0 0.5 2 5" (ms per hop;
#                                                          "none": no relay either)
#                                                          MODES="off on" (speculation; "draft":
#                                                          prompt lookup and a draft model, the
#                                                          model's first DRAFT_LAYERS=1 layers,
#                                                          drafting while its own probability
#                                                          is at least DRAFT_P_MIN=0.75)
#                                                          ROUNDS=1 (each delay's modes run
#                                                          this many times, alternating; with
#                                                          more than one, a table of each
#                                                          cell's median follows)
#
# The delay: tc netem on every host's link where the kernel has sch_netem; otherwise
# deploy/delay-relay.py, a userspace relay in every host's namespace that an iptables nat
# OUTPUT rule hands each TCP connection to another host, and that holds every byte for the
# delay in both directions (the table header says which). The relay costs a little even at
# 0 ms: the 0 row shows it. Connection setup is not delayed by the relay, only the bytes.
#
# Needs root, iproute2 (ip, tc), python3 and iptables (for the relay) and the release
# binaries (swift build -c release). Removes every namespace, relay and process it made (the
# iptables rules live in the namespaces), also when interrupted. One stream runs three prompts:
# code with repeated structure and prose (deploy/prompts/), where prompt lookup finds many and
# few drafts, and the bench's filler words; eight streams run the filler.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
MODEL="$(realpath "${1:-models/demo/llama-cluster-demo.q8_0.gguf}")"
GEN="${2:-64}"
DELAYS="${DELAYS:-0 0.5 2 5}"
MODES="${MODES:-off on}"
DRAFT_P_MIN="${DRAFT_P_MIN:-0.75}"
ROUNDS="${ROUNDS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS: 1 to 99, not '$ROUNDS'" >&2; exit 2; }
[[ "$DRAFT_P_MIN" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || { echo "DRAFT_P_MIN: a number in 0...1, not '$DRAFT_P_MIN'" >&2; exit 2; }
[[ "${DRAFT_LAYERS:-1}" =~ ^[1-9][0-9]{0,3}$ ]] || { echo "DRAFT_LAYERS: a positive layer count, not '${DRAFT_LAYERS}'" >&2; exit 2; }
for m in $MODES; do
    case "$m" in off|on|draft) ;; *) echo "MODES: off, on or draft, not '$m'" >&2; exit 2 ;; esac
done
BIN="$(/opt/swift/usr/bin/swift build -c release --show-bin-path)"
S="$(printf %04x $((RANDOM)))"
HUB="lcb$S-hub"
HOSTS=(coord w1 w2 w3)
WORK="$(mktemp -d)"
pids=()
relay_pids=()
FG=""  # the bench running now: in the background, waited on, so a signal is handled at once
RELAY_PORT=15001
RELAY_MARK=0x4c43   # the relay's own connections carry it, and the redirect spares them
ns() { echo "lcb$S-$1"; }
addr() { echo "10.214.$((0x${S:0:2} % 200)).$(( $1 + 1 ))"; }
SUBNET="$(addr -1)/24"
stop() {  # pids: SIGTERM, and SIGKILL for any still there after 5 s (a worker whose
          # coordinator is gone can wait its whole leave timeout)
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$@" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$@" 2>/dev/null || true
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
stop_cluster() { stop "${pids[@]}"; pids=(); }
stop_relays() { stop "${relay_pids[@]}"; relay_pids=(); }
cleanup() {
    if [ -n "$FG" ]; then stop "$FG"; fi
    stop_cluster
    stop_relays
    for h in "${HOSTS[@]}"; do ip netns del "$(ns "$h")" 2>/dev/null || true; done
    ip netns del "$HUB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
for i in "${!HOSTS[@]}"; do
    n="$(ns "${HOSTS[$i]}")"
    ip netns add "$n"
    ip link add "e$i$S" netns "$n" type veth peer name "h$i$S" netns "$HUB"
    ip -n "$n" addr add "$(addr "$i")/24" dev "e$i$S"
    ip -n "$n" link set "e$i$S" up
    ip -n "$n" link set lo up
    ip -n "$HUB" link set "h$i$S" master br0
    ip -n "$HUB" link set "h$i$S" up
done
# tc netem needs the kernel's sch_netem; without it every host's outgoing TCP connections to
# the others go through deploy/delay-relay.py in its own namespace (the relay's connections,
# marked, are spared; so are a host's connections to itself).
METHOD=netem
for i in "${!HOSTS[@]}"; do
    ip netns exec "$(ns "${HOSTS[$i]}")" tc qdisc add dev "e$i$S" root netem delay 0ms 2>/dev/null || METHOD=relay
done
if [ "$METHOD" = relay ]; then
    PY="$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)" && command -v iptables >/dev/null ||
        { echo "tc netem unavailable, and the relay needs python3 and iptables (apt-get install iptables)" >&2; exit 1; }
    echo "tc netem unavailable: delay added by deploy/delay-relay.py on every TCP connection between namespaces" >&2
    for i in "${!HOSTS[@]}"; do
        n="$(ns "${HOSTS[$i]}")"
        ip netns exec "$n" iptables -t nat -A OUTPUT -p tcp -m mark --mark "$RELAY_MARK" -j RETURN
        ip netns exec "$n" iptables -t nat -A OUTPUT -p tcp -d "$(addr "$i")" -j RETURN
        ip netns exec "$n" iptables -t nat -A OUTPUT -p tcp -d "$SUBNET" -j REDIRECT --to-ports "$RELAY_PORT"
    done
fi
COORD="$(addr 0)"
DRAFT="$WORK/draft.gguf"
case " $MODES " in
    *" draft "*) "$BIN/llama-coord" first-layers --model "$MODEL" --layers "${DRAFT_LAYERS:-1}" --out "$DRAFT" >/dev/null ;;
esac

start_relays() {  # delay ms: one relay in every host's namespace
    for h in "${HOSTS[@]}"; do
        ip netns exec "$(ns "$h")" "$PY" deploy/delay-relay.py --port "$RELAY_PORT" --delay-ms "$1" \
            --mark "$RELAY_MARK" >"$WORK/relay-$h.log" 2>&1 & relay_pids+=($!)
    done
    for h in "${HOSTS[@]}"; do
        for _ in $(seq 100); do grep -q listening "$WORK/relay-$h.log" 2>/dev/null && continue 2; sleep 0.05; done
        echo "delay relay in $h did not start:" >&2; cat "$WORK/relay-$h.log" >&2; exit 1
    done
}

# Stops the relays; each has logged how many connections it relayed. Every worker connects
# to the coordinator, so a worker's relay that saw none means the redirect did not work.
finish_relays() {
    stop_relays
    for h in "${HOSTS[@]}"; do
        ! grep -q Traceback "$WORK/relay-$h.log" || { echo "the relay in $h hit an error:" >&2; cat "$WORK/relay-$h.log" >&2; }
    done
    for h in w1 w2 w3; do
        grep -Eq 'stopped: [1-9][0-9]* connections' "$WORK/relay-$h.log" || {
            echo "no connection from $h went through its relay: the iptables redirect did not work; measured delays are wrong" >&2
            cat "$WORK/relay-$h.log" >&2; exit 1; }
    done
}

start_cluster() {  # speculation off|on|draft
    local manifest="$WORK/cluster-$1.yaml"
    {
        echo "model: $MODEL"
        echo "coordinator: { control: \"tcp://$COORD:5555\", http: \"127.0.0.1:8080\", threads: 1 }"
        echo "insecure: true      # a test network inside this machine"
        echo "max_sequences: 8"
        echo "heartbeat_timeout: 5"
        case "$1" in
            on) echo "speculative: { ngram: 3, draft: 8 }" ;;
            draft) echo "speculative: { ngram: 3, draft: 8, model: \"$DRAFT\", p_min: $DRAFT_P_MIN }" ;;
        esac
        echo "workers: [{ name: w1, threads: 1 }, { name: w2, threads: 1 }, { name: w3, threads: 1 }]"
    } > "$manifest"
    ip netns exec "$(ns coord)" "$BIN/llama-coord" start --manifest "$manifest" >"$WORK/coord.log" 2>&1 & pids+=($!)
    for i in 1 2 3; do
        ip netns exec "$(ns "w$i")" "$BIN/llama-worker" join --coordinator "tcp://$COORD:5555" --name "w$i" --threads 1 \
            --model "$MODEL" --listen "tcp://$(addr "$i"):0" --insecure >"$WORK/w$i.log" 2>&1 & pids+=($!)
    done
    for _ in $(seq 600); do
        ip netns exec "$(ns coord)" curl -sf http://127.0.0.1:8080/health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "cluster not ready; logs:" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1
}

bench() {  # concurrency [prompt file] -> JSON on stdout (exec: run in the background, its pid is the bench's)
    local prompt=(--prompt-tokens 64)
    [ -n "${2:-}" ] && prompt=(--prompt-file "$2")
    exec ip netns exec "$(ns coord)" "$BIN/llama-coord" bench --endpoint http://127.0.0.1:8080 --model "$MODEL" \
        "${prompt[@]}" --gen-tokens "$GEN" --concurrency "$1" --repetitions 3 --json
}

echo "model $MODEL, coordinator + 3 workers (1 thread each) in namespaces, $GEN tokens per stream"
if [ "$METHOD" = netem ]; then
    echo "delay per one-way hop: tc netem on every host's link"
else
    echo "delay per one-way hop: deploy/delay-relay.py on every TCP connection between hosts (no sch_netem here)"
fi
echo "1 stream: a prompt of code with repeated structure (deploy/prompts/code.txt) and of prose (prose.txt), tok/s"
echo "and the share of drafted tokens accepted; 8 streams: filler words (llama-coord bench's prompt), tok/s"
HEADER=("delay ms" "round" "speculation" "1 code" "accept" "1 prose" "accept" "1 filler" "8 filler" "8 / 1" "1-stream bound tok/s")
FORMAT="%-9s %-6s %-12s %10s %12s %10s %12s %10s %10s %8s %22s\n"
# shellcheck disable=SC2059
printf "$FORMAT" "${HEADER[@]}"
redirect() {  # -A | -D: the relay's redirect rule in every host's namespace
    for i in "${!HOSTS[@]}"; do
        ip netns exec "$(ns "${HOSTS[$i]}")" iptables -t nat "$1" OUTPUT -p tcp -d "$SUBNET" -j REDIRECT --to-ports "$RELAY_PORT"
    done
}
for label in $DELAYS; do
    d="$label"
    [ "$label" = none ] && d=0  # "none": nothing added, not even the relay
    if [ "$METHOD" = netem ]; then
        for i in "${!HOSTS[@]}"; do ip netns exec "$(ns "${HOSTS[$i]}")" tc qdisc change dev "e$i$S" root netem delay "${d}ms"; done
    elif [ "$label" = none ]; then
        redirect -D
    else
        start_relays "$d"
    fi
    rm -f "$WORK/stages.json"  # the stage times of the run without speculation, for both rows' bound
    for round in $(seq "$ROUNDS"); do
    for spec in $MODES; do
        start_cluster "$spec"
        bench 1 "$PWD/deploy/prompts/code.txt" >"$WORK/code.json" & FG=$!; wait "$FG"
        bench 1 "$PWD/deploy/prompts/prose.txt" >"$WORK/prose.json" & FG=$!; wait "$FG"
        bench 1 >"$WORK/one.json" & FG=$!; wait "$FG"
        if [ "$spec" = off ]; then
            # Each worker's tokens/s reaches the coordinator with its heartbeat (every 0.5 s; a
            # rate needs 10 ms of work): let the last ones of the one-stream run arrive first.
            sleep 1.2 & FG=$!; wait "$FG"
            ip netns exec "$(ns coord)" curl -sf http://127.0.0.1:8080/status >"$WORK/status.json"
        fi
        bench 8 >"$WORK/eight.json" & FG=$!; wait "$FG"; FG=""
        stop_cluster
        # A frame timeout or a lost worker replays the requests in flight: the tokens stay the
        # same, but the timing and the drafting (its pauses start again) do not; such rows are marked.
        recoveries="$(grep -cE "did not come back in time|missing: no heartbeat|replaying [0-9]+ requests" "$WORK/coord.log" || true)"
        python3 - "$label" "$spec" "$WORK/one.json" "$WORK/eight.json" "$WORK/status.json" "$WORK/stages.json" \
            "$WORK/code.json" "$WORK/prose.json" "$round" "$WORK/rows.jsonl" "$recoveries" <<'PY'
import json, os, sys
# A token without speculation crosses four hops (coordinator -> w1 -> w2 -> w3 -> coordinator),
# each one-way hop delayed d ms (netem on the sender's link, or the connection's one relay,
# which delays both directions), and waits for every stage's compute: the bound is
# 1 / (sum of stage seconds per token + 4 d). Speculation verifies several tokens a round and
# can beat it; its rows show the bound of the run without it (its own stage times are per
# token of batched verification, which is not the same thing).
label, spec, status, saved = sys.argv[1], sys.argv[2], sys.argv[5], sys.argv[6]
d = 0.0 if label == "none" else float(label)
one, eight = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
r1 = one["aggregate_decode_tokens_per_second"]["mean"]
def single(path):
    r = json.load(open(path))
    drafted, accepted = r.get("drafted_tokens", 0), r.get("accepted_draft_tokens", 0)
    return r["aggregate_decode_tokens_per_second"]["mean"], (f"{100 * accepted / drafted:.0f}% of {drafted}" if drafted else "-")
(code, code_acc), (prose, prose_acc) = single(sys.argv[7]), single(sys.argv[8])
r8 = eight["aggregate_decode_tokens_per_second"]["mean"]
if spec == "off":
    stages = [1 / w["tokens_per_second"] if w.get("tokens_per_second") else None for w in json.load(open(status))["workers"]]
    with open(saved, "w") as f:
        json.dump(stages, f)
else:
    stages = json.load(open(saved)) if os.path.exists(saved) else None
bound = "-" if not stages or None in stages else f"{1 / (sum(stages) + 4 * d / 1000):.1f}"
recoveries = int(sys.argv[11] or 0)
print(f"{label:<9s} {sys.argv[9]:<6s} {spec:<12s} {code:10.1f} {code_acc:>12s} {prose:10.1f} {prose_acc:>12s} {r1:10.1f} {r8:10.1f} {r8 / r1:8.2f} {bound:>22s}"
      + (f"  (a recovery: {recoveries} events in the coordinator's log)" if recoveries else ""))
texts = {k: (r.get("texts"), r.get("text_digest")) for k, r in
         (("code", json.load(open(sys.argv[7]))), ("prose", json.load(open(sys.argv[8]))), ("filler", one), ("filler x8", eight))}
with open(sys.argv[10], "a") as f:
    f.write(json.dumps({"label": label, "spec": spec, "code": code, "code_acc": code_acc, "prose": prose, "prose_acc": prose_acc,
                        "one": r1, "eight": r8, "bound": bound, "texts": texts}) + "\n")
PY
    done
    done
    if [ "$METHOD" = relay ] && [ "$label" = none ]; then redirect -A
    elif [ "$METHOD" = relay ]; then finish_relays; fi
done
# Greedy text does not depend on the delay, the speculation or the round: every stream of a
# prompt must have completed the same text everywhere.
python3 - "$WORK/rows.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
bad = []
for prompt in ("code", "prose", "filler", "filler x8"):
    seen = {tuple(r["texts"][prompt]) for r in rows}
    digests = {d for _, d in seen}
    if len(digests) != 1 or any(n != 1 for n, _ in seen):
        bad.append(f"{prompt}: " + ", ".join(f"{r['label']}/{r['spec']} {r['texts'][prompt][0]} text(s) {r['texts'][prompt][1]}" for r in rows))
if bad:
    print("DIFFERENT TEXTS (greedy output must not depend on delay, speculation or round):")
    print("\n".join(bad))
else:
    print(f"greedy texts: every stream of each prompt completed the same text in all {len(rows)} rows (code, prose, filler, 8 x filler)")
PY
if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "median of $ROUNDS rounds (8 / 1: the median of each round's ratio; accept and bound: the first round's)"
    # shellcheck disable=SC2059
    printf "$FORMAT" "${HEADER[@]}"
    python3 - "$WORK/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
keys = list(dict.fromkeys((r["label"], r["spec"]) for r in rows))
for label, spec in keys:
    cell = [r for r in rows if (r["label"], r["spec"]) == (label, spec)]
    med = lambda k: statistics.median(r[k] for r in cell)
    ratio = statistics.median(r["eight"] / r["one"] for r in cell)
    print(f"{label:<9s} {'median':<6s} {spec:<12s} {med('code'):10.1f} {cell[0]['code_acc']:>12s} {med('prose'):10.1f} "
          f"{cell[0]['prose_acc']:>12s} {med('one'):10.1f} {med('eight'):10.1f} {ratio:8.2f} {cell[0]['bound']:>22s}")
PY
fi
