// Reader for NumPy .npy files (format versions 1-3, C order, little-endian or byte-sized
// elements). The header's length, dict, dtype and shape are validated against the file size
// before any data is touched. Standard library only.
#pragma once

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/file_io.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// A parsed .npy array that owns its bytes.
struct npy_array {
    dtype type = dtype::u8;
    std::vector<std::uint64_t> shape;
    byte_vector bytes;  // C-order little-endian elements
};

namespace detail {

inline std::string_view npy_field(std::string_view header, std::string_view key) {
    const std::string quoted = "'" + std::string(key) + "'";
    const auto k = header.find(quoted);
    if (k == std::string_view::npos) throw format_error("npy: header has no '" + std::string(key) + "'");
    auto rest = header.substr(k + quoted.size());
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) throw format_error("npy: malformed header");
    rest = rest.substr(colon + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    return rest;
}

inline dtype npy_dtype(std::string_view descr) {
    struct entry {
        std::string_view name;
        dtype type;
    };
    static constexpr entry table[] = {
        {"<f2", dtype::f16}, {"<f4", dtype::f32}, {"<f8", dtype::f64}, {"|i1", dtype::i8},  {"|u1", dtype::u8},
        {"<i2", dtype::i16}, {"<u2", dtype::u16}, {"<i4", dtype::i32}, {"<u4", dtype::u32}, {"<i8", dtype::i64},
        {"<u8", dtype::u64}, {"|b1", dtype::boolean}, {"|V2", dtype::bf16}, {"<V2", dtype::bf16},  // ml_dtypes bfloat16
    };
    for (const auto& e : table)
        if (e.name == descr) return e.type;
    throw format_error("npy: unsupported dtype '" + std::string(descr) + "'");
}

}  // namespace detail

/// Parses a whole .npy image; throws format_error / limit_error on anything malformed.
inline npy_array parse_npy(std::span<const std::uint8_t> file) {
    byte_reader r(file, "npy");
    const auto magic = r.get_bytes(6);
    static constexpr std::uint8_t expected[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (!std::equal(magic.begin(), magic.end(), expected)) throw format_error("npy: bad magic");
    const auto major = r.get<std::uint8_t>();
    r.get<std::uint8_t>();
    if (major < 1 || major > 3) throw format_error("npy: unsupported version " + std::to_string(major));
    const std::uint32_t header_len = major == 1 ? r.get<std::uint16_t>() : r.get<std::uint32_t>();
    if (header_len > (1u << 20)) throw limit_error("npy: header length " + std::to_string(header_len));
    const auto hb = r.get_bytes(header_len);
    const std::string header(hb.begin(), hb.end());

    auto descr = detail::npy_field(header, "descr");
    if (descr.empty() || descr.front() != '\'') throw format_error("npy: descr is not a string");
    descr.remove_prefix(1);
    descr = descr.substr(0, descr.find('\''));
    npy_array a;
    a.type = detail::npy_dtype(descr);
    if (!detail::npy_field(header, "fortran_order").starts_with("False"))
        throw format_error("npy: Fortran-order arrays are not supported");
    auto shape = detail::npy_field(header, "shape");
    if (shape.empty() || shape.front() != '(') throw format_error("npy: shape is not a tuple");
    shape = shape.substr(1, shape.find(')') == std::string_view::npos ? 0 : shape.find(')') - 1);
    std::uint64_t bytes = dtype_size(a.type);
    std::size_t i = 0;
    while (i < shape.size()) {
        while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
        if (i == shape.size()) break;
        if (!std::isdigit(static_cast<unsigned char>(shape[i]))) throw format_error("npy: shape entries must be integers");
        std::uint64_t d = 0;
        while (i < shape.size() && std::isdigit(static_cast<unsigned char>(shape[i]))) {
            if (d > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) throw limit_error("npy: dimension overflows");
            d = d * 10 + std::uint64_t(shape[i++] - '0');
        }
        if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / d) throw limit_error("npy: shape overflows");
        bytes *= d;
        a.shape.push_back(d);
        if (a.shape.size() > 16) throw limit_error("npy: rank > 16");
    }
    if (bytes != r.remaining())
        throw format_error("npy: data is " + std::to_string(r.remaining()) + " bytes, shape and dtype need " + std::to_string(bytes));
    const auto data = r.get_bytes(bytes);
    a.bytes.assign(data.begin(), data.end());
    return a;
}

/// Reads and parses a .npy file.
inline npy_array load_npy(const std::filesystem::path& path) { return parse_npy(read_file(path)); }

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
