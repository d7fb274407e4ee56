// The prefix store over redis_chunk_store, against a single redis-server and a 3-master Redis
// Cluster that the tests start themselves (store_test_support.hpp): sessions on real KV read back
// bit-exactly; a chunk corrupted, truncated or deleted in Redis makes read() throw a seqkv::error
// and never return wrong KV; a server (or cluster node) killed and restarted gives a clear error
// while it is down, the exact KV when it comes back with its data, and a store_error naming the
// missing chunk when it comes back without it. Skipped with a message when redis-server is not
// installed.
#include <gtest/gtest.h>

#if defined(SEQKV_TEST_HAVE_HIREDIS)

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "prefix_store_support.hpp"
#include "seqkv/store/prefix_store.hpp"
#include "seqkv/store/redis_store.hpp"
#include "store_test_support.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::prefix_store_test;
using namespace std::chrono_literals;
using store_test::command;
using store_test::fast_redis_options;
using store_test::reply_text;

constexpr std::uint32_t chunk_tokens = 128;

// a: 500 tokens of gpl3 (chunks [0,128) [128,256) [256,384) [384,500)); b: its first 300 (nothing
// new: [256,300) is read from inside a's [256,384)); d: a's first 400, then 250 tokens of textwrap
// (new chunks [384,512) [512,640) [640,650)). Seven chunks in all.
struct three_sessions {
    session a, b, d;
};
const three_sessions& sessions() {
    static const three_sessions s{splice(gpl3(), 500), splice(gpl3(), 300), splice(gpl3(), 400, &textwrap(), 0, 250)};
    return s;
}
constexpr std::size_t stored_chunk_count = 7;

/// The ChunkStore key of tokens [begin, end) of s as the prefix store encodes them.
std::uint64_t key_of_chunk(const session& s, std::uint64_t begin, std::uint64_t end) {
    const auto view = s.view();
    const auto payload = make_codec(lossless_config())
                             .encode(chunk_input{&view, begin, end, std::span(s.ids).subspan(begin, end - begin), {}, nullptr, nullptr});
    return chunk_key(payload);
}

/// Either a seqkv::error or exactly the session's KV: what every read must give, whatever broke.
::testing::AssertionResult error_or_exact(prefix_store<redis_chunk_store>& store, const session& s) {
    try {
        const auto hit = store.read(s.ids);
        if (hit.kv.bytes != s.first(hit.tokens)) return ::testing::AssertionFailure() << "wrong KV for " << hit.tokens << " tokens";
        return ::testing::AssertionSuccess() << "exact (" << hit.tokens << " tokens)";
    } catch (const seqkv::error& e) {
        return ::testing::AssertionSuccess() << "error: " << e.what();
    }
}

/// What a read of a session gives when one of its chunks is gone from Redis.
void expect_missing_chunk_error(prefix_store<redis_chunk_store>& store, const session& s) {
    try {
        (void)store.read(s.ids);
        ADD_FAILURE() << "read succeeded with a chunk missing from Redis";
    } catch (const store_error& e) {
        EXPECT_NE(std::string(e.what()).find("missing from the chunk store"), std::string::npos) << e.what();
    }
}

/// A prefix store over Redis; the server(s) come from the derived fixtures.
class PrefixStoreRedisBase : public ::testing::Test {
protected:
    void open(int port, std::string ns, redis_store_options o = fast_redis_options()) {
        chunks = std::make_unique<redis_chunk_store>("127.0.0.1", port, std::move(ns), std::move(o));
        store = std::make_unique<prefix_store<redis_chunk_store>>(*chunks, make_codec(lossless_config()), gpl3().cache.layout,
                                                                  prefix_store_options{.chunk_tokens = chunk_tokens});
    }
    /// For the server-down tests: 3 tries, a failing read gives up in well under a second.
    static redis_store_options few_tries() {
        redis_store_options o = fast_redis_options();
        o.max_attempts = 3;
        return o;
    }
    /// The port of the server that holds key (the only one, or the cluster node serving its slot).
    virtual int port_of(std::uint64_t key) = 0;
    /// Every key in Redis over all servers.
    virtual std::size_t keys_in_redis() = 0;

    std::string get_value(std::uint64_t key) {
        const auto r = command(port_of(key), {"GET", chunks->key_name(key)});
        EXPECT_EQ(r->type, REDIS_REPLY_STRING) << "chunk " << chunk_key_hex(key) << " is not in Redis";
        return reply_text(r);
    }
    void set_value(std::uint64_t key, const std::string& v) {
        const auto r = command(port_of(key), {"SET", chunks->key_name(key), v});
        ASSERT_NE(r->type, REDIS_REPLY_ERROR) << reply_text(r);
    }
    void delete_value(std::uint64_t key) { command(port_of(key), {"DEL", chunks->key_name(key)}); }

    /// Puts a, b and d, then checks every read bit-exactly (also from inside a chunk).
    void put_and_read_back() {
        const auto& [a, b, d] = sessions();
        const auto put_a = store->put(a.view(), a.ids, a.nll);
        EXPECT_EQ(put_a.new_chunks, 4u);
        const auto put_b = store->put(b.view(), b.ids, b.nll);
        EXPECT_EQ(put_b.new_chunks, 0u);
        EXPECT_EQ(put_b.bytes_written, 0u);
        const auto put_d = store->put(d.view(), d.ids, d.nll);
        EXPECT_EQ(put_d.shared_tokens, 400u);
        EXPECT_EQ(put_d.new_chunks, 3u);
        EXPECT_EQ(store->chunk_count(), stored_chunk_count);
        EXPECT_EQ(keys_in_redis(), stored_chunk_count) << "each shared chunk is stored once";
        for (const session* s : {&a, &b, &d}) {
            const auto hit = store->read(s->ids);
            ASSERT_EQ(hit.tokens, s->ids.size());
            EXPECT_EQ(hit.kv.bytes, s->first(hit.tokens)) << "bit-exact";
        }
        std::vector<std::int32_t> q(a.ids.begin(), a.ids.begin() + 450);
        q.push_back(-7);
        const auto hit = store->read(q);
        ASSERT_EQ(hit.tokens, 450u);
        EXPECT_EQ(hit.kv.bytes, a.first(450));
    }

    /// Corrupts, truncates and deletes a's last chunk [384,500) in Redis: read(a) throws each time,
    /// reads that do not need that chunk stay exact; the good value put back reads exactly again.
    void damage_a_last_chunk() {
        const auto& [a, b, d] = sessions();
        const std::uint64_t key = key_of_chunk(a, 384, 500);
        const std::string good = get_value(key);
        ASSERT_GT(good.size(), 32u + 100u);

        std::string flipped = good;
        flipped[32 + 100] = char(flipped[32 + 100] ^ 0x10);  // one payload bit
        set_value(key, flipped);
        EXPECT_THROW(store->read(a.ids), checksum_error);
        std::string header = good;
        header[9] = char(header[9] ^ 0x01);  // the framing header's key field
        set_value(key, header);
        EXPECT_THROW(store->read(a.ids), seqkv::error);
        set_value(key, good.substr(0, good.size() - 7));  // truncated
        EXPECT_THROW(store->read(a.ids), format_error);
        set_value(key, good.substr(0, 20));  // shorter than the header
        EXPECT_THROW(store->read(a.ids), seqkv::error);
        set_value(key, std::string(good.size(), 'x'));  // not a chunk at all
        EXPECT_THROW(store->read(a.ids), seqkv::error);
        // Reads that stop before the damaged chunk, or go through d's own chunks, are unaffected.
        EXPECT_EQ(store->read(a.ids, 384).kv.bytes, a.first(384));
        EXPECT_EQ(store->read(b.ids).kv.bytes, b.first(300));
        EXPECT_EQ(store->read(d.ids).kv.bytes, d.first(650));

        delete_value(key);  // gone
        expect_missing_chunk_error(*store, a);
        EXPECT_EQ(store->match(a.ids), 500u) << "the index still names it: match() does not fetch";

        set_value(key, good);
        EXPECT_EQ(store->read(a.ids).kv.bytes, a.first(500));
    }

    /// After the server(s) lost every chunk: each read is a store_error naming a missing chunk;
    /// clear() and putting the sessions again restores exact reads.
    void lost_everything_then_recover() {
        const auto& [a, b, d] = sessions();
        for (const session* s : {&a, &b, &d}) expect_missing_chunk_error(*store, *s);
        store->clear();
        EXPECT_EQ(store->match(a.ids), 0u);
        put_and_read_back();
    }

    store_test::temp_dir tmp;
    std::unique_ptr<redis_chunk_store> chunks;
    std::unique_ptr<prefix_store<redis_chunk_store>> store;
};

// ---- one redis-server ----

class PrefixStoreRedis : public PrefixStoreRedisBase {
protected:
    void SetUp() override {
        const auto binary = store_test::find_redis_server();
        if (!binary) GTEST_SKIP() << store_test::no_redis_server_message;
        server = std::make_unique<store_test::redis_server>(*binary, tmp.path(), config());
        open(server->port(), "prefix");
    }
    virtual store_test::redis_server::config config() const { return {}; }
    int port_of(std::uint64_t) override { return server->port(); }
    std::size_t keys_in_redis() override { return std::size_t(command(server->port(), {"DBSIZE"})->integer); }
    std::unique_ptr<store_test::redis_server> server;
};

TEST_F(PrefixStoreRedis, SessionsReadBackExactly) {
    put_and_read_back();
    // The chunks are what a memory store holds, byte for byte.
    memory_chunk_store memory;
    prefix_store reference(memory, make_codec(lossless_config()), gpl3().cache.layout, {.chunk_tokens = chunk_tokens});
    for (const session* s : {&sessions().a, &sessions().b, &sessions().d}) reference.put(s->view(), s->ids, s->nll);
    EXPECT_EQ(store->stored_bytes(), memory.stored_bytes());
    const std::uint64_t first = key_of_chunk(sessions().a, 0, chunk_tokens);
    EXPECT_EQ(chunks->get(first), memory.get(first));
    store->clear();
    EXPECT_EQ(keys_in_redis(), 0u) << "clear() removes the chunks from Redis";
}

TEST_F(PrefixStoreRedis, CorruptOrMissingChunkIsAnErrorNeverWrongKV) {
    put_and_read_back();
    damage_a_last_chunk();
}

TEST_F(PrefixStoreRedis, ServerKilledThenRestartedWithoutItsData) {
    open(server->port(), "prefix", few_tries());
    put_and_read_back();
    server->kill();
    const auto start = std::chrono::steady_clock::now();
    try {
        (void)store->read(sessions().a.ids);
        ADD_FAILURE() << "read succeeded with the server down";
    } catch (const store_error& e) {
        EXPECT_NE(std::string(e.what()).find("failed after 3 tries"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s) << "a bounded wait, not a hang";
    server->restart();  // no persistence: back empty
    EXPECT_EQ(keys_in_redis(), 0u);
    lost_everything_then_recover();
}

class PrefixStoreRedisPersistent : public PrefixStoreRedis {
protected:
    store_test::redis_server::config config() const override { return {.appendonly = true}; }
};

TEST_F(PrefixStoreRedisPersistent, ServerKilledThenRestartedWithItsData) {
    put_and_read_back();
    server->kill();
    server->restart();  // reloads its append-only file; the store's pooled connections are dead
    EXPECT_EQ(keys_in_redis(), stored_chunk_count);
    for (const session* s : {&sessions().a, &sessions().b, &sessions().d})
        EXPECT_EQ(store->read(s->ids).kv.bytes, s->first(s->ids.size())) << "exact after the restart";
    EXPECT_GE(chunks->stats().retries, 1u) << "the dead connection was retried on a fresh one";
}

// ---- a 3-master Redis Cluster ----

class PrefixStoreRedisCluster : public PrefixStoreRedisBase {
protected:
    void SetUp() override {
        const auto binary = store_test::find_redis_server();
        if (!binary) GTEST_SKIP() << store_test::no_redis_server_message;
        cluster = std::make_unique<store_test::redis_cluster>(*binary, tmp.path());
        open(cluster->node(0).port(), "prefix-cl");
        ASSERT_TRUE(chunks->is_cluster());
    }
    std::size_t owner_of(std::uint64_t key) { return cluster->owner_of(redis_key_slot(chunks->key_name(key))); }
    int port_of(std::uint64_t key) override { return cluster->node(owner_of(key)).port(); }
    std::size_t keys_in_redis() override {
        std::size_t n = 0;
        for (std::size_t i = 0; i < cluster->size(); ++i)
            if (cluster->node(i).running()) n += std::size_t(command(cluster->node(i).port(), {"DBSIZE"})->integer);
        return n;
    }
    std::unique_ptr<store_test::redis_cluster> cluster;
};

TEST_F(PrefixStoreRedisCluster, SessionsReadBackExactlyFromSeveralNodes) {
    put_and_read_back();
    struct stored_chunk {
        const session* s;
        std::uint64_t begin, end;
    };
    const auto& [a, b, d] = sessions();
    std::set<std::size_t> nodes;
    for (const auto& c : {stored_chunk{&a, 0, 128}, stored_chunk{&a, 128, 256}, stored_chunk{&a, 256, 384},
                          stored_chunk{&a, 384, 500}, stored_chunk{&d, 384, 512}, stored_chunk{&d, 512, 640},
                          stored_chunk{&d, 640, 650}})
        nodes.insert(owner_of(key_of_chunk(*c.s, c.begin, c.end)));
    EXPECT_GE(nodes.size(), 2u) << "the seven chunks are spread over the cluster";
    EXPECT_EQ(chunks->stats().moved, 0u);
}

TEST_F(PrefixStoreRedisCluster, CorruptOrMissingChunkIsAnErrorNeverWrongKV) {
    put_and_read_back();
    damage_a_last_chunk();
}

TEST_F(PrefixStoreRedisCluster, NodeKilledThenRestartedWithoutItsData) {
    open(cluster->node(0).port(), "prefix-cl", few_tries());
    put_and_read_back();
    const auto& [a, b, d] = sessions();
    const std::uint64_t key = key_of_chunk(a, 384, 500);
    const std::size_t owner = owner_of(key);
    cluster->node(owner).kill();
    // Reads that need a chunk on the dead node: a clear error in bounded time (no replica);
    // the others: exact. Never wrong KV.
    const auto start = std::chrono::steady_clock::now();
    try {
        (void)store->read(a.ids);
        ADD_FAILURE() << "read succeeded with the node that holds a chunk down";
    } catch (const store_error& e) {
        EXPECT_NE(std::string(e.what()).find("failed after 3 tries"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s) << "a bounded wait, not a hang";
    for (const session* s : {&b, &d}) EXPECT_TRUE(error_or_exact(*store, *s));
    // Back with its slots but none of its chunks (no persistence), once it serves them again
    // (a restarted master answers CLUSTERDOWN for its first ~2 s).
    cluster->node(owner).restart();
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (reply_text(command(cluster->node(owner).port(), {"CLUSTER", "INFO"})).find("cluster_state:ok") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(chunks->contains(key));
    expect_missing_chunk_error(*store, a);
    for (const session* s : {&b, &d}) EXPECT_TRUE(error_or_exact(*store, *s));
    // clear() and the sessions put again: exact everywhere.
    store->clear();
    EXPECT_EQ(keys_in_redis(), 0u);
    put_and_read_back();
}

}  // namespace

#else

TEST(PrefixStoreRedis, NeedsHiredis) {
    GTEST_SKIP() << "hiredis was not found when configuring (apt-get install libhiredis-dev): prefix store over Redis untested";
}

#endif
