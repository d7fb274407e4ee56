// A small v2 file using every v2 feature (resource table, external and inline payloads,
// dependent chunks, side data, an attachment): every flipped byte and every truncation is a
// seqkv error — never a crash, a hang or a huge allocation.
#include <algorithm>

#include "format_test_support.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;

struct small_v2_file {
    owned_cache cache = random_cache({1, 2, 4, 21, dtype::bf16}, 18);
    payload_store store;
    byte_vector file;
    resource_provider provider;
    small_v2_file() {
        format::writer_options w;
        w.min_external_payload_bytes = 100;  // the last, short chunk stays inline
        w.external_payloads = [this, n = 0](std::uint64_t h, std::span<const std::uint8_t> p) mutable {
            return ++n % 2 == 1 && store.sink()(h, p);  // every other chunk goes to the store
        };
        file = write_stream(cache, xor_chain(), 4, 3, w, {{resource_kind::prefix_store, 99, "store"}}, true);
        provider = store.provider();
        provider.add(resource_kind::prefix_store, 99, std::make_shared<const int>(0));
    }
    chunk_buffer decode(std::span<const std::uint8_t> bytes) const {
        format::stream_reader reader(bytes);
        auto out = reader.decode(xor_chain(), 0, std::nullopt, provider);
        (void)reader.token_ids(), (void)reader.nll();
        return out;
    }
};

TEST(Corruption, TheSmallFileUsesEveryFeature) {
    const small_v2_file f;
    format::stream_reader reader(f.file);
    EXPECT_EQ(reader.version(), 2);
    EXPECT_EQ(reader.resources().size(), 1u);
    bool external = false, inline_ = false, dependent = false;
    for (const auto& c : reader.chunks()) external |= c.external(), inline_ |= !c.external(), dependent |= c.dependent();
    EXPECT_TRUE(external && inline_ && dependent);
    expect_same_bytes(f.decode(f.file), f.cache.slice(0, 21));
}

TEST(Corruption, EveryFlippedByteIsDetected) {
    const small_v2_file f;
    for (std::size_t i = 0; i < f.file.size(); ++i)
        for (std::uint8_t mask : {0x01, 0x80}) {
            auto bad = f.file;
            bad[i] ^= mask;
            EXPECT_THROW(f.decode(bad), seqkv::error) << "byte " << i << " mask " << int(mask);
        }
}

TEST(Corruption, EveryTruncationIsDetected) {
    const small_v2_file f;
    for (std::size_t n = 0; n < f.file.size(); ++n) {
        const byte_vector cut(f.file.begin(), f.file.begin() + std::ptrdiff_t(n));
        EXPECT_THROW(f.decode(cut), seqkv::error) << "truncated to " << n;
    }
    auto longer = f.file;
    longer.push_back(0);
    EXPECT_THROW(f.decode(longer), seqkv::error);
}

TEST(Corruption, VersionAndReservedFields) {
    const small_v2_file f;
    for (std::uint8_t v : {0, 3, 255}) {
        auto bad = f.file;
        bad[8] = v;
        EXPECT_THROW(format::stream_reader{bad}, format_error) << "version " << int(v);
    }
    auto reserved = f.file;
    reserved[10] = 1;
    EXPECT_THROW(format::stream_reader{reserved}, format_error);
}

}  // namespace

TEST(Utf8Strings, MetadataThatIsNotUtf8IsRefusedOnBothSides) {
    seqkv::format::preamble p;
    p.layout = {1, 1, 2, 0, seqkv::dtype::bf16};
    p.chunk_tokens = 4;
    p.metadata["model"] = "xy";
    auto body = seqkv::format::encode_preamble(p);
    const std::uint8_t xy[] = {'x', 'y'};
    const auto at = std::search(body.begin(), body.end(), std::begin(xy), std::end(xy));
    ASSERT_NE(at, body.end());
    at[0] = 0xC3, at[1] = 0x28;  // an invalid two-byte sequence
    EXPECT_THROW(seqkv::format::decode_preamble(body, {}), seqkv::format_error);
    p.metadata["model"] = "\xC3\x28";
    EXPECT_THROW(seqkv::format::encode_preamble(p), seqkv::usage_error);
}
