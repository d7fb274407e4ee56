// safetensors <-> .skv: every tensor and the metadata come back; ranges slice the token axis.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "seqkv/convert/skv_file.hpp"
#include "seqkv/io/mapped_file.hpp"
#include "seqkv/preset.hpp"
#include <unistd.h>

namespace {

using namespace seqkv;
using io::safetensors_builder;
using io::safetensors_file;

byte_vector random_bytes(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    byte_vector b(n);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    return b;
}

byte_vector bf16_normal(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0, 1);
    byte_vector b(2 * n);
    for (std::size_t i = 0; i < n; ++i) store_from_float(b.data(), dtype::bf16, i, d(rng));
    return b;
}

constexpr std::uint64_t T = 37;

byte_vector make_dump() {
    safetensors_builder b;
    std::vector<std::int32_t> ids(T);
    std::vector<float> nll(T);
    for (std::uint64_t t = 0; t < T; ++t) {
        ids[t] = std::int32_t(t * 7 % 11);
        nll[t] = 0.25f * float(t);
    }
    b.add("tokens", dtype::i32, {T}, {reinterpret_cast<const std::uint8_t*>(ids.data()), 4 * T});
    b.add("nll", dtype::f32, {T}, {reinterpret_cast<const std::uint8_t*>(nll.data()), 4 * T});
    for (int l = 0; l < 2; ++l) {
        const auto p = "layer." + std::to_string(l);
        b.add(p + ".k", dtype::bf16, {2, T, 8}, bf16_normal(2 * T * 8, 10 + l));
        b.add(p + ".v", dtype::bf16, {2, T, 8}, random_bytes(2 * 2 * T * 8, 20 + l));  // NaNs and all
        b.add(p + ".q", dtype::bf16, {4, T, 8}, bf16_normal(4 * T * 8, 30 + l));
    }
    b.add("position_bias", dtype::i64, {3}, random_bytes(24, 5));
    b.set_metadata("model", "unit-test");
    b.set_metadata("rope_theta", "10000");
    return b.serialize();
}

TEST(SkvFile, EveryTensorAndTheMetadataComeBack) {
    const auto image = make_dump();
    const auto original = safetensors_file::parse(image);
    compress_options o;
    o.chunk_tokens = 8;
    io::skv_summary summary;
    const auto skv = io::compress_safetensors(original, o, &summary);
    EXPECT_EQ(summary.output_bytes, skv.size());
    const auto back = safetensors_file::parse(io::decompress_to_safetensors(skv));
    EXPECT_EQ(back.metadata(), original.metadata());
    ASSERT_EQ(back.tensors().size(), original.tensors().size());
    for (const auto& t : original.tensors()) {
        const auto& u = back.at(t.name);
        EXPECT_EQ(u.type, t.type) << t.name;
        EXPECT_EQ(u.shape, t.shape) << t.name;
        EXPECT_TRUE(std::equal(u.bytes.begin(), u.bytes.end(), t.bytes.begin(), t.bytes.end())) << t.name;
    }
}

TEST(SkvFile, TokenRangeSlicesEveryTokenAxis) {
    const auto original = safetensors_file::parse(make_dump());
    compress_options o;
    o.chunk_tokens = 8;
    const auto skv = io::compress_safetensors(original, o);
    const std::uint64_t a = 5, b = 21;
    const auto part = safetensors_file::parse(io::decompress_to_safetensors(skv, a, b));
    for (const auto& name : {"layer.1.k", "layer.0.v", "layer.1.q"}) {
        const auto& full = original.at(name);
        const auto& cut = part.at(name);
        ASSERT_EQ(cut.shape[1], b - a);
        const std::size_t row = full.shape[2] * 2;
        for (std::uint64_t h = 0; h < full.shape[0]; ++h)
            EXPECT_TRUE(std::equal(cut.bytes.begin() + h * (b - a) * row, cut.bytes.begin() + (h + 1) * (b - a) * row,
                                   full.bytes.begin() + (h * T + a) * row))
                << name;
    }
    EXPECT_EQ(part.at("tokens").shape[0], b - a);
    EXPECT_EQ(load_le32(part.at("tokens").bytes.data()), load_le32(original.at("tokens").bytes.data() + 4 * a));
    EXPECT_EQ(part.at("position_bias").bytes.size(), 24u);
}

TEST(SkvFile, StreamedFilesEqualTheInMemoryOnes) {
    // A mapped dump compressed through a sink, and a .skv decoded chunk by chunk into a file
    // (write_at), give exactly the bytes of the in-memory functions: whole and ranges that start
    // and end inside chunks, lossless and lossy.
    const auto dir = std::filesystem::temp_directory_path() / ("seqkv_skv_stream_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto dump = dir / "d.safetensors";
    write_file(dump, make_dump());
    const auto fixture = std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors";  // real KV (lossy needs finite values)
    for (const auto& [path, preset] : {std::pair{dump, std::string("lossless")}, std::pair{fixture, std::string("int8")}}) {
        const auto mapped = safetensors_file::map(path);
        const auto loaded = safetensors_file::load(path);
        ASSERT_EQ(mapped.tensors().size(), loaded.tensors().size());
        compress_options o = preset == "lossless" ? compress_options{} : seqkv::preset(preset, {.head_dim = 64});
        o.chunk_tokens = 8;
        byte_vector streamed;
        io::compress_safetensors_to(mapped, o, [&](std::span<const std::uint8_t> b) { streamed.insert(streamed.end(), b.begin(), b.end()); });
        const auto skv = io::compress_safetensors(loaded, o);
        ASSERT_EQ(streamed, skv) << preset;
        for (const auto& [a, b] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{{0, T}, {5, 21}, {8, 16}, {36, 37}, {9, 9}}) {
            io::file_sink sink(dir / "out.safetensors");
            io::decompress_to_safetensors_at(skv, [&](std::uint64_t at, std::span<const std::uint8_t> part) { sink.write_at(at, part); }, a, b);
            sink.commit();
            EXPECT_EQ(read_file(dir / "out.safetensors"), io::decompress_to_safetensors(skv, a, b)) << preset << " " << a << ":" << b;
        }
        io::file_sink whole(dir / "out.safetensors");
        io::decompress_to_safetensors_at(skv, [&](std::uint64_t at, std::span<const std::uint8_t> part) { whole.write_at(at, part); });
        whole.commit();
        EXPECT_EQ(read_file(dir / "out.safetensors"), io::decompress_to_safetensors(skv)) << preset;
    }
    const auto loaded = safetensors_file::load(dump);
    {  // a failed decode leaves no file behind: the sink's temporary file goes with it
        io::file_sink sink(dir / "bad.safetensors");
        EXPECT_THROW(io::decompress_to_safetensors_at(io::compress_safetensors(loaded, {}),
                                                      [&](std::uint64_t at, std::span<const std::uint8_t> p) { sink.write_at(at, p); }, 3, 40),
                     usage_error);
    }
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 2);  // d + out
    std::filesystem::remove_all(dir);
}

TEST(SkvFile, FixtureRoundTripsBitExact) {
    const auto dir = std::filesystem::path(SEQKV_DATA_DIR) / "kv";
    ASSERT_TRUE(std::filesystem::exists(dir)) << "the real KV fixture is missing: " << dir;
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        if (e.path().extension() != ".safetensors") continue;
        ++files;
        const auto original = safetensors_file::load(e.path());
        const auto skv = io::compress_safetensors(original, {});
        EXPECT_LT(skv.size(), std::filesystem::file_size(e.path())) << e.path();
        const auto back = safetensors_file::parse(io::decompress_to_safetensors(skv));
        ASSERT_EQ(back.tensors().size(), original.tensors().size());
        for (const auto& t : original.tensors()) {
            const auto& u = back.at(t.name);
            ASSERT_EQ(u.shape, t.shape) << t.name;
            ASSERT_TRUE(std::equal(u.bytes.begin(), u.bytes.end(), t.bytes.begin(), t.bytes.end())) << t.name;
        }
        EXPECT_EQ(back.metadata(), original.metadata());
    }
    EXPECT_GE(files, 2);
}

}  // namespace

namespace {

TEST(SkvFile, SummaryCountsEveryChunkIncludingTheLastPartialOne) {
    const auto original = seqkv::io::safetensors_file::parse(make_dump());
    for (std::uint32_t chunk : {8u, 37u, 64u}) {  // 37 tokens: partial last chunk, exactly one chunk, one partial chunk
        seqkv::compress_options o;
        o.chunk_tokens = chunk;
        seqkv::io::skv_summary summary;
        const auto skv = seqkv::io::compress_safetensors(original, o, &summary);
        seqkv::format::stream_reader reader(skv);
        std::uint64_t records = 0;
        for (const auto& c : reader.chunks()) records += c.record_bytes;
        EXPECT_EQ(summary.kv_coded_bytes, records) << chunk;
        EXPECT_GT(summary.kv_coded_bytes, summary.kv_bytes / 4) << chunk;
    }
}

}  // namespace

namespace {

// A large constant extra tensor (an attention mask of zeros) codes to a few hundred bytes, past
// the reader's plausibility bound for coded tensors: the writer must store it raw instead of
// writing a file its own reader refuses.
TEST(SkvFile, LargeConstantExtraTensorStaysReadable) {
    auto image = make_dump();
    auto original = safetensors_file::parse(image);
    safetensors_builder b;
    for (const auto& t : original.tensors()) b.add(t.name, t.type, t.shape, t.bytes);
    b.add("attention_mask", dtype::bf16, {1024, 1024}, byte_vector(2u * 1024 * 1024, 0));
    b.set_metadata(original.metadata());
    const auto with_mask = safetensors_file::parse(b.serialize());
    compress_options o;
    o.chunk_tokens = 8;
    const auto back = safetensors_file::parse(io::decompress_to_safetensors(io::compress_safetensors(with_mask, o)));
    const auto& mask = back.at("attention_mask");
    EXPECT_EQ(mask.shape, (std::vector<std::uint64_t>{1024, 1024}));
    EXPECT_TRUE(std::all_of(mask.bytes.begin(), mask.bytes.end(), [](std::uint8_t x) { return x == 0; }));
}

}  // namespace
