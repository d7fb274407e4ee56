#!/usr/bin/env bash
# `pip install .` of the seqkv Python package as a user does it, then its pytest suite against the
# installed package (run from outside the source tree, so only the installed copy can be imported).
# venv on Debian's /usr/bin/python3 with its site packages (numpy, torch, pytest), under
# $SEQKV_PIP_DIR (default build/pip-test). Build requirements (scikit-build-core, pybind11) come
# from PyPI: exit 77 after printing SKIP when it is unreachable (ctest python_pip_install: skipped).
# About 5 min on 2 cores (the codecs compile once into the extension).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${SEQKV_PIP_DIR:-$root/build/pip-test}
venv=$work/venv
mkdir -p "$work"
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# PyPI reachable? (the build requirements are fetched into pip's isolated build environment)
if ! "$venv/bin/pip" download -q --no-deps --retries 1 --timeout 20 -d "$work/probe" "scikit-build-core>=0.8" >"$work/probe.log" 2>&1; then
  echo "SKIP: PyPI unreachable: cannot fetch the build requirements (see $work/probe.log)"
  exit 77
fi
"$venv/bin/pip" install -q --retries 2 --timeout 60 --force-reinstall --no-deps "$root" >"$work/pip.log" 2>&1 || {
  echo "FAIL: pip install . failed (see $work/pip.log)"
  tail -30 "$work/pip.log"
  exit 1
}
cd "$work"  # not the source tree: `import seqkv` must find the installed package
"$venv/bin/python" - <<'PY'
import seqkv, os
where = os.path.dirname(seqkv.__file__)
assert "site-packages" in where, where
print(f"seqkv {seqkv.__version__} installed at {where}")
PY
SEQKV_DATA_DIR="$root/data" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/python/tests"
