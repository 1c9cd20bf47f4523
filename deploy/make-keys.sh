#!/usr/bin/env bash
# Makes the keys of a cluster in DIR, keeping any that exist: the coordinator's CURVE pair
# (coord.key, mode 0600, and coord.pub), one pair per worker NAME, and an HTTP API key file
# (api-keys.txt, mode 0600, one random key).
#
#   deploy/make-keys.sh DIR NAME...
#
# On a real cluster each worker makes its own pair on its host (llama-worker keygen --out
# PATH) and only its .pub travels to the coordinator's host; this script is for one machine.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [WORKER NAME]..." >&2; exit 2; }
DIR="$1"; shift
BIN="${BIN:-$(cd "$(dirname "$0")/.." && /opt/swift/usr/bin/swift build -c release --show-bin-path 2>/dev/null)}"
mkdir -p "$DIR"
chmod 700 "$DIR"
[ -f "$DIR/coord.key" ] || "$BIN/llama-coord" keygen --out "$DIR/coord" >/dev/null
for name in "$@"; do
    [ -f "$DIR/$name.key" ] || "$BIN/llama-worker" keygen --out "$DIR/$name" >/dev/null
done
if [ ! -f "$DIR/api-keys.txt" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/api-keys.txt"; echo >> "$DIR/api-keys.txt")
fi
echo "keys in $DIR: coord ${*:-}; API key file $DIR/api-keys.txt" >&2
