#!/usr/bin/env bash
# Every speed figure of the README in one run, one after the other on an otherwise idle machine:
#
#   1. scripts/bench-vs-llamacpp.sh THREADS --cluster: the synthetic 7B- and 70B-shaped files
#      against llama.cpp (alternating per file), decode as a share of the measured read
#      bandwidth, and the local cluster's 1 and 8 streams in CLUSTER_ROUNDS alternating rounds;
#   2. deploy/bench-netns.sh: the demo model through three workers in network namespaces, one
#      stream on code and on prose and eight streams, speculation off / prompt lookup / draft
#      model, without delay and with each of DELAYS per hop, next to the single-stream bound.
#
#   sudo scripts/bench-all.sh [THREADS=2]
#
# Needs root (the namespaces), the release binaries (built by step 1) and llama-cpp-python
# (PYTHON, see scripts/bench-vs-llamacpp.sh). Writes bench-out/report.md: the commit, the
# machine, the time each part took and both parts' tables. Defaults, each overridable from the
# environment: REPS=3 CLUSTER_ROUNDS=10 REPACK=1; DELAYS="none 0 2" MODES="off on draft"
# DRAFT_LAYERS=5 DRAFT_P_MIN=0.3 (a draft made of the demo's first five of six layers, drafting
# while its own probability of its choice is at least 0.3) NETNS_ROUNDS=3 (the namespaces'
# modes run three times per delay, alternating, and each cell's median is reported).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
THREADS="${1:-2}"
case "$THREADS" in ''|*[!0-9]*|0) echo "usage: $0 [THREADS]" >&2; exit 2 ;; esac
export REPS="${REPS:-3}" CLUSTER_ROUNDS="${CLUSTER_ROUNDS:-10}" REPACK="${REPACK:-1}"
export DELAYS="${DELAYS:-none 0 2}" MODES="${MODES:-off on draft}"
export DRAFT_LAYERS="${DRAFT_LAYERS:-5}" DRAFT_P_MIN="${DRAFT_P_MIN:-0.3}" NETNS_ROUNDS="${NETNS_ROUNDS:-3}"
mkdir -p bench-out
REPORT=bench-out/report.md
LOCAL="$(mktemp)" NETNS="$(mktemp)"
trap 'rm -f "$LOCAL" "$NETNS"' EXIT

t0=$(date +%s)
scripts/bench-vs-llamacpp.sh "$THREADS" --cluster >"$LOCAL"
t1=$(date +%s)
ROUNDS="$NETNS_ROUNDS" deploy/bench-netns.sh >"$NETNS" 2>&1 || { cat "$NETNS" >&2; exit 1; }
t2=$(date +%s)

{
    echo "# Speed, one run"
    echo
    echo "- commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift scripts deploy || echo ' (with uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "- REPS=$REPS CLUSTER_ROUNDS=$CLUSTER_ROUNDS REPACK=$REPACK THREADS=$THREADS; DELAYS=\"$DELAYS\" MODES=\"$MODES\" DRAFT_LAYERS=$DRAFT_LAYERS DRAFT_P_MIN=$DRAFT_P_MIN NETNS_ROUNDS=$NETNS_ROUNDS"
    echo "- against llama.cpp and the local cluster: $(( (t1 - t0) / 60 )) min; network namespaces: $(( (t2 - t1) / 60 )) min"
    echo
    echo "## Against llama.cpp, and the cluster on this machine"
    echo
    cat "$LOCAL"
    echo
    echo "## Across network namespaces"
    echo
    echo '```'
    grep -v '^tc netem unavailable' "$NETNS"
    echo '```'
} >"$REPORT"
cat "$REPORT"
