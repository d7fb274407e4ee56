"""seqkv: compress transformer KV caches as sequences.

    import seqkv
    skv = seqkv.compress(kv, preset="lossless", token_ids=ids, rope_theta=1e5)   # -> bytes
    kv2 = seqkv.decompress(skv)                     # numpy [layers, 2, heads, tokens, head_dim]
    kv2 = seqkv.decompress(skv, 100, 200, as_torch=True)  # tokens [100, 200) as a torch tensor

`kv` is one array [layers, 2, kv_heads, tokens, head_dim] (layout="nhd": [layers, 2, tokens,
kv_heads, head_dim]) or a list of (K, V) per layer, each [kv_heads, tokens, head_dim] or
[1, kv_heads, tokens, head_dim] (a Hugging Face cache's per-layer pair). Any strides. Arrays are
numpy arrays, PyTorch CPU tensors (bfloat16, float16, float32) or anything with __dlpack__; they
are read in place (buffer protocol / DLPack, no copy). numpy has no bfloat16 or fp8: pass their
bits as uint16 / uint8 with dtype="bf16" / "f8_e4m3" / "f8_e5m2" (ml_dtypes arrays are viewed so
automatically). Decoded bf16 comes back as uint16 bits in numpy, as torch.bfloat16 with as_torch.

Presets are the CLI's (`seqkv.preset_names()`); lossless is bit-exact and uses RoPE-aware
prediction when rope_theta is given. Errors raise seqkv.Error subclasses (FormatError,
ChecksumError, LimitError, UsageError, IOError, ResourceError) carrying seqkv's message;
FormatError and UsageError are also ValueErrors, IOError an OSError.
"""

from . import _seqkv
from ._seqkv import (  # noqa: F401  (re-exported)
    ChecksumError,
    Error,
    FormatError,
    IOError,
    LimitError,
    ResourceError,
    StoreError,
    UsageError,
    __version__,
    compress_llama_state,
    compress_safetensors,
    decompress_llama_state,
    decompress_safetensors,
    info,
    load_kv,
    preset_names,
    token_ids,
    verify,
)

__all__ = [
    "compress", "decompress", "info", "token_ids", "verify", "preset_names", "Writer",
    "compress_paged", "decompress_into", "compress_safetensors", "decompress_safetensors",
    "compress_llama_state", "decompress_llama_state", "load_kv", "to_torch",
    "Error", "FormatError", "ChecksumError", "LimitError", "UsageError", "IOError", "ResourceError", "StoreError",
]

_RAW_VIEWS = {"bfloat16": ("uint16", "bf16"), "float8_e4m3fn": ("uint8", "f8_e4m3"), "float8_e5m2": ("uint8", "f8_e5m2")}


def _plain(x, dtype):
    """numpy arrays of ml_dtypes' bfloat16 / float8 types as raw bits plus the dtype name."""
    name = getattr(getattr(x, "dtype", None), "name", None)
    if name in _RAW_VIEWS and hasattr(x, "view") and not hasattr(x, "__torch_function__"):
        raw, kind = _RAW_VIEWS[name]
        if dtype not in (None, "", kind):
            raise UsageError(f"kv holds {kind}, not {dtype}")
        return x.view(raw), kind
    return x, dtype or ""


def _plain_all(arrays, dtype):
    """_plain of several arrays, which must agree on the element type they declare."""
    out, kinds = [], set()
    for a in arrays:
        x, kind = _plain(a, dtype)
        out.append(x)
        if kind:
            kinds.add(kind)
    if len(kinds) > 1:
        raise UsageError(f"arrays of different element types: {sorted(kinds)}")
    return out, (kinds.pop() if kinds else (dtype or ""))


def _plain_cache(kv, dtype):
    if isinstance(kv, (list, tuple)):
        for pair in kv:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise UsageError("kv: each layer must be a (K, V) pair")
        flat, kind = _plain_all([x for pair in kv for x in pair], dtype)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(kv))], kind
    return _plain(kv, dtype)


def compress(kv, preset="lossless", *, dtype=None, layout="hnd", token_ids=None, nll=None, rope_theta=0.0,
             rope_style="rotate_half", lossy_options=(), chunk_tokens=0, metadata=None, threads=1, table=""):
    """A KV cache -> the bytes of a .skv stream.

    preset: a name from preset_names(); lossy_options: KEY=VALUE settings (docs/LOSSY.md);
    token_ids / nll: per token, stored losslessly (token ids feed the predictors: pass them);
    rope_theta / rope_style: the model's RoPE (rotate_half | neox | interleaved | gptj);
    chunk_tokens: 0 = the preset's; threads: 0 = every core (the bytes never depend on it);
    table: an expected-KV table file (`seqkv table`) for the seqkv-* presets.
    """
    kv, dtype = _plain_cache(kv, dtype)
    return _seqkv.compress(kv, preset, dtype, layout, token_ids, nll, float(rope_theta), rope_style, list(lossy_options),
                           int(chunk_tokens), dict(metadata or {}), int(threads), str(table))


def to_torch(array, dtype):
    """A decoded numpy array as a torch tensor of the stream's element type (no copy)."""
    import numpy as np
    import torch

    if dtype == "bf16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    if dtype in ("f8_e4m3", "f8_e5m2"):
        t = getattr(torch, "float8_e4m3fn" if dtype == "f8_e4m3" else "float8_e5m2", None)
        return torch.from_numpy(array).view(t) if t is not None else torch.from_numpy(array)
    return torch.from_numpy(array)


def decompress(skv, begin=0, end=None, *, threads=1, table="", as_torch=False):
    """Tokens [begin, end) of a .skv stream (default: all) as [layers, 2, kv_heads, n, head_dim].

    numpy by default (bf16 as uint16 bits, fp8 as uint8 bits); as_torch=True gives a torch tensor
    of the real element type. Only the chunks the range needs are decoded.
    """
    out = _seqkv.decompress(skv, int(begin), None if end is None else int(end), int(threads), str(table))
    if as_torch:
        return to_torch(out, info(skv)["dtype"])
    return out


def compress_paged(pools, block_table, tokens, *, layout="vllm_split", page_size=0, preset="lossless", dtype=None,
                   token_ids=None, rope_theta=0.0, rope_style="rotate_half", lossy_options=(), chunk_tokens=0,
                   metadata=None, threads=1):
    """One sequence of a paged KV pool -> .skv bytes, read page by page (no gather copy).

    layout "vllm_split": pools is a list (per layer) of [2, num_blocks, block_size, kv_heads,
    head_dim]; "vllm_fused": per layer [num_blocks, kv_heads, block_size, 2 * head_dim];
    "page_first": one array [2, pool_tokens, layers, kv_heads, head_dim] with page_size tokens a
    page. block_table[i] is the physical block of the sequence's tokens [i*bs, (i+1)*bs). The
    bytes equal compress() of the same KV held contiguously.
    """
    if layout == "page_first":
        pools, dtype = _plain(pools, dtype)
    else:
        pools, dtype = _plain_all(pools, dtype)
    return _seqkv.compress_paged(pools, block_table, int(tokens), layout, int(page_size), preset, dtype or "", token_ids,
                                 float(rope_theta), rope_style, list(lossy_options), int(chunk_tokens), dict(metadata or {}),
                                 int(threads))


def decompress_into(skv, pools, block_table, begin=0, end=None, *, layout="vllm_split", page_size=0, threads=1):
    """Decodes tokens [begin, end) into a paged pool's pages (see compress_paged for layouts):
    token begin + i goes to the sequence's token i under block_table. Nothing outside those
    tokens' elements is written; a damaged stream raises before any page is touched."""
    if layout == "page_first":
        pools, dtype = _plain(pools, None)
    else:
        pools, dtype = _plain_all(pools, None)
    # dtype: what ml_dtypes pools declare (checked against the stream's); raw integer pools take the stream's
    _seqkv.decompress_into(skv, pools, block_table, layout, int(page_size), int(begin), None if end is None else int(end), dtype,
                           int(threads))


class Writer:
    """A .skv stream written as tokens arrive (an engine appending each step's KV).

        w = seqkv.Writer(layers=30, kv_heads=3, head_dim=64, dtype="bf16", sink=open("a.skv", "wb"))
        w.append(kv_step)          # [layers, 2, kv_heads, n, head_dim] (or a list of (K, V))
        w.finish()

    Each full chunk is coded and written to sink.write() as soon as it fills; without a sink,
    finish() returns the whole stream as bytes. token_ids=True: every append passes its ids.
    """

    def __init__(self, layers, kv_heads, head_dim, dtype="bf16", preset="lossless", *, sink=None, token_ids=False,
                 chunk_tokens=0, rope_theta=0.0, rope_style="rotate_half", lossy_options=(), metadata=None, threads=1):
        self._w = _seqkv.Writer(int(layers), int(kv_heads), int(head_dim), dtype, preset, sink, bool(token_ids),
                                int(chunk_tokens), float(rope_theta), rope_style, list(lossy_options), dict(metadata or {}),
                                int(threads))
        self._finished = False
        self._dtype = {"bfloat16": "bf16", "float16": "f16", "half": "f16", "float32": "f32", "float": "f32",
                       "float8_e4m3fn": "f8_e4m3", "e4m3": "f8_e4m3", "float8_e5m2": "f8_e5m2", "e5m2": "f8_e5m2"}.get(dtype, dtype)

    def append(self, kv, token_ids=None, *, layout="hnd"):
        kv, kind = _plain_cache(kv, None)
        if kind and kind != self._dtype:
            raise UsageError(f"Writer.append: the stream holds {self._dtype}, the arrays {kind}")
        self._w.append(kv, token_ids, layout)

    def finish(self):
        """Writes the last partial chunk, the index and the trailer; returns the stream's bytes
        when there is no sink (else None)."""
        out = self._w.finish()
        self._finished = True
        return out

    @property
    def chunks_written(self):
        return self._w.chunks_written

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._finished:
            self.finish()
        return False
