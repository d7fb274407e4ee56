// The codec built from its stages: executor (same bytes for any thread count), schedules
// (per-head and token-major round trips), symbol coder policies (compile-time composition rules),
// and the encoder's payloads against the format-v1 test vectors (tests/vectors/v1).
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <filesystem>
#include <stdexcept>

#include "seqkv/api.hpp"
#include "seqkv/codec/codec.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/codec/registry.hpp"
#include "seqkv/format/reader.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/predict/linear.hpp"
#include "seqkv/predict/token_mean.hpp"
#include "seqkv/quant/uniform.hpp"

namespace {

using namespace seqkv;

// ---- compile-time composition rules ----
template <class E>
concept composable = requires { typename seqkv::codec<quant::uniform_step, predict::token_mean, E>; };
template <class Coder, class Schedule>
concept schedulable = requires { typename lossy::closed_loop_codec<quant::uniform_step, predict::token_mean, Coder, Schedule>; };
static_assert(composable<coding::rans_interleaved>);
static_assert(composable<coding::range_adaptive<>>);
static_assert(composable<lossy::packed_symbols>);
static_assert(!composable<coding::range_adaptive_fast>);  // no lossy stream mapping: a compile error, not a substitution
static_assert(schedulable<lossy::grouped_rans_symbols<true>, lossy::token_major_schedule>);
static_assert(!schedulable<lossy::adaptive_range_symbols, lossy::token_major_schedule>);  // contexts not known ahead
static_assert(!schedulable<lossy::packed_symbols, lossy::token_major_schedule>);
static_assert(ChunkCodec<seqkv::codec<quant::uniform_step, predict::token_mean, coding::rans_interleaved, backend::scalar>>);

// ---- executor ----
TEST(ThreadPool, RunsEveryTaskOnceAtAnyThreadCount) {
    for (unsigned threads : {1u, 2u, 7u}) {
        backend::thread_pool pool(threads);
        EXPECT_EQ(pool.threads(), threads);
        for (std::size_t n : {0u, 1u, 3u, 100u}) {
            std::vector<std::atomic<int>> hits(n);
            pool.run(n, [&](std::size_t i) { hits[i].fetch_add(1); });
            for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "threads " << threads << " task " << i;
        }
    }
}

TEST(ThreadPool, RethrowsTheLowestFailingTask) {
    for (unsigned threads : {1u, 2u, 7u}) {
        backend::thread_pool pool(threads);
        try {
            pool.run(50, [](std::size_t i) {
                if (i % 10 == 7) throw std::runtime_error("task " + std::to_string(i));
            });
            ADD_FAILURE() << "no exception";
        } catch (const std::runtime_error& e) {
            EXPECT_STREQ(e.what(), "task 7") << threads << " threads";
        }
        int sum = 0;  // the pool stays usable after a failed batch
        pool.run(1, [&](std::size_t) { sum = 1; });
        EXPECT_EQ(sum, 1);
    }
}

// ---- the fixture: tokens 0..95 of data/kv/gpl3.safetensors (what the v1 vectors hold) ----
struct fixture {
    io::safetensors_file file = io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors");
    kv_cache_view cache;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    static constexpr std::uint64_t tokens = 96;
    fixture() {
        const kv_cache_view full = io::kv_view(file);
        cache = full;
        cache.layout.tokens = tokens;
        for (auto* v : {&cache.keys, &cache.values})
            for (auto& t : *v) t.tokens = tokens;
        ids = *io::token_ids_of(file, full.layout.tokens);
        nll = *io::nll_of(file, full.layout.tokens);
        ids.resize(tokens), nll.resize(tokens);
    }
    chunk_input chunk(std::uint64_t begin, std::uint64_t end) const {
        return {&cache, begin, end, std::span(ids).subspan(begin, end - begin), std::span(nll).subspan(begin, end - begin)};
    }
    // What a stream writer hands its codec: a staging view whose token 0 is the chunk's first
    // token (position_base as given; version-1 writers left it 0).
    struct staged {
        kv_cache_view view;
        chunk_input in;
    };
    staged staged_chunk(std::uint64_t begin, std::uint64_t end, std::uint64_t position_base) const {
        staged s{cache, {}};
        s.view.layout.tokens = end - begin;
        for (auto* v : {&s.view.keys, &s.view.values})
            for (auto& t : *v) t.data = t.element(0, begin, 0), t.tokens = end - begin;
        s.in = chunk_input{nullptr, 0, end - begin, std::span(ids).subspan(begin, end - begin), std::span(nll).subspan(begin, end - begin)};
        s.in.position_base = position_base;
        return s;
    }
    static lossy_model_info model() {
        lossy_model_info m;
        m.rope_theta = 10000.0, m.head_dim = 64;
        return m;
    }
};

std::vector<std::pair<std::string, format::codec_config>> configs() {
    const auto m = fixture::model();
    std::vector<std::pair<std::string, format::codec_config>> out{{"lossless", lossless_config()}};
    for (const char* p : {"kivi4", "turbo3", "seqkv-2bit", "bound:0.05", "lossless"})
        out.emplace_back(std::string("lossy ") + p, lossy_codec_config(lossy_preset(p, m)));
    auto linear = lossy_preset("seqkv-step:0.5", m);
    linear.coding = lossy::symbol_coding::adaptive, linear.predictor = lossy_predictor::linear_ar;
    out.emplace_back("linear-ar adaptive", lossy_codec_config(linear));
    auto cross = lossy_preset("seqkv-step:0.5", m);
    cross.predictor = lossy_predictor::cross_layer;
    out.emplace_back("cross-layer rans", lossy_codec_config(cross));
    return out;
}

// Found by this test (~1 crash in 4 runs): lossless::token_references filled its memo lazily from
// several block tasks at once; it now fills it under a lock and never moves an entry.
TEST(Executor, SameBytesAtOneTwoAndSevenThreads) {
    const fixture f;
    for (const auto& [name, config] : configs()) {
        const auto serial = make_codec(config);
        const auto in = f.chunk(0, 64);
        const byte_vector expected = serial.encode(in);
        auto reference = chunk_buffer::for_layout(f.cache.layout, 64);
        serial.decode(expected, in, reference);
        for (unsigned threads : {2u, 7u}) {
            const auto threaded = make_codec(config, {}, std::make_shared<backend::thread_pool>(threads));
            EXPECT_EQ(threaded.encode(in), expected) << name << " at " << threads << " threads";
            auto out = chunk_buffer::for_layout(f.cache.layout, 64);
            threaded.decode(expected, in, out);
            EXPECT_EQ(out.bytes, reference.bytes) << name << " at " << threads << " threads";
        }
    }
}

// ---- schedules ----
template <class Predictor, class Schedule>
using rans_codec = lossy::closed_loop_codec<quant::uniform_step, Predictor, lossy::grouped_rans_symbols<true>, Schedule>;

template <class C>
byte_vector round_trip(const C& codec, const chunk_input& in, const kv_layout& layout) {
    chunk_buffer recon;
    const byte_vector payload = codec.encode(in, &recon);
    chunk_input side = in;
    side.cache = nullptr;  // the decoder sees only what the container stores
    auto out = chunk_buffer::for_layout(layout, in.token_count());
    codec.decode(payload, side, out);
    EXPECT_EQ(out.bytes, recon.bytes) << "closed loop: the decoder reproduces the encoder exactly";
    return payload;
}

TEST(Schedule, TokenMajorRoundTripsAndMatchesPerHeadWithoutCrossLayerPrediction) {
    const fixture f;
    const auto in = f.chunk(16, 80);
    for (unsigned threads : {1u, 3u}) {
        lossy::codec_options o;
        o.executor = std::make_shared<backend::thread_pool>(threads);
        const auto per_head = round_trip(rans_codec<predict::token_mean, lossy::per_head_schedule>(quant::uniform_step(0.5f), predict::token_mean(), predict::fixed_rate(), o), in, f.cache.layout);
        const auto token_major = round_trip(rans_codec<predict::token_mean, lossy::token_major_schedule>(quant::uniform_step(0.5f), predict::token_mean(), predict::fixed_rate(), o), in, f.cache.layout);
        // token_mean reads only its own block's history: the visiting order changes nothing.
        EXPECT_EQ(token_major, per_head);
    }
    // cross_layer reads the previous layer: token-major sees it row by row, still closed loop.
    const auto cross = round_trip(rans_codec<predict::cross_layer, lossy::token_major_schedule>(quant::uniform_step(0.5f), {}, {}, {}), in, f.cache.layout);
    EXPECT_GT(cross.size(), 100u);
}

TEST(Schedule, TokenMajorDecodesPerHeadPayloadsOnlyWhenNothingCrossesLayers) {
    // Both schedules write one payload layout; a token-major decoder reads a per-head payload of a
    // predictor without cross-layer reads to the same reconstruction.
    const fixture f;
    const auto in = f.chunk(0, 64);
    chunk_buffer recon;
    const rans_codec<predict::token_mean, lossy::per_head_schedule> writer(quant::uniform_step(0.5f));
    const auto payload = writer.encode(in, &recon);
    auto out = chunk_buffer::for_layout(f.cache.layout, 64);
    rans_codec<predict::token_mean, lossy::token_major_schedule>(quant::uniform_step(0.5f)).decode(payload, in, out);
    EXPECT_EQ(out.bytes, recon.bytes);
}

// ---- the encoder writes today exactly what the v1 encoder wrote ----
TEST(Pipeline, EncoderPayloadsMatchTheVersion1Vectors) {
    const fixture f;
    const auto dir = std::filesystem::path(SEQKV_DATA_DIR).parent_path() / "tests" / "vectors" / "v1";
    int checked = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        if (entry.path().extension() != ".skv") continue;
        const byte_vector file = read_file(entry.path());
        const format::stream_reader reader(file);
        const auto codec = make_codec(reader.header().codec);
        for (std::size_t i = 0; i < reader.chunks().size(); ++i) {
            const auto record = reader.record(i);
            auto s = f.staged_chunk(record.first_token, record.first_token + record.tokens, 0);  // as the v1 writer did
            s.in.cache = &s.view;
            EXPECT_EQ(codec.encode(s.in), byte_vector(record.payload.begin(), record.payload.end()))
                << entry.path().filename() << " chunk " << i;
        }
        ++checked;
    }
    EXPECT_GE(checked, 8);
}

// compress() codes whole chunks (and, as its last append, the short final one) straight from the
// caller's cache; a writer fed in small pieces stages every chunk. Every codec must write the same
// file either way (same sequence positions, ids and nll), at chunk sizes that split the 96 tokens
// into whole chunks and a short last one.
TEST(Pipeline, WriterCodesFromTheCacheOrItsStagingWithTheSameBytes) {
    const fixture f;
    for (const auto& [name, config] : configs()) {
        compress_options o;
        o.codec = config;
        o.chunk_tokens = 40;
        const byte_vector direct = compress(f.cache, o, f.ids, f.nll);
        const byte_vector staged = write_stream(f.cache.layout, o, true, true, [&](format::stream_writer& w) {
            for (std::uint64_t t = 0; t < fixture::tokens; t += 7) {
                const std::uint64_t e = std::min<std::uint64_t>(fixture::tokens, t + 7);
                w.append(f.cache, t, e, std::span(f.ids).subspan(t, e - t), std::span(f.nll).subspan(t, e - t));
            }
        });
        EXPECT_EQ(direct, staged) << name;
        // Whole chunks from the cache, the short last one staged (no `last` flag): the same file too.
        const byte_vector mixed = write_stream(f.cache.layout, o, true, true, [&](format::stream_writer& w) {
            w.append(f.cache, 0, fixture::tokens, f.ids, f.nll);
        });
        EXPECT_EQ(direct, mixed) << name;
    }
    // After a short last chunk nothing more may be appended (an empty append is still no-op).
    compress_options o;
    o.chunk_tokens = 40;
    EXPECT_EQ(write_stream(f.cache.layout, o, true, true,
                           [&](format::stream_writer& w) {
                               w.append(f.cache, 0, 50, std::span(f.ids).first(50), std::span(f.nll).first(50), /*last=*/true);
                               w.append(f.cache, 50, 50);
                           }),
              write_stream(f.cache.layout, o, true, true, [&](format::stream_writer& w) {
                  w.append(f.cache, 0, 50, std::span(f.ids).first(50), std::span(f.nll).first(50));
              }));
    EXPECT_THROW(write_stream(f.cache.layout, o, true, true,
                              [&](format::stream_writer& w) {
                                  w.append(f.cache, 0, 50, std::span(f.ids).first(50), std::span(f.nll).first(50), /*last=*/true);
                                  w.append(f.cache, 50, 60, std::span(f.ids).subspan(50, 10), std::span(f.nll).subspan(50, 10));
                              }),
                 usage_error);
}

// The stream writer stages each chunk in a buffer of its own; the codec must still see the tokens'
// sequence positions (pre-RoPE key prediction rotates by them), or the decoder — which knows the
// chunk's first token — predicts differently from the encoder. (Version-1 writers passed
// position 0 for every chunk: their later chunks decode, but not to the encoder's reconstruction.)
TEST(Pipeline, WriterEncodesChunksAtTheirSequencePositions) {
    const fixture f;
    auto config = lossy_preset("seqkv-step:0.5", fixture::model());
    config.predictor = lossy_predictor::linear_ar;  // its fit and predictions depend on the rotation
    compress_options o;
    o.codec = lossy_codec_config(config);
    o.chunk_tokens = 32;
    const byte_vector file = compress(f.cache, o, f.ids, f.nll);
    const chunk_buffer decoded = decompress(file);
    for (std::uint64_t begin = 0; begin < fixture::tokens; begin += 32) {
        auto s = f.staged_chunk(begin, begin + 32, begin);
        s.in.cache = &s.view;
        chunk_buffer recon;
        lossy_runtime_codec(config).encode(s.in, &recon);  // the encoder's own closed-loop reconstruction
        for (std::uint32_t l = 0; l < f.cache.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const kv_tensor_view want = recon.view(l, kind), got = decoded.view(l, kind);
                for (std::uint32_t h = 0; h < want.heads; ++h)
                    for (std::uint32_t t = 0; t < 32; ++t)
                        for (std::uint32_t c = 0; c < want.head_dim; ++c)
                            ASSERT_EQ(std::bit_cast<std::uint32_t>(got.at(h, begin + t, c)), std::bit_cast<std::uint32_t>(want.at(h, t, c)))
                                << "chunk at " << begin << " layer " << l << " kind " << int(kind);
            }
    }
}

}  // namespace
