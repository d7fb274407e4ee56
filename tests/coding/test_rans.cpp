#include <gtest/gtest.h>

#include "seqkv/coding/rans_block.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;
using rans::decode_path;

namespace {

void expect_wide_round_trip(const std::vector<std::uint16_t>& symbols, const std::vector<std::uint16_t>& contexts,
                            std::uint32_t alphabet, std::uint32_t context_count, rans_block_options options = {}) {
    const auto bytes = encode_block(symbols, contexts, alphabet, context_count, options);
    for (auto path : {decode_path::scalar, decode_path::simd}) {
        std::vector<std::uint16_t> out(symbols.size(), 0xFFFF);
        decode_block(bytes, contexts, out, path);
        ASSERT_EQ(out, symbols) << "path " << static_cast<int>(path) << " alphabet " << alphabet;
    }
}

void expect_byte_round_trip(const std::vector<std::uint8_t>& symbols, const std::vector<std::uint8_t>& contexts,
                            std::uint32_t context_count) {
    const auto bytes = encode_bytes(symbols, contexts, context_count);
    for (auto path : {decode_path::scalar, decode_path::simd}) {
        std::vector<std::uint8_t> out(symbols.size(), 0xAB);
        decode_bytes(bytes, contexts, out, path);
        ASSERT_EQ(out, symbols) << "path " << static_cast<int>(path);
    }
}

}  // namespace

TEST(RansBlock, EmptyAndTinyInputs) {
    expect_wide_round_trip({}, {}, 10, 1);
    expect_wide_round_trip({7}, {}, 10, 1);
    expect_wide_round_trip({0, 0, 0}, {}, 1, 1);  // alphabet of one symbol
    expect_byte_round_trip({}, {}, 1);
    expect_byte_round_trip({255}, {}, 1);
}

TEST(RansBlock, ConstantStreamCostsOnlyHeaderAndStates) {
    const std::vector<std::uint16_t> symbols(100000, 3);
    const auto bytes = encode_block(symbols, {}, 16, 1);
    const auto header = inspect_rans_block(bytes);
    EXPECT_EQ(header.payload_bytes, 1 + 4 * rans::lane_count);  // no words at all
    expect_wide_round_trip(symbols, {}, 16, 1);
}

TEST(RansBlock, RandomAlphabetsAndShapesRoundTripOnBothPaths) {
    std::uint64_t seed = 1;
    for (std::uint32_t alphabet : {2u, 3u, 100u, 256u, 4097u, 65536u}) {
        for (double spread : {0.05, 2.0, 50.0, 1e7}) {
            for (std::size_t count : {31u, 32u, 33u, 1000u, 40000u}) {
                const auto symbols = seqkv_test::laplace_symbols(count, alphabet, spread, ++seed);
                expect_wide_round_trip(symbols, {}, alphabet, 1);
            }
        }
    }
}

TEST(RansBlock, MaximalAlphabetFlat) {
    const auto symbols = seqkv_test::uniform_symbols(300000, 65536, 77);
    expect_wide_round_trip(symbols, {}, 65536, 1);
}

TEST(RansBlock, ContextsSelectTablesOnBothPaths) {
    const std::size_t count = 100003;
    auto symbols = seqkv_test::laplace_symbols(count, 512, 4.0, 3);
    const auto contexts = seqkv_test::random_contexts(count, 40, 4);
    for (std::size_t i = 0; i < count; ++i) symbols[i] = static_cast<std::uint16_t>((symbols[i] + 7 * contexts[i]) % 512);
    expect_wide_round_trip(symbols, contexts, 512, 40);
    expect_wide_round_trip(symbols, contexts, 512, 300);  // many unused contexts
    const auto byte_symbols = seqkv_test::laplace_symbols<std::uint8_t>(count, 256, 6.0, 5);
    const auto byte_contexts = seqkv_test::random_contexts<std::uint8_t>(count, 256, 6);
    expect_byte_round_trip(byte_symbols, byte_contexts, 256);
}

TEST(RansBlock, ParametricTablesRoundTripAndShrinkSmallContexts) {
    const std::size_t count = 20000;
    auto symbols = seqkv_test::laplace_symbols(count, 256, 3.0, 8, 128);
    const auto contexts = seqkv_test::random_contexts(count, 200, 9);
    const auto explicit_bytes = encode_block(symbols, contexts, 256, 200);
    const auto parametric_bytes = encode_block(symbols, contexts, 256, 200, {.parametric_tables = true});
    EXPECT_LT(parametric_bytes.size(), explicit_bytes.size() * 9 / 10);
    expect_wide_round_trip(symbols, contexts, 256, 200, {.parametric_tables = true});
}

TEST(RansBlock, ExplicitPrecisionIsHonoured) {
    const auto symbols = seqkv_test::laplace_symbols(5000, 300, 10.0, 12);
    for (unsigned precision : {9u, 12u, 16u}) {
        const auto bytes = encode_block(symbols, {}, 300, 1, {.precision_bits = precision});
        EXPECT_EQ(inspect_rans_block(bytes).precision_bits, precision);
        std::vector<std::uint16_t> out(symbols.size());
        decode_block(bytes, {}, out);
        EXPECT_EQ(out, symbols);
    }
    EXPECT_THROW(encode_block(symbols, {}, 300, 1, {.precision_bits = 4}), seqkv::usage_error);  // > 16 distinct symbols
}

TEST(RansBlock, TenMillionSymbolStreams) {
    const std::size_t count = 10'000'000;
    const auto bytes_in = seqkv_test::laplace_symbols<std::uint8_t>(count, 256, 5.0, 21);
    expect_byte_round_trip(bytes_in, {}, 1);
    const auto wide_in = seqkv_test::laplace_symbols(count, 4096, 40.0, 22);
    expect_wide_round_trip(wide_in, {}, 4096, 1);
}

TEST(RansBlock, RejectsMisuse) {
    const std::vector<std::uint16_t> symbols = {1, 2, 3};
    EXPECT_THROW(encode_block(symbols, {}, 3, 1), seqkv::usage_error);  // symbol 3 outside alphabet
    EXPECT_THROW(encode_block(symbols, std::vector<std::uint16_t>{0, 1}, 4, 2), seqkv::usage_error);
    const auto bytes = encode_block(symbols, {}, 4, 1);
    std::vector<std::uint16_t> wrong_size(4);
    EXPECT_THROW(decode_block(bytes, {}, wrong_size), seqkv::format_error);
    std::vector<std::uint8_t> as_bytes(3);
    EXPECT_THROW(decode_bytes(bytes, {}, as_bytes), seqkv::format_error);  // wrong block kind
}
