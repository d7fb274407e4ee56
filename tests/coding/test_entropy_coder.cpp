#include <gtest/gtest.h>

#include "seqkv/coding/context_model.hpp"
#include "seqkv/coding/entropy_coder.hpp"
#include "test_support.hpp"

using namespace seqkv::coding;

template <class Coder>
class EntropyCoderContract : public ::testing::Test {};
using coders = ::testing::Types<rans_interleaved, rans_interleaved_coder<true>, range_adaptive<>>;
TYPED_TEST_SUITE(EntropyCoderContract, coders);

TYPED_TEST(EntropyCoderContract, RoundTripsPerChannelContexts) {
    static_assert(EntropyCoder<TypeParam>);
    kv_context_layout layout{.layers = 2, .heads = 2, .channels = 64, .channel_group_size = 16};
    const std::uint32_t tokens = 300;
    std::vector<std::uint16_t> symbols, contexts;
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (std::uint32_t h = 0; h < layout.heads; ++h) {
            std::vector<std::uint16_t> slice(tokens * layout.channels);
            layout.fill_vector_contexts(l, h, slice);
            contexts.insert(contexts.end(), slice.begin(), slice.end());
        }
    symbols = seqkv_test::laplace_symbols(contexts.size(), 1024, 3.0, 5, 512);
    for (std::size_t i = 0; i < symbols.size(); ++i) symbols[i] = static_cast<std::uint16_t>(symbols[i] + 2 * (contexts[i] % 16));
    const auto bytes = TypeParam::encode(symbols, contexts, 1024, layout.context_count());
    std::vector<std::uint16_t> out(symbols.size());
    TypeParam::decode(bytes, contexts, out);
    EXPECT_EQ(out, symbols) << TypeParam::name;
    EXPECT_LT(bytes.size(), symbols.size());  // ~4 bits/symbol, far below 16
}

TEST(ContextModel, LayoutMapsAxesToDistinctIds) {
    kv_context_layout layout{.layers = 3, .heads = 4, .channels = 128, .channel_group_size = 32};
    EXPECT_EQ(layout.context_count(), 3u * 4 * 4);
    EXPECT_EQ(layout.context_of(0, 0, 0), 0);
    EXPECT_EQ(layout.context_of(0, 0, 31), 0);
    EXPECT_EQ(layout.context_of(0, 0, 32), 1);
    EXPECT_EQ(layout.context_of(2, 3, 127), 47);
    layout.share_layers = true;
    EXPECT_EQ(layout.context_count(), 16u);
    EXPECT_EQ(layout.context_of(2, 3, 127), 15);
    kv_context_layout too_many{.layers = 512, .heads = 512, .channels = 1};
    EXPECT_THROW(too_many.context_count(), seqkv::usage_error);
}
