// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8, portable C++.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace seqkv {

namespace detail {
inline constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc32c_tables() {
    std::array<std::array<std::uint32_t, 256>, 8> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
        for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    return t;
}
inline constexpr auto crc32c_tables = make_crc32c_tables();
}  // namespace detail

/// Continues a CRC-32C over more bytes; start with crc = 0.
inline std::uint32_t crc32c_update(std::uint32_t crc, std::span<const std::uint8_t> bytes) {
    const auto& t = detail::crc32c_tables;
    std::uint32_t c = ~crc;
    const std::uint8_t* p = bytes.data();
    std::size_t n = bytes.size();
    while (n >= 8) {
        const std::uint32_t lo = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
                                      std::uint32_t(p[3]) << 24);
        c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
    return ~c;
}

/// CRC-32C of a byte span.
inline std::uint32_t crc32c(std::span<const std::uint8_t> bytes) { return crc32c_update(0, bytes); }

}  // namespace seqkv
