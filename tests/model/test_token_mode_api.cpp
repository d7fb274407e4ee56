// Token mode through the public API and the container: compress / decompress with the model as a
// resource, range decode (replayed from the file's one keyframe), ids returned by the decoder.
#include <gtest/gtest.h>

#include "seqkv/api.hpp"
#include "seqkv/preset.hpp"
#include "seqkv/format/reader.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/reference/llama.hpp"

#include "model/model_test_support.hpp"

using namespace seqkv;

namespace {

using seqkv_test::data_dir;
std::shared_ptr<const model::language_model> tiny() { return seqkv_test::tiny_model(); }

/// Every block of `all` (the whole cache decoded) equals the cache's, bit for bit.
void expect_whole_cache(const kv_cache_view& view, const chunk_buffer& all) {
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            std::vector<std::uint8_t> want(all.block_bytes());
            gather_block(view.tensor(l, kind), 0, view.layout.tokens, want);
            const auto got = all.block(l, kind);
            EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "layer " << l;
        }
}

}  // namespace

TEST(TokenModeApi, CorrectedFileRestoresTheCacheAndTheIdsAndDecodesRanges) {
    const auto file = io::safetensors_file::load(data_dir / "kv" / "gpl3.safetensors");
    kv_cache_view view = io::kv_view(file);
    const std::uint64_t n = 300;
    view.layout.tokens = n;
    for (auto* ts : {&view.keys, &view.values})
        for (auto& t : *ts) t.tokens = n;
    auto ids = *io::token_ids_of(file, 512);
    ids.resize(n);
    compress_options o;
    o.codec = tokens_config(tokens::mode::corrected, *tiny());
    add_language_model(o.resources, tiny());
    o.chunk_tokens = 128;
    o.threads = 2;
    const auto skv = compress(view, o, ids);
    const auto lossless = compress(view, compress_options{}, ids);
    EXPECT_LT(skv.size() * 10, lossless.size());  // the correction is small: >10x below the lossless codec

    format::stream_reader reader(skv);
    EXPECT_FALSE(reader.header().has_token_ids);  // the payload codes them
    EXPECT_EQ(reader.header().keyframe_interval, std::numeric_limits<std::uint32_t>::max());
    ASSERT_EQ(reader.header().resources.size(), 1u);
    EXPECT_EQ(reader.header().resources[0].kind, resource_kind::model_weights);
    EXPECT_EQ(reader.header().resources[0].content_hash, tiny()->content_hash());

    const auto all = decompress(skv, 0, std::nullopt, o.resources, 2);
    EXPECT_EQ(all.token_ids, ids);
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            std::vector<std::uint8_t> want(all.block_bytes());
            gather_block(view.tensor(l, kind), 0, n, want);
            const auto got = all.block(l, kind);
            EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "layer " << l;
        }
    const auto part = decompress(skv, 150, 260, o.resources);  // starts inside chunk 1: replays chunk 0
    EXPECT_EQ(part.token_ids, std::vector<std::int32_t>(ids.begin() + 150, ids.begin() + 260));
    for (std::uint32_t l = 0; l < view.layout.layers; ++l) {
        std::vector<std::uint8_t> want(part.block_bytes());
        gather_block(view.tensor(l, kv_kind::value), 150, 260, want);
        const auto got = part.block(l, kv_kind::value);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "layer " << l;
    }
    EXPECT_THROW(decompress(skv), resource_error);  // no model given
    EXPECT_THROW(compress(view, o), usage_error);   // no token ids
}

TEST(TokenModeApi, TokensFileDecodesToTheModelsKv) {
    const auto file = io::safetensors_file::load(data_dir / "kv" / "py311-textwrap.safetensors");
    kv_cache_view view = io::kv_view(file);
    const auto ids = *io::token_ids_of(file, view.layout.tokens);
    compress_options o;
    o.codec = tokens_config(tokens::mode::tokens, *tiny());
    add_language_model(o.resources, tiny());
    o.chunk_tokens = 200;
    const auto skv = compress(view, o, ids);
    EXPECT_LT(skv.size(), 2000u);  // ~6.7 bits/token for 512 tokens + headers (the raw KV is 1 MB)
    const auto out = decompress(skv, 0, std::nullopt, o.resources);
    auto s = tiny()->session(1);
    s->extend(ids, {});
    auto want = chunk_buffer::for_layout(view.layout, view.layout.tokens);
    s->kv(0, view.layout.tokens, want);
    EXPECT_TRUE(out.bytes == want.bytes);
    EXPECT_EQ(out.token_ids, ids);
}

// The draft presets through the container: `draft` is bit-exact under an int12 draft and decodes
// ranges; `draft-abs:B` stays within B (+ bf16 rounding); the file names the draft, not the
// reference model, and `info`'s description says what it is.
TEST(TokenModeApi, DraftPresetsRoundTripThroughTheContainer) {
    const auto file = io::safetensors_file::load(data_dir / "kv" / "gpl3.safetensors");
    const kv_cache_view view = io::kv_view(file);
    const auto ids = *io::token_ids_of(file, view.layout.tokens);
    const std::shared_ptr<const model::language_model> draft =
        reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int12);
    preset_inputs in;
    in.model = draft;
    in.chunk_tokens = 200;
    in.threads = 2;
    const auto o = preset("draft", {}, in);
    EXPECT_NE(describe_codec(o.codec).find("draft residual"), std::string::npos) << describe_codec(o.codec);
    const auto skv = compress(view, o, ids);
    const auto lossless = compress(view, compress_options{}, ids);
    EXPECT_LT(skv.size() * 3, lossless.size());  // the draft predicts far better than the lossless codec's models
    format::stream_reader reader(skv);
    ASSERT_EQ(reader.header().resources.size(), 1u);
    EXPECT_EQ(reader.header().resources[0].content_hash, draft->content_hash());
    const auto all = decompress(skv, 0, std::nullopt, o.resources, 1);
    EXPECT_EQ(all.token_ids, ids);
    expect_whole_cache(view, all);
    const auto part = decompress(skv, 250, 420, o.resources);
    EXPECT_EQ(part.token_ids, std::vector<std::int32_t>(ids.begin() + 250, ids.begin() + 420));
    resource_provider reference_only;
    add_language_model(reference_only, tiny());
    EXPECT_THROW(decompress(skv, 0, std::nullopt, reference_only), resource_error);  // the draft is another model

    const auto ob = preset("draft-abs:0.05", {}, in);
    const auto lossy = compress(view, ob, ids);
    EXPECT_LT(lossy.size(), skv.size());
    const auto back = decompress(lossy, 0, std::nullopt, ob.resources);
    double worst = 0;
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            std::vector<std::uint8_t> want(back.block_bytes());
            gather_block(view.tensor(l, kind), 0, view.layout.tokens, want);
            const auto got = back.block(l, kind);
            for (std::size_t i = 0; i < want.size(); i += 2) {
                const double x = bf16_to_float(std::uint16_t(want[i] | want[i + 1] << 8)), y = bf16_to_float(std::uint16_t(got[i] | got[i + 1] << 8));
                // the bound + half a bf16 step of |x| (2^-8 relative at most)
                worst = std::max(worst, std::fabs(x - y) - (0.05 + std::fabs(x) / 256));
            }
        }
    EXPECT_LE(worst, 0.0);
    EXPECT_THROW(preset("draft-abs:0", {}, in), usage_error);
    EXPECT_THROW(preset("draft-abs:x", {}, in), usage_error);
    EXPECT_THROW(preset("draft", {}, {}), usage_error);  // no model
    auto bad = ob.codec;
    bad.params.pop_back();  // a bounded mode without its bound
    EXPECT_THROW(make_codec(bad, ob.resources), format_error);
}

// The hybrid presets through the container: per chunk stored / residual by the cost model given in
// preset_inputs; bit-exact (`hybrid`) or within the bound (`hybrid-abs:B`); ranges decode from the
// one keyframe; the file's parameters record the costs (the description says them); malformed
// parameters are format errors.
TEST(TokenModeApi, HybridPresetsRoundTripThroughTheContainer) {
    const auto file = io::safetensors_file::load(data_dir / "kv" / "gpl3.safetensors");
    const kv_cache_view view = io::kv_view(file);
    const auto ids = *io::token_ids_of(file, view.layout.tokens);
    const std::shared_ptr<const model::language_model> draft =
        reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int12);
    preset_inputs in;
    in.model = draft;
    in.chunk_tokens = 128;
    in.threads = 2;
    in.cost.bandwidth = 1e5f;  // a slow link and a decoder computing at 10^9 FLOP/s: chunks split by cost
    in.cost.compute = 1e9f;
    const auto o = preset("hybrid", {}, in);
    EXPECT_NE(describe_codec(o.codec).find("hybrid"), std::string::npos) << describe_codec(o.codec);
    EXPECT_NE(describe_codec(o.codec).find("0.1 MB/s"), std::string::npos) << describe_codec(o.codec);
    const auto skv = compress(view, o, ids);
    const auto all = decompress(skv, 0, std::nullopt, o.resources, 1);
    EXPECT_EQ(all.token_ids, ids);
    expect_whole_cache(view, all);
    const auto part = decompress(skv, 200, 450, o.resources);
    EXPECT_EQ(part.token_ids, std::vector<std::int32_t>(ids.begin() + 200, ids.begin() + 450));
    const auto lossless = compress(view, preset("lossless", {}, {}), ids);
    EXPECT_LT(skv.size(), lossless.size());  // never worse than storing every chunk (the cost model's bytes term)

    const auto ob = preset("hybrid-abs:0.05", {}, in);
    const auto lossy = compress(view, ob, ids);
    const auto back = decompress(lossy, 0, std::nullopt, ob.resources);
    double worst = 0;
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            std::vector<std::uint8_t> want(back.block_bytes());
            gather_block(view.tensor(l, kind), 0, view.layout.tokens, want);
            const auto got = back.block(l, kind);
            for (std::size_t i = 0; i < want.size(); i += 2) {
                const double x = bf16_to_float(std::uint16_t(want[i] | want[i + 1] << 8)), y = bf16_to_float(std::uint16_t(got[i] | got[i + 1] << 8));
                worst = std::max(worst, std::fabs(x - y) - (0.05 + std::max(std::fabs(x), std::fabs(y)) / 256));
            }
        }
    EXPECT_LE(worst, 0.0);
    EXPECT_THROW(preset("hybrid-abs:-1", {}, in), usage_error);
    in.cost.compute = 0;
    EXPECT_THROW(preset("hybrid", {}, in), usage_error);
    for (std::size_t cut : {1, 3, 4, 10, 20, 30}) {  // stored codec params, their family, the costs cut short
        auto bad = o.codec;
        bad.params.resize(bad.params.size() - cut);
        EXPECT_THROW(make_codec(bad, o.resources), format_error) << cut;
    }
    auto wrong_family = o.codec;  // hybrid (bit-exact) naming a lossy stored codec
    wrong_family.params[9 + 16] = 2;
    EXPECT_THROW(make_codec(wrong_family, o.resources), format_error);
    auto loose = ob.codec;  // hybrid-abs:0.05 whose stored codec's bound (f32 at the end of its params) is 0.1
    lossy_config lc = lossy_config::from_bytes(std::vector<std::uint8_t>(loose.params.begin() + 9 + 4 + 18, loose.params.end()));
    ASSERT_EQ(lc.error_bound, 0.05f);
    lc.error_bound = 0.1f;
    const auto lp = lc.to_bytes();
    loose.params.resize(9 + 4 + 18);
    loose.params.insert(loose.params.end(), lp.begin(), lp.end());
    EXPECT_THROW(make_codec(loose, ob.resources), format_error);
}
