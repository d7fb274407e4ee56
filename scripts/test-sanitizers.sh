#!/usr/bin/env bash
# The whole C++ test suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang, so UBSan
# also checks float -> int conversions), then a short run of every libFuzzer target.
# Usage: scripts/test-sanitizers.sh [--build-only]   (build dir: build/asan, or $SEQKV_ASAN_BUILD_DIR)
#   SEQKV_FUZZ_SECONDS=N   seconds per fuzz target (default 8; 0 skips the fuzz run)
# Not run under sanitizers (label): install (builds an uninstrumented consumer), tools (Python).
# The real-model tests are configured off here (they need the model venv and take minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SEQKV_ASAN_BUILD_DIR:-$root/build/asan}
jobs=${SEQKV_JOBS:-$(nproc)}
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$cxx" ]]; then
  echo "seqkv: clang++ not found (apt-get install clang); sanitizer suite not run" >&2
  exit 1
fi
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DSEQKV_SANITIZE=address,undefined -DSEQKV_BUILD_FUZZERS=ON -DSEQKV_BUILD_TESTS=ON -DSEQKV_BUILD_CLI=ON \
  -DSEQKV_BUILD_EXAMPLES=OFF -DSEQKV_BUILD_BENCH=OFF -DSEQKV_MODELS_PYTHON=SKIP >/dev/null
cmake --build "$build" -j "$jobs"
[[ "${1:-}" == "--build-only" ]] && exit 0

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# LeakSanitizer needs ptrace-like access some containers deny; check once and say so.
leaks=1
probe=$(mktemp -d)
printf 'int main(){return 0;}\n' > "$probe/p.cpp"
if "$cxx" -fsanitize=address "$probe/p.cpp" -o "$probe/p" 2>/dev/null && ! ASAN_OPTIONS=detect_leaks=1 "$probe/p" 2>/dev/null; then
  leaks=0
  echo "seqkv: LeakSanitizer cannot run in this environment; ASan runs without leak checks" >&2
fi
rm -rf "$probe"
export ASAN_OPTIONS=detect_leaks=$leaks:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
ctest --test-dir "$build" --output-on-failure -j "$jobs" -LE "install|tools"
if [[ "${SEQKV_FUZZ_SECONDS:-8}" != 0 ]]; then
  "$root/scripts/fuzz.sh" --build "$build" --seconds "${SEQKV_FUZZ_SECONDS:-8}"
fi
