// Pre-RoPE key domain for prediction. Cached keys are k_t = R(t) k_pre_t (Llama "rotate_half"
// RoPE: channel i pairs with i + D/2, angle t · inv_freq[i]); a repeated token repeats k_pre, not
// k. rope_domain<P> runs any predictor on un-rotated key reconstructions and rotates its
// prediction back; values (and keys when no rope_table is given) pass through unchanged.
//
// Determinism note: inv_freq = theta^(-2i/D) needs pow(), so the ENCODER computes it once
// (inverse_frequencies) and the codec config STORES the fp32 values. Angles are the fp32
// product t · inv_freq (as in the reference model); cos/sin are evaluated by our own fixed
// Cody–Waite reduction + Taylor polynomials in double with unfused products — no libm — and
// rounded to fp32. Rotations use unfused products in a fixed order. The prediction only needs to
// match between encoder and decoder, not the model's own RoPE bit for bit.
#pragma once

#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "seqkv/predict/predictor.hpp"
#include "seqkv/core/exact.hpp"

namespace seqkv::predict {

namespace detail {
// Taylor series on |r| <= pi/4 (+ margin); truncation error < 1e-16.
inline double sin_poly(double r) {
    const double r2 = unfused_mul(r, r);
    double s = -1.0 / 1307674368000.0;  // -1/15!
    for (double d : {1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0})
        s = unfused_mul(s, r2) + d;
    return unfused_mul(unfused_mul(s, r2), r) + r;
}
inline double cos_poly(double r) {
    const double r2 = unfused_mul(r, r);
    double c = 1.0 / 20922789888000.0;  // 1/16!
    for (double d : {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0, -0.5})
        c = unfused_mul(c, r2) + d;
    return unfused_mul(c, r2) + 1.0;
}
}  // namespace detail

/// Deterministic (libm-free) cos and sin of x >= 0, |x| < 2^30, accurate to a few ulp of double.
inline void deterministic_cos_sin(double x, double& cos_out, double& sin_out) {
    constexpr double two_over_pi = 6.36619772367581382433e-01;
    constexpr double pio2_1 = 1.57079632673412561417e+00;   // first 33 bits of pi/2
    constexpr double pio2_2 = 6.07710050630396597660e-11;   // next 33 bits
    constexpr double pio2_2t = 2.02226624879595063154e-21;  // pi/2 - pio2_1 - pio2_2
    const double k = std::nearbyint(unfused_mul(x, two_over_pi));  // IEEE rounding op, exact
    const double r = ((x - unfused_mul(k, pio2_1)) - unfused_mul(k, pio2_2)) - unfused_mul(k, pio2_2t);
    const double s = detail::sin_poly(r), c = detail::cos_poly(r);
    switch (static_cast<long long>(k) & 3) {
        case 0: cos_out = c, sin_out = s; break;
        case 1: cos_out = -s, sin_out = c; break;
        case 2: cos_out = -c, sin_out = -s; break;
        default: cos_out = s, sin_out = -c; break;
    }
}

/// RoPE angles of one model: inv_freq per channel pair (stored in the codec config).
class rope_table {
public:
    rope_table() = default;
    /// Adopts stored inverse frequencies (head_dim / 2 of them, finite and >= 0); interleaved:
    /// channel 2i pairs with 2i + 1 (GPT-J / llama.cpp NORM), else i with i + D/2 (rotate_half).
    explicit rope_table(std::vector<float> inv_freq, bool interleaved = false)
        : inv_freq_(std::move(inv_freq)), interleaved_(interleaved) {
        for (float f : inv_freq_) require_format(std::isfinite(f) && f >= 0, "rope_table: invalid inverse frequency");
    }
    /// Encoder only (uses libm pow): theta^(-2i/D) for i < D/2, rounded to fp32.
    static std::vector<float> inverse_frequencies(double theta, std::uint32_t head_dim) {
        std::vector<float> f(head_dim / 2);
        for (std::uint32_t i = 0; i < f.size(); ++i) f[i] = float(1.0 / std::pow(theta, double(2 * i) / head_dim));
        return f;
    }
    const std::vector<float>& inverse_frequencies() const { return inv_freq_; }
    /// True when channel 2i pairs with 2i + 1, false for rotate_half pairing.
    bool interleaved() const { return interleaved_; }
    std::uint32_t head_dim() const { return 2 * std::uint32_t(inv_freq_.size()); }

    /// cos/sin of position · inv_freq[i] for every pair i.
    void angles(std::uint64_t position, std::vector<float>& cos_out, std::vector<float>& sin_out) const {
        cos_out.resize(inv_freq_.size());
        sin_out.resize(inv_freq_.size());
        for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
            const float angle = float(position) * inv_freq_[i];
            double c, s;
            deterministic_cos_sin(angle, c, s);
            cos_out[i] = float(c), sin_out[i] = float(s);
        }
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
        // fp32 × fp32 products are exact in double, so a*c - b*s is one correctly rounded double
        // operation whether or not the compiler fuses it: the same bits everywhere, and it vectorizes.
        const std::size_t half = cos.size(), step = interleaved ? 2 : 1, other = interleaved ? 1 : half;
        const double sign = direction > 0 ? 1.0 : -1.0;
        for (std::size_t i = 0; i < half; ++i) {
            const std::size_t i0 = i * step, i1 = i0 + other;
            const double a = in[i0], b = in[i1], c = cos[i], s = sign * double(sin[i]);
            out[i0] = float(a * c - b * s);
            out[i1] = float(b * c + a * s);
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
