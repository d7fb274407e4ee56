// backend::thread_pool: every task runs exactly once, batches follow each other on one pool,
// the lowest-index exception wins whatever the thread count, and a codec running its blocks on
// the pool writes the same bytes as on one thread. Built twice: in seqkv_test_backend and, under
// ThreadSanitizer, as seqkv_test_backend_tsan (extra.cmake) — data races there fail the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "seqkv/backend/executor.hpp"
#include "seqkv/codec/lossless/codec.hpp"

namespace {

using namespace seqkv;

TEST(ThreadPool, EveryTaskRunsOnceInEveryBatch) {
    for (unsigned threads : {1u, 2u, 3u, 8u}) {
        backend::thread_pool pool(threads);
        for (std::size_t count : {1u, 2u, 7u, 64u, 1000u}) {
            std::vector<int> hits(count, 0);  // each task writes only its own slot
            pool.run(count, [&](std::size_t i) { hits[i] += 1; });
            EXPECT_EQ(std::accumulate(hits.begin(), hits.end(), 0), int(count));
            EXPECT_EQ(*std::min_element(hits.begin(), hits.end()), 1);
        }
    }
}

TEST(ThreadPool, LowestIndexExceptionIsRethrownAtAnyThreadCount) {
    for (unsigned threads : {1u, 2u, 4u}) {
        backend::thread_pool pool(threads);
        for (int trial = 0; trial < 20; ++trial) {
            std::atomic<int> ran{0};
            try {
                pool.run(50, [&](std::size_t i) {
                    ran.fetch_add(1);
                    if (i % 7 == 3) throw std::runtime_error("task " + std::to_string(i));
                });
                FAIL() << "no exception";
            } catch (const std::runtime_error& e) {
                EXPECT_STREQ(e.what(), "task 3");
            }
            EXPECT_GE(ran.load(), 4);  // tasks 0..3 ran (on one thread the batch stops at the throw)
            // The pool is usable after a throwing batch.
            std::vector<std::size_t> out(10);
            pool.run(out.size(), [&](std::size_t i) { out[i] = i * i; });
            EXPECT_EQ(out[9], 81u);
        }
    }
}

TEST(ThreadPool, SharedAtomicCounterAndPoolsCreatedAndDestroyedInLoops) {
    std::atomic<std::uint64_t> sum{0};
    for (int round = 0; round < 30; ++round) {
        backend::thread_pool pool(1 + round % 5);
        pool.run(97, [&](std::size_t i) { sum.fetch_add(i, std::memory_order_relaxed); });
    }
    EXPECT_EQ(sum.load(), 30u * (96u * 97u / 2));
}

TEST(ThreadPool, LosslessCodecBlocksOnThePoolGiveTheSameBytes) {
    kv_layout L{6, 2, 32, 40, dtype::bf16};
    byte_vector kv(L.total_bytes());
    std::uint32_t x = 12345;
    for (std::size_t i = 0; i < kv.size(); i += 2) {
        x = x * 1664525u + 1013904223u;
        const std::uint16_t v = std::uint16_t(0x3c00 + ((x >> 16) & 0x3ff));  // bf16 values near 1
        kv[i] = std::uint8_t(v), kv[i + 1] = std::uint8_t(v >> 8);
    }
    kv_cache_view cache{L, {}, {}};
    const std::size_t block = L.elements_per_tensor() * 2;
    for (std::uint32_t l = 0; l < L.layers; ++l) {
        const auto s = kv_strides::head_major(L.tokens, L.head_dim);
        cache.keys.push_back({kv.data() + 2 * l * block, L.type, L.kv_heads, L.tokens, L.head_dim, s});
        cache.values.push_back({kv.data() + (2 * l + 1) * block, L.type, L.kv_heads, L.tokens, L.head_dim, s});
    }
    const chunk_input in{&cache, 0, L.tokens};
    const lossless_codec<backend::scalar> serial;
    const byte_vector expect = serial.encode(in);
    for (unsigned threads : {2u, 3u, 4u}) {
        const lossless_codec<backend::scalar> pooled({}, std::make_shared<backend::thread_pool>(threads));
        for (int rep = 0; rep < 3; ++rep) {
            EXPECT_EQ(pooled.encode(in), expect);
            chunk_buffer out = chunk_buffer::for_layout(L, L.tokens);
            pooled.decode(expect, in, out);
            EXPECT_EQ(out.bytes, kv);
        }
    }
}

}  // namespace
