// Element types seqkv reads and writes, with their safetensors names and sizes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "seqkv/core/error.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Element type of a tensor. Values are stable: they are written into seqkv containers.
enum class dtype : std::uint8_t {
    bf16 = 1,
    f16 = 2,
    f32 = 3,
    f8_e4m3 = 4,
    f8_e5m2 = 5,
    f64 = 6,
    i8 = 16,
    u8 = 17,
    i16 = 18,
    u16 = 19,
    i32 = 20,
    u32 = 21,
    i64 = 22,
    u64 = 23,
    boolean = 24,
};

struct dtype_info {
    dtype type;
    std::string_view safetensors_name;
    std::size_t size_bytes;
    bool is_float;
};

inline constexpr std::array<dtype_info, 15> dtype_table{{
    {dtype::bf16, "BF16", 2, true},     {dtype::f16, "F16", 2, true},       {dtype::f32, "F32", 4, true},
    {dtype::f8_e4m3, "F8_E4M3", 1, true}, {dtype::f8_e5m2, "F8_E5M2", 1, true}, {dtype::f64, "F64", 8, true},
    {dtype::i8, "I8", 1, false},        {dtype::u8, "U8", 1, false},        {dtype::i16, "I16", 2, false},
    {dtype::u16, "U16", 2, false},      {dtype::i32, "I32", 4, false},      {dtype::u32, "U32", 4, false},
    {dtype::i64, "I64", 8, false},      {dtype::u64, "U64", 8, false},      {dtype::boolean, "BOOL", 1, false},
}};

/// Describes a dtype; throws usage_error for values outside the enum.
constexpr const dtype_info& info(dtype t) {
    for (const auto& d : dtype_table)
        if (d.type == t) return d;
    throw usage_error("unknown dtype value");
}

/// Size of one element in bytes.
constexpr std::size_t dtype_size(dtype t) { return info(t).size_bytes; }

/// The safetensors spelling ("BF16", "F32", ...).
constexpr std::string_view dtype_name(dtype t) { return info(t).safetensors_name; }

/// Parses a safetensors dtype name; nullopt if unknown.
constexpr std::optional<dtype> dtype_from_name(std::string_view name) {
    for (const auto& d : dtype_table)
        if (d.safetensors_name == name) return d.type;
    return std::nullopt;
}

/// Parses a stored dtype byte; nullopt if it names no dtype.
constexpr std::optional<dtype> dtype_from_code(std::uint8_t code) {
    for (const auto& d : dtype_table)
        if (static_cast<std::uint8_t>(d.type) == code) return d.type;
    return std::nullopt;
}

/// True for the float types a KV cache is stored in (bf16, f16, f32, fp8).
constexpr bool is_kv_float(dtype t) {
    return t == dtype::bf16 || t == dtype::f16 || t == dtype::f32 || t == dtype::f8_e4m3 || t == dtype::f8_e5m2;
}

/// Reads element i of a little-endian buffer of KV float type t as fp32 (exact).
inline float load_as_float(const std::uint8_t* data, dtype t, std::size_t i) {
    switch (t) {
        case dtype::bf16: return bf16_to_float(static_cast<std::uint16_t>(data[2 * i] | (data[2 * i + 1] << 8)));
        case dtype::f16: return fp16_to_float(static_cast<std::uint16_t>(data[2 * i] | (data[2 * i + 1] << 8)));
        case dtype::f32: {
            std::uint32_t u = std::uint32_t(data[4 * i]) | (std::uint32_t(data[4 * i + 1]) << 8) |
                              (std::uint32_t(data[4 * i + 2]) << 16) | (std::uint32_t(data[4 * i + 3]) << 24);
            return std::bit_cast<float>(u);
        }
        case dtype::f8_e4m3: return fp8_e4m3_to_float(data[i]);
        case dtype::f8_e5m2: return fp8_e5m2_to_float(data[i]);
        default: throw usage_error("load_as_float: not a KV float dtype");
    }
}

/// Writes fp32 value v as element i of a little-endian buffer of KV float type t (rounding to nearest even).
inline void store_from_float(std::uint8_t* data, dtype t, std::size_t i, float v) {
    switch (t) {
        case dtype::bf16:
        case dtype::f16: {
            std::uint16_t h = t == dtype::bf16 ? float_to_bf16(v) : float_to_fp16(v);
            data[2 * i] = static_cast<std::uint8_t>(h);
            data[2 * i + 1] = static_cast<std::uint8_t>(h >> 8);
            return;
        }
        case dtype::f32: {
            auto u = std::bit_cast<std::uint32_t>(v);
            for (int b = 0; b < 4; ++b) data[4 * i + b] = static_cast<std::uint8_t>(u >> (8 * b));
            return;
        }
        case dtype::f8_e4m3: data[i] = float_to_fp8_e4m3(v); return;
        case dtype::f8_e5m2: data[i] = float_to_fp8_e5m2(v); return;
        default: throw usage_error("store_from_float: not a KV float dtype");
    }
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
