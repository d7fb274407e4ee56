// A stored session exported as a .skv whose chunk records reference the store's chunks (format v2
// external payloads + the store in the resource table), decoded through the store's provider.
#include <gtest/gtest.h>

#include "prefix_store_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/format/reader.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;
using namespace seqkv::prefix_store_test;

TEST(PrefixStoreExport, ASessionExportsAsReferencesAndDecodesThroughTheStore) {
    const auto& kv = gpl3();
    memory_chunk_store chunks;
    const auto config = lossless_config();
    prefix_store store(chunks, make_codec(config), kv.cache.layout, {.chunk_tokens = 64});
    const session a = splice(kv, 300), b = splice(kv, 200, &textwrap(), 0, 150);
    store.put(a.view(), a.ids);
    store.put(b.view(), b.ids);

    const auto exported = store.export_session(a.ids, config, {{"model", "seqkv-tiny-llama"}});
    ASSERT_EQ(exported.tokens, 300u);
    EXPECT_LT(exported.skv.size(), 4096u) << "records hold ids and hashes, not payloads";
    const format::stream_reader reader(exported.skv);
    ASSERT_EQ(reader.resources().size(), 1u);
    EXPECT_EQ(reader.resources()[0], store.resource());
    for (const auto& c : reader.chunks()) EXPECT_TRUE(c.external());

    const auto back = decompress(exported.skv, 0, std::nullopt, store.provider());
    EXPECT_EQ(back.bytes, a.first(300)) << "bit-exact through the store's chunks";
    const auto range = decompress(exported.skv, 100, 250, store.provider());
    EXPECT_EQ(range.layout.tokens, 150u);
    // The same file compressed directly holds the same payloads inline: the store's chunks are the container's.
    compress_options o;
    o.codec = config;
    o.chunk_tokens = 64;
    std::uint64_t inline_payloads = 0;
    o.external_payloads = [&](std::uint64_t hash, std::span<const std::uint8_t>) {
        inline_payloads += chunks.contains(hash);
        return false;
    };
    (void)compress(a.view(), o, a.ids);
    EXPECT_EQ(inline_payloads, 5u);

    // Without the store: a resource_error naming it, before any chunk is decoded.
    try {
        (void)decompress(exported.skv);
        ADD_FAILURE() << "decoded without the store";
    } catch (const resource_error& e) {
        EXPECT_NE(std::string(e.what()).find("prefix store"), std::string::npos) << e.what();
    }
    // A prefix that ends inside a stored chunk exports up to that chunk's start.
    std::vector<std::int32_t> q(a.ids.begin(), a.ids.begin() + 150);
    EXPECT_EQ(store.export_session(q, config).tokens, 128u);
    // A session b shares 200 tokens with a; its export holds all 350 of its tokens.
    const auto eb = store.export_session(b.ids, config);
    ASSERT_EQ(eb.tokens, 350u);
    EXPECT_EQ(decompress(eb.skv, 0, std::nullopt, store.provider()).bytes, b.first(350));
}
