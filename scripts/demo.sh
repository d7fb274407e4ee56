#!/usr/bin/env bash
# The main job: builds the seqkv CLI and compresses + decompresses the bundled real KV fixture,
# printing size, ratio and speed. Extra arguments go to `seqkv demo` (e.g. --preset NAME, --json).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build=${SEQKV_BUILD_DIR:-$root/build/release}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSEQKV_BUILD_TESTS=OFF -DSEQKV_BUILD_EXAMPLES=OFF \
  -DSEQKV_BUILD_CLI=ON >/dev/null
cmake --build "$build" --target seqkv_cli -j "$(nproc)" >/dev/null
exec "$build/tools/seqkv" demo "$@"
