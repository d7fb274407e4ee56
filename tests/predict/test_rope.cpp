// The one RoPE implementation (predict/rope_math.hpp) gives the bits of the two it replaced:
// frozen_v1 below is a verbatim copy of the formulas of predict/rope.hpp (lossy pre-RoPE domain)
// and codec/lossless/rope.hpp (lossless rotation predictor) as of format v1 (commit a1a33e5).
// Every comparison is bit for bit, over many positions, thetas and head dims. Do not "fix" the
// frozen copy: it is the reference old files were written against.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/predict/rope.hpp"

using namespace seqkv;
namespace rm = seqkv::predict::rope_math;

namespace frozen_v1 {

// ---- predict/rope.hpp (lossy) ----
inline double unfused(double a, double b) {
    volatile double p = a * b;
    return p;
}
inline double sin_poly(double r) {
    const double r2 = unfused(r, r);
    double s = -1.0 / 1307674368000.0;
    for (double d : {1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0}) s = unfused(s, r2) + d;
    return unfused(unfused(s, r2), r) + r;
}
inline double cos_poly(double r) {
    const double r2 = unfused(r, r);
    double c = 1.0 / 20922789888000.0;
    for (double d : {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0, -0.5})
        c = unfused(c, r2) + d;
    return unfused(c, r2) + 1.0;
}
inline void lossy_cos_sin(double x, double& cos_out, double& sin_out) {
    constexpr double two_over_pi = 6.36619772367581382433e-01;
    constexpr double pio2_1 = 1.57079632673412561417e+00;
    constexpr double pio2_2 = 6.07710050630396597660e-11;
    constexpr double pio2_2t = 2.02226624879595063154e-21;
    const double k = std::nearbyint(unfused(x, two_over_pi));
    const double r = ((x - unfused(k, pio2_1)) - unfused(k, pio2_2)) - unfused(k, pio2_2t);
    const double s = sin_poly(r), c = cos_poly(r);
    switch (static_cast<long long>(k) & 3) {
        case 0: cos_out = c, sin_out = s; break;
        case 1: cos_out = -s, sin_out = c; break;
        case 2: cos_out = -c, sin_out = -s; break;
        default: cos_out = s, sin_out = -c; break;
    }
}
inline std::vector<float> lossy_inverse_frequencies(double theta, std::uint32_t head_dim) {  // libm pow
    std::vector<float> f(head_dim / 2);
    for (std::uint32_t i = 0; i < f.size(); ++i) f[i] = float(1.0 / std::pow(theta, double(2 * i) / head_dim));
    return f;
}
inline void lossy_angles(std::uint64_t position, const std::vector<float>& inv_freq, std::vector<float>& c_out, std::vector<float>& s_out) {
    c_out.resize(inv_freq.size());
    s_out.resize(inv_freq.size());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
        const float angle = float(position) * inv_freq[i];
        double c, s;
        lossy_cos_sin(angle, c, s);
        c_out[i] = float(c), s_out[i] = float(s);
    }
}
inline void lossy_rotate(std::span<const float> in, std::span<float> out, std::span<const float> cos, std::span<const float> sin,
                         int direction, bool interleaved) {
    const std::size_t half = cos.size(), step = interleaved ? 2 : 1, other = interleaved ? 1 : half;
    const double sign = direction > 0 ? 1.0 : -1.0;
    for (std::size_t i = 0; i < half; ++i) {
        const std::size_t i0 = i * step, i1 = i0 + other;
        const double a = in[i0], b = in[i1], c = cos[i], s = sign * double(sin[i]);
        out[i0] = float(a * c - b * s);
        out[i1] = float(b * c + a * s);
    }
}

// ---- codec/lossless/rope.hpp (lossless, normative) ----
inline double exact_mul(double a, double b) {
    volatile double p = a * b;
    return p;
}
inline double pow2(std::int64_t k) { return std::bit_cast<double>(std::uint64_t(k + 1023) << 52); }
inline constexpr double ln2_hi = 6.93147180369123816490e-01;
inline constexpr double ln2_lo = 1.90821492927058770002e-10;
inline double log(double x) {
    const auto bits = std::bit_cast<std::uint64_t>(x);
    std::int64_t e = std::int64_t((bits >> 52) & 0x7ff) - 1023;
    double m = std::bit_cast<double>((bits & 0xfffffffffffffULL) | (std::uint64_t{1023} << 52));
    if (m > 1.4142135623730951) m = exact_mul(m, 0.5), ++e;
    const double s = (m - 1.0) / (m + 1.0), s2 = exact_mul(s, s);
    double sum = 0;
    for (int k = 41; k >= 1; k -= 2) sum = exact_mul(sum, s2) + 1.0 / double(k);
    return (exact_mul(double(e), ln2_hi) + exact_mul(double(e), ln2_lo)) + exact_mul(2.0 * s, sum);
}
inline double exp(double x) {
    const auto k = static_cast<std::int64_t>(x >= 0 ? exact_mul(x, 1.4426950408889634) + 0.5 : exact_mul(x, 1.4426950408889634) - 0.5);
    const double r = (x - exact_mul(double(k), ln2_hi)) - exact_mul(double(k), ln2_lo);
    double sum = 1.0;
    for (int n = 24; n >= 1; --n) sum = exact_mul(exact_mul(sum, r), 1.0 / double(n)) + 1.0;
    return exact_mul(sum, pow2(k));
}
inline void lossless_cos_sin(double x, double& c, double& s) {
    constexpr double two_over_pi = 6.36619772367581382433e-01;
    constexpr double pio2_1 = 1.57079632673412561417e+00;
    constexpr double pio2_2 = 6.07710050630396597660e-11;
    constexpr double pio2_3 = 2.02226624879595063154e-21;
    const auto k = static_cast<std::int64_t>(exact_mul(x, two_over_pi) + 0.5);
    const double kd = double(k);
    const double r = ((x - exact_mul(kd, pio2_1)) - exact_mul(kd, pio2_2)) - exact_mul(kd, pio2_3);
    const double r2 = exact_mul(r, r);
    double sp = 1.0, cp = 1.0;
    for (int n = 21; n >= 3; n -= 2) sp = 1.0 - exact_mul(exact_mul(r2, 1.0 / double(n * (n - 1))), sp);
    sp = exact_mul(r, sp);
    for (int n = 20; n >= 2; n -= 2) cp = 1.0 - exact_mul(exact_mul(r2, 1.0 / double(n * (n - 1))), cp);
    switch (k & 3) {
        case 0: c = cp, s = sp; break;
        case 1: c = -sp, s = cp; break;
        case 2: c = -cp, s = -sp; break;
        default: c = sp, s = -cp; break;
    }
}
inline double truncate28(double x) { return std::bit_cast<double>(std::bit_cast<std::uint64_t>(x) & ~((std::uint64_t{1} << 24) - 1)); }
// rotation_cache::make_entry's inverse frequencies and the 28-bit rows of delta_rows (step 32).
inline std::vector<double> lossless_inverse_frequencies(double theta, std::uint32_t head_dim) {
    std::vector<double> f(head_dim / 2);
    const double log_theta = log(theta);
    for (std::uint32_t i = 0; i < f.size(); ++i) f[i] = exp(-exact_mul(log_theta, double(2 * i) / double(head_dim)));
    return f;
}
inline void lossless_row(const std::vector<double>& inv_freq, std::uint64_t delta, std::vector<double>& c_out, std::vector<double>& s_out) {
    const std::uint64_t a = delta / 32, j = delta % 32;
    c_out.resize(inv_freq.size()), s_out.resize(inv_freq.size());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
        double ca, sa, cb, sb;
        lossless_cos_sin(exact_mul(double(a * 32), inv_freq[i]), ca, sa);
        lossless_cos_sin(exact_mul(double(j), inv_freq[i]), cb, sb);
        c_out[i] = truncate28(exact_mul(ca, cb) - exact_mul(sa, sb));
        s_out[i] = truncate28(exact_mul(sa, cb) + exact_mul(ca, sb));
    }
}

}  // namespace frozen_v1

namespace {

std::uint64_t bits(double x) { return std::bit_cast<std::uint64_t>(x); }
std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

// Common model bases, then log-uniform random ones in [1, 1e9].
std::vector<double> thetas(std::size_t random, unsigned seed) {
    std::vector<double> t = {1.0, 2.0, 100.0, 10000.0, 40000.0, 75000.0, 100000.0, 160000.0, 250000.0, 500000.0,
                             1e6, 2e6, 3e6, 5e6, 8e6, 1e7, 1e8, 1e9};
    std::mt19937_64 rng(seed);
    for (std::size_t k = 0; k < random; ++k) t.push_back(std::exp(std::uniform_real_distribution<double>(0.0, std::log(1e9))(rng)));
    return t;
}
const std::uint32_t head_dims[] = {2, 8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256};

// Arguments cos/sin sees: fp32 angles t · f of small and large positions, doubles up to 2^30,
// and points next to the quadrant boundaries k · π/4 where the two roundings of k could differ.
std::vector<double> angles(std::size_t count, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::vector<double> x = {0.0, 0x1p-30, 0.5, 1.0, 3.0, 100.0, 511.0, 4096.5, 65535.0, 0x1p20, 0x1p30};
    for (std::size_t k = 0; k < count; ++k) {
        switch (k % 4) {
            case 0: x.push_back(double(float(rng() % (1u << 20)) * std::uniform_real_distribution<float>(0.0f, 1.0f)(rng))); break;
            case 1: x.push_back(std::uniform_real_distribution<double>(0.0, 64.0)(rng)); break;
            case 2: x.push_back(std::ldexp(std::uniform_real_distribution<double>(1.0, 2.0)(rng), int(rng() % 31))); break;
            default: {
                const double edge = double(rng() % (1u << 20)) * 0.78539816339744830962;  // k · π/4
                x.push_back(std::nextafter(edge, (rng() & 1) ? 0.0 : 1e300));
                break;
            }
        }
    }
    return x;
}

using cos_sin_fn = void (*)(double, double&, double&);

// cos_sin functions `unified` give the bits of `frozen` on every argument of angles(…, seed).
void expect_same_cos_sin(cos_sin_fn frozen, std::initializer_list<cos_sin_fn> unified, unsigned seed) {
    for (double x : angles(400000, seed)) {
        double c0, s0, c1, s1;
        frozen(x, c0, s0);
        for (cos_sin_fn f : unified) {
            f(x, c1, s1);
            ASSERT_EQ(bits(c0), bits(c1)) << x;
            ASSERT_EQ(bits(s0), bits(s1)) << x;
        }
    }
}

}  // namespace

TEST(RopeMath, Fp32RuleCosSinMatchesFrozenLossyBits) {
    expect_same_cos_sin(frozen_v1::lossy_cos_sin, {rm::cos_sin<rm::precision::fp32>, predict::deterministic_cos_sin}, 1);
}

TEST(RopeMath, Truncated28RuleCosSinLogExpMatchFrozenLosslessBits) {
    expect_same_cos_sin(frozen_v1::lossless_cos_sin, {rm::cos_sin<rm::precision::truncated28>}, 2);
    std::mt19937_64 rng(3);
    for (int k = 0; k < 200000; ++k) {
        const double x = std::exp(std::uniform_real_distribution<double>(-40.0, 45.0)(rng));  // log of (0, 2^60]
        ASSERT_EQ(bits(frozen_v1::log(x)), bits(rm::log(x))) << x;
        const double y = std::uniform_real_distribution<double>(-700.0, 1.0)(rng);  // exp of −(2i/D) ln θ
        ASSERT_EQ(bits(frozen_v1::exp(y)), bits(rm::exp(y))) << y;
    }
}

// Both codecs' inverse frequencies. The lossless ones are the old deterministic ones bit for bit.
// The lossy encoder used libm pow (rounded to fp32) and now uses the same deterministic values
// rounded to fp32: equal on every (θ, D, i) here (~3 M values). The decoder never recomputes
// them (they are stored in the config), so old files decode the same either way.
TEST(RopeMath, InverseFrequenciesMatchFrozenBits) {
    for (double theta : thetas(2000, 4))
        for (std::uint32_t D : head_dims) {
            const auto exact = rm::inverse_frequencies(theta, D);
            const auto frozen = frozen_v1::lossless_inverse_frequencies(theta, D);
            const auto lossy = predict::rope_table::inverse_frequencies(theta, D);
            const auto lossy_frozen = frozen_v1::lossy_inverse_frequencies(theta, D);
            ASSERT_EQ(exact.size(), frozen.size());
            ASSERT_EQ(lossy.size(), lossy_frozen.size());
            for (std::size_t i = 0; i < exact.size(); ++i) {
                ASSERT_EQ(bits(exact[i]), bits(frozen[i])) << theta << " " << D << " " << i;
                ASSERT_EQ(bits(lossy[i]), bits(lossy_frozen[i])) << theta << " " << D << " " << i;
            }
        }
}

// rope_table (lossy pre-RoPE keys): angles, memoized row angles and both rotations.
TEST(RopeMath, LossyRopeTableMatchesFrozenAnglesAndRotations) {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (double theta : thetas(2, 6))
        for (std::uint32_t D : {8u, 64u, 128u})
            for (bool interleaved : {false, true}) {
                const auto inv = frozen_v1::lossy_inverse_frequencies(theta, D);
                const predict::rope_table table(inv, interleaved);
                std::vector<std::uint64_t> positions;
                for (std::uint64_t p = 0; p < 300; ++p) positions.push_back(p);
                for (int k = 0; k < 300; ++k) positions.push_back(rng() % (std::uint64_t{1} << (8 + k % 33)));
                std::vector<float> c0, s0, c1, s1, x(D), y0(D), y1(D);
                for (std::uint64_t p : positions) {
                    frozen_v1::lossy_angles(p, inv, c0, s0);
                    table.angles(p, c1, s1);
                    for (std::size_t i = 0; i < D / 2; ++i) {
                        ASSERT_EQ(bits(c0[i]), bits(c1[i])) << theta << " " << D << " " << p << " " << i;
                        ASSERT_EQ(bits(s0[i]), bits(s1[i])) << theta << " " << D << " " << p << " " << i;
                    }
                    for (auto& v : x) v = normal(rng);
                    for (int direction : {+1, -1}) {
                        frozen_v1::lossy_rotate(x, y0, c0, s0, direction, interleaved);
                        table.rotate_row(x, y1, c1, s1, direction);
                        for (std::size_t i = 0; i < D; ++i) ASSERT_EQ(bits(y0[i]), bits(y1[i])) << p << " " << i;
                    }
                }
                // Rows from the shared memo (positions < cached_positions) and past it.
                for (std::uint64_t first : {std::uint64_t{0}, std::uint64_t{1000}, predict::rope_table::cached_positions - 3}) {
                    table.angles_for_rows(first, 7, c1, s1);
                    for (std::uint32_t t = 0; t < 7; ++t) {
                        frozen_v1::lossy_angles(first + t, inv, c0, s0);
                        for (std::size_t i = 0; i < D / 2; ++i) {
                            ASSERT_EQ(bits(c0[i]), bits(c1[t * (D / 2) + i])) << first + t;
                            ASSERT_EQ(bits(s0[i]), bits(s1[t * (D / 2) + i])) << first + t;
                        }
                    }
                }
            }
}

// rotation_table (lossless predictor 5): the cached rows are the frozen normative values.
TEST(RopeMath, LosslessRotationTableMatchesFrozenRows) {
    for (double theta : thetas(4, 7))
        for (std::uint32_t D : {2u, 8u, 64u, 128u, 256u}) {
            std::vector<std::uint64_t> deltas;
            for (std::uint64_t d = 1; d < 600; ++d) deltas.push_back(d);
            for (std::uint64_t d : {1023u, 1024u, 4095u, 4096u, 100000u, 1000001u}) deltas.push_back(d);
            // ref(t) = t − δ for the token t = δ (the table only looks at t − ref(t)).
            std::vector<std::uint64_t> ref(deltas.back() + 1, lossless::detail::no_reference);
            for (std::uint64_t d : deltas) ref[d] = 0;
            const lossless::rope::rotation_table table({theta, lossless::rope::pairing::rotate_half}, D, ref, lossless::detail::no_reference);
            const auto inv = frozen_v1::lossless_inverse_frequencies(theta, D);
            std::vector<double> c, s;
            for (std::uint64_t d : deltas) {
                frozen_v1::lossless_row(inv, d, c, s);
                for (std::size_t i = 0; i < D / 2; ++i) {
                    ASSERT_EQ(bits(c[i]), bits(table.cos(d)[i])) << theta << " " << D << " " << d << " " << i;
                    ASSERT_EQ(bits(s[i]), bits(table.sin(d)[i])) << theta << " " << D << " " << d << " " << i;
                }
            }
        }
}

// Row prediction of every dtype and pairing (scalar, fast and, where available, AVX2) against the
// frozen formula a·cos − b·sin, b·cos + a·sin on the element values.
TEST(RopeMath, LosslessRowPredictionMatchesFrozenFormula) {
    const std::uint32_t D = 64, half = D / 2;
    std::vector<std::uint64_t> ref(400, lossless::detail::no_reference);
    std::mt19937 rng(8);
    for (std::uint64_t t = 1; t < ref.size(); ++t) ref[t] = rng() % t;
    const lossless::rope::rotation_table table({500000.0, lossless::rope::pairing::rotate_half}, D, ref, lossless::detail::no_reference);
    for (dtype type : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2}) {
        const auto fmt = lossless::rope::float_format::of(type);
        for (auto style : {lossless::rope::pairing::rotate_half, lossless::rope::pairing::interleaved}) {
            auto check = [&]<class U>(U) {
                const auto fast = lossless::rope::fast_predictor<U>(type, style, /*allow_simd=*/true);
                std::vector<U> row(D), want(D), got(D), got_fast(D);
                for (std::uint64_t t = 1; t < ref.size(); ++t) {
                    for (auto& u : row) u = static_cast<U>(rng());
                    std::vector<double> cs(D);
                    std::copy_n(table.cos(t), D, cs.begin());  // cos then sin
                    for (std::size_t i = 0; i < half; ++i) {
                        const std::size_t c0 = rm::pair_channel(style, half, i, 0), c1 = rm::pair_channel(style, half, i, 1);
                        double a, b;
                        if (!fmt.to_double(row[c0], a) || !fmt.to_double(row[c1], b)) {
                            want[c0] = want[c1] = 0;
                            continue;
                        }
                        want[c0] = static_cast<U>(fmt.from_double(a * cs[i] - b * cs[half + i]));
                        want[c1] = static_cast<U>(fmt.from_double(b * cs[i] + a * cs[half + i]));
                    }
                    lossless::rope::predict_row<U>(row.data(), D, style, table.cos(t), table.sin(t), fmt, got.data());
                    fast(row.data(), D, cs.data(), got_fast.data());
                    ASSERT_EQ(want, got) << int(type) << " " << t;
                    ASSERT_EQ(want, got_fast) << int(type) << " " << t;
                }
            };
            if (dtype_size(type) == 1) check(std::uint8_t{});
            else if (dtype_size(type) == 2) check(std::uint16_t{});
            else check(std::uint32_t{});
        }
    }
}

TEST(RopeMath, AnglesFromHostileFilesAreRefusedNotUndefined) {
    // An inverse frequency of 1e30 (read from a file) once drove a float -> int64 conversion out of
    // range inside the reduction; such angles, and those of absurd positions, are format errors.
    double c = 0, s = 0;
    for (double x : {1e30, 0x1p40, -1.0, std::nan("")}) {
        EXPECT_THROW(rm::cos_sin<rm::precision::fp32>(x, c, s), format_error) << x;
        EXPECT_THROW(rm::cos_sin<rm::precision::truncated28>(x, c, s), format_error) << x;
    }
    rm::cos_sin<rm::precision::fp32>(0x1p39, c, s);  // large but in range: fine
    EXPECT_THROW(predict::rope_table(std::vector<float>{1.0f, 1e30f}), format_error);
    EXPECT_THROW(predict::rope_table(std::vector<float>{std::nanf("")}), format_error);
    EXPECT_NO_THROW(predict::rope_table(std::vector<float>{1.0f, 0.5f, 0.0f}));
}
