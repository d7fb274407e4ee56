// Streaming .skv writer: append tokens as they are generated, flush whole chunks as soon as they
// are full; optionally store payloads elsewhere by content hash and chain dependent chunks.
#pragma once

#include <algorithm>
#include <any>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "seqkv/core/any_codec.hpp"
#include "seqkv/format/index.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::format {

/// Byte sink that receives the file's bytes in order; e.g. appends to a vector or writes to a file.
using byte_sink = std::function<void(std::span<const std::uint8_t>)>;

/// Offered each chunk payload with its content_hash64; returns true when it stored the payload
/// elsewhere (e.g. in a prefix store), so that the record names it by hash instead of holding it,
/// false to keep it inline. A reader then finds it as resource (chunk_payload, hash).
using external_payload_fn = std::function<bool(std::uint64_t content_hash, std::span<const std::uint8_t> payload)>;

/// How a stream_writer stores payloads and what its codec sees.
struct writer_options {
    external_payload_fn external_payloads;       // null: every payload inline
    std::size_t min_external_payload_bytes = 0;  // smaller payloads are never offered
    const resource_provider* resources = nullptr;  // passed to the codec in chunk_input::resources
};

/// Writes a .skv stream (format_version) chunk by chunk. The resource table is the preamble's
/// plus the codec's `resources`; the keyframe interval is the preamble's for a codec with
/// dependent chunks and 1 otherwise. Call finish() once at the end; a stream without its trailer
/// is incomplete (the reader rejects it).
class stream_writer {
public:
    stream_writer(byte_sink sink, preamble header, any_chunk_codec codec, writer_options options = {})
        : sink_(std::move(sink)), header_(std::move(header)), codec_(std::move(codec)), options_(std::move(options)) {
        require_usage(header_.chunk_tokens > 0, "stream_writer: chunk_tokens must be positive");
        require_usage(is_kv_float(header_.layout.type), "stream_writer: the cache must be BF16, F16, F32, F8_E4M3 or F8_E5M2");
        require_usage(header_.layout.layers > 0 && header_.layout.kv_heads > 0 && header_.layout.head_dim > 0,
                      "stream_writer: layers, heads and head_dim must be positive");
        require_usage(header_.keyframe_interval > 0, "stream_writer: keyframe_interval must be positive");
        if (!codec_.dependent_chunks) header_.keyframe_interval = 1;
        if (codec_.whole_context) header_.keyframe_interval = std::numeric_limits<std::uint32_t>::max();
        if (codec_.codes_token_ids) {  // the codec codes the ids: it needs them, the records carry none
            require_usage(header_.has_token_ids, "stream_writer: this codec (token mode) needs the token ids");
            header_.has_token_ids = false;
            codec_reads_ids_ = true;
        }
        for (const auto& r : codec_.resources) add_resource(header_.resources, r);
        const container_limits limits;
        require_usage(header_.resources.size() <= limits.max_resources, "stream_writer: too many resources");
        for (const auto& r : header_.resources)
            require_usage(std::uint16_t(r.kind) >= 1 && std::uint16_t(r.kind) <= max_resource_kind &&
                              r.name.size() <= limits.max_resource_name_bytes,
                          "stream_writer: resource kind or name length out of range");
        header_.layout.tokens = 0;
        const byte_vector body = encode_preamble(header_);
        byte_vector out(file_magic, file_magic + 8);
        byte_writer w(out);
        w.put<std::uint16_t>(format_version);
        w.put<std::uint16_t>(0);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(body.size()));
        w.put_bytes(body);
        w.put<std::uint32_t>(crc32c(body));
        emit(out);
    }

    /// Appends one token: keys[l] / values[l] hold that layer's [kv_heads, head_dim] elements.
    void append_token(std::span<const std::span<const std::uint8_t>> keys,
                      std::span<const std::span<const std::uint8_t>> values, std::int32_t token_id = 0,
                      float nll = 0.0f) {
        require_usage(!finished_, "stream_writer: append after finish");
        require_usage(!ended_short_, "stream_writer: append after a short (last) chunk");
        const auto& L = header_.layout;
        const std::size_t es = dtype_size(L.type), row = std::size_t(L.head_dim) * es;
        require_usage(keys.size() == L.layers && values.size() == L.layers, "append_token: one K and V per layer");
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto src = kind == kv_kind::key ? keys[l] : values[l];
                require_usage(src.size() == L.kv_heads * row, "append_token: wrong number of bytes for a layer");
                auto block = staging().block(l, kind);
                for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                    std::copy_n(src.data() + h * row, row,
                                block.data() + (std::size_t(h) * header_.chunk_tokens + staged_) * row);
            }
        ids_.push_back(token_id);
        nll_.push_back(nll);
        if (++staged_ == header_.chunk_tokens) flush();
    }

    /// Appends tokens [begin, end) of a cache (any strides); ids / nll cover the same range or are empty.
    /// Whole chunks at a chunk boundary are coded straight from the cache; the rest is staged.
    /// last: no tokens follow (finish() comes next), so a short final chunk is coded from the
    /// cache too, without staging.
    void append(const kv_cache_view& cache, std::uint64_t begin, std::uint64_t end,
                std::span<const std::int32_t> token_ids = {}, std::span<const float> nll = {}, bool last = false) {
        require_usage(!finished_, "stream_writer: append after finish");
        require_usage(!ended_short_ || begin == end, "stream_writer: append after a short (last) chunk");
        cache.validate();
        require_usage(cache.layout.layers == header_.layout.layers && cache.layout.kv_heads == header_.layout.kv_heads &&
                          cache.layout.head_dim == header_.layout.head_dim && cache.layout.type == header_.layout.type,
                      "stream_writer: cache layout differs from the stream's");
        require_usage(begin <= end && end <= cache.layout.tokens, "stream_writer: token range outside the cache");
        require_usage(token_ids.empty() || token_ids.size() == end - begin, "stream_writer: token_ids size");
        require_usage(nll.empty() || nll.size() == end - begin, "stream_writer: nll size");
        const auto& L = header_.layout;
        const std::size_t es = dtype_size(L.type), row = std::size_t(L.head_dim) * es;
        const bool ids_given = !token_ids.empty() || !(header_.has_token_ids || codec_reads_ids_);
        const bool nll_given = !nll.empty() || !header_.has_nll;
        for (std::uint64_t t = begin; t < end;) {
            if (staged_ == 0 && (end - t >= header_.chunk_tokens || last) && ids_given && nll_given) {
                // A whole chunk (or the last one) at a chunk boundary: coded from the caller's cache, no staging copy.
                const std::uint64_t n = std::min<std::uint64_t>(end - t, header_.chunk_tokens);
                encode_chunk(cache, t, t + n, token_ids.empty() ? token_ids : token_ids.subspan(t - begin, n),
                             nll.empty() ? nll : nll.subspan(t - begin, n));
                t += n;
                ended_short_ = n < header_.chunk_tokens;
                continue;
            }
            const std::uint64_t n = std::min<std::uint64_t>(end - t, header_.chunk_tokens - staged_);
            for (std::uint32_t l = 0; l < L.layers; ++l)
                for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                    const auto& src = cache.tensor(l, kind);
                    auto block = staging().block(l, kind);
                    for (std::uint32_t h = 0; h < L.kv_heads; ++h) {
                        std::span<std::uint8_t> dst(block.data() + (std::size_t(h) * header_.chunk_tokens + staged_) * row,
                                                    std::size_t(n) * row);
                        kv_tensor_view one_head = src;
                        one_head.data = src.element(h, 0, 0);
                        one_head.heads = 1;
                        gather_block(one_head, t, t + n, dst);
                    }
                }
            for (std::uint64_t i = 0; i < n; ++i) {
                ids_.push_back(token_ids.empty() ? 0 : token_ids[t - begin + i]);
                nll_.push_back(nll.empty() ? 0.0f : nll[t - begin + i]);
            }
            staged_ += static_cast<std::uint32_t>(n);
            t += n;
            if (staged_ == header_.chunk_tokens) flush();
        }
    }

    /// Appends one chunk encoded earlier and stored outside the file (e.g. a prefix store's chunk):
    /// the next `tokens` tokens, their ids / nll (as the preamble declares), the payload's length
    /// and content_hash64. The reader finds the payload as resource (chunk_payload, hash). Only at
    /// a chunk boundary (nothing staged), for a codec without dependent chunks, with chunk_tokens
    /// tokens except for the stream's last chunk.
    void append_external(std::uint32_t tokens, std::span<const std::int32_t> ids, std::span<const float> nll,
                         std::uint32_t payload_len, std::uint64_t payload_hash) {
        require_usage(!finished_ && staged_ == 0 && !codec_.dependent_chunks, "stream_writer: append_external between chunks only");
        require_usage(tokens > 0 && tokens <= header_.chunk_tokens, "stream_writer: append_external takes one chunk of tokens");
        require_usage(!ended_short_, "stream_writer: a chunk shorter than chunk_tokens must be the last");
        require_usage(ids.size() == (header_.has_token_ids ? tokens : 0) && nll.size() == (header_.has_nll ? tokens : 0),
                      "stream_writer: ids / nll must match the preamble and the chunk");
        byte_vector record;
        append_chunk_record(record, tokens_written_, tokens, chunk_external, ids, nll, {}, payload_hash, payload_len);
        chunks_.push_back({offset_, tokens_written_, tokens, static_cast<std::uint32_t>(record.size()), chunk_external});
        emit(record);
        tokens_written_ += tokens;
        ended_short_ = tokens < header_.chunk_tokens;
    }

    /// Adds a named blob stored after the chunks (written by finish()).
    void add_attachment(std::string name, byte_vector bytes) {
        require_usage(!finished_, "stream_writer: add_attachment after finish");
        require_usage(valid_utf8(name), "stream_writer: attachment names must be UTF-8");
        attachments_.push_back({std::move(name), std::move(bytes)});
    }

    /// Flushes the last partial chunk and writes attachments, index and trailer.
    void finish() {
        require_usage(!finished_, "stream_writer: finish called twice");
        if (staged_ > 0) flush();
        byte_vector tail;
        append_tail(tail, offset_, chunks_, attachments_, tokens_written_);
        emit(tail);
        finished_ = true;
    }

    /// The preamble as written (resource table and keyframe interval included).
    const preamble& header() const { return header_; }
    /// Index entries of the chunks written so far.
    const std::vector<chunk_entry>& chunks() const { return chunks_; }
    /// Tokens accepted so far.
    std::uint64_t tokens() const { return tokens_written_ + staged_; }
    /// Bytes of the chunk records written so far (the coded KV, side data and framing included;
    /// external payloads are not in the file and not counted).
    std::uint64_t chunk_record_bytes() const {
        std::uint64_t n = 0;
        for (const auto& c : chunks_) n += c.record_bytes;
        return n;
    }
    /// Bytes emitted to the sink so far.
    std::uint64_t bytes_written() const { return offset_; }

private:
    void emit(std::span<const std::uint8_t> bytes) {
        sink_(bytes);
        offset_ += bytes.size();
    }
    /// The staging buffer, allocated when first needed (a caller appending whole chunks never needs it).
    chunk_buffer& staging() {
        if (staging_.bytes.empty()) staging_ = chunk_buffer::for_layout(header_.layout, header_.chunk_tokens);
        return staging_;
    }
    void flush() {
        kv_cache_view view;
        view.layout = header_.layout;
        view.layout.tokens = staged_;
        const auto strides = kv_strides::head_major(header_.chunk_tokens, header_.layout.head_dim);
        for (std::uint32_t l = 0; l < header_.layout.layers; ++l) {
            view.keys.push_back({staging().block(l, kv_kind::key).data(), view.layout.type, view.layout.kv_heads, staged_,
                                 view.layout.head_dim, strides});
            view.values.push_back({staging().block(l, kv_kind::value).data(), view.layout.type, view.layout.kv_heads,
                                   staged_, view.layout.head_dim, strides});
        }
        const std::uint32_t tokens = staged_;
        encode_chunk(view, 0, tokens, header_.has_token_ids || codec_reads_ids_ ? std::span<const std::int32_t>(ids_) : std::span<const std::int32_t>{},
                     header_.has_nll ? std::span<const float>(nll_) : std::span<const float>{});
        staged_ = 0;
        ids_.clear();
        nll_.clear();
    }
    /// Codes tokens [begin, end) of view as the next chunk (ids / nll: as the preamble and codec take them) and emits its record.
    void encode_chunk(const kv_cache_view& view, std::uint64_t begin, std::uint64_t end, std::span<const std::int32_t> ids,
                      std::span<const float> nll) {
        const auto staged = static_cast<std::uint32_t>(end - begin);
        std::uint8_t flags = 0;
        if (codec_.dependent_chunks) {
            if (chunks_.size() % header_.keyframe_interval == 0) carry_.reset();
            else flags |= chunk_dependent;
        }
        chunk_input in{&view, begin, end, header_.has_token_ids || codec_reads_ids_ ? ids : std::span<const std::int32_t>{},
                       header_.has_nll ? nll : std::span<const float>{}, options_.resources, codec_.dependent_chunks ? &carry_ : nullptr};
        in.position_base = tokens_written_ - begin;  // token `begin` is the chunk's first (mod 2^64: only base + t is used)
        const byte_vector payload = codec_.encode(in);
        require_usage(payload.size() <= std::numeric_limits<std::uint32_t>::max() - (1u << 24),
                      "stream_writer: chunk payload over 4 GiB");
        std::uint64_t hash = 0;
        if (options_.external_payloads && payload.size() >= options_.min_external_payload_bytes) {
            hash = content_hash64(payload);
            if (options_.external_payloads(hash, payload)) flags |= chunk_external;
        }
        // The record (append_chunk_record's bytes) goes out in three pieces, the payload from where
        // the codec left it: head (header, ids, nll), payload unless external, CRC of both.
        byte_vector head;
        head.reserve(64 + 8 * std::size_t(staged));
        append_chunk_record_head(head, tokens_written_, staged, flags, header_.has_token_ids ? in.token_ids : std::span<const std::int32_t>{},
                                 in.nll, static_cast<std::uint32_t>(payload.size()), hash);
        const std::span<const std::uint8_t> inline_payload =
            flags & chunk_external ? std::span<const std::uint8_t>{} : std::span<const std::uint8_t>(payload);
        byte_vector crc;
        byte_writer(crc).put<std::uint32_t>(crc32c_update(crc32c(head), inline_payload));
        chunks_.push_back({offset_, tokens_written_, staged, static_cast<std::uint32_t>(head.size() + inline_payload.size() + 4), flags});
        emit(head);
        if (!inline_payload.empty()) emit(inline_payload);
        emit(crc);
        tokens_written_ += staged;
    }

    byte_sink sink_;
    preamble header_;
    any_chunk_codec codec_;
    writer_options options_;
    chunk_buffer staging_;
    std::any carry_;  // dependent codecs: the state the last chunk left (reset at each keyframe)
    std::uint32_t staged_ = 0;
    std::vector<std::int32_t> ids_;
    std::vector<float> nll_;
    std::vector<chunk_entry> chunks_;
    std::vector<attachment> attachments_;
    std::uint64_t offset_ = 0;
    std::uint64_t tokens_written_ = 0;
    bool finished_ = false;
    bool codec_reads_ids_ = false;  // codes_token_ids: ids go to the codec, not into the records
    bool ended_short_ = false;  // append_external or append(last) wrote a chunk shorter than chunk_tokens
};

}  // namespace seqkv::format

SEQKV_FP_STRICT_END
