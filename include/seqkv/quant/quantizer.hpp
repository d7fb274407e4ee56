// The Quantizer concept: maps residuals of one block (one layer, K or V, one head: rows = tokens,
// cols = channels) to integer symbols plus raw side bytes, and back, one row at a time so a
// closed-loop predictor can run between rows.
//
// Contract every model keeps (tested in tests/quant/):
//   * quantize_row writes the reconstruction the decoder will produce: dequantize_row given the
//     same params, hint, prediction, symbols and side bytes yields bit-identical floats;
//   * reconstructions are exactly representable in shape.output_type (the codec stores them as is);
//   * symbol j of a row is < context_alphabet(params, symbol_context(params, j));
//   * decoder-side arithmetic is fp32/fp64 basic operations in a fixed order, with products that
//     feed a sum done through unfused_mul (no FMA contraction can change the bits), so encoder and
//     decoder agree on every machine.
#pragma once

#include <bit>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/exact.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// Shape of the block a quantizer codes: rows (tokens) × cols (channels) of one layer/kind/head.
struct block_shape {
    std::uint32_t rows = 0;
    std::uint32_t cols = 0;
    dtype output_type = dtype::bf16;  // reconstructions are rounded to this type
    kv_kind kind = kv_kind::key;
};

/// Base for quantizers whose only block parameter is the shape (nothing stored per block).
struct shape_only_params {
    struct params {
        block_shape shape;
    };
    params plan(const block_shape& shape, std::span<const float>, std::span<const float>) const { return {shape}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_shape& shape, byte_reader&) const { return {shape}; }
};

/// Per-row rate hint from a rate policy: quantizers with a step multiply it by 2^step_shift.
struct row_hint {
    std::uint32_t row = 0;
    std::int32_t step_shift = 0;
};

/// v rounded to bf16 (nearest even; NaN stays NaN), as fp32: the same bits as
/// bf16_to_float(float_to_bf16(v)), branch-light for the hot loops.
[[gnu::always_inline]] inline float round_to_bf16(float v) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(v);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    const std::uint32_t nan = (u & 0xffff0000u) | ((u & 0x007f0000u) == 0 ? 0x00400000u : 0u);  // quiet, payload kept
    return std::bit_cast<float>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

#if defined(__SSE2__)
/// round_to_bf16 of four lanes (the same bits).
inline __m128 round_to_bf16_x4(__m128 v) {
    const __m128i u = _mm_castps_si128(v);
    const __m128i lsb = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
    const __m128i rounded = _mm_and_si128(_mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)), lsb), _mm_set1_epi32(std::int32_t(0xffff0000u)));
    const __m128i quiet = _mm_and_si128(_mm_cmpeq_epi32(_mm_and_si128(u, _mm_set1_epi32(0x007f0000)), _mm_setzero_si128()),
                                        _mm_set1_epi32(0x00400000));
    const __m128i nan = _mm_or_si128(_mm_and_si128(u, _mm_set1_epi32(std::int32_t(0xffff0000u))), quiet);
    // |u| > 0x7f800000: both sides below 2^31, so the signed compare is the unsigned one
    const __m128i is_nan = _mm_cmpgt_epi32(_mm_and_si128(u, _mm_set1_epi32(0x7fffffff)), _mm_set1_epi32(0x7f800000));
    return _mm_castsi128_ps(_mm_or_si128(_mm_and_si128(is_nan, nan), _mm_andnot_si128(is_nan, rounded)));
}
#endif

/// v rounded to the nearest value of type t (round to nearest even), returned as fp32.
inline float round_to_dtype(float v, dtype t) {
    switch (t) {
        case dtype::bf16: return round_to_bf16(v);
        case dtype::f16: return fp16_to_float(float_to_fp16(v));
        case dtype::f32: return v;
        case dtype::f8_e4m3: return fp8_e4m3_to_float(float_to_fp8_e4m3(v));
        case dtype::f8_e5m2: return fp8_e5m2_to_float(float_to_fp8_e5m2(v));
        default: throw usage_error("round_to_dtype: not a KV float dtype");
    }
}

/// out[c] = round_to_dtype(value(c), t) for every c, with the type's branch outside the loop.
template <class F>
inline void round_row(dtype t, std::span<float> out, F&& value) {
    if (t == dtype::bf16) {
        for (std::size_t c = 0; c < out.size(); ++c) out[c] = round_to_bf16(value(c));
    } else {
        for (std::size_t c = 0; c < out.size(); ++c) out[c] = round_to_dtype(value(c), t);
    }
}

/// nearbyint(clamp(r, 0, top)) for r not NaN and an integer top < 2^22, without a libm call: adding
/// and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even, as nearbyint does in the
/// default rounding mode (an fp32 in [2^23, 2^24) has no fraction bits).
inline float round_clamped(float r, float top) {
    const float v = std::min(std::max(r, 0.0f), top);
#ifdef __FAST_MATH__  // reassociation would fold (v + C) - C into v: the library call instead
    return std::nearbyint(v);
#else
    return (v + 0x1.8p23f) - 0x1.8p23f;
#endif
}

/// Writes a float as its fp16 bit pattern (side information) and returns the value the decoder reads back.
/// A value fp16 cannot hold (|v| >= 65520 rounds to Inf) is refused here, at encode time: a
/// usage_error naming the preset's limit, never a file its own decoder rejects.
inline float put_half(byte_writer& w, float v) {
    const std::uint16_t h = float_to_fp16(v);
    if (!std::isfinite(fp16_to_float(h)))
        throw usage_error("lossy codec: side information " + std::to_string(v) +
                          " exceeds fp16 (this quantizer stores its side values - scales, minimums, norms - as fp16, "
                          "largest 65504; use a seqkv-* or lossless preset for such a cache)");
    w.put<std::uint16_t>(h);
    return fp16_to_float(h);
}
/// Reads a value written by put_half; throws format_error for non-finite values.
inline float get_half(byte_reader& r) {
    const float v = fp16_to_float(r.get<std::uint16_t>());
    if (!std::isfinite(v)) throw format_error("lossy side info: non-finite fp16 value");
    return v;
}

/// Number of bits to pack one symbol of an alphabet of n symbols (n >= 1).
constexpr unsigned bits_for_alphabet(std::uint32_t n) { return n <= 1 ? 0u : unsigned(std::bit_width(n - 1)); }

/// A quantizer adapter. `params` is per-block side information: the encoder plans it from the
/// block's originals and an open-loop residual estimate, writes it, and the decoder reads it.
template <class Q>
concept Quantizer = requires(const Q& q, const typename Q::params& p, const block_shape& shape,
                             std::span<const float> matrix, byte_writer& w, byte_reader& r, row_hint hint,
                             std::span<const float> row, std::span<std::uint16_t> symbols,
                             std::span<const std::uint16_t> coded, std::span<float> recon, std::uint32_t index) {
    typename Q::params;
    /// Chooses the block's parameters from originals and residual estimate (both [rows, cols]).
    { q.plan(shape, matrix, matrix) } -> std::same_as<typename Q::params>;
    { q.write_params(p, w) } -> std::same_as<void>;
    /// Reads what write_params wrote; throws format_error on invalid values.
    { q.read_params(shape, r) } -> std::same_as<typename Q::params>;
    /// Symbols emitted per row (constant for the block).
    { q.symbols_per_row(p) } -> std::same_as<std::uint32_t>;
    { q.context_count(p) } -> std::same_as<std::uint32_t>;
    /// Entropy-coding context of the row's symbol `index`.
    { q.symbol_context(p, index) } -> std::same_as<std::uint32_t>;
    /// Alphabet size of a context (packed coding spends bits_for_alphabet() bits per symbol).
    { q.context_alphabet(p, index) } -> std::same_as<std::uint32_t>;
    /// Encoder: original row + prediction -> symbols, per-row side bytes, reconstruction.
    { q.quantize_row(p, hint, row, row, symbols, w, recon) } -> std::same_as<void>;
    /// Decoder: prediction + symbols + side bytes -> the same reconstruction.
    { q.dequantize_row(p, hint, row, coded, r, recon) } -> std::same_as<void>;
};

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
