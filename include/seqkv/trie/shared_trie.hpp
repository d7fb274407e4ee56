// Many readers, one writer: a plt_trie behind a reader-writer lock.
//
// The model: every const member of plt_trie only reads (no memo, no statistics written on a
// lookup), so any number of threads may run queries at once; an update (insert, split, remove,
// set_value, acquire/release, pin) takes the lock exclusively and waits for running readers; a
// waiting writer keeps new readers out (writer_priority_mutex), so lookups never starve an insert.
// Node ids a reader obtained stay valid until a writer removes that node: hold a reference
// (acquire, under write) across lock scopes for anything that must survive eviction.
//
//   trie::shared_trie index;
//   index.write([&](trie::plt_trie& t) { t.insert(tokens, nll); });
//   auto hit = index.read([&](const trie::plt_trie& t) { return t.longest_prefix(query); });
#pragma once

#include <mutex>
#include <shared_mutex>
#include <utility>

#include "seqkv/core/sync.hpp"
#include "seqkv/trie/plt_trie.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::trie {

class shared_trie {
public:
    explicit shared_trie(plt_trie t = plt_trie{}) : trie_(std::move(t)) {}

    /// Runs f(const plt_trie&) under a shared lock (concurrently with other readers).
    template <class F>
    decltype(auto) read(F&& f) const {
        std::shared_lock lock(mutex_);
        return std::forward<F>(f)(std::as_const(trie_));
    }
    /// Runs f(plt_trie&) under the exclusive lock.
    template <class F>
    decltype(auto) write(F&& f) {
        std::unique_lock lock(mutex_);
        return std::forward<F>(f)(trie_);
    }

private:
    mutable writer_priority_mutex mutex_;  // a waiting writer is not starved by a stream of readers
    plt_trie trie_;
};

}  // namespace seqkv::trie

SEQKV_FP_STRICT_END
