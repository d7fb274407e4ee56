// seqkv::preset (seqkv/preset.hpp): the CLI's presets as library objects, on the real fixture.
#include <gtest/gtest.h>

#include <string>

#include "seqkv/api.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/preset.hpp"

using namespace seqkv;

namespace {

const io::safetensors_file& fixture() {
    static const auto f = io::safetensors_file::load(std::string(SEQKV_DATA_DIR) + "/kv/gpl3.safetensors");
    return f;
}

double kv_ratio(const kv_cache_view& cache, const byte_vector& skv) { return double(cache.layout.total_bytes()) / double(skv.size()); }

}  // namespace

// The README's library snippet: metadata's RoPE parameters and the token ids reach the ratio the
// CLI's default gets (1.84x in the README's table), above blosc's 1.61x and above what the bare
// defaults (no RoPE, 256-token chunks, no ids) give.
TEST(Preset, LosslessFromMetadataBeatsBareDefaultsAndBlosc) {
    const auto& file = fixture();
    const kv_cache_view cache = io::kv_view(file);
    const auto ids = io::token_ids_of(file, cache.layout.tokens).value();
    const model_params m = model_params_from(file.metadata(), cache.layout);
    EXPECT_GT(m.rope_theta, 0) << "the fixture states rope_theta";
    const byte_vector with_preset = compress(cache, preset("lossless", m), ids);
    const byte_vector bare = compress(cache, {});
    const double r = kv_ratio(cache, with_preset), r_bare = kv_ratio(cache, bare);
    std::printf("fixture gpl3: preset(\"lossless\") %.3fx (whole file), bare compress() %.3fx\n", r, r_bare);
    EXPECT_GT(r, 1.75);  // blosc zstd + byte shuffle: 1.609 on this fixture (bench_lossless)
    EXPECT_GT(r, r_bare * 1.1);
    const chunk_buffer back = decompress(with_preset);
    for (std::uint32_t l = 0; l < cache.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto blk = back.block(l, kind);
            ASSERT_TRUE(std::equal(blk.begin(), blk.end(), cache.tensor(l, kind).data)) << "layer " << l;
        }
}

// Every named preset compresses and decodes a slice of the fixture (token and draft presets need a model).
TEST(Preset, EveryNameRoundTrips) {
    const auto& file = fixture();
    const kv_cache_view cache = io::kv_view(file);
    const model_params m = model_params_from(file.metadata(), cache.layout);
    for (std::string name : preset_names()) {
        if (is_token_preset(name.find(':') == std::string::npos ? name : name.substr(0, name.find(':') + 1) + "0.25")) {
            EXPECT_THROW((void)preset(name, m), usage_error) << name;
            continue;
        }
        if (const auto colon = name.find(':'); colon != std::string::npos) name = name.substr(0, colon + 1) + "0.25";
        preset_inputs in;
        in.chunk_tokens = 64;
        const compress_options o = preset(name, m, in);
        EXPECT_EQ(o.chunk_tokens, 64u) << name;
        const chunk_buffer back = decompress(compress(cache, o));
        EXPECT_EQ(back.layout.tokens, cache.layout.tokens) << name;
        EXPECT_EQ(back.bytes.size(), cache.layout.total_bytes()) << name;
    }
}

TEST(Preset, RefusesWhatWouldBeSilentlyWrong) {
    model_params m;
    m.head_dim = 64;
    EXPECT_THROW((void)preset("no-such-preset", m), usage_error);
    try {
        (void)preset("kivi5", model_params{});  // a typo is named as one, not as a missing head_dim
        ADD_FAILURE() << "kivi5 accepted";
    } catch (const usage_error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown preset 'kivi5'"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(is_preset_name("seqkv-step:0.3"));
    EXPECT_FALSE(is_preset_name("seqkv-step"));
    EXPECT_THROW((void)preset("kivi4", model_params{}), usage_error);  // no head_dim
    preset_inputs step;
    step.options = {"step=0.3"};  // ignored under the lossless quantizer: refused instead
    EXPECT_THROW((void)preset("lossless", m, step), usage_error);
    step.options = {"quantizer=uniform", "step=0.3"};
    EXPECT_NO_THROW((void)preset("lossless", m, step));
    step.options = {"step"};
    EXPECT_THROW((void)preset("kivi4", m, step), usage_error);
}

TEST(Preset, ModelParamsFromMetadata) {
    kv_layout l;
    l.head_dim = 64;
    const auto m = model_params_from({{"rope_theta", "500000"}, {"rope_style", "interleaved"}}, l);
    EXPECT_EQ(m.head_dim, 64u);
    EXPECT_EQ(m.rope_theta, 500000.0);
    EXPECT_EQ(m.rope_style, "interleaved");
    EXPECT_EQ(model_params_from({{"rope_theta", "0"}}, l).rope_theta, 0.0);  // non-positive: unknown
    EXPECT_EQ(model_params_from({}, l).rope_theta, 0.0);
    EXPECT_EQ(model_params_from({{"rope_theta", " +1e4\n"}}, l).rope_theta, 10000.0);  // what std::stod took
    EXPECT_THROW((void)model_params_from({{"rope_theta", "ten thousand"}}, l), format_error);
    EXPECT_THROW((void)model_params_from({{"rope_theta", ""}}, l), format_error);
    EXPECT_THROW((void)model_params_from({{"rope_theta", "1e4x"}}, l), format_error);
}
