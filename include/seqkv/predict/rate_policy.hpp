// The RatePolicy concept: per-token step shifts for a chunk (a shift of s multiplies every
// quantizer step of that token by 2^s, i.e. roughly s fewer bits per element). Models:
//   * fixed_rate      — every token gets shift 0;
//   * surprisal_rate  — the paper's rule b_t = max(1, floor(b0 · h_t / h̄)) from per-token NLL
//                       h_t (nats; h̄ the chunk mean), applied as shift b0 − b_t (clamped to
//                       [−8, b0 − 1]). Tokens without NLL (empty span) get shift 0.
// Both sides compute shifts from the chunk's stored NLL with fp64 basic operations in a fixed
// order, so no shift is stored.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

/// A rate policy: fills one step shift per token of the chunk from its NLL (may be empty).
template <class R>
concept RatePolicy = requires(const R& r, std::span<const float> nll, std::span<std::int32_t> shifts) {
    { r.row_shifts(nll, shifts) } -> std::same_as<void>;
};

/// Same step for every token.
struct fixed_rate {
    void row_shifts(std::span<const float>, std::span<std::int32_t> shifts) const {
        std::fill(shifts.begin(), shifts.end(), 0);
    }
};
static_assert(RatePolicy<fixed_rate>);

/// b_t = max(1, floor(b0 · h_t / h̄)) bits for token t; step shift b0 − b_t.
class surprisal_rate {
public:
    explicit surprisal_rate(std::uint32_t base_bits = 4) : base_bits_(base_bits) {
        require_usage(base_bits >= 1 && base_bits <= 16, "surprisal_rate: base bits in [1, 16]");
    }
    std::uint32_t base_bits() const { return base_bits_; }
    /// Bits the rule assigns to a token of NLL h given the chunk mean (both nats).
    std::int32_t bits_for(double h, double mean) const {
        if (!(mean > 0) || !std::isfinite(h)) return std::int32_t(base_bits_);
        const double b = std::floor(double(base_bits_) * h / mean);
        return std::int32_t(std::clamp(b, 1.0, double(base_bits_) + 8.0));
    }
    void row_shifts(std::span<const float> nll, std::span<std::int32_t> shifts) const {
        if (nll.size() != shifts.size()) {
            std::fill(shifts.begin(), shifts.end(), 0);
            return;
        }
        double sum = 0;
        std::size_t n = 0;
        for (float h : nll)
            if (std::isfinite(h)) sum += h, ++n;
        const double mean = n ? sum / double(n) : 0.0;
        for (std::size_t t = 0; t < shifts.size(); ++t) shifts[t] = std::int32_t(base_bits_) - bits_for(nll[t], mean);
    }

private:
    std::uint32_t base_bits_;
};
static_assert(RatePolicy<surprisal_rate>);

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
