#!/usr/bin/python3
"""seqkv corpus tool: train the tiny Llama fixture model and dump KV caches as safetensors.

  /usr/bin/python3 tools/seqkv_corpus.py train --out data/tiny-llama
  /usr/bin/python3 tools/seqkv_corpus.py dump --model data/tiny-llama --out-dir data/kv FILE...
  /usr/bin/python3 tools/seqkv_corpus.py dump --hf MODEL_DIR_OR_ID --out-dir OUT FILE...
  build/venv/bin/python tools/seqkv_corpus.py dump --gguf smollm2|gemma3|FILE.gguf --out-dir OUT \
      [--text prose|code|chat]... [--q-layers 0,14,29] [--prerope-layers none] [FILE...]
  build/venv/bin/python tools/seqkv_corpus.py real-corpus [--gguf smollm2] [--out ~/.cache/seqkv/smollm2]
  build/venv/bin/python tools/seqkv_corpus.py crosscheck --gguf smollm2 (--dump DUMP | --text KIND --tokens N)
  build/venv/bin/python tools/seqkv_corpus.py export-weights --gguf smollm2 -o weights.safetensors
  /usr/bin/python3 tools/seqkv_corpus.py selfcheck [--model data/tiny-llama] [DUMP...]
  /usr/bin/python3 tools/seqkv_corpus.py evaluate --model data/tiny-llama --original DUMP \
      [--decoded DECODED] [--continue N] [--sanity] [--json]

Needs torch (Debian python3-torch); `dump --hf` also needs transformers; the GGUF commands need
the venv of scripts/setup-models.sh (gguf, numpy, jinja2 for chat; llama-cpp-python for crosscheck).
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
    src.add_argument("--gguf", help="GGUF file, or alias smollm2 / gemma3 (pip packages; needs gguf)")
    d.add_argument("--out-dir", required=True)
    d.add_argument("--tokens", type=int, default=512, help="first N tokens of each file (default 512)")
    d.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    d.add_argument("--name", action="append", default=None,
                   help="output name (without .safetensors) per input, in order; default from file name")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--device", default="cpu", help="--hf only: torch device (e.g. cuda)")
    d.add_argument("--hf-dtype", default="float32", help="--hf only: dtype the model runs in")
    d.add_argument("--text", action="append", default=[], choices=("prose", "code", "chat"),
                   help="--gguf only: a corpus text of tools/kvdump/texts.py (after the FILEs)")
    d.add_argument("--q-layers", default="all", help="--gguf only: layers with q: all|none|0,14,29 (negative = from the end)")
    d.add_argument("--prerope-layers", default="all", help="--gguf only: layers with k_prerope: all|none|list")
    d.add_argument("--tokenizer", choices=("python", "llama.cpp"), default="python",
                   help="--gguf only: pure-Python tokenizer (default) or llama.cpp's (same ids, tested)")
    d.add_argument("--arith", choices=("f32", "ggml"), default="f32",
                   help="--gguf only: plain float32 (default) or llama.cpp's activation rounding (see gguf_model.py)")
    d.add_argument("inputs", nargs="*", help="text files")

    s = sub.add_parser("selfcheck", help="verify dumps: re-read, RoPE consistency, nll vs perplexity")
    s.add_argument("--model", help="also recompute each dump with this model and compare")
    s.add_argument("--gguf", help="also recompute each dump with this GGUF model (path or alias) and compare")
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

    rc = sub.add_parser("real-corpus", help="benchmark corpus of a GGUF model: prose/code/chat x sizes (cached)")
    rc.add_argument("--gguf", default="smollm2", help="GGUF file or alias (default smollm2)")
    rc.add_argument("--out", default=None, help="output directory (default ~/.cache/seqkv/<model>, e.g. .../smollm2)")
    rc.add_argument("--sizes", default="512,1024,2048,4096,8192")
    rc.add_argument("--kinds", default="prose,code,chat")
    rc.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    rc.add_argument("--q-layers", default="0,14,-1", help="layers with q (default first, middle, last)")
    rc.add_argument("--prerope-layers", default=None, help="layers with k_prerope (default: the q layers)")
    rc.add_argument("--force", action="store_true", help="rebuild files already present")
    rc.add_argument("--threads", type=int, default=1, help="torch threads (default 1: faster than 2 on a busy 2-core box)")

    x = sub.add_parser("crosscheck", help="compare the torch forward of a GGUF model with llama.cpp (logits, K/V state)")
    x.add_argument("--gguf", required=True, help="GGUF file or alias")
    src2 = x.add_mutually_exclusive_group(required=True)
    src2.add_argument("--dump", help="use this dump's tokens (and compare its stored K/V too)")
    src2.add_argument("--text", choices=("prose", "code", "chat"), help="use the first --tokens of a corpus text")
    x.add_argument("--tokens", type=int, default=256)
    x.add_argument("--cache-type", choices=("f32", "f16"), default="f32", help="llama.cpp KV cache type (default f32)")
    x.add_argument("--arith", choices=("f32", "ggml"), default="f32",
                   help="torch side: plain float32 (default) or llama.cpp's activation rounding")
    x.add_argument("--json", action="store_true")
    x.add_argument("--threads", type=int, default=2)

    w = sub.add_parser("export-weights", help="dequantized GGUF weights as safetensors (HF-like names, config in metadata)")
    w.add_argument("--gguf", required=True, help="GGUF file or alias")
    w.add_argument("-o", "--out", required=True)
    w.add_argument("--dtype", choices=("f32", "bf16", "f16"), default="f32", help="f32 (default) is exact")

    a = ap.parse_args(argv)
    import torch
    if a.cmd == "train":
        from kvdump.train import train
        train(a.out, steps=a.steps, seed=a.seed, threads=a.threads, batch=a.batch,
              seq_len=a.seq_len, lr=a.lr)
    elif a.cmd == "dump":
        torch.set_num_threads(a.threads)
        os.makedirs(a.out_dir, exist_ok=True)
        if a.gguf:
            if not a.inputs and not a.text:
                ap.error("give input files and/or --text KIND")
            from kvdump.gguf_dump import dump_inputs
            dump_inputs(a.gguf, a.inputs, a.text, a.out_dir, a.tokens, a.dtype, a.q_layers,
                        a.prerope_layers, a.name, a.threads, a.tokenizer, a.arith)
            return 0
        if a.text or not a.inputs:
            ap.error("--text needs --gguf; give at least one input file")
        names = a.name or [None] * len(a.inputs)
        if len(names) != len(a.inputs):
            ap.error("give --name once per input or not at all")
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
        gguf = None
        if a.gguf:
            torch.set_num_threads(1)  # same values as 2 threads (measured), faster on a busy machine
            from kvdump.gguf_dump import resolve_gguf
            from kvdump.gguf_model import GGUFModel
            gguf = GGUFModel(resolve_gguf(a.gguf)[0])
        for p in a.dumps:
            errs = check_dump(p, a.model, gguf)
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
    elif a.cmd == "real-corpus":
        torch.set_num_threads(a.threads)
        from kvdump.gguf_dump import real_corpus
        made, skipped = real_corpus(a.gguf, a.out, [int(s) for s in a.sizes.split(",")],
                                    a.kinds.split(","), a.dtype, a.q_layers, a.prerope_layers,
                                    a.threads, a.force)
        print(f"{len(made)} dumps written, {len(skipped)} already present")
    elif a.cmd == "crosscheck":
        import json
        torch.set_num_threads(a.threads)
        from kvdump.gguf_dump import resolve_gguf
        from kvdump.gguf_model import GGUFModel
        from kvdump import crosscheck
        path, _ = resolve_gguf(a.gguf)
        model = GGUFModel(path)
        if a.dump:
            from kvdump.safetensors_io import load_file
            t, meta = load_file(a.dump)
            ids = t["tokens"].tolist()
        else:
            from kvdump import texts
            from kvdump.gguf_tokenizer import GGUFTokenizer
            tok = GGUFTokenizer(model.fields)
            text, _ = texts.build(a.text, tok.chat_template, tok.tokens[tok.bos_id] if tok.bos_id is not None else "",
                                  tok.tokens[tok.eos_id] if tok.eos_id is not None else "")
            ids = tok.encode(text, parse_special=a.text == "chat")[:a.tokens]
            t = None
        rep = crosscheck.compare(model, ids, a.cache_type, a.threads, stored=t, arith=a.arith)
        print(json.dumps(rep, indent=1) if a.json else crosscheck.format_report(rep))
        return 0 if rep["ok"] else 1
    elif a.cmd == "export-weights":
        from kvdump.gguf_dump import export
        export(a.gguf, a.out, a.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
