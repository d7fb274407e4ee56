// seqkv's coders against the exact-arithmetic oracle: same decoded symbols, and code lengths
// within 0.1 % of the exactly computed ideal (plus flush bytes).
#include <gtest/gtest.h>

#include "exact_arithmetic_coder.hpp"
#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;
using seqkv_test::exact_float;

TEST(ExactOracle, EncodesDecodesAndMatchesOurDecoders) {
    for (std::uint32_t alphabet : {1u, 2u, 50u, 65536u}) {
        const auto symbols = seqkv_test::laplace_symbols(3000, alphabet, 6.0, alphabet);
        const auto counts = histogram<std::uint16_t>(symbols, alphabet);
        const auto table = frequency_table::from_counts(counts, 16);
        seqkv_test::exact_arithmetic_encoder oracle;
        for (auto s : symbols) oracle.push({table.cumulative(s), table.frequency(s), table.total()});
        const auto [code, bits] = oracle.shortest_code();
        // The shortest code is at most 2 bits longer than the ideal length.
        EXPECT_LE(exact_float(bits), oracle.ideal_bits() + 2);
        EXPECT_GE(bits, oracle.ideal_bits_floor_bound());
        EXPECT_LT(boost::multiprecision::abs(oracle.ideal_bits() - seqkv_test::ideal_bits(counts, table)), exact_float(1e-30));
        seqkv_test::static_table_model model{&table};
        const auto decoded = seqkv_test::exact_decode(code, bits, symbols.size(), model);
        ASSERT_TRUE(std::equal(decoded.begin(), decoded.end(), symbols.begin(), symbols.end()));

        // Our coders decode to the oracle's output, and cost within a few bytes of it.
        const auto block = encode_block(symbols, {}, alphabet, 1, {.precision_bits = 16});
        std::vector<std::uint16_t> out(symbols.size());
        decode_block(block, {}, out);
        EXPECT_TRUE(std::equal(decoded.begin(), decoded.end(), out.begin(), out.end()));
        seqkv::byte_vector range_bytes;
        range_encoder enc(range_bytes);
        for (auto s : symbols) encode_symbol(enc, table, s);
        enc.finish();
        EXPECT_LE(exact_float(range_bytes.size() * 8), exact_float(bits) * 1.001 + 5 * 8);
    }
}

namespace {

struct stream_case {
    const char* name;
    std::uint32_t alphabet;
    double spread;  // mean |offset| of the Laplace-like stream; 0 = uniform
};

}  // namespace

TEST(ExactOracle, CodersWithinOneTenthPercentOfIdealOnMillionSymbolStreams) {
    const std::size_t count = 1'000'000;
    const stream_case cases[] = {{"skewed", 256, 0.7}, {"kv-exponent-like", 256, 3.0}, {"residual-like", 4096, 40.0},
                                 {"flat-256", 256, 0}, {"wide-flat", 65536, 0}};
    for (const auto& c : cases) {
        const auto symbols = c.spread > 0 ? seqkv_test::laplace_symbols(count, c.alphabet, c.spread, 31)
                                          : seqkv_test::uniform_symbols(count, c.alphabet, 31);
        const auto counts = histogram<std::uint16_t>(symbols, c.alphabet);

        // rANS: the lane payload (words + 32 final states) vs the ideal under the block's own table.
        const auto block = encode_block(symbols, {}, c.alphabet, 1);
        const auto header = inspect_rans_block(block);
        const auto table = frequency_table::from_counts(counts, header.precision_bits);  // the encoder's table
        const exact_float rans_ideal = seqkv_test::ideal_bits(counts, table);
        const double rans_bits = 8.0 * header.payload_bytes;
        EXPECT_LE(exact_float(rans_bits), rans_ideal * exact_float(1.001) + 8 * (4 * rans::lane_count + 8)) << c.name;

        // Range coder with a 16-bit static table.
        const auto table16 = frequency_table::from_counts(counts, 16);
        seqkv::byte_vector range_bytes;
        range_encoder enc(range_bytes);
        for (auto s : symbols) encode_symbol(enc, table16, s);
        enc.finish();
        const exact_float range_ideal = seqkv_test::ideal_bits(counts, table16);
        EXPECT_LE(exact_float(8.0 * range_bytes.size()), range_ideal * exact_float(1.001) + 8 * 5) << c.name;
        // Overhead of the words alone (the 32 final states are the rANS flush).
        RecordProperty(std::string(c.name) + "_rans_overhead_ppm",
                       static_cast<int>(1e6 * ((rans_bits - 32.0 * rans::lane_count) / static_cast<double>(rans_ideal) - 1)));
        RecordProperty(std::string(c.name) + "_range_overhead_ppm",
                       static_cast<int>(1e6 * (8.0 * range_bytes.size() / static_cast<double>(range_ideal) - 1)));
    }
}

TEST(ExactOracle, AdaptiveRangeCoderMatchesItsModelsIdealLength) {
    const auto symbols = seqkv_test::laplace_symbols(1'000'000, 300, 8.0, 41);
    adaptive_frequency_model model(300);
    long double ideal = 0;
    seqkv::byte_vector bytes;
    range_encoder enc(bytes);
    for (auto s : symbols) {
        ideal -= std::log2(static_cast<long double>(model.frequency(s)) / model.total());
        encode_symbol(enc, model, s);
    }
    enc.finish();
    EXPECT_LE(8.0L * bytes.size(), ideal * 1.001L + 8 * 5);
}
