// Lossy presets on the inputs a quantizer cannot represent, with defined, documented outcomes
// (docs/LOSSY.md "Special values"):
//   * NaN / ±Inf anywhere in the chunk -> usage_error naming the layer, K/V, head, token and
//     channel (no preset silently turns them into finite values any more);
//   * huge finite values (up to the dtype's max) -> decoded values stay finite, or, for presets
//     whose side information is fp16, a usage_error at encode time (never an unreadable file);
//   * a one-token cache -> decoded at the preset's nominal step, not rounded to the prediction
//     (seqkv-2bit used to decode a 1-token input to all zeros).
// On slices of the real fixture cache (data/kv/gpl3.safetensors).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"

namespace {

using namespace seqkv;

const char* const presets[] = {"seqkv-1bit", "seqkv-2bit", "seqkv-step:0.25", "bound:0.05", "abs:0.01", "kivi2",
                               "kivi4",      "turbo2",     "turbo3",          "turbo4",     "int8",     "fp8"};

/// Tokens [0, tokens) of the fixture's first two layers as an owned bf16 cache.
struct cache_copy {
    chunk_buffer buffer;
    byte_vector& bytes = buffer.bytes;  // refers into buffer: not copyable
    cache_copy(const cache_copy&) = delete;
    explicit cache_copy(std::uint64_t tokens) {
        const auto file = io::safetensors_file::load(std::string(SEQKV_DATA_DIR) + "/kv/gpl3.safetensors");
        buffer = copy_tokens(io::kv_view(file), 0, tokens, 2, dtype::bf16);
    }
    kv_cache_view view() const { return view_of(buffer); }
    /// Element index of (layer, kind, head, token, channel) in `bytes` (bf16 elements).
    std::size_t at(std::uint32_t l, int kind, std::uint32_t h, std::uint64_t t, std::uint32_t c) const {
        const kv_layout& layout = buffer.layout;
        return (((2 * std::size_t(l) + kind) * layout.kv_heads + h) * layout.tokens + t) * layout.head_dim + c;
    }
};

compress_options options_for(const char* preset, std::uint32_t chunk) {
    lossy_model_info m;
    m.head_dim = 64;
    m.rope_theta = 10000.0;
    compress_options o;
    o.codec = lossy_codec_config(lossy_preset(preset, m));
    o.chunk_tokens = chunk;
    return o;
}

TEST(LossySpecialValues, NanAndInfAreRefusedWithTheirPlaceByEveryPreset) {
    const std::uint16_t specials[] = {0x7fc0 /* NaN */, 0x7f81 /* NaN with payload */, 0x7f80 /* +Inf */, 0xff80 /* -Inf */};
    for (const char* preset : presets)
        for (std::uint16_t bits : specials) {
            cache_copy c(24);
            const std::size_t i = c.at(1, 1, 1, 17, 5);  // layer 1, V, head 1, token 17, channel 5
            c.bytes[2 * i] = std::uint8_t(bits), c.bytes[2 * i + 1] = std::uint8_t(bits >> 8);
            try {
                (void)compress(c.view(), options_for(preset, 8));
                ADD_FAILURE() << preset << " coded a non-finite value 0x" << std::hex << bits;
            } catch (const usage_error& e) {
                const std::string m = e.what();
                EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
                EXPECT_NE(m.find("layer 1 V head 1 token 17 channel 5"), std::string::npos) << preset << ": " << m;
            }
        }
    // The lossless codec keeps them, bit for bit.
    cache_copy c(24);
    const std::size_t i = c.at(0, 0, 0, 3, 9);
    c.bytes[2 * i] = 0x81, c.bytes[2 * i + 1] = 0x7f;
    compress_options o;
    o.chunk_tokens = 8;
    EXPECT_EQ(decompress(compress(c.view(), o)).bytes, c.bytes);
}

TEST(LossySpecialValues, HugeFiniteValuesDecodeFinite) {
    for (const char* preset : presets) {
        cache_copy c(24);
        const std::uint16_t huge[] = {0x7f7f /* bf16 max */, 0xff7f /* -max */, 0x7f00, 0x0001 /* subnormal */, 0x8000 /* -0 */};
        for (std::size_t k = 0; k < std::size(huge); ++k) {
            const std::size_t i = c.at(0, int(k % 2), 0, 2 + 3 * k, 7 + k);
            c.bytes[2 * i] = std::uint8_t(huge[k]), c.bytes[2 * i + 1] = std::uint8_t(huge[k] >> 8);
        }
        // Presets whose side information is fp16 (KIVI min/scale, TurboQuant norms, int8 scale)
        // refuse a group past fp16's range at encode time; every other preset decodes finite.
        const std::string name = preset;
        const bool fp16_side = name.starts_with("kivi") || name.starts_with("turbo") || name == "int8";
        try {
            const chunk_buffer out = decompress(compress(c.view(), options_for(preset, 8)));
            EXPECT_FALSE(fp16_side) << preset << " coded a value its fp16 side information cannot hold";
            for (std::size_t i = 0; i < out.bytes.size() / 2; ++i)
                ASSERT_TRUE(std::isfinite(load_as_float(out.bytes.data(), dtype::bf16, i))) << preset << " element " << i;
        } catch (const usage_error& e) {
            EXPECT_TRUE(fp16_side) << preset << " refused huge finite values: " << e.what();
            EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos) << e.what();
        }
    }
}

TEST(LossySpecialValues, OneTokenCachesDecodeNearTheInput) {
    // Relative RMS error of the decoded cache; a decoder that returned zeros (or the prediction
    // alone) scores 1.0. The bound 0.5 is loose on purpose: the 1- and 2-bit presets at one token
    // code each value with a few levels only; the point is that the value is coded at all.
    for (const char* preset : presets) {
        cache_copy c(1);
        const chunk_buffer out = decompress(compress(c.view(), options_for(preset, 8)));
        double err = 0, ref = 0;
        for (std::size_t i = 0; i < c.bytes.size() / 2; ++i) {
            const double a = load_as_float(c.bytes.data(), dtype::bf16, i), b = load_as_float(out.bytes.data(), dtype::bf16, i);
            err += (a - b) * (a - b), ref += a * a;
        }
        EXPECT_LT(std::sqrt(err / ref), 0.5) << preset;
    }
}

}  // namespace
