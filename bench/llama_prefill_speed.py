#!/usr/bin/env python3
"""llama.cpp's prefill and token-by-token decode speed on the same tokens as a KV dump: the
recompute price token mode is compared with (bench/bench_tokens.cpp prints ours).

  build/venv/bin/python bench/llama_prefill_speed.py [--gguf smollm2] [--threads 1,2] DUMP.safetensors

The GGUF is resolved like tools/seqkv_corpus.py does (alias smollm2 / gemma3 = the pip packages).
Prints tokens/s of a batched prefill (what recompute costs) — and, as MB/s of the dump's KV (bf16:
layers x 2 x kv_heads x head_dim x 2 B per token, from its metadata), the recompute rate that
bench/speed_report.sh sets beside seqkv's decode MB/s — and of one-token evals with the KV cache
(what a token-by-token decoder like token mode's pays), per thread count.
"""
import argparse
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


def dump_tokens(path, n):
    """The dump's token ids (first n; 0 = all) and its bf16 KV bytes per token."""
    with open(path, "rb") as f:
        hlen = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(hlen))
        t = header["tokens"]
        f.seek(8 + hlen + t["data_offsets"][0])
        raw = f.read(t["data_offsets"][1] - t["data_offsets"][0])
    ids = list(struct.unpack(f"<{len(raw) // 4}i", raw))
    meta = header.get("__metadata__", {})
    kv_bytes = 0
    if all(k in meta for k in ("n_layers", "n_kv_heads", "head_dim")):
        kv_bytes = int(meta["n_layers"]) * 2 * int(meta["n_kv_heads"]) * int(meta["head_dim"]) * 2
    return (ids[:n] if n else ids), kv_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--gguf", default="smollm2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=0, help="first N tokens (default all)")
    ap.add_argument("--decode-tokens", type=int, default=64, help="one-token evals timed after the prefill")
    a = ap.parse_args()
    import llama_cpp
    from kvdump.gguf_dump import resolve_gguf
    path = resolve_gguf(a.gguf)[0]
    ids, kv_bytes = dump_tokens(a.dump, a.tokens)
    print(f"llama.cpp {llama_cpp.__version__}, {os.path.basename(path)}, {len(ids)} tokens of {os.path.basename(a.dump)}")
    for threads in [int(x) for x in a.threads.split(",")]:
        n_ctx = max(256, -(-(len(ids) + a.decode_tokens) // 256) * 256)
        llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        llm.eval(ids[:8])  # warm-up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        extra = ids[:a.decode_tokens]
        for t in extra:
            llm.eval([t])
        decode = time.perf_counter() - t0
        llm.close()
        kv_rate = f" = {len(ids) / prefill * kv_bytes / 1e6:7.1f} MB/s of bf16 KV" if kv_bytes else ""
        print(f"  {threads} thread{'s' if threads > 1 else ''}: prefill {len(ids) / prefill:8.1f} tokens/s{kv_rate}; "
              f"token-by-token {len(extra) / decode:7.1f} tokens/s (f16 KV cache, Q4_1 weights)")


if __name__ == "__main__":
    main()
