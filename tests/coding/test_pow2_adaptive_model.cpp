#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "seqkv/coding/entropy_coder.hpp"
#include "seqkv/coding/pow2_adaptive_model.hpp"
#include "seqkv/coding/range_block.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;
using seqkv::byte_vector;

namespace {

template <class Model>
byte_vector encode_all(const std::vector<std::uint16_t>& symbols, std::uint32_t alphabet) {
    byte_vector bytes;
    range_encoder enc(bytes);
    Model model(alphabet);
    for (auto s : symbols) encode_symbol(enc, model, s);
    enc.finish();
    return bytes;
}

/// Code length (bits) of the ideal adaptive order-0 coder with the Laplace estimator
/// (count + 1) / (seen + alphabet): what an exact-arithmetic adaptive coder would pay.
double ideal_adaptive_bits(const std::vector<std::uint16_t>& symbols, std::uint32_t alphabet) {
    std::vector<std::uint64_t> counts(alphabet, 0);
    double bits = 0;
    for (std::size_t i = 0; i < symbols.size(); ++i) {
        bits -= std::log2(static_cast<double>(counts[symbols[i]] + 1) / static_cast<double>(i + alphabet));
        ++counts[symbols[i]];
    }
    return bits;
}

}  // namespace

TEST(Pow2AdaptiveModel, DistributionInvariantsHoldWhileAdapting) {
    for (std::uint32_t alphabet : {1u, 2u, 3u, 300u, 65536u}) {
        pow2_adaptive_model model(alphabet, 0, 1u << 12);
        std::mt19937_64 rng(alphabet);
        for (int i = 0; i < 40000; ++i) {
            model.update(static_cast<std::uint32_t>(rng() % 5 == 0 ? rng() % alphabet : 7 % alphabet));
            if (i % 4999 != 0 && i != 39999) continue;
            const std::uint32_t total = 1u << model.precision_bits();
            std::uint32_t cumulative = 0;
            for (std::uint32_t s = 0; s < alphabet; ++s) {
                ASSERT_EQ(model.cumulative(s), cumulative);
                ASSERT_GE(model.frequency(s), 1u) << "alphabet " << alphabet << " symbol " << s;
                cumulative += model.frequency(s);
            }
            ASSERT_EQ(cumulative, total);
            for (std::uint32_t slot = 0; slot < total; slot += 1 + static_cast<std::uint32_t>(rng() % 7)) {
                const std::uint32_t s = model.symbol_of_slot(slot);
                ASSERT_LT(s, alphabet);
                ASSERT_LE(model.cumulative(s), slot);
                ASSERT_LT(slot, model.cumulative(s) + model.frequency(s));
            }
        }
    }
}

TEST(Pow2AdaptiveModel, RoundTripsAlphabetsAndShapes) {
    for (std::uint32_t alphabet : {1u, 2u, 256u, 4097u, 65536u}) {
        for (double spread : {0.05, 4.0, 1e6}) {
            const auto symbols = seqkv_test::laplace_symbols(30000, alphabet, spread, alphabet + 1);
            const auto bytes = encode_all<pow2_adaptive_model>(symbols, alphabet);
            range_decoder dec(bytes);
            pow2_adaptive_model model(alphabet);
            for (std::size_t i = 0; i < symbols.size(); ++i)
                ASSERT_EQ(decode_symbol(dec, model), symbols[i]) << alphabet << " " << spread << " at " << i;
            EXPECT_LE(dec.overrun_bytes(), 3u);
        }
    }
}

TEST(Pow2AdaptiveModel, MillionSymbolsCostNearTheIdealAdaptiveCoder) {
    struct source {
        std::uint32_t alphabet;
        double spread;
    };
    for (const source& src : {source{256, 3.0}, source{256, 0.02}, source{4096, 60.0}}) {
        const auto symbols = seqkv_test::laplace_symbols(1u << 20, src.alphabet, src.spread, 11);
        const auto bytes = encode_all<pow2_adaptive_model>(symbols, src.alphabet);
        const double ideal = ideal_adaptive_bits(symbols, src.alphabet);
        const double coded = 8.0 * static_cast<double>(bytes.size());
        // Power-of-two quantization, a frequency floor of 1/2^P per symbol, a 2^13-count
        // window and periodic rebuilds together cost well under 1 % plus a small constant.
        EXPECT_LT(coded, ideal * 1.01 + 4096) << src.alphabet << " " << src.spread << ": ideal " << ideal / 8;
        // And it must not lose to the Fenwick model it replaces on speed-critical paths.
        const auto fenwick = encode_all<adaptive_frequency_model>(symbols, src.alphabet);
        EXPECT_LT(bytes.size(), fenwick.size() * 1.005 + 64) << src.alphabet << " " << src.spread;
        std::vector<std::uint16_t> out(symbols.size());
        range_decoder dec(bytes);
        pow2_adaptive_model model(src.alphabet);
        for (auto& s : out) s = static_cast<std::uint16_t>(decode_symbol(dec, model));
        ASSERT_EQ(out, symbols);
    }
}

TEST(Pow2AdaptiveModel, FollowsADistributionShift) {
    auto symbols = seqkv_test::laplace_symbols(200000, 256, 2.0, 3, 40);
    const auto second = seqkv_test::laplace_symbols(200000, 256, 2.0, 4, 200);
    symbols.insert(symbols.end(), second.begin(), second.end());
    const auto bytes = encode_all<pow2_adaptive_model>(symbols, 256);
    // Forgetting (the count window) must adapt about as fast as the Fenwick model, whose
    // large increment makes it forget within a few thousand symbols.
    const auto fenwick = encode_all<adaptive_frequency_model>(symbols, 256);
    EXPECT_LT(static_cast<double>(bytes.size()), static_cast<double>(fenwick.size()) * 1.03);
}

TEST(Pow2AdaptiveModel, RangeBlockPolicyRoundTripsWithContexts) {
    const auto symbols = seqkv_test::laplace_symbols(60000, 1000, 20.0, 4);
    const auto contexts = seqkv_test::random_contexts(symbols.size(), 7, 5);
    const auto bytes = range_adaptive_fast::encode(symbols, contexts, 1000, 7);
    std::vector<std::uint16_t> out(symbols.size());
    range_adaptive_fast::decode(bytes, contexts, out);
    EXPECT_EQ(out, symbols);
    const auto empty = range_adaptive_fast::encode({}, {}, 5, 1);
    range_adaptive_fast::decode(empty, {}, std::span<std::uint16_t>());
}

TEST(Pow2AdaptiveModel, CorruptBlocksNeverReadOutOfBounds) {
    for (std::uint32_t alphabet : {100u, 65536u}) {
        const auto symbols = seqkv_test::laplace_symbols(3000, alphabet, 5.0, 6);
        const auto good = encode_range_block<pow2_adaptive_model>(symbols, {}, alphabet, 1);
        std::mt19937_64 rng(7);
        for (int trial = 0; trial < 400; ++trial) {
            auto bad = good;
            if (trial % 2) bad.resize(rng() % bad.size());
            else bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
            std::vector<std::uint16_t> out(symbols.size());
            try {
                decode_range_block<pow2_adaptive_model>(bad, {}, out);
            } catch (const seqkv::format_error&) {
            }
            for (auto s : out) ASSERT_LT(s, alphabet);
        }
    }
}

TEST(Pow2AdaptiveModel, RejectsBadParameters) {
    EXPECT_THROW(pow2_adaptive_model(0), seqkv::usage_error);
    EXPECT_THROW(pow2_adaptive_model(65537), seqkv::usage_error);
    EXPECT_THROW(pow2_adaptive_model(4096, 12), seqkv::usage_error);  // 2^P < 2 * alphabet
    EXPECT_THROW(pow2_adaptive_model(16, 21), seqkv::usage_error);
}
