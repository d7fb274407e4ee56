// Streaming .skv writer (append tokens as they are generated, flush whole chunks) and a
// random-access reader (decode everything, or only the chunks a token range needs).
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "seqkv/core/any_codec.hpp"
#include "seqkv/format/container.hpp"

namespace seqkv::format {

/// Byte sink that receives the file's bytes in order; e.g. appends to a vector or writes to a file.
using byte_sink = std::function<void(std::span<const std::uint8_t>)>;

/// Appends the attachments, the chunk index and the trailer of a stream whose chunk records end
/// at byte `offset`.
inline void append_tail(byte_vector& out, std::uint64_t offset, std::span<const chunk_entry> chunks,
                        std::span<const attachment> attachments, std::uint64_t tokens) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> places;
    for (const auto& a : attachments) {
        byte_vector rec;
        byte_writer w(rec);
        w.put_string(a.name);
        w.put<std::uint64_t>(a.bytes.size());
        w.put_bytes(a.bytes);
        w.put<std::uint32_t>(crc32c(rec));
        places.emplace_back(offset, rec.size());
        offset += rec.size();
        out.insert(out.end(), rec.begin(), rec.end());
    }
    byte_vector index;
    byte_writer w(index);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(chunks.size()));
    for (const auto& c : chunks) {
        w.put<std::uint64_t>(c.offset);
        w.put<std::uint64_t>(c.first_token);
        w.put<std::uint32_t>(c.tokens);
        w.put<std::uint32_t>(c.record_bytes);
    }
    w.put<std::uint32_t>(static_cast<std::uint32_t>(places.size()));
    for (auto [off, len] : places) {
        w.put<std::uint64_t>(off);
        w.put<std::uint64_t>(len);
    }
    const std::uint64_t index_bytes = index.size();
    w.put<std::uint64_t>(offset);  // where the index starts
    w.put<std::uint64_t>(index_bytes);
    w.put<std::uint64_t>(tokens);
    w.put<std::uint32_t>(crc32c(index));
    w.put_bytes(trailer_magic);
    out.insert(out.end(), index.begin(), index.end());
}

/// Writes a .skv stream chunk by chunk. Call finish() once at the end; a stream without its
/// trailer is incomplete (the reader rejects it).
class stream_writer {
public:
    stream_writer(byte_sink sink, preamble header, any_chunk_codec codec)
        : sink_(std::move(sink)), header_(std::move(header)), codec_(std::move(codec)) {
        require_usage(header_.chunk_tokens > 0, "stream_writer: chunk_tokens must be positive");
        header_.layout.tokens = 0;
        staging_ = chunk_buffer::for_layout(header_.layout, header_.chunk_tokens);
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
        const auto& L = header_.layout;
        const std::size_t es = dtype_size(L.type), row = std::size_t(L.head_dim) * es;
        require_usage(keys.size() == L.layers && values.size() == L.layers, "append_token: one K and V per layer");
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto src = kind == kv_kind::key ? keys[l] : values[l];
                require_usage(src.size() == L.kv_heads * row, "append_token: wrong number of bytes for a layer");
                auto block = staging_.block(l, kind);
                for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                    std::copy_n(src.data() + h * row, row,
                                block.data() + (std::size_t(h) * header_.chunk_tokens + staged_) * row);
            }
        ids_.push_back(token_id);
        nll_.push_back(nll);
        if (++staged_ == header_.chunk_tokens) flush();
    }

    /// Appends tokens [begin, end) of a cache (any strides); ids / nll cover the same range or are empty.
    void append(const kv_cache_view& cache, std::uint64_t begin, std::uint64_t end,
                std::span<const std::int32_t> token_ids = {}, std::span<const float> nll = {}) {
        require_usage(!finished_, "stream_writer: append after finish");
        cache.validate();
        require_usage(cache.layout.layers == header_.layout.layers && cache.layout.kv_heads == header_.layout.kv_heads &&
                          cache.layout.head_dim == header_.layout.head_dim && cache.layout.type == header_.layout.type,
                      "stream_writer: cache layout differs from the stream's");
        require_usage(begin <= end && end <= cache.layout.tokens, "stream_writer: token range outside the cache");
        require_usage(token_ids.empty() || token_ids.size() == end - begin, "stream_writer: token_ids size");
        require_usage(nll.empty() || nll.size() == end - begin, "stream_writer: nll size");
        const auto& L = header_.layout;
        const std::size_t es = dtype_size(L.type), row = std::size_t(L.head_dim) * es;
        for (std::uint64_t t = begin; t < end;) {
            const std::uint64_t n = std::min<std::uint64_t>(end - t, header_.chunk_tokens - staged_);
            for (std::uint32_t l = 0; l < L.layers; ++l)
                for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                    const auto& src = cache.tensor(l, kind);
                    auto block = staging_.block(l, kind);
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

    /// Adds a named blob stored after the chunks (written by finish()).
    void add_attachment(std::string name, byte_vector bytes) {
        require_usage(!finished_, "stream_writer: add_attachment after finish");
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

    /// Tokens accepted so far.
    std::uint64_t tokens() const { return tokens_written_ + staged_; }
    /// Bytes of the chunk records written so far (the coded KV, side data and framing included).
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
    void flush() {
        kv_cache_view view;
        view.layout = header_.layout;
        view.layout.tokens = staged_;
        const auto strides = kv_strides::head_major(header_.chunk_tokens, header_.layout.head_dim);
        for (std::uint32_t l = 0; l < header_.layout.layers; ++l) {
            view.keys.push_back({staging_.block(l, kv_kind::key).data(), view.layout.type, view.layout.kv_heads, staged_,
                                 view.layout.head_dim, strides});
            view.values.push_back({staging_.block(l, kv_kind::value).data(), view.layout.type, view.layout.kv_heads,
                                   staged_, view.layout.head_dim, strides});
        }
        chunk_input in{&view, 0, staged_, header_.has_token_ids ? std::span<const std::int32_t>(ids_) : std::span<const std::int32_t>{},
                       header_.has_nll ? std::span<const float>(nll_) : std::span<const float>{}};
        const byte_vector payload = codec_.encode(in);
        byte_vector record;
        append_chunk_record(record, tokens_written_, staged_, in.token_ids, in.nll, payload);
        chunks_.push_back({offset_, tokens_written_, staged_, static_cast<std::uint32_t>(record.size())});
        emit(record);
        tokens_written_ += staged_;
        staged_ = 0;
        ids_.clear();
        nll_.clear();
    }

    byte_sink sink_;
    preamble header_;
    any_chunk_codec codec_;
    chunk_buffer staging_;
    std::uint32_t staged_ = 0;
    std::vector<std::int32_t> ids_;
    std::vector<float> nll_;
    std::vector<chunk_entry> chunks_;
    std::vector<attachment> attachments_;
    std::uint64_t offset_ = 0;
    std::uint64_t tokens_written_ = 0;
    bool finished_ = false;
};

/// Reads a complete .skv image held in memory. The constructor validates the preamble, the
/// trailer and the index (offsets, token coverage) before anything else is read.
class stream_reader {
public:
    explicit stream_reader(std::span<const std::uint8_t> file, const container_limits& limits = {})
        : file_(file), limits_(limits) {
        byte_reader r(file, "skv stream");
        auto magic = r.get_bytes(8);
        if (!std::equal(magic.begin(), magic.end(), file_magic)) throw format_error("not a seqkv stream (bad magic)");
        const auto version = r.get<std::uint16_t>();
        if (version != format_version) throw format_error("unsupported seqkv format version " + std::to_string(version));
        r.get<std::uint16_t>();
        const auto body_len = r.get<std::uint32_t>();
        if (body_len > limits.max_preamble_bytes) throw limit_error("preamble length " + std::to_string(body_len));
        const auto body = r.get_bytes(body_len);
        if (crc32c(body) != r.get<std::uint32_t>()) throw checksum_error("preamble");
        header_ = decode_preamble(body, limits);
        data_begin_ = r.position();
        read_index();
    }

    const preamble& header() const { return header_; }
    /// Total tokens in the stream.
    std::uint64_t tokens() const { return tokens_; }
    /// Layout of the whole cache.
    kv_layout layout() const {
        kv_layout l = header_.layout;
        l.tokens = tokens_;
        return l;
    }
    const std::vector<chunk_entry>& chunks() const { return chunks_; }

    /// Reads and checks chunk i's record.
    chunk_record record(std::size_t i) const {
        const auto& c = chunks_.at(i);
        auto rec = read_chunk_record(file_.subspan(c.offset, c.record_bytes), header_);
        if (rec.first_token != c.first_token || rec.tokens != c.tokens)
            throw format_error("chunk " + std::to_string(i) + " disagrees with the index");
        return rec;
    }

    /// Decodes tokens [begin, end) (default: all) with the given codec.
    chunk_buffer decode(const any_chunk_codec& codec, std::uint64_t begin = 0,
                        std::optional<std::uint64_t> end_opt = std::nullopt) const {
        const std::uint64_t end = end_opt.value_or(tokens_);
        require_usage(begin <= end && end <= tokens_, "decode: token range outside the stream");
        kv_layout out_layout = header_.layout;
        out_layout.tokens = end - begin;
        if (out_layout.total_bytes() > limits_.max_chunk_decoded_bytes * 64) throw limit_error("decode: range too large");
        chunk_buffer out = chunk_buffer::for_layout(header_.layout, end - begin);
        const std::size_t es = dtype_size(header_.layout.type), row = std::size_t(header_.layout.head_dim) * es;
        for (std::size_t i = 0; i < chunks_.size(); ++i) {
            const auto& c = chunks_[i];
            if (c.first_token + c.tokens <= begin || c.first_token >= end) continue;
            const chunk_record rec = record(i);
            chunk_buffer part = chunk_buffer::for_layout(header_.layout, c.tokens);
            chunk_input in{nullptr, c.first_token, c.first_token + c.tokens, rec.token_ids, rec.nll};
            codec.decode(rec.payload, in, part);
            const std::uint64_t lo = std::max(begin, c.first_token), hi = std::min(end, c.first_token + c.tokens);
            for (std::uint32_t l = 0; l < header_.layout.layers; ++l)
                for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                    auto src = part.block(l, kind);
                    auto dst = out.block(l, kind);
                    for (std::uint32_t h = 0; h < header_.layout.kv_heads; ++h)
                        std::copy_n(src.data() + (std::size_t(h) * c.tokens + (lo - c.first_token)) * row,
                                    std::size_t(hi - lo) * row,
                                    dst.data() + (std::size_t(h) * (end - begin) + (lo - begin)) * row);
                }
        }
        return out;
    }

    /// Token ids of [begin, end) as stored in the chunk records (empty if the stream has none).
    std::vector<std::int32_t> token_ids() const { return side_data<std::int32_t>(&chunk_record::token_ids, header_.has_token_ids); }
    /// nll of every token (empty if the stream has none).
    std::vector<float> nll() const { return side_data<float>(&chunk_record::nll, header_.has_nll); }

    /// Byte offset where the chunk records end (attachments, then the index, follow).
    std::uint64_t chunks_end() const { return chunks_.empty() ? data_begin_ : chunks_.back().offset + chunks_.back().record_bytes; }
    /// All attachments, in file order.
    const std::vector<attachment>& attachments() const { return attachments_; }

    /// Names of the attachments, in file order.
    std::vector<std::string> attachment_names() const {
        std::vector<std::string> names;
        for (const auto& a : attachments_) names.push_back(a.name);
        return names;
    }
    /// The attachment called name (CRC-checked), or nullopt.
    std::optional<byte_vector> find_attachment(std::string_view name) const {
        for (const auto& a : attachments_)
            if (a.name == name) return a.bytes;
        return std::nullopt;
    }

private:
    template <class T, class Member>
    std::vector<T> side_data(Member member, bool present) const {
        std::vector<T> out;
        if (!present) return out;
        for (std::size_t i = 0; i < chunks_.size(); ++i) {
            auto rec = record(i);
            const auto& v = rec.*member;
            out.insert(out.end(), v.begin(), v.end());
        }
        return out;
    }

    void read_index() {
        constexpr std::size_t trailer_bytes = 8 + 8 + 8 + 4 + 8;
        if (file_.size() < data_begin_ + trailer_bytes) throw format_error("stream truncated: no trailer");
        byte_reader t(file_.subspan(file_.size() - trailer_bytes), "trailer");
        const auto index_offset = t.get<std::uint64_t>();
        const auto index_len = t.get<std::uint64_t>();
        tokens_ = t.get<std::uint64_t>();
        const auto crc = t.get<std::uint32_t>();
        auto magic = t.get_bytes(8);
        if (!std::equal(magic.begin(), magic.end(), trailer_magic)) throw format_error("stream truncated: bad trailer magic");
        if (index_offset < data_begin_ || index_offset > file_.size() - trailer_bytes ||
            index_len != file_.size() - trailer_bytes - index_offset)
            throw format_error("trailer: index position is inconsistent with the file size");
        if (tokens_ > limits_.max_tokens) throw limit_error("trailer: token count " + std::to_string(tokens_));
        const auto checked = file_.subspan(index_offset, file_.size() - 12 - index_offset);
        if (crc32c(checked) != crc) throw checksum_error("index");
        byte_reader r(file_.subspan(index_offset, index_len), "index");
        const auto n = r.get<std::uint32_t>();
        if (n > r.remaining() / 24) throw format_error("index: chunk count exceeds the index");
        std::uint64_t expect_offset = data_begin_, expect_token = 0;
        for (std::uint32_t i = 0; i < n; ++i) {
            chunk_entry c{r.get<std::uint64_t>(), r.get<std::uint64_t>(), r.get<std::uint32_t>(), r.get<std::uint32_t>()};
            if (c.offset != expect_offset || c.first_token != expect_token || c.tokens == 0 ||
                c.tokens > header_.chunk_tokens || c.record_bytes > index_offset - c.offset)
                throw format_error("index: chunk " + std::to_string(i) + " is inconsistent");
            expect_offset += c.record_bytes;
            expect_token += c.tokens;
            chunks_.push_back(c);
        }
        if (expect_token != tokens_) throw format_error("index: chunks do not cover the token count");
        const auto n_att = r.get<std::uint32_t>();
        if (n_att > limits_.max_attachments || n_att > r.remaining() / 16) throw format_error("index: attachment count");
        for (std::uint32_t i = 0; i < n_att; ++i) {
            const auto off = r.get<std::uint64_t>(), len = r.get<std::uint64_t>();
            if (off != expect_offset || len > index_offset - off) throw format_error("index: attachment place");
            expect_offset += len;
            const auto rec = file_.subspan(off, len);
            if (len < 4) throw format_error("attachment truncated");
            byte_reader crc_r(rec.subspan(len - 4), "attachment");
            if (crc32c(rec.first(len - 4)) != crc_r.get<std::uint32_t>()) throw checksum_error("attachment");
            byte_reader a(rec.first(len - 4), "attachment");
            attachment att;
            att.name = a.get_string();
            const auto size = a.get<std::uint64_t>();
            if (size != a.remaining()) throw format_error("attachment length");
            auto b = a.get_bytes(size);
            att.bytes.assign(b.begin(), b.end());
            attachments_.push_back(std::move(att));
        }
        if (expect_offset != index_offset) throw format_error("index: unaccounted bytes before the index");
    }

    std::span<const std::uint8_t> file_;
    container_limits limits_;
    preamble header_;
    std::size_t data_begin_ = 0;
    std::uint64_t tokens_ = 0;
    std::vector<chunk_entry> chunks_;
    std::vector<attachment> attachments_;
};

/// A copy of a complete stream with attachment `name` added (or replaced); chunks are untouched.
inline byte_vector with_attachment(std::span<const std::uint8_t> file, std::string name, byte_vector bytes) {
    stream_reader reader(file);
    std::vector<attachment> atts;
    for (const auto& a : reader.attachments())
        if (a.name != name) atts.push_back(a);
    atts.push_back({std::move(name), std::move(bytes)});
    byte_vector out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(reader.chunks_end()));
    append_tail(out, out.size(), reader.chunks(), atts, reader.tokens());
    return out;
}

}  // namespace seqkv::format
