#!/usr/bin/env bash
# Lossless speed and ratio on the bundled real KV, one run per model: the tiny fixture model
# (data/kv/gpl3 + py311-textwrap) and SmolLM2-135M (data/kv/smollm2-*), bf16 as stored. Rows:
# seqkv (CLI default: 512-token chunks, RoPE-aware, ids; -exhaustive: the predictor search on
# every token; -mt: every core, wall clock) against zstd -3/-19, lz4, blosc byte/bit shuffle.
# Then what recomputing the same KV costs instead: llama.cpp's prefill of SmolLM2-135M (Q4_1, the
# pip package's GGUF) on this CPU, as tokens/s and MB/s of bf16 KV, on 1 thread and every core
# (bench/llama_prefill_speed.py in the venv of scripts/setup-models.sh; skipped with a line when
# the model packages are not installed: no PyPI), and the middle ground: the reference model or
# its int12 / int8 drafts recomputing the KV in one batch with the residual coded (seqkv_bench_tokens
# --only-draft: ratio, exactness, encode/decode speed).
# Lossy presets (KIVI, int8, fp8, TurboQuant, error-bounded, seqkv-*) follow, through `seqkv bench`.
# Usage: bench/speed_report.sh [BUILD_DIR]   (a build with -DSEQKV_BUILD_BENCH=ON: default build/bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/bench}
bench="$build/bench/seqkv_bench_lossless"
[ -x "$bench" ] || { echo "no $bench: build the benches first: cmake --preset bench && cmake --build --preset bench" >&2; exit 2; }
export SEQKV_BENCH_BF16_ONLY=1 SEQKV_BENCH_SUMMARY_ONLY=1
export SEQKV_BENCH_CODECS=seqkv-lossless-c512,seqkv-lossless-c512-exhaustive,seqkv-lossless-c512-mt,zstd-3,zstd-19,lz4,blosc-zstd-byteshuffle,blosc-zstd-bitshuffle
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
for model in tiny smollm2; do
  if [ $model = tiny ]; then files="$root/data/kv/gpl3.safetensors:$root/data/kv/py311-textwrap.safetensors"
  else files="$root/data/kv/smollm2-gpl3.safetensors:$root/data/kv/smollm2-py311-textwrap.safetensors"; fi
  echo; echo "== $model =="
  SEQKV_KV_FILES="$files" "$bench" --benchmark_min_time=0.3 2>/dev/null | sed -n '/^Lossless summary/,/^BF16 *seqkv-lossless-c512 [0-9.]* \//p'
done
# Lossy presets on the same dumps: `seqkv bench` (the CLI's compress / decompress of the whole
# dump, 1 thread and every core, wall clock; ratio against the bf16 bytes; the presets' own chunks).
cli="$build/tools/seqkv"
if [ -x "$cli" ]; then
  lossy_presets="kivi2 kivi4 int8 fp8 turbo3 turbo2.5 abs:0.05 bound:0.01 seqkv-step:0.5 seqkv-2bit"
  args=(); codecs=""
  for p in $lossy_presets; do args+=(--preset "$p"); codecs="$codecs${codecs:+,}seqkv:$p"; done
  for model in tiny smollm2; do
    if [ $model = tiny ]; then files=("$root/data/kv/gpl3.safetensors" "$root/data/kv/py311-textwrap.safetensors")
    else files=("$root/data/kv/smollm2-gpl3.safetensors" "$root/data/kv/smollm2-py311-textwrap.safetensors"); fi
    echo; echo "== lossy presets, $model =="
    "$cli" bench "${args[@]}" --codecs "$codecs" --seconds 0.3 "${files[@]}"
  done
else
  echo; echo "skipped the lossy rows: no $cli"
fi

echo; echo "== recompute instead (SmolLM2-135M prefill of the smollm2-gpl3 dump's tokens) =="
py=$("$root/scripts/setup-models.sh" 2>/dev/null | tail -1 || echo SKIP)
if [[ -z $py || $py == SKIP ]]; then
  echo "skipped: the model packages are not installed (scripts/setup-models.sh)"
else
  threads=1; [ "$(nproc)" -gt 1 ] && threads="1,$(nproc)"
  "$py" "$root/bench/llama_prefill_speed.py" --threads "$threads" "$root/data/kv/smollm2-gpl3.safetensors"
  # Between the two: the model (or a cheaper integer draft of it) recomputes the KV in one batch
  # and seqkv codes only the difference (presets draft / draft-abs:0.05; docs/TOKEN_MODE.md).
  echo; echo "== recompute + coded residual (draft presets; SmolLM2 weights exported from the same GGUF) =="
  weights=${SEQKV_SMOLLM2_WEIGHTS:-$HOME/.cache/seqkv/smollm2-weights-f32.safetensors}
  [ -f "$weights" ] || { mkdir -p "$(dirname "$weights")"; "$py" "$root/tools/seqkv_corpus.py" export-weights --gguf smollm2 -o "$weights"; }
  if [ -x "$build/bench/seqkv_bench_tokens" ]; then
    "$build/bench/seqkv_bench_tokens" --model "$weights" --threads "$(nproc)" --chunk 256 --only-draft \
      "$root/data/kv/smollm2-gpl3.safetensors" | grep -E 'prefill|residual'
  else
    echo "skipped: no $build/bench/seqkv_bench_tokens"
  fi
fi
