#!/usr/bin/env bash
# Lossless ratio as a function of context length on real SmolLM2 KV (bf16): seqkv (CLI default,
# 512-token chunks) against zstd -3/-19, xz -9, lz4, blosc byte/bit shuffle, in one run per file.
# Usage: bench/context_sweep.sh [CORPUS_DIR] [BUILD_DIR]
#   CORPUS_DIR: default ~/.cache/seqkv/smollm2 (tools/seqkv_corpus.py real-corpus makes it)
#   BUILD_DIR:  a build with -DSEQKV_BUILD_BENCH=ON (default build/bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:-$HOME/.cache/seqkv/smollm2}
build=${2:-$root/build/bench}
bench="$build/bench/seqkv_bench_lossless"
[ -x "$bench" ] || { echo "build the benches first: cmake --preset bench && cmake --build --preset bench" >&2; exit 2; }
export SEQKV_BENCH_BF16_ONLY=1 SEQKV_BENCH_SUMMARY_ONLY=1
export SEQKV_BENCH_CODECS=seqkv-lossless-c512,zstd-3,zstd-19,xz-9,lz4,blosc-zstd-byteshuffle,blosc-zstd-bitshuffle
printf "%-28s %8s %8s %8s %8s %8s %8s %10s %s\n" file seqkv zstd-3 zstd-19 xz-9 blosc-B blosc-b seqkv/best "seqkv dec MB/s"
for f in $(ls "$corpus"/*.safetensors | sort -V); do
  out=$(SEQKV_KV_FILES="$f" "$bench" --benchmark_min_time=0.05 --benchmark_filter='decode/BF16/seqkv-lossless-c512$' 2>/dev/null)
  r() { echo "$out" | awk -v c="$1" '$1=="BF16" && $2==c && $4!="/" {print $3}'; }
  dec=$(echo "$out" | awk '$1=="BF16" && $2=="seqkv-lossless-c512" && $4!="/" {print $5}')
  best=$(echo "$out" | awk '/best peer/ {print $NF}')
  printf "%-28s %8s %8s %8s %8s %8s %8s %10s %s\n" "$(basename "$f" .safetensors)" "$(r seqkv-lossless-c512)" "$(r zstd-3)" \
    "$(r zstd-19)" "$(r xz-9)" "$(r blosc-zstd-byteshuffle)" "$(r blosc-zstd-bitshuffle)" "$best" "$dec"
done
