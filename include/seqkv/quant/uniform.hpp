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

    void quantize_row(const params& p, row_hint hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        std::vector<float> mins, scales;
        if (p.axis == scale_axis::per_token) {
            for (std::uint32_t c0 = 0; c0 < p.shape.cols; c0 += group_) {
                float lo = std::numeric_limits<float>::infinity(), hi = -lo;
                for (std::uint32_t c = c0; c < std::min(p.shape.cols, c0 + group_); ++c) {
                    const float r = x[c] - pred[c];
                    if (std::isfinite(r)) lo = std::min(lo, r), hi = std::max(hi, r);
                }
                if (!(lo <= hi)) lo = hi = 0;
                mins.push_back(put_half(side, lo));
                scales.push_back(put_half(side, (hi - lo) / float(levels())));
            }
        }
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const auto [lo, scale] = group_scale(p, hint.row, c, mins, scales);
            const float r = (x[c] - pred[c] - lo) / scale;
            const float q = scale > 0 && !std::isnan(r) ? std::clamp(std::nearbyint(r), 0.0f, float(levels())) : 0.0f;
            symbols[c] = static_cast<std::uint16_t>(q);
            recon[c] = round_to_dtype(pred[c] + (lo + unfused_mul(q, scale)), p.shape.output_type);
        }
    }
    void dequantize_row(const params& p, row_hint hint, std::span<const float> pred,
                        std::span<const std::uint16_t> symbols, byte_reader& side, std::span<float> recon) const {
        std::vector<float> mins, scales;
        if (p.axis == scale_axis::per_token)
            for (std::uint32_t c0 = 0; c0 < p.shape.cols; c0 += group_) {
                mins.push_back(get_half(side));
                scales.push_back(get_half(side));
            }
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            const auto [lo, scale] = group_scale(p, hint.row, c, mins, scales);
            recon[c] = round_to_dtype(pred[c] + (lo + unfused_mul(float(symbols[c]), scale)), p.shape.output_type);
        }
    }

private:
    std::uint32_t levels() const { return (1u << bits_) - 1; }
    scale_axis axis_for(const block_shape& s) const { return s.kind == kv_kind::key ? key_axis_ : value_axis_; }
    std::pair<float, float> group_scale(const params& p, std::uint32_t row, std::uint32_t c, const std::vector<float>& mins,
                                        const std::vector<float>& scales) const {
        if (p.axis == scale_axis::per_token) return {mins[c / group_], scales[c / group_]};
        const std::size_t i = std::size_t(row / group_) * p.shape.cols + c;
        return {p.mins[i], p.scales[i]};
    }

    unsigned bits_;
    std::uint32_t group_;
    scale_axis key_axis_, value_axis_;
    bool channel_contexts_;
};
static_assert(Quantizer<uniform_grouped>);

}  // namespace seqkv::quant
