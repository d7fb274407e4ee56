#!/usr/bin/env bash
# Packages seqkv with Conan 2 (conanfile.py) and builds + runs test_package/, offline: no remote is
# used (default options: no dependencies). Everything lives under $SEQKV_CONAN_DIR (default
# build/conan): conan from PyPI in a venv (pinned), a private CONAN_HOME (~/.conan2 is never
# touched), a copy of test_package/ (the source tree stays clean). Exit 77 after printing SKIP
# when conan cannot be installed (PyPI unreachable); the ctest `conan_create` reports that as
# skipped. About 1 min on 2 idle cores once conan is installed (the test package's compile).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${SEQKV_CONAN_DIR:-$root/build/conan}
CONAN_VERSION=2.34.0
venv=$work/venv
export CONAN_HOME=$work/home
mkdir -p "$work"
if ! "$venv/bin/conan" --version 2>/dev/null | grep -qx "Conan version $CONAN_VERSION"; then
  rm -rf "$venv"
  {
    /usr/bin/python3 -m venv "$venv"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    # The venv's pip carries its own CA list; use the system's (which may hold a site proxy's CA).
    if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
      export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
    fi
    "$venv/bin/pip" install -q --retries 2 --timeout 30 "conan==$CONAN_VERSION"
  } >"$work/pip.log" 2>&1 || {
    echo "SKIP: could not install conan $CONAN_VERSION from PyPI (see $work/pip.log)"
    tail -5 "$work/pip.log"
    exit 77
  }
fi
conan=$venv/bin/conan
"$conan" profile detect --force >/dev/null 2>&1
# The test package builds in a scratch copy (conan writes build/ and CMakeUserPresets.json there).
rm -rf "$work/test_package"
cp -r "$root/test_package" "$work/test_package"
# seqkv needs C++20; detected profiles say gnu17 for g++ 12.
"$conan" create "$root" --no-remote --build=missing -s compiler.cppstd=20 \
  --test-folder "$work/test_package" -c tools.cmake.cmaketoolchain:user_presets=
