// Pre-RoPE key domain for prediction. Cached keys are k_t = R(t) k_pre_t (Llama "rotate_half"
// RoPE: channel i pairs with i + D/2, angle t · inv_freq[i]); a repeated token repeats k_pre, not
// k. rope_domain<P> runs any predictor on un-rotated key reconstructions and rotates its
// prediction back; values (and keys when no rope_table is given) pass through unchanged.
//
// Determinism: the arithmetic is rope_math's fp32 rule. The ENCODER computes inv_freq once
// (inverse_frequencies, libm-free) and the codec config STORES the fp32 values; angles are the
// fp32 product t · inv_freq (as in the reference model), cos / sin rope_math's fixed series
// rounded to fp32, rotations rope_math::rotate_pair. The prediction only needs to match between
// encoder and decoder, not the model's own RoPE bit for bit.
#pragma once

#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "seqkv/predict/predictor.hpp"
#include "seqkv/predict/rope_math.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

/// Deterministic (libm-free) cos and sin of x >= 0, |x| < 2^30, accurate to a few ulp of double
/// (rope_math's fp32 rule before rounding to fp32).
inline void deterministic_cos_sin(double x, double& cos_out, double& sin_out) {
    rope_math::cos_sin<rope_math::precision::fp32>(x, cos_out, sin_out);
}

/// RoPE angles of one model: inv_freq per channel pair (stored in the codec config).
class rope_table {
public:
    rope_table() = default;
    /// Adopts stored inverse frequencies (head_dim / 2 of them, finite and >= 0); interleaved:
    /// channel 2i pairs with 2i + 1 (GPT-J / llama.cpp NORM), else i with i + D/2 (rotate_half).
    explicit rope_table(std::vector<float> inv_freq, bool interleaved = false)
        : inv_freq_(std::move(inv_freq)), interleaved_(interleaved) {
        // Real models have θ^(−2i/D) <= 1 (scaled variants smaller still).
        for (float f : inv_freq_) require_format(f >= 0 && f <= 1, "rope_table: inverse frequency outside [0, 1]");
    }
    /// Encoder only: theta^(-2i/D) for i < D/2 (rope_math::inverse_frequencies), rounded to fp32.
    static std::vector<float> inverse_frequencies(double theta, std::uint32_t head_dim) {
        const std::vector<double> exact = rope_math::inverse_frequencies(theta, head_dim);
        return std::vector<float>(exact.begin(), exact.end());
    }
    const std::vector<float>& inverse_frequencies() const { return inv_freq_; }
    /// True when channel 2i pairs with 2i + 1, false for rotate_half pairing.
    bool interleaved() const { return interleaved_; }
    std::uint32_t head_dim() const { return 2 * std::uint32_t(inv_freq_.size()); }

    /// cos/sin of position · inv_freq[i] for every pair i.
    void angles(std::uint64_t position, std::vector<float>& cos_out, std::vector<float>& sin_out) const {
        cos_out.resize(inv_freq_.size());
        sin_out.resize(inv_freq_.size());
        rope_math::fp32_angles(position, inv_freq_, cos_out, sin_out);
    }
    /// cos/sin of (first_position + t) · inv_freq[i] for rows t < rows, [rows][head_dim / 2].
    /// Positions below cached_positions come from a memo shared by copies of this table
    /// (thread-safe; the values are exactly those angles() computes).
    void angles_for_rows(std::uint64_t first_position, std::uint32_t rows, std::vector<float>& cos_out,
                         std::vector<float>& sin_out) const {
        const std::size_t half = inv_freq_.size();
        cos_out.resize(std::size_t(rows) * half);
        sin_out.resize(cos_out.size());
        const std::uint64_t end = first_position + rows;
        if (end <= cached_positions) {
            std::lock_guard lock(memo_->mutex);
            if (memo_->positions < end) {
                const std::uint64_t grow = std::min<std::uint64_t>(cached_positions, std::max<std::uint64_t>(end, 2 * memo_->positions));
                std::vector<float> c, s;
                memo_->cos.resize(grow * half), memo_->sin.resize(grow * half);
                for (std::uint64_t p = memo_->positions; p < grow; ++p) {
                    angles(p, c, s);
                    std::copy(c.begin(), c.end(), memo_->cos.begin() + std::ptrdiff_t(p * half));
                    std::copy(s.begin(), s.end(), memo_->sin.begin() + std::ptrdiff_t(p * half));
                }
                memo_->positions = grow;
            }
            std::copy_n(memo_->cos.begin() + std::ptrdiff_t(first_position * half), cos_out.size(), cos_out.begin());
            std::copy_n(memo_->sin.begin() + std::ptrdiff_t(first_position * half), sin_out.size(), sin_out.begin());
            return;
        }
        std::vector<float> c, s;
        for (std::uint32_t t = 0; t < rows; ++t) {
            angles(first_position + t, c, s);
            std::copy(c.begin(), c.end(), cos_out.begin() + std::ptrdiff_t(t * c.size()));
            std::copy(s.begin(), s.end(), sin_out.begin() + std::ptrdiff_t(t * s.size()));
        }
    }
    static constexpr std::uint64_t cached_positions = std::uint64_t{1} << 17;
    /// out = R(angle) in (direction +1) or R(-angle) in (direction -1), rotate_half pairing.
    static void rotate(std::span<const float> in, std::span<float> out, std::span<const float> cos,
                       std::span<const float> sin, int direction) {
        rotate_pairs(in, out, cos, sin, direction, false);
    }
    /// rotate() with this table's pairing.
    void rotate_row(std::span<const float> in, std::span<float> out, std::span<const float> cos, std::span<const float> sin,
                    int direction) const {
        rotate_pairs(in, out, cos, sin, direction, interleaved_);
    }

private:
    static void rotate_pairs(std::span<const float> in, std::span<float> out, std::span<const float> cos,
                             std::span<const float> sin, int direction, bool interleaved) {
        // fp32 × fp32 products are exact in double (rope_math::rotate_pair), and the loop vectorizes.
        const std::size_t half = cos.size();
        const auto style = interleaved ? rope_math::pairing::interleaved : rope_math::pairing::rotate_half;
        const std::size_t step = rope_math::pair_channel(style, half, 1, 0), other = rope_math::pair_channel(style, half, 0, 1);
        const double sign = direction > 0 ? 1.0 : -1.0;
        for (std::size_t i = 0; i < half; ++i) {
            const std::size_t i0 = i * step, i1 = i0 + other;  // rope_math::pair_channel(style, half, i, 0 / 1)
            double x, y;
            rope_math::rotate_pair(in[i0], in[i1], cos[i], sign * double(sin[i]), x, y);
            out[i0] = float(x);
            out[i1] = float(y);
        }
    }
    struct angle_memo {
        std::mutex mutex;
        std::uint64_t positions = 0;
        std::vector<float> cos, sin;  // [positions][head_dim / 2]
    };
    std::vector<float> inv_freq_;
    bool interleaved_ = false;
    std::shared_ptr<angle_memo> memo_ = std::make_shared<angle_memo>();
};

/// Runs Inner on pre-RoPE keys when ctx.kind is key and ctx.rope is set; otherwise forwards.
template <ResidualPredictor Inner>
class rope_domain {
public:
    using params = typename Inner::params;
    static constexpr std::uint32_t context_classes = Inner::context_classes;
    static constexpr bool uses_previous_layer = [] {
        if constexpr (requires { Inner::uses_previous_layer; }) return bool(Inner::uses_previous_layer);
        else return true;
    }();

    explicit rope_domain(Inner inner = Inner{}) : inner_(std::move(inner)) {}

    params fit(const block_context& ctx, std::span<const float> x) const {
        if (!active(ctx)) return inner_.fit(ctx, x);
        std::vector<float> pre = unrotate_block(ctx, x);
        return inner_.fit(ctx, pre);
    }
    void write_params(const params& p, byte_writer& w) const { inner_.write_params(p, w); }
    params read_params(const block_context& ctx, byte_reader& r) const { return inner_.read_params(ctx, r); }

    void reset(const block_context& ctx, const params& p) {
        ctx_ = ctx;
        active_ = active(ctx);
        if (active_) {
            require_usage(ctx.rope->head_dim() == ctx.cols, "rope_domain: rope table does not match head_dim");
            if (!ctx.previous_layer_recon.empty() && inner_uses_previous_layer()) {
                previous_pre_ = unrotate_block(ctx, ctx.previous_layer_recon);
                ctx_.previous_layer_recon = previous_pre_;
            }
            buffer_.resize(ctx.cols);
        }
        inner_.reset(ctx_, p);
    }
    std::uint32_t predict(std::uint32_t row, std::span<float> out) {
        if (!active_) return inner_.predict(row, out);
        const std::uint32_t cls = inner_.predict(row, buffer_);
        load_angles(row);
        ctx_.rope->rotate_row(buffer_, out, row_cos_, row_sin_, +1);
        return cls;
    }
    void observe(std::uint32_t row, std::span<const float> recon) {
        if (!active_) return inner_.observe(row, recon);
        // row_cos_/row_sin_ still hold this row's angles (predict(row) came just before).
        ctx_.rope->rotate_row(recon, buffer_, row_cos_, row_sin_, -1);
        inner_.observe(row, buffer_);
    }
    Inner& inner() { return inner_; }
    /// Forwards Inner's row classes (the domain change does not alter them).
    void row_classes(const block_context& ctx, const params& p, std::span<std::uint8_t> out) const
        requires RowClassesKnownAhead<Inner>
    {
        inner_.row_classes(ctx, p, out);
    }

private:
    static constexpr bool inner_uses_previous_layer() {
        if constexpr (requires { Inner::uses_previous_layer; }) return Inner::uses_previous_layer;
        else return true;
    }
    static bool active(const block_context& ctx) { return ctx.kind == kv_kind::key && ctx.rope != nullptr; }
    // Angles of `row` from the context's cache when it has one, else computed.
    void load_angles(std::uint32_t row) {
        const std::size_t half = ctx_.cols / 2;
        if (ctx_.rope_cos.size() == std::size_t(ctx_.rows) * half && ctx_.rope_sin.size() == ctx_.rope_cos.size()) {
            row_cos_ = ctx_.rope_cos.subspan(row * half, half);
            row_sin_ = ctx_.rope_sin.subspan(row * half, half);
            return;
        }
        ctx_.rope->angles(ctx_.first_position + row, cos_, sin_);
        row_cos_ = cos_, row_sin_ = sin_;
    }
    static std::vector<float> unrotate_block(const block_context& ctx, std::span<const float> x) {
        std::vector<float> pre(x.size()), c, s;
        const std::size_t half = ctx.cols / 2;
        const bool cached = ctx.rope_cos.size() == std::size_t(ctx.rows) * half && ctx.rope_sin.size() == ctx.rope_cos.size();
        for (std::uint32_t t = 0; t < ctx.rows; ++t) {
            std::span<const float> rc, rs;
            if (cached) {
                rc = ctx.rope_cos.subspan(t * half, half), rs = ctx.rope_sin.subspan(t * half, half);
            } else {
                ctx.rope->angles(ctx.first_position + t, c, s);
                rc = c, rs = s;
            }
            ctx.rope->rotate_row(x.subspan(std::size_t(t) * ctx.cols, ctx.cols), std::span(pre).subspan(std::size_t(t) * ctx.cols, ctx.cols), rc, rs, -1);
        }
        return pre;
    }

    Inner inner_;
    block_context ctx_;
    bool active_ = false;
    std::vector<float> previous_pre_, buffer_, cos_, sin_;
    std::span<const float> row_cos_, row_sin_;
};
static_assert(ResidualPredictor<rope_domain<zero_predictor>>);

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
