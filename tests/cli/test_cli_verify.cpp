// `seqkv info` checks the CRC of everything it reports on, and `info --verify` decodes the whole
// file: a flipped payload byte is a nonzero exit naming the chunk, never "bit_exact: true".
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "seqkv/core/file_io.hpp"
#include "seqkv/format/stream.hpp"

#include "cli/cli_runner.hpp"

namespace fs = std::filesystem;

namespace {

using seqkv_test::run;

const fs::path fixture = fs::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors";

/// A lossless .skv of the fixture in chunks of 128 tokens, written under dir.
fs::path good_file(const fs::path& dir) {
    const auto skv = dir / "good.skv";
    const auto r = run("compress " + fixture.string() + " -o " + skv.string() + " --chunk 128");
    EXPECT_EQ(r.status, 0) << r.out;
    return skv;
}

/// A copy of skv with one byte flipped at `at` (an offset into the file).
fs::path flipped_copy(const fs::path& skv, const fs::path& out, std::size_t at) {
    auto bytes = seqkv::read_file(skv);
    bytes.at(at) ^= 0x04;
    seqkv::write_file(out, bytes);
    return out;
}

TEST(CliVerify, InfoOnAFlippedPayloadByteFailsNamingTheChunk) {
    const auto dir = seqkv_test::scratch("seqkv_cli_verify_a_");
    const auto skv = good_file(dir);
    const auto bytes = seqkv::read_file(skv);
    const seqkv::format::stream_reader reader(bytes);
    ASSERT_GE(reader.chunks().size(), 3u);
    const auto& c = reader.chunks()[2];
    const auto bad = flipped_copy(skv, dir / "bad.skv", c.offset + c.record_bytes / 2);  // inside chunk 2's payload

    for (const std::string flags : {"", " --json", " --verify"}) {
        const auto r = run("info " + bad.string() + flags);
        EXPECT_EQ(r.status, 2) << flags << ": " << r.out;
        EXPECT_NE(r.out.find("chunk 2"), std::string::npos) << flags << ": " << r.out;
        EXPECT_NE(r.out.find("CRC"), std::string::npos) << flags << ": " << r.out;
        EXPECT_EQ(r.out.find("bit_exact"), std::string::npos) << flags << ": " << r.out;  // no report on bad bytes
    }
    // A flip inside an attachment (the first one: the non-KV tensors) is refused too.
    const auto bad_attachment = flipped_copy(skv, dir / "bad_attachment.skv", reader.chunks_end() + 8);
    const auto r = run("info " + bad_attachment.string());
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("attachment"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

TEST(CliVerify, InfoVerifyOnAGoodFileDecodesEverything) {
    const auto dir = seqkv_test::scratch("seqkv_cli_verify_b_");
    const auto skv = good_file(dir);
    auto r = run("info " + skv.string() + " --verify");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("checksums: OK"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("verified: OK"), std::string::npos) << r.out;
    r = run("info " + skv.string() + " --verify --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["checksums_ok"].get<bool>());
    EXPECT_NE(j["verified"].get<std::string>().find("safetensors"), std::string::npos) << r.out;
    r = run("info " + skv.string());  // without --verify: no decode claimed
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out.find("verified"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

}  // namespace
