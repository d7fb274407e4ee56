// seqkv error family: every failure the library reports derives from seqkv::error.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Base of every exception seqkv throws; what() is a human-readable message.
class error : public std::runtime_error {
public:
    explicit error(const std::string& message) : std::runtime_error("seqkv: " + message) {}
};

/// Input bytes are malformed: truncated, corrupted, inconsistent or hostile.
class format_error : public error {
public:
    explicit format_error(const std::string& message) : error("format error: " + message) {}
};

/// A checksum did not match the data it protects.
class checksum_error : public format_error {
public:
    explicit checksum_error(const std::string& message) : format_error("checksum mismatch: " + message) {}
};

/// A size, count or shape exceeds a documented limit (checked before allocating).
class limit_error : public format_error {
public:
    explicit limit_error(const std::string& message) : format_error("limit exceeded: " + message) {}
};

/// A caller passed arguments that violate an API contract (shape mismatch, bad option).
class usage_error : public error {
public:
    explicit usage_error(const std::string& message) : error("usage error: " + message) {}
};

/// An operating-system level I/O failure (open, read, write).
class io_error : public error {
public:
    explicit io_error(const std::string& message) : error("I/O error: " + message) {}
};

/// A resource the file names (expected-KV table, weights, external chunk payload) is missing
/// from the caller's provider, or the object supplied does not match its content hash.
class resource_error : public error {
public:
    explicit resource_error(const std::string& message) : error("resource error: " + message) {}
};

/// A chunk store's backend failed: a server unreachable after the bounded retries, an error reply,
/// a cluster that cannot be mapped. (A corrupt stored chunk is a checksum_error / format_error.)
class store_error : public error {
public:
    explicit store_error(const std::string& message) : error("store error: " + message) {}
};

namespace detail {
// Out of line and cold, so the checks below inline into hot loops as one test and branch.
[[noreturn, gnu::noinline, gnu::cold]] inline void throw_format(const char* message) { throw format_error(message); }
[[noreturn, gnu::noinline, gnu::cold]] inline void throw_usage(const char* message) { throw usage_error(message); }
}  // namespace detail

/// Throws format_error(message) unless condition holds; for validating untrusted input.
inline void require_format(bool condition, const char* message) {
    if (!condition) [[unlikely]] detail::throw_format(message);
}

/// Throws usage_error(message) unless condition holds; for validating caller arguments.
inline void require_usage(bool condition, const char* message) {
    if (!condition) [[unlikely]] detail::throw_usage(message);
}

/// An error's message without the prefixes its classes add ("seqkv: ", then "format error: ",
/// "checksum mismatch: ", "limit exceeded: ", "usage error: ", ...): the reason it was built with.
inline std::string reason_of(const std::exception& e) {
    std::string why = e.what();
    for (const char* prefix : {"seqkv: ", "format error: ", "checksum mismatch: ", "limit exceeded: ", "usage error: ",
                               "I/O error: ", "resource error: ", "store error: "})
        if (why.starts_with(prefix)) why.erase(0, std::char_traits<char>::length(prefix));
    return why;
}

/// Throws e again with `context` before its reason, keeping its type (limit_error, checksum_error or
/// format_error) and without a second "seqkv: format error: ".
[[noreturn]] inline void rethrow_in_context(const format_error& e, const std::string& context) {
    const std::string message = context + reason_of(e);
    if (dynamic_cast<const limit_error*>(&e)) throw limit_error(message);
    if (dynamic_cast<const checksum_error*>(&e)) throw checksum_error(message);
    throw format_error(message);
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
