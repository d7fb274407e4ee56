#!/usr/bin/env bash
# Runs seqkv_bench_prefix_store twice: with the memory chunk store only, then with --redis against
# a throwaway redis-server (loopback, a free port, a temp folder, no persistence: --save ""
# --appendonly no) that this script starts and always stops (trap), whatever happens.
#
# Usage: scripts/bench-prefix-store.sh [BENCH_BINARY] [bench options, e.g. --sessions 120]
#   BENCH_BINARY: default $SEQKV_BENCH_BIN, else the newest build/*/bench/seqkv_bench_prefix_store
#   (configure with -DSEQKV_BUILD_BENCH=ON and hiredis installed, build that target).
#   redis-server: $SEQKV_REDIS_SERVER, else redis-server on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

bench=${SEQKV_BENCH_BIN:-}
if [[ $# -gt 0 && $1 != -* ]]; then bench=$1; shift; fi
if [[ -z $bench ]]; then
  bench=$(ls -t "$root"/build/*/bench/seqkv_bench_prefix_store 2>/dev/null | head -1 || true)
fi
if [[ -z $bench || ! -x $bench ]]; then
  echo "bench-prefix-store: no seqkv_bench_prefix_store binary; build it first:" >&2
  echo "  cmake -S . -B build/bench -DSEQKV_BUILD_BENCH=ON && cmake --build build/bench --target seqkv_bench_prefix_store" >&2
  exit 2
fi
server=${SEQKV_REDIS_SERVER:-$(command -v redis-server || true)}
if [[ -z $server ]]; then
  echo "bench-prefix-store: redis-server is not installed (scripts/install-deps.sh installs it)" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/seqkv-bench-redis-XXXXXX")
pid=
stop_server() {
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port in [12000, 22000) (below the ephemeral range); a start that loses a race for it is
# retried on another.
port=
for attempt in $(seq 1 20); do
  candidate=$((12000 + RANDOM % 10000))
  listening "$candidate" && continue
  "$server" --port "$candidate" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --protected-mode no --dir "$tmp" --logfile "$tmp/redis.log" &
  pid=$!
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break  # exited: the port was taken
    if listening "$candidate"; then port=$candidate; break; fi
    sleep 0.05
  done
  [[ -n $port ]] && break
  stop_server
done
if [[ -z $port ]]; then
  echo "bench-prefix-store: redis-server did not start (log: $tmp/redis.log)" >&2
  cat "$tmp/redis.log" >&2 || true
  exit 1
fi
echo "bench-prefix-store: $("$server" --version | head -1) on 127.0.0.1:$port (temp dir, no persistence)"
echo "bench-prefix-store: $bench $*"

echo
echo "== memory chunk store =="
"$bench" "$@"
echo
echo "== memory chunk store, then redis_chunk_store at 127.0.0.1:$port =="
"$bench" "$@" --redis "127.0.0.1:$port"
