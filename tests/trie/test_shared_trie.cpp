// Many readers and one writer on a shared_trie (also built with -fsanitize=thread as
// seqkv_test_trie_tsan where the compiler supports it).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "seqkv/trie/shared_trie.hpp"

using namespace seqkv;

TEST(SharedTrie, ReadersAlwaysSeePinnedSequencesWhileAWriterInsertsAndEvicts) {
    trie::shared_trie index;
    // A pinned base set that must be found at full depth by every read, whatever the writer does.
    std::vector<std::vector<std::int32_t>> base;
    for (int i = 0; i < 8; ++i) {
        std::vector<std::int32_t> s(64);
        for (int j = 0; j < 64; ++j) s[std::size_t(j)] = (i * 64 + j) % 97;
        base.push_back(s);
        index.write([&](trie::plt_trie& t) { t.pin(t.insert(s), true); });
    }
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> reads{0}, misses{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r)
        readers.emplace_back([&, r] {
            std::mt19937 rng{static_cast<std::uint32_t>(r)};
            while (!stop.load(std::memory_order_relaxed)) {
                const auto& s = base[rng() % base.size()];
                const auto depth = index.read([&](const trie::plt_trie& t) { return t.longest_prefix(s).depth; });
                if (depth != s.size()) misses.fetch_add(1);
                reads.fetch_add(1);
            }
        });
#ifdef SEQKV_TSAN
    constexpr int steps = 200;  // ThreadSanitizer runs ~100x slower; races show in few steps
#else
    constexpr int steps = 3000;
#endif
    std::mt19937 rng(99);
    for (int step = 0; step < steps; ++step) {
        std::vector<std::int32_t> s = base[rng() % base.size()];
        s.resize(rng() % s.size());
        for (int j = 0; j < 20; ++j) s.push_back(std::int32_t(rng() % 97));
        index.write([&](trie::plt_trie& t) {
            const auto n = t.insert(s);
            if (rng() % 2 && t.removable(n)) t.remove_leaf(n);
        });
    }
    while (reads.load() < 300) std::this_thread::yield();
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(misses.load(), 0u);
}
