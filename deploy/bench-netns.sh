#!/usr/bin/env bash
# A cluster across network namespaces: the coordinator and three workers each in its own
# namespace, joined by veth pairs to a bridge, every host's link delayed with tc netem. For
# each delay, with speculation off and on (alternating, a fresh cluster each time), prints
# one stream's and eight streams' decode tokens/s next to the single-stream bound (every
# stage's measured time per token plus four hops of the delay).
#
#   sudo deploy/bench-netns.sh [MODEL] [GEN_TOKENS]        DELAYS="0.5 2 5" (ms per hop)
#
# Needs root, iproute2 (ip, tc) and the release binaries (swift build -c release). Removes
# every namespace and process it made, also when interrupted. The bench prompt repeats a
# sentence, so prompt lookup finds drafts; ordinary text drafts far less.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
MODEL="$(realpath "${1:-models/demo/llama-cluster-demo.q8_0.gguf}")"
GEN="${2:-64}"
DELAYS="${DELAYS:-0.5 2 5}"
BIN="$(/opt/swift/usr/bin/swift build -c release --show-bin-path)"
S="$(printf %04x $((RANDOM)))"
HUB="lcb$S-hub"
HOSTS=(coord w1 w2 w3)
WORK="$(mktemp -d)"
pids=()
ns() { echo "lcb$S-$1"; }
addr() { echo "10.214.$((0x${S:0:2} % 200)).$(( $1 + 1 ))"; }
stop_cluster() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
cleanup() {
    stop_cluster
    for h in "${HOSTS[@]}"; do ip netns del "$(ns "$h")" 2>/dev/null || true; done
    ip netns del "$HUB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

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
# tc netem needs the kernel's sch_netem; without it the links run without added delay.
NETEM=1
for i in "${!HOSTS[@]}"; do
    ip netns exec "$(ns "${HOSTS[$i]}")" tc qdisc add dev "e$i$S" root netem delay 0ms 2>/dev/null || NETEM=0
done
if [ "$NETEM" = 0 ]; then
    echo "tc netem is not available on this kernel (no sch_netem): measuring without added delay" >&2
    DELAYS=0
fi
COORD="$(addr 0)"

start_cluster() {  # speculation on|off
    local manifest="$WORK/cluster-$1.yaml"
    {
        echo "model: $MODEL"
        echo "coordinator: { control: \"tcp://$COORD:5555\", http: \"127.0.0.1:8080\", threads: 1 }"
        echo "insecure: true      # a test network inside this machine"
        echo "max_sequences: 8"
        echo "heartbeat_timeout: 5"
        [ "$1" = on ] && echo "speculative: { ngram: 3, draft: 8 }"
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

bench() {  # concurrency -> JSON
    ip netns exec "$(ns coord)" "$BIN/llama-coord" bench --endpoint http://127.0.0.1:8080 --model "$MODEL" \
        --prompt-tokens 64 --gen-tokens "$GEN" --concurrency "$1" --repetitions 3 --json
}

echo "model $MODEL, coordinator + 3 workers (1 thread each) in namespaces, $GEN tokens per stream"
printf "%-9s %-12s %12s %12s %10s %22s\n" "delay ms" "speculation" "1 stream" "8 streams" "8 / 1" "1-stream bound tok/s"
for d in $DELAYS; do
    if [ "$NETEM" = 1 ]; then
        for i in "${!HOSTS[@]}"; do ip netns exec "$(ns "${HOSTS[$i]}")" tc qdisc change dev "e$i$S" root netem delay "${d}ms"; done
    fi
    for spec in off on; do
        start_cluster "$spec"
        one="$(bench 1)"; eight="$(bench 8)"
        stop_cluster
        python3 - "$d" "$spec" "$one" "$eight" <<'PY'
import json, sys
d, spec = float(sys.argv[1]), sys.argv[2]
one, eight = json.loads(sys.argv[3]), json.loads(sys.argv[4])
r1 = one["aggregate_decode_tokens_per_second"]["mean"]
r8 = eight["aggregate_decode_tokens_per_second"]["mean"]
stages = [w.get("seconds_per_hop") for w in one["workers"]]
bound = "-" if None in stages or not stages else f"{1 / (sum(stages) + 4 * d / 1000):.1f}"
print(f"{d:<9g} {spec:<12s} {r1:12.1f} {r8:12.1f} {r8 / r1:10.2f} {bound:>22s}")
PY
    done
done
