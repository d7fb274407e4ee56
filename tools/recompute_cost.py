#!/usr/bin/env python3
"""Recompute cost of a KV cache: time the model's prefill over a dump's tokens (what an engine
pays to rebuild the cache instead of decoding it) and express it in MB/s of KV produced, the same
unit seqkv's decode speed is given in. Uses /usr/bin/python3 (Debian torch, CPU).

  /usr/bin/python3 tools/recompute_cost.py [--model data/tiny-llama] [--threads 1] data/kv/*.safetensors
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

from kvdump.safetensors_io import load_file  # noqa: E402
from kvdump.train import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--model", default="data/tiny-llama")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = per core, like seqkv's figures)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    loaded = load_model(a.model)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.eval()
    rows = []
    for path in a.dumps:
        t = load_file(path)
        t = t[0] if isinstance(t, tuple) else t
        tokens = t["tokens"].to(torch.int64).reshape(1, -1)
        kv_bytes = sum(v.numel() * v.element_size() for k, v in t.items()
                       if k.startswith("layer.") and (k.endswith(".k") or k.endswith(".v")))
        with torch.no_grad():
            model(tokens)  # warm-up
            best = float("inf")
            for _ in range(a.repeat):
                start = time.perf_counter()
                model(tokens)
                best = min(best, time.perf_counter() - start)
        rows.append({"file": os.path.basename(path), "tokens": tokens.shape[1], "kv_bytes": kv_bytes,
                     "prefill_seconds": best, "recompute_MBps": kv_bytes / 1e6 / best, "threads": a.threads})
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['file']:28s} {r['tokens']} tokens: prefill {1e3 * r['prefill_seconds']:.1f} ms on "
                  f"{r['threads']} thread(s) -> recompute {r['recompute_MBps']:.1f} MB/s of bf16 KV")


if __name__ == "__main__":
    main()
