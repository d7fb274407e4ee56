// The lossless chunk codec: every (layer, K/V) block of a chunk through lossless::encode_block.
// Payload: for each layer, K then V: u32 length + block bytes.
#pragma once

#include "seqkv/backend/backend.hpp"
#include "seqkv/core/chunk_codec.hpp"
#include "seqkv/codec/lossless/planes.hpp"

namespace seqkv {

/// Bit-exact codec for bf16 / fp16 / fp32 / fp8 caches; Backend picks the decode kernels.
template <backend::Backend Backend = backend::simd>
class lossless_codec {
public:
    explicit lossless_codec(lossless::plane_options options = {}) : options_(options) {}

    /// Encodes tokens [in.begin, in.end) of every layer, K and V.
    byte_vector encode(const chunk_input& in) const {
        require_usage(in.cache != nullptr, "lossless_codec: no cache to encode");
        const kv_layout& L = in.cache->layout;
        const lossless::block_shape shape{L.kv_heads, in.token_count(), L.head_dim};
        byte_vector block(shape.elements() * dtype_size(L.type));
        require_usage(in.token_ids.empty() || in.token_ids.size() == shape.tokens, "lossless_codec: one token id per token");
        const lossless::token_references refs(shape.tokens, in.token_ids, options_.rope);
        byte_vector out;
        byte_writer w(out);
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                gather_block(in.cache->tensor(l, kind), in.begin, in.end, block);
                const auto coded = lossless::encode_block(block, L.type, shape, options_, refs);
                w.put<std::uint32_t>(static_cast<std::uint32_t>(coded.size()));
                w.put_bytes(coded);
            }
        return out;
    }

    /// Decodes a payload into out (sized for the chunk by the caller).
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        const kv_layout& L = out.layout;
        require_usage(L.tokens == in.token_count(), "lossless_codec: buffer does not match the chunk");
        const lossless::block_shape shape{L.kv_heads, L.tokens, L.head_dim};
        if (!in.token_ids.empty() && in.token_ids.size() != shape.tokens) throw format_error("lossless chunk: token id count");
        const lossless::token_references refs(shape.tokens, in.token_ids, options_.rope);
        byte_reader r(payload, "lossless chunk");
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto len = r.get<std::uint32_t>();
                lossless::decode_block(r.get_bytes(len), L.type, shape, out.block(l, kind), Backend::rans_decode, refs);
            }
        if (!r.at_end()) throw format_error("lossless chunk: trailing bytes");
    }

private:
    lossless::plane_options options_;
};

static_assert(ChunkCodec<lossless_codec<backend::scalar>>);
static_assert(ChunkCodec<lossless_codec<backend::simd>>);

}  // namespace seqkv
