// safetensors reader/writer: round trips, the KV convention, and malformed input.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"

namespace {

using namespace seqkv;
using seqkv::io::safetensors_builder;
using seqkv::io::safetensors_file;

byte_vector iota_bytes(std::size_t n, std::uint8_t start = 0) {
    byte_vector b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(start + i * 7);
    return b;
}

// A file image made from a raw JSON header and a data section.
byte_vector raw_file(const std::string& header, std::size_t data_bytes, std::uint64_t claimed_len = ~0ull) {
    byte_vector out;
    byte_writer w(out);
    w.put<std::uint64_t>(claimed_len == ~0ull ? header.size() : claimed_len);
    out.insert(out.end(), header.begin(), header.end());
    out.resize(out.size() + data_bytes, 0x5a);
    return out;
}

TEST(Safetensors, RoundTripKeepsTensorsAndMetadata) {
    safetensors_builder b;
    auto k = iota_bytes(2 * 3 * 4 * 2);
    auto tok = iota_bytes(3 * 4, 9);
    b.add("layer.0.k", dtype::bf16, {2, 3, 4}, k);
    b.add("tokens", dtype::i32, {3}, tok);
    b.add("scalar", dtype::f32, {}, iota_bytes(4));
    b.add("empty", dtype::f16, {0, 5}, {});
    b.set_metadata("model", "tiny");
    b.set_metadata("rope_theta", "10000");
    auto image = b.serialize();
    EXPECT_EQ((8 + load_le32(image.data())) % 8, 0u);  // data section is 8-byte aligned
    auto f = safetensors_file::parse(image);
    ASSERT_EQ(f.tensors().size(), 4u);
    EXPECT_EQ(f.metadata().at("model"), "tiny");
    const auto& kt = f.at("layer.0.k");
    EXPECT_EQ(kt.type, dtype::bf16);
    EXPECT_EQ(kt.shape, (std::vector<std::uint64_t>{2, 3, 4}));
    EXPECT_TRUE(std::equal(kt.bytes.begin(), kt.bytes.end(), k.begin(), k.end()));
    EXPECT_EQ(f.at("scalar").element_count(), 1u);
    EXPECT_EQ(f.at("empty").bytes.size(), 0u);
    EXPECT_EQ(f.find("nope"), nullptr);
    EXPECT_THROW(f.at("nope"), format_error);
}

TEST(Safetensors, SaveAndLoadFromDisk) {
    safetensors_builder b;
    b.add("x", dtype::u8, {5}, iota_bytes(5));
    const auto path = std::filesystem::temp_directory_path() / "seqkv_test_roundtrip.safetensors";
    b.save(path);
    auto f = safetensors_file::load(path);
    EXPECT_EQ(f.at("x").bytes.size(), 5u);
    std::filesystem::remove(path);
    EXPECT_THROW(safetensors_file::load(path), io_error);
}

TEST(Safetensors, BuilderRejectsInconsistentInput) {
    safetensors_builder b;
    EXPECT_THROW(b.add("x", dtype::f32, {3}, iota_bytes(8)), usage_error);
    b.add("x", dtype::u8, {1}, iota_bytes(1));
    EXPECT_THROW(b.add("x", dtype::u8, {1}, iota_bytes(1)), usage_error);
}

struct bad_case {
    const char* what;
    byte_vector image;
};

TEST(Safetensors, MalformedFilesRaiseFormatErrors) {
    const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::vector<bad_case> cases = {
        {"shorter than length field", byte_vector{1, 2, 3}},
        {"header length past EOF", raw_file(ok, 8, 1000)},
        {"header length beyond limit", raw_file(ok, 8, 1ull << 40)},
        {"not json", raw_file("{not json", 0)},
        {"json array", raw_file("[1,2]", 0)},
        {"unknown dtype", raw_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2)},
        {"negative dim", raw_file(R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", 2)},
        {"float dim", raw_file(R"({"a":{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}})", 2)},
        {"offsets past EOF", raw_file(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}})", 8)},
        {"begin after end", raw_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 8)},
        {"size mismatch", raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)},
        {"overlap", raw_file(R"({"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},)"
                             R"("b":{"dtype":"U8","shape":[6],"data_offsets":[4,10]}})", 10)},
        {"huge shape", raw_file(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 8)},
        {"huge shape fits u64", raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,16],"data_offsets":[0,8]}})", 8)},
        {"rank too high", raw_file(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1)},
        {"missing offsets", raw_file(R"({"a":{"dtype":"U8","shape":[1]}})", 1)},
        {"metadata not strings", raw_file(R"({"__metadata__":{"x":1}})", 0)},
    };
    for (const auto& c : cases) {
        try {
            (void)safetensors_file::parse(c.image);
            ADD_FAILURE() << c.what << ": accepted";
        } catch (const format_error& e) {
            EXPECT_NE(std::string(e.what()).find("seqkv"), std::string::npos) << c.what;
        } catch (const std::exception& e) {
            ADD_FAILURE() << c.what << ": wrong exception type: " << e.what();
        }
    }
    EXPECT_NO_THROW((void)safetensors_file::parse(raw_file(ok, 8)));
}

TEST(Safetensors, EveryTruncationAndRandomCorruptionIsHandled) {
    safetensors_builder b;
    b.add("layer.0.k", dtype::bf16, {1, 4, 2}, iota_bytes(16));
    b.add("layer.0.v", dtype::bf16, {1, 4, 2}, iota_bytes(16, 3));
    b.set_metadata("model", "m");
    const auto image = b.serialize();
    for (std::size_t n = 0; n < image.size(); ++n) {
        byte_vector cut(image.begin(), image.begin() + n);
        EXPECT_THROW((void)safetensors_file::parse(cut), format_error) << "truncated to " << n;
    }
    std::mt19937 rng(7);
    for (int trial = 0; trial < 3000; ++trial) {
        byte_vector bad = image;
        const int flips = 1 + trial % 4;
        for (int i = 0; i < flips; ++i) bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        try {
            auto f = safetensors_file::parse(bad);
            for (const auto& t : f.tensors()) {
                ASSERT_EQ(t.bytes.size(), t.element_count() * dtype_size(t.type));
                unsigned sum = 0;  // touch every byte: sanitizers and valgrind catch any overrun
                for (auto byte : t.bytes) sum += byte;
                (void)sum;
            }
        } catch (const format_error&) {
        }
    }
}

TEST(KvSafetensors, ParsesTheConventionAndRejectsInconsistentLayers) {
    EXPECT_EQ(io::parse_kv_tensor_name("layer.12.v")->first, 12u);
    EXPECT_FALSE(io::parse_kv_tensor_name("layer.1.q"));
    EXPECT_FALSE(io::parse_kv_tensor_name("layer.x.k"));
    EXPECT_FALSE(io::parse_kv_tensor_name("layer..k"));

    safetensors_builder b;
    for (int l = 0; l < 2; ++l) {
        b.add("layer." + std::to_string(l) + ".k", dtype::bf16, {2, 3, 4}, iota_bytes(48, l));
        b.add("layer." + std::to_string(l) + ".v", dtype::bf16, {2, 3, 4}, iota_bytes(48, 100 + l));
    }
    b.add("tokens", dtype::i32, {3}, iota_bytes(12));
    auto f = safetensors_file::parse(b.serialize());
    auto view = io::kv_view(f);
    EXPECT_EQ(view.layout, (kv_layout{2, 2, 4, 3, dtype::bf16}));
    EXPECT_NO_THROW(view.validate());
    EXPECT_EQ(view.values[1].element(0, 0, 0), f.at("layer.1.v").bytes.data());
    EXPECT_EQ(view.keys[0].element(1, 2, 3), f.at("layer.0.k").bytes.data() + 2 * (1 * 12 + 2 * 4 + 3));

    safetensors_builder missing;
    missing.add("layer.0.k", dtype::bf16, {1, 1, 1}, iota_bytes(2));
    missing.add("layer.1.k", dtype::bf16, {1, 1, 1}, iota_bytes(2));
    missing.add("layer.1.v", dtype::bf16, {1, 1, 1}, iota_bytes(2));
    EXPECT_THROW(io::kv_view(safetensors_file::parse(missing.serialize())), format_error);

    safetensors_builder mismatch;
    mismatch.add("layer.0.k", dtype::bf16, {1, 2, 1}, iota_bytes(4));
    mismatch.add("layer.0.v", dtype::bf16, {1, 1, 1}, iota_bytes(2));
    EXPECT_THROW(io::kv_view(safetensors_file::parse(mismatch.serialize())), format_error);

    safetensors_builder ints;
    ints.add("layer.0.k", dtype::i32, {1, 1, 1}, iota_bytes(4));
    ints.add("layer.0.v", dtype::i32, {1, 1, 1}, iota_bytes(4));
    EXPECT_THROW(io::kv_view(safetensors_file::parse(ints.serialize())), format_error);
}

}  // namespace
