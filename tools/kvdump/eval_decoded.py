"""Next-token fidelity of a decoded (lossy) KV cache: run the model on a continuation while it
attends to a stored prefix cache, once with the original cache and once with the decoded one.

Setup.  A dump holds the KV of tokens 0..T-1 (keys after RoPE, as cached).  The source text is
re-tokenized; its first T ids must equal the dump's `tokens`.  The next N ids c_0..c_{N-1}
(positions T..T+N-1) are fed to the model, which attends to the T cached keys/values plus its own
new ones.  Position j's logits predict c_{j+1} (c_N is the token after the window).  So the N
continuation positions are compared, and the NLL is scored on targets c_1..c_N.  (The prediction
of c_0 itself would need the hidden state of token T-1, which a KV cache does not hold.)

Metrics, over the N positions: mean KL(p_orig || p_decoded) in nats, top-1 agreement (fraction of
positions whose argmax matches), and NLL/perplexity of the continuation under each cache.

Cached keys are used as stored: already rotated for their own positions, never re-rotated.  New
queries/keys are rotated for positions T+j, so q·k sees the relative offset exactly as in a full
forward.  Stored bf16/f16 values are widened to float32.

Sanity (`sanity_check`): the cache path with the fp32 prefix cache of a full forward over T+N
tokens must reproduce that forward's logits (float32 summation order only); the stored cache must
equal the bf16 rounding of that fp32 cache; the remaining logit difference with the stored cache
is then what bf16 rounding explains, and is reported.
"""
import hashlib
import math
import os

import torch
import torch.nn.functional as F

from . import corpus
from .model import apply_rope, rope_cos_sin
from .safetensors_io import load_file

# Max |logit difference| allowed between the cache path (fp32 cache) and a full forward.
PATH_TOLERANCE = 1e-3


class EvalError(RuntimeError):
    """Inputs that cannot be evaluated (token mismatch, shapes, missing source)."""


def cache_from_tensors(tensors, n_layers):
    """[(k, v)] per layer, each [H_kv, T, D] float32, from a dump's layer.{l}.k / .v."""
    cache = []
    for l in range(n_layers):
        k, v = tensors.get(f"layer.{l}.k"), tensors.get(f"layer.{l}.v")
        if k is None or v is None:
            raise EvalError(f"layer.{l}.k / layer.{l}.v missing")
        cache.append((k.to(torch.float32), v.to(torch.float32)))
    return cache


def _check_cache(cache, model, n_prefix):
    c = model.config
    if len(cache) != c.n_layers:
        raise EvalError(f"cache has {len(cache)} layers, model {c.n_layers}")
    want = [c.n_kv_heads, n_prefix, c.head_dim]
    for l, (k, v) in enumerate(cache):
        if list(k.shape) != want or list(v.shape) != want:
            raise EvalError(f"layer {l}: k {list(k.shape)} v {list(v.shape)}, want {want}")
        if not (torch.isfinite(k).all() and torch.isfinite(v).all()):
            raise EvalError(f"layer {l}: non-finite cached values")


@torch.no_grad()
def forward_with_cache(model, cache, new_ids):
    """Logits [N, V] float32 for new_ids (positions T..T+N-1) attending to cache [(k, v)] of
    tokens 0..T-1 (k after RoPE, [H_kv, T, D]) plus their own keys/values, causally."""
    c = model.config
    n_prefix = cache[0][0].shape[1]
    _check_cache(cache, model, n_prefix)
    N = len(new_ids)
    cos, sin = rope_cos_sin(torch.arange(n_prefix, n_prefix + N), c.head_dim, c.rope_theta)
    rep = c.n_heads // c.n_kv_heads
    # New token j sees every cached token and new tokens 0..j.
    mask = torch.ones(N, N, dtype=torch.bool).triu(1)
    mask = torch.cat([torch.zeros(N, n_prefix, dtype=torch.bool), mask], dim=1)
    x = model.model.embed_tokens(torch.tensor(new_ids, dtype=torch.long))  # [N, d]
    for layer, (k_cache, v_cache) in zip(model.model.layers, cache):
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(N, c.n_heads, c.head_dim).transpose(0, 1)
        k = attn.k_proj(h).view(N, c.n_kv_heads, c.head_dim).transpose(0, 1)
        v = attn.v_proj(h).view(N, c.n_kv_heads, c.head_dim).transpose(0, 1)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        k_all = torch.cat([k_cache, k], dim=1).repeat_interleave(rep, dim=0)
        v_all = torch.cat([v_cache, v], dim=1).repeat_interleave(rep, dim=0)
        att = (q @ k_all.transpose(-1, -2)) * (1.0 / math.sqrt(c.head_dim))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v_all).transpose(0, 1).reshape(N, c.n_heads * c.head_dim)
        x = x + attn.o_proj(y)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    x = model.model.norm(x)
    return x @ model.model.embed_tokens.weight.t()


def compare_logits(logits_ref, logits_test, targets=None):
    """Dict of mean KL(p_ref || p_test) (nats), top-1 agreement, max |logit diff|, and with
    targets [M] (M <= N; scores positions 0..M-1) the NLL/perplexity under each."""
    lr = F.log_softmax(logits_ref.double(), -1)
    lt = F.log_softmax(logits_test.double(), -1)
    kl = (lr.exp() * (lr - lt)).sum(-1).clamp_min(0.0)
    out = {"positions": int(logits_ref.shape[0]),
           "kl_mean_nats": float(kl.mean()), "kl_max_nats": float(kl.max()),
           "top1_agreement": float((lr.argmax(-1) == lt.argmax(-1)).double().mean()),
           "max_abs_logit_diff": float((logits_ref - logits_test).abs().max())}
    if targets is not None and len(targets) > 0:
        t = torch.tensor(targets, dtype=torch.long)
        m = t.numel()
        for name, lp in (("ref", lr), ("test", lt)):
            nll = float(-lp[:m].gather(1, t[:, None]).mean())
            out[f"nll_{name}_nats"] = nll
            out[f"ppl_{name}"] = math.exp(nll)
        out["nll_tokens_scored"] = m
    return out


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def continuation_ids(tok, tensors, meta, n_continue, source=None):
    """(prefix ids [T], continuation ids c_0..c_{N'} (up to N+1, fewer at end of text), notes).
    Re-tokenizes the source text and fails unless its first T ids equal the dump's tokens."""
    notes = []
    path = source
    if path is None:
        cands = [meta.get("source_path"), meta.get("source")]
        path = next((p for p in cands if p and os.path.isfile(p)), None)
        if path is None:
            raise EvalError(f"source text not found (metadata source_path={meta.get('source_path')!r}, "
                            f"source={meta.get('source')!r}); pass --source")
    if meta.get("source_sha256") and _sha256(path) != meta["source_sha256"]:
        notes.append(f"warning: sha256 of {path} differs from the dump's source_sha256")
    ids = tok.encode(corpus.read_text(path))
    prefix = tensors["tokens"].tolist()
    T = len(prefix)
    if ids[:T] != prefix:
        bad = next((i for i, (a, b) in enumerate(zip(ids, prefix)) if a != b), min(len(ids), T))
        raise EvalError(f"re-tokenizing {path} does not reproduce the dump's {T} tokens "
                        f"(first mismatch at index {bad}); wrong source file or tokenizer")
    cont = ids[T:T + n_continue + 1]
    if len(cont) < 2:
        raise EvalError(f"{path} has no continuation after the {T} dumped tokens")
    if len(cont) < n_continue + 1:
        notes.append(f"text ends: {len(cont) - 1} continuation positions instead of {n_continue}")
    return prefix, cont, path, notes


def _full_forward_cache(model, ids, n_prefix):
    """Logits [len(ids), V] and the fp32 prefix cache [(k, v)] of one full forward."""
    records = []
    with torch.no_grad():
        logits = model(torch.tensor(ids, dtype=torch.long)[None], records)[0]
    cache = [(r["k"][0, :, :n_prefix].contiguous(), r["v"][0, :, :n_prefix].contiguous())
             for r in records]
    return logits, cache


def sanity_check(model, prefix, cont, stored_cache):
    """Check the cache path against a full forward over prefix + cont[:-1] (see module doc)."""
    T = len(prefix)
    new_ids = cont[:-1]
    full_logits, fp32_cache = _full_forward_cache(model, prefix + new_ids, T)
    full = full_logits[T:]
    via_fp32 = forward_with_cache(model, fp32_cache, new_ids)
    via_stored = forward_with_cache(model, stored_cache, new_ids)
    # Stored cache vs bf16 rounding of the recomputed fp32 cache: fraction beyond one ulp.
    stored_dtype = torch.bfloat16
    worst_frac = 0.0
    for (ks, vs), (kf, vf) in zip(stored_cache, fp32_cache):
        for s, f in ((ks, kf), (vs, vf)):
            r = f.to(stored_dtype).to(torch.float32)
            ulp = 2.0 ** -7 * r.abs() + 1e-30
            worst_frac = max(worst_frac, float(((s - r).abs() > ulp).double().mean()))
    path = compare_logits(full, via_fp32)
    stored = compare_logits(full, via_stored)
    ok_path = path["max_abs_logit_diff"] < PATH_TOLERANCE
    ok_cache = worst_frac <= 1e-3
    return {"ok": ok_path and ok_cache,
            "max_abs_logit_diff_fp32_cache": path["max_abs_logit_diff"],
            "path_tolerance": PATH_TOLERANCE,
            "max_abs_logit_diff_stored_cache": stored["max_abs_logit_diff"],
            "kl_full_vs_stored_cache_nats": stored["kl_mean_nats"],
            "top1_full_vs_stored_cache": stored["top1_agreement"],
            "stored_vs_bf16_recompute_frac_beyond_1ulp": worst_frac}


def evaluate(model_dir, original, decoded=None, n_continue=64, source=None, sanity=False):
    """Run the evaluation; returns a JSON-able dict (see module doc)."""
    from .train import load_model
    model, tok, _ = load_model(model_dir)
    c = model.config
    t_orig, meta = load_file(original)
    if "tokens" not in t_orig:
        raise EvalError(f"{original}: no tokens tensor")
    prefix, cont, src_path, notes = continuation_ids(tok, t_orig, meta, n_continue, source)
    T = len(prefix)
    if T + len(cont) - 1 > c.max_seq_len:
        notes.append(f"positions up to {T + len(cont) - 2} exceed the trained context {c.max_seq_len}")
    orig_cache = cache_from_tensors(t_orig, c.n_layers)
    _check_cache(orig_cache, model, T)
    new_ids, targets = cont[:-1], cont[1:]
    res = {"model": model_dir, "original": original, "source": src_path,
           "prefix_tokens": T, "continuation_positions": len(new_ids), "notes": notes}
    logits_orig = forward_with_cache(model, orig_cache, new_ids)
    if sanity:
        res["sanity"] = sanity_check(model, prefix, cont, orig_cache)
    if decoded is not None:
        t_dec, _ = load_file(decoded)
        if "tokens" in t_dec and t_dec["tokens"].tolist() != prefix:
            raise EvalError(f"{decoded}: tokens differ from {original}")
        dec_cache = cache_from_tensors(t_dec, c.n_layers)
        _check_cache(dec_cache, model, T)
        logits_dec = forward_with_cache(model, dec_cache, new_ids)
        m = compare_logits(logits_orig, logits_dec, targets)
        res["decoded"] = decoded
        res.update({"kl_mean_nats": m["kl_mean_nats"], "kl_max_nats": m["kl_max_nats"],
                    "top1_agreement": m["top1_agreement"],
                    "max_abs_logit_diff": m["max_abs_logit_diff"],
                    "nll_original_nats": m["nll_ref_nats"], "ppl_original": m["ppl_ref"],
                    "nll_decoded_nats": m["nll_test_nats"], "ppl_decoded": m["ppl_test"],
                    "nll_tokens_scored": m["nll_tokens_scored"]})
    else:
        lp = F.log_softmax(logits_orig.double(), -1)
        nll = float(-lp.gather(1, torch.tensor(targets)[:, None]).mean())
        res.update({"nll_original_nats": nll, "ppl_original": math.exp(nll),
                    "nll_tokens_scored": len(targets)})
    return res


def format_report(r):
    """Human-readable lines for a result of evaluate()."""
    lines = [f"original {r['original']}: {r['prefix_tokens']} cached tokens, "
             f"{r['continuation_positions']} continuation positions of {r['source']}"]
    lines += [f"  {n}" for n in r["notes"]]
    if "decoded" in r:
        lines += [f"decoded  {r['decoded']}",
                  f"  next-token KL(orig || decoded): {r['kl_mean_nats']:.6g} nats mean, "
                  f"{r['kl_max_nats']:.6g} max",
                  f"  top-1 agreement:                {r['top1_agreement']:.4f}",
                  f"  max |logit diff|:               {r['max_abs_logit_diff']:.4g}"]
    lines.append(f"  continuation NLL original: {r['nll_original_nats']:.4f} nats/token "
                 f"(ppl {r['ppl_original']:.2f}, {r['nll_tokens_scored']} tokens)")
    if "decoded" in r:
        lines.append(f"  continuation NLL decoded:  {r['nll_decoded_nats']:.4f} nats/token "
                     f"(ppl {r['ppl_decoded']:.2f})")
    s = r.get("sanity")
    if s:
        lines += [f"sanity {'OK' if s['ok'] else 'FAIL'}: cache path vs full forward over T+N tokens",
                  f"  max |logit diff|, fp32 cache:         {s['max_abs_logit_diff_fp32_cache']:.3g} "
                  f"(tolerance {s['path_tolerance']:g})",
                  f"  stored cache vs bf16(fp32 recompute): "
                  f"{s['stored_vs_bf16_recompute_frac_beyond_1ulp']:.3g} of values beyond 1 ulp",
                  f"  max |logit diff|, stored bf16 cache:  {s['max_abs_logit_diff_stored_cache']:.3g} "
                  f"(bf16 rounding; KL {s['kl_full_vs_stored_cache_nats']:.3g} nats, "
                  f"top-1 {s['top1_full_vs_stored_cache']:.4f})"]
    return "\n".join(lines)
