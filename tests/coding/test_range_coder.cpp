#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;
using seqkv::byte_vector;

namespace {

std::vector<std::uint16_t> round_trip_static(const std::vector<std::uint16_t>& symbols, const frequency_table& table,
                                             std::size_t* coded_bytes = nullptr) {
    byte_vector bytes;
    range_encoder enc(bytes);
    for (auto s : symbols) encode_symbol(enc, table, s);
    enc.finish();
    if (coded_bytes) *coded_bytes = bytes.size();
    range_decoder dec(bytes);
    std::vector<std::uint16_t> out(symbols.size());
    for (auto& s : out) s = static_cast<std::uint16_t>(decode_symbol(dec, table));
    EXPECT_LE(dec.overrun_bytes(), 3u);
    return out;
}

}  // namespace

TEST(RangeCoder, StaticTablesRoundTrip) {
    for (std::uint32_t alphabet : {1u, 2u, 256u, 65536u}) {
        for (unsigned precision : {12u, 16u}) {
            if (alphabet > (1u << precision)) continue;
            for (double spread : {0.1, 3.0, 1e6}) {
                const auto symbols = seqkv_test::laplace_symbols(20000, alphabet, spread, alphabet + precision);
                const auto table = frequency_table::from_counts(histogram<std::uint16_t>(symbols, alphabet), precision);
                EXPECT_EQ(round_trip_static(symbols, table), symbols) << alphabet << " " << precision << " " << spread;
            }
        }
    }
}

TEST(RangeCoder, EmptyInputIsOneByte) {
    const auto table = frequency_table::from_counts(std::vector<std::uint64_t>{1, 1}, 12);
    std::size_t bytes = 0;
    EXPECT_TRUE(round_trip_static({}, table, &bytes).empty());
    EXPECT_LE(bytes, 1u);
}

TEST(RangeCoder, CarriesPropagateThroughRunsOfFF) {
    // A top-heavy table makes low sit just under a byte boundary again and again: long runs of
    // 0xFF bytes that a later carry must turn into 0x00.
    std::vector<std::uint32_t> freq = {1, 65535 - 2, 1, 1};
    const auto table = frequency_table::from_frequencies(freq, 16);
    std::mt19937_64 rng(5);
    for (int trial = 0; trial < 50; ++trial) {
        std::vector<std::uint16_t> symbols(5000);
        for (auto& s : symbols) s = (rng() % 50 == 0) ? static_cast<std::uint16_t>(rng() % 4) : (trial % 2 ? 3 : 1);
        for (auto& s : symbols) if (s == 1 && rng() % 2) s = 3;
        ASSERT_EQ(round_trip_static(symbols, table), symbols);
    }
}

TEST(RangeCoder, AdaptiveBitsRoundTripNearEntropy) {
    std::mt19937_64 rng(9);
    for (double p_one : {0.001, 0.05, 0.5}) {
        std::bernoulli_distribution bit(p_one);
        std::vector<unsigned> bits(200000);
        for (auto& b : bits) b = bit(rng);
        byte_vector bytes;
        range_encoder enc(bytes);
        adaptive_bit_model model_e;
        for (auto b : bits) enc.encode_bit(model_e, b);
        enc.encode_raw_bits(0xBEEF, 16);
        enc.finish();
        range_decoder dec(bytes);
        adaptive_bit_model model_d;
        for (auto b : bits) ASSERT_EQ(dec.decode_bit(model_d), b);
        EXPECT_EQ(dec.decode_raw_bits(16), 0xBEEFu);
        const double entropy = -(p_one * std::log2(p_one) + (1 - p_one) * std::log2(1 - p_one)) * bits.size() / 8;
        // Probabilities saturate at 31/4096, which costs extra only on very skewed bits.
        EXPECT_LT(bytes.size(), entropy * (p_one < 0.01 ? 1.6 : 1.03) + 64) << p_one;
    }
}

TEST(RangeCoder, AdaptiveModelRoundTripsMaximalAlphabet) {
    const auto symbols = seqkv_test::laplace_symbols(100000, 65536, 300.0, 1);
    byte_vector bytes;
    range_encoder enc(bytes);
    adaptive_frequency_model model_e(65536);
    for (auto s : symbols) encode_symbol(enc, model_e, s);
    enc.finish();
    range_decoder dec(bytes);
    adaptive_frequency_model model_d(65536);
    for (auto s : symbols) ASSERT_EQ(decode_symbol(dec, model_d), s);
}

TEST(RangeCoder, AdaptiveModelCumulativeMatchesFrequencies) {
    adaptive_frequency_model model(300, 24, 1 << 12);
    std::mt19937_64 rng(2);
    for (int i = 0; i < 20000; ++i) {
        model.update(static_cast<std::uint32_t>(rng() % 7 == 0 ? rng() % 300 : 42));
        if (i % 997 == 0) {
            std::uint32_t cum = 0;
            for (std::uint32_t s = 0; s < 300; ++s) {
                ASSERT_EQ(model.cumulative(s), cum);
                std::uint32_t found_cum = 0;
                ASSERT_EQ(model.find(cum, found_cum), s);
                ASSERT_EQ(found_cum, cum);
                cum += model.frequency(s);
            }
            ASSERT_EQ(cum, model.total());
            ASSERT_LE(model.total(), 1u << 12);
        }
    }
}

TEST(RangeBlock, RoundTripsWithContextsAndEmptyInput) {
    const auto symbols = seqkv_test::laplace_symbols(50000, 1000, 20.0, 4);
    const auto contexts = seqkv_test::random_contexts(symbols.size(), 7, 5);
    const auto bytes = encode_range_block(symbols, contexts, 1000, 7);
    std::vector<std::uint16_t> out(symbols.size());
    decode_range_block(bytes, contexts, out);
    EXPECT_EQ(out, symbols);
    const auto empty = encode_range_block({}, {}, 5, 1);
    decode_range_block(empty, {}, std::span<std::uint16_t>());
}
