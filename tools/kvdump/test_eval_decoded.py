"""Fast checks of the decoded-KV evaluation (eval_decoded.py).  Run from the repository root:
    /usr/bin/python3 -m unittest tools/kvdump/test_eval_decoded.py
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import torch

from . import eval_decoded as ev
from .model import LlamaConfig, TinyLlama, apply_rope, rope_cos_sin
from .safetensors_io import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_MODEL = os.path.join(REPO, "data", "tiny-llama")
GPL_DUMP = os.path.join(REPO, "data", "kv", "gpl3.safetensors")
GPL_TEXT = "/usr/share/common-licenses/GPL-3"
TEXTWRAP = "/usr/lib/python3.11/textwrap.py"


def _random_model(seed=0):
    c = LlamaConfig(vocab_size=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                    ffn_hidden=96, max_seq_len=128)
    m = TinyLlama(c)
    m.init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # larger weights than the init, so attention is far from uniform
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return m.eval()


def _ids(n, vocab, seed=1):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


class CachePathTest(unittest.TestCase):
    T, N = 40, 12

    def setUp(self):
        self.model = _random_model()
        self.ids = _ids(self.T + self.N, self.model.config.vocab_size)
        self.full, self.cache = ev._full_forward_cache(self.model, self.ids, self.T)

    def test_cache_path_equals_full_forward(self):
        got = ev.forward_with_cache(self.model, self.cache, self.ids[self.T:])
        self.assertEqual(got.shape, self.full[self.T:].shape)
        self.assertLess(float((got - self.full[self.T:]).abs().max()), 1e-4)

    def test_bf16_cache_close_but_not_exact(self):
        bf = [(k.bfloat16().float(), v.bfloat16().float()) for k, v in self.cache]
        d = float((ev.forward_with_cache(self.model, bf, self.ids[self.T:]) - self.full[self.T:]).abs().max())
        self.assertGreater(d, 0.0)
        self.assertLess(d, 0.2)

    def test_rotating_cached_keys_again_is_detected(self):
        # The cached keys are post-RoPE; rotating them a second time must visibly break the logits.
        c = self.model.config
        cos, sin = rope_cos_sin(torch.arange(self.T), c.head_dim, c.rope_theta)
        twice = [(apply_rope(k, cos, sin), v) for k, v in self.cache]
        got = ev.forward_with_cache(self.model, twice, self.ids[self.T:])
        self.assertGreater(float((got - self.full[self.T:]).abs().max()), 1e-2)

    def test_shape_mismatch_raises(self):
        bad = [(k[:, :-1], v) for k, v in self.cache]
        with self.assertRaises(ev.EvalError):
            ev.forward_with_cache(self.model, bad, self.ids[self.T:])


class MetricsTest(unittest.TestCase):
    def test_identical_logits(self):
        x = torch.randn(10, 50, generator=torch.Generator().manual_seed(3)) * 4
        m = ev.compare_logits(x, x.clone(), targets=list(range(10)))
        self.assertEqual(m["kl_mean_nats"], 0.0)
        self.assertEqual(m["top1_agreement"], 1.0)
        self.assertEqual(m["nll_ref_nats"], m["nll_test_nats"])

    def test_perturbed_cache_gives_positive_kl(self):
        model = _random_model()
        T, N = 30, 10
        ids = _ids(T + N, model.config.vocab_size, seed=2)
        _, cache = ev._full_forward_cache(model, ids, T)
        g = torch.Generator().manual_seed(4)
        noisy = [(k + 0.5 * torch.randn(k.shape, generator=g), v + 0.5 * torch.randn(v.shape, generator=g))
                 for k, v in cache]
        ref = ev.forward_with_cache(model, cache, ids[T:])
        m = ev.compare_logits(ref, ev.forward_with_cache(model, noisy, ids[T:]))
        self.assertGreater(m["kl_mean_nats"], 1e-6)
        self.assertLessEqual(m["top1_agreement"], 1.0)


@unittest.skipUnless(os.path.isfile(GPL_DUMP) and os.path.isfile(GPL_TEXT),
                     "fixture dump or its source text missing")
class FixtureTest(unittest.TestCase):
    """End to end on the committed model and dump, with a short continuation."""

    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(2)
        cls.tmp = tempfile.TemporaryDirectory()
        t, meta = load_file(GPL_DUMP)
        g = torch.Generator().manual_seed(5)
        for key in list(t):
            if key.endswith((".k", ".v")):
                x = t[key].float()
                t[key] = (x + 0.05 * x.std() * torch.randn(x.shape, generator=g)).to(t[key].dtype)
        cls.noisy = os.path.join(cls.tmp.name, "noisy.safetensors")
        save_file(cls.noisy, t, meta)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_original_vs_itself_and_sanity(self):
        r = ev.evaluate(FIXTURE_MODEL, GPL_DUMP, GPL_DUMP, n_continue=8, sanity=True)
        self.assertEqual(r["prefix_tokens"], 512)
        self.assertEqual(r["continuation_positions"], 8)
        self.assertEqual(r["kl_mean_nats"], 0.0)
        self.assertEqual(r["top1_agreement"], 1.0)
        s = r["sanity"]
        self.assertTrue(s["ok"], s)
        self.assertLess(s["max_abs_logit_diff_fp32_cache"], ev.PATH_TOLERANCE)
        self.assertLess(s["max_abs_logit_diff_stored_cache"], 0.1)  # bf16 rounding only

    def test_perturbed_dump_via_cli(self):
        sys.path.insert(0, os.path.join(REPO, "tools"))
        import seqkv_corpus
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = seqkv_corpus.main(["evaluate", "--model", FIXTURE_MODEL, "--original", GPL_DUMP,
                                    "--decoded", self.noisy, "--continue", "8", "--json"])
        self.assertEqual(rc, 0)
        r = json.loads(buf.getvalue())
        self.assertGreater(r["kl_mean_nats"], 0.0)
        self.assertNotEqual(r["nll_original_nats"], r["nll_decoded_nats"])

    @unittest.skipUnless(os.path.isfile(TEXTWRAP), "textwrap.py missing")
    def test_wrong_source_fails_clearly(self):
        with self.assertRaisesRegex(ev.EvalError, "does not reproduce"):
            ev.evaluate(FIXTURE_MODEL, GPL_DUMP, self.noisy, n_continue=8, source=TEXTWRAP)


if __name__ == "__main__":
    unittest.main()
