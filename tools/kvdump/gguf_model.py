"""Pretrained GGUF models (llama.cpp's file format) run in float32 PyTorch, as llama.cpp runs them.

Needs the `gguf` package (reads and dequantizes GGUF; pip) and numpy; torch as everywhere else.

Supported architectures (general.architecture):
  llama   Llama family (SmolLM2, TinyLlama, Llama 2/3 without rope scaling): RMSNorm, GQA, SwiGLU,
          optional tied embeddings.  RoPE: llama.cpp's "NORM" rope type, i.e. adjacent pairs
          (2i, 2i+1) rotated by angle pos * theta^(-2i/D).  The HF->GGUF converter permutes the rows
          of Wq and Wk (per head: HF row i -> GGUF row 2i, HF row i + D/2 -> GGUF row 2i+1), so with
          the GGUF weights as stored and interleaved RoPE, q/k equal Hugging Face's rotate-half q/k up
          to that channel permutation -- and are laid out exactly as llama.cpp writes its KV cache,
          element for element (rope_style "interleaved"; the values agree up to the arithmetic
          differences described below).  HF layout, if wanted:
          k_hf = k.view(H, T, D // 2, 2).transpose(-1, -2).reshape(H, T, D).
  gemma3  Gemma 3 (270M tested): embedding x sqrt(d_model), QK-norm (RMSNorm over head_dim before
          RoPE), RoPE "NEOX" = rotate-half pairs (i, i + D/2) without any row permutation,
          theta 10000 on sliding-window layers and gemma3.rope.freq_base (1e6) on global layers,
          sliding window gemma3.attention.sliding_window (512) on layers l % 6 < 5, query scale
          1/sqrt(head_dim), GeGLU (tanh-approximated GELU), post-attention and post-FFN RMSNorms.
          The GGUF converter stores Gemma's RMSNorm weights with the +1 already added
          (Gemma3RMSNorm computes x * (1 + w)), so every norm here is x * rsqrt(mean x^2 + eps) * w.

All weights are dequantized to float32 with gguf.quants.dequantize (exactly the values llama.cpp
multiplies with); activations stay float32 throughout.  llama.cpp differs in arithmetic only:
its quantized matmuls quantize the activation row to 8 bits (Q8_0/Q8_1 blocks of 32), its
attention reads an f16 KV cache and rounds Q and the softmax to f16 for the matmuls, and Gemma's
GELU uses an f16 lookup table.  See crosscheck.py for how large that difference is.

arith="ggml" (dump --arith ggml, crosscheck) reproduces those llama.cpp CPU steps in torch:
activations of each quantized matmul are rounded like quantize_row_q8_0 / q8_1 (blocks of 32,
scale = max|x| / 127 stored as f16, multiplier 127 / max|x|, round half to even; for Q4_1/Q5_1
weights also the f16 block sum s that multiplies the weights' block minimum) or q8_K (blocks of
256, multiplier -127 / (signed max), scale 1 / multiplier in f32) for K-quants; RMSNorm sums
squares in double; Gemma's GeGLU uses f16-rounded GELU of the f16-rounded input (ggml's table);
with cache_type "f16" K/V are rounded to f16, Q is rounded to f16 before Q.K and the softmax
before P.V, as ggml's f16 matmuls do.  What remains is summation order and 1-ulp differences of
expf/tanhf/cosf.  Measured on SmolLM2: layer 0 then matches llama.cpp to 3e-4 (K) / 7e-4 (V) rms
relative instead of 3.4e-3 / 1.3e-2, but from layer 1 on the error is back at the plain-float32
level: an activation rounded to the other 8-bit step changes the next layers' inputs by more than
the distance to the next rounding threshold, so rounding differences multiply through the depth.

RoPE angles are computed the way ggml's CPU rope does (ggml_rope_cache_init): theta_scale =
powf(base, -2/D) in float32, angle_0 = (float) pos, angle_{i+1} = angle_i * theta_scale rounded to
float32 each step; cos/sin of each float32 angle (correctly rounded here via float64).  Up to
position 8192 the cos/sin of this table differ from the float32 textbook pos * base^(-2i/D)
(model.rope_cos_sin) by up to 7e-4 (D = 64, base 1e5) and 1.7e-3 (D = 256): comparable to f16
rounding, so the stored values follow the engine's table.
"""
import dataclasses
import hashlib
import json
import math
import os

import torch
import torch.nn.functional as F

SUPPORTED_ARCHS = ("llama", "gemma3")


def _gguf():
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise SystemExit("the GGUF path needs the `gguf` package (pip install gguf==0.19.0; "
                         f"scripts/setup-models.sh installs it into build/venv): {e}")
    return gguf


def sha256_file(path, _cache={}):
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


@dataclasses.dataclass
class GGUFConfig:
    arch: str
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden: int
    vocab_size: int
    rope_theta: float                 # global layers (the GGUF's rope.freq_base)
    rope_theta_swa: float             # sliding-window layers (gemma3); = rope_theta otherwise
    rope_style: str                   # "interleaved" (llama.cpp NORM) or "rotate_half" (NEOX)
    norm_eps: float
    tie_embeddings: bool
    context_length: int
    sliding_window: int = 0           # 0 = none
    swa_layers: tuple = ()            # layer indices using the sliding window
    attn_scale: float = 0.0           # scale of q.k
    embed_scale: float = 1.0          # gemma: sqrt(d_model)

    def layer_theta(self, l):
        return self.rope_theta_swa if l in self.swa_layers else self.rope_theta

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["swa_layers"] = list(self.swa_layers)
        return d


def _field(fields, key, default=None):
    f = fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_gguf(path):
    """(GGUFReader, fields dict key -> python value for scalar/small fields)."""
    gguf = _gguf()
    return gguf.GGUFReader(path)


def config_from_reader(r):
    fields = r.fields
    arch = _field(fields, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"architecture {arch!r} not supported (supported: {SUPPORTED_ARCHS})")
    a = lambda k, d=None: _field(fields, f"{arch}.{k}", d)  # noqa: E731
    n_layers = int(a("block_count"))
    d_model = int(a("embedding_length"))
    n_heads = int(a("attention.head_count"))
    n_kv = int(a("attention.head_count_kv", n_heads))
    head_dim = int(a("attention.key_length", d_model // n_heads))
    if int(a("attention.value_length", head_dim)) != head_dim:
        raise ValueError("key_length != value_length is not supported")
    rot = int(a("rope.dimension_count", head_dim))
    if rot != head_dim:
        raise ValueError(f"partial RoPE (rope.dimension_count {rot} != head_dim {head_dim}) not supported")
    scaling = _field(fields, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"rope scaling {scaling!r} not supported")
    names = {t.name for t in r.tensors}
    if any(n.endswith("rope_freqs.weight") for n in names):
        raise ValueError("rope_freqs (Llama 3.1-style frequency factors) not supported")
    vocab = len(fields["tokenizer.ggml.tokens"].data)
    theta = float(a("rope.freq_base", 10000.0))
    eps = float(a("attention.layer_norm_rms_epsilon"))
    tie = "output.weight" not in names
    ctx = int(a("context_length", 0))
    if arch == "llama":
        return GGUFConfig(arch, str(_field(fields, "general.name", "")), n_layers, d_model, n_heads, n_kv,
                          head_dim, int(a("feed_forward_length")), vocab, theta, theta, "interleaved",
                          eps, tie, ctx, 0, (), 1.0 / math.sqrt(head_dim), 1.0)
    # gemma3, as llama.cpp's llama_model_gemma3 loads it
    window = int(a("attention.sliding_window", 0))
    swa = ()
    theta_swa = theta
    if window > 0:
        pattern = a("attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            swa = tuple(l for l in range(n_layers) if pattern[l])
        else:
            swa = tuple(l for l in range(n_layers) if pattern == 0 or l % pattern < pattern - 1)
        theta_swa = float(a("rope.freq_base_swa", 10000.0))  # llama.cpp's default when absent
    if n_layers == 62:  # Gemma 3 27B scales by d_model / n_heads (llama.cpp, gemma_pytorch)
        scale = 1.0 / math.sqrt(d_model / n_heads)
    else:
        scale = 1.0 / math.sqrt(head_dim)
    if _field(fields, f"{arch}.final_logit_softcapping") or _field(fields, f"{arch}.attn_logit_softcapping"):
        raise ValueError("logit soft-capping not supported")
    return GGUFConfig(arch, str(_field(fields, "general.name", "")), n_layers, d_model, n_heads, n_kv,
                      head_dim, int(a("feed_forward_length")), vocab, theta, theta_swa, "rotate_half",
                      eps, tie, ctx, window, swa, scale, float(torch.tensor(float(d_model)).sqrt()))


def dequantize(t):
    """float32 numpy array [rows, cols] (or [n]) of a GGUF tensor."""
    gguf = _gguf()
    import numpy as np
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a if a.flags.writeable else a.copy()  # F32 tensors come back as read-only file views


class GGUFModel:
    """Dequantized float32 weights + config of a GGUF file, with a float32 forward."""

    def __init__(self, path):
        r = read_gguf(path)
        self.path = path
        self.config = config_from_reader(r)
        self.fields = r.fields
        self.file_type = _field(r.fields, "general.file_type")
        self.tensor_types = {t.name: t.tensor_type.name for t in r.tensors}
        self.w = {t.name: torch.from_numpy(dequantize(t)) for t in r.tensors}
        self.block_min = {t.name: _block_min(t) for t in r.tensors if t.tensor_type.name in ("Q4_1", "Q5_1")}
        c = self.config
        if c.tie_embeddings:
            self.w["output.weight"] = self.w["token_embd.weight"]
            self.tensor_types["output.weight"] = self.tensor_types["token_embd.weight"]
            if "token_embd.weight" in self.block_min:
                self.block_min["output.weight"] = self.block_min["token_embd.weight"]
        for l in range(c.n_layers):
            for n, shape in (("attn_q", (c.n_heads * c.head_dim, c.d_model)),
                             ("attn_k", (c.n_kv_heads * c.head_dim, c.d_model)),
                             ("attn_v", (c.n_kv_heads * c.head_dim, c.d_model)),
                             ("attn_output", (c.d_model, c.n_heads * c.head_dim)),
                             ("ffn_gate", (c.ffn_hidden, c.d_model)), ("ffn_up", (c.ffn_hidden, c.d_model)),
                             ("ffn_down", (c.d_model, c.ffn_hidden))):
                got = tuple(self.w[f"blk.{l}.{n}.weight"].shape)
                if got != shape:
                    raise ValueError(f"blk.{l}.{n}.weight has shape {got}, expected {shape}")
        del r

    @property
    def name(self):
        return os.path.basename(self.path)

    def sha256(self):
        return sha256_file(self.path)

    def L(self, l, n):
        return self.w[f"blk.{l}.{n}.weight"]

    # -- forward ------------------------------------------------------------------------------

    @torch.no_grad()
    def mm(self, x, name, arith):
        """x [T, in] @ W^T with W = tensor `name`; arith "ggml" rounds x as llama.cpp's CPU matmul
        for that weight type does (module docstring)."""
        W = self.w[name]
        if arith != "ggml":
            return x @ W.t()
        ty = self.tensor_types[name]
        kind = VEC_DOT.get(ty)
        if kind is None:
            if ty in ("F32",):
                return x @ W.t()
            raise ValueError(f"{name}: weight type {ty} not emulated")
        if kind == "F16":
            return x.half().float() @ W.t()
        if kind == "BF16":
            return x.bfloat16().float() @ W.t()
        if kind == "Q8_K":
            return quant_q8_K(x) @ W.t()
        xq, corr = quant_q8_0_1(x, kind == "Q8_1")
        y = xq @ W.t()
        if kind == "Q8_1":
            y = y + corr @ self.block_min[name].t()
        return y

    def forward(self, ids, record_layers=None, q_layers=None, prerope_layers=None, logits=True,
                nll=True, block=512, arith="f32", cache_type="f32"):
        """One float32 forward over positions 0..T-1.

        Returns dict: records (list per layer of {k, v[, q][, k_prerope]} float32 [H, T, D]),
        nll (float32 [T], nats, entry 0 = 0) if nll, logits (float32 [T, V]) if logits.
        record_layers/q_layers/prerope_layers: None = all layers, else an iterable of layer ids.
        arith: "f32" (plain float32) or "ggml" (llama.cpp's CPU rounding steps, see the module
        docstring); cache_type "f16" (with arith ggml) = llama.cpp's default f16 KV cache: the
        recorded k/v are then the f16 values it caches.
        """
        if arith not in ("f32", "ggml") or cache_type not in ("f32", "f16"):
            raise ValueError(f"arith {arith!r} / cache_type {cache_type!r}")
        norm = rms_norm_ggml if arith == "ggml" else rms_norm
        f16 = arith == "ggml" and cache_type == "f16"
        c = self.config
        T = len(ids)
        tok = torch.as_tensor(ids, dtype=torch.long)
        all_l = set(range(c.n_layers))
        rec_l = all_l if record_layers is None else set(record_layers)
        q_l = all_l if q_layers is None else set(q_layers)
        pre_l = all_l if prerope_layers is None else set(prerope_layers)
        x = F.embedding(tok, self.w["token_embd.weight"])
        if c.embed_scale != 1.0:
            x = x * c.embed_scale
        rope = {}
        records = []
        for l in range(c.n_layers):
            theta = c.layer_theta(l)
            if theta not in rope:
                rope[theta] = rope_cos_sin_ggml(T, c.head_dim, theta)
            cos, sin = rope[theta]
            h = norm(x, self.L(l, "attn_norm"), c.norm_eps)
            q = self.mm(h, f"blk.{l}.attn_q.weight", arith).view(T, c.n_heads, c.head_dim).transpose(0, 1)
            k = self.mm(h, f"blk.{l}.attn_k.weight", arith).view(T, c.n_kv_heads, c.head_dim).transpose(0, 1)
            v = self.mm(h, f"blk.{l}.attn_v.weight", arith).view(T, c.n_kv_heads, c.head_dim).transpose(0, 1)
            if c.arch == "gemma3":
                q = norm(q, self.L(l, "attn_q_norm"), c.norm_eps)
                k = norm(k, self.L(l, "attn_k_norm"), c.norm_eps)
            k_pre = k
            q = apply_rope(q, cos, sin, c.rope_style)
            k = apply_rope(k_pre, cos, sin, c.rope_style)
            if f16:
                k, v = k.half().float(), v.half().float()
            window = c.sliding_window if l in c.swa_layers else 0
            y = attention(q, k, v, c.attn_scale, window, block, f16)   # [T, H*D]
            o = self.mm(y, f"blk.{l}.attn_output.weight", arith)
            if c.arch == "gemma3":
                o = norm(o, self.L(l, "post_attention_norm"), c.norm_eps)
            x = x + o
            h = norm(x, self.L(l, "ffn_norm"), c.norm_eps)
            g = self.mm(h, f"blk.{l}.ffn_gate.weight", arith)
            u = self.mm(h, f"blk.{l}.ffn_up.weight", arith)
            if c.arch == "gemma3":
                a = geglu_ggml(g, u) if arith == "ggml" else F.gelu(g, approximate="tanh") * u
                f = self.mm(a, f"blk.{l}.ffn_down.weight", arith)
                f = norm(f, self.L(l, "post_ffw_norm"), c.norm_eps)
            else:
                f = self.mm(F.silu(g) * u, f"blk.{l}.ffn_down.weight", arith)
            x = x + f
            if l in rec_l:
                r = {"k": k.contiguous(), "v": v.contiguous()}
                if l in q_l:
                    r["q"] = q.contiguous()
                if l in pre_l:
                    r["k_prerope"] = k_pre.contiguous()
                records.append(r)
            else:
                records.append(None)
        x = norm(x, self.w["output_norm.weight"], c.norm_eps)
        out = {"records": records}
        head = lambda xs: self.mm(xs, "output.weight", arith)  # noqa: E731
        if logits:
            out["logits"] = head(x)
        if nll:
            out["nll"] = token_nll(x, head, tok, out.get("logits"))
        return out


# ggml CPU: the activation type each weight type's dot product uses (type_traits_cpu vec_dot_type)
VEC_DOT = {"Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "IQ4_NL": "Q8_0", "Q4_1": "Q8_1", "Q5_1": "Q8_1",
           "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
           "F16": "F16", "BF16": "BF16"}


def _block_min(t):
    """Per-block minimum m (f16 -> f32) of a Q4_1 / Q5_1 tensor: [rows, cols / 32]."""
    import numpy as np
    raw = np.asarray(t.data)
    bs = {"Q4_1": 20, "Q5_1": 24}[t.tensor_type.name]
    rows = raw.shape[0] if raw.ndim == 2 else 1
    blocks = raw.reshape(rows, -1, bs)
    m = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16)[..., 0].astype(np.float32)
    return torch.from_numpy(m)


def quant_q8_0_1(x, with_sum):
    """Activation rounding of ggml's AVX2 quantize_row_q8_0 / q8_1 (blocks of 32).  Returns the
    dequantized activations q * f16(d) and, for q8_1, the correction s - f16(d) * sum(q) per block
    (s = f16(d * sum(q)) is what multiplies the weights' block minimum)."""
    N, K = x.shape
    xb = x.reshape(N, K // 32, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    d = amax / 127.0
    iscale = torch.where(amax != 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(xb * iscale)
    d16 = d.half().float()
    xq = (q * d16).reshape(N, K)
    if not with_sum:
        return xq, None
    sq = q.sum(-1, keepdim=True)
    corr = (d * sq).half().float() - d16 * sq
    return xq, corr[..., 0]


def quant_q8_K(x):
    """Activation rounding of ggml's quantize_row_q8_K (blocks of 256): multiplier -127 / max,
    max = the value of largest magnitude (first one), q = round(x * multiplier) <= 127,
    scale = 1 / multiplier in f32."""
    N, K = x.shape
    xb = x.reshape(N, K // 256, 256)
    idx = xb.abs().argmax(-1, keepdim=True)
    mx = xb.gather(-1, idx)
    nz = mx != 0
    iscale = torch.where(nz, -127.0 / torch.where(nz, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    q = torch.round(xb * iscale).clamp(max=127)
    d = torch.where(nz, 1.0 / torch.where(nz, iscale, torch.ones_like(iscale)), torch.zeros_like(iscale))
    return (q * d).reshape(N, K)


def rms_norm_ggml(x, w, eps):
    """ggml_compute_forward_rms_norm: squares in float, summed in double, mean and scale in float."""
    D = x.shape[-1]
    mean = ((x * x).double().sum(-1, keepdim=True) / D).float()
    scale = 1.0 / torch.sqrt(mean + eps)
    return (x * scale) * w


def geglu_ggml(g, u):
    """ggml_vec_geglu_f32 with GGML_GELU_FP16: table gelu of the f16-rounded input, f16 result."""
    g16 = g.half().float()
    c, a = 0.7978845608028654, 0.044715
    gel = (0.5 * g16 * (1.0 + torch.tanh(c * g16 * (1.0 + a * g16 * g16)))).half().float()
    y = gel * u
    y = torch.where(g <= -10.0, torch.zeros_like(y), y)
    return torch.where(g >= 10.0, g * u, y)


def token_nll(x, head, tok, logits=None, chunk=1024):
    """nll[t] = -log softmax(head(x[t-1]))[tok[t]], float32 nats; nll[0] = 0."""
    T = tok.numel()
    nll = torch.zeros(T, dtype=torch.float32)
    for s in range(0, T - 1, chunk):
        e = min(T - 1, s + chunk)
        lg = logits[s:e] if logits is not None else head(x[s:e])
        nll[s + 1:e + 1] = F.cross_entropy(lg, tok[s + 1:e + 1], reduction="none")
    return nll


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_cos_sin_ggml(T, D, theta, positions=None):
    """cos, sin [T, D/2] float32 as ggml's CPU rope computes them (see module docstring)."""
    pos = torch.arange(T, dtype=torch.float32) if positions is None else positions.to(torch.float32)
    scale = torch.tensor(math.pow(float(torch.tensor(theta, dtype=torch.float32)), -2.0 / D),
                         dtype=torch.float64).to(torch.float32)
    ang = torch.empty(pos.numel(), D // 2, dtype=torch.float32)
    a = pos.clone()
    for i in range(D // 2):
        ang[:, i] = a
        a = a * scale  # float32 multiply, rounded each step like the C loop
    a64 = ang.double()
    return a64.cos().float(), a64.sin().float()


def apply_rope(x, cos, sin, style):
    """x [..., T, D] float32, cos/sin [T, D/2].  'interleaved': pairs (2i, 2i+1) (llama.cpp NORM,
    GPT-J); 'rotate_half': pairs (i, i + D/2) (NEOX, HF)."""
    if style == "interleaved":
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    if style == "rotate_half":
        h = x.shape[-1] // 2
        x0, x1 = x[..., :h], x[..., h:]
        return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    raise ValueError(f"rope style {style!r}")


def attention(q, k, v, scale, window=0, block=512, f16=False):
    """Causal GQA attention, float32.  q [Hq, T, D], k/v [Hkv, T, D] -> [T, Hq*D].
    window > 0: query t sees keys t-window+1..t (llama.cpp LLAMA_SWA_TYPE_STANDARD).
    f16: Q and the softmax rounded to f16 before their matmuls (ggml with an f16 KV cache)."""
    if f16:
        q = q.half().float()
    Hq, T, D = q.shape
    Hkv = k.shape[0]
    rep = Hq // Hkv
    qg = q.reshape(Hkv, rep, T, D)
    out = torch.empty(Hkv, rep, T, D, dtype=q.dtype)
    kt = k.transpose(-1, -2)
    for s in range(0, T, block):
        e = min(T, s + block)
        lo = max(0, s - window + 1) if window else 0
        sc = (qg[:, :, s:e] @ kt[:, None, :, lo:e]) * scale        # [Hkv, rep, e-s, e-lo]
        qi = torch.arange(s, e)[:, None]
        kj = torch.arange(lo, e)[None, :]
        mask = kj > qi
        if window:
            mask |= (qi - kj) >= window
        sc = sc.masked_fill(mask, float("-inf")).softmax(-1)
        if f16:
            sc = sc.half().float()
        out[:, :, s:e] = sc @ v[:, None, lo:e]
    return out.reshape(Hq, T, D).transpose(0, 1).reshape(T, Hq * D)


# -- weights export ---------------------------------------------------------------------------

HF_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
            "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
            "post_ffw_norm": "post_feedforward_layernorm", "ffn_gate": "mlp.gate_proj",
            "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name, arch):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4:
        base = parts[2]
        if arch == "llama" and base == "ffn_norm":
            base_hf = "post_attention_layernorm"  # Llama's pre-MLP norm has this HF name
        else:
            base_hf = HF_NAMES.get(base)
        if base_hf:
            return f"model.layers.{parts[1]}.{base_hf}.{parts[3]}"
    return gguf_name


def export_weights(model, out_path, dtype=torch.float32):
    """Write the dequantized weights with HF-like names + config in __metadata__."""
    from .safetensors_io import save_file
    c = model.config
    tensors = {}
    mapping = {}
    for n, t in model.w.items():
        if n == "output.weight" and c.tie_embeddings:
            continue
        hn = hf_name(n, c.arch)
        mapping[hn] = n
        tensors[hn] = t.to(dtype).contiguous()
    tensors = dict(sorted(tensors.items(), key=lambda kv: _export_order(kv[0])))
    meta = {"format": "pt", "model": model.name, "architecture": c.arch,
            "config": json.dumps(c.to_dict(), sort_keys=True),
            "gguf_file": model.name, "gguf_sha256": model.sha256(),
            "gguf_file_type": str(model.file_type),
            "gguf_tensor_types": json.dumps({mapping[k]: model.tensor_types.get(mapping[k], "?")
                                             for k in tensors}, sort_keys=True),
            "gguf_names": json.dumps(mapping, sort_keys=True),
            "dtype": {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[dtype],
            "values": "gguf.quants.dequantize of the GGUF tensors (exact in f32)",
            "rope_style": c.rope_style, "rope_theta": repr(c.rope_theta),
            "qk_row_order": ("GGUF (HF->GGUF permuted: per head, HF row i -> row 2i, HF row i+D/2 -> "
                             "row 2i+1; use interleaved RoPE)" if c.arch == "llama"
                             else "as in HF (rotate-half RoPE)"),
            "norm_weights": ("as stored in GGUF: Gemma's +1 already added, multiply directly"
                             if c.arch == "gemma3" else "as stored"),
            "producer": "tools/seqkv_corpus.py export-weights"}
    meta.update({k: str(v) for k, v in c.to_dict().items() if not isinstance(v, (list, tuple))})
    save_file(out_path, tensors, meta)
    return out_path


def _export_order(name):
    if name.startswith("model.layers."):
        return (1, int(name.split(".")[2]), name)
    return (0 if "embed" in name else 2, 0, name)
