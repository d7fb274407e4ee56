// seqkv::codec<Quantizer, Predictor, EntropyCoder, Backend, Rate, Schedule>: the design-card
// composition, and the type the registry builds for every lossy file (codec/lossy/runtime.hpp).
// Each argument is a policy checked by its concept (quant/, predict/, coding/ or lossy symbol
// coders, backend/, lossy schedules); the result is a closed-loop ChunkCodec.
//
//   using my_codec = seqkv::codec<seqkv::quant::uniform_step, seqkv::predict::token_mean,
//                                 seqkv::coding::rans_interleaved, seqkv::backend::simd>;
//
// The EntropyCoder is really called: coding::rans_interleaved_coder<P> codes each (layer, K/V)
// symbol stream as a grouped static-table rANS block, coding::range_adaptive<> as an adaptive
// range-coded stream, and any lossy::SymbolCoder (e.g. lossy::packed_symbols) is used as is. An
// entropy coder the codec cannot drive is a compile error, never a substitution; so is a
// token-major schedule with a coder whose contexts are not known before decoding.
// Bit-exact coding of raw floats is lossless_codec<Backend> (codec/lossless/codec.hpp).
#pragma once

#include <type_traits>

#include "seqkv/backend/backend.hpp"
#include "seqkv/codec/lossless/codec.hpp"
#include "seqkv/codec/lossy/codec.hpp"
#include "seqkv/coding/entropy_coder.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

namespace detail {
/// The lossy symbol coder an EntropyCoder policy stands for (none: no `type`).
template <class E>
struct symbol_coder_of {};
template <bool Parametric>
struct symbol_coder_of<coding::rans_interleaved_coder<Parametric>> {
    using type = lossy::grouped_rans_symbols<Parametric>;
};
template <>
struct symbol_coder_of<coding::range_adaptive<coding::adaptive_frequency_model>> {
    using type = lossy::adaptive_range_symbols;
};
template <class E>
    requires lossy::SymbolCoder<E>
struct symbol_coder_of<E> {
    using type = E;
};
}  // namespace detail

/// An entropy coder the lossy codec can drive: coding::rans_interleaved_coder<P>,
/// coding::range_adaptive<> (adaptive_frequency_model), or any lossy::SymbolCoder.
template <class E>
concept LossyEntropyCoder = requires { typename detail::symbol_coder_of<E>::type; };

/// Closed-loop predictive codec composed from policies (fixed rate, per-head schedule by default).
template <quant::Quantizer Quantizer, predict::ResidualPredictor Predictor, LossyEntropyCoder EntropyCoder,
          backend::Backend Backend = backend::simd, predict::RatePolicy Rate = predict::fixed_rate,
          lossy::Schedule Schedule = lossy::per_head_schedule>
using codec = lossy::closed_loop_codec<Quantizer, Predictor, typename detail::symbol_coder_of<EntropyCoder>::type, Schedule,
                                       Backend, Rate>;

}  // namespace seqkv

SEQKV_FP_STRICT_END
