#!/usr/bin/env bash
# Installs the Debian 12 packages seqkv's build, tests, benchmarks and corpus tool need.
# Idempotent: does nothing when everything is already installed. Run as root (or with sudo).
set -euo pipefail
packages=(
  build-essential cmake pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  libxsimd-dev nlohmann-json3-dev libcli11-dev libboost-dev
  libzstd-dev liblz4-dev liblzma-dev libblosc-dev libfpzip-dev libzfp-dev
  python3 python3-venv python3-torch libopenblas0-pthread
  python3-dev pybind11-dev python3-numpy python3-pytest  # the Python package's extension and its pytest suite
  time  # GNU time: peak memory in bench/memory_report.sh
  libhiredis-dev redis-server redis-tools  # the Redis chunk store; its tests start their own servers
  clang libclang-rt-14-dev  # the sanitizer suite and the libFuzzer targets (scripts/test-sanitizers.sh)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "seqkv: installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
