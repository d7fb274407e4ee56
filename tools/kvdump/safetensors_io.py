"""Minimal safetensors reader/writer (format: 8-byte LE header length, JSON header, raw data).

Header entries: name -> {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative to
the first byte after the header; "__metadata__" is a str -> str map.  The header is padded with
spaces to a multiple of 8 bytes so every tensor starts 8-byte aligned.  Data is little-endian.
"""
import json
import struct
import sys

import torch

_TORCH_TO_ST = {
    torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32",
    torch.int64: "I64", torch.bool: "BOOL",
}
_ST_TO_TORCH = {v: k for k, v in _TORCH_TO_ST.items()}
# Same-size integer dtype used to move 16-bit floats through numpy (numpy has no bfloat16).
_RAW_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16}

assert sys.byteorder == "little", "safetensors data is little-endian; this writer assumes a LE host"


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype in _RAW_VIEW:
        t = t.view(_RAW_VIEW[t.dtype])
    return t.numpy().tobytes()


def save_file(path, tensors, metadata=None):
    """Write dict name -> tensor (insertion order kept) plus a str->str metadata map."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _TORCH_TO_ST:
            raise TypeError(f"{name}: dtype {t.dtype} not supported")
        raw = _tensor_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"__metadata__ values must be strings: {bad}")
        header["__metadata__"] = dict(metadata)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for raw in blobs:
            f.write(raw)


def read_header(path):
    """Return (header dict without __metadata__, metadata dict, data start byte)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n


def load_file(path):
    """Return (dict name -> tensor in file order, metadata dict)."""
    header, meta, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        dtype = _ST_TO_TORCH[info["dtype"]]
        buf = bytearray(data[b:e])
        if dtype in _RAW_VIEW:
            t = (torch.frombuffer(buf, dtype=_RAW_VIEW[dtype]).view(dtype) if buf
                 else torch.empty(0, dtype=dtype))
        else:
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out, meta
