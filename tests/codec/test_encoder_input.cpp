// What compress() does with input an engine might get wrong, for every codec family (lossless,
// lossy, token mode under the committed tiny model): a clear usage_error, never a crash or a
// file that decodes to something else. Zero tokens give a valid empty file; one token round-trips.
// (NaN / Inf / huge values in the lossy presets: tests/lossy/test_lossy_special_values.cpp.)
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/reference/llama.hpp"

namespace {

using namespace seqkv;

/// A contiguous cache of layout l (pseudo-random values in [-2, 2) for float dtypes) and its views.
struct owned_cache {
    chunk_buffer buffer;
    byte_vector& bytes = buffer.bytes;  // refers into buffer: not copyable
    owned_cache(const owned_cache&) = delete;
    kv_cache_view view;
    explicit owned_cache(kv_layout l, std::uint32_t seed = 7) : buffer(chunk_buffer::for_layout(l, l.tokens)) {
        std::uint32_t x = seed;
        for (std::size_t i = 0; is_kv_float(l.type) && i < bytes.size() / dtype_size(l.type); ++i) {
            x = x * 1664525u + 1013904223u;
            store_from_float(bytes.data(), l.type, i, float(int(x >> 20) - 2048) / 1024.0f);
        }
        view = view_of(buffer);
    }
};

std::shared_ptr<const model::language_model> tiny() {
    static auto m = reference::llama_model::load(std::filesystem::path(SEQKV_DATA_DIR) / "tiny-llama");
    return m;
}

struct family {
    std::string name;
    compress_options options;
    kv_layout layout;  // what the family's caches look like
    bool needs_ids = false;
};

std::vector<family> families() {
    std::vector<family> f;
    const kv_layout small{2, 2, 32, 0, dtype::bf16};
    f.push_back({"lossless", {}, small});
    compress_options lossy;
    lossy_model_info m;
    m.head_dim = 32;
    lossy.codec = lossy_codec_config(lossy_preset("kivi4", m));
    f.push_back({"kivi4", lossy, small});
    compress_options tok;
    tok.codec = tokens_config(tokens::mode::corrected, *tiny());
    add_language_model(tok.resources, tiny());
    kv_layout tl = tiny()->kv_shape();
    f.push_back({"tokens-exact", tok, tl, true});
    for (auto& x : f) x.options.chunk_tokens = 4;
    return f;
}

std::vector<std::int32_t> ids_for(std::uint64_t n) {
    std::vector<std::int32_t> ids(n);
    for (std::uint64_t i = 0; i < n; ++i) ids[i] = std::int32_t((i * 13 + 1) % 200);
    return ids;
}

void expect_usage_error(const std::string& what, const std::function<void()>& fn) {
    try {
        fn();
        ADD_FAILURE() << what << ": no error";
    } catch (const usage_error&) {
    } catch (const std::exception& e) {
        ADD_FAILURE() << what << ": " << e.what() << " is not a usage_error";
    }
}

TEST(EncoderInput, ZeroAndOneTokenRoundTrip) {
    for (const auto& f : families()) {
        for (std::uint64_t T : {0u, 1u}) {
            kv_layout l = f.layout;
            l.tokens = T;
            owned_cache c(l);
            const auto ids = ids_for(T);
            const byte_vector file = compress(c.view, f.options, f.needs_ids ? std::span<const std::int32_t>(ids) : std::span<const std::int32_t>{});
            const chunk_buffer out = decompress(file, 0, std::nullopt, f.options.resources);
            EXPECT_EQ(out.layout.tokens, T) << f.name;
            if (f.name != "kivi4") {  // lossless and tokens-exact are exact
                EXPECT_EQ(out.bytes, c.bytes) << f.name << " T=" << T;
            }
        }
    }
}

TEST(EncoderInput, MismatchedShapesDtypesAndSideDataAreUsageErrors) {
    for (const auto& f : families()) {
        kv_layout l = f.layout;
        l.tokens = 6;
        const auto ids = ids_for(6);
        const std::span<const std::int32_t> id_span = f.needs_ids ? std::span<const std::int32_t>(ids) : std::span<const std::int32_t>{};
        {
            owned_cache c(l);
            c.view.keys.pop_back();  // a layer missing its K
            expect_usage_error(f.name + " missing layer", [&] { (void)compress(c.view, f.options, id_span); });
        }
        {
            owned_cache c(l);
            c.view.values[0].heads = l.kv_heads + 1;  // a tensor wider than the layout
            expect_usage_error(f.name + " head count", [&] { (void)compress(c.view, f.options, id_span); });
        }
        {
            owned_cache c(l);
            c.view.keys[1].head_dim = l.head_dim / 2;
            expect_usage_error(f.name + " head_dim", [&] { (void)compress(c.view, f.options, id_span); });
        }
        {
            kv_layout li = l;
            li.type = dtype::i32;
            const owned_cache c(li);  // views of the right size for i32 elements
            expect_usage_error(f.name + " i32 cache", [&] { (void)compress(c.view, f.options, id_span); });
        }
        {
            owned_cache c(l);
            const auto short_ids = ids_for(5);
            expect_usage_error(f.name + " token id count", [&] { (void)compress(c.view, f.options, short_ids); });
        }
    }
}

TEST(EncoderInput, TokenIdsOutsideTheModelsVocabularyAreUsageErrors) {
    const auto f = families().back();
    kv_layout l = f.layout;
    l.tokens = 6;
    owned_cache c(l);
    for (std::int32_t bad : {-1, std::int32_t(tiny()->vocab_size()), std::numeric_limits<std::int32_t>::max()}) {
        auto ids = ids_for(6);
        ids[3] = bad;
        expect_usage_error("token id " + std::to_string(bad), [&] { (void)compress(c.view, f.options, ids); });
    }
    expect_usage_error("no ids at all", [&] { (void)compress(c.view, f.options); });
}

}  // namespace
