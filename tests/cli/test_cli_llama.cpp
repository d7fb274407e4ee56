// `seqkv compress --from llama-state` / `decompress --to llama-state | safetensors` on a
// synthetic llama.cpp sequence state file, and clear errors for bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "seqkv/io/llama_state.hpp"
#include "seqkv/io/safetensors.hpp"

#include "cli/cli_runner.hpp"

namespace fs = std::filesystem;
namespace ll = seqkv::io::llama;

namespace {

using seqkv_test::run;

fs::path scratch() { return seqkv_test::scratch("seqkv_cli_llama_test_"); }

// A llama_state_seq_save_file state: T cells, 3 layers, rows of 2 heads x 32 f16 values.
seqkv::byte_vector make_state_file(std::uint32_t T, bool v_trans) {
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0, 1);
    ll::state s;
    s.kind = ll::framing::seq_file;
    s.version = 3;
    for (std::uint32_t t = 0; t < T; ++t) s.tokens.push_back(std::int32_t(t % 13));
    ll::stream st;
    for (std::uint32_t t = 0; t < T; ++t) st.cells.push_back({std::int32_t(t), {0}});
    st.v_trans = v_trans;
    st.layers = 3;
    const auto rows = [&](bool transposed) {
        ll::tensor_rows r;
        r.type = 1;
        r.embd = 64;
        r.transposed = transposed;
        if (transposed) r.element_bytes = 2;
        else r.row_bytes = 128;
        r.bytes.resize(std::size_t(T) * 128);
        for (std::size_t i = 0; i < std::size_t(T) * 64; ++i) seqkv::store_from_float(r.bytes.data(), seqkv::dtype::f16, i, d(rng));
        return r;
    };
    for (int l = 0; l < 3; ++l) st.k.push_back(rows(false));
    for (int l = 0; l < 3; ++l) st.v.push_back(rows(v_trans));
    s.sections.push_back({{st}});
    return ll::write_state(s);
}

void write(const fs::path& p, const seqkv::byte_vector& b) {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

TEST(CliLlama, LlamaStateRoundTripsByteForByte) {
    const auto dir = scratch();
    for (bool v_trans : {false, true}) {
        const auto state = dir / "s.ggsq", skv = dir / "s.skv", back = dir / "back.ggsq", st = dir / "s.safetensors";
        const auto bytes = make_state_file(300, v_trans);
        write(state, bytes);
        auto r = run("compress --from llama-state " + state.string() + " -o " + skv.string() +
                     " --kv-heads 2 --rope-theta 10000 --rope-style interleaved --json");
        ASSERT_EQ(r.status, 0) << r.out;
        const auto j = nlohmann::json::parse(r.out);
        EXPECT_TRUE(j["quality"]["bit_exact"].get<bool>());
        EXPECT_EQ(j["kv_heads"].get<unsigned>(), 2u);
        EXPECT_EQ(j["codec"].get<std::string>(), "lossless (rope-aware)");
        EXPECT_EQ(j["metadata"]["rope_style"].get<std::string>(), "interleaved");
        r = run("decompress " + skv.string() + " --to llama-state -o " + back.string());
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_EQ(seqkv::read_file(back), bytes);
        // The same file decodes to the safetensors KV convention.
        r = run("decompress " + skv.string() + " -o " + st.string());
        ASSERT_EQ(r.status, 0) << r.out;
        const auto f = seqkv::io::safetensors_file::load(st);
        EXPECT_EQ(f.at("layer.2.v").shape, (std::vector<std::uint64_t>{2, 300, 32}));
        EXPECT_EQ(f.at("tokens").shape, (std::vector<std::uint64_t>{300}));
        EXPECT_EQ(f.metadata().at("rope_theta"), "10000");
        // Lossy: same size, K/V quality recorded.
        r = run("compress --from llama-state " + state.string() + " -o " + skv.string() + " --kv-heads 2 --preset kivi4 --json");
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_FALSE(nlohmann::json::parse(r.out)["quality"]["bit_exact"].get<bool>());
        r = run("decompress " + skv.string() + " --to llama-state -o " + back.string());
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_EQ(seqkv::read_file(back).size(), bytes.size());
    }
    fs::remove_all(dir);
}

TEST(CliLlama, BadInputGivesAClearError) {
    const auto dir = scratch();
    const auto junk = dir / "junk.bin", skv = dir / "x.skv", out = dir / "out";
    write(junk, seqkv::byte_vector(100, 7));
    auto r = run("compress --from llama-state " + junk.string() + " -o " + skv.string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("llama state"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(skv));
    write(junk, make_state_file(10, false));
    r = run("compress --from llama-state " + junk.string() + " -o " + skv.string() + " --kv-heads 3");
    EXPECT_EQ(r.status, 1);  // usage: 64 elements per row are not 3 heads
    EXPECT_NE(r.out.find("KV heads"), std::string::npos) << r.out;
    // A .skv made from safetensors has no llama state to give back.
    const auto fixture = fs::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors";
    ASSERT_EQ(run("compress " + fixture.string() + " -o " + skv.string()).status, 0);
    r = run("decompress " + skv.string() + " --to llama-state -o " + out.string());
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("not made from a llama.cpp state"), std::string::npos) << r.out;
    fs::remove_all(dir);
}

}  // namespace
