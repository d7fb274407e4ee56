// llama.cpp state bytes <-> a parsed structure, exactly as llama.cpp writes them (the llama.cpp
// vendored by llama-cpp-python 0.3.36: LLAMA_STATE_SEQ_VERSION 3, LLAMA_SESSION_VERSION 10).
// Four framings: llama_state_seq_save_file, llama_state_save_file, llama_state_seq_get_data and
// llama_state_get_data, each around a sequence of KV-cache sections (one per llama_kv_cache: the
// iSWA cache writes its base then its SWA cache). A section holds streams; a stream holds cells
// (position, sequence ids) and per layer the K rows and V rows (or V element-transposed) in the
// cache's ggml type. write_state(parse_state(b)) == b byte for byte. Byte layout:
// docs/LLAMA_STATE.md. Every size is checked against the remaining bytes before allocating.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io::llama {

/// A ggml element type: its id in the state, name, elements and bytes per block, and the seqkv
/// float type it decodes to (nullopt: kept as opaque bytes).
struct ggml_type_info {
    std::int32_t id;
    std::string_view name;
    std::uint32_t block_elements;
    std::uint32_t block_bytes;
    std::optional<dtype> kv_float;
};

/// The ggml types of this llama.cpp version (ids 4, 5, 31-33 and 36-38 were removed from ggml).
inline constexpr std::array<ggml_type_info, 36> ggml_types{{
    {0, "f32", 1, 4, dtype::f32},    {1, "f16", 1, 2, dtype::f16},      {2, "q4_0", 32, 18, {}},
    {3, "q4_1", 32, 20, {}},         {6, "q5_0", 32, 22, {}},           {7, "q5_1", 32, 24, {}},
    {8, "q8_0", 32, 34, {}},         {9, "q8_1", 32, 36, {}},           {10, "q2_K", 256, 84, {}},
    {11, "q3_K", 256, 110, {}},      {12, "q4_K", 256, 144, {}},        {13, "q5_K", 256, 176, {}},
    {14, "q6_K", 256, 210, {}},      {15, "q8_K", 256, 292, {}},        {16, "iq2_xxs", 256, 66, {}},
    {17, "iq2_xs", 256, 74, {}},     {18, "iq3_xxs", 256, 98, {}},      {19, "iq1_s", 256, 50, {}},
    {20, "iq4_nl", 32, 18, {}},      {21, "iq3_s", 256, 110, {}},       {22, "iq2_s", 256, 82, {}},
    {23, "iq4_xs", 256, 136, {}},    {24, "i8", 1, 1, {}},              {25, "i16", 1, 2, {}},
    {26, "i32", 1, 4, {}},           {27, "i64", 1, 8, {}},             {28, "f64", 1, 8, {}},
    {29, "iq1_m", 256, 56, {}},      {30, "bf16", 1, 2, dtype::bf16},   {34, "tq1_0", 256, 54, {}},
    {35, "tq2_0", 256, 66, {}},      {39, "mxfp4", 32, 17, {}},         {40, "nvfp4", 64, 36, {}},
    {41, "q1_0", 128, 18, {}},       {42, "q2_0", 64, 18, {}},          {-1, "", 0, 0, {}},
}};

/// The ggml type with this id, or nullptr when this llama.cpp version has none.
inline const ggml_type_info* find_ggml_type(std::int32_t id) {
    for (const auto& t : ggml_types)
        if (t.id == id && t.id >= 0) return &t;
    return nullptr;
}

/// The ggml type that stores a seqkv KV float type (f32, f16, bf16); nullptr for others.
inline const ggml_type_info* ggml_type_of(dtype t) {
    for (const auto& g : ggml_types)
        if (g.kv_float && *g.kv_float == t) return &g;
    return nullptr;
}

inline constexpr std::uint32_t seq_file_magic = 0x67677371u;      // "ggsq"
inline constexpr std::uint32_t seq_file_version = 3;
inline constexpr std::uint32_t session_file_magic = 0x6767736eu;  // "ggsn"
inline constexpr std::uint32_t session_file_version = 10;
inline constexpr std::uint32_t seq_data_magic = 0xaf143cd8u;      // llama_state_seq_get_data prefix

/// Which llama.cpp call produced the bytes.
enum class framing : std::uint8_t {
    seq_file = 0,      // llama_state_seq_save_file: magic, version 3, tokens, memory
    session_file = 1,  // llama_state_save_file: magic, version 10, tokens, arch string, memory
    seq_data = 2,      // llama_state_seq_get_data: u32 magic, i32 seq id, memory
    context_data = 3,  // llama_state_get_data: arch string, memory
};

/// Name of a framing ("seq_file", ...).
inline std::string_view framing_name(framing f) {
    constexpr std::array<std::string_view, 4> names{"seq_file", "session_file", "seq_data", "context_data"};
    return names.at(static_cast<std::size_t>(f));
}

/// One KV cell: position, the sequences that hold it, and the extension of M-RoPE/PLE models.
struct cell {
    std::int32_t pos = 0;
    std::vector<std::int32_t> seq_ids;
    std::array<std::int32_t, 3> ext{0, 0, -1};  // x, y, token; written only when the state has cell_ext
    bool operator==(const cell&) const = default;
};

/// One layer's K or V of one stream, in the cache's ggml type.
struct tensor_rows {
    std::int32_t type = 1;            // ggml type id
    std::uint32_t embd = 0;           // elements per cell (n_embd_k_gqa / n_embd_v_gqa)
    std::uint64_t row_bytes = 0;      // bytes per cell row (not transposed)
    bool transposed = false;          // V of a v_trans cache: element-major [embd][cells]
    std::uint32_t element_bytes = 0;  // transposed only: bytes per element (ggml_type_size)
    byte_vector bytes;                // cells x row_bytes, or embd x cells x element_bytes when transposed

    /// The seqkv float type of the rows, or nullopt for opaque (quantized, integer) types.
    std::optional<dtype> float_type() const {
        const auto* t = find_ggml_type(type);
        return t ? t->kv_float : std::nullopt;
    }
};

/// One stream of a KV-cache section: the cells of the saved sequence(s) and their K/V.
struct stream {
    std::vector<cell> cells;       // empty: only the count 0 is written
    bool v_trans = false;
    std::uint32_t layers = 0;
    std::vector<tensor_rows> k;    // one per layer
    std::vector<tensor_rows> v;    // one per layer, or none when the state has no V
};

/// One llama_kv_cache's part of the state.
struct section {
    std::vector<stream> streams;
};

/// A parsed llama.cpp state.
struct state {
    framing kind = framing::seq_file;
    std::uint32_t version = 0;         // seq_file / session_file
    std::vector<std::int32_t> tokens;  // seq_file / session_file
    std::string arch;                  // session_file / context_data
    std::int32_t seq_id = 0;           // seq_data
    bool cell_ext = false;             // cells carry x, y, token (M-RoPE or PLE models)
    bool has_values = true;            // false: the cache keeps no V (every layer)
    std::vector<section> sections;
};

/// Limits applied to untrusted state bytes (besides every size fitting the remaining bytes).
struct state_limits {
    std::uint32_t max_streams = 256;         // LLAMA_MAX_SEQ
    std::uint32_t max_seq_ids = 256;         // sequence ids per cell, each in [0, max_seq_ids)
    std::uint32_t max_layers = 4096;
    std::uint32_t max_embd = 1u << 20;       // elements per cell row
    std::uint32_t max_arch_bytes = 256;
};

/// Parse choices the bytes do not state. cell_ext nullopt: try without, then with, and keep the
/// one that consumes the input exactly. has_values: false only for MLA caches (no V tensors; GGUF
/// key {arch}.attention.key_length_mla), which the bytes cannot tell from a truncated state.
struct parse_options {
    std::optional<bool> cell_ext;
    bool has_values = true;
    state_limits limits;
};

/// Writes cell records (pos, sequence count, [ext], sequence ids) as the state stores them.
inline void write_cells(byte_writer& w, const std::vector<cell>& cells, bool ext) {
    for (const auto& c : cells) {
        w.put<std::int32_t>(c.pos);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(c.seq_ids.size()));
        if (ext)
            for (auto e : c.ext) w.put<std::int32_t>(e);
        for (auto s : c.seq_ids) w.put<std::int32_t>(s);
    }
}

/// Reads count cell records written by write_cells; format_error past the data or the limits.
inline std::vector<cell> read_cells(byte_reader& r, std::uint32_t count, bool ext, const state_limits& lim) {
    const std::size_t min_cell = ext ? 20 : 8;
    if (count > r.remaining() / min_cell) throw format_error("llama state: cell count " + std::to_string(count) + " exceeds the data");
    std::vector<cell> cells(count);
    for (auto& c : cells) {
        c.pos = r.get<std::int32_t>();
        const auto n = r.get<std::uint32_t>();
        if (n > lim.max_seq_ids || n > r.remaining() / 4)
            throw format_error("llama state: cell with " + std::to_string(n) + " sequence ids");
        if (ext)
            for (auto& e : c.ext) e = r.get<std::int32_t>();
        c.seq_ids.resize(n);
        for (auto& s : c.seq_ids) {
            s = r.get<std::int32_t>();
            if (s < 0 || std::uint32_t(s) >= lim.max_seq_ids) throw format_error("llama state: sequence id " + std::to_string(s));
        }
    }
    return cells;
}

/// Reads and validates the type and size fields of one layer's K or V (no data).
inline tensor_rows read_rows_header(byte_reader& r, bool transposed, const state_limits& lim) {
    tensor_rows t;
    t.type = r.get<std::int32_t>();
    const auto* g = find_ggml_type(t.type);
    if (!g) throw format_error("llama state: unknown ggml type " + std::to_string(t.type));
    t.transposed = transposed;
    if (!transposed) {
        t.row_bytes = r.get<std::uint64_t>();
        if (t.row_bytes == 0 || t.row_bytes % g->block_bytes != 0 || t.row_bytes / g->block_bytes > lim.max_embd / g->block_elements)
            throw format_error("llama state: row size " + std::to_string(t.row_bytes) + " does not fit type " + std::string(g->name));
        t.embd = static_cast<std::uint32_t>(t.row_bytes / g->block_bytes * g->block_elements);
    } else {
        t.element_bytes = r.get<std::uint32_t>();
        t.embd = r.get<std::uint32_t>();
        if (t.element_bytes != g->block_bytes) throw format_error("llama state: element size does not match type " + std::string(g->name));
        if (t.embd == 0 || t.embd > lim.max_embd) throw format_error("llama state: V embedding size " + std::to_string(t.embd));
    }
    return t;
}

/// Bytes of a layer's K or V data for `cells` cells.
inline std::uint64_t rows_bytes(const tensor_rows& t, std::uint64_t cells) {
    return (t.transposed ? std::uint64_t(t.embd) * t.element_bytes : t.row_bytes) * cells;
}

/// Writes the type and size fields of one layer's K or V (read_rows_header reads them).
inline void write_rows_header(byte_writer& w, const tensor_rows& t) {
    w.put<std::int32_t>(t.type);
    if (t.transposed) {
        w.put<std::uint32_t>(t.element_bytes);
        w.put<std::uint32_t>(t.embd);
    } else {
        w.put<std::uint64_t>(t.row_bytes);
    }
}

namespace detail {

inline tensor_rows get_rows(byte_reader& r, std::size_t cells, bool transposed, const state_limits& lim) {
    tensor_rows t = read_rows_header(r, transposed, lim);
    const std::uint64_t per_cell = rows_bytes(t, 1);
    if (per_cell > r.remaining() / std::max<std::size_t>(cells, 1)) throw format_error("llama state: K/V rows exceed the data");
    const auto b = r.get_bytes(static_cast<std::size_t>(per_cell * cells));
    t.bytes.assign(b.begin(), b.end());
    return t;
}

inline section get_section(byte_reader& r, bool ext, bool values, const state_limits& lim) {
    section s;
    const auto n_stream = r.get<std::uint32_t>();
    if (n_stream == 0 || n_stream > lim.max_streams || n_stream > r.remaining() / 4)
        throw format_error("llama state: stream count " + std::to_string(n_stream));
    s.streams.resize(n_stream);
    for (auto& st : s.streams) {
        const auto count = r.get<std::uint32_t>();
        if (count == 0) continue;
        st.cells = read_cells(r, count, ext, lim);
        const auto v_trans = r.get<std::uint32_t>();
        if (v_trans > 1) throw format_error("llama state: v_trans flag " + std::to_string(v_trans) + " (expected 0 or 1)");
        st.v_trans = v_trans == 1;
        st.layers = r.get<std::uint32_t>();
        if (st.layers == 0 || st.layers > lim.max_layers || st.layers > r.remaining() / 12)
            throw format_error("llama state: layer count " + std::to_string(st.layers));
        for (std::uint32_t l = 0; l < st.layers; ++l) st.k.push_back(get_rows(r, count, false, lim));
        if (values)
            for (std::uint32_t l = 0; l < st.layers; ++l) st.v.push_back(get_rows(r, count, st.v_trans, lim));
    }
    return s;
}

inline state parse_with(std::span<const std::uint8_t> bytes, bool ext, bool values, const state_limits& lim) {
    byte_reader r(bytes, "llama state");
    state s;
    s.cell_ext = ext;
    s.has_values = values;
    const auto get_arch = [&] {
        const auto n = r.get<std::uint32_t>();
        if (n == 0 || n > lim.max_arch_bytes) throw format_error("llama state: architecture name length " + std::to_string(n));
        const auto b = r.get_bytes(n);
        return std::string(b.begin(), b.end());
    };
    const auto get_tokens = [&] {
        const auto n = r.get<std::uint32_t>();
        if (n > r.remaining() / 4) throw format_error("llama state: token count " + std::to_string(n) + " exceeds the file");
        s.tokens.resize(n);
        for (auto& t : s.tokens) t = r.get<std::int32_t>();
    };
    if (bytes.size() < 4) throw format_error("llama state: shorter than its 4-byte header");
    const std::uint32_t magic = load_le32(bytes.data());
    if (magic == seq_file_magic || magic == session_file_magic) {
        const bool seq = magic == seq_file_magic;
        r.get<std::uint32_t>();
        s.kind = seq ? framing::seq_file : framing::session_file;
        s.version = r.get<std::uint32_t>();
        const auto want = seq ? seq_file_version : session_file_version;
        if (s.version != want)
            throw format_error(std::string("llama state: unsupported ") + (seq ? "sequence state" : "session") + " file version " +
                               std::to_string(s.version) + " (seqkv reads version " + std::to_string(want) + ")");
        get_tokens();
        if (!seq) s.arch = get_arch();
    } else if (magic == seq_data_magic) {
        r.get<std::uint32_t>();
        s.kind = framing::seq_data;
        s.seq_id = r.get<std::int32_t>();
    } else if (magic >= 1 && magic <= lim.max_arch_bytes && bytes.size() >= 4 + magic &&
               std::all_of(bytes.begin() + 4, bytes.begin() + 4 + magic, [](std::uint8_t c) { return c > 32 && c < 127; })) {
        s.kind = framing::context_data;
        s.arch = get_arch();
    } else {
        throw format_error("llama state: unknown magic (not a llama.cpp sequence state, session file or state blob)");
    }
    while (!r.at_end()) s.sections.push_back(get_section(r, ext, values, lim));
    if (s.sections.empty()) throw format_error("llama state: no KV cache data");
    return s;
}

}  // namespace detail

/// Parses llama.cpp state bytes; throws format_error (unknown magic, version or type, bad flag,
/// truncation, trailing bytes, sizes that exceed the data) before allocating for bad input.
inline state parse_state(std::span<const std::uint8_t> bytes, const parse_options& options = {}) {
    std::optional<format_error> first;
    for (bool ext : {false, true}) {
        if (options.cell_ext && *options.cell_ext != ext) continue;
        try {
            return detail::parse_with(bytes, ext, options.has_values, options.limits);
        } catch (const format_error& e) {
            if (!first) first = e;
        }
    }
    throw *first;
}

/// Bytes write_state(s) produces (for reserving).
inline std::uint64_t state_bytes(const state& s) {
    std::uint64_t n = 12 + 4 * s.tokens.size() + 4 + s.arch.size() + 8;
    for (const auto& sec : s.sections)
        for (const auto& st : sec.streams) {
            n += 4 + 4 + 8;
            for (const auto& c : st.cells) n += 8 + 4 * c.seq_ids.size() + (s.cell_ext ? 12 : 0);
            for (const auto* part : {&st.k, &st.v})
                for (const auto& t : *part) n += 12 + t.bytes.size();
        }
    return n;
}

/// Serializes a state exactly as llama.cpp writes it; usage_error if it is inconsistent.
inline byte_vector write_state(const state& s) {
    byte_vector out;
    out.reserve(state_bytes(s));  // an upper bound: one allocation for the whole state
    byte_writer w(out);
    const auto put_arch = [&] {
        require_usage(!s.arch.empty(), "write_state: this framing needs the architecture name");
        w.put_string(s.arch);
    };
    switch (s.kind) {
        case framing::seq_file:
        case framing::session_file:
            w.put<std::uint32_t>(s.kind == framing::seq_file ? seq_file_magic : session_file_magic);
            w.put<std::uint32_t>(s.version);
            w.put<std::uint32_t>(static_cast<std::uint32_t>(s.tokens.size()));
            for (auto t : s.tokens) w.put<std::int32_t>(t);
            if (s.kind == framing::session_file) put_arch();
            break;
        case framing::seq_data:
            w.put<std::uint32_t>(seq_data_magic);
            w.put<std::int32_t>(s.seq_id);
            break;
        case framing::context_data: put_arch(); break;
    }
    for (const auto& sec : s.sections) {
        w.put<std::uint32_t>(static_cast<std::uint32_t>(sec.streams.size()));
        for (const auto& st : sec.streams) {
            w.put<std::uint32_t>(static_cast<std::uint32_t>(st.cells.size()));
            if (st.cells.empty()) continue;
            require_usage(st.k.size() == st.layers && st.v.size() == (s.has_values ? st.layers : 0),
                          "write_state: one K (and V) per layer");
            write_cells(w, st.cells, s.cell_ext);
            w.put<std::uint32_t>(st.v_trans ? 1 : 0);
            w.put<std::uint32_t>(st.layers);
            for (const auto* part : {&st.k, &st.v})
                for (const auto& t : *part) {
                    require_usage(t.bytes.size() == rows_bytes(t, st.cells.size()), "write_state: K/V bytes do not match the cells");
                    write_rows_header(w, t);
                    w.put_bytes(t.bytes);
                }
        }
    }
    return out;
}

}  // namespace seqkv::io::llama

SEQKV_FP_STRICT_END
