#include <gtest/gtest.h>

#include <cmath>

#include "seqkv/coding/parametric_model.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;

TEST(ParametricModel, FixedPointExpMatchesLibmClosely) {
    for (double y = 0; y < 40; y += 0.37) {
        const auto y_q48 = static_cast<std::uint64_t>(std::ldexp(y, 48));
        const double ours = std::ldexp(static_cast<double>(detail::fixed_exp_neg_q62(y_q48)), -62);
        const double reference = std::exp(-std::ldexp(static_cast<double>(y_q48), -48));
        EXPECT_NEAR(ours, reference, 1e-9 * reference + 1e-16) << y;  // Q62: absolute error ~2^-60
    }
    for (std::uint32_t i = 0; i < parametric_scale_count; ++i)
        EXPECT_NEAR(std::ldexp(static_cast<double>(detail::inverse_scale_q48(i)), -48) * parametric_scale(i), 1.0, 1e-9);
}

TEST(ParametricModel, TablesArePinnedBitExactly) {
    // Golden tables: any change in the integer construction changes decoded output, so it must fail here.
    const std::vector<std::uint32_t> laplace = {78, 100, 129, 166, 213, 273, 350, 450, 578, 450, 350, 273, 213, 166, 129, 100, 78};
    const std::vector<std::uint32_t> logistic = {137, 164, 194, 225, 256, 284, 306, 320, 325, 320, 306, 283, 256, 225, 194, 164, 137};
    const std::vector<std::uint32_t> gaussian = {57, 91, 137, 194, 256, 319, 373, 410, 423, 410, 373, 319, 256, 193, 137, 91, 57};
    const std::vector<std::uint32_t>* expected[] = {&laplace, &logistic, &gaussian};
    for (unsigned f = 0; f < parametric_family_count; ++f) {
        const auto t = parametric_table({static_cast<parametric_family>(f), 24, 8, 17, 12});
        EXPECT_EQ(std::vector<std::uint32_t>(t.frequencies().begin(), t.frequencies().end()), *expected[f]) << f;
    }
}

TEST(ParametricModel, EverySymbolCodableAtEveryScale) {
    for (unsigned f = 0; f < parametric_family_count; ++f)
        for (std::uint32_t i = 0; i < parametric_scale_count; i += 7) {
            const auto t = parametric_table({static_cast<parametric_family>(f), i, 100, 1024, 14});
            for (std::uint32_t s = 0; s < 1024; ++s) ASSERT_GE(t.frequency(s), 1u);
            EXPECT_EQ(t.total(), 1u << 14);
        }
}

TEST(ParametricModel, FitRecoversScaleAndCostsNearEmpiricalEntropy) {
    const auto symbols = seqkv_test::laplace_symbols(200000, 512, 6.0, 3, 256);
    const auto counts = histogram<std::uint16_t>(symbols, 512);
    double entropy = 0;
    for (auto c : counts)
        if (c) entropy -= static_cast<double>(c) * std::log2(static_cast<double>(c) / symbols.size());
    const auto [params, bits] = fit_parametric(parametric_family::laplace, counts, 256, 14);
    EXPECT_NEAR(parametric_scale(params.scale_index), 6.0, 1.5);
    EXPECT_LT(bits, entropy * 1.02);  // the test data is not exactly two-sided geometric
}

TEST(ParametricModel, CacheReturnsSameTable) {
    parametric_table_cache cache;
    const parametric_model_params p{parametric_family::gaussian, 30, 5, 11, 12};
    const auto& a = cache.get(p);
    const auto& b = cache.get(p);
    EXPECT_EQ(&a, &b);
    EXPECT_EQ(cache.size(), 1u);
}
