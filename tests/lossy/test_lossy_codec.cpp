// The composed lossy codec: closed-loop decode == encoder reconstruction (bit exact) for every
// quantizer × predictor, determinism, config serialization, presets, corrupt input, metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/metrics/kv_metrics.hpp"

using namespace seqkv;

namespace {

// A token-structured synthetic cache: V and pre-RoPE K are a per-token vector plus small noise,
// keys rotated by RoPE (theta 10000), so token-conditioned prediction has something to find.
struct synthetic_cache {
    kv_layout layout{2, 2, 32, 96, dtype::bf16};
    std::vector<byte_vector> tensors;  // [layer][kind]
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    kv_cache_view view;

    explicit synthetic_cache(unsigned seed = 1) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> n(0, 1);
        std::uniform_int_distribution<int> token(0, 11);
        for (std::uint64_t t = 0; t < layout.tokens; ++t) ids.push_back(token(rng)), nll.push_back(float(t % 5) * 0.7f);
        std::vector<float> embed(12 * 2 * 32 * 4);
        for (auto& e : embed) e = n(rng);
        const auto inv = predict::rope_table::inverse_frequencies(10000.0, 32);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (int kind = 0; kind < 2; ++kind) {
                byte_vector b(layout.elements_per_tensor() * 2);
                for (std::uint32_t h = 0; h < 2; ++h)
                    for (std::uint64_t t = 0; t < layout.tokens; ++t) {
                        float v[32];
                        for (int c = 0; c < 32; ++c)
                            v[c] = embed[((ids[t] * 2 + h) * 4 + l * 2 + kind) * 32 + c] * (c == 3 ? 6.0f : 1.0f) + 0.05f * n(rng);
                        for (int c = 0; c < 32; ++c) {
                            float out = v[c];
                            if (kind == 0) {
                                const int i = c % 16;
                                const double a = double(t) * inv[i];
                                out = c < 16 ? float(v[c] * std::cos(a) - v[c + 16] * std::sin(a))
                                             : float(v[c] * std::cos(a) + v[c - 16] * std::sin(a));
                            }
                            store_from_float(b.data(), dtype::bf16, (h * layout.tokens + t) * 32 + c, out);
                        }
                    }
                tensors.push_back(std::move(b));
            }
        view.layout = layout;
        for (std::uint32_t l = 0; l < layout.layers; ++l) {
            view.keys.push_back({tensors[2 * l].data(), dtype::bf16, 2, layout.tokens, 32, kv_strides::head_major(layout.tokens, 32)});
            view.values.push_back({tensors[2 * l + 1].data(), dtype::bf16, 2, layout.tokens, 32, kv_strides::head_major(layout.tokens, 32)});
        }
    }
    lossy_model_info model() const { return {10000.0, 32, nullptr}; }
};

// Encodes tokens [begin, end), decodes, and checks decode == encoder recon and determinism.
byte_vector round_trip_chunk(const lossy_runtime_codec& codec, const synthetic_cache& s, std::uint64_t begin,
                             std::uint64_t end, chunk_buffer* decoded = nullptr) {
    chunk_input in{&s.view, begin, end, std::span(s.ids).subspan(begin, end - begin), std::span(s.nll).subspan(begin, end - begin)};
    chunk_buffer recon;
    const byte_vector payload = codec.encode(in, &recon);
    EXPECT_EQ(payload, codec.encode(in)) << "encoder not deterministic";
    chunk_input side = in;
    side.cache = nullptr;
    chunk_buffer out = chunk_buffer::for_layout(s.layout, end - begin);
    codec.decode(payload, side, out);
    EXPECT_EQ(out.bytes, recon.bytes) << "decoder output differs from the encoder's reconstruction";
    if (decoded) *decoded = std::move(out);
    return payload;
}

std::vector<lossy_config> all_configs(const synthetic_cache& s) {
    std::vector<lossy_config> configs;
    for (const char* preset : {"lossless", "int8", "fp8", "kivi2", "kivi4", "turbo2", "turbo3.5", "seqkv-step:0.5", "bound:1e-2", "abs:0.05"})
        configs.push_back(lossy_preset(preset, s.model()));
    for (const char* predictor : {"zero", "previous", "linear", "anchor", "cross-layer", "token-mean"})
        for (const char* quantizer : {"uniform", "kivi", "turbo", "bound", "int8"}) {
            lossy_config c = lossy_preset("seqkv-step:0.5", s.model());
            c = apply_lossy_option(c, "predictor", predictor);
            c = apply_lossy_option(c, "quantizer", quantizer);
            c = apply_lossy_option(c, "bits", "2");
            configs.push_back(c);
            configs.push_back(apply_lossy_option(c, "coding", "rans"));
            configs.push_back(apply_lossy_option(c, "coding", "adaptive"));
        }
    lossy_config q = lossy_preset("turbo3", s.model());
    q.qjl = true;
    configs.push_back(q);
    configs.push_back(apply_lossy_option(lossy_preset("seqkv-step:0.5", s.model()), "rate", "surprisal"));
    configs.push_back(apply_lossy_option(lossy_preset("seqkv-step:0.5", s.model()), "per-channel", "1"));
    configs.push_back(lossy_preset("seqkv-1bit", s.model()));
    configs.push_back(apply_lossy_option(lossy_preset("lossless"), "coding", "rans"));
    configs.push_back(apply_lossy_option(lossy_preset("turbo3.5"), "coding", "rans"));
    return configs;
}

}  // namespace

TEST(LossyCodec, DecodeEqualsEncoderReconstructionForEveryComposition) {
    const synthetic_cache s;
    for (const auto& config : all_configs(s)) {
        SCOPED_TRACE(describe(config));
        const lossy_runtime_codec codec(config);
        round_trip_chunk(codec, s, 0, s.layout.tokens);
        round_trip_chunk(codec, s, 17, 60);  // a chunk not starting at 0 (RoPE positions)
    }
}

// The decoder runs stages as tasks (every (layer, K/V) at once when the predictor never reads the
// previous layer, one layer's K and V at a time otherwise) and writes straight into rows of a
// larger buffer: on 3 threads and into the middle rows of a 70-token buffer it writes the serial
// decoder's bytes, and leaves the rows outside the chunk untouched.
TEST(LossyCodec, ThreadedDecodeIntoRowsEqualsSerialDecode) {
    const synthetic_cache s;
    const auto pool = std::make_shared<backend::thread_pool>(3);
    for (const auto& config : all_configs(s)) {
        SCOPED_TRACE(describe(config));
        const lossy_runtime_codec serial(config), threaded(config, nullptr, pool);
        chunk_buffer reference;
        const byte_vector payload = round_trip_chunk(serial, s, 17, 60, &reference);
        EXPECT_EQ(threaded.encode({&s.view, 17, 60, std::span(s.ids).subspan(17, 43), std::span(s.nll).subspan(17, 43)}), payload);
        chunk_input side{nullptr, 17, 60, std::span(s.ids).subspan(17, 43), std::span(s.nll).subspan(17, 43)};
        chunk_buffer big = chunk_buffer::for_layout(s.layout, 70);
        std::fill(big.bytes.begin(), big.bytes.end(), std::uint8_t(0xA5));
        threaded.decode_into(payload, side, chunk_destination::rows_of(big, 20, 43));
        const std::size_t row = std::size_t(s.layout.head_dim) * dtype_size(s.layout.type);
        for (std::uint32_t l = 0; l < s.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < s.layout.kv_heads; ++h)
                    for (std::uint64_t t = 0; t < 70; ++t) {
                        const std::uint8_t* got = big.block(l, kind).data() + (h * 70 + t) * row;
                        if (t >= 20 && t < 63) {
                            const std::uint8_t* want = reference.block(l, kind).data() + (h * 43 + (t - 20)) * row;
                            ASSERT_TRUE(std::equal(got, got + row, want)) << "layer " << l << " head " << h << " token " << t;
                        } else {
                            ASSERT_TRUE(std::all_of(got, got + row, [](std::uint8_t b) { return b == 0xA5; })) << "row " << t << " written";
                        }
                    }
    }
}

TEST(LossyCodec, LosslessAndErrorBoundGuarantees) {
    const synthetic_cache s;
    chunk_buffer out;
    round_trip_chunk(lossy_runtime_codec(lossy_preset("lossless")), s, 0, s.layout.tokens, &out);
    for (std::uint32_t l = 0; l < 2; ++l)
        EXPECT_TRUE(std::equal(out.block(l, kv_kind::key).begin(), out.block(l, kv_kind::key).end(), s.tensors[2 * l].begin()));
    round_trip_chunk(lossy_runtime_codec(lossy_preset("abs:0.05", s.model())), s, 0, s.layout.tokens, &out);
    for (std::uint32_t l = 0; l < 2; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto a = s.view.tensor(l, kind), b = out.view(l, kind);
            for (std::uint32_t h = 0; h < 2; ++h)
                for (std::uint64_t t = 0; t < s.layout.tokens; ++t)
                    for (std::uint32_t c = 0; c < 32; ++c) ASSERT_LE(std::fabs(a.at(h, t, c) - b.at(h, t, c)), 0.05f);
        }
}

TEST(LossyCodec, TokenConditionedPredictionSavesBits) {
    const synthetic_cache s;
    lossy_config base = lossy_preset("seqkv-step:0.25", s.model());
    const auto with_mean = round_trip_chunk(lossy_runtime_codec(base), s, 0, s.layout.tokens).size();
    const auto with_zero = round_trip_chunk(lossy_runtime_codec(apply_lossy_option(base, "predictor", "zero")), s, 0, s.layout.tokens).size();
    EXPECT_LT(with_mean * 2, with_zero);
}

TEST(LossyCodec, TargetBitsIsRespected) {
    const synthetic_cache s;
    const lossy_runtime_codec codec(lossy_preset("seqkv-1bit", s.model()));
    const auto payload = round_trip_chunk(codec, s, 0, s.layout.tokens);
    EXPECT_LE(8.0 * double(payload.size()), 1.0 * double(s.layout.tokens * s.layout.elements_per_token()));
}

TEST(LossyCodec, InterleavedPreRopeKeysRoundTripInConfig) {
    lossy_model_info m{100000.0, 16, nullptr, true};
    const lossy_config c = lossy_preset("seqkv-2bit", m);
    ASSERT_TRUE(c.keys_prerope);
    ASSERT_TRUE(c.rope_interleaved);
    const auto back = lossy_config::from_bytes(c.to_bytes());
    EXPECT_TRUE(back.keys_prerope && back.rope_interleaved);
    m.rope_interleaved = false;
    EXPECT_FALSE(lossy_config::from_bytes(lossy_preset("seqkv-2bit", m).to_bytes()).rope_interleaved);
}

TEST(LossyCodec, ConfigRoundTripsAndRejectsCorruption) {
    const synthetic_cache s;
    for (const auto& c : all_configs(s)) {
        const byte_vector bytes = c.to_bytes();
        EXPECT_EQ(lossy_config::from_bytes(bytes).to_bytes(), bytes);
        for (std::size_t cut = 0; cut < bytes.size(); ++cut)
            EXPECT_THROW(lossy_config::from_bytes(std::span(bytes).first(cut)), format_error);
    }
    byte_vector bad = lossy_preset("kivi2").to_bytes();
    bad[1] = 99;  // unknown quantizer
    EXPECT_THROW(lossy_config::from_bytes(bad), format_error);
    EXPECT_THROW(lossy_preset("nonsense"), usage_error);
    EXPECT_THROW(apply_lossy_option(lossy_config{}, "bits", "x"), usage_error);
}

TEST(LossyCodec, CorruptPayloadNeverCrashes) {
    const synthetic_cache s;
    for (const char* preset : {"kivi2", "seqkv-step:0.5", "turbo2.5", "bound:1e-2", "seqkv-step:0.25"}) {
        lossy_config config = lossy_preset(preset, s.model());
        if (std::string_view(preset) == "seqkv-step:0.25") config.coding = lossy::symbol_coding::adaptive;
        const lossy_runtime_codec codec(config);
        chunk_input in{&s.view, 0, 40, std::span(s.ids).first(40), {}};
        const byte_vector payload = codec.encode(in);
        chunk_input side = in;
        side.cache = nullptr;
        std::mt19937 rng(3);
        for (int trial = 0; trial < 30; ++trial) {
            byte_vector bad = payload;
            if (trial % 2) bad.resize(rng() % bad.size());
            else bad[rng() % bad.size()] ^= std::uint8_t(1 + rng() % 255);
            chunk_buffer out = chunk_buffer::for_layout(s.layout, 40);
            try {
                codec.decode(bad, side, out);
            } catch (const seqkv::error&) {
            }
        }
    }
}

// symbol_reader::get_row (the packed fast path: one alphabet, byte-aligned splits, 64-bit word
// loads at any bit offset, 7-byte refills) reads exactly what get() reads one symbol at a time,
// and fails the same way on bad streams.
TEST(LossySymbols, PackedRowsReadWhatGetReads) {
    std::mt19937 rng(7);
    for (std::uint32_t alphabet : {2u, 3u, 4u, 5u, 7u, 15u, 16u, 17u, 33u, 100u, 128u, 255u, 256u, 1023u, 1024u}) {
        for (bool mixed : {false, true}) {  // mixed: contexts of different alphabets (the slow path)
            const std::vector<std::uint32_t> alphabets = mixed ? std::vector<std::uint32_t>{alphabet, 7u} : std::vector<std::uint32_t>{alphabet, alphabet};
            std::vector<std::vector<std::uint16_t>> rows;
            std::vector<std::vector<std::uint32_t>> contexts;
            byte_vector bytes;
            lossy::symbol_writer w(lossy::symbol_coding::packed, bytes);
            w.set_models(alphabets);
            for (int r = 0; r < 40; ++r) {
                const std::size_t n = 1 + rng() % (r % 4 == 0 ? 200 : 70);
                rows.emplace_back(n), contexts.emplace_back(n);
                for (std::size_t j = 0; j < n; ++j) {
                    contexts.back()[j] = std::uint32_t(rng() % 2);
                    rows.back()[j] = std::uint16_t(rng() % alphabets[contexts.back()[j]]);
                    w.put(rows.back()[j], contexts.back()[j]);
                }
            }
            w.finish();
            auto read_all = [&](std::span<const std::uint8_t> stream, bool by_rows) {
                lossy::symbol_reader reader(lossy::symbol_coding::packed, stream);
                reader.set_models(alphabets);
                for (std::size_t r = 0; r < rows.size(); ++r) {
                    std::vector<std::uint16_t> got(rows[r].size());
                    if (by_rows && r % 3 != 2) {
                        reader.get_row(contexts[r], 0, got);
                    } else {
                        for (std::size_t j = 0; j < got.size(); ++j) got[j] = reader.get(contexts[r][j]);
                    }
                    EXPECT_EQ(got, rows[r]) << "alphabet " << alphabet << " row " << r;
                }
                reader.finish();
            };
            read_all(bytes, false);
            read_all(bytes, true);
            byte_vector cut(bytes.begin(), bytes.end() - 1), longer = bytes;
            longer.push_back(0);
            for (bool by_rows : {false, true}) {
                EXPECT_THROW(read_all(cut, by_rows), format_error) << alphabet;
                EXPECT_THROW(read_all(longer, by_rows), format_error) << alphabet;
            }
        }
    }
    // A symbol at or past its alphabet (255 for the 255-symbol alphabet of 8 bits) is a format_error.
    const std::vector<std::uint32_t> alphabets{255u};
    const byte_vector bad{1, 2, 255, 4};
    lossy::symbol_reader reader(lossy::symbol_coding::packed, bad);
    reader.set_models(alphabets);
    std::vector<std::uint16_t> row(4);
    const std::vector<std::uint32_t> zero(4, 0);
    EXPECT_THROW(reader.get_row(zero, 0, row), format_error);
    // The same for 3-bit symbols of a 5-symbol alphabet read by 64-bit words: a 7 in the middle.
    for (std::size_t at : {0u, 17u, 39u}) {
        byte_vector stream;
        lossy::symbol_writer w(lossy::symbol_coding::packed, stream);
        const std::vector<std::uint32_t> eight{8u};
        w.set_models(eight);
        for (std::size_t j = 0; j < 40; ++j) w.put(j == at ? 7u : std::uint32_t(j % 5), 0);
        w.finish();
        lossy::symbol_reader r3(lossy::symbol_coding::packed, stream);
        const std::vector<std::uint32_t> five{5u};
        r3.set_models(five);
        std::vector<std::uint16_t> got(40);
        const std::vector<std::uint32_t> contexts(40, 0);
        EXPECT_THROW(r3.get_row(contexts, 0, got), format_error) << at;
    }
}

TEST(LossyCodec, ExpectedKvTableBuildHashAndUse) {
    const synthetic_cache s;
    io::safetensors_builder b;
    for (std::uint32_t l = 0; l < 2; ++l) {
        b.add("layer." + std::to_string(l) + ".k", dtype::bf16, {2, s.layout.tokens, 32}, s.tensors[2 * l]);
        b.add("layer." + std::to_string(l) + ".v", dtype::bf16, {2, s.layout.tokens, 32}, s.tensors[2 * l + 1]);
    }
    byte_vector ids(4 * s.ids.size());
    for (std::size_t i = 0; i < s.ids.size(); ++i)
        for (int k = 0; k < 4; ++k) ids[4 * i + k] = std::uint8_t(std::uint32_t(s.ids[i]) >> (8 * k));
    b.add("tokens", dtype::i32, {s.layout.tokens}, ids);
    const auto file = io::safetensors_file::parse(b.serialize());
    const io::safetensors_file* corpus[] = {&file};
    auto table = std::make_shared<const predict::expected_kv_table>(io::build_expected_kv_table(corpus));
    EXPECT_FALSE(table->keys_prerope());  // no k_prerope tensors: only the V means are used
    const auto reparsed = io::parse_expected_kv_table(io::safetensors_file::parse(io::serialize_expected_kv_table(*table)));
    EXPECT_EQ(reparsed.content_hash(), table->content_hash());
    lossy_model_info m = s.model();
    m.table = table.get();
    lossy_config c = apply_lossy_option(lossy_preset("seqkv-step:0.5", m), "table", "1", m);
    round_trip_chunk(lossy_runtime_codec(c, table), s, 0, s.layout.tokens);
    EXPECT_THROW(lossy_runtime_codec{c}, usage_error);
    c.table_hash ^= 1;
    EXPECT_THROW(lossy_runtime_codec(c, table), usage_error);
}

TEST(LossyMetrics, IdenticalCacheIsPerfectAndNoiseIsMeasured) {
    const synthetic_cache s;
    const auto q = metrics::measure_kv_quality(s.view, s.view);
    EXPECT_TRUE(std::isinf(q.overall.snr_k_db));
    EXPECT_EQ(q.overall.attention_rel_error, 0.0);
    EXPECT_NEAR(q.overall.attention_kl, 0.0, 1e-12);
    EXPECT_FALSE(q.real_queries);
    const lossy_runtime_codec codec(lossy_preset("kivi2"));
    const auto r = lossy_round_trip(codec, s.view, s.ids, s.nll, 40);
    EXPECT_TRUE(r.decoder_matches_encoder);
    const auto k = metrics::measure_kv_quality(s.view, view_of(r.decoded));
    EXPECT_GT(k.overall.attention_rel_error, 0.0);
    EXPECT_LT(k.overall.attention_rel_error, 1.0);
    EXPECT_GT(k.overall.snr_v_db, 3.0);
    EXPECT_EQ(k.layers.size(), 2u);
}
