#!/usr/bin/env bash
# Builds seqkv (tests, examples, CLI, benchmarks) once and runs every test through ctest.
# Usage: scripts/test.sh            (build dir: build/ci, or $SEQKV_BUILD_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build=${SEQKV_BUILD_DIR:-$root/build/ci}
jobs=${SEQKV_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEQKV_BUILD_TESTS=ON \
  -DSEQKV_BUILD_EXAMPLES=ON -DSEQKV_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
