// The ChunkCodec concept: turns one chunk of a KV cache into a payload and back.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// A codec the container can drive. encode() reads tokens [in.begin, in.end) of in.cache;
/// decode() fills a chunk_buffer already sized for the chunk's layout and must throw
/// format_error (never crash or over-read) on a corrupt payload. `side` carries the chunk's
/// token ids / nll as the container stored them (identical on both sides).
template <class C>
concept ChunkCodec = requires(const C& codec, const chunk_input& in, std::span<const std::uint8_t> payload,
                              chunk_buffer& out) {
    { codec.encode(in) } -> std::same_as<byte_vector>;
    { codec.decode(payload, in, out) } -> std::same_as<void>;
};

/// True when C's chunks depend on the state earlier chunks left in chunk_input::carry
/// (declared as `static constexpr bool dependent_chunks = true`); false for self-contained chunks.
template <class C>
constexpr bool has_dependent_chunks() {
    if constexpr (requires { C::dependent_chunks; }) return C::dependent_chunks;
    else return false;
}

/// True when C's payloads code the chunk's token ids themselves (`static constexpr bool
/// codes_token_ids = true`, token mode): the container hands it the ids when encoding, stores
/// none, and takes them from chunk_buffer::token_ids after decoding.
template <class C>
constexpr bool codes_token_ids() {
    if constexpr (requires { C::codes_token_ids; }) return C::codes_token_ids;
    else return false;
}

/// True when C's dependent chunks need every earlier chunk (`static constexpr bool whole_context
/// = true`): the file's only keyframe is chunk 0.
template <class C>
constexpr bool whole_context() {
    if constexpr (requires { C::whole_context; }) return C::whole_context;
    else return false;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
