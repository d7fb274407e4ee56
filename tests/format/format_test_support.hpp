// Shared by the format tests: a small owned cache, test-only codecs (one with dependent chunks),
// an in-memory payload store, and helpers that rewrite parts of a file with valid checksums.
#pragma once

#include <gtest/gtest.h>

#include <any>
#include <map>
#include <memory>
#include <random>

#include "seqkv/core/checksum.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/format/stream.hpp"

namespace seqkv::test {

/// A cache of random elements, held as one buffer in the decoded chunk layout.
struct owned_cache {
    kv_layout layout;
    chunk_buffer all;  // every token
    kv_cache_view view() const {
        kv_cache_view c{layout, {}, {}};
        for (std::uint32_t l = 0; l < layout.layers; ++l) {
            c.keys.push_back(all.view(l, kv_kind::key));
            c.values.push_back(all.view(l, kv_kind::value));
        }
        return c;
    }
    /// Tokens [begin, end) in the decoded chunk layout.
    chunk_buffer slice(std::uint64_t begin, std::uint64_t end) const {
        auto b = chunk_buffer::for_layout(layout, end - begin);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) gather_block(all.view(l, kind), begin, end, b.block(l, kind));
        return b;
    }
};

inline owned_cache random_cache(kv_layout layout, std::uint32_t seed) {
    owned_cache c{layout, chunk_buffer::for_layout(layout, layout.tokens)};
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t i = 0; i < c.all.bytes.size() / dtype_size(layout.type); ++i) store_from_float(c.all.bytes.data(), layout.type, i, normal(rng));
    return c;
}

/// The chunk's elements in the decoded layout (what a raw codec stores).
inline chunk_buffer gather_chunk(const chunk_input& in) {
    auto b = chunk_buffer::for_layout(in.cache->layout, in.token_count());
    for (std::uint32_t l = 0; l < in.cache->layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) gather_block(in.cache->tensor(l, kind), in.begin, in.end, b.block(l, kind));
    return b;
}

/// Dependent-chunk test codec: byte j of a chunk is stored XOR byte j (mod size) of the previous
/// chunk's bytes, which the carry holds; payload byte 0 says whether the encoder had a carry, so a
/// decoder that starts anywhere but at a keyframe, or replays wrongly, fails loudly.
struct xor_chain_codec {
    static constexpr bool dependent_chunks = true;
    byte_vector encode(const chunk_input& in) const {
        require_usage(in.carry != nullptr, "xor_chain_codec: no carry");
        const auto bytes = gather_chunk(in).bytes;
        byte_vector out{std::uint8_t(in.carry->has_value())};
        apply(bytes, *in.carry, out);
        *in.carry = bytes;
        return out;
    }
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        require_usage(in.carry != nullptr, "xor_chain_codec: no carry");
        require_format(payload.size() == out.bytes.size() + 1, "xor_chain_codec: payload length");
        require_format(payload[0] == std::uint8_t(in.carry->has_value()), "xor_chain_codec: carry differs from the encoder's");
        byte_vector plain;
        apply(payload.subspan(1), *in.carry, plain);
        std::copy(plain.begin(), plain.end(), out.bytes.begin());
        *in.carry = plain;
    }
    static void apply(std::span<const std::uint8_t> in, const std::any& carry, byte_vector& out) {
        const auto* prev = std::any_cast<byte_vector>(&carry);
        for (std::size_t j = 0; j < in.size(); ++j) out.push_back(in[j] ^ (prev && !prev->empty() ? (*prev)[j % prev->size()] : 0));
    }
};
static_assert(ChunkCodec<xor_chain_codec> && has_dependent_chunks<xor_chain_codec>());

/// Self-contained raw codec that fails if the container ever hands it a carry.
struct raw_probe_codec {
    byte_vector encode(const chunk_input& in) const {
        require_usage(in.carry == nullptr, "raw_probe_codec: got a carry");
        return gather_chunk(in).bytes;
    }
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        require_usage(in.carry == nullptr, "raw_probe_codec: got a carry");
        require_format(payload.size() == out.bytes.size(), "raw_probe_codec: payload length");
        std::copy(payload.begin(), payload.end(), out.bytes.begin());
    }
};
static_assert(ChunkCodec<raw_probe_codec> && !has_dependent_chunks<raw_probe_codec>());

inline any_chunk_codec xor_chain() { return any_chunk_codec::wrap(xor_chain_codec{}, "xor chain (test)"); }
inline any_chunk_codec raw_probe() { return any_chunk_codec::wrap(raw_probe_codec{}, "raw probe (test)"); }

/// An in-memory store of external payloads, keyed by content hash.
struct payload_store {
    std::map<std::uint64_t, byte_vector> payloads;
    format::external_payload_fn sink() {
        return [this](std::uint64_t hash, std::span<const std::uint8_t> payload) {
            payloads[hash].assign(payload.begin(), payload.end());
            return true;
        };
    }
    resource_provider provider() const {
        resource_provider r;
        for (const auto& [hash, bytes] : payloads) r.add(resource_kind::chunk_payload, hash, std::make_shared<const byte_vector>(bytes));
        return r;
    }
};

/// Writes a cache through stream_writer with the given codec (any codec: test codecs too).
inline byte_vector write_stream(const owned_cache& cache, const any_chunk_codec& codec, std::uint32_t chunk_tokens,
                                std::uint32_t keyframe_interval, format::writer_options options = {},
                                std::vector<resource_ref> resources = {}, bool with_side_data = false) {
    format::preamble p;
    p.layout = cache.layout;
    p.codec = {77, {1, 2, 3}};  // not a registry codec: test files are decoded with the codec above
    p.chunk_tokens = chunk_tokens;
    p.keyframe_interval = keyframe_interval;
    p.resources = std::move(resources);
    p.has_token_ids = p.has_nll = with_side_data;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    for (std::uint64_t t = 0; with_side_data && t < cache.layout.tokens; ++t) ids.push_back(std::int32_t(t * 7 % 13)), nll.push_back(0.5f * float(t));
    byte_vector out;
    format::stream_writer w([&](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }, p, codec,
                            std::move(options));
    w.append(cache.view(), 0, cache.layout.tokens, ids, nll);
    w.add_attachment("note", {1, 2, 3, 4});
    w.finish();
    return out;
}

inline void put_le32(byte_vector& b, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = std::uint8_t(v >> (8 * i));
}

/// A copy of file with the preamble body replaced (length and CRC recomputed).
inline byte_vector with_preamble_body(std::span<const std::uint8_t> file, std::span<const std::uint8_t> body) {
    const std::uint32_t old_len = load_le32(file.data() + 12);
    byte_vector out(file.begin(), file.begin() + 12);
    out.resize(16);
    put_le32(out, 12, std::uint32_t(body.size()));
    out.insert(out.end(), body.begin(), body.end());
    out.resize(out.size() + 4);
    put_le32(out, out.size() - 4, crc32c(body));
    out.insert(out.end(), file.begin() + 16 + old_len + 4, file.end());
    return out;
}

/// Sets chunk i's flags in its record and its index entry, both CRCs recomputed (a v2 file).
inline void set_chunk_flags(byte_vector& file, const std::vector<format::chunk_entry>& chunks, std::size_t i, std::uint8_t flags) {
    const auto& c = chunks.at(i);
    file[c.offset + 16] = flags;
    put_le32(file, c.offset + c.record_bytes - 4, crc32c(std::span(file).subspan(c.offset, c.record_bytes - 4)));
    std::uint64_t index_offset = 0;
    for (int k = 7; k >= 0; --k) index_offset = (index_offset << 8) | file[file.size() - format::trailer_bytes + k];
    file[index_offset + 4 + 25 * i + 24] = flags;
    put_le32(file, file.size() - 12, crc32c(std::span(file).subspan(index_offset, file.size() - 12 - index_offset)));
}

/// Expects fn() to throw E whose message contains every one of `words`.
template <class E, class Fn>
void expect_error_mentions(Fn&& fn, std::initializer_list<std::string> words) {
    try {
        fn();
        ADD_FAILURE() << "no exception";
    } catch (const E& e) {
        for (const auto& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what() << " lacks " << w;
    }
}

inline void expect_same_bytes(const chunk_buffer& got, const chunk_buffer& want) {
    ASSERT_EQ(got.layout.tokens, want.layout.tokens);
    ASSERT_EQ(got.bytes.size(), want.bytes.size());
    EXPECT_TRUE(got.bytes == want.bytes);
}

}  // namespace seqkv::test
