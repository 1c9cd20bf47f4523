#!/usr/bin/env bash
# What CURVE costs: decode tokens/s of a coordinator + two workers on this machine, without
# and with `security:`, measured alternately (plain, secure, plain, secure, ...) on the same
# model, and the bytes each data hop carries per token (TCP payload received on the three
# data sockets: coordinator -> w1, w1 -> w2, w2 -> coordinator; from `ss -ti`), against the
# activation bytes alone.
#
#   scripts/bench-curve.sh MODEL [ROUNDS] [GEN_TOKENS]
#
# Builds nothing: uses the release binaries (swift build -c release). Ports are picked free.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$(realpath "${1:?usage: $0 MODEL [ROUNDS] [GEN_TOKENS]}")"
ROUNDS="${2:-3}"
GEN="${3:-128}"
BIN="$(/opt/swift/usr/bin/swift build -c release --show-bin-path)"
WORK="$(mktemp -d)"
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
trap 'stop; rm -rf "$WORK"' EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# TCP payload bytes received so far on connections to the given local ports.
data_bytes() {
    local filter="" p
    for p in "$@"; do filter+="${filter:+ or }sport = :$p"; done
    ss -tinH state established "( $filter )" | grep -o 'bytes_received:[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }'
}
port_after() { grep -o "$2 tcp://[^ ,)]*" "$1" | head -1 | sed 's/.*://'; }

BIN="$BIN" deploy/make-keys.sh "$WORK/keys" w1 w2 2>/dev/null

run_once() {  # mode -> prints "tokens_per_s lo_bytes_per_token"
    local mode="$1" control http manifest extra_w1=() extra_w2=() sec=""
    control="tcp://127.0.0.1:$(free_port)"; http="$(free_port)"
    manifest="$WORK/$mode.yaml"
    if [ "$mode" = secure ]; then
        sec="security: { key: $WORK/keys/coord.key }"
        extra_w1=(--key "$WORK/keys/w1.key" --coordinator-key "$WORK/keys/coord.pub")
        extra_w2=(--key "$WORK/keys/w2.key" --coordinator-key "$WORK/keys/coord.pub")
    fi
    cat > "$manifest" <<YAML
model: $MODEL
coordinator: { control: "$control", http: "127.0.0.1:$http", threads: 1 }
$sec
activations: f16
frames_in_flight: 1
max_sequences: 4
workers:
  - { name: w1, threads: 1$([ "$mode" = secure ] && echo ", key: $WORK/keys/w1.pub") }
  - { name: w2, threads: 1$([ "$mode" = secure ] && echo ", key: $WORK/keys/w2.pub") }
YAML
    "$BIN/llama-coord" start --manifest "$manifest" >"$WORK/$mode-coord.log" 2>&1 & pids+=($!)
    "$BIN/llama-worker" join --coordinator "$control" --name w1 --threads 1 --model "$MODEL" "${extra_w1[@]}" >"$WORK/$mode-w1.log" 2>&1 & pids+=($!)
    "$BIN/llama-worker" join --coordinator "$control" --name w2 --threads 1 --model "$MODEL" "${extra_w2[@]}" >"$WORK/$mode-w2.log" 2>&1 & pids+=($!)
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.1; done
    local before after json ports
    ports=("$(port_after "$WORK/$mode-coord.log" "data return")" "$(port_after "$WORK/$mode-w1.log" "data input")"
           "$(port_after "$WORK/$mode-w2.log" "data input")")
    before="$(data_bytes "${ports[@]}")"
    json="$("$BIN/llama-coord" bench --endpoint "http://127.0.0.1:$http" --model "$MODEL" --prompt-tokens 4 \
        --gen-tokens "$GEN" --concurrency 1 --repetitions 2 --json)"
    after="$(data_bytes "${ports[@]}")"
    stop
    python3 - "$json" "$before" "$after" "$GEN" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); before, after, gen = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tps = j["aggregate_decode_tokens_per_second"]["mean"]
prompt = j["prompt_tokens"]
positions = (prompt + 2) + 2 * (prompt + gen)    # the warm-up completion and 2 repetitions
hop = j["wire_bytes_per_token_per_hop"]["f16"]
print(f"{tps:.2f} {(after - before) / positions / 3:.1f} {hop:.0f}")
PY
}

echo "model $MODEL, $ROUNDS rounds of plain/secure, $GEN tokens per stream"
declare -A tps bytes
for r in $(seq "$ROUNDS"); do
    for mode in plain secure; do
        read -r t b hop < <(run_once "$mode")
        tps[$mode]+="$t "; bytes[$mode]+="$b "
        echo "round $r  $mode  decode $t tok/s  bytes per token per hop $b (activations alone $hop)"
    done
done
for mode in plain secure; do
    python3 -c "import statistics,sys; t=[float(x) for x in sys.argv[2].split()]; b=[float(x) for x in sys.argv[3].split()]; print(f'{sys.argv[1]:7s} decode median {statistics.median(t):.2f} tok/s (runs {sys.argv[2].strip()}), bytes per token per hop median {statistics.median(b):.1f}')" "$mode" "${tps[$mode]}" "${bytes[$mode]}"
done
