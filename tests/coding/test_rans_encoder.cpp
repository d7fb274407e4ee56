// The reciprocal (division-free) rANS encoder must produce exactly the bytes of the
// division-based reference encoder.
#include <gtest/gtest.h>

#include <random>

#include "seqkv/coding/rans_block.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;

TEST(RansEncoder, ReciprocalStepEqualsDivisionForEveryFrequency) {
    std::mt19937_64 rng(1);
    for (unsigned precision : {16u, 12u, 1u}) {
        const std::uint32_t total = 1u << precision;
        for (std::uint32_t f = 1; f <= total; ++f) {
            const std::uint32_t cumulative = static_cast<std::uint32_t>(rng() % (total - f + 1));
            const rans::encoder_symbol e = rans::make_encoder_symbol(f, cumulative, precision);
            // Every state the step can see: [1, x_max] (renormalization may leave x below L).
            const std::uint64_t x_max = (std::uint64_t{f} << (32 - precision)) - 1;
            ASSERT_EQ(e.x_max, x_max);
            std::vector<std::uint64_t> states = {1, 2, rans::state_lower_bound, x_max, x_max - 1};
            for (int k = 0; k < 12; ++k) {
                const std::uint64_t multiple = (1 + rng() % x_max) / f * f;
                for (std::uint64_t x : {multiple, multiple - 1, multiple + f - 1})
                    if (x >= 1 && x <= x_max) states.push_back(x);
            }
            for (std::uint64_t x64 : states) {
                if (x64 < 1 || x64 > x_max) continue;
                const auto x = static_cast<std::uint32_t>(x64);
                const std::uint64_t expected = (std::uint64_t{x / f} << precision) + x % f + cumulative;
                ASSERT_EQ(rans::encode_step(x, e), expected) << "P " << precision << " f " << f << " x " << x;
            }
        }
    }
}

namespace {

void expect_same_lanes(const rans::encoded_lanes& a, const rans::encoded_lanes& b) {
    ASSERT_EQ(a.states, b.states);
    ASSERT_EQ(a.words, b.words);
}

}  // namespace

TEST(RansEncoder, ReciprocalEncoderMatchesDivisionEncoderOnRandomStreams) {
    std::mt19937_64 rng(7);
    for (int trial = 0; trial < 120; ++trial) {
        const std::uint32_t alphabet = 1 + static_cast<std::uint32_t>(rng() % (trial % 3 == 0 ? 65536 : 300));
        const std::uint32_t context_count = 1 + static_cast<std::uint32_t>(rng() % 6);
        const std::size_t count = static_cast<std::size_t>(rng() % 40000);
        const double spread = std::ldexp(1.0, static_cast<int>(rng() % 20) - 4);
        const auto symbols = seqkv_test::laplace_symbols(count, alphabet, spread, rng());
        const auto contexts = context_count == 1 ? std::vector<std::uint16_t>{}
                                                 : seqkv_test::random_contexts(count, context_count, rng());
        std::vector<std::vector<std::uint64_t>> counts(context_count, std::vector<std::uint64_t>(alphabet, 0));
        for (std::size_t i = 0; i < count; ++i) ++counts[contexts.empty() ? 0 : contexts[i]][symbols[i]];
        std::uint32_t most_distinct = 1;
        for (const auto& row : counts)
            most_distinct = std::max<std::uint32_t>(most_distinct, static_cast<std::uint32_t>(std::count_if(row.begin(), row.end(), [](auto n) { return n != 0; })));
        const unsigned precision = std::max<unsigned>({static_cast<unsigned>(std::bit_width(most_distinct - 1)), 1u,
                                                       static_cast<unsigned>(rng() % 17)});
        std::vector<frequency_table> tables;
        for (const auto& row : counts) tables.push_back(frequency_table::from_counts(row, precision));
        const std::span<const frequency_table> table_span(tables);
        expect_same_lanes(rans::encode(std::span<const std::uint16_t>(symbols), std::span<const std::uint16_t>(contexts), table_span),
                          rans::encode_by_division(std::span<const std::uint16_t>(symbols), std::span<const std::uint16_t>(contexts), table_span));
    }
}

TEST(RansEncoder, BlocksAreByteIdenticalToTheDivisionEncoder) {
    // Skewed byte stream (frequency-1 symbols, long runs) through the byte block path, decoded back.
    std::mt19937_64 rng(3);
    std::vector<std::uint8_t> symbols(200000);
    for (auto& s : symbols) s = rng() % 1000 == 0 ? static_cast<std::uint8_t>(rng()) : static_cast<std::uint8_t>(rng() % 3);
    const std::vector<frequency_table> tables = {frequency_table::from_counts(histogram<std::uint8_t>(symbols, 256), 12)};
    expect_same_lanes(rans::encode(std::span<const std::uint8_t>(symbols), std::span<const std::uint8_t>(), std::span<const frequency_table>(tables)),
                      rans::encode_by_division(std::span<const std::uint8_t>(symbols), std::span<const std::uint8_t>(), std::span<const frequency_table>(tables)));
    const auto bytes = encode_bytes(symbols);
    std::vector<std::uint8_t> out(symbols.size());
    decode_bytes(bytes, {}, out);
    EXPECT_EQ(out, symbols);
}

TEST(RansEncoder, ZeroFrequencySymbolIsAUsageError) {
    const std::vector<frequency_table> tables = {frequency_table::from_frequencies({4096, 0}, 12)};
    const std::vector<std::uint16_t> symbols = {0, 1};
    EXPECT_THROW(rans::encode(std::span<const std::uint16_t>(symbols), std::span<const std::uint16_t>(), std::span<const frequency_table>(tables)),
                 seqkv::usage_error);
    const std::vector<std::uint16_t> too_big = {2};
    EXPECT_THROW(rans::encode(std::span<const std::uint16_t>(too_big), std::span<const std::uint16_t>(), std::span<const frequency_table>(tables)),
                 seqkv::usage_error);
}

TEST(RansEncoder, CountedBlocksEqualCountedHereAndRefuseWrongCounts) {
    std::mt19937_64 rng(5);
    for (std::uint32_t contexts : {1u, 3u, 24u}) {
        std::vector<std::uint8_t> symbols(50000), ctx(contexts > 1 ? symbols.size() : 0);
        std::vector<std::uint32_t> counts(std::size_t(contexts) * 256, 0);
        for (std::size_t i = 0; i < symbols.size(); ++i) {
            symbols[i] = rng() % 7 == 0 ? static_cast<std::uint8_t>(rng()) : static_cast<std::uint8_t>(rng() % 5);
            const std::uint32_t c = contexts > 1 ? static_cast<std::uint32_t>(rng() % contexts) : 0;
            if (contexts > 1) ctx[i] = static_cast<std::uint8_t>(c);
            ++counts[std::size_t(c) * 256 + symbols[i]];
        }
        EXPECT_EQ(encode_bytes_counted(symbols, ctx, contexts, counts), encode_bytes(symbols, ctx, contexts)) << contexts;
        auto short_by_one = counts;
        --short_by_one[std::size_t(contexts > 1 ? ctx[0] : 0) * 256 + symbols[0]];
        EXPECT_THROW(encode_bytes_counted(symbols, ctx, contexts, short_by_one), seqkv::usage_error);  // do not add up
        auto moved = counts;  // adds up, but names a symbol that occurs zero times
        const std::size_t cell = std::size_t(contexts > 1 ? ctx[0] : 0) * 256 + symbols[0];
        moved[cell + (symbols[0] == 255 ? -1 : 1)] += moved[cell], moved[cell] = 0;
        EXPECT_THROW(encode_bytes_counted(symbols, ctx, contexts, moved), seqkv::usage_error);
        EXPECT_THROW(encode_bytes_counted(symbols, ctx, contexts, std::span(counts).first(counts.size() - 1)), seqkv::usage_error);
        if (contexts > 1) {
            auto bad_ctx = ctx;
            bad_ctx[1] = static_cast<std::uint8_t>(contexts);
            EXPECT_THROW(encode_bytes_counted(symbols, bad_ctx, contexts, counts), seqkv::usage_error);
        }
    }
}

TEST(RansEncoder, SimdEncoderWritesTheScalarBytes) {
    // Byte symbols under 1–40 contexts (u8 and u16), precisions 1–12, lengths around the 32-lane
    // groups, skewed and flat streams, frequency-1 and whole-range symbols: the AVX2 path (where the
    // CPU has it; else both calls run the scalar path) must give the division encoder's lanes.
    if (!rans::simd_encode_available()) GTEST_SKIP() << "no AVX2 on this CPU: only the scalar encoder runs";
    std::mt19937_64 rng(11);
    for (int trial = 0; trial < 300; ++trial) {
        const std::uint32_t context_count = trial % 4 == 0 ? 1 : 1 + static_cast<std::uint32_t>(rng() % 40);
        const std::size_t count = trial % 5 == 0 ? 256 + rng() % 64 : static_cast<std::size_t>(rng() % 30000);
        const int shape = trial % 3;  // 0: near-constant with rare outliers, 1: a few symbols, 2: uniform bytes
        std::vector<std::uint8_t> symbols(count);
        std::vector<std::uint8_t> contexts8(context_count > 1 ? count : 0);
        std::vector<std::uint16_t> contexts16(contexts8.size());
        std::vector<std::vector<std::uint64_t>> counts(context_count, std::vector<std::uint64_t>(256, 0));
        for (std::size_t i = 0; i < count; ++i) {
            symbols[i] = shape == 0   ? (rng() % 500 == 0 ? static_cast<std::uint8_t>(rng()) : 7)
                         : shape == 1 ? static_cast<std::uint8_t>(rng() % 4 * 60)
                                      : static_cast<std::uint8_t>(rng());
            const std::uint32_t c = context_count > 1 ? static_cast<std::uint32_t>(rng() % context_count) : 0;
            if (context_count > 1) contexts8[i] = static_cast<std::uint8_t>(c), contexts16[i] = static_cast<std::uint16_t>(c);
            ++counts[c][symbols[i]];
        }
        std::uint32_t most_distinct = 1;
        for (const auto& row : counts)
            most_distinct = std::max<std::uint32_t>(most_distinct, static_cast<std::uint32_t>(std::count_if(row.begin(), row.end(), [](auto n) { return n != 0; })));
        const unsigned least = std::max(1u, static_cast<unsigned>(std::bit_width(most_distinct - 1)));
        const unsigned precision = std::max<unsigned>(least, trial % 2 == 0 ? 12u : static_cast<unsigned>(rng() % 13));
        std::vector<frequency_table> tables;
        for (const auto& row : counts) tables.push_back(frequency_table::from_counts(row, precision));
        const std::span<const frequency_table> t(tables);
        const std::span<const std::uint8_t> s(symbols);
        const auto expected = rans::encode_by_division(s, std::span<const std::uint8_t>(contexts8), t);
        expect_same_lanes(rans::encode(s, std::span<const std::uint8_t>(contexts8), t, rans::encode_path::simd), expected);
        expect_same_lanes(rans::encode(s, std::span<const std::uint16_t>(contexts16), t, rans::encode_path::simd), expected);
        expect_same_lanes(rans::encode_scalar(s, std::span<const std::uint8_t>(contexts8), t), expected);
    }
}

TEST(RansEncoder, SimdEncoderRefusesWhatTheScalarOneRefuses) {
    std::vector<std::uint8_t> symbols(1000, 1), contexts(1000, 0);
    symbols[500] = 2;  // frequency 0 in the table below, in a whole group
    const std::vector<frequency_table> tables = {frequency_table::from_frequencies({0, 4095, 0, 1}, 12)};
    const std::span<const frequency_table> t(tables);
    for (auto path : {rans::encode_path::scalar, rans::encode_path::simd}) {
        EXPECT_THROW(rans::encode(std::span<const std::uint8_t>(symbols), std::span<const std::uint8_t>(), t, path), seqkv::usage_error);
        symbols[500] = 1, symbols[999] = 0;  // in the partial last group
        EXPECT_THROW(rans::encode(std::span<const std::uint8_t>(symbols), std::span<const std::uint8_t>(), t, path), seqkv::usage_error);
        symbols[999] = 1, contexts[3] = 1;  // a context without a table
        EXPECT_THROW(rans::encode(std::span<const std::uint8_t>(symbols), std::span<const std::uint8_t>(contexts), t, path), seqkv::usage_error);
        contexts[3] = 0, symbols[500] = 2;
    }
}

TEST(RansEncoder, DoubleQuotientIsExactForByteTables) {
    // The AVX2 encoder's floor(x / f): trunc(s · RN(1/f) + RN(2^31 · RN(1/f) + 2^-16)) with
    // s = x - 2^31, for every f <= 2^12 and states around multiples of f up to 2^32 - 1; checked
    // fused (as the kernel runs) and with every operation rounded on its own.
    std::mt19937_64 rng(13);
    const double two31 = 2147483648.0, nudge = 1.0 / 65536.0;
    for (std::uint32_t f = 1; f <= 4096; ++f) {
        const volatile double inverse = 1.0 / double(f);
        std::vector<std::uint64_t> states = {1, f, (std::uint64_t{f} << 20) - 1, (std::uint64_t{1} << 31) - 1,
                                             std::uint64_t{1} << 31, (std::uint64_t{1} << 32) - 1};
        for (int k = 0; k < 40; ++k) {
            const std::uint64_t multiple = (1 + rng() % ((std::uint64_t{1} << 32) - 1)) / f * f;
            for (std::uint64_t x : {multiple, multiple - 1, multiple + f - 1}) states.push_back(x);
        }
        const double fused_offset = std::fma(two31, inverse, nudge);
        const volatile double scaled = two31 * inverse;
        const volatile double offset = scaled + nudge;
        for (std::uint64_t x : states) {
            if (x < 1 || x >= (std::uint64_t{1} << 32)) continue;
            const double s = double(std::int64_t(x) - (std::int64_t{1} << 31));
            ASSERT_EQ(static_cast<std::int64_t>(std::fma(s, inverse, fused_offset)), std::int64_t(x / f)) << "fused, f " << f << " x " << x;
            const volatile double product = s * inverse;
            const volatile double sum = product + offset;
            ASSERT_EQ(static_cast<std::int64_t>(sum), std::int64_t(x / f)) << "unfused, f " << f << " x " << x;
        }
    }
}
