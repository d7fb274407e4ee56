// Contract tests for the residual predictors, the RoPE domain transform and the rate policies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "seqkv/predict/expected_kv.hpp"
#include "seqkv/predict/linear.hpp"
#include "seqkv/predict/rate_policy.hpp"
#include "seqkv/predict/rope.hpp"
#include "seqkv/predict/token_mean.hpp"

using namespace seqkv;
using namespace seqkv::predict;

namespace {

// Runs a predictor over rows, observing `observed`; returns all predictions and classes.
template <ResidualPredictor P>
std::pair<std::vector<float>, std::vector<std::uint32_t>> run(P p, const block_context& ctx, std::span<const float> observed) {
    std::vector<float> preds(std::size_t(ctx.rows) * ctx.cols);
    std::vector<std::uint32_t> classes;
    const auto params = p.fit(ctx, observed);
    p.reset(ctx, params);
    for (std::uint32_t t = 0; t < ctx.rows; ++t) {
        auto out = std::span(preds).subspan(std::size_t(t) * ctx.cols, ctx.cols);
        classes.push_back(p.predict(t, out));
        EXPECT_LT(classes.back(), P::context_classes);
        p.observe(t, observed.subspan(std::size_t(t) * ctx.cols, ctx.cols));
    }
    if constexpr (RowClassesKnownAhead<P>) {  // classes known ahead must be what predict() returned
        std::vector<std::uint8_t> ahead(ctx.rows);
        p.row_classes(ctx, params, ahead);
        EXPECT_EQ(std::vector<std::uint32_t>(ahead.begin(), ahead.end()), classes);
    }
    return {preds, classes};
}

std::vector<float> random_rows(std::uint32_t rows, std::uint32_t cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0, 1);
    std::vector<float> v(std::size_t(rows) * cols);
    for (auto& x : v) x = n(rng);
    return v;
}

}  // namespace

TEST(Predictors, DeterministicCosSinMatchesLibm) {
    for (double x = 0; x < 2000; x += 0.37) {
        double c, s;
        deterministic_cos_sin(x, c, s);
        EXPECT_NEAR(c, std::cos(x), 1e-13) << x;
        EXPECT_NEAR(s, std::sin(x), 1e-13) << x;
    }
}

TEST(Predictors, RopeRotationRoundTrips) {
    const rope_table rope(rope_table::inverse_frequencies(10000.0, 64));
    const auto x = random_rows(1, 64, 1);
    std::vector<float> c, s, y(64), z(64);
    rope.angles(123, c, s);
    rope_table::rotate(x, y, c, s, +1);
    rope_table::rotate(y, z, c, s, -1);
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(z[i], x[i], 1e-5);
}

// Interleaved pairing (2i, 2i + 1; llama.cpp's Llama keys) is rotate-half on permuted channels,
// bit for bit (same products per pair), and its rotation round-trips.
TEST(Predictors, InterleavedRopeIsPermutedRotateHalf) {
    const rope_table half(rope_table::inverse_frequencies(100000.0, 64)),
        inter(rope_table::inverse_frequencies(100000.0, 64), true);
    EXPECT_FALSE(half.interleaved());
    EXPECT_TRUE(inter.interleaved());
    const auto x = random_rows(1, 64, 2);
    std::vector<float> px(64), c, s, y(64), py(64), z(64);
    for (int i = 0; i < 32; ++i) px[i] = x[2 * i], px[i + 32] = x[2 * i + 1];
    inter.angles(4321, c, s);
    inter.rotate_row(x, y, c, s, +1);
    half.rotate_row(px, py, c, s, +1);
    for (int i = 0; i < 32; ++i) {
        EXPECT_EQ(y[2 * i], py[i]);
        EXPECT_EQ(y[2 * i + 1], py[i + 32]);
    }
    inter.rotate_row(y, z, c, s, -1);
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(z[i], x[i], 1e-5);  // two fp32 roundings per element
}

TEST(Predictors, ZeroPreviousAnchorCrossLayer) {
    block_context ctx;
    ctx.rows = 10, ctx.cols = 4;
    const auto x = random_rows(10, 4, 2);
    auto [zp, zc] = run(zero_predictor{}, ctx, x);
    for (float v : zp) EXPECT_EQ(v, 0.0f);
    auto [pp, pc] = run(previous_token{}, ctx, x);
    EXPECT_EQ(pc[0], 1u);
    for (std::size_t i = 4; i < pp.size(); ++i) EXPECT_EQ(pp[i], x[i - 4]);
    auto [ap, ac] = run(anchor_delta(4), ctx, x);
    EXPECT_EQ(ac[4], 1u);
    EXPECT_EQ(ap[4 * 6 + 1], x[4 * 4 + 1]);  // row 6 predicted by anchor row 4
    const auto prev = random_rows(10, 4, 3);
    ctx.previous_layer_recon = prev;
    auto [cp, cc] = run(cross_layer{}, ctx, x);
    EXPECT_EQ(cp, prev);
}

TEST(Predictors, LinearArFitsAndRoundTripsParams) {
    block_context ctx;
    ctx.rows = 200, ctx.cols = 2;
    std::vector<float> x(400);
    for (int t = 1; t < 200; ++t) x[2 * t] = 0.5f * x[2 * (t - 1)] + 1.0f, x[2 * t + 1] = float(t % 3);
    const linear_ar ar;
    const auto p = ar.fit(ctx, x);
    EXPECT_NEAR(p.gain[0], 0.5f, 1e-3);
    EXPECT_NEAR(p.offset[0], 1.0f, 1e-3);
    byte_vector bytes;
    byte_writer w(bytes);
    ar.write_params(p, w);
    byte_reader r(bytes);
    const auto q = ar.read_params(ctx, r);
    EXPECT_EQ(q.gain, p.gain);
    EXPECT_EQ(q.offset, p.offset);
}

TEST(Predictors, TokenMeanIsRunningMeanOfSameToken) {
    block_context ctx;
    ctx.rows = 6, ctx.cols = 2;
    const std::vector<std::int32_t> ids{5, 7, 5, 5, 9, 7};
    ctx.token_ids = ids;
    const std::vector<float> x{1, 2, 3, 4, 3, 6, 5, 10, 0, 0, 7, 8};
    auto [p, cls] = run(token_mean{}, ctx, x);
    EXPECT_EQ(cls, (std::vector<std::uint32_t>{2, 2, 0, 0, 2, 0}));
    EXPECT_EQ(p[4], 1.0f);   // row 2 (id 5): mean of row 0
    EXPECT_EQ(p[6], 2.0f);   // row 3 (id 5): mean of rows 0, 2 = (1+3)/2
    EXPECT_EQ(p[10], 3.0f);  // row 5 (id 7): row 1
    EXPECT_EQ(p[2], 1.0f);   // row 1 unseen: running mean of all earlier rows (row 0)
}

TEST(Predictors, TokenMeanUsesTablePrior) {
    std::vector<float> means(1 * 2 * 1 * 4 * 2, 0.0f);
    std::vector<std::uint32_t> counts{0, 3, 0, 0};
    means[(1 * 1 + 0) * 4 * 2 + 1 * 2] = 4.0f;  // layer 0, value, head 0, token 1
    const expected_kv_table table(1, 1, 2, 4, false, means, counts);
    block_context ctx;
    ctx.rows = 3, ctx.cols = 2, ctx.kind = kv_kind::value, ctx.table = &table;
    const std::vector<std::int32_t> ids{1, 1, 2};
    ctx.token_ids = ids;
    const std::vector<float> x{2, 0, 0, 0, 0, 0};
    auto [p, cls] = run(token_mean(1.0), ctx, x);
    EXPECT_EQ(cls, (std::vector<std::uint32_t>{1, 0, 2}));
    EXPECT_EQ(p[0], 4.0f);  // table
    EXPECT_EQ(p[2], 3.0f);  // (2 + 1·4) / (1 + 1)
    EXPECT_TRUE(table.find(0, kv_kind::value, 0, 2).empty());
    const expected_kv_table other(1, 1, 2, 4, false, std::vector<float>(16, 0.0f), counts);
    EXPECT_NE(table.content_hash(), other.content_hash());
}

TEST(Predictors, RopeDomainIsClosedLoopDeterministic) {
    const rope_table rope(rope_table::inverse_frequencies(10000.0, 8));
    block_context ctx;
    ctx.rows = 12, ctx.cols = 8, ctx.rope = &rope, ctx.first_position = 100;
    const std::vector<std::int32_t> ids{1, 2, 1, 1, 3, 2, 1, 2, 3, 3, 1, 2};
    ctx.token_ids = ids;
    // Keys = R(t) k_pre(id): a repeated token repeats k_pre, so prediction of repeats is exact-ish.
    std::vector<float> x(12 * 8), c, s;
    for (int t = 0; t < 12; ++t) {
        std::vector<float> pre(8);
        for (int i = 0; i < 8; ++i) pre[i] = float(ids[t] * (i + 1)) * 0.1f;
        rope.angles(100 + t, c, s);
        rope_table::rotate(pre, std::span(x).subspan(t * 8, 8), c, s, +1);
    }
    auto [p1, c1] = run(rope_domain<token_mean>{}, ctx, x);
    auto [p2, c2] = run(rope_domain<token_mean>{}, ctx, x);
    EXPECT_EQ(0, std::memcmp(p1.data(), p2.data(), p1.size() * sizeof(float)));
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(p1[3 * 8 + i], x[3 * 8 + i], 1e-5);  // row 3 repeats token 1
    ctx.kind = kv_kind::value;  // values are not rotated
    auto [pv, cv] = run(rope_domain<previous_token>{}, ctx, x);
    EXPECT_EQ(pv[8], x[0]);
}

TEST(Predictors, SurprisalRule) {
    const surprisal_rate r(4);
    const std::vector<float> nll{1, 2, 3, 0};  // mean 1.5
    std::vector<std::int32_t> shifts(4);
    r.row_shifts(nll, shifts);
    // b = max(1, floor(4 h / 1.5)) = 2, 5, 8, 1 -> shift 4 - b
    EXPECT_EQ(shifts, (std::vector<std::int32_t>{2, -1, -4, 3}));
    std::vector<std::int32_t> none(3, 9);
    r.row_shifts({}, none);
    EXPECT_EQ(none, (std::vector<std::int32_t>{0, 0, 0}));
    fixed_rate{}.row_shifts(nll, shifts);
    EXPECT_EQ(shifts, (std::vector<std::int32_t>{0, 0, 0, 0}));
}
