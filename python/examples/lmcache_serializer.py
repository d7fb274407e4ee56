"""seqkv behind a KV offload path shaped like LMCache's serializer interface (lmcache.v1
storage_backend.naive_serde: `serialize(memory_obj) -> memory_obj`, `deserialize(memory_obj) ->
memory_obj`; KV chunks in the KV_2LTD format, a tensor [2, layers, tokens, kv_heads * head_dim]).
lmcache itself (0.5.6 on PyPI) does not import on this CPU-only Debian machine: it requires
cupy-cuda13x, cuda-python, transformers >= 5.4 and a newer torch than Debian's 1.13. So this
defines the two small shapes it hands over (MemoryObj, its metadata) and keeps the method
signatures; with lmcache installed, subclass its Serializer / Deserializer instead of object.
LMCache does not pass token ids to a serializer, so the lossless ratio is a little below the
one with ids (1.51x here vs 1.54x). KV: LMCache's 256-token chunks of the bundled
SmolLM2-135M dump, lossless and with the kivi4 preset.

    PYTHONPATH=build/<dir>/python /usr/bin/python3 python/examples/lmcache_serializer.py
"""
import os
import sys
from dataclasses import dataclass

import torch

import seqkv


@dataclass
class MemoryObjMetadata:  # the fields of LMCache's that a serializer reads
    shape: torch.Size
    dtype: torch.dtype
    fmt: str  # "KV_2LTD" (KV) or "BINARY" (serialized bytes)


@dataclass
class MemoryObj:
    tensor: torch.Tensor  # KV_2LTD: the KV; BINARY: uint8 bytes
    metadata: MemoryObjMetadata

    @property
    def byte_array(self):
        return self.tensor.numpy().tobytes()


class SeqkvSerializer:
    def __init__(self, kv_heads, head_dim, preset="lossless", rope_theta=0.0, rope_style="rotate_half"):
        self.heads, self.dim, self.preset, self.rope = kv_heads, head_dim, preset, (rope_theta, rope_style)

    def serialize(self, memory_obj):
        kv = memory_obj.tensor  # [2, L, T, H*D]
        two, layers, tokens, _ = kv.shape
        # [2, L, T, H, D] -> [L, 2, T, H, D]: a strided view, read in place (layout "nhd")
        view = kv.view(two, layers, tokens, self.heads, self.dim).permute(1, 0, 2, 3, 4)
        skv = seqkv.compress(view, self.preset, layout="nhd", rope_theta=self.rope[0], rope_style=self.rope[1])
        data = torch.frombuffer(bytearray(skv), dtype=torch.uint8)
        return MemoryObj(data, MemoryObjMetadata(data.shape, torch.uint8, "BINARY"))


class SeqkvDeserializer:
    def deserialize(self, memory_obj):
        kv = seqkv.decompress(memory_obj.byte_array, as_torch=True)  # [L, 2, H, T, D]
        layers, two, heads, tokens, dim = kv.shape
        out = kv.permute(1, 0, 3, 2, 4).reshape(two, layers, tokens, heads * dim)  # KV_2LTD, contiguous
        return MemoryObj(out, MemoryObjMetadata(out.shape, out.dtype, "KV_2LTD"))


data = os.environ.get("SEQKV_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
dump = seqkv.load_kv(sys.argv[1] if len(sys.argv) > 1 else os.path.join(data, "kv", "smollm2-gpl3.safetensors"))
kv = seqkv.to_torch(dump["kv"], dump["dtype"])  # [L, 2, H, T, D]
L, _, H, T, D = kv.shape
two_ltd = kv.permute(1, 0, 3, 2, 4).reshape(2, L, T, H * D)  # as LMCache holds a chunk
md = dump["metadata"]
rope = (float(md.get("rope_theta", 0)), md.get("rope_style", "rotate_half"))
ok = True
for preset in ("lossless", "kivi4"):
    ser, de = SeqkvSerializer(H, D, preset, *rope), SeqkvDeserializer()
    chunk = MemoryObj(two_ltd, MemoryObjMetadata(two_ltd.shape, two_ltd.dtype, "KV_2LTD"))
    packed = ser.serialize(chunk)
    back = de.deserialize(packed)
    raw = two_ltd.numel() * 2
    if preset == "lossless":
        good = torch.equal(back.tensor.view(torch.int16), two_ltd.view(torch.int16))
        quality = f"bit-exact {good}"
    else:
        x, y = two_ltd.float(), back.tensor.float()
        rel = float((y - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt())
        good = back.tensor.shape == two_ltd.shape and rel < 0.08  # kivi4 on this dump: ~0.05
        quality = f"RMS error {rel:.4f} of the RMS value"
    ok &= good
    print(f"{preset:8s} KV_2LTD chunk {tuple(two_ltd.shape)}: {raw} B -> {packed.tensor.numel()} B (x{raw / packed.tensor.numel():.2f}), {quality}")
print("OK" if ok else "FAIL")
sys.exit(0 if ok else 1)
