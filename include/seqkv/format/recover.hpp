// Recovery of a .skv stream that never reached stream_writer::finish() (an engine that died
// mid-generation) or whose tail is damaged: every chunk record that reads back exactly as a reader
// checks it, from the preamble on, is kept, and a fresh index and trailer are written for them.
// docs/FORMAT.md ("Recovering an unfinished stream") describes what is kept and what is dropped.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "seqkv/format/index.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::format {

/// What recover_stream kept, and why it stopped.
struct recovery {
    byte_vector file;              // a complete stream: the preamble, the kept chunk records, index, trailer
    std::size_t chunks = 0;        // chunk records kept (the source's first `chunks`)
    std::uint64_t tokens = 0;      // tokens they hold
    std::uint64_t chunks_end = 0;  // byte offset where the kept records end, in the source and in `file`
    /// Offset of the first record that is damaged or incomplete (for a stream cut after finish(),
    /// where its partial tail starts); the source's size when nothing is (it ends after a whole
    /// record, or it was complete).
    std::uint64_t damaged_at = 0;
    std::uint64_t dropped_bytes = 0;  // source bytes after chunks_end not carried over (0 when complete)
    std::size_t attachments = 0;      // attachments kept: only a complete source's
    bool complete = false;  // the source was a valid finished stream over exactly the kept chunks
    std::string reason;     // human-readable: where and why the walk stopped
};

namespace recover_detail {

/// Checks the chunk record at the start of `rest` as chunk number `index` of a stream whose earlier
/// records hold `tokens_before` tokens, exactly as a reader would (framing, lengths, CRC, token
/// count, flags, first_token, keyframes). Fills `entry` (at `offset`) and returns "" when it is
/// whole and valid; otherwise returns why not. Reads only inside `rest`; allocates only for a
/// record whose lengths add up within it.
inline std::string check_record(std::span<const std::uint8_t> rest, const stream_head& head, std::size_t index,
                                std::uint64_t offset, std::uint64_t tokens_before, const container_limits& limits,
                                chunk_entry& entry) {
    const preamble& p = head.header;
    const std::size_t fixed = head.version >= 2 ? 21 : 20;  // magic, first_token, tokens, [flags], payload_len
    if (rest.size() < fixed)
        return "truncated chunk record header (" + std::to_string(rest.size()) + " of " + std::to_string(fixed) + " bytes)";
    if (load_le32(rest.data()) != chunk_magic) return "no chunk record magic";
    const std::uint32_t tokens = load_le32(rest.data() + 12);
    const std::uint8_t flags = head.version >= 2 ? rest[16] : 0;
    const std::uint32_t payload_len = load_le32(rest.data() + fixed - 4);
    // The record's length follows from its header (each term < 2^36, so no overflow).
    const bool external = flags & chunk_external;
    const std::uint64_t side = std::uint64_t(tokens) * (4u * p.has_token_ids + 4u * p.has_nll);
    const std::uint64_t length = fixed + (external ? 8u : 0u) + side + (external ? 0u : payload_len) + 4u;
    const std::uint64_t first_token = load_le32(rest.data() + 4) | std::uint64_t(load_le32(rest.data() + 8)) << 32;
    entry = {offset, first_token, tokens, std::uint32_t(std::min<std::uint64_t>(length, std::numeric_limits<std::uint32_t>::max())), flags};
    // The index's own rules (index.hpp), with the end of the file as the end of the records; a
    // record that is otherwise fine but runs past the end is named as truncated.
    if (std::string why = chunk_entry_problem(entry, index, offset, tokens_before, offset + rest.size(), p); !why.empty()) {
        const bool only_short = length > rest.size() &&
                                chunk_entry_problem(entry, index, offset, tokens_before, offset + length, p).empty();
        return only_short ? "truncated chunk record (" + std::to_string(rest.size()) + " of " + std::to_string(length) + " bytes)"
                          : why;
    }
    if (length > std::numeric_limits<std::uint32_t>::max()) return "record length over 4 GiB";
    try {
        (void)read_chunk_record(rest.first(std::size_t(length)), p, head.version);  // its CRC
    } catch (const format_error& e) {  // checksum_error included
        return e.what();
    }
    if (tokens_before + tokens > limits.max_tokens) return "token count over the reader's max_tokens";
    if (index >= std::numeric_limits<std::uint32_t>::max()) return "more chunks than an index can hold";
    return "";
}

inline bool same_entry(const chunk_entry& a, const chunk_entry& b) {
    return a.offset == b.offset && a.first_token == b.first_token && a.tokens == b.tokens &&
           a.record_bytes == b.record_bytes && a.flags == b.flags;
}

}  // namespace recover_detail

/// Rebuilds a complete stream from the longest run of valid chunk records after the preamble of
/// `file` (which must be intact: else the reader's format/checksum/limit errors). Keeps the
/// source's format version and resource table; a partial index or trailer and the attachments of
/// an unfinished or damaged stream are dropped; a complete stream comes back unchanged.
inline recovery recover_stream(std::span<const std::uint8_t> file, const container_limits& limits = {}) {
    const stream_head head = read_stream_head(file, limits);
    std::vector<chunk_entry> kept;
    std::uint64_t offset = head.data_begin, tokens = 0;
    std::string why;  // empty: the file ends after a whole record
    while (offset < file.size()) {
        chunk_entry entry;
        why = recover_detail::check_record(file.subspan(std::size_t(offset)), head, kept.size(), offset, tokens, limits, entry);
        if (!why.empty()) break;
        kept.push_back(entry);
        offset += entry.record_bytes;
        tokens += entry.tokens;
    }
    recovery out;
    out.chunks = kept.size();
    out.tokens = tokens;
    out.chunks_end = offset;
    out.damaged_at = file.size();
    std::vector<attachment> attachments;
    if (offset < file.size()) {
        // A finished stream's tail starts here: keep its attachments when its index is valid and
        // lists exactly the kept chunks.
        try {
            auto index = read_file_index(file, head.data_begin, head.header, head.version, limits);
            out.complete = index.tokens == tokens && index.chunks.size() == kept.size() &&
                           std::equal(kept.begin(), kept.end(), index.chunks.begin(), recover_detail::same_entry);
            if (out.complete) attachments = std::move(index.attachments);
        } catch (const format_error&) {
        }
    }
    const std::string where = "chunk record " + std::to_string(kept.size()) + " at byte " + std::to_string(offset);
    if (out.complete) {
        out.attachments = attachments.size();
        out.reason = "the stream was complete (valid index and trailer); " + std::to_string(out.attachments) + " attachment(s) kept";
    } else if (offset == file.size()) {
        out.reason = kept.empty() ? "the stream ends after its preamble (no chunk, no index or trailer)"
                                  : "the stream ends after " + std::to_string(kept.size()) +
                                        " whole chunk record(s) with no index or trailer (the writer did not finish)";
    } else {
        out.damaged_at = offset;
        out.dropped_bytes = file.size() - offset;
        out.reason = where + ": " + why + "; the " + std::to_string(out.dropped_bytes) +
                     " byte(s) from there on are dropped (any later chunks, attachments and a partial index or trailer)";
    }
    out.file.assign(file.begin(), file.begin() + std::ptrdiff_t(offset));
    append_tail(out.file, offset, kept, attachments, tokens, head.version);
    return out;
}

}  // namespace seqkv::format

SEQKV_FP_STRICT_END
