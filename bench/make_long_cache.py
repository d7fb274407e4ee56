#!/usr/bin/env python3
"""Joins real KV dumps (seqkv's safetensors convention) along the token axis into one long cache:
the bounded-memory measurement needs a cache of hundreds of MB and the bundled dumps hold 256-512
tokens each. Dumps are taken in turn until the cache has --tokens tokens; K/V, token ids and nll
are joined, the first dump's metadata kept (n_tokens and positions updated). Every dump must have
the same geometry and dtype. Writes the file piece by piece (memory: one dump).

    /usr/bin/python3 bench/make_long_cache.py -o /tmp/long.safetensors --tokens 23000 data/kv/smollm2-*.safetensors
"""
import argparse
import json
import struct


def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    return {k: (v, raw[base + v["data_offsets"][0]:base + v["data_offsets"][1]]) for k, v in header.items()}, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--tokens", type=int, required=True, help="tokens of the joined cache (at least)")
    a = ap.parse_args()
    dumps = [read(p) for p in a.dumps]
    first, meta = dumps[0]
    kv_names = sorted((k for k in first if k.startswith("layer.") and k.rsplit(".", 1)[1] in ("k", "v")),
                      key=lambda k: (int(k.split(".")[1]), k))
    for d, _ in dumps:
        for k in kv_names:
            if d[k][0]["dtype"] != first[k][0]["dtype"] or d[k][0]["shape"][0::2] != first[k][0]["shape"][0::2]:
                raise SystemExit(f"{k}: dumps differ in dtype or geometry")
    order, total = [], 0
    while total < a.tokens:
        d = dumps[len(order) % len(dumps)][0]
        order.append(d)
        total += d[kv_names[0]][0]["shape"][1]
    side = [k for k in ("tokens", "nll") if all(k in d for d, _ in dumps)]
    header, offset = {}, 0
    meta = dict(meta, n_tokens=str(total), positions=f"0..{total - 1}", joined_from=",".join(a.dumps))
    header["__metadata__"] = meta
    sizes = {}
    for k in kv_names + side:
        info = first[k][0]
        shape = list(info["shape"])
        if k in side:
            shape[0] = total
        else:
            shape[1] = total
        elem = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4}[info["dtype"]]
        size = elem
        for s in shape:
            size *= s
        header[k] = {"dtype": info["dtype"], "shape": shape, "data_offsets": [offset, offset + size]}
        sizes[k] = (shape, elem)
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - (len(text) + 8) % 8) % 8)
    with open(a.output, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode())
        start = f.tell()
        for k in kv_names:  # [heads, T, D]: head by head, each dump's rows in turn
            shape, elem = sizes[k]
            heads, dim = shape[0], shape[2]
            for h in range(heads):
                for d in order:
                    t = d[k][0]["shape"][1]
                    row = t * dim * elem
                    f.write(d[k][1][h * row:(h + 1) * row])
        for k in side:
            for d in order:
                f.write(d[k][1])
        assert f.tell() - start == offset
    print(f"wrote {a.output}: {total} tokens, {offset} bytes of tensors ({len(order)} dumps joined)")


if __name__ == "__main__":
    main()
