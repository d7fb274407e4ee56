#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "seqkv/coding/frequency_table.hpp"

using namespace seqkv::coding;

namespace {

void expect_valid(const std::vector<std::uint64_t>& counts, const frequency_table& t) {
    std::uint64_t sum = 0;
    for (std::uint32_t s = 0; s < counts.size(); ++s) {
        sum += t.frequency(s);
        if (counts[s] != 0) EXPECT_GE(t.frequency(s), 1u) << "symbol " << s;
        else EXPECT_EQ(t.frequency(s), 0u) << "symbol " << s;
    }
    EXPECT_EQ(sum, std::uint64_t{1} << t.precision_bits());
}

}  // namespace

TEST(FrequencyTable, NormalizedTablesSumToTotalAndKeepOccurringSymbols) {
    std::mt19937_64 rng(7);
    for (unsigned precision : {8u, 12u, 14u, 16u}) {
        for (std::uint32_t alphabet : {1u, 2u, 17u, 256u}) {
            for (int shape = 0; shape < 3; ++shape) {
                std::vector<std::uint64_t> counts(alphabet);
                for (std::uint32_t s = 0; s < alphabet; ++s)
                    counts[s] = shape == 0 ? 1 : shape == 1 ? (s % 3 == 0 ? 0 : rng() % 1000) : (s == 0 ? 1'000'000'000 : rng() % 3);
                if (std::accumulate(counts.begin(), counts.end(), std::uint64_t{0}) == 0) counts[0] = 1;
                expect_valid(counts, frequency_table::from_counts(counts, precision));
            }
        }
    }
}

TEST(FrequencyTable, NormalizationIsPinned) {
    // Golden values: the integer normalization must give these on every machine.
    const std::vector<std::uint64_t> counts = {1000, 1, 0, 37, 500, 2, 0, 9999};
    const auto t = frequency_table::from_counts(counts, 12);
    const std::vector<std::uint32_t> expected = {355, 1, 0, 13, 177, 1, 0, 3549};
    EXPECT_EQ(std::vector<std::uint32_t>(t.frequencies().begin(), t.frequencies().end()), expected);
}

TEST(FrequencyTable, MaximalAlphabetAtFullPrecisionIsFlat) {
    std::vector<std::uint64_t> counts(max_alphabet_size, 5);
    const auto t = frequency_table::from_counts(counts, 16);
    for (std::uint32_t s = 0; s < max_alphabet_size; ++s) ASSERT_EQ(t.frequency(s), 1u);
    counts[123] = 0;
    expect_valid(counts, frequency_table::from_counts(counts, 16));
    EXPECT_THROW(frequency_table::from_counts(std::vector<std::uint64_t>(4097, 1), 12), seqkv::usage_error);
}

TEST(FrequencyTable, SingleSymbolGetsWholeRange) {
    const std::vector<std::uint64_t> counts = {0, 0, 42, 0};
    const auto t = frequency_table::from_counts(counts, 12);
    EXPECT_EQ(t.frequency(2), 4096u);
    EXPECT_EQ(t.cumulative(3), 4096u);
}

TEST(FrequencyTable, EmptyCountsGiveEmptyTable) {
    const auto t = frequency_table::from_counts(std::vector<std::uint64_t>(10, 0), 12);
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(t.used_symbols(), 0u);
}

TEST(FrequencyTable, SerializationRoundTripsCompactly) {
    std::mt19937_64 rng(3);
    for (std::uint32_t alphabet : {1u, 5u, 256u, 4000u}) {
        std::vector<std::uint64_t> counts(alphabet);
        for (auto& c : counts) c = (rng() % 4 == 0) ? 0 : rng() % 5000;
        counts[0] += 1;
        const auto t = frequency_table::from_counts(counts, 14);
        seqkv::byte_vector bytes;
        seqkv::byte_writer w(bytes);
        t.serialize(w);
        EXPECT_LE(bytes.size(), 3 + 3 * std::size_t{t.used_symbols()});
        seqkv::byte_reader r(bytes);
        const auto back = frequency_table::deserialize(r, alphabet, 14);
        EXPECT_TRUE(r.at_end());
        EXPECT_TRUE(std::equal(t.frequencies().begin(), t.frequencies().end(), back.frequencies().begin(), back.frequencies().end()));
    }
}

TEST(FrequencyTable, CorruptSerializationThrowsOrYieldsAValidTable) {
    std::vector<std::uint64_t> counts(64);
    for (std::uint32_t s = 0; s < 64; ++s) counts[s] = s * s % 17;
    const auto t = frequency_table::from_counts(counts, 12);
    seqkv::byte_vector bytes;
    seqkv::byte_writer w(bytes);
    t.serialize(w);
    std::mt19937_64 rng(11);
    for (int trial = 0; trial < 2000; ++trial) {
        auto bad = bytes;
        bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        if (trial % 4 == 0) bad.resize(rng() % bad.size());
        seqkv::byte_reader r(bad);
        try {
            const auto back = frequency_table::deserialize(r, 64, 12);
            EXPECT_TRUE(back.empty() || back.total() == 4096u);
        } catch (const seqkv::format_error&) {
        }
    }
}
