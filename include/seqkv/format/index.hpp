// The tail of a .skv stream: attachment records, the chunk index and the trailer; written once
// the chunk records are out, read first (through the trailer) by a reader.
#pragma once

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "seqkv/format/container.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::format {

inline constexpr std::size_t trailer_bytes = 8 + 8 + 8 + 4 + 8;

/// Bytes of one chunk index entry in a file of that version.
constexpr std::size_t index_entry_bytes(std::uint16_t version) { return version >= 2 ? 25 : 24; }

/// Appends the attachments, the chunk index and the trailer of a stream whose chunk records end
/// at byte `offset`, in the index layout of `version` (version-2 entries carry each chunk's flags).
inline void append_tail(byte_vector& out, std::uint64_t offset, std::span<const chunk_entry> chunks,
                        std::span<const attachment> attachments, std::uint64_t tokens,
                        std::uint16_t version = format_version) {
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
        if (version >= 2) w.put<std::uint8_t>(c.flags);
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

/// What the index and trailer of a file say, validated against the file and its preamble.
struct file_index {
    std::uint64_t tokens = 0;
    std::vector<chunk_entry> chunks;
    std::vector<attachment> attachments;  // CRC-checked
};

/// The rules every chunk entry obeys, whether an index lists it or a scan of the records finds it
/// (recover.hpp): entry `i` starts where the previous record ended (`expect_offset`) at the running
/// token count, holds 1..chunk_tokens tokens and known flags only, ends by `end`, and is a keyframe
/// where the keyframe rule wants one. Returns what is wrong, or "" when nothing is.
inline std::string chunk_entry_problem(const chunk_entry& c, std::size_t i, std::uint64_t expect_offset,
                                       std::uint64_t expect_token, std::uint64_t end, const preamble& header) {
    if (c.flags & ~known_chunk_flags) return "unknown chunk flags";
    if (c.tokens == 0 || c.tokens > header.chunk_tokens)
        return "token count " + std::to_string(c.tokens) + " outside 1.." + std::to_string(header.chunk_tokens);
    if (c.offset != expect_offset)
        return "starts at byte " + std::to_string(c.offset) + ", not where the previous record ended (" + std::to_string(expect_offset) + ")";
    if (c.first_token != expect_token)
        return "first_token " + std::to_string(c.first_token) + " is not the running token count " + std::to_string(expect_token);
    if (c.offset > end || c.record_bytes > end - c.offset)
        return "record of " + std::to_string(c.record_bytes) + " bytes at byte " + std::to_string(c.offset) + " runs past byte " +
               std::to_string(end);
    if (c.dependent() && i % header.keyframe_interval == 0)
        return i == 0 ? "depends on a previous chunk but is the first (chunk 0 is always a keyframe)"
                      : "depends on a previous chunk but must be a keyframe (one every " + std::to_string(header.keyframe_interval) +
                            " chunks)";
    return "";
}

/// Reads the trailer, index and attachments of `file` (a stream of that version whose chunk
/// records start at data_begin) and enforces the consistency rules of docs/FORMAT.md, keyframes
/// included: chunk i with i % keyframe_interval == 0 must not be dependent.
inline file_index read_file_index(std::span<const std::uint8_t> file, std::size_t data_begin, const preamble& header,
                                  std::uint16_t version, const container_limits& limits) {
    file_index out;
    if (file.size() < data_begin + trailer_bytes) throw format_error("stream truncated: no trailer");
    byte_reader t(file.subspan(file.size() - trailer_bytes), "trailer");
    const auto index_offset = t.get<std::uint64_t>();
    const auto index_len = t.get<std::uint64_t>();
    out.tokens = t.get<std::uint64_t>();
    const auto crc = t.get<std::uint32_t>();
    auto magic = t.get_bytes(8);
    if (!std::equal(magic.begin(), magic.end(), trailer_magic)) throw format_error("stream truncated: bad trailer magic");
    if (index_offset < data_begin || index_offset > file.size() - trailer_bytes ||
        index_len != file.size() - trailer_bytes - index_offset)
        throw format_error("trailer: index position is inconsistent with the file size");
    if (out.tokens > limits.max_tokens) throw limit_error("trailer: token count " + std::to_string(out.tokens));
    const auto checked = file.subspan(index_offset, file.size() - 12 - index_offset);
    if (crc32c(checked) != crc) throw checksum_error("index");
    byte_reader r(file.subspan(index_offset, index_len), "index");
    const auto n = r.get<std::uint32_t>();
    if (n > r.remaining() / index_entry_bytes(version)) throw format_error("index: chunk count exceeds the index");
    std::uint64_t expect_offset = data_begin, expect_token = 0;
    out.chunks.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) {
        chunk_entry c{r.get<std::uint64_t>(), r.get<std::uint64_t>(), r.get<std::uint32_t>(), r.get<std::uint32_t>()};
        if (version >= 2) c.flags = r.get<std::uint8_t>();
        if (const std::string why = chunk_entry_problem(c, i, expect_offset, expect_token, index_offset, header); !why.empty())
            throw format_error("index: chunk " + std::to_string(i) + ": " + why);
        expect_offset += c.record_bytes;
        expect_token += c.tokens;
        out.chunks.push_back(c);
    }
    if (expect_token != out.tokens) throw format_error("index: chunks do not cover the token count");
    const auto n_att = r.get<std::uint32_t>();
    if (n_att > limits.max_attachments || n_att > r.remaining() / 16) throw format_error("index: attachment count");
    for (std::uint32_t i = 0; i < n_att; ++i) {
        const auto off = r.get<std::uint64_t>(), len = r.get<std::uint64_t>();
        if (off != expect_offset || len > index_offset - off) throw format_error("index: attachment place");
        expect_offset += len;
        const auto rec = file.subspan(off, len);
        if (len < 4) throw format_error("attachment truncated");
        byte_reader crc_r(rec.subspan(len - 4), "attachment");
        if (crc32c(rec.first(len - 4)) != crc_r.get<std::uint32_t>()) throw checksum_error("attachment");
        byte_reader a(rec.first(len - 4), "attachment");
        attachment att;
        att.name = require_utf8(a.get_string(), "index: attachment name");
        const auto size = a.get<std::uint64_t>();
        if (size != a.remaining()) throw format_error("attachment length");
        auto b = a.get_bytes(size);
        att.bytes.assign(b.begin(), b.end());
        out.attachments.push_back(std::move(att));
    }
    if (version >= 2 && !r.at_end()) throw format_error("index: trailing bytes");
    if (expect_offset != index_offset) throw format_error("index: unaccounted bytes before the index");
    return out;
}

}  // namespace seqkv::format

SEQKV_FP_STRICT_END
