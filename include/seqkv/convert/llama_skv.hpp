// A llama.cpp state <-> .skv. The K/V of every stream whose layers all share one float type
// (f16, bf16, f32) and one row width go through the chosen codec, concatenated along the token
// axis in stream order; everything else (framing, token list, cell positions and sequence ids,
// type and size fields, quantized or odd-shaped rows) goes into the "llama_state" attachment, so
// decoding a lossless file gives back the state byte for byte. Attachment layout: docs/FORMAT.md.
// Conversion layer: built on public headers only (the API, io/, the lossless block coder).
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "seqkv/api.hpp"
#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/io/llama_state.hpp"
#include "seqkv/convert/skv_file.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io::llama {

/// Name of the attachment holding everything of the state but the coded K/V.
inline constexpr const char* state_attachment = "llama_state";

/// How a row of n_embd_gqa elements splits into heads (0: unknown; both 0 = one head per layer).
struct kv_shape {
    std::uint32_t kv_heads = 0;
    std::uint32_t head_dim = 0;
};

/// Which streams go through the codec, and the cache layout they form (tokens = their cells).
struct kv_plan {
    kv_layout layout{1, 1, 1, 0, dtype::bf16};
    std::vector<std::pair<std::size_t, std::size_t>> streams;  // (section, stream), in token order
};

namespace detail {

// The float type and row width shared by all K and V of a stream, if any.
inline std::optional<std::pair<dtype, std::uint32_t>> uniform_kv(const stream& st, bool has_values) {
    if (st.cells.empty() || !has_values || st.layers == 0) return std::nullopt;
    const auto t = st.k[0].float_type();
    if (!t) return std::nullopt;
    const std::uint32_t embd = st.k[0].embd;
    for (const auto* part : {&st.k, &st.v})
        for (const auto& r : *part)
            if (r.float_type() != t || r.embd != embd) return std::nullopt;
    return std::pair{*t, embd};
}

inline kv_tensor_view rows_view(const tensor_rows& r, const kv_layout& L, std::uint64_t cells) {
    const kv_strides s = r.transposed ? kv_strides{std::int64_t(L.head_dim) * std::int64_t(cells), 1, std::int64_t(cells)}
                                      : kv_strides::token_major(L.kv_heads, L.head_dim);
    return {r.bytes.data(), L.type, L.kv_heads, cells, L.head_dim, s};
}

}  // namespace detail

/// Chooses the coded streams: the first stream with uniform float K/V and every later one of the
/// same layer count, type and width. usage_error if the row width is not kv_heads x head_dim.
inline kv_plan plan_kv(const state& s, kv_shape shape = {}) {
    kv_plan p;
    std::optional<std::pair<dtype, std::uint32_t>> sig;
    for (std::size_t i = 0; i < s.sections.size(); ++i)
        for (std::size_t j = 0; j < s.sections[i].streams.size(); ++j) {
            const auto& st = s.sections[i].streams[j];
            const auto u = detail::uniform_kv(st, s.has_values);
            if (!u || (sig && (*u != *sig || st.layers != p.layout.layers))) continue;
            if (!sig) {
                sig = u;
                const std::uint32_t E = u->second;
                std::uint32_t H = shape.kv_heads, D = shape.head_dim;
                if (!H && !D) H = 1;
                if (!H) H = D && E % D == 0 ? E / D : 0;
                if (!D) D = H && E % H == 0 ? E / H : 0;
                if (!H || !D || std::uint64_t(H) * D != E)
                    throw usage_error("llama state: rows of " + std::to_string(E) + " elements are not " +
                                      std::to_string(shape.kv_heads) + " KV heads x " + std::to_string(shape.head_dim));
                p.layout = {st.layers, H, D, 0, u->first};
            }
            p.streams.emplace_back(i, j);
            p.layout.tokens += st.cells.size();
        }
    return p;
}

/// The K/V of one coded stream as a cache view over the state's bytes (any V layout).
inline kv_cache_view stream_view(const stream& st, const kv_layout& L) {
    kv_cache_view v;
    v.layout = L;
    v.layout.tokens = st.cells.size();
    for (std::uint32_t l = 0; l < L.layers; ++l) {
        v.keys.push_back(detail::rows_view(st.k[l], L, st.cells.size()));
        v.values.push_back(detail::rows_view(st.v[l], L, st.cells.size()));
    }
    return v;
}

/// The coded K/V of a state as one decoded-order buffer ([layer][K,V][head][token][channel]).
inline chunk_buffer gather_kv(const state& s, const kv_plan& p) {
    chunk_buffer out = chunk_buffer::for_layout(p.layout, p.layout.tokens);
    const std::size_t row = std::size_t(p.layout.head_dim) * dtype_size(p.layout.type);
    std::uint64_t t0 = 0;
    for (auto [i, j] : p.streams) {
        const auto& st = s.sections[i].streams[j];
        const auto view = stream_view(st, p.layout);
        const std::uint64_t n = st.cells.size();
        for (std::uint32_t l = 0; l < p.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < p.layout.kv_heads; ++h) {
                    kv_tensor_view one = view.tensor(l, kind);
                    one.data = one.element(h, 0, 0);
                    one.heads = 1;
                    gather_block(one, 0, n, out.block(l, kind).subspan((std::size_t(h) * p.layout.tokens + t0) * row, n * row));
                }
        t0 += n;
    }
    return out;
}

namespace detail {

// Token id of each coded cell: by_position[pos] when 0 <= pos < size, else 0.
inline std::vector<std::int32_t> ids_of_cells(const state& s, const kv_plan& p, std::span<const std::int32_t> by_position) {
    std::vector<std::int32_t> ids;
    ids.reserve(p.layout.tokens);
    for (auto [i, j] : p.streams)
        for (const auto& c : s.sections[i].streams[j].cells)
            ids.push_back(c.pos >= 0 && std::uint64_t(c.pos) < by_position.size() ? by_position[c.pos] : 0);
    return ids;
}

// The token list rebuilt from the coded cells' positions and ids, if they cover [0, n).
inline std::optional<std::vector<std::int32_t>> tokens_from_cells(const state& s, const kv_plan& p,
                                                                  std::span<const std::int32_t> ids, std::uint64_t n) {
    if (n > ids.size()) return std::nullopt;
    std::vector<std::int32_t> tokens(n);
    std::vector<bool> seen(n);
    std::size_t k = 0;
    for (auto [i, j] : p.streams)
        for (const auto& c : s.sections[i].streams[j].cells) {
            const auto id = ids[k++];
            if (c.pos < 0 || std::uint64_t(c.pos) >= n) continue;
            if (seen[c.pos] && tokens[c.pos] != id) return std::nullopt;
            tokens[c.pos] = id;
            seen[c.pos] = true;
        }
    for (bool b : seen)
        if (!b) return std::nullopt;
    return tokens;
}

// Cells are stored as (first position, sequence id) when they are one run of one sequence.
inline bool consecutive_cells(const std::vector<cell>& cells, bool ext) {
    if (ext) return false;
    for (std::size_t i = 0; i < cells.size(); ++i)
        if (cells[i].seq_ids.size() != 1 || cells[i].seq_ids[0] != cells[0].seq_ids[0] ||
            std::int64_t(cells[i].pos) != std::int64_t(cells[0].pos) + std::int64_t(i))
            return false;
    return true;
}

// Type and size fields, then (streams outside the codec) the data: u8 mode 0 raw | 1 lossless block, u64 length, bytes.
inline void put_skeleton_rows(byte_writer& w, const tensor_rows& r, bool coded) {
    write_rows_header(w, r);
    if (coded) return;
    // Float rows outside the codec: one lossless block, channels = the contiguous axis.
    const auto t = r.float_type();
    if (t && r.bytes.size() >= 128) {
        const std::uint64_t rows = r.transposed ? r.embd : r.bytes.size() / r.row_bytes;
        const std::uint64_t channels = r.bytes.size() / rows / dtype_size(*t);
        if (channels <= 0xffffffffull) {
            const auto coded_rows = lossless::encode_block(r.bytes, *t, {1, rows, std::uint32_t(channels)});
            w.put<std::uint8_t>(1);
            w.put<std::uint64_t>(coded_rows.size());
            w.put_bytes(coded_rows);
            return;
        }
    }
    w.put<std::uint8_t>(0);
    w.put<std::uint64_t>(r.bytes.size());
    w.put_bytes(r.bytes);
}

}  // namespace detail

/// Compresses a parsed state: K/V through options.codec, the rest into the attachment.
/// by_position (optional) gives the token id at each position (default: the state's own token
/// list); the coded cells' ids then ride in the chunk records and feed the codec.
template <backend::Backend Backend = backend::simd>
byte_vector compress_state(const state& s, kv_shape shape, const compress_options& options,
                           std::span<const std::int32_t> by_position = {}, skv_summary* summary = nullptr) {
    const auto start = std::chrono::steady_clock::now();
    const kv_plan plan = plan_kv(s, shape);
    if (by_position.empty()) by_position = s.tokens;
    const bool use_ids = !by_position.empty() && plan.layout.tokens > 0;
    const auto ids = use_ids ? detail::ids_of_cells(s, plan, by_position) : std::vector<std::int32_t>{};
    format::preamble p;
    p.layout = plan.layout;
    apply_options(p, options);
    p.has_token_ids = use_ids;
    p.metadata = options.metadata;
    p.metadata["source"] = "llama.cpp state";
    p.metadata["llama_state_framing"] = std::string(framing_name(s.kind));
    if (!s.arch.empty() && !p.metadata.count("model")) p.metadata["model"] = s.arch;
    if (plan.layout.tokens) p.metadata["ggml_type"] = std::string(ggml_type_of(plan.layout.type)->name);
    byte_vector out;
    format::stream_writer writer([&](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }, p,
                                 make_codec<Backend>(options.codec, options.resources, executor_for(options.threads)),
                                 writer_options_for(options));
    std::uint64_t t0 = 0;
    for (auto [i, j] : plan.streams) {
        const auto& st = s.sections[i].streams[j];
        const std::uint64_t n = st.cells.size();
        writer.append(stream_view(st, plan.layout), 0, n,
                      use_ids ? std::span<const std::int32_t>(ids).subspan(t0, n) : std::span<const std::int32_t>{});
        t0 += n;
    }
    // The skeleton: everything but the coded K/V bytes.
    byte_vector sk;
    byte_writer w(sk);
    w.put<std::uint8_t>(1);  // attachment version
    w.put<std::uint8_t>(static_cast<std::uint8_t>(s.kind));
    w.put<std::uint8_t>((s.cell_ext ? 1 : 0) | (s.has_values ? 2 : 0));
    if (s.kind == framing::seq_file || s.kind == framing::session_file) {
        w.put<std::uint32_t>(s.version);
        const bool derived = use_ids && by_position.data() == s.tokens.data() &&
                             detail::tokens_from_cells(s, plan, ids, s.tokens.size()) == s.tokens;
        w.put<std::uint8_t>(derived ? 1 : 0);  // 1: tokens[pos] = id of the coded cell at pos
        w.put<std::uint32_t>(static_cast<std::uint32_t>(s.tokens.size()));
        if (!derived)
            for (auto t : s.tokens) w.put<std::int32_t>(t);
    }
    if (s.kind == framing::session_file || s.kind == framing::context_data) w.put_string(s.arch);
    if (s.kind == framing::seq_data) w.put<std::int32_t>(s.seq_id);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(s.sections.size()));
    for (std::size_t i = 0; i < s.sections.size(); ++i) {
        w.put<std::uint32_t>(static_cast<std::uint32_t>(s.sections[i].streams.size()));
        for (std::size_t j = 0; j < s.sections[i].streams.size(); ++j) {
            const auto& st = s.sections[i].streams[j];
            w.put<std::uint32_t>(static_cast<std::uint32_t>(st.cells.size()));
            if (st.cells.empty()) continue;
            const bool coded = std::find(plan.streams.begin(), plan.streams.end(), std::pair{i, j}) != plan.streams.end();
            w.put<std::uint8_t>(coded ? 1 : 0);
            const bool run = detail::consecutive_cells(st.cells, s.cell_ext);
            w.put<std::uint8_t>(run ? 0 : 1);
            if (run) {
                w.put<std::int32_t>(st.cells[0].pos);
                w.put<std::int32_t>(st.cells[0].seq_ids[0]);
            } else {
                write_cells(w, st.cells, s.cell_ext);
            }
            w.put<std::uint8_t>(st.v_trans ? 1 : 0);
            w.put<std::uint32_t>(st.layers);
            for (const auto* part : {&st.k, &st.v})
                for (const auto& r : *part) detail::put_skeleton_rows(w, r, coded);
        }
    }
    writer.add_attachment(state_attachment, std::move(sk));
    writer.finish();
    if (summary) {
        summary->kv_bytes = plan.layout.total_bytes();
        summary->output_bytes = out.size();
        summary->kv_coded_bytes = writer.chunk_record_bytes();
        summary->encode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    return out;
}

namespace detail {

// Copies the coded cells [t0, t0 + n) of (layer, kind) from the decoded buffer into llama rows.
inline void scatter_rows(const chunk_buffer& kv, std::uint32_t l, kv_kind kind, std::uint64_t t0, tensor_rows& r, std::uint64_t n) {
    const kv_layout& L = kv.layout;
    const std::size_t es = dtype_size(L.type), row = std::size_t(L.head_dim) * es;
    const auto src = kv.block(l, kind);
    for (std::uint32_t h = 0; h < L.kv_heads; ++h)
        for (std::uint64_t t = 0; t < n; ++t) {
            const std::uint8_t* from = src.data() + (std::size_t(h) * L.tokens + t0 + t) * row;
            if (!r.transposed) {
                std::copy_n(from, row, r.bytes.data() + t * r.row_bytes + std::size_t(h) * row);
            } else {
                for (std::uint32_t c = 0; c < L.head_dim; ++c)
                    std::copy_n(from + c * es, es, r.bytes.data() + ((std::size_t(h) * L.head_dim + c) * n + t) * es);
            }
        }
}

// Reads one layer's K or V of the skeleton; coded rows are filled from kv at tokens [t0, t0 + n).
inline tensor_rows get_skeleton_rows(byte_reader& r, bool transposed, std::uint64_t n, const chunk_buffer* kv,
                                     std::uint32_t l, kv_kind kind, std::uint64_t t0) {
    tensor_rows t = read_rows_header(r, transposed, state_limits{});
    const std::uint64_t need = rows_bytes(t, n);
    if (kv) {
        const kv_layout& L = kv->layout;
        if (t.float_type() != L.type || t.embd != L.kv_heads * L.head_dim)
            throw format_error("llama_state attachment: coded rows disagree with the stream layout");
        t.bytes.resize(need);
        scatter_rows(*kv, l, kind, t0, t, n);
        return t;
    }
    const auto mode = r.get<std::uint8_t>();
    const auto len = r.get<std::uint64_t>();
    const auto bytes = r.get_bytes(len);
    if (mode == 0) {
        if (len != need) throw format_error("llama_state attachment: stored rows have the wrong size");
        t.bytes.assign(bytes.begin(), bytes.end());
    } else if (mode == 1 && t.float_type()) {
        if (need > 64 * (len + 1024)) throw limit_error("llama_state attachment: implausible expansion");
        const std::size_t es = dtype_size(*t.float_type());
        const std::uint64_t rows = t.transposed ? t.embd : n;
        if (rows == 0 || need / rows / es > 0xffffffffull) throw format_error("llama_state attachment: bad coded rows");
        t.bytes.resize(need);
        lossless::decode_block(bytes, *t.float_type(), {1, rows, std::uint32_t(need / rows / es)}, t.bytes);
    } else {
        throw format_error("llama_state attachment: unknown rows mode");
    }
    return t;
}

}  // namespace detail

/// Decodes a .skv written by compress_state back into the state; with a lossless codec it
/// serializes (write_state) to the original bytes. format_error for files of other origins.
template <backend::Backend Backend = backend::simd>
state decompress_state(std::span<const std::uint8_t> skv, const resource_provider& resources = {}, unsigned threads = 1) {
    format::stream_reader reader(skv);
    reader.require_resources(resources);
    const auto att = reader.find_attachment(state_attachment);
    if (!att) throw format_error("no '" + std::string(state_attachment) + "' attachment: this .skv was not made from a llama.cpp state");
    const kv_layout L = reader.layout();
    chunk_buffer kv;
    if (L.tokens) kv = reader.decode(make_codec<Backend>(reader.header().codec, resources, executor_for(threads)), 0, std::nullopt, resources);
    std::vector<std::int32_t> ids = reader.token_ids();
    if (ids.empty()) ids = kv.token_ids;  // token mode: the payload coded the ids
    byte_reader r(*att, "llama_state attachment");
    if (r.get<std::uint8_t>() != 1) throw format_error("llama_state attachment: unknown version");
    state s;
    const auto kind = r.get<std::uint8_t>(), flags = r.get<std::uint8_t>();
    if (kind > 3 || flags > 3) throw format_error("llama_state attachment: unknown framing or flags");
    s.kind = static_cast<framing>(kind);
    s.cell_ext = flags & 1;
    s.has_values = flags & 2;
    bool derived = false;
    std::uint32_t n_tokens = 0;
    if (s.kind == framing::seq_file || s.kind == framing::session_file) {
        s.version = r.get<std::uint32_t>();
        const auto mode = r.get<std::uint8_t>();
        n_tokens = r.get<std::uint32_t>();
        if (mode > 1 || (mode == 1 && n_tokens > ids.size()) || (mode == 0 && n_tokens > r.remaining() / 4))
            throw format_error("llama_state attachment: token list");
        derived = mode == 1;
        if (!derived) {
            s.tokens.resize(n_tokens);
            for (auto& t : s.tokens) t = r.get<std::int32_t>();
        }
    }
    if (s.kind == framing::session_file || s.kind == framing::context_data) s.arch = r.get_string(256);
    if (s.kind == framing::seq_data) s.seq_id = r.get<std::int32_t>();
    const auto n_sections = r.get<std::uint32_t>();
    if (n_sections == 0 || n_sections > r.remaining() / 4) throw format_error("llama_state attachment: section count");
    kv_plan plan;
    plan.layout = L;
    std::uint64_t t0 = 0;
    s.sections.resize(n_sections);
    for (std::size_t i = 0; i < n_sections; ++i) {
        const auto n_streams = r.get<std::uint32_t>();
        if (n_streams == 0 || n_streams > 256 || n_streams > r.remaining() / 4) throw format_error("llama_state attachment: stream count");
        s.sections[i].streams.resize(n_streams);
        for (std::size_t j = 0; j < n_streams; ++j) {
            auto& st = s.sections[i].streams[j];
            const std::uint64_t n = r.get<std::uint32_t>();
            if (n == 0) continue;
            const auto coded = r.get<std::uint8_t>(), cells_mode = r.get<std::uint8_t>();
            if (coded > 1 || cells_mode > 1) throw format_error("llama_state attachment: stream flags");
            if (coded ? n > L.tokens - t0 : n > 64 * (r.remaining() + 1024))
                throw format_error("llama_state attachment: cell count exceeds the data");
            if (cells_mode == 0) {
                if (s.cell_ext) throw format_error("llama_state attachment: run of cells with extensions");
                const auto first = r.get<std::int32_t>(), seq = r.get<std::int32_t>();
                if (std::int64_t(first) + std::int64_t(n) - 1 > INT32_MAX || seq < 0 || seq >= 256)
                    throw format_error("llama_state attachment: cell run");
                st.cells.resize(n);
                for (std::uint64_t c = 0; c < n; ++c) st.cells[c] = {std::int32_t(first + std::int64_t(c)), {seq}};
            } else {
                st.cells = read_cells(r, static_cast<std::uint32_t>(n), s.cell_ext, state_limits{});
            }
            const auto v_trans = r.get<std::uint8_t>();
            st.layers = r.get<std::uint32_t>();
            if (v_trans > 1 || st.layers == 0 || st.layers > state_limits{}.max_layers || (coded && st.layers != L.layers))
                throw format_error("llama_state attachment: stream header");
            st.v_trans = v_trans == 1;
            if (coded && !s.has_values) throw format_error("llama_state attachment: coded stream without V");
            for (std::uint32_t l = 0; l < st.layers; ++l)
                st.k.push_back(detail::get_skeleton_rows(r, false, n, coded ? &kv : nullptr, l, kv_kind::key, t0));
            if (s.has_values)
                for (std::uint32_t l = 0; l < st.layers; ++l)
                    st.v.push_back(detail::get_skeleton_rows(r, st.v_trans, n, coded ? &kv : nullptr, l, kv_kind::value, t0));
            if (coded) {
                plan.streams.emplace_back(i, j);
                t0 += n;
            }
        }
    }
    if (!r.at_end() || t0 != L.tokens) throw format_error("llama_state attachment: does not match the coded tokens");
    if (derived) {
        auto tokens = detail::tokens_from_cells(s, plan, ids, n_tokens);
        if (!tokens) throw format_error("llama_state attachment: token list not covered by the cells");
        s.tokens = std::move(*tokens);
    }
    return s;
}

}  // namespace seqkv::io::llama

SEQKV_FP_STRICT_END
