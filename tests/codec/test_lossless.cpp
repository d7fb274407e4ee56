// Lossless codec and container: bit-exact round trips, range decode, streaming, bad input.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "seqkv/preset.hpp"
#include "seqkv/seqkv.hpp"

namespace {

using namespace seqkv;

// An owned cache of random elements with special values sprinkled in.
struct owned_cache {
    kv_layout layout;
    std::vector<byte_vector> k, v;
    kv_cache_view view() const {
        kv_cache_view c;
        c.layout = layout;
        for (std::uint32_t l = 0; l < layout.layers; ++l) {
            const auto s = kv_strides::head_major(layout.tokens, layout.head_dim);
            c.keys.push_back({k[l].data(), layout.type, layout.kv_heads, layout.tokens, layout.head_dim, s});
            c.values.push_back({v[l].data(), layout.type, layout.kv_heads, layout.tokens, layout.head_dim, s});
        }
        return c;
    }
};

owned_cache random_cache(kv_layout layout, std::uint32_t seed) {
    owned_cache c{layout, {}, {}};
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::size_t n = layout.elements_per_tensor();
    const std::vector<std::uint32_t> specials = {0x7fc00001u, 0xffa5a5a5u, 0x7f800001u, 0x80000000u, 0x00000001u,
                                                 0x7f800000u, 0xff800000u, 0x00800000u, 0x807fffffu};
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (auto* dst : {&c.k, &c.v}) {
            byte_vector b(n * dtype_size(layout.type));
            for (std::size_t i = 0; i < n; ++i) {
                const float scale = 0.05f * float(1 + (i % layout.head_dim) % 7);  // channel-dependent magnitude
                float x = normal(rng) * scale;
                if (rng() % 50 == 0) x = std::bit_cast<float>(specials[rng() % specials.size()]);
                store_from_float(b.data(), layout.type, i, x);
                if (rng() % 97 == 0) {  // raw random bit patterns, including NaN payloads of the narrow type
                    for (std::size_t byte = 0; byte < dtype_size(layout.type); ++byte)
                        b[i * dtype_size(layout.type) + byte] = static_cast<std::uint8_t>(rng());
                }
            }
            dst->push_back(std::move(b));
        }
    return c;
}

void expect_equals_cache(const chunk_buffer& got, const owned_cache& want, std::uint64_t begin, std::uint64_t end) {
    const std::size_t es = dtype_size(want.layout.type), row = std::size_t(want.layout.head_dim) * es;
    ASSERT_EQ(got.layout.tokens, end - begin);
    for (std::uint32_t l = 0; l < want.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto& src = kind == kv_kind::key ? want.k[l] : want.v[l];
            const auto blk = got.block(l, kind);
            for (std::uint32_t h = 0; h < want.layout.kv_heads; ++h)
                ASSERT_TRUE(std::equal(blk.begin() + h * (end - begin) * row, blk.begin() + (h + 1) * (end - begin) * row,
                                       src.begin() + (h * want.layout.tokens + begin) * row))
                    << "layer " << l << " kind " << int(kind) << " head " << h;
        }
}

class LosslessDtypes : public ::testing::TestWithParam<dtype> {};

TEST_P(LosslessDtypes, RoundTripIsBitExactWithSpecialValues) {
    const auto cache = random_cache({3, 2, 16, 203, GetParam()}, 11);
    compress_options o;
    o.chunk_tokens = 64;
    std::vector<std::int32_t> ids(203);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t(i * 13 % 50);
    const auto file = compress(cache.view(), o, ids);
    expect_equals_cache(decompress(file), cache, 0, 203);
    expect_equals_cache(decompress<backend::scalar>(file), cache, 0, 203);
    format::stream_reader reader(file);
    EXPECT_EQ(reader.tokens(), 203u);
    EXPECT_EQ(reader.chunks().size(), 4u);
    EXPECT_EQ(reader.token_ids(), ids);
}

INSTANTIATE_TEST_SUITE_P(AllKvFloats, LosslessDtypes,
                         ::testing::Values(dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// compress() sizes its output from the bytes per token so far: a few allocations, not a
// doubling chain, and never far past what the file needs.
TEST(Lossless, CompressOutputGrowsToItsProjectedSize) {
    byte_vector out;
    const std::vector<std::uint8_t> preamble(300, 1), record(50'000, 2), index(4'000, 3);
    int moves = 0;
    const std::uint8_t* at = nullptr;
    auto put = [&](std::span<const std::uint8_t> b, std::uint64_t done) {
        append_projected(out, b, done, 6400);
        moves += out.data() != at;
        at = out.data();
    };
    put(preamble, 0);
    for (std::uint64_t chunk = 0; chunk < 50; ++chunk) put(record, chunk * 128);
    put(index, 6400);
    EXPECT_EQ(out.size(), 300u + 50u * 50'000u + 4'000u);
    EXPECT_LE(moves, 4);  // preamble, first record, its projection, maybe one more
    EXPECT_LE(out.capacity(), out.size() + out.size() / 8 + 65536);
    // A lossy file much smaller than its cache: the output stays near the file's size.
    owned_cache cache{{4, 2, 32, 1024, dtype::bf16}, {}, {}};  // finite values (lossy presets take no others)
    std::mt19937 rng(9);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::uint32_t l = 0; l < 4; ++l)
        for (auto* dst : {&cache.k, &cache.v}) {
            byte_vector b(cache.layout.elements_per_tensor() * 2);
            for (std::size_t i = 0; i < b.size() / 2; ++i) store_from_float(b.data(), dtype::bf16, i, normal(rng));
            dst->push_back(std::move(b));
        }
    compress_options o = preset("kivi2", model_params{32});
    o.chunk_tokens = 128;
    const auto file = compress(cache.view(), o);
    EXPECT_LT(file.size() * 4, cache.view().layout.total_bytes());
    EXPECT_LE(file.capacity(), file.size() + file.size() / 4 + 65536);
}

TEST(Lossless, RangeDecodeEqualsSliceOfFullDecode) {
    const auto cache = random_cache({2, 2, 8, 150, dtype::bf16}, 5);
    compress_options o;
    o.chunk_tokens = 32;
    const auto file = compress(cache.view(), o);
    const auto full = decompress(file);
    for (auto [a, b] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{{0, 150}, {0, 1}, {31, 33}, {64, 96}, {149, 150}, {10, 10}, {17, 140}}) {
        const auto part = decompress(file, a, b);
        expect_equals_cache(part, cache, a, b);
        for (std::uint32_t l = 0; l < 2; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < 2; ++h)
                    for (std::uint64_t t = a; t < b; ++t)
                        for (std::uint32_t c = 0; c < 8; ++c)
                            ASSERT_EQ(std::bit_cast<std::uint32_t>(part.view(l, kind).at(h, t - a, c)),
                                      std::bit_cast<std::uint32_t>(full.view(l, kind).at(h, t, c)));
    }
    EXPECT_THROW(decompress(file, 100, 151), usage_error);
}

// decode_into: a chunk decoded straight into rows of a larger buffer (head stride > the chunk's
// tokens) equals the staged decode, same-token references (XOR, copy, RoPE rotation: they read
// earlier rows through the stride) included; rows outside the chunk are never written; a reused
// buffer full of garbage decodes to the same bytes.
TEST(Lossless, DecodeIntoRowsOfALargerBufferEqualsTheStagedDecode) {
    const kv_layout layout{2, 3, 16, 96, dtype::bf16};
    auto cache = random_cache(layout, 9);
    std::vector<std::int32_t> ids(layout.tokens);
    const std::size_t row = 16 * 2;
    for (std::uint64_t t = 0; t < layout.tokens; ++t) {
        ids[t] = std::int32_t(t % 12);
        if (t >= 12 && t % 3 == 0)  // exact repeats of the token 12 back: copy / XOR references
            for (auto* kv : {&cache.k, &cache.v})
                for (auto& b : *kv)
                    for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                        std::copy_n(b.begin() + std::ptrdiff_t((h * layout.tokens + t - 12) * row), row,
                                    b.begin() + std::ptrdiff_t((h * layout.tokens + t) * row));
    }
    for (const bool rope : {false, true}) {
        model_params m;
        m.head_dim = 16;
        m.rope_theta = rope ? 10000.0 : 0.0;
        compress_options o = preset("lossless", m);
        o.chunk_tokens = 32;
        const auto file = compress(cache.view(), o, ids);
        const auto full = decompress(file);
        expect_equals_cache(full, cache, 0, layout.tokens);

        format::stream_reader reader(file);
        const auto codec = make_codec(reader.header().codec);
        ASSERT_TRUE(codec.decode_into);
        chunk_buffer reused = full;
        std::fill(reused.bytes.begin(), reused.bytes.end(), std::uint8_t(0xAB));
        reader.decode_into(reused, codec, 0, layout.tokens);
        EXPECT_TRUE(reused.bytes == full.bytes);
        reader.decode_into(reused, codec, 32, 64);  // shrinks, keeps the allocation
        expect_equals_cache(reused, cache, 32, 64);

        chunk_buffer big = chunk_buffer::for_layout(layout, 100);
        std::fill(big.bytes.begin(), big.bytes.end(), std::uint8_t(0xCD));
        const auto rec = reader.record(1);  // tokens 32..63 into rows 40..71
        codec.decode_into(rec.payload, chunk_input{nullptr, 32, 64, rec.token_ids, rec.nll, nullptr, nullptr},
                          chunk_destination::rows_of(big, 40, 32));
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto& src = kind == kv_kind::key ? cache.k[l] : cache.v[l];
                const auto blk = big.block(l, kind);
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                    for (std::uint64_t t = 0; t < 100; ++t) {
                        const auto got = blk.subspan((h * 100 + t) * row, row);
                        if (t >= 40 && t < 72)
                            EXPECT_TRUE(std::equal(got.begin(), got.end(), src.begin() + std::ptrdiff_t((h * layout.tokens + t - 8) * row)))
                                << "rope " << rope << " layer " << l << " head " << h << " row " << t;
                        else
                            EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](std::uint8_t b) { return b == 0xCD; }))
                                << "row " << t << " written";
                    }
            }
    }
}

// The plane-join kernels (scalar, SSE2, AVX2 where the CPU has it) write the same bytes for every
// length around their vector widths, every byte value, with and without the XOR operand.
TEST(Lossless, JoinKernelsWriteTheScalarBytes) {
    std::mt19937 rng(3);
    std::vector<std::uint8_t> a(300), b(300), x(600);
    for (auto* v : {&a, &b, &x})
        for (auto& e : *v) e = std::uint8_t(rng());
    for (int i = 0; i < 256; ++i) a[i] = std::uint8_t(i), b[i] = std::uint8_t(255 - i);  // every byte in both planes
    const auto kernels = lossless::detail::join_row2_kernels();
    EXPECT_GE(kernels.size(), 2u);  // x86-64: scalar and SSE2 at least
    for (std::size_t m : {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 256})
        for (std::size_t off : {0, 1, 3})
            for (const bool with_x : {false, true}) {
                std::vector<std::uint8_t> want(2 * m + 8, 0xEE);
                kernels[0](a.data() + off, b.data() + off, with_x ? x.data() + off : nullptr, want.data() + 1, m);
                for (std::size_t k = 1; k < kernels.size(); ++k) {
                    std::vector<std::uint8_t> got(2 * m + 8, 0xEE);
                    kernels[k](a.data() + off, b.data() + off, with_x ? x.data() + off : nullptr, got.data() + 1, m);
                    EXPECT_EQ(got, want) << "kernel " << k << " m " << m << " offset " << off << " xor " << with_x;
                }
                for (std::size_t c = 0; c < m; ++c) {  // and join2 itself, element by element
                    std::uint16_t v = lossless::detail::join2(a[off + c], b[off + c]);
                    if (with_x) v ^= std::uint16_t(x[off + 2 * c] | x[off + 2 * c + 1] << 8);
                    ASSERT_EQ(want[1 + 2 * c] | want[2 + 2 * c] << 8, v) << c;
                }
            }
}

TEST(Lossless, Fp8JoinKernelsWriteTheScalarBytes) {
    std::mt19937 rng(4);
    std::vector<std::uint8_t> a(300), x(300);
    for (auto* v : {&a, &x})
        for (auto& e : *v) e = std::uint8_t(rng());
    for (int i = 0; i < 256; ++i) a[i] = std::uint8_t(i);  // every byte value
    const auto kernels = lossless::detail::join_row1_kernels();
    EXPECT_GE(kernels.size(), 2u);  // x86-64: scalar and SSE2 at least
    for (std::size_t m : {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 256})
        for (std::size_t off : {0, 1, 3})
            for (const bool with_x : {false, true}) {
                std::vector<std::uint8_t> want(m + 8, 0xEE);
                kernels[0](a.data() + off, with_x ? x.data() + off : nullptr, want.data() + 1, m);
                for (std::size_t c = 0; c < m; ++c)
                    ASSERT_EQ(want[1 + c], std::uint8_t(with_x ? a[off + c] ^ x[off + c] : a[off + c])) << c;
                EXPECT_EQ(want[0], 0xEE);
                EXPECT_EQ(want[m + 1], 0xEE);
                for (std::size_t k = 1; k < kernels.size(); ++k) {
                    std::vector<std::uint8_t> got(m + 8, 0xEE);
                    kernels[k](a.data() + off, with_x ? x.data() + off : nullptr, got.data() + 1, m);
                    EXPECT_EQ(got, want) << "kernel " << k << " m " << m << " offset " << off << " xor " << with_x;
                }
            }
}

// The plan's estimates visit only a histogram's nonzero symbols; they must be the same doubles as
// the full histogram's (the encoder's choices, hence its bytes, depend on them).
TEST(Lossless, SparseHistogramBitsAreTheFullHistogramsBits) {
    std::mt19937_64 rng(11);
    for (int trial = 0; trial < 2000; ++trial) {
        std::uint32_t full[256] = {};
        const int used = trial % 5 == 0 ? 256 : 1 + int(rng() % 40);
        for (int k = 0; k < used; ++k) {
            const std::uint32_t b = used == 256 ? std::uint32_t(k) : std::uint32_t(rng() % 256);
            full[b] = trial % 7 == 0 && k < 70 ? 65536 + std::uint32_t(rng() % 1000000) : std::uint32_t(rng() % (trial % 3 ? 300 : 5));
        }
        std::uint32_t counts[256];
        std::uint8_t symbols[256];
        std::uint32_t n = 0;
        for (std::uint32_t b = 0; b < 256; ++b)
            if (full[b] || rng() % 4 == 0) counts[n] = full[b], symbols[n++] = static_cast<std::uint8_t>(b);  // zeros may be listed
        for (const double scale : {1.0, 8.0, 3.7}) {
            const double want = lossless::cost::histogram_bits(full, 256, scale);
            const double got = lossless::cost::histogram_bits_sparse(counts, symbols, n, scale);
            ASSERT_EQ(std::bit_cast<std::uint64_t>(want), std::bit_cast<std::uint64_t>(got)) << "trial " << trial << " scale " << scale;
        }
    }
}

TEST(Lossless, TokenByTokenStreamingEqualsBulk) {
    const auto cache = random_cache({2, 2, 8, 70, dtype::f16}, 9);
    const auto view = cache.view();
    format::preamble p;
    p.layout = cache.layout;
    p.codec = lossless_config();
    p.chunk_tokens = 16;
    byte_vector streamed;
    std::size_t flushes = 0;
    format::stream_writer w([&](std::span<const std::uint8_t> b) { streamed.insert(streamed.end(), b.begin(), b.end()); ++flushes; },
                            p, make_codec(p.codec));
    const std::size_t row = 8 * 2;
    for (std::uint64_t t = 0; t < 70; ++t) {
        std::vector<byte_vector> ks, vs;
        for (std::uint32_t l = 0; l < 2; ++l)
            for (auto [src, dst] : {std::pair{&cache.k[l], &ks}, std::pair{&cache.v[l], &vs}}) {
                byte_vector one;
                for (std::uint32_t h = 0; h < 2; ++h)
                    one.insert(one.end(), src->begin() + (h * 70 + t) * row, src->begin() + (h * 70 + t + 1) * row);
                dst->push_back(std::move(one));
            }
        std::vector<std::span<const std::uint8_t>> kspan(ks.begin(), ks.end()), vspan(vs.begin(), vs.end());
        w.append_token(kspan, vspan);
        if (t == 14) {
            EXPECT_EQ(flushes, 1u);  // the preamble only
        }
        if (t == 15) {
            EXPECT_EQ(flushes, 4u);  // the first full chunk's record (head, payload, CRC), emitted as soon as it filled
        }
    }
    w.finish();
    compress_options o;
    o.chunk_tokens = 16;
    EXPECT_EQ(streamed, compress(view, o));
    expect_equals_cache(decompress(streamed), cache, 0, 70);
}

TEST(Lossless, CompressesStructuredData) {
    // Smooth, channel-scaled data must beat raw size: a real test that the coder models something.
    const auto cache = random_cache({2, 2, 64, 256, dtype::bf16}, 3);
    const auto file = compress(cache.view());
    EXPECT_LT(file.size(), cache.layout.total_bytes() * 9 / 10);
}

TEST(Lossless, TruncatedOrCorruptedStreamsRaiseErrors) {
    const auto cache = random_cache({2, 1, 8, 40, dtype::bf16}, 21);
    compress_options o;
    o.chunk_tokens = 16;
    const auto file = compress(cache.view(), o);
    for (std::size_t n = 0; n < file.size(); n += (n < 64 ? 1 : 7)) {
        byte_vector cut(file.begin(), file.begin() + n);
        EXPECT_THROW(decompress(cut), seqkv::error) << "truncated to " << n;
    }
    std::mt19937 rng(99);
    int detected = 0;
    for (int trial = 0; trial < 400; ++trial) {
        byte_vector bad = file;
        bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        try {
            auto out = decompress(bad);
            // The only undetected flips allowed are none: every byte is under a CRC.
            ADD_FAILURE() << "corruption not detected";
        } catch (const seqkv::error&) {
            ++detected;
        }
    }
    EXPECT_EQ(detected, 400);
}

TEST(Lossless, CorruptPayloadUnderValidCrcNeverCrashes) {
    // Rebuild chunk records with a valid CRC over garbage payloads: the codec itself must reject them.
    const auto cache = random_cache({1, 1, 8, 16, dtype::bf16}, 4);
    const lossless_codec<backend::scalar> codec;
    const auto view = cache.view();
    chunk_input in{&view, 0, 16, {}, {}};
    const auto payload = codec.encode(in);
    std::mt19937 rng(5);
    for (int trial = 0; trial < 2000; ++trial) {
        byte_vector bad = payload;
        const int flips = 1 + trial % 5;
        for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        if (trial % 7 == 0) bad.resize(rng() % bad.size());
        auto out = chunk_buffer::for_layout(cache.layout, 16);
        try {
            codec.decode(bad, in, out);
        } catch (const seqkv::error&) {
        }
    }
}

}  // namespace

namespace {

TEST(Lossless, SameTokenReferencesCodeRepeatsAlmostForFree) {
    // Values that are a function of the token id (like layer 0's V): repeats cost ~nothing.
    seqkv::kv_layout layout{1, 2, 32, 300, seqkv::dtype::bf16};
    auto cache = random_cache(layout, 8);
    std::vector<std::int32_t> ids(300);
    for (std::size_t t = 0; t < ids.size(); ++t) ids[t] = std::int32_t((t * 7919) % 40);
    const std::size_t row = 32 * 2;
    for (auto* tensors : {&cache.k, &cache.v})
        for (std::uint32_t h = 0; h < 2; ++h)
            for (std::size_t t = 0; t < 300; ++t) {
                const std::size_t first = std::size_t(std::find(ids.begin(), ids.end(), ids[t]) - ids.begin());
                std::copy_n((*tensors)[0].begin() + (h * 300 + first) * row, row, (*tensors)[0].begin() + (h * 300 + t) * row);
            }
    seqkv::compress_options o;
    o.chunk_tokens = 300;
    const auto with_ids = seqkv::compress(cache.view(), o, ids);
    const auto without = seqkv::compress(cache.view(), o);
    expect_equals_cache(seqkv::decompress(with_ids), cache, 0, 300);
    EXPECT_LT(with_ids.size() * 3, without.size());  // 40 distinct vectors of 300 dominate the cost

    // The same payload decoded without token ids must be refused, not mis-decoded.
    const seqkv::lossless_codec<seqkv::backend::scalar> codec;
    const auto view = cache.view();
    const seqkv::chunk_input in{&view, 0, 300, ids, {}};
    const auto payload = codec.encode(in);
    auto out = seqkv::chunk_buffer::for_layout(layout, 300);
    const seqkv::chunk_input no_ids{nullptr, 0, 300, {}, {}};
    EXPECT_THROW(codec.decode(payload, no_ids, out), seqkv::format_error);
}

}  // namespace

namespace {

using namespace seqkv;

// One [heads, tokens, head_dim] block of element bits with specials, rows repeating by token id.
struct raw_block {
    lossless::block_shape shape;
    dtype type;
    byte_vector bytes;
    std::vector<std::int32_t> ids;
};

raw_block repeating_block(dtype type, std::uint32_t seed, bool signed_channels = false) {
    raw_block b{{2, 120, 24}, type, {}, std::vector<std::int32_t>(120)};
    const std::size_t es = dtype_size(type), D = 24;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t i = 0; i < b.ids.size(); ++i) b.ids[i] = std::int32_t(rng() % 30);
    b.bytes.resize(b.shape.elements() * es);
    const std::vector<std::uint32_t> specials = {0x7fc00001u, 0xffa5a5a5u, 0x80000000u, 0x00000001u, 0x7f800000u, 0x807fffffu};
    for (std::uint32_t h = 0; h < 2; ++h)
        for (std::size_t t = 0; t < 120; ++t) {
            const std::size_t first = std::size_t(std::find(b.ids.begin(), b.ids.end(), b.ids[t]) - b.ids.begin());
            for (std::size_t c = 0; c < D; ++c) {
                const std::size_t i = (h * 120 + t) * D + c;
                if (first < t && (t % 5 != 0)) {  // most repeats are exact, every fifth differs
                    std::copy_n(b.bytes.begin() + ((h * 120 + first) * D + c) * es, es, b.bytes.begin() + i * es);
                    continue;
                }
                float x = normal(rng) * 0.1f * float(1 + c % 5);
                if (signed_channels) x = (c % 3 == 0 ? -1.0f : 1.0f) * std::fabs(x);
                if (rng() % 23 == 0) x = std::bit_cast<float>(specials[rng() % specials.size()]);
                store_from_float(b.bytes.data(), type, i, x);
                if (rng() % 61 == 0)
                    for (std::size_t k = 0; k < es; ++k) b.bytes[i * es + k] = static_cast<std::uint8_t>(rng());
            }
        }
    return b;
}

class LosslessModes : public ::testing::TestWithParam<dtype> {};

TEST_P(LosslessModes, CopyPredictorIsChosenForExactRepeatsAndBitExact) {
    const auto b = repeating_block(GetParam(), 17);
    const auto coded = lossless::encode_block(b.bytes, b.type, b.shape, {}, b.ids);
    EXPECT_EQ(coded[0], static_cast<std::uint8_t>(lossless::bit_predictor::copy_same_token));
    byte_vector back(b.bytes.size());
    lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids);
    EXPECT_EQ(back, b.bytes);
    lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::scalar, b.ids);
    EXPECT_EQ(back, b.bytes);
    // Without ids, or with other ids, the block is refused or decodes to something else, never crashes.
    EXPECT_THROW(lossless::decode_block(coded, b.type, b.shape, back), format_error);
}

TEST_P(LosslessModes, EveryPredictorAndSignMapRoundTrips) {
    const auto b = repeating_block(GetParam(), 23, true);
    for (int variant = 0; variant < 8; ++variant) {
        lossless::plane_options o;
        o.try_xor_previous_token = variant & 1;
        o.try_same_token = variant & 2;
        o.try_sign_map = variant & 4;
        o.max_channel_classes = 1 + variant * 30;
        const auto coded = lossless::encode_block(b.bytes, b.type, b.shape, o, b.ids);
        byte_vector back(b.bytes.size());
        lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids);
        EXPECT_EQ(back, b.bytes) << "variant " << variant;
    }
}

TEST_P(LosslessModes, IncompressiblePlanesAreStoredNotExpanded) {
    raw_block b{{1, 300, 16}, GetParam(), {}, {}};
    std::mt19937 rng(3);
    b.bytes.resize(b.shape.elements() * dtype_size(b.type));
    for (auto& x : b.bytes) x = static_cast<std::uint8_t>(rng());
    const auto coded = lossless::encode_block(b.bytes, b.type, b.shape);
    EXPECT_LE(coded.size(), b.bytes.size() + 32);
    byte_vector back(b.bytes.size());
    lossless::decode_block(coded, b.type, b.shape, back);
    EXPECT_EQ(back, b.bytes);
    // Forcing "stored unless coding saves 90%" stores every plane of real-looking data too.
    const auto r = repeating_block(GetParam(), 5);
    lossless::plane_options o;
    o.min_coding_gain = 0.9;
    const auto stored = lossless::encode_block(r.bytes, r.type, r.shape, o, r.ids);
    byte_vector back2(r.bytes.size());
    lossless::decode_block(stored, r.type, r.shape, back2, coding::rans::decode_path::automatic, r.ids);
    EXPECT_EQ(back2, r.bytes);
}

TEST_P(LosslessModes, CorruptBlocksRaiseErrorsNeverCrash) {
    const auto b = repeating_block(GetParam(), 29, true);
    const auto coded = lossless::encode_block(b.bytes, b.type, b.shape, {}, b.ids);
    std::mt19937 rng(7);
    byte_vector back(b.bytes.size());
    for (int trial = 0; trial < 600; ++trial) {
        byte_vector bad = coded;
        for (int f = 0; f < 1 + trial % 3; ++f) bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        if (trial % 5 == 0) bad.resize(rng() % bad.size());
        try {
            lossless::decode_block(bad, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids);
        } catch (const seqkv::error&) {
        }
    }
    // Header-level corruption is always detected.
    byte_vector bad = coded;
    bad[0] = 9;
    EXPECT_THROW(lossless::decode_block(bad, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids), format_error);
    bad = coded;
    bad.push_back(0);
    EXPECT_THROW(lossless::decode_block(bad, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids), format_error);
}

INSTANTIATE_TEST_SUITE_P(AllKvFloats, LosslessModes,
                         ::testing::Values(dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Lossless, ConfigCarriesEveryEncoderOption) {
    lossless::plane_options o;
    o.max_channel_classes = 7;
    o.try_xor_previous_token = false;
    o.try_sign_map = false;
    o.min_coding_gain = 0.25;
    const auto c = lossless_config(o);
    ASSERT_EQ(c.params.size(), 3u);
    EXPECT_EQ(c.params[0], 7);
    EXPECT_EQ(c.params[1], 2);
    EXPECT_EQ(c.params[2], 64);
    EXPECT_NO_THROW(make_codec(c));
    auto bad = c;
    bad.params[1] = 8;
    EXPECT_THROW(make_codec(bad), format_error);
    bad.params.resize(2);
    EXPECT_THROW(make_codec(bad), format_error);
}

}  // namespace

namespace {

using namespace seqkv;

// Keys built as RoPE(base(token id), position) in double, stored in `type`, with special values
// (NaN payloads, Inf, -0, subnormals) in bases and in rotated rows; pairing by `style`.
struct rotated_block {
    lossless::block_shape shape;
    dtype type;
    std::vector<std::int32_t> ids;
    byte_vector bytes;
};

rotated_block rotated_keys(dtype type, lossless::rope::pairing style, std::uint32_t seed) {
    rotated_block b{{2, 200, 64}, type, {}, {}};
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const std::size_t D = b.shape.head_dim, half = D / 2, es = dtype_size(type);
    std::vector<std::vector<double>> base(2 * 30, std::vector<double>(D));
    for (auto& v : base)
        for (std::size_t c = 0; c < D; ++c) v[c] = normal(rng) * (0.1 + double(c % 9));
    for (std::uint64_t t = 0; t < b.shape.tokens; ++t) b.ids.push_back(std::int32_t(rng() % 30));
    b.bytes.resize(b.shape.elements() * es);
    for (std::uint32_t h = 0; h < b.shape.heads; ++h)
        for (std::uint64_t t = 0; t < b.shape.tokens; ++t) {
            const auto& v = base[h * 30 + std::size_t(b.ids[t])];
            const std::size_t row = (h * b.shape.tokens + t) * D;
            for (std::size_t i = 0; i < half; ++i) {
                const std::size_t c0 = lossless::rope::pair_channel(style, half, i, 0), c1 = lossless::rope::pair_channel(style, half, i, 1);
                const double angle = double(t + 1000) * std::pow(10000.0, -2.0 * double(i) / double(D));
                store_from_float(b.bytes.data(), type, row + c0, float(v[c0] * std::cos(angle) - v[c1] * std::sin(angle)));
                store_from_float(b.bytes.data(), type, row + c1, float(v[c1] * std::cos(angle) + v[c0] * std::sin(angle)));
            }
        }
    // Specials: raw bit patterns (NaN/Inf/-0/subnormal/max) in some elements of some rows.
    const std::vector<std::uint32_t> specials = {0xffffffffu, 0x7f800000u, 0x80000000u, 0x00000001u, 0x7f7fffffu, 0x007fffffu};
    for (int k = 0; k < 60; ++k) {
        const std::size_t i = rng() % b.shape.elements();
        const std::uint32_t sp = specials[rng() % specials.size()];
        std::uint32_t bits = es == 4 ? sp : es == 2 ? (type == dtype::bf16 ? sp >> 16 : (sp == 0x80000000u ? 0x8000u : sp & 0xffffu)) : sp & 0xffu;
        std::memcpy(b.bytes.data() + i * es, &bits, es);
    }
    return b;
}

class LosslessRope : public ::testing::TestWithParam<dtype> {};

TEST_P(LosslessRope, RotatedKeysRoundTripAndPay) {
    for (auto style : {lossless::rope::pairing::rotate_half, lossless::rope::pairing::interleaved}) {
        const auto b = rotated_keys(GetParam(), style, 11);
        lossless::plane_options with, without;
        with.rope = lossless::rope::parameters{10000.0, style};
        const auto coded = lossless::encode_block(b.bytes, b.type, b.shape, with, b.ids);
        const auto plain = lossless::encode_block(b.bytes, b.type, b.shape, without, b.ids);
        EXPECT_EQ(coded[0], std::uint8_t(lossless::bit_predictor::rotate_same_token));
        if (b.type != dtype::f8_e5m2) {
            EXPECT_LT(double(coded.size()), 0.9 * double(plain.size())) << dtype_name(b.type);
        }
        byte_vector back(b.bytes.size());
        lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids, with.rope);
        EXPECT_EQ(back, b.bytes);
        lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::scalar, b.ids, with.rope);
        EXPECT_EQ(back, b.bytes);

        // Missing rope parameters or ids are refused.
        EXPECT_THROW(lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids), format_error);
        EXPECT_THROW(lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, {}, with.rope), format_error);
        // Wrong ids or a wrong theta decode to other bits or raise format_error, never crash.
        auto wrong_ids = b.ids;
        for (auto& id : wrong_ids) id = (id + 1) % 7;
        auto other = with.rope;
        other->theta = 500000.0;
        for (int trial = 0; trial < 2; ++trial) {
            try {
                if (trial == 0) lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, wrong_ids, with.rope);
                else lossless::decode_block(coded, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids, other);
                EXPECT_NE(back, b.bytes);
            } catch (const format_error&) {
            }
        }
        // Corrupted payloads never crash.
        std::mt19937 rng(3);
        for (int trial = 0; trial < 300; ++trial) {
            byte_vector bad = coded;
            for (int f = 0; f < 1 + trial % 4; ++f) bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
            if (trial % 5 == 0) bad.resize(rng() % bad.size());
            try {
                lossless::decode_block(bad, b.type, b.shape, back, coding::rans::decode_path::automatic, b.ids, with.rope);
            } catch (const seqkv::error&) {
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllKvFloats, LosslessRope,
                         ::testing::Values(dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// The AVX2 row predictors (bf16, f16) must give the scalar fast path's bits (itself checked
// against the generic predictor above) for both pairings and every head_dim shape, including
// pair counts that leave a scalar tail, on rows rich in special values, with real rotation
// tables and with random 28-bit cos / sin values. Skips where the CPU or build has no AVX2.
TEST(Lossless, SimdRotatedPredictionMatchesScalarBits) {
    if (!lossless::rope::simd_predict_available()) GTEST_SKIP() << "no AVX2 on this CPU / build: SIMD row predictor not tested";
    std::mt19937_64 rng(11);
    std::vector<std::uint64_t> ref(700, lossless::detail::no_reference);
    for (std::uint64_t t = 1; t < ref.size(); ++t) ref[t] = rng() % t;
    for (std::uint32_t D : {2u, 4u, 6u, 8u, 10u, 14u, 16u, 18u, 30u, 64u, 80u, 96u, 126u, 128u, 130u, 192u, 254u, 256u}) {
        for (auto style : {lossless::rope::pairing::rotate_half, lossless::rope::pairing::interleaved}) {
            const lossless::rope::rotation_table table({10000.0, style}, D, ref, lossless::detail::no_reference);
            for (dtype type : {dtype::bf16, dtype::f16}) {
                const auto fmt = lossless::rope::float_format::of(type);
                const auto simd = lossless::rope::simd_predictor<std::uint16_t>(type, style);
                const auto scalar = lossless::rope::fast_predictor<std::uint16_t>(type, style, false);
                ASSERT_NE(simd, nullptr);
                ASSERT_NE(simd, scalar);
                const std::uint32_t emask = ((1u << fmt.exponent) - 1) << fmt.mantissa, sign = 0x8000u;
                std::uint16_t row[256 + 8], a[256], b[256 + 8];
                std::vector<double> cs(D);
                auto random_row = [&] {
                    for (std::uint32_t c = 0; c < D; ++c) {
                        std::uint32_t u = std::uint32_t(rng()) & 0xffffu;
                        switch (rng() % 10) {
                            case 0: u &= ~emask; break;                                     // zero / subnormal
                            case 1: u |= emask; break;                                      // Inf / NaN
                            case 2: u = fmt.max_finite | (u & sign); break;                 // largest finite
                            case 3: u = (1u << fmt.mantissa) | (u & 0xf) | (u & sign); break;  // near the smallest normal
                            case 4: u &= sign; break;                                       // +-0
                            case 5: u = (emask - (1u << fmt.mantissa)) | (u & sign) | (u & ((1u << fmt.mantissa) - 1)); break;  // top binade
                            default: {
                                const std::uint32_t e = std::uint32_t(fmt.bias) - 4 + std::uint32_t(rng() % 8);
                                u = (u & ((1u << fmt.mantissa) - 1)) | (e << fmt.mantissa) | (u & sign);
                            }
                        }
                        row[c] = static_cast<std::uint16_t>(u);
                    }
                };
                auto compare = [&](const double* cos_sin, const char* what, int trial) {
                    b[D] = b[D + 1] = 0x5a5a;  // canaries: nothing written past the row
                    scalar(row, D, cos_sin, a);
                    simd(row, D, cos_sin, b);
                    for (std::uint32_t c = 0; c < D; ++c)
                        ASSERT_EQ(a[c], b[c]) << dtype_name(type) << " D " << D << " style " << int(style) << " " << what << " trial "
                                              << trial << " channel " << c << " input 0x" << std::hex << row[c];
                    ASSERT_EQ(b[D], 0x5a5a);
                    ASSERT_EQ(b[D + 1], 0x5a5a);
                };
                for (int trial = 0; trial < 400; ++trial) {
                    random_row();
                    compare(table.cos(1 + rng() % (ref.size() - 1)), "table", trial);
                    // Random cos / sin, 28-bit truncated, with exact 0, +-1 and tiny values.
                    for (std::uint32_t i = 0; i < D; ++i) {
                        double v = std::ldexp(double(std::int64_t(rng() % (std::uint64_t{1} << 30)) - (std::int64_t{1} << 29)), -29);
                        switch (rng() % 8) {
                            case 0: v = 0.0; break;
                            case 1: v = (rng() & 1) ? 1.0 : -1.0; break;
                            case 2: v = std::ldexp(v, -int(rng() % 40)); break;
                            default: break;
                        }
                        cs[i] = predict::rope_math::truncate28(v);
                    }
                    compare(cs.data(), "random", trial);
                }
                // Every 16-bit pattern in every channel position (a few shapes: it is the slow part).
                for (std::uint32_t u = 0; (D == 10 || D == 128) && u <= 0xffff; ++u) {
                    for (std::uint32_t c = 0; c < D; ++c) row[c] = static_cast<std::uint16_t>((u + c * 0x2345u) & 0xffffu);
                    compare(table.cos(1 + u % (ref.size() - 1)), "exhaustive", int(u));
                }
            }
        }
    }
}

// The branch-free row predictor must give the generic (normative) predict_row's bits for every
// dtype and pairing, on random rows rich in special values, with real rotation tables.
TEST(Lossless, FastRotatedPredictionMatchesGenericBits) {
    std::mt19937_64 rng(7);
    const std::uint32_t D = 128;
    std::vector<std::uint64_t> ref(1200, lossless::detail::no_reference);
    for (std::uint64_t t = 1; t < ref.size(); ++t) ref[t] = rng() % t;
    for (auto style : {lossless::rope::pairing::rotate_half, lossless::rope::pairing::interleaved}) {
        const lossless::rope::parameters p{500000.0, style};
        const lossless::rope::rotation_table table(p, D, ref, lossless::detail::no_reference);
        for (dtype type : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2}) {
            const auto fmt = lossless::rope::float_format::of(type);
            const std::uint32_t mask = fmt.width == 32 ? 0xffffffffu : (1u << fmt.width) - 1;
            auto check = [&]<class U>(U) {
                const auto fast = lossless::rope::fast_predictor<U>(type, style, /*allow_simd=*/false);
                U row[256], a[256], b[256];
                for (int trial = 0; trial < 3000; ++trial) {
                    const std::size_t t = 1 + rng() % (ref.size() - 1);
                    for (std::uint32_t c = 0; c < D; ++c) {
                        std::uint32_t u = std::uint32_t(rng()) & mask;
                        switch (rng() % 8) {  // specials: exponent field 0 / all ones, max finite, tiny, +-0
                            case 0: u &= ~(((1u << fmt.exponent) - 1) << fmt.mantissa); break;
                            case 1: u |= ((1u << fmt.exponent) - 1) << fmt.mantissa; break;
                            case 2: u = fmt.max_finite | (u & (1u << (fmt.width - 1))); break;
                            case 3: u = (1u << fmt.mantissa) | (u & 0xf) | (u & (1u << (fmt.width - 1))); break;
                            case 4: u &= 1u << (fmt.width - 1); break;
                            default: {  // typical magnitudes: exponent near the bias
                                const std::uint32_t e = std::uint32_t(fmt.bias) - 3 + std::uint32_t(rng() % 6);
                                u = (u & ((1u << fmt.mantissa) - 1)) | (e << fmt.mantissa) | (u & (1u << (fmt.width - 1)));
                            }
                        }
                        row[c] = static_cast<U>(u);
                    }
                    lossless::rope::predict_row<U>(row, D, style, table.cos(t), table.sin(t), fmt, a);
                    fast(row, D, table.cos(t), b);
                    for (std::uint32_t c = 0; c < D; ++c) ASSERT_EQ(a[c], b[c]) << dtype_name(type) << " channel " << c << " trial " << trial;
                }
                // Exhaustive conversions for narrow types: every bit pattern against every small table value.
                if constexpr (sizeof(U) <= 2) {
                    for (std::uint32_t u = 0; u <= mask; u += sizeof(U) == 1 ? 1 : 3) {
                        for (std::uint32_t c = 0; c < D; ++c) row[c] = static_cast<U>((u + c * 0x1234u) & mask);
                        lossless::rope::predict_row<U>(row, D, style, table.cos(1), table.sin(1), fmt, a);
                        fast(row, D, table.cos(1), b);
                        for (std::uint32_t c = 0; c < D; ++c) ASSERT_EQ(a[c], b[c]) << dtype_name(type) << " u " << u;
                    }
                }
            };
            if (fmt.width == 8) check(std::uint8_t{});
            else if (fmt.width == 16) check(std::uint16_t{});
            else check(std::uint32_t{});
        }
    }
}

// The cached rotation tables hold exactly the normative values (anchor * fine, 28-bit truncated).
TEST(Lossless, CachedRotationTableMatchesDirectComputation) {
    namespace d = predict::rope_math;
    const std::uint32_t D = 64, half = D / 2;
    for (double theta : {10000.0, 500000.0}) {
        std::vector<std::uint64_t> ref(2000, lossless::detail::no_reference);
        for (std::uint64_t t = 1; t < ref.size(); ++t) ref[t] = t % 3 == 0 || t < 1 + t % 37 ? 0 : t - 1 - t % 37;
        const lossless::rope::rotation_table table({theta, lossless::rope::pairing::rotate_half}, D, ref, lossless::detail::no_reference);
        const double log_theta = d::log(theta);
        for (std::uint64_t t = 1; t < ref.size(); t += 7) {
            const std::uint64_t delta = t - ref[t], a = delta / 32, j = delta % 32;
            for (std::uint32_t i = 0; i < half; ++i) {
                const double f = d::exp(-unfused_mul(log_theta, double(2 * i) / double(D)));
                double ca, sa, cb, sb;
                d::cos_sin<d::precision::truncated28>(unfused_mul(double(a * 32), f), ca, sa);
                d::cos_sin<d::precision::truncated28>(unfused_mul(double(j), f), cb, sb);
                const double c = d::truncate28(unfused_mul(ca, cb) - unfused_mul(sa, sb));
                const double s = d::truncate28(unfused_mul(sa, cb) + unfused_mul(ca, sb));
                ASSERT_EQ(std::bit_cast<std::uint64_t>(table.cos(t)[i]), std::bit_cast<std::uint64_t>(c)) << t << " " << i;
                ASSERT_EQ(std::bit_cast<std::uint64_t>(table.sin(t)[i]), std::bit_cast<std::uint64_t>(s)) << t << " " << i;
            }
        }
    }
}

TEST(Lossless, RopeResidualIsABijectionOnAllBitPatterns) {
    for (std::uint32_t p : {0u, 1u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x3f80u, 0xbf80u})
        for (std::uint32_t u = 0; u < 0x10000; ++u) {
            const auto z = lossless::rope::residual<std::uint16_t>(std::uint16_t(u), std::uint16_t(p));
            ASSERT_EQ(lossless::rope::unresidual<std::uint16_t>(z, std::uint16_t(p)), u);
        }
    EXPECT_EQ(lossless::rope::residual<std::uint16_t>(0x3f81, 0x3f80), 2);   // one ulp up
    EXPECT_EQ(lossless::rope::residual<std::uint16_t>(0x8000, 0x0000), 1);   // -0 just below +0
}

TEST(Lossless, RopeMathIsAccurate) {
    for (double x : {0.0, 0.5, 1.0, 3.0, 100.0, 511.0, 4096.5, 65535.0}) {
        double c, s;
        predict::rope_math::cos_sin<predict::rope_math::precision::truncated28>(x, c, s);
        EXPECT_NEAR(c, std::cos(x), 1e-13);
        EXPECT_NEAR(s, std::sin(x), 1e-13);
    }
    for (double x : {1.0, 2.0, 10000.0, 500000.0, 1e9}) EXPECT_NEAR(predict::rope_math::log(x), std::log(x), 1e-13 * std::log(x) + 1e-15);
    for (double x : {-30.0, -9.2, -1.0, 0.0, 0.3}) EXPECT_NEAR(predict::rope_math::exp(x), std::exp(x), 1e-14 * std::exp(x));
}

TEST(Lossless, ConfigCarriesRopeParameters) {
    lossless::plane_options o;
    o.rope = lossless::rope::parameters{500000.0, lossless::rope::pairing::interleaved};
    const auto c = lossless_config(o);
    ASSERT_EQ(c.params.size(), 12u);
    EXPECT_EQ(c.params[3], 2);
    EXPECT_NO_THROW(make_codec(c));
    auto bad = c;
    bad.params[3] = 3;  // unknown style
    EXPECT_THROW(make_codec(bad), format_error);
    bad = c;
    bad.params[11] = 0xff;  // theta = NaN / negative
    EXPECT_THROW(make_codec(bad), format_error);
    bad = c;
    bad.params.resize(11);
    EXPECT_THROW(make_codec(bad), format_error);

    // Whole-file round trip through the container with rotated keys (and a rope-aware config).
    const auto b = rotated_keys(dtype::bf16, lossless::rope::pairing::rotate_half, 5);
    kv_cache_view view;
    view.layout = {1, b.shape.heads, b.shape.head_dim, b.shape.tokens, b.type};
    const auto strides = kv_strides::head_major(b.shape.tokens, b.shape.head_dim);
    view.keys.push_back({b.bytes.data(), b.type, b.shape.heads, b.shape.tokens, b.shape.head_dim, strides});
    view.values.push_back({b.bytes.data(), b.type, b.shape.heads, b.shape.tokens, b.shape.head_dim, strides});
    o.rope->style = lossless::rope::pairing::rotate_half;
    compress_options co;
    co.codec = lossless_config(o);
    co.chunk_tokens = 64;
    const auto z = compress(view, co, b.ids);
    const auto back = decompress(z);
    EXPECT_TRUE(std::equal(b.bytes.begin(), b.bytes.end(), back.bytes.begin()));
}

}  // namespace

#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"

#include <filesystem>
#include <string>

namespace {

using namespace seqkv;

// The predictor search runs on a sample of tokens (plane_options::estimate_stride; automatic: every
// 8th token of a 512-token block) so the encoder pays for one full pass, not one per predictor.
// On the real fixtures (tiny model and SmolLM2, every layer's K and V, RoPE-aware with ids) every
// stride must round-trip bit-exact and the sampled choice may cost at most 1 % over the exhaustive
// search (stride 1, the version-1 encoder's choices); measured: within 0.05 %.
TEST(Lossless, SampledPredictorSearchKeepsTheRatio) {
    for (const char* name : {"gpl3.safetensors", "smollm2-gpl3.safetensors"}) {
        const auto file = io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / name);
        const kv_cache_view cache = io::kv_view(file);
        const std::vector<std::int32_t> ids = io::token_ids_of(file, cache.layout.tokens).value();
        const kv_layout& L = cache.layout;
        const lossless::block_shape shape{L.kv_heads, L.tokens, L.head_dim};
        lossless::plane_options o;
        o.rope = lossless::rope::parameters{std::stod(file.metadata().at("rope_theta")), lossless::rope::pairing::rotate_half};
        std::size_t bytes[3] = {0, 0, 0};
        const std::uint32_t strides[3] = {1, 0, 4};
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                byte_vector block(shape.elements() * dtype_size(L.type));
                gather_block(cache.tensor(l, kind), 0, L.tokens, block);
                for (int s = 0; s < 3; ++s) {
                    o.estimate_stride = strides[s];
                    const byte_vector coded = lossless::encode_block(block, L.type, shape, o, ids);
                    byte_vector back(block.size());
                    lossless::decode_block(coded, L.type, shape, back, coding::rans::decode_path::automatic, ids, o.rope);
                    ASSERT_EQ(back, block) << name << " layer " << l << " kind " << int(kind) << " stride " << strides[s];
                    bytes[s] += coded.size();
                }
            }
        std::printf("%s: exhaustive %zu bytes, sampled (auto) %zu (%+.3f%%), every 4th token %zu (%+.3f%%)\n", name, bytes[0],
                    bytes[1], 100.0 * (double(bytes[1]) / double(bytes[0]) - 1), bytes[2], 100.0 * (double(bytes[2]) / double(bytes[0]) - 1));
        EXPECT_LE(double(bytes[1]), 1.01 * double(bytes[0])) << name;
        EXPECT_LE(double(bytes[2]), 1.01 * double(bytes[0])) << name;
    }
}

}  // namespace
