"""The seqkv Python package on the bundled real KV (tiny Llama fixture and SmolLM2-135M dumps).

Run by ctest (python_pytest) with PYTHONPATH at the build's python/ directory; SEQKV_DATA_DIR
points at data/, SEQKV_CLI at the seqkv command-line tool (tests comparing with it skip without).
Lossless comparisons are bit-exact (raw bits compared as integers); lossy ones state their bound.
"""
import io
import json
import os
import struct
import subprocess
import threading

import numpy as np
import pytest

import seqkv

DATA = os.environ.get("SEQKV_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
CLI = os.environ.get("SEQKV_CLI", "")
TINY = os.path.join(DATA, "kv", "py311-textwrap.safetensors")
SMOL = os.path.join(DATA, "kv", "smollm2-gpl3.safetensors")

try:
    import torch
except ImportError:  # Debian's python3-torch is installed by scripts/install-deps.sh
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")


def load(path):
    """A KV dump: (kv uint16 bits [layers, 2, heads, T, D], token ids, nll, metadata)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", {})

    def tensor(name):
        h = header[name]
        a, b = h["data_offsets"]
        dt = {"BF16": np.uint16, "I32": np.int32, "F32": np.float32}[h["dtype"]]
        return np.frombuffer(raw, dtype=dt, count=(b - a) // np.dtype(dt).itemsize, offset=base + a).reshape(h["shape"])

    layers = 1 + max(int(k.split(".")[1]) for k in header if k.startswith("layer."))
    kv = np.stack([np.stack([tensor(f"layer.{l}.k"), tensor(f"layer.{l}.v")]) for l in range(layers)])
    ids = tensor("tokens") if "tokens" in header else None
    nll = tensor("nll") if "nll" in header else None
    return kv, ids, nll, meta


def bits(x):
    """Raw element bits of a numpy array or torch tensor, for bit-exact comparison."""
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.view(torch.int16).numpy() if x.element_size() == 2 else x.numpy()
    return np.ascontiguousarray(x).view(np.uint16 if x.dtype.itemsize == 2 else np.uint8)


@pytest.fixture(scope="module")
def tiny():
    return load(TINY)


@pytest.fixture(scope="module")
def smol():
    return load(SMOL)


def test_lossless_round_trip_is_bit_exact_and_beats_the_raw_size(tiny):
    kv, ids, _, meta = tiny
    skv = seqkv.compress(kv, dtype="bf16", token_ids=ids, rope_theta=float(meta["rope_theta"]), rope_style=meta["rope_style"])
    i = seqkv.info(skv)
    assert (i["layers"], i["kv_heads"], i["tokens"], i["head_dim"], i["dtype"]) == (kv.shape[0], kv.shape[2], kv.shape[3], kv.shape[4], "bf16")
    assert i["lossless"] and i["codec"] == "lossless (rope-aware)"
    assert i["ratio"] > 1.5  # bf16 KV of the fixture model: the CLI measures ~1.84x
    back = seqkv.decompress(skv)
    assert back.dtype == np.uint16 and back.shape == kv.shape
    assert np.array_equal(back, kv)
    assert np.array_equal(seqkv.token_ids(skv), ids)
    seqkv.verify(skv)


def test_the_library_presets_reach_the_cli_bytes(smol, tmp_path):
    """compress() with the dump's ids, nll and RoPE writes the same chunk records as `seqkv compress`."""
    if not CLI or not os.path.exists(CLI):
        pytest.skip("the seqkv CLI was not built")
    kv, ids, nll, meta = smol
    out = tmp_path / "cli.skv"
    cli = json.loads(subprocess.run([CLI, "--json", "compress", SMOL, "-o", str(out)], check=True, capture_output=True).stdout)
    skv = seqkv.compress(kv, dtype="bf16", token_ids=ids, nll=nll, rope_theta=float(meta["rope_theta"]), rope_style=meta["rope_style"])
    assert seqkv.info(skv)["kv_coded_bytes"] == cli["kv_coded_bytes"]
    # ... and each side decodes the other's file to the same KV.
    assert np.array_equal(seqkv.decompress(out.read_bytes()), kv)
    mine = tmp_path / "py.skv"
    mine.write_bytes(skv)
    st = tmp_path / "back.safetensors"
    subprocess.run([CLI, "decompress", str(mine), "-o", str(st)], check=True, capture_output=True)
    assert np.array_equal(load(str(st))[0], kv)


def test_input_forms_give_the_same_stream(tiny):
    kv, ids, _, _ = tiny
    ref = seqkv.compress(kv, dtype="bf16", token_ids=ids)
    pairs = [(kv[l, 0], kv[l, 1]) for l in range(kv.shape[0])]
    assert seqkv.compress(pairs, dtype="bf16", token_ids=ids) == ref
    # token-major memory ([layers, 2, T, heads, D], vLLM / llama.cpp style), read through strides
    nhd = np.ascontiguousarray(kv.transpose(0, 1, 3, 2, 4))
    assert seqkv.compress(nhd, dtype="bf16", layout="nhd", token_ids=ids) == ref
    # a strided view (every layer of a bigger buffer) without a copy
    big = np.zeros((kv.shape[0], 2, kv.shape[2], kv.shape[3], kv.shape[4] * 2), dtype=np.uint16)
    big[..., ::2] = kv
    assert seqkv.compress(big[..., ::2], dtype="bf16", token_ids=ids) == ref
    assert seqkv.compress(kv, dtype="bf16", token_ids=ids, threads=2) == ref  # bytes never depend on threads


@needs_torch
def test_torch_tensors_in_and_out(tiny):
    kv, ids, _, _ = tiny
    t = torch.from_numpy(kv.astype(np.int16)).view(torch.bfloat16)
    ref = seqkv.compress(kv, dtype="bf16", token_ids=ids)
    assert seqkv.compress(t, token_ids=torch.from_numpy(ids.copy())) == ref  # bf16 via DLPack, no dtype= needed
    # a Hugging Face cache: per layer (K, V) of [batch=1, heads, T, D]
    hf = [(t[l, 0].unsqueeze(0), t[l, 1].unsqueeze(0)) for l in range(t.shape[0])]
    assert seqkv.compress(hf, token_ids=ids) == ref
    back = seqkv.decompress(ref, 100, 300, as_torch=True)
    assert back.dtype == torch.bfloat16 and tuple(back.shape) == (kv.shape[0], 2, kv.shape[2], 200, kv.shape[4])
    assert torch.equal(back.view(torch.int16), t[:, :, :, 100:300].view(torch.int16))
    # f16 and f32 tensors keep their type, bit for bit
    for dt in (torch.float16, torch.float32):
        x = t[:4].to(dt)
        out = seqkv.decompress(seqkv.compress(x), as_torch=True)
        assert out.dtype == dt and torch.equal(out, x)
    with pytest.raises(seqkv.UsageError, match="holds bf16, not f16"):
        seqkv.compress(t, dtype="f16")


def test_range_decode_and_special_values():
    rng = np.random.default_rng(7)
    kv = rng.standard_normal((2, 2, 3, 700, 16)).astype(np.float32)
    kv[0, 0, 0, :8, 0] = [np.nan, -0.0, np.inf, -np.inf, 1e-45, -1e-45, np.finfo(np.float32).max, 0.0]
    kv.view(np.uint32)[1, 1, 2, 5, 3] = 0x7FC0BEEF  # a NaN payload
    skv = seqkv.compress(kv)
    assert np.array_equal(seqkv.decompress(skv).view(np.uint32), kv.view(np.uint32))
    assert np.array_equal(seqkv.decompress(skv, 250, 612).view(np.uint32), kv[:, :, :, 250:612].view(np.uint32))
    assert seqkv.decompress(skv, 5, 5).shape == (2, 2, 3, 0, 16)
    with pytest.raises(seqkv.UsageError):
        seqkv.decompress(skv, 10, 701)


def test_lossy_presets_are_small_and_within_their_error(smol):
    kv, ids, _, meta = smol
    x = kv.astype(np.uint32) << 16
    ref = x.view(np.float32)
    raw = kv.nbytes
    # (preset, least ratio, most RMS error relative to the RMS value, most absolute error)
    for name, min_ratio, max_rel, max_abs in (("kivi4", 3.0, 0.08, None), ("int8", 1.9, 0.02, None), ("abs:0.05", 2.5, 0.03, 0.05)):
        skv = seqkv.compress(kv, name, dtype="bf16", token_ids=ids, rope_theta=float(meta["rope_theta"]), rope_style=meta["rope_style"])
        assert not seqkv.info(skv)["lossless"]
        back = (seqkv.decompress(skv).astype(np.uint32) << 16).view(np.float32)
        ratio = raw / len(skv)
        rel = np.sqrt(np.mean((back - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))
        assert ratio >= min_ratio, (name, ratio)  # measured: kivi4 3.20, int8 1.94, abs:0.05 3.02
        assert rel <= max_rel, (name, rel)        # measured: 0.050, 0.010, 0.017
        if max_abs is not None:  # abs:<e> guarantees |decoded - original| <= e for every element
            assert np.abs(back - ref).max() <= max_abs, name


def test_streaming_writer_matches_compress_and_flushes_chunks(tiny):
    kv, ids, _, _ = tiny
    L, _, H, T, D = kv.shape
    ref = seqkv.compress(kv, dtype="bf16", token_ids=ids, chunk_tokens=128)
    sink = io.BytesIO()
    w = seqkv.Writer(L, H, D, "bf16", sink=sink, token_ids=True, chunk_tokens=128)
    flushed_early = False
    for t in range(T):  # one token at a time, as generation proceeds
        w.append(kv[:, :, :, t:t + 1], token_ids=ids[t:t + 1])
        if t == 200:
            flushed_early = w.chunks_written == 1 and len(sink.getvalue()) > 0
    assert w.finish() is None
    assert flushed_early
    assert sink.getvalue() == ref
    # without a sink, finish() returns the stream; appends of several tokens at once
    with seqkv.Writer(L, H, D, chunk_tokens=128, token_ids=True) as w2:
        for a in range(0, T, 100):
            w2.append(kv[:, :, :, a:a + 100], ids[a:a + 100])
        assert w2.finish() == ref
    with pytest.raises(seqkv.UsageError):
        w2.append(kv[:, :, :, :1], ids[:1])  # after finish
    with pytest.raises(seqkv.UsageError, match="token ids"):
        seqkv.Writer(L, H, D, token_ids=True).append(kv[:, :, :, :4])


def test_writer_sink_errors_propagate(tiny):
    kv, _, _, _ = tiny

    class Broken:
        def write(self, b):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # the preamble is written at once
        seqkv.Writer(kv.shape[0], kv.shape[2], kv.shape[4], sink=Broken(), chunk_tokens=64)

    class Later:
        def __init__(self):
            self.calls = 0

        def write(self, b):
            self.calls += 1
            if self.calls > 1:
                raise OSError("disk full")

    w = seqkv.Writer(kv.shape[0], kv.shape[2], kv.shape[4], sink=Later(), chunk_tokens=64)
    with pytest.raises(OSError, match="disk full"):
        w.append(kv[:, :, :, :100], layout="hnd")  # the first chunk's record
    with pytest.raises(seqkv.UsageError, match="earlier write failed"):  # never a stream with a chunk twice
        w.append(kv[:, :, :, 100:101])
    with pytest.raises(seqkv.UsageError, match="earlier write failed"):
        w.finish()

    class Short:  # a raw sink that takes at most 1000 bytes a call
        def __init__(self):
            self.data = bytearray()

        def write(self, b):
            self.data += b[:1000]
            return min(len(b), 1000)

    short = Short()
    w = seqkv.Writer(kv.shape[0], kv.shape[2], kv.shape[4], sink=short, chunk_tokens=64)
    w.append(kv[:, :, :, :100])
    w.finish()
    assert bytes(short.data) == seqkv.compress(kv[:, :, :, :100], dtype="bf16", chunk_tokens=64)


def paged_pool(kv, block, table, num_blocks, layout, rng):
    """The sequence's KV scattered into a pool of the engine layout (unused slots random)."""
    L, _, H, T, D = kv.shape
    if layout == "vllm_split":
        pools = [rng.integers(0, 65535, (2, num_blocks, block, H, D), dtype=np.uint16) for _ in range(L)]
    elif layout == "vllm_fused":
        pools = [rng.integers(0, 65535, (num_blocks, H, block, 2 * D), dtype=np.uint16) for _ in range(L)]
    else:
        pools = rng.integers(0, 65535, (2, num_blocks * block, L, H, D), dtype=np.uint16)
    for t in range(T):
        b, r = table[t // block], t % block
        for l in range(L):
            for k in range(2):
                if layout == "vllm_split":
                    pools[l][k, b, r] = kv[l, k, :, t]
                elif layout == "vllm_fused":
                    pools[l][b, :, r, k * D:(k + 1) * D] = kv[l, k, :, t]
                else:
                    pools[k, b * block + r, l] = kv[l, k, :, t]
    return pools


@pytest.mark.parametrize("layout", ["vllm_split", "vllm_fused", "page_first"])
def test_paged_layouts_compress_in_place_and_restore_into_pages(tiny, layout):
    kv, ids, _, _ = tiny
    kv = kv[:4, :, :, :300]  # 4 layers, 300 tokens: 19 blocks of 16, the last one partial
    ids = ids[:300]
    rng = np.random.default_rng(3)
    block, nb = 16, 40
    table = rng.permutation(nb)[:19].astype(np.int32)
    pools = paged_pool(kv, block, table, nb, layout, rng)
    ps = block if layout == "page_first" else 0
    skv = seqkv.compress_paged(pools, table, 300, layout=layout, page_size=ps, dtype="bf16", token_ids=ids, chunk_tokens=100)
    assert skv == seqkv.compress(kv, dtype="bf16", token_ids=ids, chunk_tokens=100)  # chunks straddle blocks
    # restore tokens [37, 290) into another pool under another block table
    table2 = rng.permutation(nb)[:16].astype(np.int32)
    dst = paged_pool(np.zeros_like(kv[:, :, :, :0]), block, table2, nb, layout, rng)
    before = [p.copy() for p in dst] if layout != "page_first" else dst.copy()
    seqkv.decompress_into(skv, dst, table2, 37, 290, layout=layout, page_size=ps)
    want = paged_pool(kv[:, :, :, 37:290], block, table2, nb, layout, np.random.default_rng(0))
    # every element of the sequence's tokens matches; every other element is untouched
    if layout == "page_first":
        dst, want, before = [dst], [want], [before]
    for d, w, b in zip(dst, want, before):
        mask = np.zeros(d.shape, dtype=bool)
        for t in range(290 - 37):
            blk, r = table2[t // block], t % block
            if layout == "vllm_split":
                mask[:, blk, r] = True
            elif layout == "vllm_fused":
                mask[blk, :, r] = True
            else:
                mask[:, blk * block + r] = True
        assert np.array_equal(d[mask], w[mask])
        assert np.array_equal(d[~mask], b[~mask])


def test_paged_errors(tiny):
    kv, _, _, _ = tiny
    kv = kv[:2, :, :, :40]
    rng = np.random.default_rng(1)
    pools = paged_pool(kv, 16, np.array([0, 1, 2]), 4, "vllm_split", rng)
    skv = seqkv.compress_paged(pools, [0, 1, 2], 40, dtype="bf16")
    with pytest.raises(seqkv.UsageError, match="block-table entry outside the pool"):
        seqkv.compress_paged(pools, [0, 1, 9], 40, dtype="bf16")
    with pytest.raises(seqkv.UsageError, match="shorter than the tokens need"):
        seqkv.compress_paged(pools, [0, 1], 40, dtype="bf16")
    ro = [p.copy() for p in pools]
    for p in ro:
        p.setflags(write=False)
    with pytest.raises(seqkv.UsageError, match="for writing"):
        seqkv.decompress_into(skv, ro, [0, 1, 2])
    with pytest.raises(seqkv.UsageError, match="holds f32, not bf16"):
        seqkv.decompress_into(skv, [p.astype(np.float32) for p in pools], [0, 1, 2])


def test_bad_streams_raise_seqkv_errors(tiny):
    kv, _, _, _ = tiny
    skv = seqkv.compress(kv[:2], dtype="bf16")
    for cut in (0, 7, 40, len(skv) // 2, len(skv) - 1):
        with pytest.raises(seqkv.FormatError):
            seqkv.decompress(skv[:cut])
    bad = bytearray(skv)
    bad[len(bad) // 2] ^= 0x10
    with pytest.raises(seqkv.FormatError) as e:  # the chunk's CRC
        seqkv.decompress(bytes(bad))
    assert isinstance(e.value, ValueError) and str(e.value).startswith("seqkv:")
    with pytest.raises(seqkv.FormatError):
        seqkv.info(b"not a seqkv stream at all")
    with pytest.raises(seqkv.UsageError, match="unknown preset"):
        seqkv.compress(kv, "zip", dtype="bf16")
    with pytest.raises(seqkv.UsageError, match="need dtype="):
        seqkv.compress(kv)  # uint16 bits without saying they are bf16
    with pytest.raises(seqkv.UsageError, match="expected"):
        seqkv.compress(kv[0], dtype="bf16")  # 4-D
    with pytest.raises(seqkv.UsageError):
        seqkv.compress(kv.astype(np.int64), dtype="bf16")
    with pytest.raises(seqkv.IOError):
        seqkv.compress_safetensors("/nonexistent/x.safetensors", "/tmp/x.skv")
    with pytest.raises(seqkv.UsageError, match="no layers"):
        seqkv.compress(np.zeros((0, 2, 2, 16, 8), dtype=np.float16))
    with pytest.raises(seqkv.UsageError, match="contiguous"):  # a reversed view of the stream's bytes
        seqkv.decompress(np.frombuffer(skv, dtype=np.uint8)[::-1])


def test_safetensors_files_round_trip(tmp_path):
    out, back = tmp_path / "a.skv", tmp_path / "a.safetensors"
    s = seqkv.compress_safetensors(SMOL, str(out))
    assert s["kv_ratio"] > 1.5  # SmolLM2 bf16 K/V: 1.537x (as `seqkv compress` reports it)
    assert s["file_bytes"] == out.stat().st_size
    assert seqkv.info(out.read_bytes())["codec"] == "lossless (rope-aware)"  # RoPE from the dump's metadata
    seqkv.decompress_safetensors(str(out), str(back), 10, 100)
    kv, ids, nll, meta = load(SMOL)
    kv2, ids2, nll2, meta2 = load(str(back))
    assert np.array_equal(kv2, kv[:, :, :, 10:100]) and np.array_equal(ids2, ids[10:100]) and np.array_equal(nll2, nll[10:100])
    assert meta2["token_range"] == f"10:100 of {kv.shape[3]}"


def llama_seq_state(kv, ids):
    """A llama.cpp sequence-state file (llama_state_seq_save_file, docs/LLAMA_STATE.md) holding
    the dump's KV as llama.cpp caches it: bf16 rows (ggml type 30), token-major, V not transposed."""
    L, _, H, T, D = kv.shape
    out = [struct.pack("<III", 0x67677371, 3, T), np.asarray(ids, dtype="<i4").tobytes(), struct.pack("<II", 1, T)]
    out += [struct.pack("<iII", t, 1, 0) for t in range(T)]
    out.append(struct.pack("<II", 0, L))
    for k in range(2):
        for l in range(L):
            out.append(struct.pack("<iQ", 30, H * D * 2))
            out.append(np.ascontiguousarray(kv[l, k].transpose(1, 0, 2)).astype("<u2").tobytes())
    return b"".join(out)


def test_llama_cpp_state_round_trip(smol):
    kv, ids, _, meta = smol
    state = llama_seq_state(kv, ids)
    skv = seqkv.compress_llama_state(state, kv_heads=kv.shape[2], head_dim=kv.shape[4],
                                     rope_theta=float(meta["rope_theta"]), rope_style=meta["rope_style"])
    assert len(state) / len(skv) > 1.4
    assert seqkv.decompress_llama_state(skv) == state  # byte for byte
    lossy = seqkv.decompress_llama_state(seqkv.compress_llama_state(state, "int8", kv_heads=kv.shape[2], head_dim=kv.shape[4]))
    assert len(lossy) == len(state) and lossy[:12 + 4 * len(ids)] == state[:12 + 4 * len(ids)]
    with pytest.raises(seqkv.FormatError):
        seqkv.compress_llama_state(state[:-3])


def test_decode_releases_the_gil(tiny):
    """Two Python threads decode at once (the codecs run without the GIL) and get the same KV."""
    kv, ids, _, _ = tiny
    skv = seqkv.compress(kv, dtype="bf16", token_ids=ids)
    results = [None, None]

    def work(i):
        results[i] = seqkv.decompress(skv)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, kv) for r in results)


def test_ml_dtypes_arrays_are_viewed_as_bits(tiny):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kv, ids, _, _ = tiny
    assert seqkv.compress(kv.view(ml_dtypes.bfloat16), token_ids=ids) == seqkv.compress(kv, dtype="bf16", token_ids=ids)


def test_load_kv_reads_the_dump_convention(smol):
    kv, ids, nll, meta = smol
    d = seqkv.load_kv(SMOL)
    assert d["dtype"] == "bf16" and np.array_equal(d["kv"], kv)
    assert np.array_equal(d["token_ids"], ids) and np.array_equal(d["nll"], nll) and d["metadata"] == meta
    with pytest.raises(seqkv.FormatError):
        seqkv.load_kv(os.path.join(DATA, "README.md"))


def test_a_mapped_stream_decodes_in_place(tiny, tmp_path):
    import mmap

    kv, ids, _, _ = tiny
    path = tmp_path / "a.skv"
    path.write_bytes(seqkv.compress(kv, dtype="bf16", token_ids=ids, chunk_tokens=64))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert np.array_equal(seqkv.decompress(m, 130, 250), kv[:, :, :, 130:250])
        assert seqkv.info(m)["chunks"] == 8
