// One ChunkStore conformance suite, run identically against every backend: memory, directory,
// a Redis server and a 3-master Redis Cluster (the Redis ones start their own servers; skipped
// with a message when redis-server is not installed or hiredis was not found at configure time).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "seqkv/store/chunk_store.hpp"
#include "seqkv/store/directory_store.hpp"
#if defined(SEQKV_TEST_HAVE_HIREDIS)
#include "seqkv/store/redis_store.hpp"
#endif
#include "store_test_support.hpp"

namespace {

using namespace seqkv;
using store_test::random_bytes;

struct memory_backend {
    using store_type = memory_chunk_store;
    std::string skip_reason;
    std::unique_ptr<store_type> make() { return std::make_unique<store_type>(); }
};

struct directory_backend {
    using store_type = directory_chunk_store;
    std::string skip_reason;
    store_test::temp_dir dir;
    // Without the fsyncs (some 8 ms a put here; DirectoryStore.* run the durable default).
    std::unique_ptr<store_type> make() {
        return std::make_unique<store_type>(dir.path() / "chunks", directory_store_options{.durable = false});
    }
};

#if defined(SEQKV_TEST_HAVE_HIREDIS)
/// A Redis server (Cluster = false) or a 3-master cluster (true) of its own.
template <bool Cluster>
struct redis_backend {
    using store_type = redis_chunk_store;
    std::string skip_reason;
    store_test::temp_dir dir;
    std::unique_ptr<store_test::redis_server> server;
    std::unique_ptr<store_test::redis_cluster> cluster;
    redis_backend() {
        const auto binary = store_test::find_redis_server();
        if (!binary)
            skip_reason = store_test::no_redis_server_message;
        else if (Cluster)
            cluster = std::make_unique<store_test::redis_cluster>(*binary, dir.path());
        else
            server = std::make_unique<store_test::redis_server>(*binary, dir.path(), store_test::redis_server::config{});
    }
    std::unique_ptr<store_type> make() {
        const int port = Cluster ? cluster->node(0).port() : server->port();
        auto s = std::make_unique<store_type>("127.0.0.1", port, "conformance");
        EXPECT_EQ(s->is_cluster(), Cluster);
        return s;
    }
};
using redis_single_backend = redis_backend<false>;
using redis_cluster_backend = redis_backend<true>;
#endif

template <class Backend>
class ChunkStoreConformance : public ::testing::Test {
protected:
    void SetUp() override {
        backend_ = std::make_unique<Backend>();
        if (!backend_->skip_reason.empty()) GTEST_SKIP() << backend_->skip_reason;
        store_ = backend_->make();
    }
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<typename Backend::store_type> store_;
};

#if defined(SEQKV_TEST_HAVE_HIREDIS)
using backends = ::testing::Types<memory_backend, directory_backend, redis_single_backend, redis_cluster_backend>;
#else
using backends = ::testing::Types<memory_backend, directory_backend>;  // RedisStore.NeedsHiredis says why
#endif

class backend_names {
public:
    template <class T>
    static std::string GetName(int) {
        if constexpr (std::is_same_v<T, memory_backend>) return "memory";
        if constexpr (std::is_same_v<T, directory_backend>) return "directory";
#if defined(SEQKV_TEST_HAVE_HIREDIS)
        if constexpr (std::is_same_v<T, redis_single_backend>) return "redis";
        if constexpr (std::is_same_v<T, redis_cluster_backend>) return "redis_cluster";
#endif
        return "unknown";
    }
};
TYPED_TEST_SUITE(ChunkStoreConformance, backends, backend_names);

TYPED_TEST(ChunkStoreConformance, PutGetRoundTrip) {
    auto& store = *this->store_;
    std::vector<byte_vector> chunks;
    for (std::size_t n : {1u, 7u, 8u, 9u, 31u, 32u, 33u, 100u, 4096u, 65537u}) chunks.push_back(random_bytes(n, n));
    for (const auto& c : chunks) store.put(chunk_key(c), c);
    for (const auto& c : chunks) {
        const auto got = store.get(chunk_key(c));
        ASSERT_TRUE(got.has_value()) << c.size();
        EXPECT_EQ(*got, c);
    }
    EXPECT_FALSE(store.get(chunk_key(random_bytes(50, 999))).has_value());
    EXPECT_FALSE(store.contains(chunk_key(random_bytes(50, 999))));
}

TYPED_TEST(ChunkStoreConformance, ContainsAndRemove) {
    auto& store = *this->store_;
    const byte_vector c = random_bytes(1000, 1);
    const std::uint64_t key = chunk_key(c);
    EXPECT_FALSE(store.contains(key));
    store.remove(key);  // absent: fine
    store.put(key, c);
    EXPECT_TRUE(store.contains(key));
    store.remove(key);
    EXPECT_FALSE(store.contains(key));
    EXPECT_FALSE(store.get(key).has_value());
    store.remove(key);
}

TYPED_TEST(ChunkStoreConformance, PutIsIdempotent) {
    auto& store = *this->store_;
    const byte_vector c = random_bytes(5000, 2);
    EXPECT_EQ(put_chunk(store, c), content_hash64(c));
    put_chunk(store, c);
    store.put(chunk_key(c), c);
    ASSERT_TRUE(store.get(chunk_key(c)).has_value());
    EXPECT_EQ(*store.get(chunk_key(c)), c);
    store.remove(chunk_key(c));
    EXPECT_FALSE(store.contains(chunk_key(c)));
}

TYPED_TEST(ChunkStoreConformance, EmptyChunk) {
    auto& store = *this->store_;
    const byte_vector empty;
    const std::uint64_t key = chunk_key(empty);
    EXPECT_FALSE(store.get(key).has_value());
    store.put(key, empty);
    EXPECT_TRUE(store.contains(key));
    const auto got = store.get(key);
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(got->empty());
}

TYPED_TEST(ChunkStoreConformance, LargeChunk) {
    auto& store = *this->store_;
    const byte_vector c = random_bytes(8u << 20, 3);
    store.put(chunk_key(c), c);
    const auto got = store.get(chunk_key(c));
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(*got == c);
}

TYPED_TEST(ChunkStoreConformance, ManyKeys) {
    auto& store = *this->store_;
    std::vector<byte_vector> chunks;
    for (std::size_t i = 0; i < 1000; ++i) chunks.push_back(random_bytes(64 + i % 300, 1000 + i));
    for (const auto& c : chunks) store.put(chunk_key(c), c);
    for (std::size_t i = 0; i < chunks.size(); i += 2) store.remove(chunk_key(chunks[i]));
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        const auto got = store.get(chunk_key(chunks[i]));
        if (i % 2 == 0) {
            EXPECT_FALSE(got.has_value()) << i;
        } else {
            ASSERT_TRUE(got.has_value()) << i;
            EXPECT_EQ(*got, chunks[i]) << i;
        }
    }
}

TYPED_TEST(ChunkStoreConformance, WrongKeyRejected) {
    auto& store = *this->store_;
    const byte_vector c = random_bytes(300, 4);
    const std::uint64_t key = chunk_key(c);
    EXPECT_THROW(store.put(key ^ 1, c), usage_error);
    EXPECT_THROW(store.put(key, random_bytes(300, 5)), usage_error);
    EXPECT_FALSE(store.contains(key));
    EXPECT_FALSE(store.contains(key ^ 1));
}

TYPED_TEST(ChunkStoreConformance, ConcurrentPutsAndGets) {
    auto& store = *this->store_;
    constexpr int threads = 4, own = 100, shared = 30;
    std::vector<byte_vector> shared_chunks;
    for (int i = 0; i < shared; ++i) shared_chunks.push_back(random_bytes(200 + 37 * i, 7000 + i));
    std::atomic<int> failures{0};
    std::vector<std::string> errors(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            try {
                std::vector<byte_vector> mine;
                for (int i = 0; i < own; ++i) mine.push_back(random_bytes(16 + (i * 53) % 3000, 100000 * (t + 1) + i));
                for (int i = 0; i < own; ++i) {
                    store.put(chunk_key(mine[i]), mine[i]);
                    const auto& s = shared_chunks[(i + t) % shared];
                    store.put(chunk_key(s), s);
                    const auto got = store.get(chunk_key(s));
                    if (!got || *got != s) ++failures;
                }
                for (int i = 0; i < own; ++i) {
                    const auto got = store.get(chunk_key(mine[i]));
                    if (!got || *got != mine[i]) ++failures;
                    if (i % 3 == 0) store.remove(chunk_key(mine[i]));
                }
                for (int i = 0; i < own; i += 3)
                    if (store.contains(chunk_key(mine[i]))) ++failures;
            } catch (const std::exception& e) {
                errors[t] = e.what();
                ++failures;
            }
        });
    }
    for (auto& th : pool) th.join();
    for (int t = 0; t < threads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_EQ(failures.load(), 0);
    for (const auto& s : shared_chunks) {
        const auto got = store.get(chunk_key(s));
        ASSERT_TRUE(got.has_value());
        EXPECT_EQ(*got, s);
    }
}

}  // namespace
