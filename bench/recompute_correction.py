#!/usr/bin/env python3
"""What exact recompute + correction would cost on real KV (issue: layer 2 at the floor).

For a SmolLM2 dump made by `seqkv_corpus.py dump --gguf` (our float32 PyTorch forward), run
llama.cpp (llama-cpp-python, f32 cache) on the same tokens, round its K/V to bf16 as an engine
with a bf16 cache holds them, and print the order-0 entropy (bits/element, per (layer, K/V)
tensor, no side information) of (a) the engine's bf16 KV itself and (b) the correction
engine - ours in bf16 ulps (monotone integer order). (b) is what a codec that recomputes KV with
our arithmetic would still have to store.
Usage: build/venv/bin/python bench/recompute_correction.py [DUMP] [GGUF]
"""
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from kvdump import crosscheck, llama_state  # noqa: E402
from kvdump.gguf_dump import resolve_gguf  # noqa: E402
from kvdump.safetensors_io import load_file  # noqa: E402


def entropy_bits(x):
    _, c = np.unique(x, return_counts=True)
    p = c / c.sum()
    return float(-(c * np.log2(p)).sum())


def ordered(bits16):
    b = bits16.astype(np.int32) & 0xFFFF
    return np.where(b & 0x8000, -(b & 0x7FFF), b & 0x7FFF)


def main(argv):
    dump = argv[0] if argv else os.path.join(ROOT, "data", "kv", "smollm2-gpl3.safetensors")
    t, meta = load_file(dump)
    gguf = resolve_gguf(argv[1] if len(argv) > 1 else "smollm2")[0]
    L, H, D = int(meta["n_layers"]), int(meta["n_kv_heads"]), int(meta["head_dim"])
    _, buf, version = crosscheck.llama_cpp_run(gguf, t["tokens"].tolist(), "f32")
    kv, _ = llama_state.kv_by_layer(llama_state.parse_seq_state(buf), L, H, D)
    eng_bits = corr_bits = n = 0.0
    print(f"{os.path.basename(dump)} vs llama.cpp {version} (f32 cache rounded to bf16)")
    print("layer kind  engine-bits  correction-bits  exact-fraction")
    for l in range(L):
        for j, kind in enumerate("kv"):
            eng = ordered(kv[l][j].to(torch.bfloat16).contiguous().view(torch.int16).numpy())
            ours = ordered(t[f"layer.{l}.{kind}"].contiguous().view(torch.int16).numpy())
            d = eng - ours
            e, c = entropy_bits(eng.ravel()), entropy_bits(d.ravel())
            eng_bits, corr_bits, n = eng_bits + e, corr_bits + c, n + d.size
            print(f"{l:5d} {kind:4s} {e / d.size:12.2f} {c / d.size:16.2f} {float((d == 0).mean()):15.3f}")
    print(f"all: engine {eng_bits / n:.3f} bits/element, correction {corr_bits / n:.3f} bits/element "
          f"({eng_bits / corr_bits:.2f}x fewer bits)")


if __name__ == "__main__":
    main(sys.argv[1:])
