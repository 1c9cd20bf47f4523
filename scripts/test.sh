#!/usr/bin/env bash
# Installs what the tests need and runs the whole test suite (the README's test command;
# .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/install-deps.sh
# The independent numpy reference the forward pass is checked against.
VENV="${LLAMA_REF_VENV:-.venv-ref}"
if ! "$VENV/bin/python" -c "import numpy, gguf" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check numpy gguf
fi
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export LLAMA_REF_PYTHON="$VENV/bin/python"
# Release build: the suite runs real models (perplexity over 60k tokens, clusters of processes).
swift build -c release --build-tests
swift test -c release --skip-build "$@"
# Last: a few seconds of every fuzzing harness (Tests/Fuzz; sanitizer build in .build-fuzz), so
# they keep building and their seeds keep passing. LLAMA_SKIP_FUZZ=1 skips it.
if [ "${LLAMA_SKIP_FUZZ:-0}" != 1 ]; then
    scripts/fuzz.sh all "${LLAMA_FUZZ_SECONDS:-5}"
fi
