#!/usr/bin/env bash
# Peak memory of the CLI on a long real cache (issue: bounded memory). Joins the SmolLM2 dumps
# along the token axis into a >= 500 MB cache (bench/make_long_cache.py), then measures with GNU
# time: `seqkv compress` (lossless and a lossy preset), `seqkv decompress` (whole, and a range),
# each round trip checked (cmp). Prints peak resident memory against the input's size.
#
# Usage: bench/memory_report.sh [SEQKV_BINARY] [TOKENS]   (default: newest build/*/tools/seqkv, 23000
#        tokens = 531 MB of bf16 KV). Work files in $SEQKV_MEMORY_DIR (default /tmp/seqkv-memory).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${1:-$(ls -t "$root"/build/*/tools/seqkv 2>/dev/null | head -1)}
tokens=${2:-23000}
work=${SEQKV_MEMORY_DIR:-/tmp/seqkv-memory}
[ -x "$cli" ] || { echo "memory_report: no seqkv binary (build the CLI first)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "memory_report: needs GNU time (apt-get install time)" >&2; exit 2; }
mkdir -p "$work"
long=$work/long.safetensors
/usr/bin/python3 "$root/bench/make_long_cache.py" -o "$long" --tokens "$tokens" \
  "$root/data/kv/smollm2-gpl3.safetensors" "$root/data/kv/smollm2-py311-textwrap.safetensors"
in_mb=$(( $(stat -c %s "$long") / 1048576 ))
printf '%-44s %9s %9s %12s %8s\n' "command" "input MB" "peak MB" "peak-input" "wall s"
run() {  # name, input file, command...
  local name=$1 input=$2; shift 2
  local mb=$(( $(stat -c %s "$input") / 1048576 ))
  /usr/bin/time -f "%M %e" -o "$work/time.txt" "$@" >/dev/null
  read -r kb wall <"$work/time.txt"
  printf '%-44s %9d %9d %12d %8s\n' "$name" "$mb" $((kb / 1024)) $((kb / 1024 - mb)) "$wall"
}
run "compress lossless" "$long" "$cli" compress "$long" -o "$work/l.skv"
run "compress lossless --threads 0" "$long" "$cli" compress "$long" -o "$work/l2.skv" --threads 0
cmp "$work/l.skv" "$work/l2.skv"
run "compress kivi4" "$long" "$cli" compress "$long" -o "$work/k.skv" --preset kivi4
run "decompress lossless (whole)" "$work/l.skv" "$cli" decompress "$work/l.skv" -o "$work/back.safetensors"
"$cli" compress "$work/back.safetensors" -o "$work/l3.skv" >/dev/null
cmp "$work/l.skv" "$work/l3.skv"  # every tensor and the metadata came back (the JSON header's spacing may differ)
run "decompress lossless --tokens 10000:12000" "$work/l.skv" "$cli" decompress "$work/l.skv" -o "$work/part.safetensors" --tokens 10000:12000
run "decompress kivi4 (whole)" "$work/k.skv" "$cli" decompress "$work/k.skv" -o "$work/kback.safetensors"
echo "lossless: --threads 0 wrote the same bytes; the decompressed dump compresses to the same .skv (cmp)"
echo "kivi4 $("$cli" info "$work/k.skv" | grep quality)"
