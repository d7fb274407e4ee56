// The .skv container: a preamble (layout, codec configuration, keyframe interval, resource
// table), chunk records (token ids, nll, codec payload inline or stored elsewhere by content
// hash, each CRC-32C protected), attachments, a chunk index and a trailer. Written front to back
// by a streaming writer; read through the trailer so that a token range touches only the chunks
// it needs. docs/FORMAT.md is the normative description; version 1 files stay readable.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/utf8.hpp"
#include "seqkv/core/hash.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/resource.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::format {

inline constexpr std::uint8_t file_magic[8] = {'S', 'E', 'Q', 'K', 'V', 0x00, 0x0d, 0x0a};
inline constexpr std::uint8_t trailer_magic[8] = {'S', 'E', 'Q', 'K', 'V', 'E', 'N', 'D'};
inline constexpr std::uint16_t format_version = 2;         // what the writer writes
inline constexpr std::uint16_t oldest_format_version = 1;  // the oldest version a reader accepts
inline constexpr std::uint32_t chunk_magic = 0x4b4e4843;   // "CHNK"

/// Chunk record flags (v2; a version-1 record has none).
enum chunk_flags : std::uint8_t {
    chunk_external = 1,   ///< the payload is stored outside the file, named by its content_hash64
    chunk_dependent = 2,  ///< decoding needs the state the previous chunk left (not a keyframe)
};
inline constexpr std::uint8_t known_chunk_flags = chunk_external | chunk_dependent;

/// Limits checked against untrusted headers before anything is allocated.
struct container_limits {
    std::uint32_t max_layers = 4096;
    std::uint32_t max_kv_heads = 4096;
    std::uint32_t max_head_dim = 65536;
    std::uint64_t max_tokens = 1ull << 32;
    std::uint32_t max_chunk_tokens = 1u << 20;
    std::uint64_t max_chunk_decoded_bytes = 1ull << 32;  // one decoded chunk, in bytes
    /// Most bytes one decode() may allocate for its output and its largest chunk (the cap a
    /// hostile or merely huge file meets; a valid file of constant KV can legitimately expand
    /// far beyond any multiple of its size, so the bound is a number, not a ratio). Default
    /// 256 GiB: no real cache is refused; services decoding untrusted files set their own.
    std::uint64_t max_decode_bytes = 1ull << 38;
    std::uint32_t max_preamble_bytes = 64u << 20;
    std::uint32_t max_attachments = 1u << 16;
    std::uint32_t max_resources = 4096;          // resource table entries
    std::uint32_t max_resource_name_bytes = 4096;  // one resource name
};

/// Runtime codec choice recorded in the preamble: a codec family id plus its own parameters.
struct codec_config {
    std::uint16_t codec_id = 0;  // 1 = lossless, 2 = lossy (see codec/registry.hpp)
    byte_vector params;          // codec-defined, validated by the codec
    bool operator==(const codec_config&) const = default;
};

/// Everything the preamble records.
struct preamble {
    kv_layout layout;  // layout.tokens is 0 in the preamble; the trailer holds the final count
    codec_config codec;
    std::uint32_t chunk_tokens = 256;
    bool has_token_ids = false;
    bool has_nll = false;
    std::map<std::string, std::string> metadata;
    /// Chunk i is a keyframe whenever i % keyframe_interval == 0 (≥ 1; 1 in version-1 files and
    /// for self-contained codecs, where every chunk is a keyframe).
    std::uint32_t keyframe_interval = 16;
    /// The resource table: what decoding needs besides the file (v2; empty in version-1 files).
    std::vector<resource_ref> resources;
};

/// One chunk record's place in the file.
struct chunk_entry {
    std::uint64_t offset = 0;       // of the record's first byte
    std::uint64_t first_token = 0;
    std::uint32_t tokens = 0;
    std::uint32_t record_bytes = 0;  // whole record, header included
    std::uint8_t flags = 0;          // chunk_flags, as in the record
    bool dependent() const { return flags & chunk_dependent; }
    bool external() const { return flags & chunk_external; }
};

/// A named opaque blob stored after the chunks (e.g. the non-KV tensors of a safetensors file).
struct attachment {
    std::string name;
    byte_vector bytes;
};

/// Adds ref to a resource table unless an entry with the same kind and hash is there already.
inline void add_resource(std::vector<resource_ref>& table, const resource_ref& ref) {
    if (std::find(table.begin(), table.end(), ref) == table.end()) table.push_back(ref);
}

/// Serializes a version-2 preamble body (without magic, length or CRC).
inline byte_vector encode_preamble(const preamble& p) {
    byte_vector out;
    byte_writer w(out);
    w.put<std::uint32_t>(p.layout.layers);
    w.put<std::uint32_t>(p.layout.kv_heads);
    w.put<std::uint32_t>(p.layout.head_dim);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(p.layout.type));
    w.put<std::uint32_t>(p.chunk_tokens);
    w.put<std::uint8_t>(static_cast<std::uint8_t>((p.has_token_ids ? 1 : 0) | (p.has_nll ? 2 : 0)));
    w.put<std::uint16_t>(p.codec.codec_id);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(p.codec.params.size()));
    w.put_bytes(p.codec.params);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(p.metadata.size()));
    for (const auto& [k, v] : p.metadata) {
        require_usage(valid_utf8(k) && valid_utf8(v), "preamble: metadata must be UTF-8");
        w.put_string(k);
        w.put_string(v);
    }
    w.put<std::uint32_t>(p.keyframe_interval);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(p.resources.size()));
    for (const auto& r : p.resources) {
        require_usage(valid_utf8(r.name), "preamble: resource names must be UTF-8");
        w.put<std::uint16_t>(static_cast<std::uint16_t>(r.kind));
        w.put<std::uint64_t>(r.content_hash);
        w.put_string(r.name);
    }
    return out;
}

/// Parses and validates a preamble body of the given format version against the limits.
inline preamble decode_preamble(std::span<const std::uint8_t> body, const container_limits& limits,
                                std::uint16_t version = format_version) {
    byte_reader r(body, "preamble");
    preamble p;
    p.layout.layers = r.get<std::uint32_t>();
    p.layout.kv_heads = r.get<std::uint32_t>();
    p.layout.head_dim = r.get<std::uint32_t>();
    const auto type = dtype_from_code(r.get<std::uint8_t>());
    if (!type || !is_kv_float(*type)) throw format_error("preamble: unknown KV dtype");
    p.layout.type = *type;
    if (p.layout.layers == 0 || p.layout.layers > limits.max_layers || p.layout.kv_heads == 0 ||
        p.layout.kv_heads > limits.max_kv_heads || p.layout.head_dim == 0 || p.layout.head_dim > limits.max_head_dim)
        throw limit_error("preamble: layers/heads/head_dim out of range");
    p.chunk_tokens = r.get<std::uint32_t>();
    if (p.chunk_tokens == 0 || p.chunk_tokens > limits.max_chunk_tokens)
        throw limit_error("preamble: chunk_tokens " + std::to_string(p.chunk_tokens));
    kv_layout one_chunk = p.layout;
    one_chunk.tokens = p.chunk_tokens;
    if (one_chunk.total_bytes() > limits.max_chunk_decoded_bytes) throw limit_error("preamble: decoded chunk too large");
    const auto flags = r.get<std::uint8_t>();
    if (flags & ~3u) throw format_error("preamble: unknown flags");
    p.has_token_ids = flags & 1;
    p.has_nll = flags & 2;
    p.codec.codec_id = r.get<std::uint16_t>();
    const auto params_len = r.get<std::uint32_t>();
    auto params = r.get_bytes(params_len);
    p.codec.params.assign(params.begin(), params.end());
    const auto entries = r.get<std::uint32_t>();
    if (entries > r.remaining() / 8) throw format_error("preamble: metadata count exceeds the preamble");
    for (std::uint32_t i = 0; i < entries; ++i) {
        auto k = require_utf8(r.get_string(), "preamble: metadata key");
        p.metadata[k] = require_utf8(r.get_string(limits.max_preamble_bytes), "preamble: metadata value");
    }
    p.keyframe_interval = 1;
    if (version >= 2) {
        p.keyframe_interval = r.get<std::uint32_t>();
        if (p.keyframe_interval == 0) throw format_error("preamble: keyframe interval 0");
        const auto count = r.get<std::uint32_t>();
        if (count > limits.max_resources) throw limit_error("preamble: " + std::to_string(count) + " resources");
        if (count > r.remaining() / 14) throw format_error("preamble: resource count exceeds the preamble");
        for (std::uint32_t i = 0; i < count; ++i) {
            resource_ref ref;
            const auto kind = r.get<std::uint16_t>();
            if (kind == 0 || kind > max_resource_kind) throw format_error("preamble: unknown resource kind " + std::to_string(kind));
            ref.kind = static_cast<resource_kind>(kind);
            ref.content_hash = r.get<std::uint64_t>();
            ref.name = require_utf8(r.get_string(limits.max_resource_name_bytes), "preamble: resource name");
            if (std::find(p.resources.begin(), p.resources.end(), ref) != p.resources.end())
                throw format_error("preamble: resource listed twice: " + describe(ref));
            p.resources.push_back(std::move(ref));
        }
    }
    if (!r.at_end()) throw format_error("preamble: trailing bytes");
    return p;
}

/// A stream's preamble as checked by a reader, and where its chunk records start.
struct stream_head {
    std::uint16_t version = 0;
    preamble header;
    std::size_t data_begin = 0;  // byte offset of chunk record 0
};

/// Parses and checks the preamble of `file` (what stream_reader and recover_stream both start with) (magic, version,
/// reserved field, body length within the limit, body CRC, body); throws format_error,
/// checksum_error or limit_error when it is damaged or incomplete.
inline stream_head read_stream_head(std::span<const std::uint8_t> file, const container_limits& limits = {}) {
    byte_reader r(file, "skv stream");
    auto magic = r.get_bytes(8);
    if (!std::equal(magic.begin(), magic.end(), file_magic)) throw format_error("not a seqkv stream (bad magic)");
    stream_head head;
    head.version = r.get<std::uint16_t>();
    if (head.version < oldest_format_version || head.version > format_version)
        throw format_error("unsupported seqkv format version " + std::to_string(head.version));
    if (r.get<std::uint16_t>() != 0) throw format_error("preamble: reserved field is not 0");
    const auto body_len = r.get<std::uint32_t>();
    if (body_len > limits.max_preamble_bytes) throw limit_error("preamble length " + std::to_string(body_len));
    const auto body = r.get_bytes(body_len);
    if (crc32c(body) != r.get<std::uint32_t>()) throw checksum_error("preamble");
    head.header = decode_preamble(body, limits, head.version);
    head.data_begin = r.position();
    return head;
}

/// The part of a version-2 chunk record before its payload: header, token ids and nll (with
/// chunk_external in flags the header names the payload's length and content hash instead).
inline void append_chunk_record_head(byte_vector& out, std::uint64_t first_token, std::uint32_t tokens, std::uint8_t flags,
                                     std::span<const std::int32_t> token_ids, std::span<const float> nll,
                                     std::uint32_t payload_len, std::uint64_t payload_hash = 0) {
    byte_writer w(out);
    w.put<std::uint32_t>(chunk_magic);
    w.put<std::uint64_t>(first_token);
    w.put<std::uint32_t>(tokens);
    w.put<std::uint8_t>(flags);
    w.put<std::uint32_t>(payload_len);
    if (flags & chunk_external) w.put<std::uint64_t>(payload_hash);
    for (auto id : token_ids) w.put<std::int32_t>(id);
    for (auto x : nll) w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(x));
}

/// Serializes a version-2 chunk record: header, token ids, nll and the payload — or, with
/// chunk_external in flags, only the payload's length and content hash — then CRC-32C of all of it.
inline void append_chunk_record(byte_vector& out, std::uint64_t first_token, std::uint32_t tokens, std::uint8_t flags,
                                std::span<const std::int32_t> token_ids, std::span<const float> nll,
                                std::span<const std::uint8_t> payload, std::uint64_t payload_hash = 0,
                                std::uint32_t external_payload_len = 0) {
    const std::size_t start = out.size();
    // An external record names its payload's length and hash; the bytes may be absent here
    // (external_payload_len then gives the length).
    append_chunk_record_head(out, first_token, tokens, flags, token_ids, nll,
                             static_cast<std::uint32_t>((flags & chunk_external) && payload.empty() ? external_payload_len : payload.size()),
                             payload_hash);
    byte_writer w(out);
    if (!(flags & chunk_external)) w.put_bytes(payload);
    w.put<std::uint32_t>(crc32c(std::span(out).subspan(start)));
}

/// A chunk record read back and checked.
struct chunk_record {
    std::uint64_t first_token = 0;
    std::uint32_t tokens = 0;
    std::uint8_t flags = 0;          // chunk_flags
    std::uint32_t payload_len = 0;
    std::uint64_t payload_hash = 0;  // content_hash64 of an external payload
    std::vector<std::int32_t> token_ids;
    std::vector<float> nll;
    std::span<const std::uint8_t> payload;        // inline payload; an external one once resolved
    std::shared_ptr<const byte_vector> external;  // keeps a resolved external payload alive
};

/// Parses and verifies the chunk record at bytes (exactly one record) of a file of that version.
/// An external payload is not looked up here (see resolve_payload).
inline chunk_record read_chunk_record(std::span<const std::uint8_t> bytes, const preamble& p,
                                      std::uint16_t version = format_version) {
    if (bytes.size() < (version >= 2 ? 25u : 24u)) throw format_error("chunk record truncated");
    const auto body = bytes.first(bytes.size() - 4);
    byte_reader crc_reader(bytes.subspan(bytes.size() - 4), "chunk record");
    if (crc32c(body) != crc_reader.get<std::uint32_t>()) throw checksum_error("chunk record");
    byte_reader r(body, "chunk record");
    if (r.get<std::uint32_t>() != chunk_magic) throw format_error("chunk record: bad magic");
    chunk_record c;
    c.first_token = r.get<std::uint64_t>();
    c.tokens = r.get<std::uint32_t>();
    if (version >= 2) c.flags = r.get<std::uint8_t>();
    if (c.flags & ~known_chunk_flags) throw format_error("chunk record: unknown flags");
    c.payload_len = r.get<std::uint32_t>();
    if (c.flags & chunk_external) c.payload_hash = r.get<std::uint64_t>();
    if (c.tokens == 0 || c.tokens > p.chunk_tokens) throw format_error("chunk record: bad token count");
    const std::size_t side = std::size_t(c.tokens) * (4u * p.has_token_ids + 4u * p.has_nll);
    const std::size_t inline_len = (c.flags & chunk_external) ? 0 : c.payload_len;
    if (side + inline_len != r.remaining()) throw format_error("chunk record: lengths do not add up");
    if (p.has_token_ids) {
        c.token_ids.resize(c.tokens);
        for (auto& id : c.token_ids) id = r.get<std::int32_t>();
    }
    if (p.has_nll) {
        c.nll.resize(c.tokens);
        for (auto& x : c.nll) x = std::bit_cast<float>(r.get<std::uint32_t>());
    }
    c.payload = r.get_bytes(inline_len);
    return c;
}

/// Points rec.payload at its external payload: the byte_vector `resources` holds as
/// (chunk_payload, payload_hash). resource_error when it is missing; format_error when its length
/// differs from the record's, checksum_error when its content_hash64 does.
inline void resolve_payload(chunk_record& rec, const resource_provider& resources) {
    if (!(rec.flags & chunk_external)) return;
    const resource_ref ref{resource_kind::chunk_payload, rec.payload_hash,
                           "tokens " + std::to_string(rec.first_token) + "+" + std::to_string(rec.tokens)};
    auto bytes = resources.require<byte_vector>(ref);
    if (bytes->size() != rec.payload_len)
        throw format_error("external payload has " + std::to_string(bytes->size()) + " bytes, the record says " +
                           std::to_string(rec.payload_len) + ": " + describe(ref));
    if (content_hash64(*bytes) != rec.payload_hash) throw checksum_error("external payload content hash: " + describe(ref));
    rec.external = std::move(bytes);
    rec.payload = *rec.external;
}

}  // namespace seqkv::format

SEQKV_FP_STRICT_END
