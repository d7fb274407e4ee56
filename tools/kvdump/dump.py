"""KV dumps of the tiny Llama in the seqkv safetensors convention, and their self-check.

One file per input: tokens I32 [T]; layer.{l}.k / .v / .k_prerope [H_kv, T, D]; layer.{l}.q
[H_q, T, D]; nll F32 [T] (nats, entry 0 = 0).  Everything is computed by one float32 forward of
the bf16-rounded weights over positions 0..T-1 and then rounded (round-to-nearest-even) to the
output dtype.  k and q are rope() of the pre-RoPE projections, bit-exactly, in float32.
"""
import hashlib
import json
import math
import os

import torch

from . import corpus
from .model import apply_rope, rope_cos_sin
from .safetensors_io import load_file, save_file

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
# Unit roundoff (half an ulp, relative) per stored dtype.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24}


def default_name(path):
    base = os.path.basename(path)
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in base)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def perplexity_fields(nll, n_bytes=None):
    """Metadata strings describing per-token nll [T] (entry 0 unscored)."""
    scored = nll[1:].double()
    mean = float(scored.mean())
    d = {"nll_tokens_scored": str(scored.numel()), "nll_mean_nats": repr(mean),
         "perplexity": repr(math.exp(mean)), "bits_per_token": repr(mean / math.log(2))}
    if n_bytes:
        d["bits_per_byte"] = repr(float(scored.sum()) / math.log(2) / n_bytes)
    return d


def kv_tensors(tokens, records, nll, dtype):
    """Assemble the convention's tensors from per-layer float32 records [1, H, T, D]."""
    out = {"tokens": torch.tensor(tokens, dtype=torch.int32)}
    for l, r in enumerate(records):
        for key in ("k", "v", "q", "k_prerope"):
            if key in r:
                out[f"layer.{l}.{key}"] = r[key][0].to(dtype).contiguous()
    out["nll"] = nll.to(torch.float32).contiguous()
    return out


def dump_native(model_dir, path, out_dir, n_tokens=512, dtype="bf16", name=None):
    from .train import load_model, token_nll
    model, tok, mmeta = load_model(model_dir)
    c = model.config
    text = corpus.read_text(path)
    ids = tok.encode(text)
    if len(ids) < n_tokens:
        print(f"warning: {path} has only {len(ids)} tokens (asked for {n_tokens})")
    ids = ids[:n_tokens]
    if len(ids) > c.max_seq_len:
        print(f"warning: {len(ids)} tokens exceeds the training context {c.max_seq_len}")
    nll, records = token_nll(model, ids)
    # RoPE invariant in float32, before rounding: k == rope(k_prerope) exactly.
    cos, sin = rope_cos_sin(torch.arange(len(ids)), c.head_dim, c.rope_theta)
    for l, r in enumerate(records):
        if not torch.equal(apply_rope(r["k_prerope"], cos, sin), r["k"]):
            raise RuntimeError(f"layer {l}: k != rope(k_prerope) in float32")
    n_bytes = len(tok.decode_bytes(ids))
    meta = {"model": mmeta.get("model", "seqkv-tiny-llama"), "rope_theta": repr(c.rope_theta),
            "rope_style": "rotate_half", "n_layers": str(c.n_layers), "n_heads": str(c.n_heads),
            "n_kv_heads": str(c.n_kv_heads), "head_dim": str(c.head_dim),
            "d_model": str(c.d_model), "vocab_size": str(c.vocab_size),
            "tokenizer": tok.name, "source": os.path.basename(path), "source_path": path,
            "source_sha256": _sha256(path), "source_bytes_covered": str(n_bytes),
            "n_tokens": str(len(ids)), "positions": f"0..{len(ids) - 1}",
            "dtype": dtype, "layout": "[H, T, D]",
            "computed": "float32 forward of the bf16 weights; stored values rounded to nearest even",
            "model_sha256": _sha256(os.path.join(model_dir, "model.safetensors")),
            "producer": "tools/seqkv_corpus.py dump", "tensors": "tokens nll layer.{l}.{k,v,q,k_prerope}"}
    meta.update(perplexity_fields(nll, n_bytes))
    tensors = kv_tensors(ids, records, nll, DTYPES[dtype])
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, (name or default_name(path)) + ".safetensors")
    save_file(out, tensors, meta)
    errs = check_dump(out)
    if errs:
        raise RuntimeError(f"{out}: self-check failed: {errs}")
    print(f"{out}: {len(ids)} tokens, ppl {float(meta['perplexity']):.3f} "
          f"({float(meta['bits_per_token']):.3f} bits/token), {os.path.getsize(out)} bytes, self-check OK")
    return out


def layer_theta(meta, l, default):
    """RoPE base of layer l: metadata rope_theta_layers (comma list, e.g. Gemma 3's sliding-window
    layers) when present, else rope_theta."""
    per = meta.get("rope_theta_layers")
    if per:
        return float(per.split(",")[l])
    return default


def rope_check_ratio(kp, k, theta, style, meta):
    """max |k - rope(k_prerope)| in units of the stored dtype's unit roundoff x the pair norm.
    rope_style rotate_half pairs (i, i + D/2), interleaved pairs (2i, 2i + 1).  Angles as the
    producer computed them: ggml's iterated float32 table when metadata rope_angles says "ggml",
    else pos * theta^(-2i/D)."""
    from .gguf_model import apply_rope, rope_cos_sin_ggml
    T, D = k.shape[1], k.shape[-1]
    if meta.get("rope_angles", "").startswith("ggml"):
        cos, sin = rope_cos_sin_ggml(T, D, theta)
    else:
        cos, sin = rope_cos_sin(torch.arange(T), D, theta)
    kpf = kp.float()
    kr = apply_rope(kpf, cos, sin, style)
    if style == "rotate_half":
        pair = torch.cat([kpf[..., :D // 2].hypot(kpf[..., D // 2:])] * 2, -1)
    else:
        pair = kpf[..., 0::2].hypot(kpf[..., 1::2]).repeat_interleave(2, -1)
    u = UNIT_ROUNDOFF[k.dtype]
    return float(((k.float() - kr).abs() / (pair * u + 1e-30)).max())


def check_dump(path, model_dir=None, gguf=None):
    """Return a list of problems (empty = OK).  Checks shapes/dtypes against the convention,
    k == rope(k_prerope) within the rounding of the stored dtype (rope_style rotate_half or
    interleaved), nll vs metadata perplexity, and (with model_dir: the tiny model's directory;
    with gguf: a GGUF path or gguf_model.GGUFModel) that recomputing the dump reproduces it."""
    errs = []
    t, meta = load_file(path)
    for key in ("model", "rope_theta"):
        if key not in meta:
            errs.append(f"metadata lacks {key}")
    if "tokens" not in t or t["tokens"].dtype != torch.int32 or t["tokens"].dim() != 1:
        return errs + ["tokens must be I32 [T]"]
    T = t["tokens"].numel()
    layers = sorted({int(k.split(".")[1]) for k in t if k.startswith("layer.")})
    if layers != list(range(len(layers))) or not layers:
        errs.append(f"layer indices not 0..L-1: {layers}")
    if "n_layers" in meta and int(meta["n_layers"]) != len(layers):
        errs.append(f"n_layers {meta['n_layers']} but {len(layers)} layers stored")
    kv_dtype = t["layer.0.k"].dtype if "layer.0.k" in t else None
    theta = float(meta.get("rope_theta", "nan"))
    worst = 0.0
    for l in layers:
        k, v = t.get(f"layer.{l}.k"), t.get(f"layer.{l}.v")
        if k is None or v is None:
            errs.append(f"layer {l}: k or v missing")
            continue
        for nm in ("k", "v", "q", "k_prerope"):
            x = t.get(f"layer.{l}.{nm}")
            if x is None:
                continue
            if x.dtype != kv_dtype or x.dim() != 3 or x.shape[1] != T:
                errs.append(f"layer.{l}.{nm}: {x.dtype} {list(x.shape)} (want {kv_dtype} [H, {T}, D])")
            if nm in ("k", "v", "k_prerope") and x.shape != k.shape:
                errs.append(f"layer.{l}.{nm} shape {list(x.shape)} != k {list(k.shape)}")
            if not torch.isfinite(x.float()).all():
                errs.append(f"layer.{l}.{nm} has non-finite values")
        kp = t.get(f"layer.{l}.k_prerope")
        style = meta.get("rope_style", "rotate_half")
        if kp is not None and style in ("rotate_half", "interleaved"):
            ratio = rope_check_ratio(kp, k, layer_theta(meta, l, theta), style, meta)
            worst = max(worst, ratio)
            if ratio > 4.0:
                errs.append(f"layer {l}: |k - rope(k_prerope)| up to {ratio:.2f} roundoffs of the pair norm")
    if "nll" in t:
        nll = t["nll"]
        if nll.dtype != torch.float32 or list(nll.shape) != [T]:
            errs.append(f"nll must be F32 [{T}], is {nll.dtype} {list(nll.shape)}")
        elif float(nll[0]) != 0.0:
            errs.append("nll[0] must be 0")
        elif "perplexity" in meta:
            ppl = math.exp(float(nll[1:].double().mean()))
            if abs(ppl / float(meta["perplexity"]) - 1) > 1e-6:
                errs.append(f"exp(mean nll) = {ppl} but metadata perplexity = {meta['perplexity']}")
    if model_dir is not None and not errs:
        errs += _recompute_matches(t, meta, model_dir, kv_dtype)
    if gguf is not None and not errs:
        errs += _recompute_gguf(t, gguf, kv_dtype)
    return errs


# Recomputing a dump on another CPU (other BLAS/ATen kernels, other thread count) reorders float32
# sums: the float32 values move by ~1e-6 relative, which flips the rounding of a few stored values
# by one unit in the last place.  What the comparison protects is that the dump IS this model's
# output for these tokens at these positions: a wrong model, token or position changes most values
# by a large fraction of their magnitude.  So a stored value may differ from the recomputation by
# at most one ulp of the stored dtype (ULP_REL x magnitude) plus float32 noise (NOISE_REL x the
# tensor's max |value|), and at most MAX_FLIPPED of a tensor's values may differ at all.
ULP_REL = {torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10, torch.float32: 2.0 ** -23}
NOISE_REL = 1e-5
MAX_FLIPPED = 0.01
# nll is float32 (nats): logsumexp over the vocabulary minus a logit, both O(10); float32 noise is
# ~1e-6 nats.  1e-4 nats (1.4e-4 bits/token) is far below any rate seqkv reports.
NLL_ABS_TOL = 1e-4
# Pretrained GGUF models (30 layers instead of 4, 49k-262k vocabularies): float32 reordering noise
# compounds through the layers.  Measured on the SmolLM2 fixture (256 tokens, bf16): 1 vs 2
# threads gives identical values; another attention block size flips <= 0.23 % of a tensor's
# values and moves nll by <= 3.1e-5 nats; float64 matmuls and attention (the exact result, which
# any float32 implementation -- another CPU, BLAS or thread split -- approximates about as closely
# as ours) flip <= 0.20 %, leave <= 6.1e-7 x max|value| beyond one ulp and move nll by <= 4.6e-5.
# The bounds are 10x (flips), 33x (noise) and 11x (nll) those, and far below what a wrong model,
# token or position gives (most values off by a large fraction of their magnitude).
GGUF_TOL = {"ulps": 1.0, "noise_rel": 2e-5, "max_flipped": 0.02, "nll_abs": 5e-4}


def recompute_differences(stored, fresh, tol=None):
    """Problems (empty = OK) comparing stored tensors with a recomputation, within the tolerances
    above (or `tol`: dict with ulps, noise_rel, max_flipped, nll_abs); tokens must be equal."""
    tol = tol or {}
    ulps = tol.get("ulps", 1.0)
    noise_rel = tol.get("noise_rel", NOISE_REL)
    max_flipped = tol.get("max_flipped", MAX_FLIPPED)
    nll_abs = tol.get("nll_abs", NLL_ABS_TOL)
    errs = []
    for name, x in stored.items():
        y = fresh.get(name)
        if y is None:
            errs.append(f"{name}: not produced by the model")
            continue
        if name == "tokens":
            if not torch.equal(x, y):
                errs.append("tokens differ")
            continue
        if x.shape != y.shape:
            errs.append(f"{name}: shape {list(x.shape)} != recomputed {list(y.shape)}")
            continue
        xf, yf = x.double(), y.double()
        diff = (xf - yf).abs()
        if name == "nll":
            if float(diff.max()) > nll_abs:
                errs.append(f"nll: recomputed values differ by up to {float(diff.max()):.3g} nats (> {nll_abs})")
            continue
        scale = float(yf.abs().max())
        bound = ulps * ULP_REL.get(x.dtype, 2.0 ** -23) * torch.maximum(xf.abs(), yf.abs()) + noise_rel * scale
        worst = float((diff / bound).max()) if diff.numel() else 0.0
        flipped = float((diff > 0).double().mean()) if diff.numel() else 0.0
        if worst > 1.0:
            errs.append(f"{name}: recomputed values differ by up to {worst:.2f}x the tolerance "
                        f"({ulps:g} ulp + {noise_rel:g} x max float32 noise)")
        elif flipped > max_flipped:
            errs.append(f"{name}: {flipped:.2%} of recomputed values differ (> {max_flipped:.0%} rounding flips)")
    return errs


def _recompute_matches(t, meta, model_dir, dtype):
    from .train import load_model, token_nll
    model, _, _ = load_model(model_dir)
    nll, records = token_nll(model, t["tokens"].tolist())
    return recompute_differences(t, kv_tensors(t["tokens"].tolist(), records, nll, dtype))


def _recompute_gguf(t, gguf, dtype):
    from .gguf_model import GGUFModel
    model = gguf if isinstance(gguf, GGUFModel) else GGUFModel(gguf)
    fresh = recompute_gguf(model, t, dtype)
    return recompute_differences(t, fresh, GGUF_TOL)


def recompute_gguf(model, t, dtype):
    """The tensors of dump `t` recomputed by `model` (same tokens, same q/k_prerope layers)."""
    L = model.config.n_layers
    qL = [l for l in range(L) if f"layer.{l}.q" in t]
    pL = [l for l in range(L) if f"layer.{l}.k_prerope" in t]
    out = model.forward(t["tokens"].tolist(), q_layers=qL, prerope_layers=pL, logits=False)
    from .gguf_dump import dump_tensors
    return dump_tensors(t["tokens"].tolist(), out, dtype, set(qL), set(pL))
