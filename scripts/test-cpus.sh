#!/usr/bin/env bash
# Runs the C++ test binaries under QEMU user-mode emulation of other x86-64 CPUs, so the scalar
# fallbacks (no AVX2) and the AVX2 kernels are both exercised whatever CPU this machine has.
# Explicit command, not part of CI (emulation is ~5-20x slower). Needs Debian's qemu-user.
# Usage: scripts/test-cpus.sh [CPU_MODEL...]   (default: Nehalem (SSE4.2, no AVX) Haswell (AVX2))
# Build dir: $SEQKV_BUILD_DIR or build/ci (built by scripts/test.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SEQKV_BUILD_DIR:-$root/build/ci}
command -v qemu-x86_64 >/dev/null || { echo "install qemu-user (apt-get install qemu-user)" >&2; exit 2; }
[ -d "$build/tests" ] || { echo "no test build in $build (run scripts/test.sh first)" >&2; exit 2; }
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(Nehalem Haswell)
status=0
for cpu in "${cpus[@]}"; do
  for bin in "$build"/tests/seqkv_test_*; do
    [ -x "$bin" ] || continue
    if out=$(cd "$build/tests" && qemu-x86_64 -cpu "$cpu" "$bin" --gtest_brief=1 2>&1); then
      echo "PASS  $cpu  $(basename "$bin")  $(echo "$out" | grep -E '^\[  (PASSED|SKIPPED)' | tr '\n' ' ')"
    else
      echo "FAIL  $cpu  $(basename "$bin")"; echo "$out" | tail -30; status=1
    fi
  done
done
exit $status
