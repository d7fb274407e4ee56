// Exact arithmetic both sides of a lossy or model-driven codec share: products never contracted
// into an FMA, and the zigzag map of signed residuals. Encoder and decoder must compute identical
// bits on any machine (with or without FMA hardware, at any -ffp-contract setting).
#pragma once

#include <cstdint>

namespace seqkv {

/// a*b rounded to fp32 and never fused into a following add (the volatile store forbids
/// contraction), so `unfused_mul(a, b) + c` gives the same bits with or without FMA hardware.
inline float unfused_mul(float a, float b) {
    volatile float product = a * b;
    return product;
}
/// Double-precision twin of unfused_mul.
inline double unfused_mul(double a, double b) {
    volatile double product = a * b;
    return product;
}

/// Interleaves signed integers into unsigned: 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...
constexpr std::uint32_t zigzag(std::int32_t v) {
    return (static_cast<std::uint32_t>(v) << 1) ^ static_cast<std::uint32_t>(v >> 31);
}
constexpr std::int32_t unzigzag(std::uint32_t u) { return static_cast<std::int32_t>(u >> 1) ^ -static_cast<std::int32_t>(u & 1); }

}  // namespace seqkv
