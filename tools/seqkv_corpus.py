#!/usr/bin/python3
"""seqkv corpus tool: train the tiny Llama fixture model and dump KV caches as safetensors.

  /usr/bin/python3 tools/seqkv_corpus.py train --out data/tiny-llama
  /usr/bin/python3 tools/seqkv_corpus.py dump --model data/tiny-llama --out-dir data/kv FILE...
  /usr/bin/python3 tools/seqkv_corpus.py dump --hf MODEL_DIR_OR_ID --out-dir OUT FILE...
  /usr/bin/python3 tools/seqkv_corpus.py selfcheck [--model data/tiny-llama] [DUMP...]
  /usr/bin/python3 tools/seqkv_corpus.py evaluate --model data/tiny-llama --original DUMP \
      [--decoded DECODED] [--continue N] [--sanity] [--json]

Needs torch (Debian python3-torch); `dump --hf` also needs transformers.
See data/README.md for the tensor convention and the fixture built with it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train the tiny Llama + BPE tokenizer (offline, reproducible)")
    t.add_argument("--out", required=True, help="output directory (model.safetensors, tokenizer.json, ...)")
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--seq-len", type=int, default=512)
    t.add_argument("--lr", type=float, default=3e-3)

    d = sub.add_parser("dump", help="dump KV of the first N tokens of each input file")
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="directory written by `train`")
    src.add_argument("--hf", help="Hugging Face model directory or hub id (needs transformers)")
    d.add_argument("--out-dir", required=True)
    d.add_argument("--tokens", type=int, default=512, help="first N tokens of each file (default 512)")
    d.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    d.add_argument("--name", action="append", default=None,
                   help="output name (without .safetensors) per input, in order; default from file name")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--device", default="cpu", help="--hf only: torch device (e.g. cuda)")
    d.add_argument("--hf-dtype", default="float32", help="--hf only: dtype the model runs in")
    d.add_argument("inputs", nargs="+", help="text files")

    s = sub.add_parser("selfcheck", help="verify dumps: re-read, RoPE consistency, nll vs perplexity")
    s.add_argument("--model", help="also recompute each dump with this model and compare")
    s.add_argument("dumps", nargs="*")

    e = sub.add_parser("evaluate", help="next-token KL / top-1 agreement of a decoded KV cache")
    e.add_argument("--model", required=True, help="directory written by `train`")
    e.add_argument("--original", required=True, help="the dump (its KV = the stored prefix cache)")
    e.add_argument("--decoded", help="the same dump after lossy compression and decompression")
    e.add_argument("--continue", dest="n_continue", type=int, default=64,
                   help="continuation positions after the cached tokens (default 64)")
    e.add_argument("--source", help="source text (default: metadata source_path, then source)")
    e.add_argument("--sanity", action="store_true",
                   help="also check the cache path against a full forward over T+N tokens")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--threads", type=int, default=2)

    a = ap.parse_args(argv)
    import torch
    if a.cmd == "train":
        from kvdump.train import train
        train(a.out, steps=a.steps, seed=a.seed, threads=a.threads, batch=a.batch,
              seq_len=a.seq_len, lr=a.lr)
    elif a.cmd == "dump":
        torch.set_num_threads(a.threads)
        names = a.name or [None] * len(a.inputs)
        if len(names) != len(a.inputs):
            ap.error("give --name once per input or not at all")
        os.makedirs(a.out_dir, exist_ok=True)
        if a.hf:
            from kvdump.hf_dump import dump_hf
            for path, name in zip(a.inputs, names):
                dump_hf(a.hf, path, a.out_dir, a.tokens, a.dtype, name, a.device, a.hf_dtype)
        else:
            from kvdump.dump import dump_native
            for path, name in zip(a.inputs, names):
                dump_native(a.model, path, a.out_dir, a.tokens, a.dtype, name)
    elif a.cmd == "selfcheck":
        from kvdump.dump import check_dump
        ok = True
        for p in a.dumps:
            errs = check_dump(p, a.model)
            print(f"{p}: {'OK' if not errs else 'FAIL'}")
            for e in errs:
                print("   ", e)
            ok = ok and not errs
        return 0 if ok else 1
    elif a.cmd == "evaluate":
        import json
        from kvdump.eval_decoded import EvalError, evaluate, format_report
        if a.decoded is None and not a.sanity:
            ap.error("evaluate needs --decoded, --sanity, or both")
        torch.set_num_threads(a.threads)
        try:
            r = evaluate(a.model, a.original, a.decoded, a.n_continue, a.source, a.sanity)
        except EvalError as err:
            print(f"evaluate: error: {err}", file=sys.stderr)
            return 2
        print(json.dumps(r, indent=1) if a.json else format_report(r))
        return 0 if r.get("sanity", {}).get("ok", True) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
