// The lossless chunk codec: every (layer, K/V) block of a chunk through lossless::encode_block.
// Payload: for each layer, K then V: u32 length + block bytes.
#pragma once

#include <memory>
#include <vector>

#include "seqkv/backend/backend.hpp"
#include "seqkv/core/chunk_codec.hpp"
#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Bit-exact codec for bf16 / fp16 / fp32 / fp8 caches; Backend picks the decode kernels.
template <backend::Backend Backend = backend::simd>
class lossless_codec {
public:
    /// executor runs the (layer, K/V) blocks (null: the caller's thread); the bytes never depend on it.
    explicit lossless_codec(lossless::plane_options options = {}, std::shared_ptr<backend::thread_pool> executor = nullptr)
        : options_(options), executor_(executor ? std::move(executor) : backend::serial_executor()) {}

    /// Encodes tokens [in.begin, in.end) of every layer, K and V.
    byte_vector encode(const chunk_input& in) const;

    /// Decodes a payload into out (sized for the chunk by the caller).
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        require_usage(out.bytes.size() == out.layout.total_bytes(), "lossless_codec: buffer does not match its layout");
        decode_into(payload, in, chunk_destination::rows_of(out, 0, out.layout.tokens));
    }
    /// Decodes a payload into rows of a larger buffer (every row of the chunk written).
    void decode_into(std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const;
    /// Framing only: one length-prefixed block per (layer, K/V), each at least a block header
    /// (predictor, classes, transforms, and a mode + length per byte plane), filling the payload.
    void check_payload(std::span<const std::uint8_t> payload, const kv_layout& L) const {
        byte_reader r(payload, "lossless chunk");
        const std::size_t min_block = 3 + 5 * dtype_size(L.type);
        for (std::uint64_t b = 0; b < 2ull * L.layers; ++b) {
            const std::uint32_t len = r.get<std::uint32_t>();
            if (len < min_block) throw format_error("lossless chunk: block shorter than its header");
            (void)r.get_bytes(len);
        }
        if (!r.at_end()) throw format_error("lossless chunk: trailing bytes");
    }

private:
    lossless::plane_options options_;
    std::shared_ptr<backend::thread_pool> executor_;
};

template <backend::Backend Backend>
byte_vector lossless_codec<Backend>::encode(const chunk_input& in) const {
    require_usage(in.cache != nullptr, "lossless_codec: no cache to encode");
    const kv_layout& L = in.cache->layout;
    const lossless::block_shape shape{L.kv_heads, in.token_count(), L.head_dim};
    require_usage(in.token_ids.empty() || in.token_ids.size() == shape.tokens, "lossless_codec: one token id per token");
    const lossless::token_references refs(shape.tokens, in.token_ids, options_.rope);
    std::vector<byte_vector> coded(2 * std::size_t(L.layers));
    const std::size_t block_bytes = shape.elements() * dtype_size(L.type);
    executor_->run(coded.size(), [&](std::size_t i) {  // block i = layer i / 2, K (even) or V (odd)
        const kv_tensor_view& t = in.cache->tensor(std::uint32_t(i / 2), kv_kind(i % 2));
        // A block the cache already holds as [heads, tokens, head_dim] (a full chunk of the stream
        // writer's staging buffer) is coded where it is; any other is gathered first.
        if (shape.elements() == 0 || (t.strides.channel == 1 && t.strides.token == std::int64_t(shape.head_dim) &&
                                      (shape.heads == 1 || t.strides.head == std::int64_t(shape.tokens * shape.head_dim)))) {
            const std::uint8_t* first = shape.elements() == 0 ? nullptr : t.element(0, in.begin, 0);
            coded[i] = lossless::encode_block(std::span<const std::uint8_t>(first, block_bytes), L.type, shape, options_, refs);
            return;
        }
        const auto block = std::make_unique_for_overwrite<std::uint8_t[]>(block_bytes);
        gather_block(t, in.begin, in.end, std::span<std::uint8_t>(block.get(), block_bytes));
        coded[i] = lossless::encode_block(std::span<const std::uint8_t>(block.get(), block_bytes), L.type, shape, options_, refs);
    });
    std::size_t total = 0;
    for (const auto& c : coded) total += 4 + c.size();
    byte_vector out;
    out.reserve(total);
    byte_writer w(out);
    for (const auto& c : coded) {
        w.put<std::uint32_t>(static_cast<std::uint32_t>(c.size()));
        w.put_bytes(c);
    }
    return out;
}

template <backend::Backend Backend>
void lossless_codec<Backend>::decode_into(std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const {
    const kv_layout& L = out.layout;
    require_usage(L.tokens == in.token_count() && out.blocks.size() == 2 * std::size_t(L.layers) && out.head_stride >= L.tokens,
                  "lossless_codec: destination does not match the chunk");
    const lossless::block_shape shape{L.kv_heads, L.tokens, L.head_dim};
    if (!in.token_ids.empty() && in.token_ids.size() != shape.tokens) throw format_error("lossless chunk: token id count");
    const lossless::token_references refs(shape.tokens, in.token_ids, options_.rope);
    byte_reader r(payload, "lossless chunk");
    std::vector<std::span<const std::uint8_t>> blocks(2 * std::size_t(L.layers));
    for (auto& b : blocks) b = r.get_bytes(r.get<std::uint32_t>());
    if (!r.at_end()) throw format_error("lossless chunk: trailing bytes");
    const auto path = backend::rans_decode_path<Backend>();
    const std::size_t extent = out.block_extent();
    executor_->run(blocks.size(), [&](std::size_t i) {
        lossless::decode_block(blocks[i], L.type, shape, std::span<std::uint8_t>(out.blocks[i], extent), path, refs, out.head_stride);
    });
}

#ifdef SEQKV_SEPARATE_RUNTIME
// Compiled once in the seqkv::runtime library (src/lossless.cpp); includers instantiate none of it.
extern template class lossless_codec<backend::simd>;
extern template class lossless_codec<backend::scalar>;
#endif

static_assert(ChunkCodec<lossless_codec<backend::scalar>>);
static_assert(ChunkCodec<lossless_codec<backend::simd>>);

}  // namespace seqkv

SEQKV_FP_STRICT_END
