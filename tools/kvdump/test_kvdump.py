"""Fast checks of the corpus tool.  Run from the repository root:
    /usr/bin/python3 -m unittest tools/kvdump/test_kvdump.py
"""
import glob
import math
import os
import struct
import sys
import tempfile
import types
import unittest
from unittest import mock

import torch

from . import bpe, dump, hf_dump
from .model import Attention, LlamaConfig, TinyLlama, apply_rope, rope_cos_sin
from .safetensors_io import load_file, read_header, save_file
from .train import save_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_MODEL = os.path.join(REPO, "data", "tiny-llama")
ALL_DUMPS = sorted(glob.glob(os.path.join(REPO, "data", "kv", "*.safetensors")))
# The tiny model's dumps (the SmolLM2 ones are checked by SmolLM2FixtureTest and test_gguf.py).
FIXTURE_DUMPS = [p for p in ALL_DUMPS if read_header(p)[1].get("model") == "seqkv-tiny-llama"]
SMOLLM2_DUMPS = [p for p in ALL_DUMPS if read_header(p)[1].get("gguf_file") == "SmolLM2-135M-Instruct.Q4_1.gguf"]

TEXT = ("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n"
        "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n") * 6 + \
       "The licenses for most software are designed to take away your freedom — ünïcode.\n"


class SafetensorsTest(unittest.TestCase):
    def test_roundtrip_all_dtypes(self):
        g = torch.Generator().manual_seed(0)
        base = torch.randn(3, 5, 7, generator=g)
        tensors = {"bf16": base.to(torch.bfloat16), "f16": base.to(torch.float16), "f32": base,
                   "i32": torch.arange(-5, 6, dtype=torch.int32), "i64": torch.arange(4),
                   "u8": torch.arange(9, dtype=torch.uint8), "scalar": torch.tensor(2.5),
                   "empty": torch.zeros(0, 4, dtype=torch.bfloat16)}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            save_file(p, tensors, {"model": "m", "rope_theta": "10000.0"})
            with open(p, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
            self.assertEqual(n % 8, 0)
            header, meta, start = read_header(p)
            self.assertEqual(meta, {"model": "m", "rope_theta": "10000.0"})
            self.assertEqual(header["bf16"]["dtype"], "BF16")
            self.assertEqual(os.path.getsize(p), start + max(h["data_offsets"][1] for h in header.values()))
            back, _ = load_file(p)
        self.assertEqual(list(back), list(tensors))
        for k, v in tensors.items():
            self.assertEqual(back[k].dtype, v.dtype, k)
            self.assertTrue(torch.equal(back[k], v), k)

    def test_bf16_bytes_are_little_endian_bit_patterns(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            save_file(p, {"x": torch.tensor([1.0, -2.0], dtype=torch.bfloat16)})
            _, _, start = read_header(p)
            with open(p, "rb") as f:
                f.seek(start)
                self.assertEqual(f.read(), bytes([0x80, 0x3F, 0x00, 0xC0]))

    def test_metadata_must_be_strings(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(TypeError):
                save_file(os.path.join(d, "x"), {"a": torch.zeros(1)}, {"n": 3})


class BpeTest(unittest.TestCase):
    def test_train_is_deterministic_and_roundtrips(self):
        m1 = bpe.train_bpe([TEXT], 300)
        m2 = bpe.train_bpe([TEXT], 300)
        self.assertEqual(m1, m2)
        self.assertEqual(len(m1), 300 - 256 - 1)
        tok = bpe.Tokenizer(m1)
        ids = tok.encode(TEXT)
        self.assertLess(len(ids), len(TEXT.encode()) / 2)
        self.assertEqual(tok.decode(ids), TEXT)
        tok2 = bpe.Tokenizer.from_json(tok.to_json())
        self.assertEqual(tok2.encode(TEXT), ids)
        self.assertEqual(tok2.vocab_size, 300)


class _TinyModelCase(unittest.TestCase):
    """A random (untrained) tiny model + tokenizer in a temporary model directory."""

    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        tok = bpe.Tokenizer(bpe.train_bpe([TEXT], 300), name="test-bpe")
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            f.write(tok.to_json())
        c = LlamaConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                        head_dim=8, ffn_hidden=48, max_seq_len=128)
        model = TinyLlama(c)
        model.init_weights(torch.Generator().manual_seed(1))
        with torch.no_grad():  # make the weights big enough for non-trivial attention
            for name, p in model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                    p.mul_(10.0)
        save_model(model, d, {"tokenizer": tok.name})
        cls.model_dir = d
        cls.text_path = os.path.join(d, "input.txt")
        with open(cls.text_path, "w") as f:
            f.write(TEXT)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _dump(self, dtype, n=64):
        return dump.dump_native(self.model_dir, self.text_path, self.model_dir, n, dtype, f"d_{dtype}")


class DumpTest(_TinyModelCase):
    def test_bf16_dump_convention(self):
        p = self._dump("bf16")
        t, meta = load_file(p)
        T = 64
        self.assertEqual(t["tokens"].dtype, torch.int32)
        self.assertEqual(list(t["tokens"].shape), [T])
        for l in range(2):
            self.assertEqual(list(t[f"layer.{l}.k"].shape), [2, T, 8])
            self.assertEqual(list(t[f"layer.{l}.v"].shape), [2, T, 8])
            self.assertEqual(list(t[f"layer.{l}.k_prerope"].shape), [2, T, 8])
            self.assertEqual(list(t[f"layer.{l}.q"].shape), [4, T, 8])
            self.assertEqual(t[f"layer.{l}.k"].dtype, torch.bfloat16)
        self.assertEqual(t["nll"].dtype, torch.float32)
        for key in ("model", "rope_theta", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                    "vocab_size", "source", "perplexity", "tokenizer"):
            self.assertIn(key, meta)
        self.assertEqual(meta["tokenizer"], "test-bpe")
        # k == rope(k_prerope) within bf16 rounding (a few half-ulps of the pair norm).
        cos, sin = rope_cos_sin(torch.arange(T), 8, float(meta["rope_theta"]))
        kp = t["layer.1.k_prerope"].float()
        err = (apply_rope(kp, cos, sin) - t["layer.1.k"].float()).abs().max()
        self.assertLess(float(err), 4 * 2 ** -8 * float(kp.abs().max()) * math.sqrt(2))
        self.assertGreater(float(t["layer.1.k"].float().abs().max()), 0.0)
        # nll mean <-> perplexity
        self.assertEqual(float(t["nll"][0]), 0.0)
        ppl = math.exp(float(t["nll"][1:].double().mean()))
        self.assertAlmostEqual(ppl / float(meta["perplexity"]), 1.0, places=9)
        self.assertEqual(dump.check_dump(p, self.model_dir), [])

    def test_f32_dump_rope_is_exact(self):
        t, _ = load_file(self._dump("f32", 40))
        cos, sin = rope_cos_sin(torch.arange(40), 8, 10000.0)
        for l in range(2):
            self.assertTrue(torch.equal(apply_rope(t[f"layer.{l}.k_prerope"], cos, sin), t[f"layer.{l}.k"]))

    def test_f16_and_bf16_agree_with_f32(self):
        t32, _ = load_file(self._dump("f32", 40))
        t16, _ = load_file(self._dump("f16", 40))
        tb, _ = load_file(self._dump("bf16", 40))
        for name in ("layer.0.k", "layer.1.v", "layer.1.q"):
            self.assertTrue(torch.equal(t16[name], t32[name].to(torch.float16)))
            self.assertTrue(torch.equal(tb[name], t32[name].to(torch.bfloat16)))

    def test_check_detects_corruption(self):
        p = self._dump("bf16", 32)
        t, meta = load_file(p)
        t["layer.0.k"] = t["layer.0.k"].clone()
        t["layer.0.k"][0, 5, 0] += 1.0
        bad = os.path.join(self.model_dir, "bad.safetensors")
        save_file(bad, t, meta)
        self.assertTrue(dump.check_dump(bad))
        meta2 = dict(meta, perplexity=repr(float(meta["perplexity"]) * 1.01))
        t2, _ = load_file(p)
        save_file(bad, t2, meta2)
        self.assertTrue(any("perplexity" in e for e in dump.check_dump(bad)))

    def test_hf_without_transformers_fails_clearly(self):
        try:
            import transformers  # noqa: F401
            self.skipTest("transformers is installed")
        except ImportError:
            pass
        with self.assertRaises(SystemExit) as cm:
            hf_dump.dump_hf("some/model", self.text_path, self.model_dir)
        self.assertIn("transformers", str(cm.exception))


# --- A stand-in for `transformers` that wraps the tiny model with the HF Llama API surface that
# dump --hf relies on, so that path is exercised (and compared with the native dump) offline.

def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):  # looked up via type(attn).__module__
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class _HfStyleAttention(Attention):
    pass


class _Rotary(torch.nn.Module):
    def __init__(self, head_dim, theta):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, x, position_ids):
        cos, sin = rope_cos_sin(position_ids[0], self.head_dim, self.theta)
        return torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]


def _fake_transformers(model_dir):
    from .train import load_model
    tiny, tok, _ = load_model(model_dir)
    c = tiny.config

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny.model
            self.model.rotary_emb = _Rotary(c.head_dim, c.rope_theta)
            for layer in self.model.layers:
                layer.self_attn.__class__ = _HfStyleAttention
            self.config = types.SimpleNamespace(
                num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, hidden_size=c.d_model,
                vocab_size=c.vocab_size, rope_theta=c.rope_theta, model_type="llama", rope_scaling=None)

        def forward(self, x, use_cache=True):
            records = []
            logits = tiny(x, records)
            return types.SimpleNamespace(logits=logits,
                                         past_key_values=tuple((r["k"], r["v"]) for r in records))

    class _Tok:
        name_or_path = tok.name

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": tok.encode(text)}

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(_):
            return _Tok()

    class AutoModelForCausalLM:
        @staticmethod
        def from_pretrained(_, torch_dtype=None):
            return Wrapper()

    m = types.ModuleType("transformers")
    m.__version__ = "fake"
    m.AutoTokenizer, m.AutoModelForCausalLM = AutoTokenizer, AutoModelForCausalLM
    return m


class HfPathTest(_TinyModelCase):
    def test_hf_path_matches_native_dump(self):
        native, _ = load_file(self._dump("bf16", 48))
        with mock.patch.dict(sys.modules, {"transformers": _fake_transformers(self.model_dir)}):
            p = hf_dump.dump_hf(self.model_dir, self.text_path, self.model_dir, 48, "bf16", "hf")
        t, meta = load_file(p)
        self.assertEqual(meta["omitted"], "none")
        self.assertEqual(sorted(t), sorted(native))
        for name in native:
            self.assertTrue(torch.equal(t[name], native[name]), name)
        self.assertEqual(dump.check_dump(p), [])


class RecomputeToleranceTest(unittest.TestCase):
    """The cross-CPU recompute comparison accepts rounding flips and rejects a different model."""

    def setUp(self):
        g = torch.Generator().manual_seed(3)
        self.y = {"tokens": torch.arange(64, dtype=torch.int32),
                  "layer.0.k": (torch.randn(2, 64, 16, generator=g) * 4).to(torch.bfloat16),
                  "nll": torch.rand(64, generator=g) * 8}

    def _flip(self, fraction):
        x = dict(self.y)
        k = x["layer.0.k"].clone().view(torch.int16).view(-1)
        n = int(k.numel() * fraction)
        k[:n] += 1  # next bf16 value up in magnitude: a one-ulp rounding flip
        x["layer.0.k"] = k.view(torch.bfloat16).view(self.y["layer.0.k"].shape)
        return x

    def test_accepts_rounding_flips_and_float32_noise(self):
        x = self._flip(0.005)
        x["nll"] = self.y["nll"] + 3e-6
        self.assertEqual(dump.recompute_differences(x, self.y), [])

    def test_rejects_many_flips_wrong_values_and_tokens(self):
        self.assertTrue(dump.recompute_differences(self._flip(0.05), self.y))
        x = dict(self.y)
        x["layer.0.k"] = (self.y["layer.0.k"].float() * 1.01).to(torch.bfloat16)
        self.assertTrue(dump.recompute_differences(x, self.y))
        x = dict(self.y)
        x["nll"] = self.y["nll"] + 1e-3
        self.assertTrue(dump.recompute_differences(x, self.y))
        x = dict(self.y)
        x["tokens"] = self.y["tokens"].flip(0)
        self.assertTrue(dump.recompute_differences(x, self.y))


@unittest.skipUnless(FIXTURE_DUMPS and os.path.exists(os.path.join(FIXTURE_MODEL, "model.safetensors")),
                     "committed fixture not present")
class FixtureTest(unittest.TestCase):
    def test_fixture_dumps_verify_and_recompute(self):
        torch.set_num_threads(2)
        for p in FIXTURE_DUMPS:
            with self.subTest(dump=os.path.basename(p)):
                self.assertEqual(dump.check_dump(p, FIXTURE_MODEL), [])
                _, meta = load_file(p)
                self.assertGreaterEqual(int(meta["n_tokens"]), 512)

    def test_fixture_size_cap(self):
        total = sum(os.path.getsize(os.path.join(d, f))
                    for d, _, fs in os.walk(os.path.join(REPO, "data")) for f in fs)
        self.assertLessEqual(total, 25_000_000)


class InterleavedRopeCheckTest(unittest.TestCase):
    """check_dump verifies k == rope(k_prerope) for rope_style interleaved (pairs 2i, 2i+1) too."""

    def _dump(self, d, style_written, style_claimed, per_layer=None):
        from .gguf_model import apply_rope, rope_cos_sin_ggml
        g = torch.Generator().manual_seed(5)
        T, D = 48, 16
        meta = {"model": "m", "rope_theta": "10000.0", "rope_style": style_claimed, "n_layers": "2",
                "rope_angles": "ggml CPU rope"}
        if per_layer:
            meta["rope_theta_layers"] = ",".join(map(repr, per_layer))
        t = {"tokens": torch.arange(T, dtype=torch.int32)}
        for l in range(2):
            theta = per_layer[l] if per_layer else 10000.0
            kp = torch.randn(2, T, D, generator=g) * 3
            cos, sin = rope_cos_sin_ggml(T, D, theta)
            t[f"layer.{l}.k"] = apply_rope(kp, cos, sin, style_written).to(torch.bfloat16)
            t[f"layer.{l}.v"] = torch.randn(2, T, D, generator=g).to(torch.bfloat16)
            t[f"layer.{l}.k_prerope"] = kp.to(torch.bfloat16)
        p = os.path.join(d, "x.safetensors")
        save_file(p, t, meta)
        return p

    def test_interleaved_accepted_and_mislabels_caught(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(dump.check_dump(self._dump(d, "interleaved", "interleaved")), [])
            self.assertTrue(dump.check_dump(self._dump(d, "interleaved", "rotate_half")))
            self.assertTrue(dump.check_dump(self._dump(d, "rotate_half", "interleaved")))
            self.assertEqual(dump.check_dump(self._dump(d, "rotate_half", "rotate_half")), [])

    def test_per_layer_theta(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(dump.check_dump(self._dump(d, "rotate_half", "rotate_half", [10000.0, 1e6])), [])
            p = self._dump(d, "rotate_half", "rotate_half", [10000.0, 1e6])
            t, meta = load_file(p)
            del meta["rope_theta_layers"]  # layer 1 then checked with the wrong base
            save_file(p, t, meta)
            self.assertTrue(dump.check_dump(p))


@unittest.skipUnless(len(SMOLLM2_DUMPS) == 2, "committed SmolLM2 fixture not present")
class SmolLM2FixtureTest(unittest.TestCase):
    """Shape/metadata checks of the committed SmolLM2-135M dumps (no pip packages needed; the
    recomputation and the comparison with llama.cpp are in test_gguf.py)."""

    def test_layout_and_metadata(self):
        for p in SMOLLM2_DUMPS:
            with self.subTest(dump=os.path.basename(p)):
                self.assertEqual(dump.check_dump(p), [])
                t, meta = load_file(p)
                self.assertEqual(meta["rope_style"], "interleaved")
                self.assertEqual(float(meta["rope_theta"]), 100000.0)
                self.assertEqual(meta["gguf_sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
                self.assertEqual((meta["n_layers"], meta["n_heads"], meta["n_kv_heads"], meta["head_dim"], meta["dtype"]),
                                 ("30", "9", "3", "64", "bf16"))
                self.assertEqual(t["tokens"].dtype, torch.int32)
                self.assertEqual(list(t["tokens"].shape), [256])
                self.assertTrue(bool((t["tokens"] >= 0).all()) and bool((t["tokens"] < 49152).all()))
                for l in range(30):
                    self.assertEqual(list(t[f"layer.{l}.k"].shape), [3, 256, 64])
                    self.assertEqual(t[f"layer.{l}.v"].dtype, torch.bfloat16)
                self.assertEqual(sorted(int(k.split(".")[1]) for k in t if k.endswith(".q")), [0, 14, 29])
                self.assertEqual(list(t["layer.14.q"].shape), [9, 256, 64])
                self.assertFalse([k for k in t if k.endswith("k_prerope")])
                self.assertEqual(float(t["nll"][0]), 0.0)
                ppl = math.exp(float(t["nll"][1:].double().mean()))
                self.assertAlmostEqual(ppl / float(meta["perplexity"]), 1.0, places=9)
                self.assertLess(ppl, 30.0)  # a trained model: 21.7 (GPL-3), 14.5 (textwrap.py)


if __name__ == "__main__":
    unittest.main()
