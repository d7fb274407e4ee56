// The seqkv CLI end to end on the real fixture: compress / info / decompress (all and a range),
// lossless and lossy presets, the table subcommand, and clear errors on bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "seqkv/io/safetensors.hpp"

#include "cli/cli_runner.hpp"

namespace fs = std::filesystem;
using seqkv::io::safetensors_file;

namespace {

using seqkv_test::run;

fs::path scratch() { return seqkv_test::scratch("seqkv_cli_test_"); }

const fs::path fixture = fs::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors";
const fs::path other = fs::path(SEQKV_DATA_DIR) / "kv" / "py311-textwrap.safetensors";

TEST(Cli, LosslessRoundTripGivesBackEveryTensor) {
    const auto dir = scratch();
    const auto skv = dir / "a.skv", back = dir / "a.safetensors";
    auto r = run("compress " + fixture.string() + " -o " + skv.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_GT(j["kv_ratio"].get<double>(), 1.3);
    EXPECT_TRUE(j["quality"]["bit_exact"].get<bool>());
    r = run("decompress " + skv.string() + " -o " + back.string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto a = safetensors_file::load(fixture), b = safetensors_file::load(back);
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (const auto& t : a.tensors()) {
        const auto& u = b.at(t.name);
        EXPECT_EQ(u.shape, t.shape) << t.name;
        EXPECT_TRUE(std::equal(u.bytes.begin(), u.bytes.end(), t.bytes.begin(), t.bytes.end())) << t.name;
    }
    EXPECT_EQ(a.metadata(), b.metadata());

    r = run("decompress " + skv.string() + " -o " + back.string() + " --tokens 100:300");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto c = safetensors_file::load(back);
    EXPECT_EQ(c.at("layer.3.v").shape, (std::vector<std::uint64_t>{2, 200, 64}));
    const auto& full = a.at("layer.3.v");
    const auto& part = c.at("layer.3.v");
    EXPECT_TRUE(std::equal(part.bytes.begin(), part.bytes.begin() + 200 * 128, full.bytes.begin() + 100 * 128));
    // The metadata the slice copies states the slice, not the whole dump.
    EXPECT_EQ(a.metadata().at("n_tokens"), "512");
    EXPECT_EQ(c.metadata().at("n_tokens"), "200");
    EXPECT_EQ(c.metadata().at("positions"), "100..299");
    EXPECT_EQ(c.metadata().at("token_range"), "100:300 of 512");
    EXPECT_EQ(c.metadata().at("rope_theta"), a.metadata().at("rope_theta"));
    fs::remove_all(dir);
}

TEST(Cli, LossyPresetRecordsQualityAndNeedsItsTable) {
    const auto dir = scratch();
    const auto table = dir / "table.safetensors", skv = dir / "b.skv", back = dir / "b.safetensors";
    auto r = run("table " + other.string() + " -o " + table.string());  // fitted on the other dump: held out
    ASSERT_EQ(r.status, 0) << r.out;
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset seqkv-2bit --table " + table.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_LT(j["kv_bits_per_element"].get<double>(), 3.0);
    EXPECT_FALSE(j["quality"]["bit_exact"].get<bool>());
    EXPECT_TRUE(j["quality"]["real_queries"].get<bool>());
    EXPECT_LT(j["quality"]["attention_rel_error"].get<double>(), 0.5);
    r = run("info " + skv.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["quality"].contains("snr_k_db"));
    r = run("decompress " + skv.string() + " -o " + back.string());
    EXPECT_EQ(r.status, 3);  // names a table that was not given: missing side information
    EXPECT_NE(r.out.find("expected-KV table"), std::string::npos) << r.out;
    r = run("decompress " + skv.string() + " -o " + back.string() + " --table " + table.string());
    EXPECT_EQ(r.status, 0) << r.out;
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset kivi2 --lossy group=16 --lossy nonsense=1");
    EXPECT_EQ(r.status, 1);  // usage
    EXPECT_NE(r.out.find("unknown lossy option"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

TEST(Cli, ThreadsGiveTheSameBytesAndInfoShowsTheFormatAndResources) {
    const auto dir = scratch();
    const auto table = dir / "table.safetensors";
    ASSERT_EQ(run("table " + other.string() + " -o " + table.string()).status, 0);
    for (const std::string preset : {"lossless", "seqkv-2bit"}) {
        const std::string flags = " --preset " + preset + (preset == "lossless" ? "" : " --table " + table.string());
        const auto one = dir / "one.skv", three = dir / "three.skv";
        ASSERT_EQ(run("compress " + fixture.string() + " -o " + one.string() + flags + " --threads 1").status, 0);
        ASSERT_EQ(run("compress " + fixture.string() + " -o " + three.string() + flags + " --threads 3").status, 0);
        EXPECT_EQ(seqkv::read_file(one), seqkv::read_file(three)) << preset;
        const auto back1 = dir / "back1.safetensors", back3 = dir / "back3.safetensors";
        const std::string table_flag = preset == "lossless" ? "" : " --table " + table.string();
        ASSERT_EQ(run("decompress " + one.string() + " -o " + back1.string() + table_flag + " --threads 1").status, 0);
        ASSERT_EQ(run("decompress " + one.string() + " -o " + back3.string() + table_flag + " --threads 3").status, 0);
        EXPECT_EQ(seqkv::read_file(back1), seqkv::read_file(back3)) << preset;
        const auto r = run("info " + one.string() + " --json");
        ASSERT_EQ(r.status, 0) << r.out;
        const auto j = nlohmann::json::parse(r.out);
        EXPECT_EQ(j["format_version"].get<unsigned>(), 2u);
        if (preset == "lossless") {
            EXPECT_TRUE(j["resources"].empty());
        } else {
            ASSERT_EQ(j["resources"].size(), 1u);
            EXPECT_NE(j["resources"][0]["description"].get<std::string>().find("expected-KV table"), std::string::npos);
        }
    }
    fs::remove_all(dir);
}

TEST(Cli, TokenPresetsCodeTheIdsUnderTheModelAndNeedIt) {
    const auto dir = scratch();
    const auto model = fs::path(SEQKV_DATA_DIR) / "tiny-llama";
    const auto skv = dir / "t.skv", back = dir / "t.safetensors";
    // tokens-exact: ids under the model + the correction: every tensor back bit for bit.
    auto r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset tokens-exact --model " + model.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["quality"]["bit_exact"].get<bool>());
    EXPECT_GT(j["kv_ratio"].get<double>(), 100.0);  // measured ~1000x on this fixture (the correction is ~0.01 bits/element)
    ASSERT_EQ(j["resources"].size(), 1u);
    EXPECT_NE(j["resources"][0]["description"].get<std::string>().find("model weights"), std::string::npos);
    r = run("decompress " + skv.string() + " -o " + back.string());
    EXPECT_EQ(r.status, 3);  // the model the file names was not given
    EXPECT_NE(r.out.find("model weights"), std::string::npos) << r.out;
    r = run("decompress " + skv.string() + " -o " + back.string() + " --model " + model.string() + " --tokens 100:300");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto a = safetensors_file::load(fixture), c = safetensors_file::load(back);
    const auto& full = a.at("layer.2.k");
    const auto& part = c.at("layer.2.k");
    ASSERT_EQ(part.shape, (std::vector<std::uint64_t>{2, 200, 64}));
    EXPECT_TRUE(std::equal(part.bytes.begin(), part.bytes.begin() + 200 * 128, full.bytes.begin() + 100 * 128));
    const auto& ids = c.at("tokens");
    EXPECT_TRUE(std::equal(ids.bytes.begin(), ids.bytes.end(), a.at("tokens").bytes.begin() + 100 * 4));
    // tokens: the model's own KV, lossy against the dump's, at a few bits per token.
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset tokens --model " + model.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    j = nlohmann::json::parse(r.out);
    EXPECT_FALSE(j["quality"]["bit_exact"].get<bool>());
    EXPECT_GT(j["quality"]["snr_k_db"].get<double>(), 40.0);  // the reference model's KV vs PyTorch's: bf16 rounding apart
    EXPECT_GT(j["kv_ratio"].get<double>(), 1000.0);
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset tokens");
    EXPECT_EQ(r.status, 1);  // usage: the preset needs --model
    EXPECT_NE(r.out.find("--model"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

TEST(Cli, DraftPresetsNameTheDraftAndRestoreTheCache) {
    const auto dir = scratch();
    const auto model = fs::path(SEQKV_DATA_DIR) / "tiny-llama";
    const auto skv = dir / "d.skv", back = dir / "d.safetensors";
    // draft under the int8 draft of the tiny model: bit-exact, well above the lossless codec's ratio.
    auto r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset draft --model " + model.string() +
                 " --model-weights int8 --json");
    ASSERT_EQ(r.status, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["quality"]["bit_exact"].get<bool>());
    EXPECT_GT(j["kv_ratio"].get<double>(), 3.0);  // measured 5.6x on the tiny model's dumps (lossless codec: 1.6x)
    r = run("info " + skv.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("draft residual"), std::string::npos) << r.out;
    r = run("decompress " + skv.string() + " -o " + back.string() + " --model " + model.string());
    EXPECT_EQ(r.status, 3) << r.out;  // the f32 reference model is not the draft the file names
    r = run("decompress " + skv.string() + " -o " + back.string() + " --model " + model.string() + " --model-weights int8");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto a = safetensors_file::load(fixture), c = safetensors_file::load(back);
    for (const char* name : {"layer.0.k", "layer.1.v", "tokens"}) {
        const auto &x = a.at(name).bytes, &y = c.at(name).bytes;
        EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << name;
    }
    // draft-abs: lossy, smaller.
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset draft-abs:0.05 --model " + model.string() +
            " --model-weights int12 --json");
    ASSERT_EQ(r.status, 0) << r.out;
    j = nlohmann::json::parse(r.out);
    EXPECT_FALSE(j["quality"]["bit_exact"].get<bool>());
    EXPECT_GT(j["kv_ratio"].get<double>(), 20.0);
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset draft --model " + model.string() + " --model-weights int4");
    EXPECT_NE(r.status, 0);  // not a weight format
    // `seqkv bench` measures the draft presets beside the others, every round trip checked.
    r = run("bench " + fixture.string() + " --preset lossless --preset draft --model " + model.string() +
            " --model-weights int12 --codecs seqkv:lossless,seqkv:draft --threads 1 --seconds 0 --json");
    ASSERT_EQ(r.status, 0) << r.out;
    j = nlohmann::json::parse(r.out);
    double lossless_ratio = 0, draft_ratio = 0;
    for (const auto& row : j["rows"]) {
        if (row["codec"] == "seqkv:lossless") lossless_ratio = row["ratio"].get<double>();
        if (row["codec"] == "seqkv:draft") {
            draft_ratio = row["ratio"].get<double>();
            EXPECT_TRUE(row["exact"].get<bool>());
        }
    }
    EXPECT_GT(draft_ratio, 3 * lossless_ratio) << r.out;  // tiny model: ~25x vs 1.6x
    fs::remove_all(dir);
}

// The hybrid preset: --bandwidth / --compute decide per chunk; `info` shows the choices; the
// decompressed cache is the input, bit for bit, whatever was chosen.
TEST(Cli, HybridPresetChoosesByTheGivenCostsAndInfoShowsTheChoices) {
    const auto dir = scratch();
    const auto model = fs::path(SEQKV_DATA_DIR) / "tiny-llama";
    const auto skv = dir / "h.skv", back = dir / "h.safetensors";
    const std::string base = "compress " + fixture.string() + " -o " + skv.string() + " --preset hybrid --chunk 128 --model " +
                             model.string() + " --model-weights int12";
    // A slow link and a fast decoder: the draft's residual everywhere. A fast link and a slow decoder: stored.
    for (const auto& [flags, choice] : {std::pair<std::string, std::string>{" --bandwidth 0.01 --compute 100000", "residual"},
                                        std::pair<std::string, std::string>{" --bandwidth 10000 --compute 0.001", "stored"}}) {
        auto r = run(base + flags + " --json");
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_TRUE(nlohmann::json::parse(r.out)["quality"]["bit_exact"].get<bool>());
        r = run("info " + skv.string() + " --json");
        ASSERT_EQ(r.status, 0) << r.out;
        const auto j = nlohmann::json::parse(r.out);
        ASSERT_TRUE(j.contains("hybrid_choices")) << r.out;
        for (const auto& c : j["hybrid_choices"]) EXPECT_EQ(c.get<std::string>(), choice) << flags;
        r = run("info " + skv.string());
        EXPECT_NE(r.out.find("hybrid choices: "), std::string::npos) << r.out;
        r = run("decompress " + skv.string() + " -o " + back.string() + " --model " + model.string() + " --model-weights int12");
        ASSERT_EQ(r.status, 0) << r.out;
        const auto a = safetensors_file::load(fixture), c = safetensors_file::load(back);
        for (const char* name : {"layer.0.k", "layer.1.v", "tokens"}) {
            const auto &x = a.at(name).bytes, &y = c.at(name).bytes;
            EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << name << flags;
        }
    }
    auto r = run(base + " --bandwidth 0");
    EXPECT_EQ(r.status, 1) << r.out;  // not a positive number
    fs::remove_all(dir);
}

// `seqkv bench`: seqkv presets and the peers on the same KV bytes, every round trip checked.
TEST(Cli, BenchComparesPresetsAndPeersOnTheSameBytes) {
    auto r = run("bench " + fixture.string() + " --preset lossless --preset kivi4 --codecs seqkv:lossless,seqkv:kivi4,zstd-3,lz4"
                 " --threads 2 --seconds 0 --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["kv_bytes"].get<std::uint64_t>(), 4u * 2 * 2 * 512 * 64 * 2);  // 4 layers, K+V, 2 heads, 512 tokens, 64 dims, bf16
    std::map<std::string, nlohmann::json> by;
    for (const auto& row : j["rows"]) by[row["codec"].get<std::string>() + "/" + std::to_string(row["threads"].get<unsigned>())] = row;
    ASSERT_TRUE(by.count("seqkv:lossless/1") && by.count("seqkv:lossless/2") && by.count("seqkv:kivi4/1")) << r.out;
    for (const char* key : {"seqkv:lossless/1", "seqkv:lossless/2"}) {
        EXPECT_TRUE(by[key]["lossless"].get<bool>() && by[key]["exact"].get<bool>()) << key;
        EXPECT_GT(by[key]["encode_MBps"].get<double>(), 0.0) << key;
    }
    // The same bytes at any thread count; lossy rows say they are lossy and are smaller.
    EXPECT_EQ(by["seqkv:lossless/1"]["coded_bytes"], by["seqkv:lossless/2"]["coded_bytes"]);
    EXPECT_FALSE(by["seqkv:kivi4/1"]["lossless"].get<bool>());
    EXPECT_GT(by["seqkv:kivi4/1"]["ratio"].get<double>(), by["seqkv:lossless/1"]["ratio"].get<double>());
    if (by.count("zstd-3/1")) {  // peers the build found (Debian: libzstd-dev, liblz4-dev, libblosc-dev)
        EXPECT_TRUE(by["zstd-3/1"]["exact"].get<bool>());
        EXPECT_GT(by["seqkv:lossless/1"]["ratio"].get<double>(), by["zstd-3/1"]["ratio"].get<double>());
    }
    if (by.count("lz4/1")) {
        EXPECT_TRUE(by["lz4/1"]["exact"].get<bool>());
    }
    EXPECT_FALSE(by.count("zstd-19/1")) << "--codecs selects rows";

    // Human table by default, and the chart; a text file is a bad input (exit 2), an unknown preset a usage error (exit 1).
    const auto dir = scratch();
    const auto svg = dir / "bench.svg";
    r = run("bench " + fixture.string() + " --codecs seqkv:lossless --threads 1 --seconds 0");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("seqkv:lossless"), std::string::npos) << r.out;
    r = run("bench " + fixture.string() + " --codecs seqkv:lossless,lz4 --threads 1 --seconds 0 --json --svg " + svg.string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto bench = nlohmann::json::parse(r.out);
    const auto rows = bench["rows"].size();
    // --svg adds the ratio against context length: 32, 64, ..., 512 tokens; the whole file's point
    // is the same compression as the row's.
    const auto& ctx = bench["context"];
    ASSERT_EQ(ctx.size(), 5u) << r.out;
    EXPECT_EQ(ctx[0]["tokens"].get<std::uint64_t>(), 32u);
    EXPECT_EQ(ctx[4]["tokens"].get<std::uint64_t>(), 512u);
    EXPECT_DOUBLE_EQ(ctx[4]["ratio"].get<double>(), bench["rows"][0]["ratio"].get<double>());
    const auto chart = seqkv::read_file(svg);
    const std::string chart_text(chart.begin(), chart.end());
    EXPECT_EQ(chart_text.rfind("<svg", 0), 0u);
    EXPECT_NE(chart_text.find("</svg>"), std::string::npos);
    EXPECT_NE(chart_text.find(">seqkv:lossless</text>"), std::string::npos);
    std::size_t circles = 0;
    for (auto at = chart_text.find("<circle"); at != std::string::npos; at = chart_text.find("<circle", at + 1)) ++circles;
    EXPECT_EQ(circles, 2 * rows) << "one marker per row in each panel (encode, decode)";
    EXPECT_NE(chart_text.find("tokens coded (context length"), std::string::npos);
    const auto text = dir / "notes.txt";
    std::FILE* f = std::fopen(text.string().c_str(), "w");
    std::fputs("not a KV dump\n", f);
    std::fclose(f);
    EXPECT_EQ(run("bench " + text.string() + " --seconds 0").status, 2);
    EXPECT_EQ(run("bench " + fixture.string() + " --preset no-such-preset --seconds 0").status, 1);
    fs::remove_all(dir);
}

TEST(Cli, DedupReportsWhatAPrefixStoreSaves) {
    // Sessions that share prefixes: the fixture, its first 300 tokens (a shorter session with the
    // same start), the fixture again (a retried request). Stored once in 64-token chunks.
    const auto dir = scratch();
    const auto skv = dir / "f.skv", prefix = dir / "prefix.safetensors";
    ASSERT_EQ(run("compress " + fixture.string() + " -o " + skv.string()).status, 0);
    ASSERT_EQ(run("decompress " + skv.string() + " --tokens 0:300 -o " + prefix.string()).status, 0);
    auto r = run("dedup " + fixture.string() + " " + prefix.string() + " " + fixture.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    const auto& s = j["sessions"];
    ASSERT_EQ(s.size(), 3u);
    EXPECT_EQ(s[0]["shared_tokens"].get<std::uint64_t>(), 0u);
    EXPECT_GT(s[0]["store_bytes_added"].get<std::uint64_t>(), 0u);
    EXPECT_EQ(s[1]["shared_tokens"].get<std::uint64_t>(), 300u);
    EXPECT_EQ(s[1]["store_bytes_added"].get<std::uint64_t>(), 0u);  // every chunk of it is stored already
    EXPECT_GT(s[1]["shared_prefix_bits"].get<double>(), 0.0);        // -log2 P(shared prefix) from the dump's nll
    EXPECT_EQ(s[2]["shared_tokens"].get<std::uint64_t>(), 512u);
    EXPECT_EQ(s[2]["store_bytes_added"].get<std::uint64_t>(), 0u);
    const auto alone = j["alone_bytes"].get<std::uint64_t>(), stored = j["store_bytes"].get<std::uint64_t>();
    EXPECT_EQ(stored, s[0]["store_bytes_added"].get<std::uint64_t>());
    EXPECT_GT(j["saving_vs_alone"].get<double>(), 2.0) << alone << " vs " << stored;  // 2.6 sessions' bytes stored as one
    // Human table by default; sessions of two models are a usage error.
    r = run("dedup " + fixture.string() + " " + prefix.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("smaller than alone"), std::string::npos) << r.out;
    EXPECT_EQ(run("dedup " + fixture.string() + " " + (fs::path(SEQKV_DATA_DIR) / "kv" / "smollm2-gpl3.safetensors").string()).status, 1);
    fs::remove_all(dir);
}

TEST(Cli, ProgressBarOnlyWhenAskedOrOnATerminal) {
    // Tests do not run on a terminal: no bar by default; SEQKV_PROGRESS=1 forces it (stderr),
    // --json never shows it.
    const auto dir = scratch();
    const auto skv = dir / "p.skv", back = dir / "p.safetensors";
    auto r = run("compress " + fixture.string() + " -o " + skv.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out.find("tokens  "), std::string::npos) << r.out;
    ::setenv("SEQKV_PROGRESS", "1", 1);
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --chunk 128");
    const auto d = run("decompress " + skv.string() + " -o " + back.string());
    const auto j = run("compress " + fixture.string() + " -o " + skv.string() + " --json");
    ::unsetenv("SEQKV_PROGRESS");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("compress [##############################] 100%  512/512 tokens"), std::string::npos) << r.out;
    EXPECT_NE(d.out.find("decompress [##############################] 100%  512/512 tokens"), std::string::npos) << d.out;
    ASSERT_EQ(j.status, 0) << j.out;
    EXPECT_TRUE(nlohmann::json::accept(j.out)) << "--json output stays pure JSON: " << j.out;
    fs::remove_all(dir);
}

TEST(Cli, BadInputGivesAClearErrorAndNoOutput) {
    const auto dir = scratch();
    const auto skv = dir / "c.skv", back = dir / "c.safetensors", junk = dir / "junk.safetensors";
    ASSERT_EQ(run("compress " + fixture.string() + " -o " + skv.string()).status, 0);
    auto bytes = seqkv::read_file(skv);
    bytes.resize(bytes.size() / 2);
    seqkv::write_file(skv, bytes);
    auto r = run("decompress " + skv.string() + " -o " + back.string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("seqkv:"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(back));
    seqkv::write_file(junk, seqkv::byte_vector{1, 2, 3, 4, 5, 6, 7, 8, 9});
    r = run("compress " + junk.string() + " -o " + skv.string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("safetensors"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

// One exit-code scheme (0 OK, 1 usage, 2 invalid input, 3 side information, 4 I/O, 5 internal),
// errors as JSON under --json, one clear message for a file that is not what it should be.
TEST(Cli, ExitCodesAndErrorsFollowOneScheme) {
    const auto dir = scratch();
    const auto skv = dir / "e.skv", text = dir / "notes.txt";
    auto r = run("frobnicate");
    EXPECT_EQ(r.status, 1) << r.out;  // CLI11 used to exit 106 / 105
    r = run("compress " + (dir / "missing.safetensors").string() + " -o " + skv.string());
    EXPECT_EQ(r.status, 1) << r.out;
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --json --chunk nope");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("\"usage_error\""), std::string::npos) << r.out;

    // A text file: named once, as not a safetensors file (was "seqkv: format error: '...': seqkv:
    // format error: limit exceeded: safetensors: header length 8031924123371070824").
    {
        FILE* f = std::fopen(text.string().c_str(), "w");
        std::fputs("hello world, these are notes, not tensors\n", f);
        std::fclose(f);
    }
    r = run("compress " + text.string() + " -o " + skv.string() + " --json");
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("not a safetensors file"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("header length 8"), std::string::npos) << r.out;
    const auto first_line = r.out.substr(0, r.out.find('\n'));
    EXPECT_EQ(first_line.find("seqkv:"), first_line.rfind("seqkv:")) << first_line;  // the prefix once
    const auto json_at = r.out.find('{');
    ASSERT_NE(json_at, std::string::npos) << r.out;
    const auto j = nlohmann::json::parse(r.out.substr(json_at));
    EXPECT_EQ(j["error"]["type"], "format_error");
    EXPECT_EQ(j["error"]["exit_code"], 2);
    EXPECT_FALSE(fs::exists(skv));

    // --lossy settings under the default lossless preset would be ignored: refused as usage.
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --lossy step=0.3");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("lossy preset"), std::string::npos) << r.out;
    r = run("compress " + fixture.string() + " -o " + skv.string() + " --preset seqkv-step:0.3 --json");
    ASSERT_EQ(r.status, 0) << r.out;

    // A damaged file: 2; info --verify on it: 2 with the error as JSON.
    auto bytes = seqkv::read_file(skv);
    bytes[bytes.size() / 2] ^= 0x10;
    seqkv::write_file(skv, bytes);
    r = run("info " + skv.string() + " --json");
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("\"checksum_error\""), std::string::npos) << r.out;
    r = run("decompress " + skv.string() + " -o " + (dir / "x.safetensors").string());
    EXPECT_EQ(r.status, 2) << r.out;
    fs::remove_all(dir);
}

}  // namespace
