"""Cross-check the float32 PyTorch forward of a GGUF model against llama.cpp on the same tokens.

llama.cpp (llama-cpp-python) evaluates the tokens with logits for every position; its KV cache of
sequence 0 is read back with llama_state_seq_get_data and parsed by llama_state.py (an
independent reader, not llama.cpp code).  Reported:

  logits   top-1 agreement of next-token predictions, max |dlogit|, rms dlogit, and both
           perplexities;
  K, V     per layer: max |d| / max |ours| ("max rel") and ||d|| / ||ours|| ("rms rel") between
           llama.cpp's cached K/V and ours, for the positions llama.cpp keeps (Gemma's sliding-
           window layers keep only the last `window` positions);
  layout   the same K error if our K were laid out the other RoPE way (rotate-half vs
           interleaved) or shifted by one position: the margin that proves the layout is the
           engine's, independent of arithmetic noise.

Why the two cannot agree bit for bit, and the tolerances (TOLERANCES below):
  * llama.cpp's quantized matmuls (Q4_1/Q4_K/Q5_0/Q6_K/Q8_0 weights) quantize each activation row
    to 8 bits in blocks of 32 (Q8_0/Q8_1: scale = block max / 127) before the dot product: each
    input of every projection carries up to 0.4 % (of its block max) rounding error.  The weights
    are identical (we dequantize the same blocks), so this activation rounding is the main
    difference; it compounds through the layers and the residual stream.
  * its attention reads K/V from the cache (f16 by default; use --cache-type f32 to remove this)
    and rounds Q and the softmax weights to f16 for the f16 matmuls; Gemma's GELU goes through an
    f16 table; summation orders differ.
  Expected size, measured (data/README.md): SmolLM2 layer-0 K 0.3-0.5 % rms, growing to ~2 % (K)
  and ~5 % (V) in the last layers; Gemma 3 up to 6 % (K) and 7.5 % (V).  Logits: rms difference
  0.2-0.3 (logit rms 6-11), max 1.7-4.7 over all positions and the whole vocabulary, top-1
  agreement 0.96-0.98, perplexities within 1 %.  A wrong layout or position (the alternatives
  above) gives 45-140 % errors, 16-31x the measured ones, so the tolerances separate "same
  computation, different rounding" from "different computation".
"""
import ctypes
import math

import numpy as np
import torch

from .llama_state import kv_by_layer, parse_seq_state

# Pass criteria (see the module docstring for where the numbers come from).
TOLERANCES = {
    "k_rms_rel": 0.15,        # ||dK|| / ||K|| per layer (measured <= 0.02 SmolLM2, <= 0.06 Gemma 3)
    "v_rms_rel": 0.15,        # (measured <= 0.05 SmolLM2, <= 0.075 Gemma 3)
    "top1_min": 0.90,         # next-token argmax agreement (measured 0.96-0.97)
    "logit_rms_rel": 0.10,    # rms dlogit / rms logit (measured 0.036-0.045)
    "ppl_rel": 0.05,          # |ppl_llama.cpp / ppl_torch - 1| (measured 0.001-0.011)
    "layout_margin": 5.0,     # the best alternative layout must be >= 5x worse than ours (measured 16-27x)
}


def _llama(path, n_ctx, cache_type="f32", threads=2, flash_attn=False):
    import llama_cpp
    t = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[cache_type]
    n_ctx = max(256, -(-n_ctx // 256) * 256)
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                           logits_all=True, n_threads=threads, n_threads_batch=threads, type_k=t, type_v=t,
                           flash_attn=flash_attn, swa_full=True, verbose=False)


def llama_cpp_run(path, ids, cache_type="f32", threads=2, flash_attn=False):
    """(logits float32 [T, V], raw state bytes of sequence 0, llama_cpp version)."""
    import llama_cpp
    llm = _llama(path, len(ids), cache_type, threads, flash_attn)
    llm.eval(list(ids))
    logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
    size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_seq_get_data(llm.ctx, buf, size, 0)
    if n != size:
        raise RuntimeError(f"llama_state_seq_get_data wrote {n} of {size} bytes")
    llm.close()
    return torch.from_numpy(logits), bytes(buf), llama_cpp.__version__


def _swap_style(x, style):
    """Re-lay channels as if the other RoPE pairing had been used (same values, other order)."""
    H, T, D = x.shape
    if style == "interleaved":   # (2i, 2i+1) -> (i, i+D/2)
        return x.view(H, T, D // 2, 2).transpose(-1, -2).reshape(H, T, D)
    return x.view(H, T, 2, D // 2).transpose(-1, -2).reshape(H, T, D)


def rel_errors(ours, theirs):
    d = (theirs - ours).double()
    o = ours.double()
    return float(d.abs().max() / o.abs().max().clamp_min(1e-30)), float(d.norm() / o.norm().clamp_min(1e-30))


def compare(model, ids, cache_type="f32", threads=2, ours=None, flash_attn=False, stored=None, arith="f32"):
    """Run both and return a report dict (see module docstring).  stored: a dump's tensors with the
    same tokens; its (rounded) K/V are compared with llama.cpp's too."""
    import time
    c = model.config
    T = len(ids)
    t0 = time.time()
    if ours is None:
        ours = model.forward(ids, logits=True, arith=arith, cache_type=cache_type)
    t_torch = time.time() - t0
    t0 = time.time()
    logits_cpp, state, version = llama_cpp_run(model.path, ids, cache_type, threads, flash_attn)
    t_cpp = time.time() - t0
    parsed = parse_seq_state(state)
    kv, pos = kv_by_layer(parsed, c.n_layers, c.n_kv_heads, c.head_dim, c.swa_layers)
    lo = ours["logits"]
    d = (logits_cpp - lo).double()
    tok = torch.as_tensor(ids)
    nll_cpp = torch.nn.functional.cross_entropy(logits_cpp[:-1], tok[1:], reduction="none").double()
    rep = {"tokens": T, "llama_cpp_version": version, "cache_type": cache_type, "arith": arith,
           "flash_attn": flash_attn, "state_bytes": len(state),
           "state_sections": len(parsed["caches"]),
           "v_trans": [s["v_trans"] for cache in parsed["caches"] for s in cache if s["cell_count"]],
           "time_torch_s": round(t_torch, 2), "time_llama_cpp_s": round(t_cpp, 2),
           "top1_agreement": float((logits_cpp.argmax(-1) == lo.argmax(-1)).double().mean()),
           "logit_max_abs_diff": float(d.abs().max()), "logit_rms_diff": float(d.pow(2).mean().sqrt()),
           "logit_rms": float(lo.double().pow(2).mean().sqrt()),
           "ppl_torch": math.exp(float(ours["nll"][1:].double().mean())),
           "ppl_llama_cpp": math.exp(float(nll_cpp.mean())), "layers": []}
    worst_alt = math.inf
    for l in range(c.n_layers):
        p = torch.tensor(pos[l])
        order = torch.argsort(p)
        p = p[order]
        k_cpp, v_cpp = kv[l][0][:, order], kv[l][1][:, order]
        r = ours["records"][l]
        k, v = r["k"][:, p], r["v"][:, p]
        k_max, k_rms = rel_errors(k, k_cpp)
        v_max, v_rms = rel_errors(v, v_cpp)
        alt_style = rel_errors(_swap_style(r["k"], c.rope_style)[:, p], k_cpp)[1]
        alts = [alt_style]
        if p.numel() > 1 and int(p[0]) > 0:
            alts.append(rel_errors(r["k"][:, p - 1], k_cpp)[1])
        elif p.numel() > 1:
            alts.append(rel_errors(r["k"][:, p[1:]], k_cpp[:, :-1])[1])
        worst_alt = min(worst_alt, min(alts) / max(k_rms, 1e-30))
        extra = {}
        if stored is not None and f"layer.{l}.k" in stored:
            extra["dump_k_rms_rel"] = rel_errors(stored[f"layer.{l}.k"].float()[:, p], k_cpp)[1]
            extra["dump_v_rms_rel"] = rel_errors(stored[f"layer.{l}.v"].float()[:, p], v_cpp)[1]
        rep["layers"].append({**extra, "layer": l, "positions": f"{int(p[0])}..{int(p[-1])}" if p.numel() else "none",
                              "n_positions": int(p.numel()), "k_max_rel": k_max, "k_rms_rel": k_rms,
                              "v_max_rel": v_max, "v_rms_rel": v_rms,
                              "k_rms_rel_other_rope_layout": alt_style,
                              "k_rms_rel_shifted_position": alts[1] if len(alts) > 1 else None})
    rep["layout_margin"] = worst_alt
    if stored is not None:
        if not torch.equal(stored["tokens"].long(), torch.as_tensor(ids).long()):
            raise ValueError("the dump's tokens differ from the ids given")
    tol = TOLERANCES
    fails = []
    if rep["top1_agreement"] < tol["top1_min"]:
        fails.append(f"top-1 agreement {rep['top1_agreement']:.3f} < {tol['top1_min']}")
    if rep["logit_rms_diff"] > tol["logit_rms_rel"] * rep["logit_rms"]:
        fails.append(f"rms dlogit {rep['logit_rms_diff']:.3f} > {tol['logit_rms_rel']} x rms logit")
    if abs(rep["ppl_llama_cpp"] / rep["ppl_torch"] - 1) > tol["ppl_rel"]:
        fails.append(f"perplexity {rep['ppl_llama_cpp']:.4f} (llama.cpp) vs {rep['ppl_torch']:.4f} (torch)")
    for L in rep["layers"]:
        if L["k_rms_rel"] > tol["k_rms_rel"]:
            fails.append(f"layer {L['layer']}: K rms rel {L['k_rms_rel']:.4f} > {tol['k_rms_rel']}")
        if L["v_rms_rel"] > tol["v_rms_rel"]:
            fails.append(f"layer {L['layer']}: V rms rel {L['v_rms_rel']:.4f} > {tol['v_rms_rel']}")
    if worst_alt < tol["layout_margin"]:
        fails.append(f"layout margin {worst_alt:.1f} < {tol['layout_margin']}")
    rep["tolerances"] = dict(tol)
    rep["failures"] = fails
    rep["ok"] = not fails
    return rep


def format_report(rep):
    lines = [f"llama.cpp {rep['llama_cpp_version']} vs torch (arith {rep['arith']}), {rep['tokens']} tokens, "
             f"cache {rep['cache_type']}, state {rep['state_bytes']} bytes in {rep['state_sections']} "
             f"section(s), V transposed: {rep['v_trans']}",
             f"  logits: top-1 agreement {rep['top1_agreement']:.4f}, max |d| {rep['logit_max_abs_diff']:.4f}, "
             f"rms d {rep['logit_rms_diff']:.4f} (logit rms {rep['logit_rms']:.2f}); "
             f"ppl torch {rep['ppl_torch']:.4f}, llama.cpp {rep['ppl_llama_cpp']:.4f}",
             f"  time: torch {rep['time_torch_s']} s, llama.cpp {rep['time_llama_cpp_s']} s",
             "  layer  positions     K max rel  K rms rel   V max rel  V rms rel   K rms rel if other RoPE layout / shifted"]
    for L in rep["layers"]:
        sh = L["k_rms_rel_shifted_position"]
        lines.append(f"  {L['layer']:5d}  {L['positions']:>12}  {L['k_max_rel']:9.5f}  {L['k_rms_rel']:9.5f}   "
                     f"{L['v_max_rel']:9.5f}  {L['v_rms_rel']:9.5f}   {L['k_rms_rel_other_rope_layout']:.3f} / "
                     f"{sh if sh is None else round(sh, 3)}")
    if rep["layers"] and "dump_k_rms_rel" in rep["layers"][0]:
        lines.append("  stored dump vs llama.cpp, rms rel per layer (K / V): " + ", ".join(
            f"{L['layer']}: {L['dump_k_rms_rel']:.4f}/{L['dump_v_rms_rel']:.4f}" for L in rep["layers"]))
    lines.append(f"  layout margin (best alternative / ours): {rep['layout_margin']:.1f}x")
    lines.append("  OK" if rep["ok"] else "  FAIL: " + "; ".join(rep["failures"]))
    return "\n".join(lines)
