// A whole safetensors KV dump <-> .skv: the K/V tensors go through the chosen codec, `tokens`
// (I32 [T]) and `nll` (F32 [T]) ride in the chunk records, every other tensor is kept in the
// "tensors" attachment (float tensors lossless-coded, the rest stored), and `__metadata__` is
// kept in the preamble. Decoding gives back every tensor, for all tokens or a token range.
// Conversion layer: built on public headers only (the API, io/, the lossless block coder).
#pragma once

#include <charconv>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "seqkv/api.hpp"
#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// Name of the attachment holding the non-KV tensors.
inline constexpr const char* tensors_attachment = "tensors";

namespace detail {

/// The reader's bound on a lossless-coded extra tensor: decoded bytes at most 64 x (coded + 1 KiB).
/// The writer stores a tensor raw when coding it would exceed that (e.g. a large constant mask).
constexpr bool plausible_expansion(std::uint64_t decoded, std::uint64_t coded) { return decoded <= 64 * (coded + 1024); }

// Extra tensor record: name, dtype code, rank, dims, mode (0 = stored, 1 = lossless planes), u64 len, bytes.
inline void put_extra_tensor(byte_writer& w, const tensor_entry& t) {
    w.put_string(t.name);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(t.type));
    w.put<std::uint8_t>(static_cast<std::uint8_t>(t.shape.size()));
    for (auto d : t.shape) w.put<std::uint64_t>(d);
    // Float tensors are coded as [rows, 1, last dim] blocks: channels = the last axis.
    const bool planes = is_kv_float(t.type) && !t.shape.empty() && t.shape.back() > 0 && t.element_count() >= 64;
    byte_vector coded;
    if (planes) {
        const lossless::block_shape s{1, t.element_count() / t.shape.back(), static_cast<std::uint32_t>(t.shape.back())};
        coded = lossless::encode_block(t.bytes, t.type, s);
    }
    if (planes && plausible_expansion(t.bytes.size(), coded.size())) {
        w.put<std::uint8_t>(1);
        w.put<std::uint64_t>(coded.size());
        w.put_bytes(coded);
    } else {
        w.put<std::uint8_t>(0);
        w.put<std::uint64_t>(t.bytes.size());
        w.put_bytes(t.bytes);
    }
}

struct extra_tensor {
    std::string name;
    dtype type;
    std::vector<std::uint64_t> shape;
    byte_vector bytes;
};

inline extra_tensor get_extra_tensor(byte_reader& r) {
    extra_tensor t;
    t.name = r.get_string();
    const auto type = dtype_from_code(r.get<std::uint8_t>());
    if (!type) throw format_error("tensors attachment: unknown dtype");
    t.type = *type;
    const auto rank = r.get<std::uint8_t>();
    if (rank > 8) throw format_error("tensors attachment: rank > 8");
    std::uint64_t count = 1;
    for (int i = 0; i < rank; ++i) {
        const auto d = r.get<std::uint64_t>();
        if (d != 0 && count > (1ull << 40) / d) throw limit_error("tensors attachment: tensor too large");
        count *= d;
        t.shape.push_back(d);
    }
    const auto mode = r.get<std::uint8_t>();
    const auto len = r.get<std::uint64_t>();
    const auto bytes = r.get_bytes(len);
    const std::uint64_t need = count * dtype_size(t.type);
    if (mode == 0) {
        if (len != need) throw format_error("tensors attachment: stored size mismatch for '" + t.name + "'");
        t.bytes.assign(bytes.begin(), bytes.end());
    } else if (mode == 1) {
        if (!is_kv_float(t.type) || rank == 0 || t.shape.back() == 0 || t.shape.back() > 0xffffffffull)
            throw format_error("tensors attachment: bad coded tensor '" + t.name + "'");
        // A coded tensor cannot expand past what its compressed bytes could plausibly hold.
        if (!plausible_expansion(need, len)) throw limit_error("tensors attachment: implausible expansion");
        t.bytes.resize(need);
        lossless::decode_block(bytes, t.type, {1, count / t.shape.back(), std::uint32_t(t.shape.back())}, t.bytes);
    } else {
        throw format_error("tensors attachment: unknown mode");
    }
    return t;
}

}  // namespace detail

/// Called as work advances: (tokens done, tokens in all).
using progress_fn = std::function<void(std::uint64_t, std::uint64_t)>;

/// Compression summary of one file.
struct skv_summary {
    std::uint64_t input_bytes = 0;   // whole safetensors file
    std::uint64_t kv_bytes = 0;      // K/V tensors only, in their dtype
    std::uint64_t output_bytes = 0;  // whole .skv
    std::uint64_t kv_coded_bytes = 0;  // chunk records (all of them, after finish) only
    double encode_seconds = 0;
};

/// Compresses a parsed KV safetensors file into a .skv stream written to `sink` as it is produced
/// (token mode: without the nll side data). With a mapped file (safetensors_file::map) and a file
/// sink, memory stays at a few chunks whatever the cache's size.
template <backend::Backend Backend = backend::simd>
void compress_safetensors_to(const safetensors_file& file, const compress_options& options, const format::byte_sink& sink,
                             skv_summary* summary = nullptr, const progress_fn& progress = {}) {
    const auto start = std::chrono::steady_clock::now();
    const kv_cache_view cache = kv_view(file);
    const auto T = cache.layout.tokens;
    const auto stored_ids = token_ids_of(file, T);
    const auto stored_nll = nll_of(file, T);
    const bool use_tokens = stored_ids.has_value(), use_nll = stored_nll.has_value();
    const std::vector<std::int32_t> ids = stored_ids.value_or(std::vector<std::int32_t>{});
    const std::vector<float> nll = stored_nll.value_or(std::vector<float>{});
    auto codec = make_codec<Backend>(options.codec, options.resources, executor_for(options.threads));
    // Token mode codes the ids under a model; the nll side data (another engine's −ln p, 32 bits a
    // token) would outweigh the whole payload, so it is dropped (the model recomputes its own).
    const bool keep_nll = use_nll && !codec.codes_token_ids;
    format::preamble p;
    p.layout = cache.layout;
    apply_options(p, options);
    p.has_token_ids = use_tokens;
    p.has_nll = keep_nll;
    p.metadata = file.metadata();
    for (const auto& [k, v] : options.metadata) p.metadata[k] = v;
    std::uint64_t written = 0;
    format::stream_writer writer(
        [&](std::span<const std::uint8_t> b) {
            written += b.size();
            sink(b);
        },
        p, std::move(codec), writer_options_for(options));
    // A chunk at a time (the same bytes as one append), so progress can be reported; every chunk,
    // the short last one included, is coded straight from the (mapped) file, never staged.
    const std::uint64_t step = std::max<std::uint64_t>(1, writer.header().chunk_tokens);
    for (std::uint64_t t = 0; t < T; t += step) {
        const std::uint64_t e = std::min(T, t + step);
        writer.append(cache, t, e, use_tokens ? std::span<const std::int32_t>(ids).subspan(t, e - t) : std::span<const std::int32_t>{},
                      keep_nll ? std::span<const float>(nll).subspan(t, e - t) : std::span<const float>{}, /*last=*/e == T);
        if (progress) progress(e, T);
    }
    byte_vector extras;
    byte_writer w(extras);
    // Every tensor that is neither K/V nor side data riding in the chunk records.
    std::vector<const tensor_entry*> extra;
    for (const auto& t : file.tensors())
        if (!parse_kv_tensor_name(t.name) && !(use_tokens && t.name == "tokens") && !(use_nll && t.name == "nll"))  // nll: kept or dropped above
            extra.push_back(&t);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(extra.size()));
    for (const auto* t : extra) detail::put_extra_tensor(w, *t);
    writer.add_attachment(tensors_attachment, std::move(extras));
    writer.finish();
    if (summary) {
        summary->kv_bytes = cache.layout.total_bytes();
        summary->output_bytes = written;
        summary->kv_coded_bytes = writer.chunk_record_bytes();
        summary->encode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
}

/// Compresses a parsed KV safetensors file into a .skv image in memory (compress_safetensors_to).
template <backend::Backend Backend = backend::simd>
byte_vector compress_safetensors(const safetensors_file& file, const compress_options& options, skv_summary* summary = nullptr) {
    byte_vector out;
    compress_safetensors_to<Backend>(
        file, options, [&](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }, summary);
    return out;
}

namespace detail {
/// The dump's metadata for tokens [begin, end) of its T: the token count (`n_tokens`) and the
/// positions (`positions` "a..b") it states are the slice's, and `token_range` says which slice
/// ("begin:end of T"); whole-dump statistics (perplexity, nll means) stay as the dump states them.
inline std::map<std::string, std::string> metadata_for_range(std::map<std::string, std::string> m, std::uint64_t begin,
                                                             std::uint64_t end, std::uint64_t T) {
    if (begin == 0 && end == T) return m;
    if (m.contains("n_tokens")) m["n_tokens"] = std::to_string(end - begin);
    if (auto it = m.find("positions"); it != m.end()) {
        const std::string& p = it->second;
        const auto dots = p.find("..");
        std::uint64_t first = 0;
        const auto [ptr, ec] = std::from_chars(p.data(), p.data() + (dots == std::string::npos ? 0 : dots), first);
        if (dots != std::string::npos && ec == std::errc() && ptr == p.data() + dots && end > begin)
            it->second = std::to_string(first + begin) + ".." + std::to_string(first + end - 1);
        else
            m.erase(it);  // a form this does not know how to slice: dropped rather than left wrong
    }
    m["token_range"] = std::to_string(begin) + ":" + std::to_string(end) + " of " + std::to_string(T);
    return m;
}
}  // namespace detail

namespace detail {
/// Per-token side data (ids or nll) of tokens [begin, end), read from the chunk records that hold
/// them only (a range decode does not touch the rest of the file).
template <class T, class Member>
std::vector<T> side_data_of_range(const format::stream_reader& reader, Member member, std::uint64_t begin, std::uint64_t end) {
    std::vector<T> out;
    const auto& chunks = reader.chunks();
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        const std::uint64_t first = chunks[i].first_token, lo = std::max(begin, first), hi = std::min(end, first + chunks[i].tokens);
        if (lo >= hi) continue;
        const auto rec = reader.record(i);
        const auto& v = rec.*member;
        if (v.size() != chunks[i].tokens) throw format_error("chunk " + std::to_string(i) + ": side data does not cover its tokens");
        out.insert(out.end(), v.begin() + std::ptrdiff_t(lo - first), v.begin() + std::ptrdiff_t(hi - first));
    }
    if (out.size() != end - begin) throw format_error("side data does not cover the token range");
    return out;
}

/// The safetensors image of tokens [begin, end) of a stream: the KV tensors (their bytes from `kv`,
/// or deferred when kv is null: the caller writes them), tokens, nll, the other tensors. Tensors
/// with the KV token axis (rank 3, dim 1 == T, or `tokens`/`nll`) are sliced to the range.
inline safetensors_builder safetensors_of_range(const format::stream_reader& reader, std::uint64_t begin, std::uint64_t end,
                                                const chunk_buffer* kv) {
    const std::uint64_t T = reader.tokens();
    const std::uint64_t n = end - begin;
    safetensors_builder b;
    b.set_metadata(metadata_for_range(reader.header().metadata, begin, end, T));
    const kv_layout L = reader.layout();
    for (std::uint32_t l = 0; l < L.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            if (kv) b.add(kv_tensor_name(l, kind), L.type, {L.kv_heads, n, L.head_dim}, kv->block(l, kind));
            else b.add_deferred(kv_tensor_name(l, kind), L.type, {L.kv_heads, n, L.head_dim});
        }
    if (reader.header().has_token_ids) {
        const auto ids = side_data_of_range<std::int32_t>(reader, &format::chunk_record::token_ids, begin, end);
        b.add("tokens", dtype::i32, {n}, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(ids.data()), n * 4));
    } else if (kv && kv->token_ids.size() == n && n > 0) {  // token mode: the ids are what the payload coded
        b.add("tokens", dtype::i32, {n}, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(kv->token_ids.data()), n * 4));
    }
    if (reader.header().has_nll) {
        const auto nll = side_data_of_range<float>(reader, &format::chunk_record::nll, begin, end);
        b.add("nll", dtype::f32, {n}, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(nll.data()), n * 4));
    }
    if (auto extras = reader.find_attachment(tensors_attachment)) {
        byte_reader r(*extras, "tensors attachment");
        const auto count = r.get<std::uint32_t>();
        if (count > extras->size()) throw format_error("tensors attachment: tensor count");
        for (std::uint32_t i = 0; i < count; ++i) {
            auto t = get_extra_tensor(r);
            if (t.shape.size() == 3 && t.shape[1] == T && (begin != 0 || end != T)) {
                const std::size_t row = t.shape[2] * dtype_size(t.type);
                byte_vector sliced;
                for (std::uint64_t h = 0; h < t.shape[0]; ++h)
                    sliced.insert(sliced.end(), t.bytes.begin() + (h * T + begin) * row, t.bytes.begin() + (h * T + end) * row);
                t.shape[1] = n;
                t.bytes = std::move(sliced);
            }
            b.add(t.name, t.type, t.shape, t.bytes);
        }
        if (!r.at_end()) throw format_error("tensors attachment: trailing bytes");
    }
    return b;
}
}  // namespace detail

/// Decodes a .skv image back into a safetensors image (all tokens, or [begin, end)).
/// Tensors with the KV token axis (rank 3, dim 1 == T, or `tokens`/`nll`) are sliced to the range.
template <backend::Backend Backend = backend::simd>
byte_vector decompress_to_safetensors(std::span<const std::uint8_t> skv, std::uint64_t begin = 0,
                                      std::optional<std::uint64_t> end_opt = std::nullopt,
                                      const resource_provider& resources = {}, unsigned threads = 1) {
    format::stream_reader reader(skv);
    reader.require_resources(resources);
    const std::uint64_t end = end_opt.value_or(reader.tokens());
    const chunk_buffer kv =
        reader.decode(make_codec<Backend>(reader.header().codec, resources, executor_for(threads)), begin, end, resources);
    return detail::safetensors_of_range(reader, begin, end, &kv).serialize();
}

/// decompress_to_safetensors's bytes, written through `write_at(offset, bytes)` (e.g. a file_sink)
/// one chunk at a time: memory holds one decoded chunk, not the cache, so a .skv mapped in place
/// (mapped_file) decodes into a file larger than memory. Codecs with dependent chunks (token mode)
/// decode the range at once.
template <backend::Backend Backend = backend::simd, class WriteAt>
void decompress_to_safetensors_at(std::span<const std::uint8_t> skv, WriteAt&& write_at, std::uint64_t begin = 0,
                                  std::optional<std::uint64_t> end_opt = std::nullopt, const resource_provider& resources = {},
                                  unsigned threads = 1, const progress_fn& progress = {}) {
    format::stream_reader reader(skv);
    reader.require_resources(resources);
    const std::uint64_t end = end_opt.value_or(reader.tokens());
    require_usage(begin <= end && end <= reader.tokens(), "decode: token range outside the stream");
    const auto codec = make_codec<Backend>(reader.header().codec, resources, executor_for(threads));
    if (codec.dependent_chunks || codec.codes_token_ids) {
        const chunk_buffer kv = reader.decode(codec, begin, end, resources);
        write_at(std::uint64_t(0), std::span<const std::uint8_t>(detail::safetensors_of_range(reader, begin, end, &kv).serialize()));
        return;
    }
    const auto plan = detail::safetensors_of_range(reader, begin, end, nullptr).write_eager(write_at);
    const kv_layout L = reader.layout();
    const std::uint64_t n = end - begin;
    const std::size_t row = std::size_t(L.head_dim) * dtype_size(L.type);
    chunk_buffer part;  // one buffer for every chunk: its pages are touched once
    for (const auto& c : reader.chunks()) {
        const std::uint64_t lo = std::max(begin, c.first_token), hi = std::min(end, c.first_token + c.tokens);
        if (lo >= hi) continue;
        reader.decode_into(part, codec, lo, hi, resources);  // this chunk only
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const std::uint64_t base = plan.data_offsets[2 * std::size_t(l) + std::size_t(kind)];
                const auto blk = part.block(l, kind);
                for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                    write_at(base + (std::uint64_t(h) * n + (lo - begin)) * row, blk.subspan(std::size_t(h) * (hi - lo) * row, (hi - lo) * row));
            }
        if (progress) progress(hi - begin, n);
    }
}

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
