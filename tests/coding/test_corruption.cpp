// Corrupted, truncated or hostile coded input must raise seqkv::format_error (or decode to
// wrong symbols where the format cannot tell) and never read out of bounds. Run under
// -fsanitize=address to check the "never" part.
#include <gtest/gtest.h>

#include <random>

#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;

namespace {

template <class Decode>
void mutate_and_decode(const seqkv::byte_vector& good, std::uint64_t seed, int trials, Decode decode) {
    std::mt19937_64 rng(seed);
    int rejected = 0;
    for (int trial = 0; trial < trials; ++trial) {
        auto bad = good;
        switch (trial % 4) {
            case 0: bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
            case 1: bad.resize(rng() % bad.size()); break;
            case 2: bad[rng() % std::min<std::size_t>(bad.size(), 64)] = static_cast<std::uint8_t>(rng()); break;
            case 3:
                for (int k = 0; k < 8; ++k) bad[rng() % bad.size()] = static_cast<std::uint8_t>(rng());
                break;
        }
        try {
            decode(bad);
        } catch (const seqkv::format_error&) {
            ++rejected;
        }
    }
    EXPECT_GT(rejected, trials / 2);  // most damage is detected, not just survived
}

}  // namespace

TEST(Corruption, RansWideBlocksNeverReadOutOfBounds) {
    const auto symbols = seqkv_test::laplace_symbols(3000, 700, 9.0, 1);
    const auto contexts = seqkv_test::random_contexts(symbols.size(), 5, 2);
    const auto good = encode_block(symbols, contexts, 700, 5, {.parametric_tables = true});
    for (auto path : {rans::decode_path::scalar, rans::decode_path::simd})
        mutate_and_decode(good, 3, 1500, [&](const seqkv::byte_vector& bad) {
            std::vector<std::uint16_t> out(symbols.size());
            decode_block(bad, contexts, out, path);
        });
}

TEST(Corruption, RansByteBlocksNeverReadOutOfBounds) {
    const auto symbols = seqkv_test::laplace_symbols<std::uint8_t>(5000, 256, 3.0, 4);
    const auto good = encode_bytes(symbols);
    for (auto path : {rans::decode_path::scalar, rans::decode_path::simd})
        mutate_and_decode(good, 5, 1500, [&](const seqkv::byte_vector& bad) {
            std::vector<std::uint8_t> out(symbols.size());
            decode_bytes(bad, {}, out, path);
        });
}

TEST(Corruption, RangeBlocksNeverReadOutOfBounds) {
    const auto symbols = seqkv_test::laplace_symbols(3000, 100, 5.0, 6);
    const auto good = encode_range_block(symbols, {}, 100, 1);
    std::mt19937_64 rng(7);
    for (int trial = 0; trial < 1000; ++trial) {
        auto bad = good;
        if (trial % 2) bad.resize(rng() % bad.size());
        else bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        std::vector<std::uint16_t> out(symbols.size());
        try {
            decode_range_block(bad, {}, out);
        } catch (const seqkv::format_error&) {
        }
    }
}

TEST(Corruption, HostileHeadersAreRejectedBeforeAllocating) {
    seqkv::byte_vector bytes;
    seqkv::byte_writer w(bytes);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(rans_block_kind::wide_symbols));
    w.put<std::uint8_t>(16);
    put_varint(w, 10);     // symbols
    put_varint(w, 65536);  // alphabet
    put_varint(w, 65536);  // contexts: 2^32 table cells
    std::vector<std::uint16_t> out(10);
    EXPECT_THROW(decode_block(bytes, {}, out), seqkv::limit_error);

    seqkv::byte_vector lying_count;
    seqkv::byte_writer w2(lying_count);
    w2.put<std::uint8_t>(static_cast<std::uint8_t>(rans_block_kind::wide_symbols));
    w2.put<std::uint8_t>(12);
    put_varint(w2, 10);
    put_varint(w2, 4);
    put_varint(w2, 4000);  // more tables than bytes left
    EXPECT_THROW(decode_block(lying_count, {}, out), seqkv::format_error);

    const std::vector<std::uint8_t> precision_too_high = {static_cast<std::uint8_t>(rans_block_kind::byte_symbols), 13, 0, 1, 1, 0};
    std::vector<std::uint8_t> none;
    EXPECT_THROW(decode_bytes(precision_too_high, {}, none), seqkv::format_error);
    EXPECT_THROW(decode_bytes({}, {}, none), seqkv::format_error);
}

TEST(Corruption, ContextsWithoutTablesAreRejected) {
    const std::vector<std::uint16_t> symbols = {1, 2, 3, 1};
    const std::vector<std::uint16_t> contexts = {0, 0, 0, 0};
    const auto bytes = encode_block(symbols, contexts, 4, 2);
    std::vector<std::uint16_t> out(4);
    EXPECT_THROW(decode_block(bytes, std::vector<std::uint16_t>{0, 1, 0, 0}, out), seqkv::format_error);
    EXPECT_THROW(decode_block(bytes, std::vector<std::uint16_t>{0, 9, 0, 0}, out), seqkv::format_error);
}
