"""A PyTorch KV cache laid out like a serving engine's (vLLM: per layer one tensor
[2, num_blocks, block_size, kv_heads, head_dim]), two sequences sharing its pages. Each sequence is
compressed from its pages where they are (no gather copy), its pages are freed, and it is later
restored into other free pages under a new block table, bit for bit. KV: the bundled SmolLM2-135M
dumps (two real sequences), or files given as arguments.

    PYTHONPATH=build/<dir>/python /usr/bin/python3 python/examples/engine_paged_cache.py
"""
import os
import sys

import torch

import seqkv

data = os.environ.get("SEQKV_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
paths = sys.argv[1:] or [os.path.join(data, "kv", f) for f in ("smollm2-gpl3.safetensors", "smollm2-py311-textwrap.safetensors")]
dumps = [seqkv.load_kv(p) for p in paths]
seqs = [seqkv.to_torch(d["kv"], d["dtype"]) for d in dumps]  # [layers, 2, kv_heads, T, head_dim] each
L, _, H, _, D = seqs[0].shape
BLOCK, NUM_BLOCKS = 16, 64
pool = [torch.zeros(2, NUM_BLOCKS, BLOCK, H, D, dtype=torch.bfloat16) for _ in range(L)]  # the engine's cache
free = list(range(NUM_BLOCKS - 1, -1, -1))


def allocate(tokens):
    return torch.tensor([free.pop() for _ in range((tokens + BLOCK - 1) // BLOCK)], dtype=torch.int32)


def write_pages(kv, table):  # what the engine's attention kernels do as the sequence is prefilled
    for t in range(kv.shape[3]):
        b, r = int(table[t // BLOCK]), t % BLOCK
        for l in range(L):
            pool[l][:, b, r] = kv[l, :, :, t]


def read_pages(table, tokens):
    out = torch.empty(L, 2, H, tokens, D, dtype=torch.bfloat16)
    for t in range(tokens):
        b, r = int(table[t // BLOCK]), t % BLOCK
        for l in range(L):
            out[l, :, :, t] = pool[l][:, b, r]
    return out


tables = []
for kv in seqs:
    tables.append(allocate(kv.shape[3]))
    write_pages(kv, tables[-1])

# Offload: compress each sequence from its pages, then free them.
stored = []
for kv, d, table in zip(seqs, dumps, tables):
    md = d["metadata"]
    skv = seqkv.compress_paged(pool, table, kv.shape[3], layout="vllm_split", token_ids=d["token_ids"],
                               rope_theta=float(md.get("rope_theta", 0)), rope_style=md.get("rope_style", "rotate_half"))
    stored.append(skv)
    free.extend(int(b) for b in table)
    raw = kv.numel() * kv.element_size()
    print(f"sequence of {kv.shape[3]} tokens: {raw} B of bf16 KV in {len(table)} pages -> {len(skv)} B (x{raw / len(skv):.3f}, lossless)")
for p in pool:  # the pages get reused by other sequences
    p.normal_()

# Reload, in reverse order, into whatever pages are free now.
ok = True
for kv, skv in reversed(list(zip(seqs, stored))):
    table = allocate(kv.shape[3])
    seqkv.decompress_into(skv, pool, table, layout="vllm_split")
    back = read_pages(table, kv.shape[3])
    same = torch.equal(back.view(torch.int16), kv.view(torch.int16))
    ok &= same
    print(f"restored {kv.shape[3]} tokens into pages {table[:4].tolist()}...: bit-exact {same}")
print("OK" if ok else "FAIL")
sys.exit(0 if ok else 1)
