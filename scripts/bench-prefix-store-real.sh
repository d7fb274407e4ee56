#!/usr/bin/env bash
# The prefix store on real agent-like sessions whose KV SmolLM2-135M computed for each session's own
# tokens: makes the sessions (bench/make_agent_sessions.py, torch forward of the GGUF model in the
# venv of scripts/setup-models.sh; skipped when the directory already holds them), then runs
# seqkv_bench_prefix_store --sessions-dir on them: bytes each session alone, with exact-prefix dedup
# and with near-prefix reuse, lossless (read back bit-exactly) and lossy at one preset.
#
# Usage: scripts/bench-prefix-store-real.sh [DIR] [bench options]
#   DIR: where the sessions go (default build/agent-sessions); bench options default to
#   --chunk 32 --near-gap 16 --lossy-preset seqkv-step:0.05
#   SEQKV_BENCH_BIN: the bench binary (default: the newest build/*/bench/seqkv_bench_prefix_store).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build/agent-sessions}
[[ $# -gt 0 ]] && shift
opts=("$@")
[[ ${#opts[@]} -eq 0 ]] && opts=(--chunk 32 --near-gap 16 --lossy-preset seqkv-step:0.05)
bench=${SEQKV_BENCH_BIN:-$(ls -t "$root"/build/*/bench/seqkv_bench_prefix_store 2>/dev/null | head -1 || true)}
if [[ -z $bench || ! -x $bench ]]; then
  echo "bench-prefix-store-real: build seqkv_bench_prefix_store first (-DSEQKV_BUILD_BENCH=ON)" >&2
  exit 2
fi
py=$("$root/scripts/setup-models.sh" | tail -1)
if [[ $py == SKIP ]]; then
  echo "bench-prefix-store-real: the model packages could not be installed (no PyPI?)" >&2
  exit 2
fi
if ! ls "$dir"/*.safetensors >/dev/null 2>&1; then
  "$py" "$root/bench/make_agent_sessions.py" --out "$dir"
fi
exec "$bench" --sessions-dir "$dir" "${opts[@]}"
