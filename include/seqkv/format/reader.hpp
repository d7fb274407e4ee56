// Random-access .skv reader (versions 1 and 2): decodes everything, or only the chunks a token
// range needs — replayed from the keyframe at or before it when chunks are dependent — with the
// resources the file's table names resolved through the caller's provider.
#pragma once

#include <algorithm>
#include <any>
#include <optional>
#include <string>
#include <vector>

#include "seqkv/core/any_codec.hpp"
#include "seqkv/format/index.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::format {

/// Reads a complete .skv image held in memory. The constructor validates the preamble, the
/// trailer and the index (offsets, token coverage, keyframes) before anything else is read.
class stream_reader {
public:
    explicit stream_reader(std::span<const std::uint8_t> file, const container_limits& limits = {})
        : file_(file), limits_(limits) {
        stream_head head = read_stream_head(file, limits);
        version_ = head.version;
        header_ = std::move(head.header);
        data_begin_ = head.data_begin;
        auto index = read_file_index(file_, data_begin_, header_, version_, limits_);
        tokens_ = index.tokens;
        chunks_ = std::move(index.chunks);
        attachments_ = std::move(index.attachments);
    }

    /// The file's format version (1 or 2).
    std::uint16_t version() const { return version_; }
    const preamble& header() const { return header_; }
    /// The resource table: what decoding needs besides the file (empty for version 1).
    const std::vector<resource_ref>& resources() const { return header_.resources; }
    /// Total tokens in the stream.
    std::uint64_t tokens() const { return tokens_; }
    /// Layout of the whole cache.
    kv_layout layout() const {
        kv_layout l = header_.layout;
        l.tokens = tokens_;
        return l;
    }
    const std::vector<chunk_entry>& chunks() const { return chunks_; }

    /// Throws resource_error naming the first resource-table entry that neither `resources` holds
    /// nor is in `resolved` (the resources a codec was built with: make_codec requires them).
    void require_resources(const resource_provider& resources, std::span<const resource_ref> resolved = {}) const {
        for (const auto& ref : header_.resources)
            if (std::find(resolved.begin(), resolved.end(), ref) == resolved.end() &&
                !resources.find<void>(ref.kind, ref.content_hash))
                throw resource_error("missing resource: " + describe(ref));
    }

    /// Reads and checks chunk i's record (an external payload is not looked up).
    chunk_record record(std::size_t i) const {
        const auto& c = chunks_.at(i);
        chunk_record rec;
        try {
            rec = read_chunk_record(file_.subspan(c.offset, c.record_bytes), header_, version_);
        } catch (const checksum_error&) {
            throw checksum_error("chunk " + std::to_string(i) + " (record of " + std::to_string(c.record_bytes) +
                                 " bytes at offset " + std::to_string(c.offset) + ")");
        }
        if (rec.first_token != c.first_token || rec.tokens != c.tokens || rec.flags != c.flags)
            throw format_error("chunk " + std::to_string(i) + " disagrees with the index");
        return rec;
    }

    /// Index of the keyframe chunk at or before chunk i (where decoding chunk i starts).
    std::size_t keyframe_of(std::size_t i) const {
        while (chunks_.at(i).dependent()) --i;  // chunk 0 is never dependent (read_file_index)
        return i;
    }

    /// Decodes tokens [begin, end) (default: all) with the given codec; `resources` supplies the
    /// resource table's objects and external payloads. Dependent chunks are replayed from the
    /// keyframe at or before the range with one carry; chunks before the range decode into scratch.
    chunk_buffer decode(const any_chunk_codec& codec, std::uint64_t begin = 0,
                        std::optional<std::uint64_t> end_opt = std::nullopt, const resource_provider& resources = {}) const {
        chunk_buffer out;
        decode_into(out, codec, begin, end_opt, resources);
        return out;
    }

    /// decode() into `out`, reusing its allocation (a caller decoding chunk after chunk touches
    /// its pages once). Chunks wholly inside the range decode straight into out's rows when the
    /// codec offers decode_into; the others through a staging chunk.
    void decode_into(chunk_buffer& out, const any_chunk_codec& codec, std::uint64_t begin = 0,
                     std::optional<std::uint64_t> end_opt = std::nullopt, const resource_provider& resources = {}) const {
        const std::uint64_t end = end_opt.value_or(tokens_);
        require_usage(begin <= end && end <= tokens_, "decode: token range outside the stream");
        require_resources(resources, codec.resources);
        out.token_ids.clear();
        if (begin == end) {
            out = chunk_buffer::for_layout(header_.layout, 0);
            return;
        }
        const auto first = std::partition_point(chunks_.begin(), chunks_.end(),
                                                [&](const chunk_entry& c) { return c.first_token + c.tokens <= begin; });
        const std::size_t a = std::size_t(first - chunks_.begin());
        const std::size_t start = keyframe_of(a);
        // Every record the range needs is read, CRC-checked and resolved before anything is
        // allocated for decoded KV; then the output and the largest chunk must fit the cap.
        std::vector<chunk_record> records;
        std::uint32_t largest_chunk = 0;
        for (std::size_t i = start; i < chunks_.size() && chunks_[i].first_token < end; ++i) {
            if (chunks_[i].dependent() && !codec.dependent_chunks)
                throw format_error("chunk " + std::to_string(i) + " is dependent but the codec's chunks are self-contained");
            records.push_back(record(i));
            resolve_payload(records.back(), resources);
            largest_chunk = std::max(largest_chunk, chunks_[i].tokens);
            if (codec.check_payload) {
                kv_layout chunk_layout = header_.layout;
                chunk_layout.tokens = chunks_[i].tokens;
                codec.check_payload(records.back().payload, chunk_layout);
            }
        }
        // Bytes per token <= max_chunk_decoded_bytes (checked with the preamble), so no product overflows.
        const std::uint64_t token_bytes = header_.layout.elements_per_token() * dtype_size(header_.layout.type);
        if ((end - begin) + largest_chunk > limits_.max_decode_bytes / token_bytes)
            throw limit_error("decode: " + std::to_string((end - begin) + largest_chunk) + " tokens of " +
                              std::to_string(token_bytes) + " bytes exceed the reader's max_decode_bytes (" +
                              std::to_string(limits_.max_decode_bytes) + ")");
        out.layout = header_.layout;
        out.layout.tokens = end - begin;
        out.bytes.resize(out.layout.total_bytes());  // every row is written below
        const std::size_t es = dtype_size(header_.layout.type), row = std::size_t(header_.layout.head_dim) * es;
        std::any carry;
        for (std::size_t i = start; i < start + records.size(); ++i) {
            const auto& c = chunks_[i];
            chunk_record& rec = records[i - start];
            if (!c.dependent()) carry.reset();
            chunk_input in{nullptr, c.first_token, c.first_token + c.tokens, rec.token_ids, rec.nll, &resources,
                           codec.dependent_chunks ? &carry : nullptr};
            if (i >= a && codec.decode_into && c.first_token >= begin && c.first_token + c.tokens <= end) {
                codec.decode_into(rec.payload, in, chunk_destination::rows_of(out, c.first_token - begin, c.tokens));
                continue;
            }
            chunk_buffer part = chunk_buffer::for_layout(header_.layout, c.tokens);
            codec.decode(rec.payload, in, part);
            if (i < a) continue;  // replayed only for the carry
            const std::uint64_t lo = std::max(begin, c.first_token), hi = std::min(end, c.first_token + c.tokens);
            if (codec.codes_token_ids) {  // token mode: the ids came out of the payload
                if (part.token_ids.size() != c.tokens) throw format_error("chunk " + std::to_string(i) + ": codec returned no token ids");
                out.token_ids.resize(end - begin);
                std::copy_n(part.token_ids.begin() + std::ptrdiff_t(lo - c.first_token), hi - lo, out.token_ids.begin() + std::ptrdiff_t(lo - begin));
            }
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
    }

    /// Token ids of every token as stored in the chunk records (empty if the stream has none).
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

    std::span<const std::uint8_t> file_;
    container_limits limits_;
    std::uint16_t version_ = 0;
    preamble header_;
    std::size_t data_begin_ = 0;
    std::uint64_t tokens_ = 0;
    std::vector<chunk_entry> chunks_;
    std::vector<attachment> attachments_;
};

/// A copy of a complete stream with attachment `name` added (or replaced); chunks are untouched
/// and the copy keeps the source's format version.
inline byte_vector with_attachment(std::span<const std::uint8_t> file, std::string name, byte_vector bytes) {
    stream_reader reader(file);
    std::vector<attachment> atts;
    for (const auto& a : reader.attachments())
        if (a.name != name) atts.push_back(a);
    atts.push_back({std::move(name), std::move(bytes)});
    byte_vector out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(reader.chunks_end()));
    append_tail(out, out.size(), reader.chunks(), atts, reader.tokens(), reader.version());
    return out;
}

}  // namespace seqkv::format

SEQKV_FP_STRICT_END
