// The prefix store on real KV (data/kv/*.safetensors): what is read back is exactly what was put
// (lossless) or exactly what the codec's own round trip gives (lossy), shared prefixes are
// encoded and stored once, and eviction keeps the budget without losing readable KV. The same over
// Redis and Redis Cluster: test_prefix_store_redis.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "prefix_store_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/store/directory_store.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;
using namespace seqkv::prefix_store_test;

TEST(PrefixStore, SessionsSharingAPrefixAreStoredOnceAndReadBackExactly) {
    const auto& a_kv = gpl3();
    ASSERT_GE(a_kv.cache.layout.tokens, 500u);
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), a_kv.cache.layout, {.chunk_tokens = 128});

    const session a = splice(a_kv, 500);
    const auto put_a = store.put(a.view(), a.ids, a.nll);
    EXPECT_EQ(put_a.shared_tokens, 0u);
    EXPECT_EQ(put_a.new_chunks, 4u);  // [0,128) … [384,500)
    const std::uint64_t bytes_a = store.stored_bytes();
    EXPECT_EQ(bytes_a, chunks.stored_bytes());
    EXPECT_LT(bytes_a, a.layout.total_bytes()) << "lossless chunks compress";

    // A shorter session with the same prefix: nothing new is encoded or stored.
    const session b = splice(a_kv, 300);
    const auto put_b = store.put(b.view(), b.ids, b.nll);
    EXPECT_EQ(put_b.shared_tokens, 300u);
    EXPECT_EQ(put_b.new_chunks, 0u);
    EXPECT_EQ(put_b.bytes_written, 0u);
    EXPECT_EQ(store.stored_bytes(), bytes_a);

    // A session that shares 400 tokens, then goes elsewhere: only chunks from 384 on are new.
    const session d = splice(a_kv, 400, &textwrap(), 0, 250);
    const auto put_d = store.put(d.view(), d.ids, d.nll);
    EXPECT_EQ(put_d.shared_tokens, 400u);
    EXPECT_EQ(put_d.reused_chunks, 3u);
    EXPECT_EQ(put_d.new_chunks, 3u);  // [384,512) [512,640) [640,650)

    for (const session* s : {&a, &b, &d}) {
        const auto hit = store.read(s->ids);
        ASSERT_EQ(hit.tokens, s->ids.size());
        EXPECT_EQ(hit.kv.bytes, s->first(hit.tokens)) << "bit-exact";
    }
    // A query that follows a for 450 tokens and then differs reads a's first 450 tokens (from inside a chunk).
    std::vector<std::int32_t> q(a.ids.begin(), a.ids.begin() + 450);
    q.push_back(-7);
    EXPECT_EQ(store.match(q), 450u);
    const auto hit = store.read(q);
    ASSERT_EQ(hit.tokens, 450u);
    EXPECT_EQ(hit.kv.bytes, a.first(450));
    EXPECT_EQ(store.read(q, 130).kv.bytes, a.first(130));
    EXPECT_EQ(store.match(std::vector<std::int32_t>{-1, -2}), 0u);

    // The trie metric: shared bits of q with the store = the model's surprisal of its first 450 tokens.
    std::uint64_t units = 0;
    for (int t = 0; t < 450; ++t) units += trie::to_units(a.nll[std::size_t(t)]);
    EXPECT_EQ(store.index().longest_prefix(q).prefix_units, units);
}

TEST(PrefixStore, ALongerTurnReplacesThePreviousTurnsLastChunk) {
    const auto& kv = gpl3();
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 128});
    const session turn1 = splice(kv, 300), turn2 = splice(kv, 500);
    store.put(turn1.view(), turn1.ids);
    EXPECT_EQ(store.chunk_count(), 3u);
    store.put(turn2.view(), turn2.ids);
    EXPECT_EQ(store.chunk_count(), 4u) << "[256,300) is covered by [256,384) and dropped";
    EXPECT_EQ(store.read(turn1.ids).kv.bytes, turn1.first(300));
    EXPECT_EQ(store.read(turn2.ids).kv.bytes, turn2.first(500));
}

TEST(PrefixStore, LossyReadsAreWhatTheCodecsRoundTripGives) {
    const auto& kv = gpl3();
    lossy_model_info m;
    m.rope_theta = 10000.0, m.head_dim = kv.cache.layout.head_dim;
    const auto config = lossy_codec_config(lossy_preset("kivi4", m));
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(config), kv.cache.layout, {.chunk_tokens = 128});
    const session a = splice(kv, 400);
    store.put(a.view(), a.ids);
    compress_options o;
    o.codec = config;
    o.chunk_tokens = 128;
    const auto view = a.view();
    const auto reference = decompress(compress(view, o, a.ids));
    const auto hit = store.read(a.ids);
    ASSERT_EQ(hit.tokens, 400u);
    EXPECT_EQ(hit.kv.bytes, reference.bytes) << "the store's chunks are the container's chunks";
}

TEST(PrefixStore, EvictionKeepsTheBudgetAndWhatRemainsReadsExactly) {
    const auto& kv = gpl3();
    for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
        memory_chunk_store chunks;
        prefix_store probe(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
        const session base = splice(kv, 256);
        probe.put(base.view(), base.ids);
        const std::uint64_t budget = probe.stored_bytes() * 3;  // the shared prefix plus a little
        probe.clear();
        EXPECT_EQ(chunks.chunk_count(), 0u);

        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout,
                           {.chunk_tokens = 64, .budget_bytes = budget, .policy = policy});
        std::vector<session> sessions;
        for (int i = 0; i < 8; ++i) sessions.push_back(splice(kv, 128 + 16 * std::uint64_t(i), &textwrap(), 50 * std::uint64_t(i), 50 * std::uint64_t(i) + 100, 100000 * (i + 1)));
        std::uint64_t evicted = 0;
        for (const auto& s : sessions) {
            evicted += store.put(s.view(), s.ids).evicted_chunks;
            EXPECT_LE(store.stored_bytes(), budget);
            EXPECT_EQ(store.stored_bytes(), chunks.stored_bytes());
        }
        EXPECT_GT(evicted, 0u);
        for (const auto& s : sessions) {
            const auto hit = store.read(s.ids);
            EXPECT_GE(hit.tokens, 128u) << "the shared prefix (an interior chunk) is never evicted before its extensions";
            EXPECT_EQ(hit.kv.bytes, s.first(hit.tokens));
        }
    }
}

// Eviction order: a chunk used again is not evicted for its older state; the least recently used
// leaf goes first (lru), and a leaf used four times outranks ones used once (plt).
TEST(PrefixStore, EvictionTakesTheLowestRankedLeaf) {
    const auto& kv = gpl3();
    std::vector<session> x;  // a shared 64-token prefix, then 64 tokens of their own
    for (std::uint64_t i = 0; i < 4; ++i) x.push_back(splice(kv, 64, &textwrap(), 64 * i, 64 * i + 64, 100000 * std::int32_t(i + 1)));
    for (auto policy : {eviction_policy::lru, eviction_policy::plt}) {
        memory_chunk_store probe_chunks;
        prefix_store probe(probe_chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
        for (int i = 0; i < 3; ++i) probe.put(x[std::size_t(i)].view(), x[std::size_t(i)].ids);
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout,
                           {.chunk_tokens = 64, .budget_bytes = probe.stored_bytes(), .policy = policy});
        for (int i = 0; i < 3; ++i) EXPECT_EQ(store.put(x[std::size_t(i)].view(), x[std::size_t(i)].ids).evicted_chunks, 0u);
        for (int k = 0; k < 3; ++k) store.put(x[0].view(), x[0].ids);  // x0 used again
        const auto st = store.put(x[3].view(), x[3].ids);
        EXPECT_GE(st.evicted_chunks, 1u);
        EXPECT_LE(store.stored_bytes(), probe.stored_bytes());
        EXPECT_EQ(store.match(x[0].ids), 128u) << "the chunk used most recently and most often stays";
        if (policy == eviction_policy::lru) {
            EXPECT_EQ(store.match(x[1].ids), 64u) << "the least recently used leaf went first";
            EXPECT_EQ(store.match(x[3].ids), 128u);
        }
        for (const auto& s : x) EXPECT_EQ(store.read(s.ids).kv.bytes, s.first(store.match(s.ids)));
    }
}

// A branch whose traffic moved to a sibling (a date line that changed) goes, though it was used
// more often: the PLT rank counts a chunk used every put as overdue after a few idle puts. The
// former rank (use count + prior, slow decay) kept the old branch and evicted the new one at every
// put, so the new branch never stayed; LRU switches at once.
TEST(PrefixStore, PltLetsABranchGoOnceItsTrafficMovedToASibling) {
    const auto& kv = gpl3();
    const session a = splice(kv, 64, &textwrap(), 0, 64, 100000);     // prefix P, then branch A
    const session b = splice(kv, 64, &textwrap(), 200, 264, 200000);  // P, then branch B
    const session p = splice(kv, 64);
    memory_chunk_store probe_chunks;
    prefix_store probe(probe_chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    probe.put(p.view(), p.ids);
    const std::uint64_t p_bytes = probe.stored_bytes();
    probe.put(a.view(), a.ids);
    const std::uint64_t a_bytes = probe.stored_bytes() - p_bytes;
    probe.put(b.view(), b.ids);
    const std::uint64_t b_bytes = probe.stored_bytes() - p_bytes - a_bytes;
    const std::uint64_t budget = p_bytes + std::max(a_bytes, b_bytes);  // P and one branch, not both
    for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout,
                           {.chunk_tokens = 64, .budget_bytes = budget, .policy = policy});
        for (int i = 0; i < 4; ++i) store.put(a.view(), a.ids);  // A's traffic
        int puts_until_b_stays = 0;
        for (int i = 1; i <= 8 && puts_until_b_stays == 0; ++i) {
            store.put(b.view(), b.ids);  // the traffic moved to B
            EXPECT_LE(store.stored_bytes(), budget);
            if (store.match(b.ids) == 128) puts_until_b_stays = i;
        }
        SCOPED_TRACE(policy == eviction_policy::plt ? "plt" : "lru");
        ASSERT_GT(puts_until_b_stays, 0) << "the new branch never stayed";
        EXPECT_LE(puts_until_b_stays, policy == eviction_policy::lru ? 1 : 4);
        EXPECT_EQ(store.match(a.ids), 64u) << "the old branch went, the shared prefix stayed";
        for (int i = 0; i < 4; ++i) store.put(b.view(), b.ids);
        EXPECT_EQ(store.match(b.ids), 128u) << "and B stays while it is used";
        EXPECT_EQ(store.read(b.ids).kv.bytes, b.first(128));
    }
}

// An index saved by the previous version (2: records without passes / born) still opens.
TEST(PrefixStore, AVersion2IndexStillLoads) {
    const auto& kv = gpl3();
    memory_chunk_store chunks;
    const session a = splice(kv, 300), b = splice(kv, 200, &textwrap(), 0, 150);
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    store.put(a.view(), a.ids, a.nll);
    store.put(b.view(), b.ids, b.nll);
    store.put(b.view(), b.ids, b.nll);
    const byte_vector v3 = store.save_index();
    // v3 record: u64 key, u32 bytes, f32 prior, f32 uses, u64 last_use, u32 passes, u32 born, u32 ref, i32 shift, u8 flags.
    constexpr std::size_t v3_record = 45, v2_record = 37;
    const std::size_t body = v3.size() - 4;
    std::uint64_t count = 0;
    for (std::uint64_t n = 1; n < 4096 && count == 0; ++n)  // the record count precedes the records
        if (n * v3_record + 8 <= body) {
            std::uint64_t c;
            std::memcpy(&c, v3.data() + body - n * v3_record - 8, 8);
            if (c == n) count = n;
        }
    ASSERT_GT(count, 0u);
    const std::size_t records_at = body - count * v3_record;
    byte_vector v2(v3.begin(), v3.begin() + std::ptrdiff_t(records_at));
    v2[8] = 2;  // the version after the 8-byte magic (little-endian u32)
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::uint8_t* rec = v3.data() + records_at + i * v3_record;
        float uses;
        std::memcpy(&uses, rec + 16, 4);
        uses = std::max(0.0f, uses - 1);  // version 2 did not count the storing put
        v2.insert(v2.end(), rec, rec + 16);
        v2.insert(v2.end(), reinterpret_cast<const std::uint8_t*>(&uses), reinterpret_cast<const std::uint8_t*>(&uses) + 4);
        v2.insert(v2.end(), rec + 20, rec + 28);  // last_use
        v2.insert(v2.end(), rec + 36, rec + v3_record);  // ref, shift, flags
    }
    ASSERT_EQ(v2.size(), records_at + count * v2_record);
    const std::uint32_t crc = crc32c(v2);
    v2.insert(v2.end(), reinterpret_cast<const std::uint8_t*>(&crc), reinterpret_cast<const std::uint8_t*>(&crc) + 4);
    prefix_store reopened(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    reopened.load_index(v2);
    EXPECT_EQ(reopened.stored_bytes(), store.stored_bytes());
    for (const session* s : {&a, &b}) EXPECT_EQ(reopened.read(s->ids).kv.bytes, s->first(s->ids.size()));
    // A version this build does not know (CRC recomputed, so the version check itself refuses it).
    auto v4 = v2;
    v4[8] = 4;
    const std::uint32_t crc4 = crc32c(std::span(v4).first(v4.size() - 4));
    std::memcpy(v4.data() + v4.size() - 4, &crc4, 4);
    EXPECT_THROW(reopened.load_index(v4), format_error);
    // Saved again it is version 3, and loads as it was.
    const byte_vector again = reopened.save_index();
    EXPECT_EQ(again[8], 3);
    prefix_store third(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    third.load_index(again);
    EXPECT_EQ(third.save_index(), again);
}

TEST(PrefixStore, WorksOverADirectoryStore) {
    const auto& kv = gpl3();
    const auto dir = std::filesystem::path(SEQKV_TEST_BINARY_DIR) / "prefix_store_dir";
    std::filesystem::remove_all(dir);
    directory_chunk_store chunks(dir);
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 256});
    const session a = splice(kv, 500);
    store.put(a.view(), a.ids);
    EXPECT_EQ(store.read(a.ids).kv.bytes, a.first(500));
    // A chunk damaged in the store: a clear error, never wrong KV.
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() == ".chunk") {
            std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
            f.seekg(100);
            const char c = char(f.get());
            f.seekp(100);
            f.put(char(c ^ 0x5a));
        }
    EXPECT_THROW(store.read(a.ids), seqkv::error);
    std::filesystem::remove_all(dir);
}

TEST(PrefixStore, TheIndexSavesAndReopensOverTheSameChunkStore) {
    const auto& kv = gpl3();
    memory_chunk_store chunks;
    const session a = splice(kv, 300), b = splice(kv, 200, &textwrap(), 0, 150);
    byte_vector saved;
    {
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
        store.put(a.view(), a.ids, a.nll);
        store.put(b.view(), b.ids, b.nll);
        saved = store.save_index();
    }
    // Another process (or host) opens the same chunks with the saved index.
    prefix_store reopened(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    reopened.load_index(saved);
    EXPECT_EQ(reopened.save_index(), saved) << "load + save is the identity (reads below then update use statistics)";
    EXPECT_EQ(reopened.missing_chunks(), 0u);
    EXPECT_EQ(reopened.stored_bytes(), chunks.stored_bytes());
    for (const session* s : {&a, &b}) {
        const auto hit = reopened.read(s->ids);
        ASSERT_EQ(hit.tokens, s->ids.size());
        EXPECT_EQ(hit.kv.bytes, s->first(hit.tokens));
    }
    // Storing on top of a reopened index reuses its chunks.
    EXPECT_EQ(reopened.put(a.view(), a.ids).new_chunks, 0u);

    // Damaged or foreign indexes are refused with a seqkv error, and the store keeps its index.
    for (std::size_t n = 0; n < saved.size(); n += 1 + n / 8)
        EXPECT_THROW(reopened.load_index(std::span(saved).first(n)), format_error);
    std::mt19937 rng(1);
    for (int i = 0; i < 300; ++i) {
        auto bad = saved;
        bad[rng() % bad.size()] ^= std::uint8_t(1u << (rng() % 8));
        EXPECT_THROW(reopened.load_index(bad), format_error);
    }
    prefix_store other_chunking(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 128});
    EXPECT_THROW(other_chunking.load_index(saved), format_error);
    EXPECT_EQ(reopened.read(a.ids).kv.bytes, a.first(300));

    // A chunk lost from the ChunkStore: counted, and a read that needs it is a store_error, not wrong KV.
    const auto view = a.view();
    const auto first_chunk = make_codec(lossless_config()).encode(chunk_input{&view, 0, 64, std::span(a.ids).first(64), {}, nullptr, nullptr});
    ASSERT_TRUE(chunks.contains(chunk_key(first_chunk))) << "the store's chunks are the codec's payloads";
    chunks.remove(chunk_key(first_chunk));
    EXPECT_EQ(reopened.missing_chunks(), 1u);
    EXPECT_THROW(reopened.read(a.ids), store_error);
}

TEST(PrefixStore, PuttingASessionAgainRestoresChunksTheStoreLost) {
    const auto& kv = gpl3();
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    const session a = splice(kv, 200);
    store.put(a.view(), a.ids);
    const auto view = a.view();
    const auto lost = make_codec(lossless_config()).encode(chunk_input{&view, 64, 128, std::span(a.ids).subspan(64, 64), {}, nullptr, nullptr});
    ASSERT_TRUE(chunks.contains(chunk_key(lost)));
    chunks.remove(chunk_key(lost));  // e.g. a Redis server restarted without its data
    EXPECT_EQ(store.missing_chunks(), 1u);
    EXPECT_THROW(store.read(a.ids), store_error);
    const auto st = store.put(a.view(), a.ids);
    EXPECT_EQ(st.new_chunks, 0u);
    EXPECT_EQ(st.repaired_chunks, 1u);
    EXPECT_EQ(store.missing_chunks(), 0u);
    EXPECT_EQ(store.stored_bytes(), chunks.stored_bytes());
    EXPECT_EQ(store.read(a.ids).kv.bytes, a.first(200));
}
