// Block API over the range coder with adaptive per-context models: no table side information,
// one pass, symbol-by-symbol FIFO. The model type is a policy (AdaptiveSymbolModel).
//
// Block layout: u8 kind (0xB3), varint symbol_count, varint alphabet_size, varint
// context_count, then range-coded bytes to the end of the block.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/pow2_adaptive_model.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/coding/rans_interleaved.hpp"
#include "seqkv/coding/varint.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// An adaptive model the range block coder can drive: constructed from an alphabet size and
/// coded with encode_symbol/decode_symbol overloads that update it.
template <class Model>
concept AdaptiveSymbolModel = requires(Model& model, range_encoder& enc, range_decoder& dec, std::uint32_t symbol) {
    Model(symbol);
    { model.alphabet_size() } -> std::convertible_to<std::uint32_t>;
    encode_symbol(enc, model, symbol);
    { decode_symbol(dec, model) } -> std::convertible_to<std::uint32_t>;
};
static_assert(AdaptiveSymbolModel<adaptive_frequency_model>);
static_assert(AdaptiveSymbolModel<pow2_adaptive_model>);

inline constexpr std::uint8_t range_block_kind = 0xB3;
/// Limit on context_count * alphabet_size (model storage), as for rANS blocks.
inline constexpr std::uint64_t max_range_block_model_cells = std::uint64_t{1} << 24;

namespace detail {
template <class Model>
Model& model_for(std::vector<std::unique_ptr<Model>>& models, std::uint32_t context, std::uint32_t alphabet_size) {
    auto& slot = models[context];
    if (!slot) slot = std::make_unique<Model>(alphabet_size);  // created on first use only
    return *slot;
}
}  // namespace detail

/// Codes symbols with one adaptive Model per context (contexts empty = one context).
template <AdaptiveSymbolModel Model = adaptive_frequency_model>
byte_vector encode_range_block(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                               std::uint32_t alphabet_size, std::uint32_t context_count) {
    require_usage(alphabet_size >= 1 && alphabet_size <= max_alphabet_size, "encode_range_block: bad alphabet size");
    require_usage(context_count >= 1 && context_count <= max_alphabet_size, "encode_range_block: bad context count");
    require_usage(contexts.empty() || contexts.size() == symbols.size(), "encode_range_block: contexts/symbols mismatch");
    if (std::uint64_t{alphabet_size} * context_count > max_range_block_model_cells)
        throw limit_error("encode_range_block: context_count * alphabet_size too large");
    byte_vector out;
    byte_writer writer(out);
    writer.put<std::uint8_t>(range_block_kind);
    put_varint(writer, symbols.size());
    put_varint(writer, alphabet_size);
    put_varint(writer, context_count);
    std::vector<std::unique_ptr<Model>> models(context_count);
    range_encoder encoder(out);
    for (std::size_t i = 0; i < symbols.size(); ++i) {
        const std::uint32_t c = rans::context_at(contexts, i);
        require_usage(c < context_count && symbols[i] < alphabet_size, "encode_range_block: symbol or context out of range");
        encode_symbol(encoder, detail::model_for(models, c, alphabet_size), symbols[i]);
    }
    encoder.finish();
    return out;
}

/// Decodes an encode_range_block block into out (out.size() = symbol count). Corrupt input gives
/// format_error or wrong symbols, never an out-of-bounds read.
template <AdaptiveSymbolModel Model = adaptive_frequency_model>
void decode_range_block(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts,
                        std::span<std::uint16_t> out) {
    require_usage(contexts.empty() || contexts.size() == out.size(), "decode_range_block: contexts/out mismatch");
    byte_reader reader(bytes, "range block");
    if (reader.get<std::uint8_t>() != range_block_kind) throw format_error("range block: wrong block kind");
    if (get_varint(reader) != out.size()) throw format_error("range block: symbol count differs from out.size()");
    const auto alphabet_size = static_cast<std::uint32_t>(get_varint(reader, max_alphabet_size));
    const auto context_count = static_cast<std::uint32_t>(get_varint(reader, max_alphabet_size));
    if (alphabet_size == 0 || context_count == 0) throw format_error("range block: empty alphabet or no contexts");
    if (std::uint64_t{alphabet_size} * context_count > max_range_block_model_cells)
        throw limit_error("range block: context_count * alphabet_size too large");
    std::vector<std::unique_ptr<Model>> models(context_count);
    range_decoder decoder(reader.get_bytes(reader.remaining()));
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::uint32_t c = rans::context_at(contexts, i);
        if (c >= context_count) throw format_error("range block: context beyond the block's context count");
        const std::uint32_t symbol = decode_symbol(decoder, detail::model_for(models, c, alphabet_size));
        out[i] = static_cast<std::uint16_t>(symbol);
    }
    if (decoder.overrun_bytes() > 3) throw format_error("range block: coded bytes truncated");
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
