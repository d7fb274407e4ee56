#!/usr/bin/env bash
# Compile time of a file that includes <seqkv/seqkv.hpp> and calls compress + decompress
# (tests/install/runtime_consumer/main.cpp), at -O2 with g++ and clang++: with seqkv::runtime
# (-DSEQKV_SEPARATE_RUNTIME, then linked against the archive and run) and, with --header-only,
# also the header-only way (minutes per compiler). Prints CPU seconds (user + sys) per compile;
# clang's -ftime-trace JSON files land in the output folder (open them in chrome://tracing or
# https://ui.perfetto.dev).
#   scripts/compile-time.sh [--header-only] [--runtime path/to/libseqkv_runtime.a] [--out DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
header_only=0
archive=""
out=$(mktemp -d /tmp/seqkv-compile-time.XXXXXX)
while [ $# -gt 0 ]; do
  case $1 in
    --header-only) header_only=1 ;;
    --runtime) archive=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
src=$root/tests/install/runtime_consumer/main.cpp
flags=(-std=c++20 -O2 -ffp-contract=off -I"$root/include")
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
measure() {  # measure LABEL COMPILER EXTRA_FLAGS...
  local label=$1 cxx=$2; shift 2
  local trace=()
  [[ $cxx == clang* ]] && trace=(-ftime-trace)
  /usr/bin/time -f "%U %S" -o "$out/$label.time" "$cxx" "${flags[@]}" "$@" "${trace[@]}" -c "$src" -o "$out/$label.o"
  read -r user sys < "$out/$label.time"
  awk -v l="$label" -v u="$user" -v s="$sys" 'BEGIN { printf "%-28s %7.1f s CPU (user %s, sys %s)\n", l, u + s, u, s }'
}
for cxx in g++ clang++; do
  command -v "$cxx" >/dev/null || continue
  measure "$cxx-separate-runtime" "$cxx" -DSEQKV_SEPARATE_RUNTIME=1
  if [ -n "$archive" ]; then
    "$cxx" "$out/$cxx-separate-runtime.o" "$archive" -o "$out/$cxx-consumer" && "$out/$cxx-consumer"
  fi
  [ $header_only = 1 ] && measure "$cxx-header-only" "$cxx"
done
echo "objects, timings and traces: $out"
