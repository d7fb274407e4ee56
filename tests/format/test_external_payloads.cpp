// External-payload chunk records: the payload lives elsewhere (an in-memory store here), the
// record names it by length and content_hash64; a missing or wrong payload is a clear error.
#include "api_test_support.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;

TEST(ExternalPayloads, RoundTripThroughAnInMemoryStore) {
    const auto cache = random_cache({2, 2, 16, 100, dtype::bf16}, 7);
    payload_store store;
    compress_options o;
    o.chunk_tokens = 32;
    o.external_payloads = store.sink();
    const auto inline_file = compress(cache.view(), chunked(32));
    const auto file = compress(cache.view(), o);
    EXPECT_EQ(store.payloads.size(), 4u);
    EXPECT_LT(file.size() + 3000, inline_file.size());  // the coded KV is not in the file
    format::stream_reader reader(file);
    for (const auto& c : reader.chunks()) EXPECT_TRUE(c.external());
    const auto provider = store.provider();
    expect_same_bytes(decompress(file, 0, std::nullopt, provider), cache.slice(0, 100));
    expect_same_bytes(decompress(file, 40, 70, provider), cache.slice(40, 70));
    // The same payloads as the inline file, byte for byte.
    format::stream_reader inline_reader(inline_file);
    for (std::size_t i = 0; i < reader.chunks().size(); ++i) {
        auto rec = reader.record(i);
        EXPECT_TRUE(rec.payload.empty());
        format::resolve_payload(rec, provider);
        const auto want = inline_reader.record(i).payload;
        EXPECT_TRUE(std::equal(rec.payload.begin(), rec.payload.end(), want.begin(), want.end()));
    }
}

TEST(ExternalPayloads, ALookupFunctionCanServeThem) {
    const auto cache = random_cache({1, 2, 8, 50, dtype::f16}, 8);
    payload_store store;
    const auto file = write_stream(cache, raw_probe(), 16, 1, {.external_payloads = store.sink()});
    resource_provider lookup([&](resource_kind kind, std::uint64_t hash) -> std::shared_ptr<const void> {
        if (kind != resource_kind::chunk_payload || !store.payloads.count(hash)) return nullptr;
        return std::make_shared<const byte_vector>(store.payloads.at(hash));
    });
    expect_same_bytes(format::stream_reader(file).decode(raw_probe(), 0, 50, lookup), cache.slice(0, 50));
}

TEST(ExternalPayloads, MinimumSizeAndTheCallbackDecideWhatStaysInline) {
    const auto cache = random_cache({1, 2, 8, 70, dtype::bf16}, 9);  // chunks of 32, 32 and 6 tokens
    payload_store store;
    int offered = 0;
    format::writer_options w;
    w.min_external_payload_bytes = 32 * 2 * 2 * 8 * 2;  // a full raw chunk
    w.external_payloads = [&](std::uint64_t hash, std::span<const std::uint8_t> payload) {
        EXPECT_EQ(hash, content_hash64(payload));
        if (++offered == 2) return false;  // the store declines the second one
        return store.sink()(hash, payload);
    };
    const auto file = write_stream(cache, raw_probe(), 32, 1, w, {}, true);
    format::stream_reader reader(file);
    EXPECT_EQ(offered, 2);
    ASSERT_EQ(reader.chunks().size(), 3u);
    EXPECT_TRUE(reader.chunks()[0].external());
    EXPECT_FALSE(reader.chunks()[1].external());
    EXPECT_FALSE(reader.chunks()[2].external());  // too small to be offered
    expect_same_bytes(reader.decode(raw_probe(), 0, 70, store.provider()), cache.slice(0, 70));
    EXPECT_EQ(reader.token_ids().size(), 70u);  // side data stays in the record, no lookup needed
    // Tokens of the inline chunks decode without the store.
    expect_same_bytes(reader.decode(raw_probe(), 32, 70), cache.slice(32, 70));
}

TEST(ExternalPayloads, MissingPayloadIsAResourceErrorNamingIt) {
    const auto cache = random_cache({1, 1, 8, 40, dtype::bf16}, 10);
    payload_store store;
    const auto file = compress(cache.view(), chunked(16, store.sink()));
    format::stream_reader reader(file);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)reader.record(0).payload_hash);
    expect_error_mentions<resource_error>([&] { decompress(file); }, {"chunk payload", hex, "tokens 0+16"});
    store.payloads.erase(reader.record(1).payload_hash);
    const auto provider = store.provider();
    expect_same_bytes(decompress(file, 0, 16, provider), cache.slice(0, 16));  // chunk 0 is there
    EXPECT_THROW(decompress(file, 0, 17, provider), resource_error);
}

TEST(ExternalPayloads, WrongBytesAreDetected) {
    const auto cache = random_cache({1, 1, 8, 40, dtype::bf16}, 11);
    payload_store store;
    const auto file = compress(cache.view(), chunked(16, store.sink()));
    const auto h = format::stream_reader(file).record(0).payload_hash;
    auto flipped = store;
    flipped.payloads[h][3] ^= 0x10;  // same length, other content
    EXPECT_THROW(decompress(file, 0, std::nullopt, flipped.provider()), checksum_error);
    auto shorter = store;
    shorter.payloads[h].pop_back();
    expect_error_mentions<format_error>([&] { decompress(file, 0, std::nullopt, shorter.provider()); }, {"bytes", "chunk payload"});
    auto longer = store;
    longer.payloads[h].push_back(0);
    EXPECT_THROW(decompress(file, 0, std::nullopt, longer.provider()), format_error);
    // A payload registered under another kind is not a chunk payload.
    resource_provider wrong_kind;
    for (const auto& [hash, bytes] : store.payloads)
        wrong_kind.add(resource_kind::prefix_store, hash, std::make_shared<const byte_vector>(bytes));
    EXPECT_THROW(decompress(file, 0, std::nullopt, wrong_kind), resource_error);
}

TEST(Keyframes, TheRegistrysCodecsAreSelfContained) {
    const auto cache = random_cache({1, 2, 4, 77, dtype::f16}, 4);
    compress_options o;
    o.chunk_tokens = 16;
    o.keyframe_interval = 3;
    format::stream_reader lossless(compress(cache.view(), o));
    EXPECT_EQ(lossless.header().keyframe_interval, 1u);  // every chunk is a keyframe
    for (const auto& c : lossless.chunks()) EXPECT_EQ(c.flags, 0);
}

}  // namespace
