#!/usr/bin/env python3
"""Checks seqkv's include graph against its layering (docs/LAYERING.md, ARCHITECTURE "Layers").

Every `#include "seqkv/..."` (or <seqkv/...>) under include/, src/, tools/, bench/ and examples/ must run
downward: lower never includes higher, stages never include each other, a detail/ header is
private to the folder above it, and tools, bench and examples include public headers only.
Prints one line per violating include (file:line: from-layer -> to-layer) and exits 1; exits 0
when the graph is clean.

  tools/check_layers.py [--root DIR]   check the tree at DIR (default: this repository)
  tools/check_layers.py --self-test    check that a small fake tree's bad includes are all caught
"""
import argparse
import os
import re
import sys
import tempfile

# Stages of the codec: one concept each, depending on core only, never on each other.
STAGES = ("coding", "quant", "predict", "trie", "model")

# Which layers a layer's files may include (a layer may always include itself, except where the
# rule says "never each other": each stage is its own layer). Lowest first.
ALLOWED = {
    # core/: dtypes, layout, errors, checksums, exact arithmetic, the chunk contract. Depends on nothing.
    "core": {"core"},
    # Stages (coding/ quant/ predict/ trie/ model/): core only.
    **{stage: {stage, "core"} for stage in STAGES},
    # format/: the .skv container. core + the entropy coders it frames.
    "format": {"format", "core", "coding"},
    # backend/: executors and per-arch kernels (the rANS SIMD decode path). core + coding; codec/ includes it.
    "backend": {"backend", "core", "coding"},
    # codec/: composition of the stages over the container and a backend.
    "codec": {"codec", "core", *STAGES, "format", "backend"},
    # store/: prefix store over trie/ and format/.
    "store": {"store", "core", "coding", "trie", "format"},
    # io/: safetensors, .npy, GGUF / llama.cpp state, expected-KV tables (predict's types). Never codec/.
    "io": {"io", "core", *STAGES, "format"},
    # reference/: the deterministic reference model (token mode's model), outside the core headers:
    # the model seams, RoPE math, safetensors weights and the thread pool. Nothing below includes it.
    "reference": {"reference", "core", "model", "predict", "io", "format", "coding", "backend"},
    # metrics/: quality of a decoded cache, for tools and reports. core only; no codec includes it.
    "metrics": {"metrics", "core"},
    # api.hpp, seqkv.hpp, version.hpp (include/seqkv/*.hpp): the public entry points, over everything below.
    "api": {"api", "core", *STAGES, "format", "backend", "codec", "store", "io", "metrics"},
    # src/: the compiled runtime (explicit instantiations of the codecs and the API); public headers only.
    "runtime": {"api", "reference", "core", *STAGES, "format", "backend", "codec", "store", "io", "metrics"},
    # convert/: .skv <-> safetensors / llama.cpp state, built on the public API (public headers only).
    "convert": {"convert", "api", "reference", "core", *STAGES, "format", "backend", "codec", "store", "io", "metrics"},
    # tools/, bench/, examples/: clients; any public header, never a detail/ one.
    "client": {"convert", "api", "reference", "core", *STAGES, "format", "backend", "codec", "store", "io", "metrics"},
}
# Layers whose files may include only public headers (no detail/ folder anywhere).
PUBLIC_ONLY = {"runtime", "convert", "client"}

# Known exceptions: (including file, included header) -> why. Keep empty; each entry needs a TODO.
EXCEPTIONS = {}

SCANNED = ("include", "src", "tools", "bench", "examples")
SOURCE_EXT = (".hpp", ".h", ".cpp", ".cc", ".cu", ".cuh")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"](seqkv/[^">]+)[">]')


def layer_of_header(path):
    """Layer of a header named seqkv/... (None if it names no known layer)."""
    parts = path.split("/")
    if len(parts) == 2:
        return "api"  # seqkv/api.hpp, seqkv/seqkv.hpp, seqkv/version.hpp
    return parts[1] if parts[1] in ALLOWED and parts[1] not in ("api", "runtime", "client") else None


def layer_of_file(rel):
    """Layer of a file of the tree (path relative to the root, '/'-separated)."""
    if rel.startswith("include/seqkv/"):
        return layer_of_header(rel[len("include/"):])
    return "runtime" if rel.startswith("src/") else "client"


def detail_owner(header):
    """seqkv/a/b/detail/x.hpp -> 'seqkv/a/b/' (the folder it is private to), or None if public."""
    parts = header.split("/")
    if "detail" not in parts[:-1]:
        return None
    return "/".join(parts[: parts.index("detail")]) + "/"


def check_include(rel, line_no, header, root):
    """Violation messages of one include."""
    src = layer_of_file(rel)
    dst = layer_of_header(header)
    where = f"{rel}:{line_no}"
    if (rel, header) in EXCEPTIONS:
        return []
    if src is None:
        return [f"{where}: {rel} is in no known layer (add its folder to ALLOWED in tools/check_layers.py and docs/LAYERING.md)"]
    if dst is None:
        return [f"{where}: {src} -> ?: \"{header}\" is in no known layer"]
    problems = []
    if not os.path.isfile(os.path.join(root, "include", header)):
        problems.append(f"{where}: {src} -> {dst}: \"{header}\" does not exist")
    if dst not in ALLOWED[src]:
        kind = "sideways" if dst in STAGES and src in STAGES else "upward"
        allowed = ", ".join(sorted(ALLOWED[src]))
        problems.append(f"{where}: {src} -> {dst}: \"{header}\" runs {kind} ({src} may include {allowed})")
    owner = detail_owner(header)
    if owner is not None:
        if src in PUBLIC_ONLY:
            problems.append(f"{where}: {src} -> {dst}: \"{header}\" is internal (detail/); {src} includes public headers only")
        elif not rel.startswith("include/" + owner):
            problems.append(f"{where}: {src} -> {dst}: \"{header}\" is private to {owner} (detail/)")
    return problems


def source_files(root):
    for top in SCANNED:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SOURCE_EXT):
                    yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def check_tree(root):
    """All violation messages of the tree at root, and the number of includes checked."""
    problems, edges = [], 0
    for rel in source_files(root):
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                m = INCLUDE_RE.match(line)
                if m:
                    edges += 1
                    problems += check_include(rel, line_no, m.group(1), root)
    return problems, edges


def self_test():
    """A fake tree with one include of each kind; every bad one must be reported, no good one."""
    good = {
        "include/seqkv/core/a.hpp": [],
        "include/seqkv/core/b.hpp": ["seqkv/core/a.hpp"],
        "include/seqkv/predict/p.hpp": ["seqkv/core/a.hpp"],
        "include/seqkv/quant/q.hpp": ["seqkv/core/b.hpp"],
        "include/seqkv/format/f.hpp": ["seqkv/core/a.hpp"],
        "include/seqkv/codec/x/detail/k.hpp": ["seqkv/predict/p.hpp"],
        "include/seqkv/codec/x/c.hpp": ["seqkv/codec/x/detail/k.hpp", "seqkv/quant/q.hpp", "seqkv/format/f.hpp"],
        "include/seqkv/io/t.hpp": ["seqkv/predict/p.hpp", "seqkv/format/f.hpp"],
        "include/seqkv/api.hpp": ["seqkv/codec/x/c.hpp"],
        "include/seqkv/convert/s.hpp": ["seqkv/api.hpp", "seqkv/io/t.hpp"],
        "tools/cli/main.cpp": ["seqkv/convert/s.hpp", "seqkv/api.hpp"],
        "examples/e.cpp": ["seqkv/api.hpp"],
        "src/api.cpp": ["seqkv/api.hpp", "seqkv/codec/x/c.hpp"],
    }
    bad = {  # file -> (include, words the message must contain)
        "include/seqkv/core/bad.hpp": ("seqkv/predict/p.hpp", "core -> predict"),
        "include/seqkv/predict/bad.hpp": ("seqkv/quant/q.hpp", "predict -> quant: \"seqkv/quant/q.hpp\" runs sideways"),
        "include/seqkv/format/bad.hpp": ("seqkv/codec/x/c.hpp", "format -> codec"),
        "include/seqkv/io/bad.hpp": ("seqkv/api.hpp", "io -> api"),
        "include/seqkv/codec/bad.hpp": ("seqkv/io/t.hpp", "codec -> io"),
        "include/seqkv/codec/y/bad.hpp": ("seqkv/codec/x/detail/k.hpp", "private to seqkv/codec/x/"),
        "include/seqkv/api2.hpp": ("seqkv/convert/s.hpp", "api -> convert"),
        "bench/bad.cpp": ("seqkv/codec/x/detail/k.hpp", "client includes public headers only"),
        "tools/bad.cpp": ("seqkv/core/missing.hpp", "does not exist"),
        "src/bad.cpp": ("seqkv/convert/s.hpp", "runtime -> convert"),
        "include/seqkv/mystery/m.hpp": ("seqkv/core/a.hpp", "in no known layer"),
    }
    failures = []
    with tempfile.TemporaryDirectory() as root:
        def write(rel, includes):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write("#pragma once\n" + "".join(f'#include "{h}"\n' for h in includes) + "#include <vector>\n")
        for rel, includes in good.items():
            write(rel, includes)
        problems, edges = check_tree(root)
        if problems or edges != sum(len(v) for v in good.values()):
            failures.append(f"clean fake tree: expected no violations in {edges} includes, got: {problems}")
        for rel, (header, words) in bad.items():
            write(rel, [header])
            problems, _ = check_tree(root)
            hits = [p for p in problems if p.startswith(rel + ":2:") and words in p]
            if len(problems) != 1 or not hits:
                failures.append(f"{rel} including {header}: expected one violation containing '{words}', got: {problems}")
            os.remove(os.path.join(root, rel))
    for f in failures:
        print("SELF-TEST FAILED:", f)
    print(f"check_layers self-test: {len(bad)} bad includes, {len(failures)} not caught as expected")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    problems, edges = check_tree(args.root)
    for p in problems:
        print(p)
    if problems:
        print(f"include layering: {len(problems)} violation(s) in {edges} includes (rules: docs/LAYERING.md)")
        return 1
    print(f"include layering: {edges} includes, all downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
