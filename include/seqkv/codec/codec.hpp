// seqkv::codec<Quantizer, Predictor, EntropyCoder, Backend>: the design-card composition. Each
// argument is a policy type checked by its concept (quant/, predict/, coding/, backend/); the
// result is a closed-loop ChunkCodec. The EntropyCoder policy selects how quantized residual
// symbols are coded. Backend is carried in the type for the seams that use it (lossless_codec
// picks its rANS decode kernels with it; the CUDA backend will join here); the lossy symbol
// decoder currently picks SIMD or scalar at run time, both reading the same bytes.
//
//   using my_codec = seqkv::codec<seqkv::quant::uniform_step, seqkv::predict::token_mean,
//                                 seqkv::coding::rans_interleaved, seqkv::backend::simd>;
//
// Bit-exact coding of raw floats is lossless_codec<Backend> (codec/lossless/codec.hpp); files
// name their codec at run time and codec/registry.hpp maps that back to these templates.
#pragma once

#include <type_traits>

#include "seqkv/backend/backend.hpp"
#include "seqkv/codec/lossless/codec.hpp"
#include "seqkv/codec/lossy/codec.hpp"
#include "seqkv/coding/entropy_coder.hpp"

namespace seqkv {

namespace detail {
/// The symbol coding a lossy codec uses for an EntropyCoder policy.
template <coding::EntropyCoder E>
constexpr lossy::symbol_coding symbol_coding_for() {
    if constexpr (std::is_same_v<E, coding::rans_interleaved> ||
                  std::is_same_v<E, coding::rans_interleaved_coder<true>>)
        return lossy::symbol_coding::rans;
    else
        return lossy::symbol_coding::adaptive;  // range coder with adaptive per-context models
}
}  // namespace detail

/// Closed-loop predictive codec composed from policies; RatePolicy defaults to a fixed rate.
template <quant::Quantizer Quantizer, predict::ResidualPredictor Predictor, coding::EntropyCoder EntropyCoder,
          backend::Backend Backend = backend::simd, predict::RatePolicy Rate = predict::fixed_rate>
class codec : public lossy_codec<Quantizer, Predictor, Rate> {
public:
    using entropy_coder = EntropyCoder;
    using backend_type = Backend;

    /// options.coding is set from EntropyCoder; the rest (RoPE table, expected-KV table) is kept.
    explicit codec(Quantizer quantizer = {}, Predictor predictor = {}, Rate rate = {}, lossy_codec_options options = {})
        : lossy_codec<Quantizer, Predictor, Rate>(std::move(quantizer), std::move(predictor), std::move(rate),
                                                  with_coder(options)) {}

private:
    static lossy_codec_options with_coder(lossy_codec_options o) {
        o.coding = detail::symbol_coding_for<EntropyCoder>();
        o.parametric_tables = std::is_same_v<EntropyCoder, coding::rans_interleaved_coder<true>> || o.parametric_tables;
        return o;
    }
};

}  // namespace seqkv
