// Dependent chunks and keyframes: a codec whose chunks need the previous chunk's state decodes
// whole and by any range (replayed from the keyframe at or before it); the index marks keyframes.
#include "format_test_support.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;

constexpr std::uint64_t T = 77;  // 10 chunks of 8 tokens (the last one 5)

class KeyframeRanges : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(KeyframeRanges, WholeAndRangesRoundTripFromAnyStart) {
    const std::uint32_t K = GetParam();
    const auto cache = random_cache({2, 2, 4, T, dtype::bf16}, 3);
    const auto file = write_stream(cache, xor_chain(), 8, K, {}, {}, true);
    format::stream_reader reader(file);
    EXPECT_EQ(reader.version(), 2);
    EXPECT_EQ(reader.header().keyframe_interval, K);
    ASSERT_EQ(reader.chunks().size(), 10u);
    for (std::size_t i = 0; i < reader.chunks().size(); ++i) {
        EXPECT_EQ(reader.chunks()[i].dependent(), i % K != 0) << "chunk " << i;
        EXPECT_EQ(reader.keyframe_of(i), i - i % K);
        EXPECT_EQ(reader.record(i).flags, reader.chunks()[i].flags);
    }
    const auto codec = xor_chain();
    expect_same_bytes(reader.decode(codec), cache.slice(0, T));
    for (std::uint64_t a = 0; a <= T; a += 5)
        for (std::uint64_t b : {a, a + 1, a + 8, a + 19, T})
            if (b <= T) expect_same_bytes(reader.decode(codec, a, b), cache.slice(a, b));
    EXPECT_THROW(reader.decode(codec, 70, 78), usage_error);
}

INSTANTIATE_TEST_SUITE_P(KeyframeIntervals, KeyframeRanges, ::testing::Values(1u, 3u, 4u, 1000u));

TEST(DependentChunks, SelfContainedCodecsNeverSeeACarryAndEveryChunkIsAKeyframe) {
    const auto cache = random_cache({1, 2, 4, T, dtype::f16}, 4);
    const auto file = write_stream(cache, raw_probe(), 8, 5);
    format::stream_reader reader(file);
    EXPECT_EQ(reader.header().keyframe_interval, 1u);  // recorded as 1: nothing depends on anything
    for (const auto& c : reader.chunks()) EXPECT_FALSE(c.dependent());
    expect_same_bytes(reader.decode(raw_probe(), 13, 61), cache.slice(13, 61));
}

TEST(DependentChunks, BrokenKeyframeChainsAreFormatErrors) {
    const auto cache = random_cache({1, 1, 4, 40, dtype::bf16}, 5);
    const auto file = write_stream(cache, xor_chain(), 8, 2);  // chunks 0 2 4 keyframes, 1 3 dependent
    const auto chunks = format::stream_reader(file).chunks();

    auto first_dependent = file;
    set_chunk_flags(first_dependent, chunks, 0, format::chunk_dependent);
    EXPECT_THROW(format::stream_reader{first_dependent}, format_error);

    auto keyframe_dependent = file;  // chunk 2 must be a keyframe at interval 2
    set_chunk_flags(keyframe_dependent, chunks, 2, format::chunk_dependent);
    EXPECT_THROW(format::stream_reader{keyframe_dependent}, format_error);

    auto extra_keyframe = file;  // allowed by the format; the codec sees a state the encoder did not have
    set_chunk_flags(extra_keyframe, chunks, 3, 0);
    format::stream_reader r(extra_keyframe);
    EXPECT_EQ(r.keyframe_of(3), 3u);
    EXPECT_THROW(r.decode(xor_chain(), 24, 32), format_error);
    expect_same_bytes(r.decode(xor_chain(), 0, 24), cache.slice(0, 24));

    // The record and the index disagree about a chunk's flags.
    auto disagree = file;
    disagree[chunks[1].offset + 16] = 0;
    put_le32(disagree, chunks[1].offset + chunks[1].record_bytes - 4,
             crc32c(std::span(disagree).subspan(chunks[1].offset, chunks[1].record_bytes - 4)));
    EXPECT_THROW(format::stream_reader(disagree).decode(xor_chain()), format_error);

    // Unknown flag bits.
    auto unknown = file;
    set_chunk_flags(unknown, chunks, 1, 0x80 | format::chunk_dependent);
    EXPECT_THROW(format::stream_reader{unknown}, format_error);

    // A self-contained codec asked to decode dependent chunks.
    EXPECT_THROW(format::stream_reader(file).decode(raw_probe()), format_error);
}

TEST(DependentChunks, AMissingEarlierPayloadStopsALaterRange) {
    const auto cache = random_cache({1, 2, 4, 48, dtype::bf16}, 6);
    payload_store store;
    const auto file = write_stream(cache, xor_chain(), 8, 4, {.external_payloads = store.sink()});
    format::stream_reader reader(file);
    for (const auto& c : reader.chunks()) EXPECT_TRUE(c.external());
    expect_same_bytes(reader.decode(xor_chain(), 26, 40, store.provider()), cache.slice(26, 40));
    // Chunk 3 (tokens 24..31) is replayed from keyframe 0: without chunk 1's payload it cannot decode.
    const auto h1 = reader.record(1).payload_hash;
    store.payloads.erase(h1);
    EXPECT_THROW(reader.decode(xor_chain(), 26, 30, store.provider()), resource_error);
    expect_same_bytes(reader.decode(xor_chain(), 32, 48, store.provider()), cache.slice(32, 48));  // keyframe 4 onwards
    expect_error_mentions<resource_error>([&] { reader.decode(xor_chain(), 26, 30, store.provider()); },
                                          {"chunk payload", "tokens 8+8"});
}

}  // namespace
