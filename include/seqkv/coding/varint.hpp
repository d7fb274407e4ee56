// LEB128-style unsigned varints for compact side information (table headers, lengths).
#pragma once

#include <cstdint>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// Appends value as little-endian base-128 groups (7 bits per byte, high bit = more follows).
inline void put_varint(byte_writer& out, std::uint64_t value) {
    while (value >= 0x80) {
        out.put<std::uint8_t>(static_cast<std::uint8_t>(value | 0x80));
        value >>= 7;
    }
    out.put<std::uint8_t>(static_cast<std::uint8_t>(value));
}

/// Reads a varint written by put_varint; throws format_error if it is truncated, longer than
/// 10 bytes, or its value exceeds max_value.
inline std::uint64_t get_varint(byte_reader& in, std::uint64_t max_value = UINT64_MAX) {
    std::uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        const std::uint8_t byte = in.get<std::uint8_t>();
        const std::uint64_t group = byte & 0x7Fu;
        if (shift == 63 && group > 1) throw format_error("varint overflows 64 bits");
        value |= group << shift;
        if ((byte & 0x80u) == 0) {
            if (value > max_value) throw format_error("varint value out of range");
            return value;
        }
    }
    throw format_error("varint longer than 10 bytes");
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
