// Format version 1 stays readable: the files the v1 writer (commit e508e1c) made decode to the
// same bytes today (tests/vectors/v1/MANIFEST: crc32c and size of the decoded KV of all tokens).
#include "api_test_support.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "seqkv/core/file_io.hpp"
#include "seqkv/io/kv_safetensors.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;
namespace fs = std::filesystem;

const fs::path vectors = fs::path(SEQKV_VECTORS_DIR) / "v1";
constexpr std::uint64_t vector_tokens = 96;  // tokens 0..95 of data/kv/gpl3.safetensors

struct manifest_entry {
    std::string name;
    std::uint32_t crc = 0;
    std::size_t bytes = 0;
};

std::vector<manifest_entry> manifest() {
    std::ifstream in(vectors / "MANIFEST");
    std::vector<manifest_entry> out;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream s(line);
        manifest_entry e;
        std::string crc;
        s >> e.name >> crc >> e.bytes;
        e.crc = std::uint32_t(std::stoul(crc, nullptr, 16));
        out.push_back(e);
    }
    return out;
}

byte_vector load(const std::string& name) { return read_file(vectors / (name + ".skv")); }

class V1Vector : public ::testing::TestWithParam<manifest_entry> {};

TEST_P(V1Vector, DecodeToTheManifestBytes) {
    const auto& e = GetParam();
    const auto file = load(e.name);
    format::stream_reader reader(file);
    EXPECT_EQ(reader.version(), 1);
    EXPECT_TRUE(reader.resources().empty());
    EXPECT_EQ(reader.header().keyframe_interval, 1u);
    EXPECT_EQ(reader.tokens(), vector_tokens);
    EXPECT_EQ(reader.header().chunk_tokens, 64u);
    EXPECT_TRUE(reader.header().has_token_ids && reader.header().has_nll);
    EXPECT_EQ(reader.token_ids().size(), vector_tokens);
    for (const auto& c : reader.chunks()) EXPECT_EQ(c.flags, 0);
    const auto all = decompress(file);
    EXPECT_EQ(all.bytes.size(), e.bytes);
    EXPECT_EQ(crc32c(all.bytes), e.crc) << e.name;
    EXPECT_EQ(crc32c(decompress<backend::scalar>(file).bytes), e.crc) << e.name;
    // A range across the chunk boundary is the same slice of the whole.
    const auto part = decompress(file, 50, 70);
    const std::size_t row = std::size_t(all.layout.head_dim) * dtype_size(all.layout.type);
    for (std::uint32_t l = 0; l < all.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value})
            for (std::uint32_t h = 0; h < all.layout.kv_heads; ++h) {
                const auto a = all.block(l, kind).subspan((h * vector_tokens + 50) * row, 20 * row);
                const auto b = part.block(l, kind).subspan(h * 20 * row, 20 * row);
                ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << e.name;
            }
    // An attachment added today keeps the file at version 1.
    const auto copy = format::with_attachment(file, "extra", {9});
    EXPECT_EQ(format::stream_reader(copy).version(), 1);
    EXPECT_EQ(crc32c(decompress(copy).bytes), e.crc);
}

INSTANTIATE_TEST_SUITE_P(Committed, V1Vector, ::testing::ValuesIn(manifest()), [](const auto& info) {
    std::string n = info.param.name;
    for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return n;
});

struct fixture {
    io::safetensors_file file = io::safetensors_file::load(fs::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors");
    kv_cache_view cache = io::kv_view(file);
    /// The fixture's first 96 tokens as a cache view (same memory, same strides).
    kv_cache_view first_tokens() const {
        kv_cache_view v = cache;
        v.layout.tokens = vector_tokens;
        for (auto* ts : {&v.keys, &v.values})
            for (auto& t : *ts) t.tokens = vector_tokens;
        return v;
    }
};

TEST(V1Vectors, LosslessVectorsAreTheFixtureBytes) {
    ASSERT_EQ(manifest().size(), 8u);
    const fixture f;
    const auto want = chunk_buffer::for_layout(f.cache.layout, vector_tokens);
    auto expect = want;
    for (std::uint32_t l = 0; l < f.cache.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value})
            gather_block(f.cache.tensor(l, kind), 0, vector_tokens, expect.block(l, kind));
    for (const char* name : {"lossless", "lossless-rope"}) {
        const auto file = load(name);
        expect_same_bytes(decompress(file), expect);
        format::stream_reader reader(file);
        const auto ids = io::token_ids_of(f.file, f.cache.layout.tokens).value();
        EXPECT_TRUE(std::equal(ids.begin(), ids.begin() + vector_tokens, reader.token_ids().begin())) << name;
    }
}

// Today's encoder with each vector's recorded configuration decodes to the same bytes: a codec
// change that alters decoded output shows up here (the decode check above is the format's). For
// lossy configurations that code keys pre-RoPE only the first chunk is compared: later chunks
// depend on the sequence positions the writer hands the encoder (chunk_input::position_base),
// which the v1 writer gave chunk-relative.
TEST(V1Vectors, TodaysEncoderReproducesTheDecodedBytes) {
    const fixture f;
    const auto ids = io::token_ids_of(f.file, f.cache.layout.tokens).value();
    const auto nll = io::nll_of(f.file, f.cache.layout.tokens).value();
    for (const auto& e : manifest()) {
        const auto vector_file = load(e.name);
        const auto config = format::stream_reader(vector_file).header().codec;
        const bool position_dependent =
            config.codec_id == std::uint16_t(codec_family::lossy) && lossy_config::from_bytes(config.params).keys_prerope;
        compress_options o;
        o.codec = config;
        o.chunk_tokens = 64;
        const auto first = f.first_tokens();
        const auto file = compress(first, o, std::span(ids).first(vector_tokens), std::span(nll).first(vector_tokens));
        EXPECT_EQ(format::stream_reader(file).version(), format::format_version);
        if (position_dependent) EXPECT_TRUE(decompress(file, 0, 64).bytes == decompress(vector_file, 0, 64).bytes) << e.name;
        else EXPECT_EQ(crc32c(decompress(file).bytes), e.crc) << e.name;
        const auto scalar = compress<backend::scalar>(first, o, std::span(ids).first(vector_tokens), std::span(nll).first(vector_tokens));
        EXPECT_TRUE(scalar == file) << e.name << ": the scalar and simd backends encode differently";
    }
}

}  // namespace
