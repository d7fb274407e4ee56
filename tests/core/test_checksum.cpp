// CRC-32C against the published check value and incremental use.
#include <gtest/gtest.h>

#include <string>

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
