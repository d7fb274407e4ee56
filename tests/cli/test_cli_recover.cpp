// `seqkv recover` end to end: a compressed fixture cut inside a chunk record (as an engine that
// died mid-write leaves it) is unreadable; recovered, it decompresses to the whole chunks before
// the cut, bit-exact; a damaged preamble is a clear error.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "seqkv/core/file_io.hpp"
#include "seqkv/format/stream.hpp"
#include "seqkv/io/safetensors.hpp"

#include "cli/cli_runner.hpp"

namespace fs = std::filesystem;
using seqkv::io::safetensors_file;
using seqkv_test::run;

namespace {

const fs::path fixture = fs::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors";

TEST(CliRecover, ATruncatedFileRecoversAndDecompressesToItsWholeChunks) {
    const auto dir = seqkv_test::scratch("seqkv_cli_recover_test_");
    const auto skv = dir / "a.skv", cut = dir / "cut.skv", fixed = dir / "fixed.skv", back = dir / "back.safetensors";
    ASSERT_EQ(run("compress " + fixture.string() + " -o " + skv.string() + " --chunk 64").status, 0);
    const auto bytes = seqkv::read_file(skv);
    const auto chunks = seqkv::format::stream_reader(bytes).chunks();
    ASSERT_GE(chunks.size(), 4u);
    const auto& c2 = chunks[2];
    const std::uint64_t cut_at = c2.offset + c2.record_bytes / 2;
    seqkv::write_file(cut, std::span(bytes).first(cut_at));
    EXPECT_EQ(run("decompress " + cut.string() + " -o " + back.string()).status, 2);

    auto r = run("recover " + cut.string() + " -o " + fixed.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["chunks"].get<std::size_t>(), 2u);
    EXPECT_EQ(j["tokens"].get<std::uint64_t>(), c2.first_token);
    EXPECT_EQ(j["damaged_at"].get<std::uint64_t>(), c2.offset);
    EXPECT_EQ(j["dropped_bytes"].get<std::uint64_t>(), cut_at - c2.offset);
    EXPECT_FALSE(j["complete"].get<bool>());
    EXPECT_NE(j["reason"].get<std::string>().find("truncated"), std::string::npos) << r.out;

    r = run("recover " + cut.string() + " -o " + fixed.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("kept 2 chunks"), std::string::npos) << r.out;

    r = run("decompress " + fixed.string() + " -o " + back.string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto a = safetensors_file::load(fixture), b = safetensors_file::load(back);
    const std::uint64_t n = c2.first_token;
    for (const char* name : {"layer.0.k", "layer.3.v"}) {
        const auto &full = a.at(name), &part = b.at(name);
        ASSERT_EQ(part.shape, (std::vector<std::uint64_t>{full.shape[0], n, full.shape[2]})) << name;
        const std::size_t row = part.bytes.size() / (part.shape[0] * n);
        for (std::uint64_t h = 0; h < full.shape[0]; ++h)
            EXPECT_TRUE(std::equal(part.bytes.begin() + std::ptrdiff_t(h * n * row), part.bytes.begin() + std::ptrdiff_t((h + 1) * n * row),
                                   full.bytes.begin() + std::ptrdiff_t(h * full.shape[1] * row)))
                << name << " head " << h;
    }

    auto damaged = bytes;
    damaged[20] ^= 1;  // inside the preamble body: its CRC fails
    seqkv::write_file(cut, damaged);
    r = run("recover " + cut.string() + " -o " + fixed.string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("preamble"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

}  // namespace
