// An open-addressing set of 32-bit ids whose keys live elsewhere (in node or record arrays): one
// u32 per slot, linear probing, backward-shift deletion (no tombstones), load at most 1/2. The
// caller hands a hash_of(id) to every call that places or moves entries, and a match(id) to
// lookups, so the table itself holds nothing but ids — 4 bytes a slot, 8 per entry at worst.
//
//   trie::id_table t;
//   t.insert(id, hash_of);                                   // hash_of(id) → std::uint64_t
//   auto id = t.find(hash(key), [&](std::uint32_t i) { return key_of(i) == key; });
//   t.erase(id, hash_of);                                    // id must be present
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::trie {

/// A 64-bit finalizer (murmur3's): spreads keys that differ in few bits over the whole word.
inline constexpr std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

class id_table {
public:
    static constexpr std::uint32_t empty = std::numeric_limits<std::uint32_t>::max();

    std::size_t size() const { return used_; }
    std::size_t memory_bytes() const { return slots_.capacity() * sizeof(std::uint32_t); }
    void clear() {
        slots_.clear();
        slots_.shrink_to_fit();
        used_ = 0;
    }

    template <class HashOf>
    void insert(std::uint32_t id, HashOf&& hash_of) {
        require_usage(id != empty, "id_table: the id reserved for empty slots");
        if ((used_ + 1) * 2 > slots_.size()) resize(std::max<std::size_t>(64, slots_.size() * 2), hash_of);
        place(id, hash_of(id));
    }
    /// Removes id (it must be present; its hash_of must still be what it was at insert).
    template <class HashOf>
    void erase(std::uint32_t id, HashOf&& hash_of) {
        const std::size_t mask = slots_.size() - 1;
        require_usage(!slots_.empty(), "id_table: erase from an empty table");
        std::size_t i = hash_of(id) & mask;
        for (std::size_t probes = 0; slots_[i] != id; i = (i + 1) & mask)
            require_usage(slots_[i] != empty && ++probes <= mask, "id_table: erase of an absent id");
        for (std::size_t j = (i + 1) & mask; slots_[j] != empty; j = (j + 1) & mask) {
            const std::size_t home = hash_of(slots_[j]) & mask;
            if (((j - home) & mask) >= ((j - i) & mask)) slots_[i] = slots_[j], i = j;  // j may move back to i
        }
        slots_[i] = empty;
        --used_;
    }
    /// The first id in hash's probe run for which match(id) holds, or empty.
    template <class Match>
    std::uint32_t find(std::uint64_t hash, Match&& match) const {
        if (slots_.empty()) return empty;
        const std::size_t mask = slots_.size() - 1;
        for (std::size_t i = hash & mask; slots_[i] != empty; i = (i + 1) & mask)
            if (match(slots_[i])) return slots_[i];
        return empty;
    }
    /// Sizes the table for n entries (at least 64 slots, a power of two ≥ 2n; none for n = 0),
    /// re-placing what it holds; compacts after removals.
    template <class HashOf>
    void fit(std::size_t n, HashOf&& hash_of) {
        n = std::max(n, used_);
        resize(n == 0 ? 0 : std::max<std::size_t>(64, std::bit_ceil(n * 2)), hash_of);
    }

private:
    void place(std::uint32_t id, std::uint64_t hash) {
        const std::size_t mask = slots_.size() - 1;
        std::size_t i = hash & mask;
        while (slots_[i] != empty) i = (i + 1) & mask;
        slots_[i] = id;
        ++used_;
    }
    template <class HashOf>
    void resize(std::size_t size, HashOf& hash_of) {
        std::vector<std::uint32_t> old = std::move(slots_);
        slots_.assign(size, empty);
        slots_.shrink_to_fit();
        used_ = 0;
        for (std::uint32_t id : old)
            if (id != empty) place(id, hash_of(id));
    }

    std::vector<std::uint32_t> slots_;
    std::size_t used_ = 0;
};

}  // namespace seqkv::trie

SEQKV_FP_STRICT_END
