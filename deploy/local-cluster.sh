#!/usr/bin/env bash
# The main job on the embedded default: builds LlamaCluster, makes the cluster's keys if
# deploy/keys/ lacks them, starts a coordinator and two workers on this machine serving the
# demo model (worker w1 maps its own copy of the model, worker w2 has its layers streamed from
# the coordinator; CURVE between all three, an API key on HTTP), answers a prompt through the
# OpenAI-compatible endpoint, shows the cluster's status, and stops everything it started.
#
#   deploy/local-cluster.sh ["prompt"] [max tokens]
#
# Environment: CONTROL_PORT (default 5555), HTTP_PORT (8080), KEEP_RUNNING=1 to leave the
# cluster up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT="${1:-Python is}"
TOKENS="${2:-64}"
CONTROL_PORT="${CONTROL_PORT:-5555}"
HTTP_PORT="${HTTP_PORT:-8080}"
export PATH="/opt/swift/usr/bin:$PATH"

scripts/install-deps.sh
echo "== building (release)" >&2
swift build -c release 2>&1 | grep -E "error|warning: unre|Compiling|Build" | tail -3 >&2
BIN="$(swift build -c release --show-bin-path)"

KEYS=deploy/keys
BIN="$BIN" deploy/make-keys.sh "$KEYS" w1 w2

LOGS="$(mktemp -d)"
CACHE="$LOGS/cache"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "== stopped; logs were in $LOGS" >&2
}
trap cleanup EXIT INT TERM

MODEL="models/demo/llama-cluster-demo.q8_0.gguf"
echo "== starting coordinator (control :$CONTROL_PORT, http :$HTTP_PORT) and workers w1, w2" >&2
"$BIN/llama-coord" start --manifest deploy/local-cluster.yaml \
    --control "tcp://127.0.0.1:$CONTROL_PORT" --http "127.0.0.1:$HTTP_PORT" >"$LOGS/coord.log" 2>&1 &
pids+=($!)
"$BIN/llama-worker" join --coordinator "tcp://127.0.0.1:$CONTROL_PORT" --name w1 --threads 1 --model "$MODEL" \
    --key "$KEYS/w1.key" --coordinator-key "$KEYS/coord.pub" >"$LOGS/w1.log" 2>&1 &
pids+=($!)
"$BIN/llama-worker" join --coordinator "tcp://127.0.0.1:$CONTROL_PORT" --name w2 --threads 1 --cache-dir "$CACHE" \
    --key "$KEYS/w2.key" --coordinator-key "$KEYS/coord.pub" >"$LOGS/w2.log" 2>&1 &
pids+=($!)

for i in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then break; fi
    for p in "${pids[@]}"; do
        if ! kill -0 "$p" 2>/dev/null; then
            echo "a process exited early; logs:" >&2; tail -n 20 "$LOGS"/*.log >&2; exit 1
        fi
    done
    sleep 0.1
    if [ "$i" = 600 ]; then echo "cluster not ready after 60 s" >&2; tail -n 20 "$LOGS"/*.log >&2; exit 1; fi
done
echo "== cluster ready" >&2
"$BIN/llama-coord" status --endpoint "http://127.0.0.1:$HTTP_PORT" --api-key-file "$KEYS/api-keys.txt"
echo "== prompt: $PROMPT" >&2
"$BIN/llama-coord" prompt --endpoint "http://127.0.0.1:$HTTP_PORT" --api-key-file "$KEYS/api-keys.txt" -n "$TOKENS" --temperature 0 "$PROMPT"
echo
"$BIN/llama-coord" status --endpoint "http://127.0.0.1:$HTTP_PORT" --api-key-file "$KEYS/api-keys.txt"
if [ "${KEEP_RUNNING:-0}" = 1 ]; then
    echo "== cluster running at http://127.0.0.1:$HTTP_PORT, API key in $KEYS/api-keys.txt (Ctrl-C stops it)" >&2
    wait
fi
