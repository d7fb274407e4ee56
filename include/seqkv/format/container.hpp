// The .skv container: a preamble (layout, codec configuration), self-contained chunk records
// (token ids, nll, codec payload, each CRC-32C protected), attachments, a chunk index and a
// trailer. Written front to back by a streaming writer; read through the trailer so that a
// token range touches only the chunks it needs. docs/FORMAT.md is the normative description.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/layout.hpp"

namespace seqkv::format {

inline constexpr std::uint8_t file_magic[8] = {'S', 'E', 'Q', 'K', 'V', 0x00, 0x0d, 0x0a};
inline constexpr std::uint8_t trailer_magic[8] = {'S', 'E', 'Q', 'K', 'V', 'E', 'N', 'D'};
inline constexpr std::uint16_t format_version = 1;
inline constexpr std::uint32_t chunk_magic = 0x4b4e4843;  // "CHNK"

/// Limits checked against untrusted headers before anything is allocated.
struct container_limits {
    std::uint32_t max_layers = 4096;
    std::uint32_t max_kv_heads = 4096;
    std::uint32_t max_head_dim = 65536;
    std::uint64_t max_tokens = 1ull << 32;
    std::uint32_t max_chunk_tokens = 1u << 20;
    std::uint64_t max_chunk_decoded_bytes = 1ull << 32;  // one decoded chunk, in bytes
    std::uint32_t max_preamble_bytes = 64u << 20;
    std::uint32_t max_attachments = 1u << 16;
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
};

/// One chunk record's place in the file.
struct chunk_entry {
    std::uint64_t offset = 0;       // of the record's first byte
    std::uint64_t first_token = 0;
    std::uint32_t tokens = 0;
    std::uint32_t record_bytes = 0;  // whole record, header included
};

/// A named opaque blob stored after the chunks (e.g. the non-KV tensors of a safetensors file).
struct attachment {
    std::string name;
    byte_vector bytes;
};

/// Serializes a preamble body (without magic, length or CRC).
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
        w.put_string(k);
        w.put_string(v);
    }
    return out;
}

/// Parses and validates a preamble body against the limits.
inline preamble decode_preamble(std::span<const std::uint8_t> body, const container_limits& limits) {
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
        auto k = r.get_string();
        p.metadata[k] = r.get_string(limits.max_preamble_bytes);
    }
    if (!r.at_end()) throw format_error("preamble: trailing bytes");
    return p;
}

/// Serializes a chunk record: header, token ids, nll and payload, CRC-32C over all of it.
inline void append_chunk_record(byte_vector& out, std::uint64_t first_token, std::uint32_t tokens,
                                std::span<const std::int32_t> token_ids, std::span<const float> nll,
                                std::span<const std::uint8_t> payload) {
    const std::size_t start = out.size();
    byte_writer w(out);
    w.put<std::uint32_t>(chunk_magic);
    w.put<std::uint64_t>(first_token);
    w.put<std::uint32_t>(tokens);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(payload.size()));
    for (auto id : token_ids) w.put<std::int32_t>(id);
    for (auto x : nll) w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(x));
    w.put_bytes(payload);
    w.put<std::uint32_t>(crc32c(std::span(out).subspan(start)));
}

/// A chunk record read back and checked.
struct chunk_record {
    std::uint64_t first_token = 0;
    std::uint32_t tokens = 0;
    std::vector<std::int32_t> token_ids;
    std::vector<float> nll;
    std::span<const std::uint8_t> payload;
};

/// Parses and verifies the chunk record at bytes (exactly one record).
inline chunk_record read_chunk_record(std::span<const std::uint8_t> bytes, const preamble& p) {
    if (bytes.size() < 24) throw format_error("chunk record truncated");
    const auto body = bytes.first(bytes.size() - 4);
    byte_reader crc_reader(bytes.subspan(bytes.size() - 4), "chunk record");
    if (crc32c(body) != crc_reader.get<std::uint32_t>()) throw checksum_error("chunk record");
    byte_reader r(body, "chunk record");
    if (r.get<std::uint32_t>() != chunk_magic) throw format_error("chunk record: bad magic");
    chunk_record c;
    c.first_token = r.get<std::uint64_t>();
    c.tokens = r.get<std::uint32_t>();
    const auto payload_len = r.get<std::uint32_t>();
    if (c.tokens == 0 || c.tokens > p.chunk_tokens) throw format_error("chunk record: bad token count");
    const std::size_t side = std::size_t(c.tokens) * (4u * p.has_token_ids + 4u * p.has_nll);
    if (side + payload_len != r.remaining()) throw format_error("chunk record: lengths do not add up");
    if (p.has_token_ids) {
        c.token_ids.resize(c.tokens);
        for (auto& id : c.token_ids) id = r.get<std::int32_t>();
    }
    if (p.has_nll) {
        c.nll.resize(c.tokens);
        for (auto& x : c.nll) x = std::bit_cast<float>(r.get<std::uint32_t>());
    }
    c.payload = r.get_bytes(payload_len);
    return c;
}

}  // namespace seqkv::format
