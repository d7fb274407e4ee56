// Little-endian byte serialization with bounds checks on every read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

using byte_vector = std::vector<std::uint8_t>;

/// Appends little-endian integers and raw bytes to a growing buffer.
class byte_writer {
public:
    explicit byte_writer(byte_vector& out) : out_(&out) {}

    /// Appends the value's bytes, least significant first.
    template <class T>
        requires std::is_integral_v<T>
    void put(T value) {
        using U = std::make_unsigned_t<T>;
        U u = static_cast<U>(value);
        for (std::size_t i = 0; i < sizeof(T); ++i) out_->push_back(static_cast<std::uint8_t>(u >> (8 * i)));
    }
    /// Appends raw bytes.
    void put_bytes(std::span<const std::uint8_t> bytes) { out_->insert(out_->end(), bytes.begin(), bytes.end()); }
    /// Appends a u32 length followed by the string's bytes.
    void put_string(std::string_view s) {
        put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
        out_->insert(out_->end(), s.begin(), s.end());
    }
    /// Number of bytes in the underlying buffer.
    std::size_t size() const { return out_->size(); }

private:
    byte_vector* out_;
};

/// Reads little-endian values from a span; any read past the end throws format_error.
class byte_reader {
public:
    explicit byte_reader(std::span<const std::uint8_t> bytes, const char* what = "stream")
        : data_(bytes), what_(what) {}

    /// Reads one little-endian integer.
    template <class T>
        requires std::is_integral_v<T>
    T get() {
        need(sizeof(T));
        using U = std::make_unsigned_t<T>;
        U u = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) u |= static_cast<U>(static_cast<U>(data_[pos_ + i]) << (8 * i));
        pos_ += sizeof(T);
        return static_cast<T>(u);
    }
    /// Returns a view of the next n bytes and advances past them.
    std::span<const std::uint8_t> get_bytes(std::size_t n) {
        need(n);
        auto s = data_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    /// Reads a u32-length-prefixed string of at most max_len bytes.
    std::string get_string(std::size_t max_len = 1u << 20) {
        auto n = get<std::uint32_t>();
        if (n > max_len) throw limit_error(std::string(what_) + ": string length " + std::to_string(n));
        auto b = get_bytes(n);
        return std::string(b.begin(), b.end());
    }
    std::size_t position() const { return pos_; }
    std::size_t remaining() const { return data_.size() - pos_; }
    bool at_end() const { return pos_ == data_.size(); }

private:
    void need(std::size_t n) const {
        if (n > data_.size() - pos_)
            throw format_error(std::string(what_) + " truncated: need " + std::to_string(n) + " bytes at offset " +
                               std::to_string(pos_) + ", have " + std::to_string(data_.size() - pos_));
    }
    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;
    const char* what_;
};

/// Loads a little-endian u32 from p (caller guarantees 4 readable bytes).
inline std::uint32_t load_le32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}
/// Loads a little-endian u16 from p (caller guarantees 2 readable bytes).
inline std::uint16_t load_le16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }

}  // namespace seqkv

SEQKV_FP_STRICT_END
