// CRC-32C against the published check value and incremental use.
#include <gtest/gtest.h>

#include <span>
#include <string>
#include <vector>

#include "seqkv/core/checksum.hpp"

TEST(Checksum, Crc32cKnownAnswers) {
    const std::string check = "123456789";
    EXPECT_EQ(seqkv::crc32c({reinterpret_cast<const std::uint8_t*>(check.data()), check.size()}), 0xE3069283u);
    EXPECT_EQ(seqkv::crc32c({}), 0u);
    std::vector<std::uint8_t> zeros(32, 0);
    EXPECT_EQ(seqkv::crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST(Checksum, Crc32cIncrementalEqualsWhole) {
    std::vector<std::uint8_t> data(1000);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 31 + 7);
    const auto whole = seqkv::crc32c(data);
    for (std::size_t cut : {0u, 1u, 7u, 8u, 9u, 500u, 999u, 1000u}) {
        auto c = seqkv::crc32c_update(0, std::span(data).first(cut));
        c = seqkv::crc32c_update(c, std::span(data).subspan(cut));
        EXPECT_EQ(c, whole) << cut;
    }
    data[500] ^= 1;
    EXPECT_NE(seqkv::crc32c(data), whole);
}

// The crc32-instruction path (where the CPU has SSE4.2) and the portable one agree on every
// length 0..300 at every alignment 0..7, on long inputs, and incrementally.
TEST(Checksum, TheHardwarePathEqualsThePortableOne) {
    if (!seqkv::detail::crc32c_have_sse42()) GTEST_SKIP() << "no SSE4.2 crc32 on this CPU (or this compiler): the portable path is the only one";
#if defined(SEQKV_CRC32C_SSE42)
    std::vector<std::uint8_t> data(1 << 16);
    std::uint32_t x = 12345;
    for (auto& b : data) b = static_cast<std::uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
    for (std::size_t offset = 0; offset < 8; ++offset)
        for (std::size_t n = 0; n <= 300; ++n) {
            const auto s = std::span<const std::uint8_t>(data).subspan(offset, n);
            ASSERT_EQ(seqkv::detail::crc32c_update_sse42(0, s), seqkv::detail::crc32c_update_portable(0, s)) << offset << " " << n;
            ASSERT_EQ(seqkv::detail::crc32c_update_sse42(0xDEADBEEFu, s), seqkv::detail::crc32c_update_portable(0xDEADBEEFu, s));
        }
    EXPECT_EQ(seqkv::detail::crc32c_update_sse42(0, data), seqkv::detail::crc32c_update_portable(0, data));
    // Around the three-lane blocks (3 × 4096 bytes) and their joins, at every alignment.
    const std::size_t block = 3 * seqkv::detail::crc32c_lane;
    for (std::size_t n : {block - 1, block, block + 1, block + 7, 2 * block - 8, 2 * block, 2 * block + 13, 5 * block + 3})
        for (std::size_t offset : {0, 1, 5}) {
            const auto s = std::span<const std::uint8_t>(data).subspan(offset, n);
            ASSERT_EQ(seqkv::detail::crc32c_update_sse42(0x1234567u, s), seqkv::detail::crc32c_update_portable(0x1234567u, s)) << n;
        }
    const auto half = seqkv::detail::crc32c_update_sse42(0, std::span<const std::uint8_t>(data).first(777));
    EXPECT_EQ(seqkv::detail::crc32c_update_portable(half, std::span<const std::uint8_t>(data).subspan(777)),
              seqkv::crc32c(data));
#endif
}
