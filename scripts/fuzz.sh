#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/fuzz_*.cpp) for a while on a copy of its committed seed
# corpus (fuzz/corpus/<target>/) plus its regression inputs (fuzz/regressions/<target>/).
# Usage: scripts/fuzz.sh [--build DIR] [--seconds N] [--jobs J] [--make-seeds] [target ...]
#   --build DIR     a build made by scripts/test-sanitizers.sh (default build/asan; built if missing)
#   --seconds N     per target (default 8: the CI run; a long run is e.g. --seconds 3600)
#   --jobs J        parallel fuzzing processes per target (default 1)
#   --make-seeds    rewrite fuzz/corpus/ from the fixture data (then commit it) and exit
# A crash leaves its input in build/fuzz-artifacts/<target>/ and fails the script; copy it into
# fuzz/regressions/<target>/ once fixed, so ctest replays it forever (fuzz_<target>_corpus).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/asan
seconds=8
jobs=1
make_seeds=0
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --make-seeds) make_seeds=1; shift ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ! -d "$build/fuzz" ]]; then
  SEQKV_ASAN_BUILD_DIR=$build "$root/scripts/test-sanitizers.sh" --build-only
fi
if [[ $make_seeds == 1 ]]; then
  rm -rf "$root/fuzz/corpus"
  ASAN_OPTIONS=detect_leaks=0 "$build/fuzz/seqkv_fuzz_make_seeds" "$root/data" "$root/fuzz/corpus"
  du -sh "$root/fuzz/corpus"/*
  exit 0
fi
if [[ ${#targets[@]} == 0 ]]; then
  for f in "$root"/fuzz/fuzz_*.cpp; do t=$(basename "$f" .cpp); targets+=("${t#fuzz_}"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
printf '%-16s %10s %8s %8s %s\n' target executions seconds corpus result
for t in "${targets[@]}"; do
  bin=$build/fuzz/seqkv_fuzz_$t
  work=$build/fuzz-work/$t
  art=$build/fuzz-artifacts/$t/
  mkdir -p "$work" "$art"
  dirs=("$work")
  for d in "$root/fuzz/corpus/$t" "$root/fuzz/regressions/$t"; do [[ -d "$d" ]] && dirs+=("$d"); done
  log=$build/fuzz-work/$t.log
  rc=0
  parallel=()
  [[ $jobs -gt 1 ]] && parallel=(-jobs="$jobs" -workers="$jobs")
  (cd "$build/fuzz-work" && "$bin" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=2560 "${parallel[@]}" \
    -artifact_prefix="$art" -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1) || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}' "$log" $(compgen -G "$build/fuzz-work/fuzz-*.log" || true))
  rm -f "$build"/fuzz-work/fuzz-*.log
  units=$(ls "$work" | wc -l)
  if [[ $rc == 0 ]]; then result=ok; else result="CRASH (rc $rc, log $log)"; status=1; tail -n 40 "$log" >&2; fi
  printf '%-16s %10s %8s %8s %s\n' "$t" "$execs" "$seconds" "$units" "$result"
done
exit $status
