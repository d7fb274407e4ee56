// The resource table: what a v2 file needs besides itself (expected-KV tables, weights, prefix
// stores), filled from the codec and the caller, checked against the provider before decoding.
#include "api_test_support.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;

std::string hex16(std::uint64_t h) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    return hex;
}

const std::vector<resource_ref> declared = {{resource_kind::prefix_store, 0xabcdef0123456789ull, "shared prefixes"},
                                            {resource_kind::model_weights, 42, ""}};

resource_provider provider_of(const std::vector<resource_ref>& refs) {
    resource_provider r;
    for (const auto& ref : refs) r.add(ref.kind, ref.content_hash, std::make_shared<const int>(1));
    return r;
}

TEST(ResourceTable, DeclaredEntriesAreRecordedAndRequiredBeforeAnyChunk) {
    const auto cache = random_cache({1, 2, 8, 40, dtype::bf16}, 12);
    payload_store store;
    compress_options o;
    o.chunk_tokens = 16;
    o.declared_resources = declared;
    o.external_payloads = store.sink();
    const auto file = compress(cache.view(), o);
    format::stream_reader reader(file);
    ASSERT_EQ(reader.resources().size(), 2u);
    EXPECT_EQ(reader.resources()[0].kind, resource_kind::prefix_store);
    EXPECT_EQ(reader.resources()[0].content_hash, 0xabcdef0123456789ull);
    EXPECT_EQ(reader.resources()[0].name, "shared prefixes");
    EXPECT_EQ(reader.resources()[1].kind, resource_kind::model_weights);
    EXPECT_EQ(reader.resources()[1].name, "");
    // Nothing provided: the table entry is reported, not the chunk payloads behind it.
    expect_error_mentions<resource_error>([&] { decompress(file); }, {"prefix store", "abcdef0123456789", "shared prefixes"});
    auto partial = store.provider();
    partial.add(resource_kind::prefix_store, 0xabcdef0123456789ull, std::make_shared<const int>(1));
    expect_error_mentions<resource_error>([&] { decompress(file, 0, std::nullopt, partial); }, {"model weights", hex16(42)});
    partial.add(resource_kind::model_weights, 42, std::make_shared<const int>(2));
    expect_same_bytes(decompress(file, 0, std::nullopt, partial), cache.slice(0, 40));
    // The reader checks the table even for an empty range.
    EXPECT_THROW(reader.decode(make_codec(reader.header().codec), 5, 5), resource_error);
}

TEST(ResourceTable, CodecAndDeclaredEntriesMergeByKindAndHash) {
    const auto cache = random_cache({1, 1, 8, 8, dtype::bf16}, 13);
    auto codec = raw_probe();
    codec.resources = {{resource_kind::model_weights, 42, "from the codec"}, {resource_kind::expected_kv_table, 7, ""}};
    const auto file = write_stream(cache, codec, 8, 1, {}, declared);
    format::stream_reader reader(file);
    ASSERT_EQ(reader.resources().size(), 3u);
    EXPECT_EQ(reader.resources()[1].name, "");  // the caller's entry came first and is kept
    EXPECT_EQ(reader.resources()[2].kind, resource_kind::expected_kv_table);
    // A codec built with its resources counts as having them; the rest must come from the provider.
    EXPECT_THROW(reader.decode(raw_probe(), 0, 8, provider_of(declared)), resource_error);
    expect_same_bytes(reader.decode(codec, 0, 8, provider_of(declared)), cache.slice(0, 8));
    expect_same_bytes(reader.decode(raw_probe(), 0, 8, provider_of(reader.resources())), cache.slice(0, 8));
}

TEST(ResourceTable, MissingExpectedKvTableIsAResourceError) {
    constexpr std::uint32_t L = 2, H = 2, D = 32, V = 16, T = 48;
    std::mt19937 rng(14);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> means(std::size_t(L) * 2 * H * V * D);
    for (auto& m : means) m = normal(rng);
    auto table = std::make_shared<const predict::expected_kv_table>(L, H, D, V, false, std::move(means), std::vector<std::uint32_t>(V, 3));
    lossy_model_info m;
    m.head_dim = D;
    m.table = table.get();
    const lossy_config c = apply_lossy_option(lossy_preset("seqkv-step:0.5", m), "table", "1", m);
    ASSERT_EQ(c.table_hash, table->content_hash());

    const auto cache = random_cache({L, H, D, T, dtype::bf16}, 15);
    std::vector<std::int32_t> ids(T);
    for (std::uint32_t t = 0; t < T; ++t) ids[t] = std::int32_t(rng() % V);
    compress_options o;
    o.codec = lossy_codec_config(c);
    o.chunk_tokens = 16;
    add_expected_kv_table(o.resources, table);
    const auto file = compress(cache.view(), o, ids);
    format::stream_reader reader(file);
    ASSERT_EQ(reader.resources().size(), 1u);
    EXPECT_EQ(reader.resources()[0], (resource_ref{resource_kind::expected_kv_table, table->content_hash(), ""}));

    expect_error_mentions<resource_error>([&] { decompress(file); }, {"expected-KV table", hex16(table->content_hash())});
    resource_provider other;
    add_expected_kv_table(other, std::make_shared<const predict::expected_kv_table>(
                                     L, H, D, V, false, std::vector<float>(std::size_t(L) * 2 * H * V * D, 0.5f),
                                     std::vector<std::uint32_t>(V, 1)));
    EXPECT_THROW(decompress(file, 0, std::nullopt, other), resource_error);  // a table, but not this one
    const auto full = decompress(file, 0, std::nullopt, o.resources);
    ASSERT_EQ(full.layout.tokens, T);
    const auto part = decompress(file, 20, 40, o.resources);
    for (std::uint32_t l = 0; l < L; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value})
            for (std::uint32_t h = 0; h < H; ++h) {
                const auto a = full.block(l, kind).subspan((h * T + 20) * D * 2, 20 * D * 2);
                const auto b = part.block(l, kind).subspan(h * 20 * D * 2, 20 * D * 2);
                ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
            }
}

TEST(ResourceTable, HostileTablesAreRejectedBeforeAllocating) {
    const auto cache = random_cache({1, 1, 8, 8, dtype::bf16}, 16);
    const auto file = compress(cache.view(), chunked(8));
    format::preamble p = format::stream_reader(file).header();
    const auto body = format::encode_preamble(p);  // ends with keyframe_interval, resource count 0
    auto with_tail = [&](std::initializer_list<std::uint8_t> tail) {
        byte_vector b(body.begin(), body.end() - 4);
        b.insert(b.end(), tail);
        return with_preamble_body(file, b);
    };
    EXPECT_NO_THROW(format::stream_reader{with_tail({0, 0, 0, 0})});
    EXPECT_THROW(format::stream_reader{with_tail({0xff, 0xff, 0xff, 0xff})}, limit_error);  // 4 billion entries
    EXPECT_THROW(format::stream_reader{with_tail({2, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0})}, format_error);
    EXPECT_THROW(format::stream_reader{with_tail({1, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0x7f})},
                 limit_error);  // a 2 GiB name
    EXPECT_THROW(format::stream_reader{with_tail({1, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0})}, format_error);  // kind 0
    EXPECT_THROW(format::stream_reader{with_tail({1, 0, 0, 0, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0})}, format_error);  // kind 9
    EXPECT_THROW(format::stream_reader{with_tail({2, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0,  //
                                                  1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 0, 'x'})},
                 format_error);  // listed twice
    byte_vector no_keyframes(body.begin(), body.end() - 8);
    no_keyframes.insert(no_keyframes.end(), {0, 0, 0, 0, 0, 0, 0, 0});
    EXPECT_THROW(format::stream_reader{with_preamble_body(file, no_keyframes)}, format_error);
    format::container_limits tight;
    tight.max_resources = 1;
    EXPECT_THROW(format::stream_reader(with_tail({2, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0,  //
                                                  2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0}),
                                       tight),
                 limit_error);
}

TEST(ResourceTable, WriterRejectsMalformedEntries) {
    const auto cache = random_cache({1, 1, 8, 8, dtype::bf16}, 17);
    EXPECT_THROW(write_stream(cache, raw_probe(), 8, 1, {}, {{resource_kind(0), 1, ""}}), usage_error);
    EXPECT_THROW(write_stream(cache, raw_probe(), 8, 1, {}, {{resource_kind::prefix_store, 1, std::string(5000, 'n')}}), usage_error);
    EXPECT_THROW(write_stream(cache, xor_chain(), 8, 0), usage_error);
}

}  // namespace
