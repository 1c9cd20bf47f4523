#!/usr/bin/env bash
# Builds the libFuzzer harnesses of Tests/Fuzz (with AddressSanitizer) and runs them.
#
#   scripts/fuzz.sh [NAME|all] [SECONDS]
#
# NAME is one of the harnesses below (default all); each runs for SECONDS (default 60),
# starting from a copy of its seed corpus Tests/Fuzz/Corpus/NAME in fuzz-out/corpus/NAME
# (which grows from run to run; the committed seeds stay as they are), with the dictionary
# Tests/Fuzz/Dictionaries/NAME.dict when there is one. Prints per harness the executions,
# executions per second, coverage (cov and ft of libFuzzer's last status line), corpus files
# and crashes. Exits non-zero if any
# harness crashed, hung, leaked or ran out of memory, leaving the input under fuzz-out/NAME/
# and printing its path.
#
# Limits: 10 s per input (-timeout), 2048 MB of memory (-rss_limit_mb), 512 MB for one
# allocation (-malloc_limit_mb); a harness runs as one libFuzzer job in one process (the
# default, the same as -jobs=1 -workers=1 without the extra child process). On a shared
# machine run the script under `nice -n 19`.
#
# Environment: FUZZ_JOBS (parallel build jobs, default 2), FUZZ_ARGS (more libFuzzer options),
# FUZZ_OUT (output directory, default fuzz-out), FUZZ_NO_BUILD=1 (use the binaries built last).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

HARNESSES=(wire-activation wire-control gguf manifest http-request tokenizer grammar)
name="${1:-all}"
seconds="${2:-60}"
case "$name" in
    all) selected=("${HARNESSES[@]}") ;;
    *)
        if [[ " ${HARNESSES[*]} " != *" $name "* ]]; then
            echo "usage: $0 [all|${HARNESSES[*]// /|}] [SECONDS]" >&2
            exit 2
        fi
        selected=("$name")
        ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number, not '$seconds'" >&2; exit 2; }

scripts/install-deps.sh

# The sanitizer and libFuzzer runtimes ship with the Swift toolchain's clang; on a toolchain
# without them, Debian's libclang-rt-dev provides them.
resource_dir="$(swiftc -print-target-info | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')"
if ! ls "$resource_dir"/clang/lib/*/libclang_rt.fuzzer*.a "$resource_dir"/clang/lib/*/*/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
    if ! dpkg-query -W -f='${Status}' libclang-rt-dev 2>/dev/null | grep -q "install ok installed"; then
        echo "installing: libclang-rt-dev" >&2
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-rt-dev >/dev/null
    fi
fi

scratch=.build-fuzz
flags=(-c release --scratch-path "$scratch" -j "${FUZZ_JOBS:-2}"
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -g)
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    for h in "${selected[@]}"; do
        echo "== building fuzz-$h" >&2
        LLAMA_FUZZ=1 swift build "${flags[@]}" --product "fuzz-$h"
    done
fi
bin="$(LLAMA_FUZZ=1 swift build "${flags[@]}" --show-bin-path)"

out="${FUZZ_OUT:-fuzz-out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Leaks are findings; the Swift runtime's own one-time allocations are not reported as leaks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
# A Swift trap (overflow, precondition, force unwrap) must reach libFuzzer's signal handler,
# which writes the input out; the Swift runtime's own backtracer would take the signal first
# (and does not work under AddressSanitizer).
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"

status=0
summary=()
for h in "${selected[@]}"; do
    corpus="$out/corpus/$h"
    artifacts="$out/$h"
    mkdir -p "$corpus" "$artifacts"
    cp -n Tests/Fuzz/Corpus/"$h"/* "$corpus"/ 2>/dev/null || true
    log="$out/$h.log"
    echo "== fuzz-$h for ${seconds}s (log: $log)" >&2
    # Findings are crash-, timeout-, oom- and leak- files; a slow-unit- file only reports the
    # slowest input when the per-input alarm did not fire (the process was stalled).
    findings() { find "$artifacts" -type f ! -name 'slow-unit-*' | wc -l; }
    before=$(findings)
    # Field names and syntax the mutations may insert (Tests/Fuzz/Dictionaries/NAME.dict).
    dict=()
    [ -f Tests/Fuzz/Dictionaries/"$h".dict ] && dict=(-dict="$PWD/Tests/Fuzz/Dictionaries/$h.dict")
    set +e
    # shellcheck disable=SC2086
    "$bin/fuzz-$h" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # Coverage from libFuzzer's last status line (DONE, or the last one before a crash).
    last=$(grep -E '^#[0-9]+[[:space:]]+(INITED|NEW|REDUCE|pulse|DONE|RELOAD)[[:space:]]' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    units=$(find "$corpus" -type f | wc -l)
    found=$(( $(findings) - before ))
    line=$(printf '%-16s executions %-10s exec/s %-7s cov %-5s ft %-6s corpus %-5s crashes %s' \
        "$h" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$units" "$found")
    echo "$line"
    summary+=("$line")
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        status=1
        echo "!! fuzz-$h failed (exit $rc); see $log" >&2
        grep -m3 -E "^==[0-9]+==ERROR|SUMMARY|Fatal error|deadly signal|Test unit written" "$log" >&2 || true
        for f in $(find "$artifacts" -type f ! -name 'slow-unit-*'); do echo "!! input: $f" >&2; done
    fi
    slowest=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log" | tail -1)
    if [ "${slowest:-0}" -ge 10 ]; then
        echo "note: fuzz-$h's slowest input took ${slowest}s; see $log and $artifacts/slow-unit-*" >&2
    fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
