// The EntropyCoder concept the codec composes with: a stateless policy type that codes a block
// of 16-bit symbols, optionally split into contexts, into self-describing bytes and back.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// A block entropy coder. encode(symbols, contexts, alphabet_size, context_count) -> bytes, where
/// contexts is empty (one context) or parallel to symbols with values < context_count; decode
/// (bytes, contexts, out) fills out (whose size the caller knows) and throws seqkv::format_error
/// on malformed bytes without reading out of bounds.
template <class Coder>
concept EntropyCoder = requires(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                                std::span<const std::uint8_t> bytes, std::span<std::uint16_t> out, std::uint32_t count) {
    { Coder::name } -> std::convertible_to<std::string_view>;
    { Coder::encode(symbols, contexts, count, count) } -> std::same_as<byte_vector>;
    { Coder::decode(bytes, contexts, out) } -> std::same_as<void>;
};

/// Interleaved rANS with per-block static tables; Options::parametric_tables lets small contexts
/// use 2-byte parametric models. Decode uses AVX2 when the CPU has it.
template <bool ParametricTables = false>
struct rans_interleaved_coder {
    static constexpr std::string_view name = ParametricTables ? "rans_interleaved_parametric" : "rans_interleaved";
    static byte_vector encode(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                              std::uint32_t alphabet_size, std::uint32_t context_count) {
        return encode_block(symbols, contexts, alphabet_size, context_count, {.parametric_tables = ParametricTables});
    }
    static void decode(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts, std::span<std::uint16_t> out) {
        decode_block(bytes, contexts, out);
    }
};
using rans_interleaved = rans_interleaved_coder<false>;

/// Range coder with one adaptive Model per context (the model is the policy); no side information.
template <AdaptiveSymbolModel Model = adaptive_frequency_model>
struct range_adaptive {
    static constexpr std::string_view name = "range_adaptive";
    static byte_vector encode(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                              std::uint32_t alphabet_size, std::uint32_t context_count) {
        return encode_range_block<Model>(symbols, contexts, alphabet_size, context_count);
    }
    static void decode(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts, std::span<std::uint16_t> out) {
        decode_range_block<Model>(bytes, contexts, out);
    }
};

/// Range coder with the fast power-of-two-total adaptive model (division-free model lookups).
using range_adaptive_fast = range_adaptive<pow2_adaptive_model>;

static_assert(EntropyCoder<rans_interleaved>);
static_assert(EntropyCoder<rans_interleaved_coder<true>>);
static_assert(EntropyCoder<range_adaptive<>>);
static_assert(EntropyCoder<range_adaptive_fast>);

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
