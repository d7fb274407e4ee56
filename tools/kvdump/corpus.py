"""Deterministic text sources present on any Debian 12 machine with python3 installed.

Training: every regular (non-symlink) /usr/lib/python3.11/*.py in sorted order, minus HELD_OUT
and EXCLUDED, plus the non-symlink license texts in /usr/share/common-licenses minus held-out ones.
"""
import hashlib
import os

STDLIB_DIR = "/usr/lib/python3.11"
LICENSE_DIR = "/usr/share/common-licenses"
# Held out from training; used for perplexity and KV dumps.
HELD_OUT_PY = ("textwrap.py", "fractions.py", "heapq.py", "shlex.py")
HELD_OUT_LICENSES = ("GPL-3", "LGPL-3")
# Machine-generated / machine-specific files.
EXCLUDED_PY = ("_sysconfigdata__linux_x86_64-linux-gnu.py", "_sysconfigdata__x86_64-linux-gnu.py",
               "sitecustomize.py")


def _regular_files(directory, pred):
    names = sorted(n for n in os.listdir(directory) if pred(n))
    return [os.path.join(directory, n) for n in names
            if os.path.isfile(os.path.join(directory, n))
            and not os.path.islink(os.path.join(directory, n))]


def training_files():
    py = _regular_files(STDLIB_DIR, lambda n: n.endswith(".py") and n not in HELD_OUT_PY
                        and n not in EXCLUDED_PY)
    lic = _regular_files(LICENSE_DIR, lambda n: n not in HELD_OUT_LICENSES)
    return py + lic


def held_out_files():
    return ([os.path.join(STDLIB_DIR, n) for n in HELD_OUT_PY]
            + [os.path.join(LICENSE_DIR, n) for n in HELD_OUT_LICENSES])


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def manifest(paths):
    """[(path, size, sha256)] and one combined sha256 over the ordered list."""
    rows, h = [], hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        d = hashlib.sha256(data).hexdigest()
        rows.append((p, len(data), d))
        h.update(f"{p}\0{d}\n".encode())
    return rows, h.hexdigest()
