"""`dump --hf`: the seqkv KV convention for any Hugging Face causal LM (needs `transformers`).

How each tensor is obtained (one forward over the first N tokens, use_cache=True, batch 1):
  tokens       AutoTokenizer(text, add_special_tokens=True) ids, truncated to N (BOS kept).
  layer.l.k/v  out.past_key_values for layer l ([1, H_kv, T, D] -> [H_kv, T, D]): keys as cached,
               i.e. after RoPE.
  k_prerope    forward hook on the layer's k_norm if it has one (Qwen3/Gemma3-style QK-norm),
               else on k_proj; reshaped to [H_kv, T, D].
  q            same hook on q_norm / q_proj, then the model's own rotary embedding
               (model.model.rotary_emb + apply_rotary_pos_emb of the attention's module).
               Kept only if applying that same rotation to k_prerope reproduces the cached keys
               (else q and k_prerope are both dropped); if the rotary API is not found, q is
               dropped and k_prerope kept as hooked.  `omitted` in the metadata says what/why.
  nll          -log_softmax(logits)[t-1, token_t] in float32 nats; entry 0 = 0.
Models without separate q/k projections (fused qkv), sliding-window caches shorter than T, or
other layouts lead to omitted optional tensors (q, k_prerope), never to guessed values.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

from . import corpus
from .dump import DTYPES, default_name, kv_tensors, perplexity_fields, check_dump, _sha256
from .safetensors_io import save_file


def _import_transformers():
    try:
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise SystemExit("dump --hf needs the Hugging Face `transformers` package (and the model "
                         f"weights, local or cached); it could not be imported: {e}\n"
                         "Install it (e.g. `pip install transformers`) or use `dump --model DIR`.")
    return transformers, AutoModelForCausalLM, AutoTokenizer


def _decoder_layers(model, n_layers):
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers",
                 "model.decoder.layers", "model.language_model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if len(obj) == n_layers:
            return obj
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers:
            return mod
    raise RuntimeError("could not locate the decoder layer list")


def _attention(layer):
    for name in ("self_attn", "attn", "attention", "self_attention"):
        if hasattr(layer, name):
            return getattr(layer, name)
    return None


def _cache_layers(pkv):
    """[(k, v)] with k, v [B, H_kv, T, D] across transformers cache API versions."""
    if hasattr(pkv, "layers") and pkv.layers and hasattr(pkv.layers[0], "keys"):
        return [(L.keys, L.values) for L in pkv.layers]
    if hasattr(pkv, "key_cache"):
        return list(zip(pkv.key_cache, pkv.value_cache))
    if hasattr(pkv, "to_legacy_cache"):
        return [tuple(x[:2]) for x in pkv.to_legacy_cache()]
    return [tuple(x[:2]) for x in pkv]


def _config_value(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _rope_theta(cfg):
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        if isinstance(params, dict):
            theta = params.get("rope_theta")
            if theta is None and params:
                inner = next(iter(params.values()))  # per-layer-type dict (newer configs)
                if isinstance(inner, dict):
                    theta = inner.get("rope_theta")
    return "unknown" if theta is None else repr(float(theta))


def _to_heads(x, n_heads, head_dim):
    """Hook output [1, T, H*D] or [1, T, H, D] -> float32 [H, T, D]."""
    x = x[0] if isinstance(x, tuple) else x
    x = x.detach().to(device="cpu", dtype=torch.float32)
    T = x.shape[1]
    return x.reshape(1, T, n_heads, head_dim)[0].transpose(0, 1).contiguous()


def _rotate_q(model, attn, q_pre, k_pre, T, device):
    """Apply the model's own RoPE to q and k ([1, H, T, D]); raise if the API is not found."""
    rotary = None
    for owner in (getattr(model, "model", None), model, attn):
        if owner is not None and hasattr(owner, "rotary_emb"):
            rotary = owner.rotary_emb
            break
    module = sys.modules[type(attn).__module__]
    apply = getattr(module, "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        raise RuntimeError("no rotary_emb / apply_rotary_pos_emb found")
    pos = torch.arange(T, device=device)[None]
    cos, sin = rotary(q_pre.to(device), pos)
    q, k = apply(q_pre.to(device), k_pre.to(device), cos, sin)
    return q.float().cpu(), k.float().cpu()


@torch.no_grad()
def dump_hf(model_id, path, out_dir, n_tokens=512, dtype="bf16", name=None, device="cpu",
            hf_dtype="float32"):
    transformers, AutoModelForCausalLM, AutoTokenizer = _import_transformers()
    tok = AutoTokenizer.from_pretrained(model_id)
    model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=getattr(torch, hf_dtype))
    model.to(device).eval()
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    n_heads = cfg.num_attention_heads
    n_kv = _config_value(cfg, "num_key_value_heads", default=n_heads)
    head_dim = _config_value(cfg, "head_dim", default=cfg.hidden_size // n_heads)

    text = corpus.read_text(path)
    ids = tok(text, add_special_tokens=True)["input_ids"][:n_tokens]
    T = len(ids)
    x = torch.tensor([ids], device=device)

    layers = _decoder_layers(model, n_layers)
    captured = [dict() for _ in range(n_layers)]
    hooks, omitted = [], []
    for l, layer in enumerate(layers):
        attn = _attention(layer)
        for key, names in (("q", ("q_norm", "q_proj")), ("k_prerope", ("k_norm", "k_proj"))):
            mod = next((getattr(attn, n) for n in names if attn is not None and hasattr(attn, n)), None)
            if mod is None:
                continue
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, l=l, key=key: captured[l].__setitem__(key, o[0] if isinstance(o, tuple) else o)))
    try:
        out = model(x, use_cache=True)
    finally:
        for h in hooks:
            h.remove()

    logits = out.logits[0].float()
    nll = torch.zeros(T, dtype=torch.float32)
    nll[1:] = F.cross_entropy(logits[:-1], x[0, 1:], reduction="none").cpu()
    cache = _cache_layers(out.past_key_values)
    records = []
    for l in range(n_layers):
        k, v = cache[l]
        if k.shape[-2] != T:
            raise RuntimeError(f"layer {l}: cache holds {k.shape[-2]} of {T} positions "
                               "(sliding-window layer?); use --tokens <= the window")
        rec = {"k": k.float().cpu(), "v": v.float().cpu()}  # [1, H_kv, T, D]
        c = captured[l]
        try:
            q_pre = _to_heads(c["q"], n_heads, head_dim)[None]
            k_pre = _to_heads(c["k_prerope"], n_kv, head_dim)[None]
        except (KeyError, RuntimeError) as e:
            omitted.append(f"layer {l}: q/k_prerope not captured ({type(e).__name__}: {e})")
            records.append(rec)
            continue
        try:
            q_rot, k_rot = _rotate_q(model, _attention(layers[l]), q_pre, k_pre, T, device)
        except Exception as e:  # rotary API not understood: keep the hooked keys, drop q
            rec["k_prerope"] = k_pre
            omitted.append(f"layer {l}: q omitted, k_prerope unverified ({type(e).__name__}: {e})")
            records.append(rec)
            continue
        tol = 1e-3 if hf_dtype == "float32" else 3e-2
        err = float((k_rot - rec["k"]).abs().max() / (rec["k"].abs().max() + 1e-12))
        if err <= tol:
            rec["q"], rec["k_prerope"] = q_rot, k_pre
        else:  # the hooked tensors are not what the cache holds: keep only what is certain
            omitted.append(f"layer {l}: q/k_prerope omitted (rope(k_prerope) vs cached k: rel {err:.2e})")
        records.append(rec)

    scaling = getattr(cfg, "rope_scaling", None)
    plain_rope = (not scaling or (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type"))
                                  in (None, "default"))) and getattr(cfg, "partial_rotary_factor", 1.0) == 1.0
    meta = {"model": str(model_id), "rope_theta": _rope_theta(cfg),
            "rope_style": "rotate_half" if plain_rope else f"model-specific (rope_scaling={scaling})",
            "model_type": str(getattr(cfg, "model_type", "unknown")),
            "n_layers": str(n_layers), "n_heads": str(n_heads), "n_kv_heads": str(n_kv),
            "head_dim": str(head_dim), "vocab_size": str(cfg.vocab_size),
            "tokenizer": str(getattr(tok, "name_or_path", model_id)), "add_special_tokens": "true",
            "source": os.path.basename(path), "source_path": path, "source_sha256": _sha256(path),
            "n_tokens": str(T), "positions": f"0..{T - 1}", "dtype": dtype, "layout": "[H, T, D]",
            "computed": f"transformers {transformers.__version__} forward in {hf_dtype} on {device}",
            "producer": "tools/seqkv_corpus.py dump --hf",
            "omitted": "; ".join(omitted) if omitted else "none"}
    meta.update(perplexity_fields(nll))
    tensors = kv_tensors(ids, records, nll, DTYPES[dtype])
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, (name or default_name(path)) + ".safetensors")
    save_file(out_path, tensors, meta)
    errs = check_dump(out_path) if meta["rope_theta"] != "unknown" else []  # warnings only
    for e in errs:
        print(f"warning: {e}")
    print(f"{out_path}: {T} tokens, ppl {float(meta['perplexity']):.3f}, omitted: {meta['omitted']}")
    return out_path
