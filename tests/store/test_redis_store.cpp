// redis_chunk_store beyond the conformance suite: key scheme and slots, sharing, corruption in
// the server, servers killed / paused / restarted around puts and gets, and the cluster's MOVED
// and ASK redirects during a slot migration. Every test starts its own redis-server processes
// (store_test_support.hpp) and is skipped with a message when redis-server is not installed.
#include <gtest/gtest.h>

#if defined(SEQKV_TEST_HAVE_HIREDIS)

#include <chrono>
#include <future>
#include <thread>

#include "seqkv/store/redis_store.hpp"
#include "store_test_support.hpp"

namespace {

using namespace seqkv;
using namespace std::chrono_literals;
using store_test::command;
using store_test::fast_redis_options;
using store_test::random_bytes;
using store_test::reply_text;

std::string as_string(const byte_vector& b) { return std::string(b.begin(), b.end()); }

TEST(RedisKeySlot, KnownAnswers) {
    EXPECT_EQ(redis_key_slot("123456789"), 0x31C3 & 16383);  // CRC16-XMODEM check value 0x31C3
    EXPECT_EQ(redis_key_slot("foo"), 12182);
    EXPECT_EQ(redis_key_slot("{user1000}.following"), redis_key_slot("{user1000}.followers"));
    EXPECT_EQ(redis_key_slot("{user1000}.following"), redis_key_slot("user1000"));
    EXPECT_EQ(redis_key_slot("foo{}{bar}"), redis_key_slot(std::string_view("foo{}{bar}")));  // empty tag: whole key
    EXPECT_NE(redis_key_slot("foo{}{bar}"), redis_key_slot("bar"));
    EXPECT_EQ(redis_key_slot("foo{{bar}}zap"), redis_key_slot("{bar"));
    EXPECT_EQ(redis_key_slot("foo{bar}{zap}"), redis_key_slot("bar"));
}

TEST(RedisStore, UnreachableServerIsStoreError) {
    const int port = store_test::pick_port();  // free: nobody listens there
    redis_store_options o = fast_redis_options();
    o.max_attempts = 3;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(redis_chunk_store("127.0.0.1", port, "x", o), store_error);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

class RedisSingle : public ::testing::Test {
protected:
    void SetUp() override {
        const auto binary = store_test::find_redis_server();
        if (!binary) GTEST_SKIP() << store_test::no_redis_server_message;
        server = std::make_unique<store_test::redis_server>(*binary, tmp.path(), config());
    }
    virtual store_test::redis_server::config config() const { return {}; }
    redis_chunk_store make(std::string ns = "test", redis_store_options o = fast_redis_options()) {
        return redis_chunk_store("127.0.0.1", server->port(), std::move(ns), std::move(o));
    }
    store_test::temp_dir tmp;
    std::unique_ptr<store_test::redis_server> server;
};

TEST_F(RedisSingle, KeySchemeAndValueFraming) {
    auto store = make("tenant-a.v1");
    EXPECT_EQ(store.key_name(0x0123456789abcdefull), "seqkv:tenant-a.v1:c:{0123456789abcdef}");
    const byte_vector c = random_bytes(777, 1);
    store.put(chunk_key(c), c);
    const auto value = command(server->port(), {"GET", store.key_name(chunk_key(c))});
    ASSERT_EQ(value->type, REDIS_REPLY_STRING);
    ASSERT_EQ(value->len, 32 + c.size());
    const std::string v = reply_text(value);
    EXPECT_EQ(v.substr(0, 4), "SKVC");
    EXPECT_EQ(v.substr(32), as_string(c));
    for (const char* bad : {"", "a b", "x{y}", "a:b", "ümlaut"})
        EXPECT_THROW(make(bad), usage_error) << bad;
    EXPECT_THROW(make(std::string(65, 'n')), usage_error);
}

TEST_F(RedisSingle, NamespacesAreSeparate) {
    auto a = make("a"), b = make("b");
    const byte_vector c = random_bytes(100, 2);
    a.put(chunk_key(c), c);
    EXPECT_TRUE(a.contains(chunk_key(c)));
    EXPECT_FALSE(b.contains(chunk_key(c)));
    EXPECT_FALSE(b.get(chunk_key(c)).has_value());
    b.remove(chunk_key(c));
    EXPECT_TRUE(a.contains(chunk_key(c)));
}

TEST_F(RedisSingle, TwoEngineHostsShareOneStore) {
    auto host1 = make("shared"), host2 = make("shared");
    const byte_vector c = random_bytes(4096, 3);
    host1.put(chunk_key(c), c);
    EXPECT_EQ(host2.get(chunk_key(c)), c);
    host2.put(chunk_key(c), c);  // the same chunk again from the other host: no harm
    host2.remove(chunk_key(c));
    EXPECT_FALSE(host1.contains(chunk_key(c)));
}

TEST_F(RedisSingle, CorruptValuesAreNeverReturned) {
    auto store = make();
    const byte_vector c = random_bytes(2000, 4);
    const std::uint64_t key = chunk_key(c);
    const std::string name = store.key_name(key);
    store.put(key, c);
    const std::string good = reply_text(command(server->port(), {"GET", name}));
    auto overwrite = [&](const std::string& v) { command(server->port(), {"SET", name, v}); };

    std::string flipped = good;
    flipped[32 + 1000] ^= 0x04;
    overwrite(flipped);
    EXPECT_THROW(store.get(key), checksum_error);

    overwrite(good.substr(0, good.size() - 1));  // truncated
    EXPECT_THROW(store.get(key), format_error);
    overwrite(good.substr(0, 20));  // not even a header
    EXPECT_THROW(store.get(key), format_error);
    overwrite("hello, I am not a chunk, but long enough to have a header");
    EXPECT_THROW(store.get(key), format_error);

    const byte_vector other = random_bytes(2000, 5);  // a valid value of another chunk
    store.put(chunk_key(other), other);
    overwrite(reply_text(command(server->port(), {"GET", store.key_name(chunk_key(other))})));
    EXPECT_THROW(store.get(key), format_error);

    std::string flipped_header = good;
    flipped_header[20] ^= 0x01;  // the length field; the header CRC catches it
    overwrite(flipped_header);
    EXPECT_THROW(store.get(key), checksum_error);

    command(server->port(), {"DEL", name});
    command(server->port(), {"RPUSH", name, "x"});  // wrong type
    EXPECT_THROW(store.get(key), store_error);
    command(server->port(), {"DEL", name});

    store.put(key, c);  // put repairs
    EXPECT_EQ(store.get(key), c);
}

TEST_F(RedisSingle, AbsurdSizesAreRejected) {
    redis_store_options o = fast_redis_options();
    o.max_chunk_bytes = 1 << 20;
    auto store = make("test", o);
    const byte_vector big = random_bytes(2 << 20, 6);
    EXPECT_THROW(store.put(chunk_key(big), big), limit_error);
    EXPECT_FALSE(store.contains(chunk_key(big)));
    // A 2 MiB value planted under the key (by another writer with a larger limit): refused, and
    // GETRANGE never transfers more than header + limit + 1 bytes.
    auto roomy = make("test");
    roomy.put(chunk_key(big), big);
    EXPECT_THROW(store.get(chunk_key(big)), limit_error);
    EXPECT_TRUE(roomy.get(chunk_key(big)) == big);
}

TEST_F(RedisSingle, PartialWriteIsNeverVisible) {
    // A client that dies in the middle of its SET: Redis applies a command only once it has read
    // all of it, so nothing of the chunk becomes visible.
    auto store = make();
    const byte_vector c = random_bytes(1 << 20, 7);
    const std::uint64_t key = chunk_key(c);
    byte_vector value = detail::chunk_frame_header(key, c.size());
    value.insert(value.end(), c.begin(), c.end());
    const std::string name = store.key_name(key);
    const std::string cmd = "*3\r\n$3\r\nSET\r\n$" + std::to_string(name.size()) + "\r\n" + name + "\r\n$" +
                            std::to_string(value.size()) + "\r\n" + as_string(value) + "\r\n";
    for (std::size_t cut : {cmd.size() / 2, cmd.size() - 2, std::size_t(40)}) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(server->port()));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        std::size_t sent = 0;
        while (sent < cut) {
            const ssize_t n = ::send(fd, cmd.data() + sent, cut - sent, MSG_NOSIGNAL);
            ASSERT_GT(n, 0);
            sent += static_cast<std::size_t>(n);
        }
        ::close(fd);
        std::this_thread::sleep_for(50ms);
        EXPECT_FALSE(store.contains(key)) << cut;
        EXPECT_FALSE(store.get(key).has_value()) << cut;
    }
}

TEST_F(RedisSingle, ServerKilledDuringPut) {
    auto store = make();
    const byte_vector c = random_bytes(8 << 20, 8);
    server->pause();  // the put hangs in the middle of sending its 8 MiB
    auto put = std::async(std::launch::async, [&] { store.put(chunk_key(c), c); });
    std::this_thread::sleep_for(300ms);
    server->kill();
    server->restart();
    bool stored = false;
    try {
        put.get();
        stored = true;  // retried on the restarted server
    } catch (const store_error& e) {
        SUCCEED() << "put reported: " << e.what();
    }
    const auto got = store.get(chunk_key(c));
    if (stored) {
        ASSERT_TRUE(got.has_value());
        EXPECT_TRUE(*got == c);
    } else if (got) {
        EXPECT_TRUE(*got == c);
    }
    EXPECT_GE(store.stats().retries, 1u);
}

TEST_F(RedisSingle, ServerDownPutFailsClearly) {
    redis_store_options o = fast_redis_options();
    o.max_attempts = 3;
    auto store = make("test", o);
    server->kill();
    const byte_vector c = random_bytes(1000, 9);
    const auto start = std::chrono::steady_clock::now();
    try {
        store.put(chunk_key(c), c);
        FAIL() << "put succeeded with the server down";
    } catch (const store_error& e) {
        EXPECT_NE(std::string(e.what()).find("failed after 3 tries"), std::string::npos) << e.what();
    }
    EXPECT_THROW(store.get(chunk_key(c)), store_error);
    EXPECT_THROW(store.contains(chunk_key(c)), store_error);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
    server->restart();  // and it recovers once the server is back
    store.put(chunk_key(c), c);
    EXPECT_EQ(store.get(chunk_key(c)), c);
}

TEST_F(RedisSingle, ClientConnectionsKilledBetweenOperations) {
    auto store = make();
    const byte_vector a = random_bytes(1000, 10), b = random_bytes(4 << 20, 11);
    store.put(chunk_key(a), a);
    const auto before = store.stats();
    auto killed = command(server->port(), {"CLIENT", "KILL", "TYPE", "normal"});
    ASSERT_EQ(killed->type, REDIS_REPLY_INTEGER);
    EXPECT_GE(killed->integer, 1);
    store.put(chunk_key(b), b);  // writes into a dead socket first: no SIGPIPE, a reconnect
    EXPECT_EQ(store.get(chunk_key(a)), a);
    EXPECT_TRUE(store.get(chunk_key(b)) == b);
    EXPECT_GT(store.stats().connects, before.connects);
}

class RedisSinglePersistent : public RedisSingle {
protected:
    store_test::redis_server::config config() const override { return {.appendonly = true}; }
};

TEST_F(RedisSinglePersistent, ConnectionLostDuringGet) {
    auto store = make();
    const byte_vector c = random_bytes(1 << 20, 12);
    store.put(chunk_key(c), c);
    server->pause();  // the get waits for its answer...
    auto get = std::async(std::launch::async, [&] { return store.get(chunk_key(c)); });
    std::this_thread::sleep_for(300ms);
    server->kill();  // ...the connection dies, the server comes back with its AOF
    server->restart();
    try {
        const auto got = get.get();
        ASSERT_TRUE(got.has_value());
        EXPECT_TRUE(*got == c);
    } catch (const store_error& e) {
        ADD_FAILURE() << "the get was expected to retry into the restarted server: " << e.what();
    }
    EXPECT_GE(store.stats().retries, 1u);
}

// ---- Redis Cluster ----

class RedisCluster : public ::testing::Test {
protected:
    void SetUp() override {
        const auto binary = store_test::find_redis_server();
        if (!binary) GTEST_SKIP() << store_test::no_redis_server_message;
        cluster = std::make_unique<store_test::redis_cluster>(*binary, tmp.path());
        store = std::make_unique<redis_chunk_store>("127.0.0.1", cluster->node(0).port(), "cl", fast_redis_options());
        ASSERT_TRUE(store->is_cluster());
    }
    /// A chunk whose key lands in slot.
    byte_vector chunk_in_slot(int slot, std::uint64_t seed) {
        for (std::uint64_t i = 0;; ++i) {
            byte_vector c = random_bytes(64, seed * 1000003 + i);
            if (redis_key_slot(store->key_name(chunk_key(c))) == slot) return c;
        }
    }
    /// Starts moving slot from node `from` to node `to` (IMPORTING / MIGRATING).
    void begin_migration(int slot, std::size_t from, std::size_t to) {
        command(cluster->node(to).port(), {"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", cluster->node_id(from)});
        command(cluster->node(from).port(),
                {"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", cluster->node_id(to)});
    }
    void migrate_key(const std::string& key, std::size_t from, std::size_t to) {
        auto r = command(cluster->node(from).port(),
                         {"MIGRATE", "127.0.0.1", std::to_string(cluster->node(to).port()), key, "0", "5000"});
        ASSERT_NE(r->type, REDIS_REPLY_ERROR) << reply_text(r);
    }
    /// A chunk put into the store, then its slot set moving to another node and the key migrated.
    struct moving_chunk {
        byte_vector bytes;
        std::uint64_t key;
        int slot;
        std::size_t from, to;
    };
    moving_chunk put_and_start_moving(std::uint64_t seed, std::size_t step) {
        moving_chunk m{random_bytes(3000, seed), 0, 0, 0, 0};
        m.key = chunk_key(m.bytes);
        store->put(m.key, m.bytes);
        m.slot = redis_key_slot(store->key_name(m.key));
        m.from = cluster->owner_of(m.slot);
        m.to = (m.from + step) % cluster->size();
        begin_migration(m.slot, m.from, m.to);
        migrate_key(store->key_name(m.key), m.from, m.to);
        return m;
    }
    /// Finishes the move: every node learns that `to` serves slot — `to` first (it bumps its config
    /// epoch, so a heartbeat of the old owner still in flight cannot take the slot back), then the
    /// others, as Redis's resharding procedure does; then waits (at most 5 s) until every node
    /// answers for the slot as `to`'s (the owner serves it, the others redirect there), so a client
    /// never sees the nodes disagree.
    void end_migration(int slot, std::size_t to) {
        const std::string at = std::to_string(slot);
        command(cluster->node(to).port(), {"CLUSTER", "SETSLOT", at, "NODE", cluster->node_id(to)});
        for (std::size_t n = 0; n < cluster->size(); ++n)
            if (n != to) command(cluster->node(n).port(), {"CLUSTER", "SETSLOT", at, "NODE", cluster->node_id(to)});
        const std::string probe = chunk_key_name_in_slot(slot), owner = ":" + std::to_string(cluster->node(to).port());
        for (int attempt = 0; attempt < 100; ++attempt) {
            bool agreed = true;
            for (std::size_t n = 0; n < cluster->size(); ++n) {
                const auto r = command(cluster->node(n).port(), {"EXISTS", probe});
                agreed = agreed && (n == to ? r->type == REDIS_REPLY_INTEGER
                                            : r->type == REDIS_REPLY_ERROR && reply_text(r).ends_with(owner));
            }
            if (agreed) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    /// A key name of this store that hashes to slot.
    std::string chunk_key_name_in_slot(int slot) { return store->key_name(chunk_key(chunk_in_slot(slot, 99))); }
    store_test::temp_dir tmp;
    std::unique_ptr<store_test::redis_cluster> cluster;
    std::unique_ptr<redis_chunk_store> store;
};

TEST_F(RedisCluster, KeySlotsMatchTheServer) {
    for (std::uint64_t i = 0; i < 200; ++i) {
        const std::string key = store->key_name(chunk_key(random_bytes(10, i)));
        const auto r = command(cluster->node(0).port(), {"CLUSTER", "KEYSLOT", key});
        ASSERT_EQ(r->type, REDIS_REPLY_INTEGER);
        EXPECT_EQ(redis_key_slot(key), r->integer) << key;
    }
    for (const char* key : {"foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "a{b}c{d}"}) {
        const auto r = command(cluster->node(0).port(), {"CLUSTER", "KEYSLOT", key});
        EXPECT_EQ(redis_key_slot(key), r->integer) << key;
    }
}

TEST_F(RedisCluster, ChunksSpreadOverAllNodes) {
    for (std::uint64_t i = 0; i < 300; ++i) {
        const byte_vector c = random_bytes(100, 50000 + i);
        store->put(chunk_key(c), c);
    }
    long long total = 0;
    for (std::size_t n = 0; n < cluster->size(); ++n) {
        const auto r = command(cluster->node(n).port(), {"DBSIZE"});
        EXPECT_GT(r->integer, 50) << "node " << n;
        total += r->integer;
    }
    EXPECT_EQ(total, 300);
    EXPECT_EQ(store->stats().moved, 0u);  // the slot map was right from the start
}

TEST_F(RedisCluster, FollowsMovedAfterSlotMigration) {
    const auto [c, key, slot, from, to] = put_and_start_moving(60, 1);
    end_migration(slot, to);
    EXPECT_EQ(store->get(key), c);  // the cached map still says `from`: MOVED, re-read the map
    EXPECT_GE(store->stats().moved, 1u);
    const auto moved = store->stats().moved;
    const byte_vector d = chunk_in_slot(slot, 61);
    store->put(chunk_key(d), d);  // the map is right again: no further redirect
    EXPECT_EQ(store->get(chunk_key(d)), d);
    EXPECT_EQ(store->stats().moved, moved);
    EXPECT_EQ(command(cluster->node(to).port(), {"EXISTS", store->key_name(chunk_key(d))})->integer, 1);
}

TEST_F(RedisCluster, FollowsAskDuringSlotMigration) {
    const auto [c, key, slot, from, to] = put_and_start_moving(70, 2);
    // The key already moved, the slot not yet: `from` answers ASK, the store asks `to`.
    EXPECT_EQ(store->get(key), c);
    EXPECT_TRUE(store->contains(key));
    EXPECT_GE(store->stats().asked, 1u);
    // A new chunk in the migrating slot goes to `to` as well.
    const byte_vector d = chunk_in_slot(slot, 71);
    store->put(chunk_key(d), d);
    auto importer = store_test::connect_to(cluster->node(to).port());
    command(importer.get(), {"ASKING"});  // the slot is still `from`'s: a plain EXISTS would get MOVED
    EXPECT_EQ(command(importer.get(), {"EXISTS", store->key_name(chunk_key(d))})->integer, 1);
    EXPECT_EQ(store->get(chunk_key(d)), d);
    EXPECT_EQ(store->stats().moved, 0u);
    end_migration(slot, to);
    EXPECT_EQ(store->get(key), c);
    EXPECT_EQ(store->get(chunk_key(d)), d);
}

TEST_F(RedisCluster, CorruptValueInClusterIsChecksumError) {
    const byte_vector c = random_bytes(5000, 80);
    const std::uint64_t key = chunk_key(c);
    store->put(key, c);
    const std::string name = store->key_name(key);
    const std::size_t owner = cluster->owner_of(redis_key_slot(name));
    std::string v = reply_text(command(cluster->node(owner).port(), {"GET", name}));
    v[v.size() - 1] ^= 0x80;
    command(cluster->node(owner).port(), {"SET", name, v});
    EXPECT_THROW(store->get(key), checksum_error);
}

TEST_F(RedisCluster, NodeDownThenBack) {
    const byte_vector c = random_bytes(1000, 90);
    const std::uint64_t key = chunk_key(c);
    store->put(key, c);
    const std::size_t owner = cluster->owner_of(redis_key_slot(store->key_name(key)));
    redis_store_options few = fast_redis_options();
    few.max_attempts = 3;
    redis_chunk_store probe("127.0.0.1", cluster->node(0).port(), "cl", few);
    cluster->node(owner).kill();
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(probe.get(key), store_error);  // no replica: a clear error, in bounded time
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    // Back well within the node timeout, with its slots but without its data (no persistence);
    // it answers CLUSTERDOWN for its first 2 s, which the store retries through.
    cluster->node(owner).restart();
    EXPECT_FALSE(store->get(key).has_value());
    store->put(key, c);
    EXPECT_EQ(store->get(key), c);
}

}  // namespace

#else

TEST(RedisStore, NeedsHiredis) {
    GTEST_SKIP() << "hiredis was not found when configuring (apt-get install libhiredis-dev): Redis backend untested";
}

#endif
