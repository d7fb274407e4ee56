// The policy composition seqkv::codec<Quantizer, Predictor, EntropyCoder, Backend> on real KV.
#include <gtest/gtest.h>

#include <filesystem>

#include "seqkv/codec/codec.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/predict/token_mean.hpp"
#include "seqkv/quant/uniform.hpp"

namespace {

using namespace seqkv;

using rans_codec = codec<quant::uniform_step, predict::token_mean, coding::rans_interleaved, backend::simd>;
using range_codec = codec<quant::uniform_step, predict::token_mean, coding::range_adaptive<>, backend::scalar>;
static_assert(ChunkCodec<rans_codec>);
static_assert(ChunkCodec<range_codec>);
static_assert(lossy::SymbolCoder<rans_codec::symbol_coder>);

template <class C>
std::size_t round_trip(const C& c, const kv_cache_view& cache, std::span<const std::int32_t> ids) {
    const chunk_input in{&cache, 0, 256, ids.first(256), {}};
    chunk_buffer recon;
    const auto payload = c.encode(in, &recon);
    chunk_input side = in;
    side.cache = nullptr;
    auto out = chunk_buffer::for_layout(cache.layout, 256);
    c.decode(payload, side, out);
    EXPECT_EQ(out.bytes, recon.bytes);  // closed loop: the decoder reproduces the encoder exactly
    return payload.size();
}

TEST(Composition, EntropyCoderPolicyChangesOnlyTheCoding) {
    auto file = io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors");
    const auto cache = io::kv_view(file);
    const auto stored = io::token_ids_of(file, cache.layout.tokens);
    ASSERT_TRUE(stored.has_value());
    const std::vector<std::int32_t>& ids = *stored;
    const rans_codec a(quant::uniform_step(0.5f), predict::token_mean());
    const range_codec b(quant::uniform_step(0.5f), predict::token_mean());
    const auto rans_bytes = round_trip(a, cache, ids);
    const auto range_bytes = round_trip(b, cache, ids);
    EXPECT_NE(rans_bytes, range_bytes);
    const std::size_t raw = cache.layout.elements_per_token() * 256 * 2;
    EXPECT_LT(rans_bytes * 4, raw);  // a lossy codec at step 0.5 must be far below bf16 size
    EXPECT_LT(range_bytes * 4, raw);
}

}  // namespace
