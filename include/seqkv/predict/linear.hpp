// Linear closed-loop predictors: per-channel AR(1) fitted per block, CacheGen-style anchor-token
// deltas, and cross-layer (the previous layer's reconstruction of the same token and head).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>

#include "seqkv/predict/predictor.hpp"
#include "seqkv/core/exact.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

/// x_t[c] ≈ gain[c] · recon_{t-1}[c] + offset[c]; least squares on the originals, stored as fp32.
/// Row 0 is predicted as offset (class 1).
class linear_ar {
public:
    struct params {
        std::vector<float> gain, offset;
    };
    static constexpr std::uint32_t context_classes = 2;
    static constexpr bool uses_previous_layer = false;

    params fit(const block_context& ctx, std::span<const float> x) const {
        params p{std::vector<float>(ctx.cols, 0.0f), std::vector<float>(ctx.cols, 0.0f)};
        if (ctx.rows < 3) return p;
        for (std::uint32_t c = 0; c < ctx.cols; ++c) {
            double sx = 0, sy = 0, sxx = 0, sxy = 0;
            const double n = ctx.rows - 1;
            for (std::uint32_t t = 1; t < ctx.rows; ++t) {
                const double a = x[std::size_t(t - 1) * ctx.cols + c], b = x[std::size_t(t) * ctx.cols + c];
                if (!std::isfinite(a) || !std::isfinite(b)) continue;
                sx += a, sy += b, sxx += a * a, sxy += a * b;
            }
            const double var = sxx - sx * sx / n;
            const double g = var > 1e-30 ? (sxy - sx * sy / n) / var : 0.0;
            const double gain = std::clamp(g, -1.0, 1.0);
            p.gain[c] = float(gain);
            p.offset[c] = float((sy - gain * sx) / n);
        }
        return p;
    }
    void write_params(const params& p, byte_writer& w) const {
        for (std::size_t c = 0; c < p.gain.size(); ++c) {
            w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(p.gain[c]));
            w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(p.offset[c]));
        }
    }
    params read_params(const block_context& ctx, byte_reader& r) const {
        params p;
        for (std::uint32_t c = 0; c < ctx.cols; ++c) {
            p.gain.push_back(std::bit_cast<float>(r.get<std::uint32_t>()));
            p.offset.push_back(std::bit_cast<float>(r.get<std::uint32_t>()));
            require_format(std::isfinite(p.gain.back()) && std::isfinite(p.offset.back()), "linear_ar: non-finite coefficient");
        }
        return p;
    }
    void reset(const block_context& ctx, const params& p) {
        params_ = p;
        previous_.assign(ctx.cols, 0.0f);
        have_ = false;
    }
    std::uint32_t predict(std::uint32_t, std::span<float> out) {
        for (std::size_t c = 0; c < out.size(); ++c)
            out[c] = have_ ? unfused_mul(params_.gain[c], previous_[c]) + params_.offset[c] : params_.offset[c];
        return have_ ? 0 : 1;
    }
    void observe(std::uint32_t, std::span<const float> recon) {
        std::copy(recon.begin(), recon.end(), previous_.begin());
        have_ = true;
    }
    void row_classes(const block_context&, const params&, std::span<std::uint8_t> out) const {
        for (std::size_t t = 0; t < out.size(); ++t) out[t] = t == 0 ? 1 : 0;
    }

private:
    params params_;
    std::vector<float> previous_;
    bool have_ = false;
};
static_assert(RowClassesKnownAhead<linear_ar>);

/// CacheGen-style anchors: every `interval`-th row is an anchor coded against zero (class 1);
/// the rows after it are coded as deltas to the anchor's reconstruction (class 0).
class anchor_delta {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 2;
    static constexpr bool uses_previous_layer = false;

    explicit anchor_delta(std::uint32_t interval = 16) : interval_(interval) {
        require_usage(interval >= 1, "anchor_delta: interval must be >= 1");
    }
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }
    void reset(const block_context& ctx, const params&) { anchor_.assign(ctx.cols, 0.0f); }
    std::uint32_t predict(std::uint32_t row, std::span<float> out) {
        if (row % interval_ == 0) {
            std::fill(out.begin(), out.end(), 0.0f);
            return 1;
        }
        std::copy(anchor_.begin(), anchor_.end(), out.begin());
        return 0;
    }
    void observe(std::uint32_t row, std::span<const float> recon) {
        if (row % interval_ == 0) std::copy(recon.begin(), recon.end(), anchor_.begin());
    }
    void row_classes(const block_context&, const params&, std::span<std::uint8_t> out) const {
        for (std::size_t t = 0; t < out.size(); ++t) out[t] = t % interval_ == 0 ? 1 : 0;
    }

private:
    std::uint32_t interval_;
    std::vector<float> anchor_;
};
static_assert(RowClassesKnownAhead<anchor_delta>);

/// Predicts the previous layer's reconstruction of the same token and head (layer 0: zero, class 1).
class cross_layer {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 2;
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }
    void reset(const block_context& ctx, const params&) {
        source_ = ctx.previous_layer_recon;
        cols_ = ctx.cols;
    }
    std::uint32_t predict(std::uint32_t row, std::span<float> out) {
        if (source_.empty()) {
            std::fill(out.begin(), out.end(), 0.0f);
            return 1;
        }
        const auto src = source_.subspan(std::size_t(row) * cols_, cols_);
        std::copy(src.begin(), src.end(), out.begin());
        return 0;
    }
    void observe(std::uint32_t, std::span<const float>) {}
    void row_classes(const block_context& ctx, const params&, std::span<std::uint8_t> out) const {
        std::fill(out.begin(), out.end(), std::uint8_t(ctx.previous_layer_recon.empty() ? 1 : 0));
    }

private:
    std::span<const float> source_;
    std::uint32_t cols_ = 0;
};
static_assert(RowClassesKnownAhead<cross_layer>);

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
