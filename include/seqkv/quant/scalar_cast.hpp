// Per-element cast quantizers used as per-vector baselines: int8 with a per-row absmax scale and
// fp8 e4m3 with no scale (saturating). Both code the residual against the prediction.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>

#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// Symmetric int8: per row, scale = absmax / 127 (stored fp16), q in [-127, 127].
class int8_absmax : public shape_only_params {
public:
    static constexpr std::int32_t max_level = 127;

    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols; }
    std::uint32_t context_count(const params&) const { return 1; }
    std::uint32_t symbol_context(const params&, std::uint32_t) const { return 0; }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return 2 * max_level + 1; }

    void quantize_row(const params& p, row_hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        float absmax = 0;
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) absmax = std::max(absmax, std::fabs(x[c] - pred[c]));
        const float scale = put_half(side, absmax / float(max_level));
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const float r = x[c] - pred[c];
            const long q = scale > 0 ? std::clamp(std::lround(r / scale), -long(max_level), long(max_level)) : 0;
            symbols[c] = static_cast<std::uint16_t>(q + max_level);
        }
        reconstruct(p, scale, pred, symbols, recon);
    }
    void dequantize_row(const params& p, row_hint, std::span<const float> pred, std::span<const std::uint16_t> symbols,
                        byte_reader& side, std::span<float> recon) const {
        reconstruct(p, get_half(side), pred, symbols, recon);
    }

private:
    // (symbol - 127) is an integer of at most 7 bits and scale an fp16 value (11 significant bits):
    // the product is exact in fp32, so a fused multiply-add gives the same bits (no unfused_mul needed).
    static void reconstruct(const params& p, float scale, std::span<const float> pred,
                            std::span<const std::uint16_t> symbols, std::span<float> recon) {
        round_row(p.shape.output_type, recon.first(p.shape.cols),
                  [&](std::size_t c) { return pred[c] + float(std::int32_t(symbols[c]) - max_level) * scale; });
    }
};
static_assert(Quantizer<int8_absmax>);

/// fp8 e4m3 cast of the residual (saturating at ±448), one byte per element, no scale.
class fp8_cast : public shape_only_params {
public:

    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols; }
    std::uint32_t context_count(const params&) const { return 1; }
    std::uint32_t symbol_context(const params&, std::uint32_t) const { return 0; }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return 256; }

    void quantize_row(const params& p, row_hint h, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer&, std::span<float> recon) const {
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const float r = x[c] - pred[c];
            symbols[c] = std::isnan(r) ? 0 : float_to_fp8_e4m3(r, fp8_overflow::saturate);
        }
        byte_vector none;
        byte_reader empty(none);
        dequantize_row(p, h, pred, symbols, empty, recon);
    }
    void dequantize_row(const params& p, row_hint, std::span<const float> pred, std::span<const std::uint16_t> symbols,
                        byte_reader&, std::span<float> recon) const {
        static const std::array<float, 256> residual = [] {  // e4m3 NaN codes never come from the encoder: 0
            std::array<float, 256> t{};
            for (unsigned i = 0; i < 256; ++i) {
                const float r = fp8_e4m3_to_float(std::uint8_t(i));
                t[i] = std::isnan(r) ? 0.0f : r;
            }
            return t;
        }();
        round_row(p.shape.output_type, recon.first(p.shape.cols),
                  [&](std::size_t c) { return pred[c] + residual[symbols[c] & 0xFF]; });
    }
};
static_assert(Quantizer<fp8_cast>);

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
