// SZ-style error-bounded quantizer: |original - reconstruction| <= bound holds for EVERY element,
// checked on the final reconstruction (after rounding to the output dtype); an element that
// would break it (or a non-finite one, or a level past the alphabet) is escaped and stored
// verbatim in the side bytes. Bound modes:
//   * absolute: bound = the configured value;
//   * relative: bound = value × (max − min) of the block's originals (SZ's value-range-relative
//     mode), computed by the encoder and stored as fp32 in the block params.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// Uniform quantizer with step 2·bound and escapes: a guaranteed per-element error bound.
class error_bounded {
public:
    static constexpr std::uint32_t alphabet = 1024;
    static constexpr std::uint32_t escape_symbol = alphabet - 1;
    static constexpr std::int32_t max_level = std::int32_t(escape_symbol - 1) / 2;

    struct params {
        block_shape shape;
        float bound = 0;  // absolute error bound for this block, > 0 or 0 (then everything is escaped)
    };

    /// bound > 0; relative: bound is a fraction of the block's value range.
    explicit error_bounded(float bound, bool relative = false) : bound_(bound), relative_(relative) {
        require_usage(bound > 0 && std::isfinite(bound), "error_bounded: bound must be positive and finite");
    }

    params plan(const block_shape& shape, std::span<const float> originals, std::span<const float>) const {
        if (!relative_) return {shape, bound_};
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        for (float v : originals)
            if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
        const float range = lo <= hi ? hi - lo : 0.0f;
        return {shape, bound_ * range};
    }
    void write_params(const params& p, byte_writer& w) const {
        if (relative_) w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(p.bound));
    }
    params read_params(const block_shape& shape, byte_reader& r) const {
        if (!relative_) return {shape, bound_};
        const float b = std::bit_cast<float>(r.get<std::uint32_t>());
        require_format(std::isfinite(b) && b >= 0, "error_bounded: invalid stored bound");
        return {shape, b};
    }
    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols; }
    std::uint32_t context_count(const params& p) const { return p.shape.cols; }
    std::uint32_t symbol_context(const params&, std::uint32_t index) const { return index; }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return alphabet; }

    void quantize_row(const params& p, row_hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        const float step = 2 * p.bound;
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const float r = step > 0 ? (x[c] - pred[c]) / step : std::numeric_limits<float>::infinity();
            bool escape = !std::isfinite(r) || std::fabs(r) > float(max_level) || !std::isfinite(pred[c]);
            if (!escape) {
                const auto q = std::int32_t(std::nearbyint(r));
                const float v = level_value(p, pred[c], q);
                if (std::fabs(double(x[c]) - double(v)) <= double(p.bound)) {
                    symbols[c] = static_cast<std::uint16_t>(zigzag(q));
                    recon[c] = v;
                    continue;
                }
                escape = true;
            }
            symbols[c] = escape_symbol;
            side.put<std::uint32_t>(std::bit_cast<std::uint32_t>(x[c]));  // exact: x is a value of the dtype
            recon[c] = x[c];
        }
    }
    void dequantize_row(const params& p, row_hint, std::span<const float> pred, std::span<const std::uint16_t> symbols,
                        byte_reader& side, std::span<float> recon) const {
        bool escapes = false;
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) escapes |= symbols[c] == escape_symbol;
        if (!escapes) {  // the common row: levels only, the dtype's branch outside the loop
            const float step = 2 * p.bound;
            round_row(p.shape.output_type, recon.first(p.shape.cols),
                      [&](std::size_t c) { return pred[c] + unfused_mul(float(unzigzag(symbols[c])), step); });
            return;
        }
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            if (symbols[c] == escape_symbol) {
                const float v = std::bit_cast<float>(side.get<std::uint32_t>());
                require_format(round_to_dtype(v, p.shape.output_type) == v || std::isnan(v),
                               "error_bounded: escaped value not representable in the dtype");
                recon[c] = v;
            } else {
                recon[c] = level_value(p, pred[c], unzigzag(symbols[c]));
            }
        }
    }

private:
    static float level_value(const params& p, float pred, std::int32_t q) {
        return round_to_dtype(pred + unfused_mul(float(q), 2 * p.bound), p.shape.output_type);
    }
    float bound_;
    bool relative_;
};
static_assert(Quantizer<error_bounded>);

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
