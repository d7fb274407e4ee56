// The prefix store on real KV (data/kv/*.safetensors): what is read back is exactly what was put
// (lossless) or exactly what the codec's own round trip gives (lossy), shared prefixes are
// encoded and stored once, and eviction keeps the budget without losing readable KV.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/store/directory_store.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;

namespace {

// A session: token ids plus its KV, assembled from pieces of real caches.
struct session {
    kv_layout layout;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    chunk_buffer kv;  // [layer][K/V][head][token][channel]
    kv_cache_view view() const { return view_of(kv); }
    // The expected first n tokens in chunk_buffer order.
    byte_vector first(std::uint64_t n) const {
        auto part = chunk_buffer::for_layout(layout, n);
        const std::size_t row = layout.head_dim * dtype_size(layout.type);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                    std::memcpy(part.block(l, kind).data() + h * n * row, kv.block(l, kind).data() + h * layout.tokens * row, n * row);
        return part.bytes;
    }
};

struct real_kv {
    io::safetensors_file file;
    kv_cache_view cache;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    explicit real_kv(const char* name)
        : file(io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / name)), cache(io::kv_view(file)) {
        ids = *io::token_ids_of(file, cache.layout.tokens);
        nll = *io::nll_of(file, cache.layout.tokens);
    }
};

// Tokens [a.begin, a.end) of x, then [b.begin, b.end) of y (same geometry), as one session;
// y's ids are offset so that the two parts never share tokens by accident.
session splice(const real_kv& x, std::uint64_t x_end, const real_kv* y = nullptr, std::uint64_t y_begin = 0, std::uint64_t y_end = 0,
               std::int32_t id_offset = 100000) {
    if (x_end > x.cache.layout.tokens || (y && y_end > y->cache.layout.tokens)) throw std::out_of_range("splice: past the dump");
    session s;
    s.layout = x.cache.layout;
    s.layout.tokens = x_end + (y_end - y_begin);
    s.ids.assign(x.ids.begin(), x.ids.begin() + std::ptrdiff_t(x_end));
    s.nll.assign(x.nll.begin(), x.nll.begin() + std::ptrdiff_t(x_end));
    for (std::uint64_t t = y_begin; t < y_end; ++t) s.ids.push_back(y->ids[t] + id_offset), s.nll.push_back(y->nll[t]);
    const std::size_t row = s.layout.head_dim * dtype_size(s.layout.type);
    s.kv = chunk_buffer::for_layout(s.layout, s.layout.tokens);
    for (std::uint32_t l = 0; l < s.layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            auto b = s.kv.block(l, kind ? kv_kind::value : kv_kind::key);
            const auto& tx = kind ? x.cache.values[l] : x.cache.keys[l];
            for (std::uint32_t h = 0; h < s.layout.kv_heads; ++h) {
                for (std::uint64_t t = 0; t < x_end; ++t) std::memcpy(b.data() + (h * s.layout.tokens + t) * row, tx.element(h, t, 0), row);
                if (y) {
                    const auto& ty = kind ? y->cache.values[l] : y->cache.keys[l];
                    for (std::uint64_t t = y_begin; t < y_end; ++t)
                        std::memcpy(b.data() + (h * s.layout.tokens + x_end + t - y_begin) * row, ty.element(h, t, 0), row);
                }
            }
        }
    return s;
}

const real_kv& gpl3() {
    static const real_kv k("gpl3.safetensors");
    return k;
}
const real_kv& textwrap() {
    static const real_kv k("py311-textwrap.safetensors");
    return k;
}

}  // namespace

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
