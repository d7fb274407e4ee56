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

// The normalisation's definition, one greedy step at a time: scale, then hand out the missing
// units where c / (2f + 1) is largest (ties: lower symbol) or take back the excess where
// c / (2f - 1) is smallest (ties: higher symbol), re-ranking after every step.
std::vector<std::uint32_t> greedy_oracle(const std::vector<std::uint64_t>& counts, unsigned precision) {
    using u128 = detail::uint128;
    const std::uint64_t target = std::uint64_t{1} << precision;
    u128 total = 0;
    for (auto c : counts) total += c;
    std::vector<std::uint32_t> f(counts.size(), 0);
    if (total == 0) return f;
    std::uint64_t sum = 0;
    for (std::size_t s = 0; s < counts.size(); ++s)
        if (counts[s] != 0) sum += f[s] = std::max<std::uint32_t>(1, std::uint32_t(u128{counts[s]} * target / total));
    auto ratio_less = [&](std::size_t a, std::uint64_t da, std::size_t b, std::uint64_t db) {  // c_a/da < c_b/db
        return u128{counts[a]} * db < u128{counts[b]} * da;
    };
    for (; sum < target; ++sum) {
        std::size_t best = counts.size();
        for (std::size_t s = 0; s < counts.size(); ++s)
            if (counts[s] != 0 && (best == counts.size() || ratio_less(best, 2ull * f[best] + 1, s, 2ull * f[s] + 1))) best = s;
        ++f[best];
    }
    for (; sum > target; --sum) {
        std::size_t best = counts.size();
        for (std::size_t s = counts.size(); s-- > 0;)
            if (f[s] > 1 && (best == counts.size() || ratio_less(s, 2ull * f[s] - 1, best, 2ull * f[best] - 1))) best = s;
        --f[best];
    }
    return f;
}

}  // namespace

TEST(FrequencyTable, NormalizationIsTheStepByStepGreedy) {
    // Shapes that give long excess paths (tails of rare symbols each rounded up to 1), ties
    // (mirror-image counts), huge counts and sparse alphabets, against the one-step-at-a-time
    // definition (the implementation takes most excess steps in bulk).
    std::mt19937_64 rng(11);
    int bulk_cases = 0;
    for (int trial = 0; trial < 1500; ++trial) {
        const unsigned precision = 6 + unsigned(rng() % 11);
        const std::uint32_t alphabet = 2 + std::uint32_t(rng() % std::min<std::uint64_t>(1u << precision, 3000));
        std::vector<std::uint64_t> counts(alphabet);
        const int shape = trial % 5;
        const double decay = 0.5 + 0.49 * std::uniform_real_distribution<double>(0, 1)(rng);
        const std::uint64_t peak = shape == 3 ? (std::uint64_t{1} << 62) + rng() % 1000 : 1 + rng() % 1'000'000;
        const std::uint32_t centre = std::uint32_t(rng() % alphabet);
        for (std::uint32_t s = 0; s < alphabet; ++s) {
            const std::uint32_t d = s > centre ? s - centre : centre - s;
            switch (shape) {
                case 0: counts[s] = std::uint64_t(double(peak) * std::pow(decay, d)) + (rng() % 4 == 0); break;  // laplace-like
                case 1: counts[s] = std::uint64_t(double(peak) * std::exp(-double(d) * d / (2 + rng() % 50))) + 1; break;
                case 2: counts[s] = rng() % 8 == 0 ? 1 + rng() % 100 : (rng() % 3 == 0 ? 0 : 1); break;  // sparse
                case 3: counts[s] = std::uint64_t(double(peak) * std::pow(decay, d)) | 1; break;  // huge
                default: counts[s] = 1 + (rng() % 2 ? rng() % 5 : 0); counts[s] *= 1 + (d < 3) * 1000; break;
            }
        }
        std::uint64_t used = 0;
        for (auto c : counts) used += c != 0;
        if (used == 0) counts[centre] = 1, used = 1;
        if (used > (1u << precision)) continue;
        const auto expected = greedy_oracle(counts, precision);
        const auto got = normalize_counts(counts, precision);
        ASSERT_EQ(got, expected) << "trial " << trial << " precision " << precision << " alphabet " << alphabet;
        // Did the bulk step run here? (scaled frequencies as normalize_counts starts from them)
        detail::uint128 total = 0;
        for (auto c : counts) total += c;
        std::vector<std::uint32_t> scaled(alphabet, 0);
        std::uint64_t sum = 0;
        for (std::size_t s = 0; s < counts.size(); ++s)
            if (counts[s]) sum += scaled[s] = std::max<std::uint32_t>(1, std::uint32_t(counts[s] * (detail::uint128{1} << precision) / total));
        if (sum > (std::uint64_t{1} << precision))
            bulk_cases += detail::bulk_excess_removal(counts, scaled, sum - (std::uint64_t{1} << precision)) > 0;
    }
    EXPECT_GT(bulk_cases, 300);  // the bulk path ran (and was checked) in many trials
}

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
