// The `seqkv._seqkv` extension module: the library's compress / decompress / info, its files
// (safetensors, llama.cpp states), paged engine layouts and the streaming writer, for Python.
// Arrays come in through the buffer protocol (numpy, memoryview) or DLPack (PyTorch, and any
// object with __dlpack__), without a copy; the pure-Python layer (seqkv/__init__.py) adds the
// dtype conveniences. Every seqkv error becomes the matching seqkv.* exception with its message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <seqkv/convert/llama_skv.hpp>
#include <seqkv/core/chunk_view.hpp>
#include <seqkv/convert/skv_file.hpp>
#include <seqkv/io/expected_kv_table.hpp>
#include <seqkv/io/mapped_file.hpp>
#include <seqkv/paged.hpp>
#include <seqkv/preset.hpp>
#include <seqkv/seqkv.hpp>
#include <seqkv/version.hpp>

#include <cstring>
#include <iomanip>
#include <locale>
#include <sstream>
#include <memory>

namespace py = pybind11;
using namespace seqkv;

namespace {

// ---------------------------------------------------------------------------------------------
// DLPack (the stable v0.x ABI every producer exports through __dlpack__): only what a CPU
// consumer reads. Layout as the DLPack specification defines it (dlpack.h).
struct dl_device {
    std::int32_t device_type;  // 1: CPU
    std::int32_t device_id;
};
struct dl_data_type {
    std::uint8_t code;  // 0 int, 1 uint, 2 float, 4 bfloat
    std::uint8_t bits;
    std::uint16_t lanes;
};
struct dl_tensor {
    void* data;
    dl_device device;
    std::int32_t ndim;
    dl_data_type dtype;
    std::int64_t* shape;
    std::int64_t* strides;  // in elements; null: compact row-major
    std::uint64_t byte_offset;
};
struct dl_managed_tensor {
    dl_tensor dl;
    void* manager_ctx;
    void (*deleter)(dl_managed_tensor*);
};

/// An array borrowed from Python: its elements stay valid while `owner` lives.
struct array_ref {
    std::uint8_t* data = nullptr;
    dtype type = dtype::u8;
    bool is_float = false;           // the element type is a float type (else raw integers of type's size)
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;  // in elements
    std::shared_ptr<void> owner;
};

struct buffer_owner {
    Py_buffer view{};
    ~buffer_owner() {
        py::gil_scoped_acquire gil;
        PyBuffer_Release(&view);
    }
};

struct dlpack_owner {
    dl_managed_tensor* t = nullptr;
    ~dlpack_owner() {
        if (t && t->deleter) {
            py::gil_scoped_acquire gil;
            t->deleter(t);
        }
    }
};

std::optional<dtype> dtype_by_name(const std::string& s) {
    if (s.empty()) return std::nullopt;
    if (s == "bf16" || s == "bfloat16") return dtype::bf16;
    if (s == "f16" || s == "float16" || s == "half") return dtype::f16;
    if (s == "f32" || s == "float32" || s == "float") return dtype::f32;
    if (s == "f8_e4m3" || s == "float8_e4m3fn" || s == "e4m3") return dtype::f8_e4m3;
    if (s == "f8_e5m2" || s == "float8_e5m2" || s == "e5m2") return dtype::f8_e5m2;
    throw usage_error("unknown dtype '" + s + "' (bf16, f16, f32, f8_e4m3, f8_e5m2)");
}

std::string kv_dtype_name(dtype t) {
    switch (t) {
        case dtype::bf16: return "bf16";
        case dtype::f16: return "f16";
        case dtype::f32: return "f32";
        case dtype::f8_e4m3: return "f8_e4m3";
        case dtype::f8_e5m2: return "f8_e5m2";
        default: return std::string(seqkv::dtype_name(t));
    }
}

/// The element type of a buffer-protocol format string (native little-endian only).
std::optional<std::pair<dtype, bool>> dtype_of_format(std::string f, std::size_t itemsize) {
    if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@')) f = f.substr(1);
    if (f == "e" && itemsize == 2) return std::pair{dtype::f16, true};
    if (f == "f" && itemsize == 4) return std::pair{dtype::f32, true};
    if ((f == "H" || f == "h") && itemsize == 2) return std::pair{dtype::u16, false};
    if ((f == "B" || f == "b" || f == "c") && itemsize == 1) return std::pair{dtype::u8, false};
    return std::nullopt;
}

/// Borrows `obj`'s elements: buffer protocol first (numpy, memoryview), then __dlpack__ (PyTorch).
array_ref borrow(const py::handle& obj, bool writable, const char* what) {
    array_ref a;
    if (PyObject_CheckBuffer(obj.ptr())) {
        auto o = std::make_shared<buffer_owner>();
        int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj.ptr(), &o->view, flags) != 0) {
            PyErr_Clear();
            throw usage_error(std::string(what) + ": cannot borrow the array's buffer" + (writable ? " for writing (read-only?)" : ""));
        }
        const auto& v = o->view;
        const auto t = dtype_of_format(v.format ? v.format : "B", std::size_t(v.itemsize));
        if (!t) throw usage_error(std::string(what) + ": element format '" + (v.format ? v.format : "?") +
                                  "' is not a KV type (float16, float32, or uint16/uint8 raw bits with dtype=)");
        a.type = t->first;
        a.is_float = t->second;
        a.data = static_cast<std::uint8_t*>(v.buf);
        for (int i = 0; i < v.ndim; ++i) {
            a.shape.push_back(v.shape[i]);
            if (v.strides[i] % v.itemsize != 0) throw usage_error(std::string(what) + ": strides are not whole elements");
            a.strides.push_back(v.strides[i] / v.itemsize);
        }
        a.owner = std::move(o);
        return a;
    }
    if (!py::hasattr(obj, "__dlpack__"))
        throw usage_error(std::string(what) + ": expected an array (numpy, a PyTorch tensor, or anything with __dlpack__)");
    py::object cap = obj.attr("__dlpack__")();
    auto* raw = PyCapsule_GetPointer(cap.ptr(), "dltensor");
    if (!raw) {
        PyErr_Clear();
        throw usage_error(std::string(what) + ": __dlpack__ did not return a DLPack capsule");
    }
    auto o = std::make_shared<dlpack_owner>();
    o->t = static_cast<dl_managed_tensor*>(raw);
    PyCapsule_SetName(cap.ptr(), "used_dltensor");  // we own it now: the capsule must not free it
    const dl_tensor& t = o->t->dl;
    if (t.device.device_type != 1) throw usage_error(std::string(what) + ": the tensor is not in CPU memory (call .cpu() first)");
    if (t.dtype.lanes != 1) throw usage_error(std::string(what) + ": vector element types are not supported");
    const auto code = t.dtype.code, bits = t.dtype.bits;
    if (code == 4 && bits == 16) a.type = dtype::bf16, a.is_float = true;
    else if (code == 2 && bits == 16) a.type = dtype::f16, a.is_float = true;
    else if (code == 2 && bits == 32) a.type = dtype::f32, a.is_float = true;
    else if ((code == 0 || code == 1) && bits == 16) a.type = dtype::u16;
    else if ((code == 0 || code == 1) && bits == 8) a.type = dtype::u8;
    else
        throw usage_error(std::string(what) + ": element type (DLPack code " + std::to_string(code) + ", " + std::to_string(bits) +
                          " bits) is not a KV type");
    a.data = static_cast<std::uint8_t*>(t.data) + t.byte_offset;
    std::int64_t compact = 1;
    a.shape.assign(t.shape, t.shape + t.ndim);
    a.strides.resize(std::size_t(t.ndim));
    for (int i = t.ndim - 1; i >= 0; --i) {
        a.strides[std::size_t(i)] = t.strides ? t.strides[i] : compact;
        compact *= t.shape[i];
    }
    a.owner = std::move(o);
    return a;
}

/// The KV element type of an array, with the caller's dtype= for raw integer bits.
dtype kv_type_of(const array_ref& a, const std::optional<dtype>& requested, const char* what) {
    if (a.is_float) {
        if (requested && *requested != a.type)
            throw usage_error(std::string(what) + ": the array holds " + kv_dtype_name(a.type) + ", not " + kv_dtype_name(*requested));
        return a.type;
    }
    if (!requested)
        throw usage_error(std::string(what) + ": integer elements need dtype= (e.g. dtype='bf16' for uint16 bits)");
    if (dtype_size(*requested) != dtype_size(a.type))
        throw usage_error(std::string(what) + ": " + std::to_string(dtype_size(a.type)) + "-byte elements cannot hold " +
                          kv_dtype_name(*requested));
    return *requested;
}

std::uint32_t to_u32(std::int64_t v, const char* what) {
    if (v < 0 || v > std::int64_t(UINT32_MAX)) throw usage_error(std::string(what) + " out of range");
    return std::uint32_t(v);
}

// ---------------------------------------------------------------------------------------------
/// A cache borrowed from Python and the views over it.
struct borrowed_cache {
    kv_cache_view view;
    std::vector<std::shared_ptr<void>> owners;
};

/// layout: "hnd" — tensors are [heads, tokens, head_dim] (HF, safetensors); "nhd" — [tokens,
/// heads, head_dim] (vLLM, llama.cpp). Accepts one array [layers, 2, a, b, head_dim] or a sequence
/// of (K, V) per layer, each [a, b, head_dim] or [1, a, b, head_dim] (a batch of one).
borrowed_cache borrow_cache(const py::handle& kv, const std::string& layout, const std::optional<dtype>& requested) {
    require_usage(layout == "hnd" || layout == "nhd", "layout must be 'hnd' ([heads, tokens, head_dim]) or 'nhd' ([tokens, heads, head_dim])");
    const bool nhd = layout == "nhd";
    borrowed_cache c;
    auto tensor = [&](std::uint8_t* base, dtype t, std::int64_t a, std::int64_t b, std::int64_t d, std::int64_t sa, std::int64_t sb,
                      std::int64_t sd) {
        kv_tensor_view v;
        v.data = base;
        v.type = t;
        v.heads = to_u32(nhd ? b : a, "kv_heads");
        v.tokens = std::uint64_t(nhd ? a : b);
        v.head_dim = to_u32(d, "head_dim");
        v.strides = nhd ? kv_strides{sb, sa, sd} : kv_strides{sa, sb, sd};
        return v;
    };
    if (py::isinstance<py::list>(kv) || py::isinstance<py::tuple>(kv)) {
        const auto layers = py::reinterpret_borrow<py::sequence>(kv);
        require_usage(layers.size() > 0, "kv: an empty list of layers");
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const py::sequence pair = layers[l];
            require_usage(pair.size() == 2, "kv: each layer must be a (K, V) pair");
            for (int k = 0; k < 2; ++k) {
                array_ref a = borrow(pair[std::size_t(k)], false, k == 0 ? "K" : "V");
                const dtype t = kv_type_of(a, requested, "kv");
                std::size_t off = 0;
                if (a.shape.size() == 4) {
                    require_usage(a.shape[0] == 1, "kv: a 4-D layer tensor must have a batch of one ([1, ...])");
                    off = 1;
                }
                require_usage(a.shape.size() - off == 3, "kv: each K and V must be 3-D ([heads, tokens, head_dim] or with layout='nhd' [tokens, heads, head_dim])");
                auto v = tensor(a.data, t, a.shape[off], a.shape[off + 1], a.shape[off + 2], a.strides[off], a.strides[off + 1],
                                a.strides[off + 2]);
                (k == 0 ? c.view.keys : c.view.values).push_back(v);
                c.owners.push_back(a.owner);
            }
        }
    } else {
        array_ref a = borrow(kv, false, "kv");
        const dtype t = kv_type_of(a, requested, "kv");
        require_usage(a.shape.size() == 5 && a.shape[1] == 2,
                      "kv: expected [layers, 2, heads, tokens, head_dim] (layout='nhd': [layers, 2, tokens, heads, head_dim]) or a list of (K, V)");
        require_usage(a.shape[0] > 0, "kv: no layers");
        for (std::int64_t l = 0; l < a.shape[0]; ++l)
            for (std::int64_t k = 0; k < 2; ++k) {
                auto* base = a.data + (l * a.strides[0] + k * a.strides[1]) * std::int64_t(dtype_size(t));
                auto v = tensor(base, t, a.shape[2], a.shape[3], a.shape[4], a.strides[2], a.strides[3], a.strides[4]);
                (k == 0 ? c.view.keys : c.view.values).push_back(v);
            }
        c.owners.push_back(a.owner);
    }
    const auto& k0 = c.view.keys.front();
    c.view.layout = {to_u32(std::int64_t(c.view.keys.size()), "layers"), k0.heads, k0.head_dim, k0.tokens, k0.type};
    c.view.validate();
    return c;
}

std::vector<std::int32_t> int32_list(const py::handle& h, const char* what) {
    if (h.is_none()) return {};
    auto arr = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(h);
    if (!arr) {
        PyErr_Clear();
        throw usage_error(std::string(what) + ": expected a sequence of integers");
    }
    std::vector<std::int32_t> out;
    out.reserve(std::size_t(arr.size()));
    for (py::ssize_t i = 0; i < arr.size(); ++i) {
        const std::int64_t v = arr.data()[i];
        if (v < INT32_MIN || v > INT32_MAX) throw usage_error(std::string(what) + ": value outside int32");
        out.push_back(std::int32_t(v));
    }
    return out;
}

std::vector<float> float_list(const py::handle& h) {
    if (h.is_none()) return {};
    auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(h);
    if (!arr) {
        PyErr_Clear();
        throw usage_error("nll: expected a sequence of numbers");
    }
    return std::vector<float>(arr.data(), arr.data() + arr.size());
}

/// The bytes of a buffer (bytes, bytearray, memoryview, mmap, numpy); C-contiguous only.
std::span<const std::uint8_t> bytes_of(const py::buffer& b, py::buffer_info& keep) {
    Py_buffer* view = new Py_buffer();
    if (PyObject_GetBuffer(b.ptr(), view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        delete view;
        PyErr_Clear();
        throw usage_error("expected a contiguous bytes-like object (bytes, bytearray, mmap, a C-contiguous array)");
    }
    keep = py::buffer_info(view, true);  // releases the view
    return {static_cast<const std::uint8_t*>(view->buf), std::size_t(view->len)};
}

py::bytes to_bytes(const byte_vector& v) { return py::bytes(reinterpret_cast<const char*>(v.data()), v.size()); }

/// The expected-KV table at `path` (a safetensors file `seqkv table` wrote), or null.
std::shared_ptr<const predict::expected_kv_table> load_table(const std::string& path) {
    if (path.empty()) return nullptr;
    return std::make_shared<const predict::expected_kv_table>(io::parse_expected_kv_table(io::safetensors_file::load(path)));
}

resource_provider resources_for(const std::string& table) {
    resource_provider r;
    if (auto t = load_table(table)) add_expected_kv_table(r, t);
    return r;
}

/// compress_options for a preset: the model's RoPE from the arguments (or metadata), lossy
/// KEY=VALUE settings, chunk size, threads.
compress_options options_for(const std::string& name, std::uint32_t head_dim, double rope_theta, const std::string& rope_style,
                             const std::vector<std::string>& lossy_options, std::uint32_t chunk_tokens, unsigned threads,
                             const std::string& table, const std::map<std::string, std::string>& metadata) {
    model_params m;
    m.head_dim = head_dim;
    m.rope_theta = rope_theta;
    m.rope_style = rope_style;
    preset_inputs in;
    in.options = lossy_options;
    in.chunk_tokens = chunk_tokens;
    in.threads = threads;
    in.table = load_table(table);
    auto o = preset(name, m, in);
    o.metadata = metadata;
    if (rope_theta > 0 && !o.metadata.contains("rope_theta")) {
        std::ostringstream s;
        s.imbue(std::locale::classic());
        s << std::setprecision(17) << rope_theta;
        o.metadata["rope_theta"] = s.str();
        o.metadata["rope_style"] = rope_style;
    }
    return o;
}

/// A decoded buffer as a numpy array [layers, 2, heads, tokens, head_dim] that owns the bytes
/// (bf16 as uint16 bits, fp8 as uint8 bits: numpy has neither type).
py::array to_numpy(chunk_buffer&& b) {
    auto* owned = new chunk_buffer(std::move(b));
    py::capsule free_it(owned, [](void* p) { delete static_cast<chunk_buffer*>(p); });
    const auto& L = owned->layout;
    py::dtype dt = L.type == dtype::f32 ? py::dtype::of<float>()
                   : L.type == dtype::f16 ? py::dtype("float16")
                   : dtype_size(L.type) == 2 ? py::dtype::of<std::uint16_t>()
                                             : py::dtype::of<std::uint8_t>();
    const std::vector<py::ssize_t> shape{py::ssize_t(L.layers), 2, py::ssize_t(L.kv_heads), py::ssize_t(L.tokens), py::ssize_t(L.head_dim)};
    return py::array(dt, shape, owned->bytes.data(), free_it);
}

py::dict info_of(std::span<const std::uint8_t> skv) {
    format::stream_reader r(skv);
    const auto& h = r.header();
    const kv_layout L = r.layout();
    py::dict d;
    d["format_version"] = r.version();
    d["layers"] = L.layers;
    d["kv_heads"] = L.kv_heads;
    d["head_dim"] = L.head_dim;
    d["tokens"] = L.tokens;
    d["dtype"] = kv_dtype_name(L.type);
    d["codec"] = describe_codec(h.codec);
    d["lossless"] = h.codec.codec_id == static_cast<std::uint16_t>(codec_family::lossless);
    d["chunk_tokens"] = h.chunk_tokens;
    d["chunks"] = r.chunks().size();
    d["has_token_ids"] = h.has_token_ids;
    d["has_nll"] = h.has_nll;
    d["metadata"] = h.metadata;
    py::list res;
    for (const auto& ref : h.resources) res.append(describe(ref));
    d["resources"] = res;
    py::list att;
    for (const auto& a : r.attachments()) att.append(a.name);
    d["attachments"] = att;
    std::uint64_t coded = 0;
    for (const auto& c : r.chunks()) coded += c.record_bytes;
    d["kv_coded_bytes"] = coded;  // chunk records (KV payloads with their ids / nll), as `seqkv info` counts them
    d["kv_bytes"] = L.total_bytes();
    d["file_bytes"] = skv.size();
    d["ratio"] = skv.empty() ? 0.0 : double(L.total_bytes()) / double(skv.size());
    return d;
}

// ---------------------------------------------------------------------------------------------
/// Paged pools: vllm_split / vllm_fused take one array per layer, page_first one array.
struct borrowed_pages {
    paged_kv_view view;
    std::vector<std::int32_t> table;
    std::vector<std::shared_ptr<void>> owners;
};

/// layout "vllm_split": pools = one array per layer [2, num_blocks, block_size, kv_heads, head_dim];
/// "vllm_fused": one per layer [num_blocks, kv_heads, block_size, 2 * head_dim]; "page_first": one
/// array [2, pool_tokens, layers, kv_heads, head_dim] cut into pages of page_size tokens. Any
/// strides; the pages are read (or written) where they are.
borrowed_pages borrow_pages(const py::handle& pools, const py::handle& block_table, std::uint64_t tokens, const std::string& layout,
                            std::uint32_t page_size, const std::optional<dtype>& requested, bool writable) {
    borrowed_pages p;
    p.table = int32_list(block_table, "block_table");
    auto& v = p.view;
    auto set_geometry = [&](std::uint32_t layers, std::int64_t heads, std::int64_t dim, dtype t, std::int64_t blocks, std::int64_t bs) {
        v.layout = {layers, to_u32(heads, "kv_heads"), to_u32(dim, "head_dim"), tokens, t};
        v.block_size = to_u32(bs, "block_size");
        v.num_blocks = std::uint64_t(blocks);
    };
    if (layout == "page_first") {
        array_ref a = borrow(pools, writable, "pool");
        const dtype t = kv_type_of(a, requested, "pool");
        require_usage(a.shape.size() == 5 && a.shape[0] == 2, "page_first: the pool must be [2, pool_tokens, layers, kv_heads, head_dim]");
        require_usage(page_size > 0 && a.shape[1] % page_size == 0, "page_first: page_size must divide pool_tokens");
        set_geometry(to_u32(a.shape[2], "layers"), a.shape[3], a.shape[4], t, a.shape[1] / page_size, page_size);
        const std::int64_t es = std::int64_t(dtype_size(t));
        v.k_strides = v.v_strides = {a.strides[1] * page_size, a.strides[1], a.strides[3], a.strides[4]};
        for (std::int64_t l = 0; l < a.shape[2]; ++l) {
            v.keys.push_back(a.data + l * a.strides[2] * es);
            v.values.push_back(a.data + (a.strides[0] + l * a.strides[2]) * es);
        }
        p.owners.push_back(a.owner);
    } else if (layout == "vllm_split" || layout == "vllm_fused") {
        const bool fused = layout == "vllm_fused";
        require_usage(py::isinstance<py::sequence>(pools) && !py::isinstance<py::str>(pools) && !PyObject_CheckBuffer(pools.ptr()) &&
                          !py::hasattr(pools, "__dlpack__"),
                      (layout + ": pools must be a list with one array per layer").c_str());
        const auto layers = py::reinterpret_borrow<py::sequence>(pools);
        require_usage(layers.size() > 0, (layout + ": no layers").c_str());
        for (std::size_t l = 0; l < layers.size(); ++l) {
            array_ref a = borrow(layers[l], writable, "pool");
            const dtype t = kv_type_of(a, requested, "pool");
            const std::int64_t es = std::int64_t(dtype_size(t));
            if (!fused) {
                require_usage(a.shape.size() == 5 && a.shape[0] == 2, "vllm_split: each layer must be [2, num_blocks, block_size, kv_heads, head_dim]");
                if (l == 0) set_geometry(to_u32(std::int64_t(layers.size()), "layers"), a.shape[3], a.shape[4], t, a.shape[1], a.shape[2]);
                const paged_strides s{a.strides[1], a.strides[2], a.strides[3], a.strides[4]};
                require_usage(l == 0 || (s.block == v.k_strides.block && s.token == v.k_strides.token && s.head == v.k_strides.head &&
                                         s.channel == v.k_strides.channel),
                              "vllm_split: every layer's pool must have the same strides");
                v.k_strides = v.v_strides = s;
                v.keys.push_back(a.data);
                v.values.push_back(a.data + a.strides[0] * es);
                require_usage(std::int64_t(v.num_blocks) == a.shape[1] && v.block_size == a.shape[2] && v.layout.kv_heads == a.shape[3] &&
                                  v.layout.head_dim == a.shape[4] && v.layout.type == t,
                              "vllm_split: every layer's pool must have the same shape and dtype");
            } else {
                require_usage(a.shape.size() == 4 && a.shape[3] % 2 == 0,
                              "vllm_fused: each layer must be [num_blocks, kv_heads, block_size, 2 * head_dim]");
                if (l == 0) set_geometry(to_u32(std::int64_t(layers.size()), "layers"), a.shape[1], a.shape[3] / 2, t, a.shape[0], a.shape[2]);
                const paged_strides s{a.strides[0], a.strides[2], a.strides[1], a.strides[3]};
                require_usage(l == 0 || (s.block == v.k_strides.block && s.token == v.k_strides.token && s.head == v.k_strides.head &&
                                         s.channel == v.k_strides.channel),
                              "vllm_fused: every layer's pool must have the same strides");
                v.k_strides = v.v_strides = s;
                v.keys.push_back(a.data);
                v.values.push_back(a.data + (a.shape[3] / 2) * a.strides[3] * es);
                require_usage(std::int64_t(v.num_blocks) == a.shape[0] && v.block_size == a.shape[2] && v.layout.kv_heads == a.shape[1] &&
                                  2 * std::int64_t(v.layout.head_dim) == a.shape[3] && v.layout.type == t,
                              "vllm_fused: every layer's pool must have the same shape and dtype");
            }
            p.owners.push_back(a.owner);
        }
    } else {
        throw usage_error("paged layout must be vllm_split, vllm_fused or page_first");
    }
    v.block_table = p.table;
    v.validate();
    return p;
}

/// The streaming writer for Python: chunks go to `sink.write(bytes)` as they fill (or are
/// collected and returned by finish() when there is no sink).
class py_writer {
public:
    py_writer(std::uint32_t layers, std::uint32_t kv_heads, std::uint32_t head_dim, const std::string& dtype_s, const std::string& preset_name,
              py::object sink, bool token_ids, std::uint32_t chunk_tokens, double rope_theta, const std::string& rope_style,
              const std::vector<std::string>& lossy_options, const std::map<std::string, std::string>& metadata, unsigned threads)
        : sink_(std::move(sink)) {
        const auto t = dtype_by_name(dtype_s.empty() ? "bf16" : dtype_s);
        require_usage(layers > 0 && kv_heads > 0 && head_dim > 0, "Writer: layers, kv_heads and head_dim must be positive");
        opts_ = options_for(preset_name, head_dim, rope_theta, rope_style, lossy_options, chunk_tokens, threads, "", metadata);
        require_usage(sink_.is_none() || py::hasattr(sink_, "write"), "Writer: sink must have a write(bytes) method");
        format::preamble p;
        p.layout = {layers, kv_heads, head_dim, 0, *t};
        apply_options(p, opts_);
        p.has_token_ids = token_ids;
        p.metadata = opts_.metadata;
        auto codec = make_codec(opts_.codec, opts_.resources, executor_for(opts_.threads));
        writer_ = std::make_unique<format::stream_writer>(
            [this](std::span<const std::uint8_t> b) {
                if (sink_.is_none()) {
                    out_.insert(out_.end(), b.begin(), b.end());
                    return;
                }
                // A raw sink may write less than it was given (io.RawIOBase): write the rest.
                std::size_t done = 0;
                while (done < b.size()) {
                    py::object n = sink_.attr("write")(py::bytes(reinterpret_cast<const char*>(b.data() + done), b.size() - done));
                    if (n.is_none() || !py::isinstance<py::int_>(n)) return;  // a writer that returns nothing took it all
                    const auto k = n.cast<long long>();
                    if (k <= 0 || std::size_t(k) > b.size() - done) throw io_error("Writer: sink.write() wrote " + std::to_string(k) + " bytes");
                    done += std::size_t(k);
                }
            },
            p, std::move(codec), writer_options_for(opts_));
    }

    void append(const py::handle& kv, const py::handle& token_ids, const std::string& layout) {
        require_usage(!failed_, "Writer: an earlier write failed; the stream is incomplete (start a new Writer)");
        const auto& L = writer_->header().layout;
        const auto cache = borrow_cache(kv, layout, L.type);
        const auto ids = int32_list(token_ids, "token_ids");
        require_usage(writer_->header().has_token_ids ? ids.size() == cache.view.layout.tokens : ids.empty(),
                      writer_->header().has_token_ids ? "Writer.append: this stream stores token ids: one per appended token"
                                                      : "Writer.append: token ids given to a stream made with token_ids=False");
        guarded([&] { writer_->append(cache.view, 0, cache.view.layout.tokens, ids); });  // the sink needs the GIL: it is held
    }

    py::object finish() {
        require_usage(!failed_, "Writer: an earlier write failed; the stream is incomplete (start a new Writer)");
        guarded([&] { writer_->finish(); });
        if (!sink_.is_none()) return py::none();
        return to_bytes(out_);
    }

    std::uint64_t chunks() const { return writer_->chunks().size(); }

private:
    /// Runs a writer call; after any failure (a sink error mid-chunk) the writer is unusable.
    template <class F>
    void guarded(F&& f) {
        try {
            f();
        } catch (...) {
            failed_ = true;
            throw;
        }
    }

    py::object sink_;
    byte_vector out_;
    compress_options opts_;  // the writer keeps a pointer to its resources
    std::unique_ptr<format::stream_writer> writer_;
    bool failed_ = false;
};

}  // namespace

PYBIND11_MODULE(_seqkv, m) {
    m.doc() = "seqkv: compress transformer KV caches (C++ extension; use the seqkv package)";
    m.attr("__version__") = SEQKV_VERSION_STRING;

    // Exceptions: seqkv.Error and its kinds, also catchable as the matching builtin.
    auto make_exc = [&](const char* name, std::initializer_list<PyObject*> bases) {
        py::tuple b(bases.size());
        std::size_t i = 0;
        for (auto* x : bases) b[i++] = py::reinterpret_borrow<py::object>(x);
        const std::string full = std::string("seqkv.") + name;
        PyObject* e = PyErr_NewException(full.c_str(), b.ptr(), nullptr);
        if (!e) throw py::error_already_set();
        m.add_object(name, py::reinterpret_steal<py::object>(e));
        Py_INCREF(e);  // the translator's own reference: the type outlives a deleted module attribute
        return e;
    };
    static PyObject* exc_error = make_exc("Error", {PyExc_RuntimeError});
    static PyObject* exc_format = make_exc("FormatError", {exc_error, PyExc_ValueError});
    static PyObject* exc_checksum = make_exc("ChecksumError", {exc_format});
    static PyObject* exc_limit = make_exc("LimitError", {exc_format});
    static PyObject* exc_usage = make_exc("UsageError", {exc_error, PyExc_ValueError});
    static PyObject* exc_io = make_exc("IOError", {exc_error, PyExc_OSError});
    static PyObject* exc_resource = make_exc("ResourceError", {exc_error});
    static PyObject* exc_store = make_exc("StoreError", {exc_error});
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const checksum_error& e) {
            PyErr_SetString(exc_checksum, e.what());
        } catch (const limit_error& e) {
            PyErr_SetString(exc_limit, e.what());
        } catch (const format_error& e) {
            PyErr_SetString(exc_format, e.what());
        } catch (const usage_error& e) {
            PyErr_SetString(exc_usage, e.what());
        } catch (const io_error& e) {
            PyErr_SetString(exc_io, e.what());
        } catch (const resource_error& e) {
            PyErr_SetString(exc_resource, e.what());
        } catch (const store_error& e) {
            PyErr_SetString(exc_store, e.what());
        } catch (const error& e) {
            PyErr_SetString(exc_error, e.what());
        }
    });

    m.def("preset_names", &preset_names, "Every preset name compress() accepts.");

    m.def(
        "compress",
        [](const py::handle& kv, const std::string& preset_name, const std::string& dtype_s, const std::string& layout,
           const py::handle& token_ids, const py::handle& nll, double rope_theta, const std::string& rope_style,
           const std::vector<std::string>& lossy_options, std::uint32_t chunk_tokens, const std::map<std::string, std::string>& metadata,
           unsigned threads, const std::string& table) {
            const auto cache = borrow_cache(kv, layout, dtype_by_name(dtype_s));
            const auto ids = int32_list(token_ids, "token_ids");
            const auto nl = float_list(nll);
            require_usage(ids.empty() || ids.size() == cache.view.layout.tokens, "token_ids: one id per token");
            require_usage(nl.empty() || nl.size() == cache.view.layout.tokens, "nll: one value per token");
            const auto opts = options_for(preset_name, cache.view.layout.head_dim, rope_theta, rope_style, lossy_options, chunk_tokens,
                                          threads, table, metadata);
            byte_vector out;
            {
                py::gil_scoped_release nogil;
                out = compress(cache.view, opts, ids, nl);
            }
            return to_bytes(out);
        },
        py::arg("kv"), py::arg("preset") = "lossless", py::arg("dtype") = "", py::arg("layout") = "hnd", py::arg("token_ids") = py::none(),
        py::arg("nll") = py::none(), py::arg("rope_theta") = 0.0, py::arg("rope_style") = "rotate_half",
        py::arg("lossy_options") = std::vector<std::string>{}, py::arg("chunk_tokens") = 0u,
        py::arg("metadata") = std::map<std::string, std::string>{}, py::arg("threads") = 1u, py::arg("table") = "");

    m.def(
        "decompress",
        [](const py::buffer& skv, std::uint64_t begin, std::optional<std::uint64_t> end, unsigned threads, const std::string& table) {
            py::buffer_info keep;
            const auto bytes = bytes_of(skv, keep);
            const auto res = resources_for(table);
            chunk_buffer b;
            {
                py::gil_scoped_release nogil;
                b = decompress(bytes, begin, end, res, threads);
            }
            py::array arr = to_numpy(std::move(b));
            return arr;
        },
        py::arg("skv"), py::arg("begin") = 0, py::arg("end") = py::none(), py::arg("threads") = 1u, py::arg("table") = "");

    m.def(
        "info",
        [](const py::buffer& skv) {
            py::buffer_info keep;
            return info_of(bytes_of(skv, keep));
        },
        py::arg("skv"));

    m.def(
        "token_ids",
        [](const py::buffer& skv) -> py::object {
            py::buffer_info keep;
            format::stream_reader r(bytes_of(skv, keep));
            if (!r.header().has_token_ids) return py::none();
            const auto ids = r.token_ids();
            return py::array_t<std::int32_t>(py::ssize_t(ids.size()), ids.data());
        },
        py::arg("skv"));

    m.def(
        "verify",
        [](const py::buffer& skv, const std::string& table) {
            // Every chunk decoded (CRCs and payloads checked); raises on the first problem.
            py::buffer_info keep;
            const auto bytes = bytes_of(skv, keep);
            const auto res = resources_for(table);
            py::gil_scoped_release nogil;
            (void)decompress(bytes, 0, std::nullopt, res, 1);
        },
        py::arg("skv"), py::arg("table") = "");

    // ---- files ----
    m.def(
        "compress_safetensors",
        [](const std::string& src, const std::string& dst, const std::string& preset_name, const std::vector<std::string>& lossy_options,
           std::uint32_t chunk_tokens, unsigned threads, const std::string& table) {
            py::gil_scoped_release nogil;
            const auto file = io::safetensors_file::map(src);  // read in place, the .skv written as chunks are coded
            const kv_cache_view cache = io::kv_view(file);
            model_params mp = model_params_from(file.metadata(), cache.layout);
            preset_inputs in;
            in.options = lossy_options;
            in.chunk_tokens = chunk_tokens;
            in.threads = threads;
            in.table = load_table(table);
            const auto opts = preset(preset_name, mp, in);
            io::skv_summary s;
            io::file_sink sink(dst);
            io::compress_safetensors_to(file, opts, [&](std::span<const std::uint8_t> b) { sink.append(b); }, &s);
            sink.commit();
            py::gil_scoped_acquire gil;
            py::dict d;
            d["kv_bytes"] = s.kv_bytes;
            d["file_bytes"] = s.output_bytes;
            d["kv_coded_bytes"] = s.kv_coded_bytes;
            d["kv_ratio"] = s.kv_coded_bytes ? double(s.kv_bytes) / double(s.kv_coded_bytes) : 0.0;  // K/V only, as the CLI reports
            d["ratio"] = double(s.kv_bytes) / double(s.output_bytes);  // whole file (other tensors included)
            d["encode_seconds"] = s.encode_seconds;
            return d;
        },
        py::arg("src"), py::arg("dst"), py::arg("preset") = "lossless", py::arg("lossy_options") = std::vector<std::string>{},
        py::arg("chunk_tokens") = 0u, py::arg("threads") = 1u, py::arg("table") = "");

    m.def(
        "load_kv",
        [](const std::string& path) {
            // A KV dump in seqkv's safetensors convention (layer.{l}.k / .v [heads, T, D], tokens, nll).
            chunk_buffer b;
            std::optional<std::vector<std::int32_t>> ids;
            std::optional<std::vector<float>> nll;
            std::map<std::string, std::string> meta;
            {
                py::gil_scoped_release nogil;
                const auto file = io::safetensors_file::load(path);
                const kv_cache_view cache = io::kv_view(file);
                b = copy_tokens(cache, 0, cache.layout.tokens, cache.layout.layers, cache.layout.type);
                ids = io::token_ids_of(file, cache.layout.tokens);
                nll = io::nll_of(file, cache.layout.tokens);
                meta = file.metadata();
            }
            py::dict d;
            d["dtype"] = kv_dtype_name(b.layout.type);
            d["kv"] = to_numpy(std::move(b));
            d["token_ids"] = ids ? py::object(py::array_t<std::int32_t>(py::ssize_t(ids->size()), ids->data())) : py::object(py::none());
            d["nll"] = nll ? py::object(py::array_t<float>(py::ssize_t(nll->size()), nll->data())) : py::object(py::none());
            d["metadata"] = meta;
            return d;
        },
        py::arg("path"));

    m.def(
        "decompress_safetensors",
        [](const std::string& src, const std::string& dst, std::uint64_t begin, std::optional<std::uint64_t> end, unsigned threads,
           const std::string& table) {
            py::gil_scoped_release nogil;
            const auto skv = io::mapped_file::open(src);  // one decoded chunk in memory at a time
            io::file_sink sink(dst);
            io::decompress_to_safetensors_at(
                skv.bytes(), [&](std::uint64_t at, std::span<const std::uint8_t> part) { sink.write_at(at, part); }, begin, end,
                resources_for(table), threads);
            sink.commit();
        },
        py::arg("src"), py::arg("dst"), py::arg("begin") = 0, py::arg("end") = py::none(), py::arg("threads") = 1u, py::arg("table") = "");

    m.def(
        "compress_llama_state",
        [](const py::buffer& state, const std::string& preset_name, std::uint32_t kv_heads, std::uint32_t head_dim, double rope_theta,
           const std::string& rope_style, const std::vector<std::string>& lossy_options, std::uint32_t chunk_tokens, unsigned threads) {
            py::buffer_info keep;
            const auto bytes = bytes_of(state, keep);
            byte_vector out;
            {
                py::gil_scoped_release nogil;
                const auto st = io::llama::parse_state(bytes);
                const io::llama::kv_shape shape{kv_heads, head_dim};
                const auto plan = io::llama::plan_kv(st, shape);
                auto opts = options_for(preset_name, plan.layout.head_dim, rope_theta, rope_style, lossy_options, chunk_tokens, threads, "", {});
                out = io::llama::compress_state(st, shape, opts);
            }
            return to_bytes(out);
        },
        py::arg("state"), py::arg("preset") = "lossless", py::arg("kv_heads") = 0u, py::arg("head_dim") = 0u, py::arg("rope_theta") = 0.0,
        py::arg("rope_style") = "rotate_half", py::arg("lossy_options") = std::vector<std::string>{}, py::arg("chunk_tokens") = 0u,
        py::arg("threads") = 1u);

    m.def(
        "decompress_llama_state",
        [](const py::buffer& skv, unsigned threads) {
            py::buffer_info keep;
            const auto bytes = bytes_of(skv, keep);
            byte_vector out;
            {
                py::gil_scoped_release nogil;
                out = io::llama::write_state(io::llama::decompress_state(bytes, {}, threads));
            }
            return to_bytes(out);
        },
        py::arg("skv"), py::arg("threads") = 1u);

    // ---- paged engine layouts ----
    m.def(
        "compress_paged",
        [](const py::handle& pools, const py::handle& block_table, std::uint64_t tokens, const std::string& layout, std::uint32_t page_size,
           const std::string& preset_name, const std::string& dtype_s, const py::handle& token_ids, double rope_theta,
           const std::string& rope_style, const std::vector<std::string>& lossy_options, std::uint32_t chunk_tokens,
           const std::map<std::string, std::string>& metadata, unsigned threads) {
            const auto pages = borrow_pages(pools, block_table, tokens, layout, page_size, dtype_by_name(dtype_s), false);
            const auto ids = int32_list(token_ids, "token_ids");
            const auto opts = options_for(preset_name, pages.view.layout.head_dim, rope_theta, rope_style, lossy_options, chunk_tokens,
                                          threads, "", metadata);
            byte_vector out;
            {
                py::gil_scoped_release nogil;
                out = compress_paged(pages.view, opts, ids);
            }
            return to_bytes(out);
        },
        py::arg("pools"), py::arg("block_table"), py::arg("tokens"), py::arg("layout") = "vllm_split", py::arg("page_size") = 0u,
        py::arg("preset") = "lossless", py::arg("dtype") = "", py::arg("token_ids") = py::none(), py::arg("rope_theta") = 0.0,
        py::arg("rope_style") = "rotate_half", py::arg("lossy_options") = std::vector<std::string>{}, py::arg("chunk_tokens") = 0u,
        py::arg("metadata") = std::map<std::string, std::string>{}, py::arg("threads") = 1u);

    m.def(
        "decompress_into",
        [](const py::buffer& skv, const py::handle& pools, const py::handle& block_table, const std::string& layout, std::uint32_t page_size,
           std::uint64_t begin, std::optional<std::uint64_t> end, const std::string& dtype_s, unsigned threads) {
            py::buffer_info keep;
            const auto bytes = bytes_of(skv, keep);
            const format::stream_reader reader(bytes);
            const std::uint64_t last = end.value_or(reader.tokens());
            require_usage(begin <= last && last <= reader.tokens(), "decompress_into: token range outside the stream");
            const auto requested = dtype_s.empty() ? std::optional<dtype>(reader.layout().type) : dtype_by_name(dtype_s);
            const auto pages = borrow_pages(pools, block_table, last - begin, layout, page_size, requested, true);
            py::gil_scoped_release nogil;
            (void)decompress_into(bytes, pages.view, begin, end, {}, threads);
        },
        py::arg("skv"), py::arg("pools"), py::arg("block_table"), py::arg("layout") = "vllm_split", py::arg("page_size") = 0u,
        py::arg("begin") = 0, py::arg("end") = py::none(), py::arg("dtype") = "", py::arg("threads") = 1u);

    py::class_<py_writer>(m, "Writer")
        .def(py::init<std::uint32_t, std::uint32_t, std::uint32_t, const std::string&, const std::string&, py::object, bool, std::uint32_t,
                      double, const std::string&, const std::vector<std::string>&, const std::map<std::string, std::string>&, unsigned>(),
             py::arg("layers"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("dtype") = "bf16", py::arg("preset") = "lossless",
             py::arg("sink") = py::none(), py::arg("token_ids") = false, py::arg("chunk_tokens") = 0u, py::arg("rope_theta") = 0.0,
             py::arg("rope_style") = "rotate_half", py::arg("lossy_options") = std::vector<std::string>{},
             py::arg("metadata") = std::map<std::string, std::string>{}, py::arg("threads") = 1u)
        .def("append", &py_writer::append, py::arg("kv"), py::arg("token_ids") = py::none(), py::arg("layout") = "hnd")
        .def("finish", &py_writer::finish)
        .def_property_readonly("chunks_written", &py_writer::chunks);
}
