#!/usr/bin/env bash
# Starts a cluster on this machine (coordinator, workers w1 with its own model file and w2
# with streamed layers, standby s1; free loopback ports), runs scripts/load.py against it,
# optionally a rolling upgrade of every worker in the middle of the load, and stops everything.
#
#   scripts/load-cluster.sh [--seconds 600] [--clients 64] [--model FILE]
#                           [--rolling-upgrade-after SECONDS] [--] [more load.py options]
#
# Prints load.py's reports (requests, failures with reasons, latency, memory of every process
# at the start and the end), the rolling upgrade's output, and the coordinator's recovery and
# failure counters. Logs stay in the printed directory. Exits non-zero if a request failed or
# the upgrade did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=600 CLIENTS=64 MODEL="$PWD/models/demo/llama-cluster-demo.q8_0.gguf" UPGRADE_AFTER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_TOTAL="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --model) MODEL="$(realpath "$2")"; shift 2 ;;
        --rolling-upgrade-after) UPGRADE_AFTER="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
export PATH="/opt/swift/usr/bin:$PATH"
BIN="${BIN:-$(swift build -c release --show-bin-path)}"
DIR="$(mktemp -d /tmp/llamacluster-load.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CONTROL="tcp://127.0.0.1:$(free_port)"
HTTP_PORT="$(free_port)"
ENDPOINT="http://127.0.0.1:$HTTP_PORT"

cat >"$DIR/cluster.yaml" <<EOF
model: $MODEL
coordinator: { control: "$CONTROL", http: "127.0.0.1:$HTTP_PORT", threads: 1 }
activations: f16
frames_in_flight: 1
max_sequences: 8
context: 512
heartbeat_timeout: 2
max_queue: 256
workers:
  - { name: w1, threads: 1 }
  - { name: w2, threads: 1 }
  - { name: s1, standby: true, threads: 1 }
EOF

# How each process starts (the restart helper starts it again the same way).
echo "$BIN/llama-coord start --manifest $DIR/cluster.yaml" >"$DIR/coord.cmd"
echo "$BIN/llama-worker join --coordinator $CONTROL --name w1 --threads 1 --model $MODEL" >"$DIR/w1.cmd"
echo "$BIN/llama-worker join --coordinator $CONTROL --name w2 --threads 1 --cache-dir $DIR/cache" >"$DIR/w2.cmd"
echo "$BIN/llama-worker join --coordinator $CONTROL --name s1 --threads 1 --cache-dir $DIR/cache" >"$DIR/s1.cmd"
start() {  # start NAME: runs NAME.cmd in the background, appending to NAME.log, pid in pids/NAME.pid
    mkdir -p "$DIR/pids"
    # shellcheck disable=SC2046
    nohup $(cat "$DIR/$1.cmd") >>"$DIR/$1.log" 2>&1 &
    echo $! >"$DIR/pids/$1.pid"
}
cat >"$DIR/restart-worker.sh" <<EOF
#!/usr/bin/env bash
# Restarts worker \$NAME as an upgrade would: SIGTERM, wait for it to exit, start it again.
set -euo pipefail
pid=\$(cat "$DIR/pids/\$NAME.pid")
kill -TERM "\$pid"
for _ in \$(seq 1 1200); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "\$pid" 2>/dev/null; then echo "\$NAME did not exit after SIGTERM; killing it" >&2; kill -KILL "\$pid"; fi
nohup \$(cat "$DIR/\$NAME.cmd") >>"$DIR/\$NAME.log" 2>&1 &
echo \$! >"$DIR/pids/\$NAME.pid"
EOF
chmod +x "$DIR/restart-worker.sh"

cleanup() {
    for f in "$DIR"/pids/*.pid; do kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "== stopped; logs in $DIR" >&2
}
trap cleanup EXIT INT TERM

for n in coord w1 w2 s1; do start "$n"; done
for i in $(seq 1 600); do
    curl -sf "$ENDPOINT/health" >/dev/null 2>&1 && break
    sleep 0.1
    [ "$i" = 600 ] && { echo "cluster not ready after 60 s" >&2; tail -n 20 "$DIR"/*.log >&2; exit 1; }
done
echo "== cluster ready at $ENDPOINT (load: $(cut -d' ' -f1-3 /proc/loadavg)); $CLIENTS clients for $SECONDS_TOTAL s" >&2

upgrade_pid=""
if [ -n "$UPGRADE_AFTER" ]; then
    (sleep "$UPGRADE_AFTER"; deploy/rolling-upgrade.sh --endpoint "$ENDPOINT" --restart "$DIR/restart-worker.sh" \
        >"$DIR/upgrade.log" 2>&1; echo "exit $?" >>"$DIR/upgrade.log") &
    upgrade_pid=$!
fi
status=0
python3 scripts/load.py --endpoint "$ENDPOINT" --clients "$CLIENTS" --seconds "$SECONDS_TOTAL" --pid-dir "$DIR/pids" "$@" || status=$?
if [ -n "$upgrade_pid" ]; then
    wait "$upgrade_pid" || true
    echo "== rolling upgrade:" >&2
    cat "$DIR/upgrade.log" >&2
    grep -q '^exit 0$' "$DIR/upgrade.log" || status=1
fi
echo "== coordinator counters (load: $(cut -d' ' -f1-3 /proc/loadavg)):" >&2
curl -s "$ENDPOINT/metrics" | grep -E '^llamacluster_(requests_total|requests_failed_total|requests_gave_up_total|recoveries_total|replayed_tokens_total|weight_bytes_served_total) ' >&2 || true
exit $status
