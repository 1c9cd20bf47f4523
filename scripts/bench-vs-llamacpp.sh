#!/usr/bin/env bash
# Speed of llama-coord against llama.cpp (through llama-cpp-python) on synthetic models of real
# Llama 2 shapes, with the machine's memory read bandwidth as the decode limit.
#
#   scripts/bench-vs-llamacpp.sh [THREADS=2] [--cluster]
#
# Writes (once) into bench-out/: the 7B shape with 4 layers in Q4_0 and in Q8_0, and the 70B
# shape (width 8192, 64 heads, 8 KV heads, FFN 28672) with 2 layers in Q4_0. For each file and
# each of REPS repetitions it measures the read bandwidth, then runs `llama-coord bench` and
# `scripts/llamacpp_oracle.py bench` once each with the same threads, prompt and generation
# sizes (alternating, so that a slow spell of the machine falls on both), then prints a table
# (also written to bench-out/latest.md): prefill and decode tokens/s of both (mean ± stddev over
# repetitions) and their ratio, and decode as a fraction of the read limit (the best bandwidth
# of the run / weight bytes read per token).
#
# --cluster also starts a coordinator and two workers on this machine serving the 7B Q4_0 file
# (each worker THREADS threads and 2 layers; on one machine they take turns) and runs the cluster
# bench with 1 and 8 concurrent streams next to one process with the same prompt and generation
# sizes (1 sequence, and 8 decoded as one batch), in rounds that alternate the four measurements
# (one process 1, cluster 1, one process 8, cluster 8), so that each round's ratios compare
# figures taken minutes apart at most; the table gives each ratio's median and range over rounds.
#
# Environment: PROMPT_TOKENS (512), GEN_TOKENS (128), REPS (3); for the cluster CLUSTER_PROMPT_TOKENS
# (128), CLUSTER_GEN_TOKENS (96), CLUSTER_ROUNDS (3), HTTP_PORT (8181), CONTROL_PORT (5655);
# PYTHON (/work/llama-venv/bin/python if present, else python3); OMP_WAIT_POLICY for llama.cpp's
# OpenMP threads (default passive: spinning threads collapse when other work shares the cores;
# set active, llama.cpp's default, on an idle machine). REPACK=1: our side keeps Q4_0 and Q8_0 weights
# repacked for the AVX2 product (bench and start --repack-dir bench-out/repacked, workers
# --repack --cache-dir bench-out/cache-wN), made on the first run, outside the timed part.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

THREADS=2
CLUSTER=0
for arg in "$@"; do
    case "$arg" in
        --cluster) CLUSTER=1 ;;
        ''|*[!0-9]*) echo "usage: $0 [THREADS] [--cluster]" >&2; exit 2 ;;
        *) THREADS="$arg" ;;
    esac
done
P="${PROMPT_TOKENS:-512}"
G="${GEN_TOKENS:-128}"
R="${REPS:-3}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x /work/llama-venv/bin/python ]; then PYTHON=/work/llama-venv/bin/python; else PYTHON=python3; fi
fi
OMP_POLICY="${OMP_WAIT_POLICY:-passive}"
OUT=bench-out
REPACK_ARGS=()
if [ "${REPACK:-0}" = 1 ]; then REPACK_ARGS=(--repack-dir "$OUT/repacked"); fi
VOCAB=Tests/LlamaTokenizerTests/Fixtures/ggml-vocab-llama-spm.gguf
mkdir -p "$OUT"

echo "== building (release)" >&2
swift build -c release --product llama-coord 2>&1 | grep -E "error|Compiling|Build" | tail -3 >&2
if [ "$CLUSTER" = 1 ]; then
    swift build -c release --product llama-worker 2>&1 | grep -E "error|Compiling|Build" | tail -3 >&2
fi
BIN="$(swift build -c release --show-bin-path)"

# name, preset, layers, type
MODELS=(
    "7b-4l-q4_0 7b 4 q4_0"
    "7b-4l-q8_0 7b 4 q8_0"
    "70b-2l-q4_0 70b 2 q4_0"
)
for spec in "${MODELS[@]}"; do
    read -r name preset layers type <<<"$spec"
    file="$OUT/synth-$name.gguf"
    if [ ! -s "$file" ]; then
        echo "== writing $file" >&2
        "$BIN/llama-coord" synth --out "$file.tmp" --vocab "$VOCAB" --preset "$preset" --layers "$layers" --type "$type"
        mv "$file.tmp" "$file"
    fi
done

cc -O3 -mavx2 -mfma -pthread scripts/membw.c -o "$OUT/membw"
# Each repetition measures the read bandwidth, then ours, then llama.cpp, so that a slow spell
# of this machine falls on both sides; the read limit is the best bandwidth of the whole run
# (a bandwidth measured in a slow spell would flatter the shares of it).
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT/membw.txt"
rm -f "$OUT"/*.ours.r*.json "$OUT"/*.llamacpp.r*.json
for spec in "${MODELS[@]}"; do
    read -r name _ _ _ <<<"$spec"
    file="$OUT/synth-$name.gguf"
    for rep in $(seq 1 "$R"); do
        echo "== $name, repetition $rep: memory bandwidth ($THREADS threads), llama-coord bench, llama.cpp bench" >&2
        "$OUT/membw" "$THREADS" 2048 3 | tee -a "$OUT/membw.txt" >&2
        "$BIN/llama-coord" bench --model "$file" --threads "$THREADS" --prompt-tokens "$P" --gen-tokens "$G" \
            --repetitions 1 "${REPACK_ARGS[@]}" --json >"$OUT/$name.ours.r$rep.json"
        OMP_WAIT_POLICY="$OMP_POLICY" "$PYTHON" scripts/llamacpp_oracle.py bench "$file" --threads "$THREADS" --prompt-tokens "$P" \
            --gen-tokens "$G" --reps 1 >"$OUT/$name.llamacpp.r$rep.json"
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# MARK: - Cluster (optional)

CLUSTER_JSON=()
if [ "$CLUSTER" = 1 ]; then
    HTTP_PORT="${HTTP_PORT:-8181}"
    CP="${CLUSTER_PROMPT_TOKENS:-128}"
    CG="${CLUSTER_GEN_TOKENS:-96}"
    CR="${CLUSTER_ROUNDS:-3}"
    CONTROL_PORT="${CONTROL_PORT:-5655}"
    ENDPOINT="http://127.0.0.1:$HTTP_PORT"
    MODEL="$OUT/synth-7b-4l-q4_0.gguf"
    cat >"$OUT/cluster-7b.yaml" <<EOF
# Written by scripts/bench-vs-llamacpp.sh: two workers on this machine, two layers each.
model: synth-7b-4l-q4_0.gguf
coordinator: { control: "tcp://127.0.0.1:$CONTROL_PORT", http: "127.0.0.1:$HTTP_PORT", threads: $THREADS }
activations: f16
frames_in_flight: 1
max_sequences: 8
context: $((CP + CG + 16))
workers:
  - { name: w1, layers: "0-1", threads: $THREADS }
  - { name: w2, layers: "2-3", threads: $THREADS }
EOF
    pids=()
    cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    }
    trap cleanup EXIT INT TERM
    echo "== starting a coordinator and workers w1, w2 on $MODEL" >&2
    "$BIN/llama-coord" start --manifest "$OUT/cluster-7b.yaml" "${REPACK_ARGS[@]}" >"$OUT/coord.log" 2>&1 &
    pids+=($!)
    for w in w1 w2; do
        worker_repack=()
        if [ "${REPACK:-0}" = 1 ]; then worker_repack=(--repack --cache-dir "$OUT/cache-$w"); fi
        "$BIN/llama-worker" join --coordinator "tcp://127.0.0.1:$CONTROL_PORT" --name "$w" --threads "$THREADS" \
            --model "$MODEL" --listen "tcp://127.0.0.1:0" --advertise 127.0.0.1 "${worker_repack[@]}" >"$OUT/$w.log" 2>&1 &
        pids+=($!)
    done
    ready=0
    for _ in $(seq 1 1200); do
        if curl -sf "$ENDPOINT/health" >/dev/null 2>&1; then ready=1; break; fi
        for p in "${pids[@]}"; do
            kill -0 "$p" 2>/dev/null || { echo "a cluster process exited early:" >&2; tail -n 20 "$OUT"/coord.log "$OUT"/w?.log >&2; exit 1; }
        done
        sleep 0.1
    done
    [ "$ready" = 1 ] || { echo "cluster not ready after 120 s" >&2; tail -n 20 "$OUT"/coord.log "$OUT"/w?.log >&2; exit 1; }
    rm -f "$OUT"/single-b?-r*.json "$OUT"/cluster-c?-r*.json
    for round in $(seq 1 "$CR"); do
        for b in 1 8; do
            # The cluster sits idle (heartbeats only) while one process runs.
            echo "== round $round: one process, prompt $CP, $CG generated, batch $b" >&2
            "$BIN/llama-coord" bench --model "$MODEL" --threads "$THREADS" --prompt-tokens "$CP" --gen-tokens "$CG" \
                --batch "$b" --repetitions 1 "${REPACK_ARGS[@]}" --json >"$OUT/single-b$b-r$round.json"
            echo "== round $round: cluster, $b concurrent streams" >&2
            "$BIN/llama-coord" bench --endpoint "$ENDPOINT" --model "$MODEL" --concurrency "$b" --prompt-tokens "$CP" \
                --gen-tokens "$CG" --repetitions 1 --json >"$OUT/cluster-c$b-r$round.json"
        done
    done
    CLUSTER_JSON=("$CR")
    cleanup
    pids=()
fi

# MARK: - Table

"$PYTHON" - "$OUT" "$THREADS" "$P" "$G" "$R" "$LOAD_BEFORE" "$LOAD_AFTER" "$OMP_POLICY" "${REPACK:-0}" "${CLUSTER_JSON[@]}" <<'PY'
import json, os, sys
out, threads, p, g, reps, load_before, load_after, omp_policy, repack = sys.argv[1:10]
cluster_rounds = int(sys.argv[10]) if len(sys.argv) > 10 else 0
measured = [float(line.split()[0]) for line in open(os.path.join(out, "membw.txt")) if line.strip()]
bandwidth = max(measured)
names = ["7b-4l-q4_0", "7b-4l-q8_0", "70b-2l-q4_0"]

def rate(mean, std):
    return f"{mean:.2f} ± {std:.2f}"

def stats(values):
    m = sum(values) / len(values)
    return m, (sum((x - m) ** 2 for x in values) / len(values)) ** 0.5

lines = [
    f"# llama-coord vs llama.cpp: {threads} threads, pp{p} / tg{g}, {reps} repetitions",
    "",
    f"Memory read bandwidth ({threads} threads): {bandwidth:.2f} GB/s, the best of {len(measured)} measurements, one before each "
    f"repetition (range {min(measured):.2f}–{max(measured):.2f}). Each repetition runs ours, then llama.cpp. "
    f"Load average (1/5/15 min) before: {load_before}, after: {load_after}. "
    f"llama.cpp ran with OMP_WAIT_POLICY={omp_policy}. "
    + ("Ours used repacked Q4_0 and Q8_0 copies (--repack-dir / --repack)." if repack == "1" else "Ours read the GGUF's own rows (no repacked copies)."),
    "",
    "| model | prefill tok/s ours | prefill tok/s llama.cpp | ratio | decode tok/s ours | decode tok/s llama.cpp | ratio "
    "| MiB read / token | read limit tok/s | ours of limit | llama.cpp of limit |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for name in names:
    reps_ours = [json.load(open(os.path.join(out, f"{name}.ours.r{r}.json")))["result"] for r in range(1, int(reps) + 1)]
    reps_ref = [json.load(open(os.path.join(out, f"{name}.llamacpp.r{r}.json"))) for r in range(1, int(reps) + 1)]
    pp = stats([o["prefill_tokens_per_second"]["mean"] for o in reps_ours])
    dp = stats([o["decode_tokens_per_second"]["mean"] for o in reps_ours])
    rpp = stats([r["prefill_tokens_per_s"] for r in reps_ref])
    rdp = stats([r["decode_tokens_per_s"] for r in reps_ref])
    step = reps_ours[0]["weight_bytes_per_step"]
    limit = bandwidth * 1e9 / step
    lines.append(
        f"| {name} | {rate(*pp)} | {rate(*rpp)} | {pp[0] / rpp[0]:.2f} "
        f"| {rate(*dp)} | {rate(*rdp)} | {dp[0] / rdp[0]:.2f} "
        f"| {step / 2**20:.0f} | {limit:.2f} | {dp[0] / limit:.0%} | {rdp[0] / limit:.0%} |")
lines += ["", "Ratio = ours / llama.cpp. Read limit = bandwidth / (layer matrices + output head bytes)."]

if cluster_rounds:
    def load(kind, n, r):
        return json.load(open(os.path.join(out, f"{kind}{n}-r{r}.json")))
    rounds = range(1, cluster_rounds + 1)
    single = {b: [load("single-b", b, r)["result"]["decode_tokens_per_second"]["mean"] for r in rounds] for b in (1, 8)}
    cluster = {c: [load("cluster-c", c, r) for r in rounds] for c in (1, 8)}
    def decode(c, i):
        return cluster[c][i]["aggregate_decode_tokens_per_second"]["mean"]
    def spread(values):
        v = sorted(values)
        return f"{v[len(v) // 2]:.2f} ({v[0]:.2f}–{v[-1]:.2f})"
    def mean_std(values):
        m = sum(values) / len(values)
        return rate(m, (sum((x - m) ** 2 for x in values) / len(values)) ** 0.5)
    first = cluster[1][0]
    lines += ["", f"## Cluster: coordinator + 2 workers ({threads} threads each, 2 layers each) on this machine, 7b-4l-q4_0, f16 activations",
              "", f"Prompt {first['prompt_tokens']} tokens, {first['generated_tokens_per_stream']:.0f} generated per stream, "
              f"{cluster_rounds} rounds, each measuring in turn one process with 1 sequence, the cluster with 1 stream, one process "
              f"with 8 sequences in one batch and the cluster with 8 streams. Decode tok/s counts the tokens of all streams that arrive "
              "while every stream is decoding (mean ± stddev over rounds); the total also counts the time to the first token. "
              f"One process with the same sizes and {threads} threads decodes {mean_std(single[1])} tok/s (1 sequence) and "
              f"{mean_std(single[8])} tok/s (8 sequences in one batch). Ratios are taken within each round: median (range). "
              "Worker tok/s is /status's figure (prompt and generated tokens per busy second) after the last round.",
              "",
              "| streams | decode tok/s | vs one process, 1 seq | vs cluster, 1 stream | vs one process, same batch | total tok/s | ms/token/stream | ms to first token | worker tok/s (ms/hop) | wire bytes/token/hop f16, f32 |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in (1, 8):
        runs = cluster[c]
        last = runs[-1]
        workers = ", ".join(f"{w['name']} {w['tokens_per_second']:.1f} ({(w['seconds_per_hop'] or 0) * 1e3:.1f})" for w in last["workers"])
        wire = last.get("wire_bytes_per_token_per_hop") or {}
        n = len(runs)
        lines.append(
            f"| {c} | {mean_std([decode(c, i) for i in range(n)])} "
            f"| {spread([decode(c, i) / single[1][i] for i in range(n)])} "
            f"| {spread([decode(c, i) / decode(1, i) for i in range(n)])} "
            f"| {spread([decode(c, i) / single[c][i] for i in range(n)])} "
            f"| {mean_std([r['aggregate_tokens_per_second']['mean'] for r in runs])} "
            f"| {sum(r['seconds_per_token_per_stream']['mean'] for r in runs) / n * 1e3:.1f} "
            f"| {sum(r['time_to_first_token_seconds']['mean'] for r in runs) / n * 1e3:.0f} "
            f"| {workers} | {wire.get('f16', 0):.0f}, {wire.get('f32', 0):.0f} |")
    # Every round's figures, so that the worst round shows, not only the median.
    heads = " | ".join(str(r) for r in rounds)
    lines += ["", "Each round (decode tok/s): one process with 1 and 8 sequences, then the cluster with 1 and 8 streams, and each 8 / 1 ratio:",
              "", f"| round | {heads} |", "|---|" + "---|" * cluster_rounds,
              "| one process 1 / 8 | " + " | ".join(f"{single[1][i]:.1f} / {single[8][i]:.1f}" for i in range(cluster_rounds)) + " |",
              "| ratio | " + " | ".join(f"{single[8][i] / single[1][i]:.2f}" for i in range(cluster_rounds)) + " |",
              "| cluster 1 / 8 | " + " | ".join(f"{decode(1, i):.1f} / {decode(8, i):.1f}" for i in range(cluster_rounds)) + " |",
              "| ratio | " + " | ".join(f"{decode(8, i) / decode(1, i):.2f}" for i in range(cluster_rounds)) + " |"]

text = "\n".join(lines) + "\n"
open(os.path.join(out, "latest.md"), "w").write(text)
print(text)
PY
