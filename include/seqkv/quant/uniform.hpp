// Uniform scalar quantizers of the residual:
//   * uniform_step    — mid-tread step quantizer meant for entropy coding (seqkv's own): the
//                       step is relative_step × 2^e, e the rounded-up log2 of the block's (or
//                       each channel's) ORIGINAL RMS — the signal, not the residual, so a better
//                       predictor buys fewer bits at the same distortion; unbounded levels with
//                       an escape.
//   * uniform_grouped — KIVI-style asymmetric b-bit quantizer with fp16 min/scale per group,
//                       keys grouped per channel (over G tokens), values per token (G channels).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// v with its mantissa rounded to `mantissa_bits` bits (nearest, ties away), so that products
/// with small integers stay exact in fp32.
inline float round_mantissa(float v, int mantissa_bits) {
    std::uint32_t u = std::bit_cast<std::uint32_t>(v);
    const int drop = 23 - mantissa_bits;
    u = (u + (1u << (drop - 1))) & ~((1u << drop) - 1);
    return std::bit_cast<float>(u);
}

/// Mid-tread uniform quantizer with power-of-two-normalized steps, for entropy-coded symbols.
class uniform_step {
public:
    static constexpr std::uint32_t escape_symbol = 255;       // level stored as i16 in the side bytes
    static constexpr std::int32_t max_level = (1 << 15) - 1;  // |q| * 8-bit mantissa < 2^24: q*step exact
    static constexpr int step_mantissa_bits = 8;
    static constexpr int min_exponent = -90, max_exponent = 90;
    static constexpr bool plan_uses_residual = false;  // steps come from the originals' RMS

    struct params {
        block_shape shape;
        std::vector<std::int8_t> exponents;  // one per block (size 1) or one per channel
    };

    /// relative_step: step in units of the residual RMS (rounded to 8 mantissa bits), in [2^-20, 2^20].
    explicit uniform_step(float relative_step = 0.5f, bool per_channel = false)
        : relative_step_(round_mantissa(relative_step, step_mantissa_bits)), per_channel_(per_channel) {
        require_usage(relative_step_ >= 0x1p-20f && relative_step_ <= 0x1p20f, "uniform_step: relative step out of range");
    }
    float relative_step() const { return relative_step_; }

    params plan(const block_shape& shape, std::span<const float> originals, std::span<const float>) const {
        params p{shape, {}};
        const std::uint32_t n = per_channel_ ? shape.cols : 1;
        std::vector<double> sum(n, 0.0);
        for (std::uint32_t t = 0; t < shape.rows; ++t)
            for (std::uint32_t c = 0; c < shape.cols; ++c) {
                const double r = originals[std::size_t(t) * shape.cols + c];
                if (std::isfinite(r)) sum[per_channel_ ? c : 0] += r * r;
            }
        const double count = per_channel_ ? shape.rows : double(shape.rows) * shape.cols;
        for (std::uint32_t i = 0; i < n; ++i) {
            int e = min_exponent;
            if (sum[i] > 0 && count > 0) std::frexp(std::sqrt(sum[i] / count), &e);  // rms in [2^(e-1), 2^e)
            p.exponents.push_back(static_cast<std::int8_t>(std::clamp(e, min_exponent, max_exponent)));
        }
        return p;
    }
    void write_params(const params& p, byte_writer& w) const {
        for (auto e : p.exponents) w.put<std::int8_t>(e);
    }
    params read_params(const block_shape& shape, byte_reader& r) const {
        params p{shape, {}};
        const std::uint32_t n = per_channel_ ? shape.cols : 1;
        for (std::uint32_t i = 0; i < n; ++i) {
            const auto e = r.get<std::int8_t>();
            require_format(e >= min_exponent && e <= max_exponent, "uniform_step: step exponent out of range");
            p.exponents.push_back(e);
        }
        return p;
    }
    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols; }
    std::uint32_t context_count(const params& p) const { return p.shape.cols; }
    std::uint32_t symbol_context(const params&, std::uint32_t index) const { return index; }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return escape_symbol + 1; }

    /// Step of channel c under a rate hint (exact power-of-two scaling of relative_step).
    float step(const params& p, std::uint32_t c, row_hint hint) const {
        const int e = p.exponents[per_channel_ ? c : 0] + std::clamp(hint.step_shift, -16, 16);
        return std::ldexp(relative_step_, e);
    }

    void quantize_row(const params& p, row_hint hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        const float block_step = step(p, 0, hint);
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const float s = per_channel_ ? step(p, c, hint) : block_step;
            const float r = (x[c] - pred[c]) / s;
            const std::int32_t q =
                std::isnan(r) ? 0 : std::int32_t(std::clamp(std::nearbyint(r), -float(max_level), float(max_level)));
            const std::uint32_t z = zigzag(q);
            if (z < escape_symbol) {
                symbols[c] = static_cast<std::uint16_t>(z);
            } else {
                symbols[c] = escape_symbol;
                side.put<std::int16_t>(static_cast<std::int16_t>(q));
            }
            recon[c] = round_to_dtype(pred[c] + float(q) * s, p.shape.output_type);
        }
    }
    void dequantize_row(const params& p, row_hint hint, std::span<const float> pred,
                        std::span<const std::uint16_t> symbols, byte_reader& side, std::span<float> recon) const {
        const float block_step = step(p, 0, hint);
        bool escapes = false;
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) escapes |= symbols[c] == escape_symbol;
        if (!escapes && !per_channel_ && p.shape.output_type == dtype::bf16) {  // the common case, vectorizable
            for (std::uint32_t c = 0; c < p.shape.cols; ++c)
                recon[c] = round_to_bf16(pred[c] + float(unzigzag(symbols[c])) * block_step);
            return;
        }
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            std::int32_t q;
            if (symbols[c] == escape_symbol) [[unlikely]] {
                q = side.get<std::int16_t>();
                require_format(q >= -max_level && q <= max_level, "uniform_step: escaped level out of range");
            } else {
                q = unzigzag(symbols[c]);
            }
            recon[c] = float(q) * (per_channel_ ? step(p, c, hint) : block_step);
        }
        if (p.shape.output_type == dtype::bf16)
            for (std::uint32_t c = 0; c < p.shape.cols; ++c) recon[c] = round_to_bf16(pred[c] + recon[c]);
        else
            for (std::uint32_t c = 0; c < p.shape.cols; ++c) recon[c] = round_to_dtype(pred[c] + recon[c], p.shape.output_type);
    }

private:
    float relative_step_;
    bool per_channel_;
};
static_assert(Quantizer<uniform_step>);

/// Which axis shares one (min, scale) pair in uniform_grouped.
enum class scale_axis : std::uint8_t {
    per_token = 0,    // a group is G consecutive channels of one token (scales are per-row side bytes)
    per_channel = 1,  // a group is G consecutive tokens of one channel (scales are block params)
};

/// KIVI-style asymmetric uniform quantizer: q = round((r - min) / scale) in [0, 2^bits - 1].
class uniform_grouped {
public:
    struct params {
        block_shape shape;
        scale_axis axis = scale_axis::per_token;
        std::vector<float> mins, scales;  // per_channel: [ceil(rows / G)][cols], decoded fp16 values
    };

    /// bits in [1, 8]; group_size >= 1 (tokens or channels per scale); contexts per channel if
    /// channel_contexts (helps an entropy coder), else one context.
    uniform_grouped(unsigned bits, std::uint32_t group_size, scale_axis key_axis = scale_axis::per_channel,
                    scale_axis value_axis = scale_axis::per_token, bool channel_contexts = false)
        : bits_(bits), group_(group_size), key_axis_(key_axis), value_axis_(value_axis), channel_contexts_(channel_contexts) {
        require_usage(bits >= 1 && bits <= 8 && group_size >= 1, "uniform_grouped: bits in [1, 8], group size >= 1");
    }

    params plan(const block_shape& shape, std::span<const float>, std::span<const float> residual) const {
        params p{shape, axis_for(shape), {}, {}};
        if (p.axis == scale_axis::per_token) return p;
        byte_vector scratch;
        byte_writer w(scratch);
        for (std::uint32_t g0 = 0; g0 < shape.rows; g0 += group_)
            for (std::uint32_t c = 0; c < shape.cols; ++c) {
                float lo = std::numeric_limits<float>::infinity(), hi = -lo;
                for (std::uint32_t t = g0; t < std::min(shape.rows, g0 + group_); ++t) {
                    const float r = residual[std::size_t(t) * shape.cols + c];
                    if (std::isfinite(r)) lo = std::min(lo, r), hi = std::max(hi, r);
                }
                if (!(lo <= hi)) lo = hi = 0;
                p.mins.push_back(put_half(w, lo));
                p.scales.push_back(put_half(w, (hi - lo) / float(levels())));
            }
        return p;
    }
    void write_params(const params& p, byte_writer& w) const {
        for (std::size_t i = 0; i < p.mins.size(); ++i) {
            put_half(w, p.mins[i]);
            put_half(w, p.scales[i]);
        }
    }
    params read_params(const block_shape& shape, byte_reader& r) const {
        params p{shape, axis_for(shape), {}, {}};
        if (p.axis == scale_axis::per_token) return p;
        const std::size_t n = std::size_t((shape.rows + group_ - 1) / group_) * shape.cols;
        for (std::size_t i = 0; i < n; ++i) {
            p.mins.push_back(get_half(r));
            p.scales.push_back(get_half(r));
        }
        return p;
    }
    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols; }
    std::uint32_t context_count(const params& p) const { return channel_contexts_ ? p.shape.cols : 1; }
    std::uint32_t symbol_context(const params&, std::uint32_t index) const { return channel_contexts_ ? index : 0; }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return levels() + 1; }

    // Reconstruction: pred + (lo + q * scale). q is an integer <= 255 (8 significant bits) and scale
    // an fp16 value (11), so q * scale is exact in fp32: a fused multiply-add gives the same bits,
    // and the product needs no unfused_mul guard (which would keep these loops from vectorizing).
    void quantize_row(const params& p, row_hint hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        const std::uint32_t cols = p.shape.cols;
        const float top = float(levels());
        auto code = [&](std::uint32_t c0, std::uint32_t c1, const float* lo, const float* scale, std::size_t step) {
            for (std::uint32_t c = c0; c < c1; ++c) {
                const float l = lo[step * c], s = scale[step * c];
                const float r = (x[c] - pred[c] - l) / s;
                const float q = s > 0 && !std::isnan(r) ? round_clamped(r, top) : 0.0f;
                symbols[c] = static_cast<std::uint16_t>(q);
            }
            round_row(p.shape.output_type, recon.subspan(c0, c1 - c0), [&](std::size_t i) {
                const std::size_t c = c0 + i;
                return pred[c] + (lo[step * c] + float(symbols[c]) * scale[step * c]);
            });
        };
        if (p.axis == scale_axis::per_token) {
            for (std::uint32_t c0 = 0; c0 < cols; c0 += group_) {
                const std::uint32_t c1 = std::min(cols, c0 + group_);
                float lo = std::numeric_limits<float>::infinity(), hi = -lo;
                for (std::uint32_t c = c0; c < c1; ++c) {
                    const float r = x[c] - pred[c];
                    if (std::isfinite(r)) lo = std::min(lo, r), hi = std::max(hi, r);
                }
                if (!(lo <= hi)) lo = hi = 0;
                const float l = put_half(side, lo), s = put_half(side, (hi - lo) / top);
                // the group's (lo, scale) broadcast: step 0 reads element 0 for every c
                const float lo_at[1] = {l}, scale_at[1] = {s};
                code(c0, c1, lo_at, scale_at, 0);
            }
        } else {
            const std::size_t base = std::size_t(hint.row / group_) * cols;
            code(0, cols, p.mins.data() + base, p.scales.data() + base, 1);
        }
    }
    void dequantize_row(const params& p, row_hint hint, std::span<const float> pred,
                        std::span<const std::uint16_t> symbols, byte_reader& side, std::span<float> recon) const {
        const std::uint32_t cols = p.shape.cols;
        if (p.axis == scale_axis::per_token) {
            for (std::uint32_t c0 = 0; c0 < cols; c0 += group_) {
                const std::uint32_t c1 = std::min(cols, c0 + group_);
                const float lo = get_half(side), scale = get_half(side);
                round_row(p.shape.output_type, recon.subspan(c0, c1 - c0),
                          [&](std::size_t i) { return pred[c0 + i] + (lo + float(symbols[c0 + i]) * scale); });
            }
        } else {
            const std::size_t base = std::size_t(hint.row / group_) * cols;
            const float *lo = p.mins.data() + base, *scale = p.scales.data() + base;
            round_row(p.shape.output_type, recon.first(cols),
                      [&](std::size_t c) { return pred[c] + (lo[c] + float(symbols[c]) * scale[c]); });
        }
    }

private:
    std::uint32_t levels() const { return (1u << bits_) - 1; }
    scale_axis axis_for(const block_shape& s) const { return s.kind == kv_kind::key ? key_axis_ : value_axis_; }

    unsigned bits_;
    std::uint32_t group_;
    scale_axis key_axis_, value_axis_;
    bool channel_contexts_;
};
static_assert(Quantizer<uniform_grouped>);

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
