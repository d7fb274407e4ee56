// seqkv error family: every failure the library reports derives from seqkv::error.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

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

/// Throws format_error(message) unless condition holds; for validating untrusted input.
inline void require_format(bool condition, const char* message) {
    if (!condition) throw format_error(message);
}

/// Throws usage_error(message) unless condition holds; for validating caller arguments.
inline void require_usage(bool condition, const char* message) {
    if (!condition) throw usage_error(message);
}

}  // namespace seqkv
