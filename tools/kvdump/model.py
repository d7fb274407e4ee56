"""A small Llama-architecture decoder: RoPE (rotate-half), grouped-query attention, RMSNorm,
SwiGLU MLP, tied input/output embeddings.  Weight names follow Hugging Face LlamaForCausalLM.

rope(x, pos)[i]        = x[i]        * cos(pos * f_i) - x[i + D/2] * sin(pos * f_i)
rope(x, pos)[i + D/2]  = x[i + D/2]  * cos(pos * f_i) + x[i]       * sin(pos * f_i)
with f_i = rope_theta ** (-2i / D), i in [0, D/2), computed in float32 (HF Llama convention).
"""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class LlamaConfig:
    vocab_size: int = 1024
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64
    ffn_hidden: int = 384
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 512
    tie_embeddings: bool = True

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin of shape [T, D/2] in float32 for integer positions [T]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(positions.to(torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x: [..., T, D] float32; cos/sin: [T, D/2].  Rotate-half (NeoX/HF) pairing (i, i + D/2)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)

    def forward(self, x, cos, sin, record=None):
        c = self.c
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
        k_pre = self.k_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k_pre, cos, sin)
        if record is not None:
            record.update(q=q.detach(), k=k.detach(), v=v.detach(), k_prerope=k_pre.detach())
        rep = c.n_heads // c.n_kv_heads
        kr = k.repeat_interleave(rep, dim=1)
        vr = v.repeat_interleave(rep, dim=1)
        att = (q @ kr.transpose(-1, -2)) * (1.0 / math.sqrt(c.head_dim))
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ vr).transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.d_model, c.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(c.d_model, c.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(c.ffn_hidden, c.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.d_model, c.norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, record=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, record)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)


class TinyLlama(nn.Module):
    def __init__(self, c):
        super().__init__()
        assert c.tie_embeddings, "only tied embeddings are implemented"
        assert c.n_heads % c.n_kv_heads == 0 and c.head_dim % 2 == 0
        self.config = c
        self.model = Inner(c)

    def init_weights(self, generator):
        std = 0.02
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers), generator=generator)
                else:
                    p.normal_(0.0, std, generator=generator)

    def forward(self, tokens, records=None):
        """tokens [B, T] int64 -> logits [B, T, V] float32.  records: list to receive per-layer
        dicts of q, k, v, k_prerope, each [B, H, T, D] float32 (k, q after RoPE)."""
        c = self.config
        T = tokens.shape[1]
        cos, sin = rope_cos_sin(torch.arange(T), c.head_dim, c.rope_theta)
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            rec = None
            if records is not None:
                rec = {}
                records.append(rec)
            x = layer(x, cos, sin, rec)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.t()


def n_params(model):
    return sum(p.numel() for p in model.parameters())
