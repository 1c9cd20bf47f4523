#!/usr/bin/env bash
# Rolling upgrade of a running cluster's workers, one at a time, with no failed request.
#
# Each worker in turn is stopped with SIGTERM: it tells the coordinator it is leaving, a free
# standby loads its layers while it keeps serving, the pipeline moves over in one epoch change
# (running sequences are replayed on the new pipeline, nothing fails), and the coordinator
# releases it. Started again (the upgraded binary), it rejoins as the standby for the next
# one. So the manifest needs a standby (`- { name: s1, standby: true }`), and every worker
# and standby is restarted once: workers in pipeline order, then the standbys.
#
#   deploy/rolling-upgrade.sh --endpoint http://10.0.0.1:8080 \
#       --restart 'ssh "$NAME" sudo systemctl restart llama-worker'
#
# --restart is a shell command run with NAME set to the worker's name. It must stop that
# worker with SIGTERM, wait for it to exit, and start the upgraded one (`systemctl restart`
# does, with TimeoutStopSec above the worker's --leave-timeout, 30 s by default).
# Options: --api-key KEY, --timeout SECONDS (per worker, default 300), --only "w1 w2".
# Needs curl and python3. Exits non-zero, and stops, at the first worker that does not come
# back as a standby of a whole cluster within the timeout.
set -euo pipefail

ENDPOINT="" RESTART="" API_KEY="" TIMEOUT=300 ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --endpoint) ENDPOINT="$2"; shift 2 ;;
        --restart) RESTART="$2"; shift 2 ;;
        --api-key) API_KEY="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$ENDPOINT" ] && [ -n "$RESTART" ] || { echo "--endpoint and --restart are required (see --help)" >&2; exit 2; }

health() {
    # /health's JSON, whatever its status (503 while the cluster is not whole).
    local auth=()
    [ -n "$API_KEY" ] && auth=(-H "Authorization: Bearer $API_KEY")
    curl -s --max-time 5 "${auth[@]}" "$ENDPOINT/health" || echo '{}'
}

# Prints what the health report says, one word: for "status" ok|draining|unavailable; for
# "state NAME" that worker's state; for "names" the workers then the standbys; for
# "free-standby NAME" the first idle standby other than NAME (or nothing).
ask() {
    health | python3 -c '
import json, sys
try:
    h = json.load(sys.stdin)
except ValueError:
    h = {}
entries = h.get("workers", []) + h.get("standbys", [])
what = sys.argv[1:]
if what[0] == "status":
    print(h.get("status", "unreachable"))
elif what[0] == "names":
    print(" ".join(e["name"] for e in entries))
elif what[0] == "state":
    print(next((e.get("state", "?") for e in entries if e["name"] == what[1]), "unknown"))
elif what[0] == "free-standby":
    print(next((e["name"] for e in entries if e.get("state") == "standby" and e["name"] != what[1]), ""))
' "$@"
}

wait_for() {  # wait_for DESCRIPTION COMMAND...: polls until COMMAND succeeds or TIMEOUT passes
    local what="$1"; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then echo "rolling upgrade: $what did not happen within $TIMEOUT s; stopping" >&2; return 1; fi
        sleep 0.5
    done
}

whole() { [ "$(ask status)" = ok ]; }
has_free_standby() { [ -n "$(ask free-standby "$1")" ]; }
back_as_standby() { whole && [ "$(ask state "$1")" = standby ]; }

NAMES="${ONLY:-$(ask names)}"
[ -n "$NAMES" ] || { echo "rolling upgrade: no workers at $ENDPOINT/health" >&2; exit 1; }
echo "rolling upgrade of: $NAMES"
for NAME in $NAMES; do
    started=$SECONDS
    wait_for "a whole cluster" whole
    state="$(ask state "$NAME")"
    if [ "$state" != standby ]; then
        # It runs layers: a free standby must be there to take them before it goes.
        wait_for "a free standby for $NAME" has_free_standby "$NAME"
        echo "$NAME ($state): leaving for standby $(ask free-standby "$NAME"), then restarting"
    else
        echo "$NAME (idle standby): restarting"
    fi
    NAME="$NAME" bash -c "$RESTART"
    wait_for "$NAME back as a standby" back_as_standby "$NAME"
    echo "$NAME upgraded in $((SECONDS - started)) s"
done
echo "rolling upgrade done"
