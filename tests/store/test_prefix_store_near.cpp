// Near-prefix reuse: a session that differs from a stored one in a few tokens (a date) and then
// continues with the same tokens stores its new chunks as the difference from the stored
// session's chunks at the same positions — and still reads back bit-exactly, survives eviction,
// save/load, and export.
#include <gtest/gtest.h>

#include "prefix_store_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;
using namespace seqkv::prefix_store_test;

namespace {

// b = a with tokens [at, at + n) replaced (their KV rows taken from another dump) and every later
// row nudged the way a small upstream change moves it: +1 on the bf16 word of every 5th element.
session perturbed(const session& a, const real_kv& other, std::uint64_t at, std::uint64_t n) {
    session b = a;
    const std::size_t width = dtype_size(a.layout.type), row = a.layout.head_dim * width;
    for (std::uint64_t t = at; t < at + n; ++t) b.ids[t] += 500000;
    for (std::uint32_t l = 0; l < a.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            auto blk = b.kv.block(l, kind);
            const auto& src = kind == kv_kind::key ? other.cache.keys[l] : other.cache.values[l];
            for (std::uint32_t h = 0; h < a.layout.kv_heads; ++h) {
                for (std::uint64_t t = at; t < at + n; ++t) std::memcpy(blk.data() + (h * a.layout.tokens + t) * row, src.element(h, t, 0), row);
                for (std::uint64_t t = at + n; t < a.layout.tokens; ++t)
                    for (std::uint32_t c = 0; c < a.layout.head_dim; c += 5) {
                        std::uint16_t w;
                        std::uint8_t* p = blk.data() + (h * a.layout.tokens + t) * row + c * width;
                        std::memcpy(&w, p, 2);
                        ++w;
                        std::memcpy(p, &w, 2);
                    }
            }
        }
    return b;
}

}  // namespace

TEST(PrefixStoreNear, ADateChangeIsCodedAgainstTheStoredNeighbour) {
    const auto& kv = gpl3();
    const session a = splice(kv, 320);
    const session b = perturbed(a, textwrap(), 150, 3);
    std::uint64_t plain_bytes = 0;
    {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
        store.put(a.view(), a.ids);
        plain_bytes = store.put(b.view(), b.ids).bytes_written;
    }
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
    store.put(a.view(), a.ids);
    const auto st = store.put(b.view(), b.ids);
    EXPECT_EQ(st.shared_tokens, 150u);
    EXPECT_EQ(st.new_chunks, 3u);        // [128,192) [192,256) [256,320)
    EXPECT_EQ(st.referenced_chunks, 3u);
    EXPECT_LT(double(st.bytes_written), 0.6 * double(plain_bytes)) << st.bytes_written << " vs " << plain_bytes;
    for (const session* s : {&a, &b}) {
        const auto hit = store.read(s->ids);
        ASSERT_EQ(hit.tokens, 320u);
        EXPECT_EQ(hit.kv.bytes, s->first(320)) << "bit-exact through the difference";
    }
    // A prompt that follows b for 170 tokens reads them (from inside b's difference chunk).
    std::vector<std::int32_t> q(b.ids.begin(), b.ids.begin() + 170);
    EXPECT_EQ(store.read(q).kv.bytes, b.first(170));

    // Reopened from its index: the references hold.
    prefix_store reopened(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
    reopened.load_index(store.save_index());
    EXPECT_EQ(reopened.read(b.ids).kv.bytes, b.first(320));
    // Export stops before the first difference chunk (a plain .skv decoder cannot add the reference).
    EXPECT_EQ(store.export_session(b.ids, lossless_config()).tokens, 128u);
    EXPECT_EQ(store.export_session(a.ids, lossless_config()).tokens, 320u);
}

TEST(PrefixStoreNear, AReferencedChunkIsNotEvictedBeforeItsDependents) {
    const auto& kv = gpl3();
    const session a = splice(kv, 256);
    std::vector<session> sessions{a};
    for (int i = 0; i < 4; ++i) sessions.push_back(perturbed(a, textwrap(), 140 + 10 * std::uint64_t(i), 2));
    memory_chunk_store probe_chunks;
    prefix_store probe(probe_chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    probe.put(a.view(), a.ids);
    const std::uint64_t budget = probe.stored_bytes();  // a alone: every later session forces evictions
    for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout,
                           {.chunk_tokens = 64, .budget_bytes = budget, .policy = policy, .near_prefix_gap = 8});
        std::uint64_t evicted = 0;
        for (const auto& s : sessions) evicted += store.put(s.view(), s.ids).evicted_chunks;
        EXPECT_GT(evicted, 0u);
        for (const auto& s : sessions) {
            const auto hit = store.read(s.ids);  // never a store_error: references outlive their dependents
            EXPECT_EQ(hit.kv.bytes, s.first(hit.tokens));
        }
    }
}
