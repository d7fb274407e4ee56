// ChunkStore: content-addressed storage of encoded chunk payloads (docs/STORE.md).
//
// A chunk is a byte string; its key is content_hash64(bytes) (core/hash.hpp), the same hash an
// external-payload chunk record names (docs/FORMAT.md). A model S of ChunkStore provides:
//
//   void put(std::uint64_t key, std::span<const std::uint8_t> bytes)
//       Stores bytes under key. Idempotent: putting the same chunk again is a no-op in effect
//       (it may rewrite it, which also repairs a corrupt copy). key != content_hash64(bytes) ->
//       usage_error, nothing stored. Atomic: a reader sees the whole chunk or none of it, also
//       when the writer dies half way.
//   std::optional<byte_vector> get(std::uint64_t key)
//       The chunk's bytes, or nullopt when no chunk is stored under key. Never returns bytes
//       that do not hash to key: a corrupt stored chunk -> checksum_error (or format_error /
//       limit_error when its framing or claimed size is bad), all seqkv::error.
//   bool contains(std::uint64_t key)
//       Whether a chunk is stored under key (cheap: the bytes are not read or verified).
//   void remove(std::uint64_t key)
//       Removes the chunk; an absent key is fine.
//
// Every model is safe to call from several threads at once. Backend failures (server down
// after the bounded retries, I/O errors) throw store_error / io_error; no operation ever
// returns wrong bytes. Models: memory_chunk_store (below), directory_chunk_store
// (store/directory_store.hpp), redis_chunk_store (store/redis_store.hpp, needs hiredis).
#pragma once

#include <algorithm>
#include <concepts>
#include <iterator>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/hash.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// A content-addressed chunk store (contract in the header comment above).
template <class S>
concept ChunkStore = requires(S& s, std::uint64_t key, std::span<const std::uint8_t> bytes) {
    { s.put(key, bytes) } -> std::same_as<void>;
    { s.get(key) } -> std::same_as<std::optional<byte_vector>>;
    { s.contains(key) } -> std::same_as<bool>;
    { s.remove(key) } -> std::same_as<void>;
};

/// The key a chunk is stored under: content_hash64 of its bytes.
inline std::uint64_t chunk_key(std::span<const std::uint8_t> bytes) { return content_hash64(bytes); }

/// A key as 16 lowercase hex digits, most significant first (file and Redis key names).
inline std::string chunk_key_hex(std::uint64_t key) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, key >>= 4) s[static_cast<std::size_t>(i)] = digits[key & 0xf];
    return s;
}

/// Stores bytes under their own key and returns it.
template <ChunkStore S>
std::uint64_t put_chunk(S& store, std::span<const std::uint8_t> bytes) {
    const std::uint64_t key = chunk_key(bytes);
    store.put(key, bytes);
    return key;
}

namespace detail {
/// put's precondition: usage_error unless key == content_hash64(bytes).
inline void check_chunk_key(std::uint64_t key, std::span<const std::uint8_t> bytes, const char* store) {
    const std::uint64_t actual = chunk_key(bytes);
    if (actual != key)
        throw usage_error(std::string(store) + ": put under key " + chunk_key_hex(key) + " of a chunk whose hash is " +
                          chunk_key_hex(actual));
}
/// get's guarantee: checksum_error unless the bytes read back hash to key.
inline void verify_chunk(std::uint64_t key, std::span<const std::uint8_t> bytes, const std::string& where) {
    if (chunk_key(bytes) != key)
        throw checksum_error(where + ": chunk " + chunk_key_hex(key) + " is corrupt (its " +
                             std::to_string(bytes.size()) + " bytes do not hash to its key)");
}

/// The 32-byte header in front of a stored chunk's bytes (directory files, Redis values), all
/// little-endian: 0 magic "SKVC", 4 u32 version (1), 8 u64 key, 16 u64 payload length,
/// 24 u32 reserved (0), 28 u32 CRC-32C of bytes 0..27.
inline constexpr std::size_t chunk_frame_header_bytes = 32;
inline constexpr std::uint32_t chunk_frame_version = 1;
inline constexpr std::uint8_t chunk_frame_magic[4] = {'S', 'K', 'V', 'C'};

inline byte_vector chunk_frame_header(std::uint64_t key, std::uint64_t length) {
    byte_vector h;
    h.reserve(chunk_frame_header_bytes);
    byte_writer w(h);
    w.put_bytes(chunk_frame_magic);
    w.put<std::uint32_t>(chunk_frame_version);
    w.put<std::uint64_t>(key);
    w.put<std::uint64_t>(length);
    w.put<std::uint32_t>(0);
    w.put<std::uint32_t>(crc32c(h));
    return h;
}

/// Checks a stored chunk's header (at least chunk_frame_header_bytes) against the key it was
/// fetched under; returns the payload length it claims. format_error / checksum_error otherwise.
inline std::uint64_t check_chunk_frame_header(std::span<const std::uint8_t> h, std::uint64_t key,
                                              const std::string& where) {
    if (h.size() < chunk_frame_header_bytes)
        throw format_error(where + ": truncated (" + std::to_string(h.size()) + " bytes, the header needs " +
                           std::to_string(chunk_frame_header_bytes) + ")");
    if (!std::equal(h.begin(), h.begin() + 4, std::begin(chunk_frame_magic)))
        throw format_error(where + ": not a seqkv chunk (bad magic)");
    if (crc32c(h.first(28)) != load_le32(h.data() + 28)) throw checksum_error(where + ": chunk header CRC-32C");
    byte_reader r(h.subspan(4, 24), "chunk header");
    const auto version = r.get<std::uint32_t>();
    if (version != chunk_frame_version)
        throw format_error(where + ": unsupported chunk header version " + std::to_string(version));
    const auto stored_key = r.get<std::uint64_t>();
    if (stored_key != key)
        throw format_error(where + ": the header names chunk " + chunk_key_hex(stored_key) + ", not " +
                           chunk_key_hex(key));
    return r.get<std::uint64_t>();
}
}  // namespace detail

/// In-process ChunkStore: a hash map under a mutex. Chunks live as long as the store.
class memory_chunk_store {
public:
    void put(std::uint64_t key, std::span<const std::uint8_t> bytes) {
        detail::check_chunk_key(key, bytes, "memory_chunk_store");
        byte_vector copy(bytes.begin(), bytes.end());
        std::lock_guard lock(mutex_);
        auto [it, inserted] = chunks_.try_emplace(key);
        if (!inserted) return;
        it->second = std::move(copy);
        stored_bytes_ += it->second.size();
    }
    std::optional<byte_vector> get(std::uint64_t key) const {
        std::lock_guard lock(mutex_);
        auto it = chunks_.find(key);
        if (it == chunks_.end()) return std::nullopt;
        return it->second;
    }
    bool contains(std::uint64_t key) const {
        std::lock_guard lock(mutex_);
        return chunks_.contains(key);
    }
    void remove(std::uint64_t key) {
        std::lock_guard lock(mutex_);
        auto it = chunks_.find(key);
        if (it == chunks_.end()) return;
        stored_bytes_ -= it->second.size();
        chunks_.erase(it);
    }
    /// Number of chunks stored.
    std::size_t chunk_count() const {
        std::lock_guard lock(mutex_);
        return chunks_.size();
    }
    /// Sum of the stored chunks' sizes in bytes.
    std::uint64_t stored_bytes() const {
        std::lock_guard lock(mutex_);
        return stored_bytes_;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, byte_vector> chunks_;
    std::uint64_t stored_bytes_ = 0;
};
static_assert(ChunkStore<memory_chunk_store>);

}  // namespace seqkv

SEQKV_FP_STRICT_END
