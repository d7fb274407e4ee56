"""Independent reader of llama.cpp's per-sequence state (llama_state_seq_get_data), written from the
sources of the llama.cpp that llama-cpp-python 0.3.36 vendors (src/llama-context.cpp
state_seq_get_data / state_seq_write_data, src/llama-kv-cache.cpp state_write / state_write_meta /
state_write_data, src/llama-kv-cache-iswa.cpp state_write).  Standard library + torch; no
llama.cpp code.  All integers little-endian (the host's order; x86-64 and arm64 are LE).

Byte layout of llama_state_seq_get_data(ctx, dst, size, seq_id) (flags 0):

  u32  magic 0xAF143CD8                      (io_magic, llama-context.cpp)
  i32  seq_id
  then the memory module's state_write(io, seq_id, flags):
    llama_kv_cache (one section; llama_kv_cache_iswa writes two: the non-SWA "base" cache, then
    the SWA cache -- unless LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY, then only the SWA one):
      u32  n_stream                          (1 unless kv_unified = false with n_seq_max > 1)
      per stream:
        u32  cell_count                      cells holding seq_id and not SWA-masked with
                                             respect to the sequence's last position
        (nothing more for this stream if cell_count == 0)
        meta, per cell in cell order (contiguous ranges of cells):
          i32  pos
          u32  n_seq_id                      (1 here: only seq_id is written for one sequence)
          [12 bytes llama_kv_cell_ext {i32 x, i32 y, i32 tok} only for M-RoPE or per-layer-
           embedding models: has_cell_ext(); not for llama / gemma3]
          i32  seq_id x n_seq_id
        data:
          u32  v_trans                       (1 = V stored transposed: flash attention off)
          u32  n_layer                       (layers of THIS cache; iswa splits the model's)
          per layer: i32 k_type (ggml_type: 0 F32, 1 F16, 30 BF16, ...), u64 k_size_row
                     (= ggml_row_size(k_type, n_head_kv * head_dim)), then cell_count rows of
                     k_size_row bytes; a row is one cell = one token: [n_head_kv][head_dim]
          if not v_trans, per layer: i32 v_type, u64 v_size_row, cell_count rows as for K
          if v_trans, per layer: i32 v_type, u32 v_size_el (element bytes),
                     u32 n_embd_v_gqa (= n_head_kv * head_dim), then for each of the
                     n_embd_v_gqa channels j: cell_count elements (channel j of every cell)
K is stored after RoPE, exactly as the graph computed it (the cache's type: f16 by default).
For quantized cache types (q8_0, q4_0, ...) this llama.cpp also rotates K/V by a Hadamard
transform before storing them (attn_rot_k / attn_rot_v): not decoded here (F32/F16/BF16 only).
"""
import struct

import torch

MAGIC = 0xAF143CD8
GGML_TYPES = {0: ("F32", torch.float32, 4), 1: ("F16", torch.float16, 2), 30: ("BF16", torch.bfloat16, 2)}


class StateFormatError(ValueError):
    pass


class _Reader:
    def __init__(self, buf):
        self.b = memoryview(bytes(buf))
        self.o = 0

    def take(self, n):
        if self.o + n > len(self.b):
            raise StateFormatError(f"truncated state: need {n} bytes at offset {self.o}, have {len(self.b) - self.o}")
        r = self.b[self.o:self.o + n]
        self.o += n
        return r

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def i32(self):
        return struct.unpack("<i", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def done(self):
        return self.o == len(self.b)


def _tensor(raw, ggml_type, shape):
    if ggml_type not in GGML_TYPES:
        raise StateFormatError(f"ggml type {ggml_type} not decoded (F32/F16/BF16 only)")
    _, dt, _ = GGML_TYPES[ggml_type]
    raw = bytearray(raw)
    if dt in (torch.float16, torch.bfloat16):
        t = torch.frombuffer(raw, dtype=torch.int16).view(dt)
    else:
        t = torch.frombuffer(raw, dtype=dt)
    return t.reshape(shape)


def _read_cache(r, cell_ext=False, max_seq=1 << 16):
    n_stream = r.u32()
    if not 1 <= n_stream <= 4096:
        raise StateFormatError(f"implausible n_stream {n_stream}")
    streams = []
    for _ in range(n_stream):
        cell_count = r.u32()
        s = {"cell_count": cell_count, "pos": [], "seq_ids": [], "layers": []}
        streams.append(s)
        if cell_count == 0:
            continue
        for _ in range(cell_count):
            s["pos"].append(r.i32())
            n = r.u32()
            if n > max_seq:
                raise StateFormatError(f"implausible n_seq_id {n}")
            if cell_ext:
                r.take(12)
            s["seq_ids"].append([r.i32() for _ in range(n)])
        v_trans = r.u32()
        n_layer = r.u32()
        if v_trans not in (0, 1) or n_layer > 4096:
            raise StateFormatError(f"implausible v_trans {v_trans} / n_layer {n_layer}")
        s["v_trans"] = bool(v_trans)
        ks = []
        for _ in range(n_layer):
            kt = r.i32()
            row = r.u64()
            if kt not in GGML_TYPES or row % GGML_TYPES[kt][2]:
                raise StateFormatError(f"K type {kt} / row size {row} not decodable")
            n_embd = row // GGML_TYPES[kt][2]
            ks.append((GGML_TYPES[kt][0], _tensor(r.take(row * cell_count), kt, (cell_count, n_embd))))
        vs = []
        for _ in range(n_layer):
            vt = r.i32()
            if not v_trans:
                row = r.u64()
                if vt not in GGML_TYPES or row % GGML_TYPES[vt][2]:
                    raise StateFormatError(f"V type {vt} / row size {row} not decodable")
                n_embd = row // GGML_TYPES[vt][2]
                vs.append((GGML_TYPES[vt][0], _tensor(r.take(row * cell_count), vt, (cell_count, n_embd))))
            else:
                el = r.u32()
                n_embd = r.u32()
                if vt not in GGML_TYPES or el != GGML_TYPES[vt][2]:
                    raise StateFormatError(f"V type {vt} / element size {el} not decodable")
                vs.append((GGML_TYPES[vt][0], _tensor(r.take(el * n_embd * cell_count), vt, (n_embd, cell_count)).t()))
        for (kt, k), (vt, v) in zip(ks, vs):
            s["layers"].append({"k_type": kt, "v_type": vt, "k": k, "v": v})  # [cells, H_kv*D]
    return streams


def parse_seq_state(buf, cell_ext=False):
    """Parse llama_state_seq_get_data bytes -> {"seq_id", "caches": [per cache section: list of
    streams {cell_count, pos, seq_ids, v_trans, layers: [{k, v [cells, H_kv*D], k_type, v_type}]}]}.
    An iswa model (Gemma 3) gives two cache sections: base (non-SWA layers), then SWA layers."""
    r = _Reader(buf)
    magic = r.u32()
    if magic != MAGIC:
        raise StateFormatError(f"bad magic 0x{magic:08X} (want 0x{MAGIC:08X}: another llama.cpp version?)")
    seq_id = r.i32()
    caches = []
    while not r.done():
        caches.append(_read_cache(r, cell_ext))
    return {"seq_id": seq_id, "caches": caches}


def kv_by_layer(state, n_layers, n_kv_heads, head_dim, swa_layers=()):
    """Map the parsed caches to model layers -> list of (k, v) float32 [H_kv, cells, D] and the
    cell positions per layer.  One cache: layers 0..L-1.  Two caches (iswa): the first holds the
    non-SWA layers in order, the second the SWA layers in order (llama_kv_cache_iswa)."""
    caches = state["caches"]
    if len(caches) == 1:
        groups = [list(range(n_layers))]
    elif len(caches) == 2:
        swa = set(swa_layers)
        groups = [[l for l in range(n_layers) if l not in swa], [l for l in range(n_layers) if l in swa]]
    else:
        raise StateFormatError(f"{len(caches)} cache sections; expected 1 or 2")
    out = [None] * n_layers
    pos = [None] * n_layers
    for cache, ids in zip(caches, groups):
        streams = [s for s in cache if s["cell_count"]]
        if len(streams) != 1:
            raise StateFormatError(f"{len(streams)} non-empty streams; expected 1")
        s = streams[0]
        if len(s["layers"]) != len(ids):
            raise StateFormatError(f"cache holds {len(s['layers'])} layers; expected {len(ids)}")
        for l, lay in zip(ids, s["layers"]):
            def heads(x):
                if x.shape[1] != n_kv_heads * head_dim:
                    raise StateFormatError(f"layer {l}: row of {x.shape[1]} values, expected {n_kv_heads}x{head_dim}")
                return x.float().reshape(x.shape[0], n_kv_heads, head_dim).transpose(0, 1).contiguous()
            out[l] = (heads(lay["k"]), heads(lay["v"]))
            pos[l] = list(s["pos"])
    return out, pos
