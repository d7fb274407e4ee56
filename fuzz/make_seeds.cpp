// Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from real data: slices of the
// committed fixture KV (data/kv/gpl3.safetensors, a real model's cache) coded with every preset
// at several chunk sizes and dtypes, token-mode files under the committed tiny model, the
// fixture slice as safetensors / .npy, an expected-KV table, llama.cpp states, a GGUF header, a
// trie and a prefix-store index. Kept small (a few KB each) because they are committed.
//   seqkv_fuzz_make_seeds <data dir> <corpus dir>      (scripts/fuzz.sh --make-seeds)
#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/llama_state.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/reference/llama.hpp"
#include "seqkv/store/chunk_store.hpp"
#include "seqkv/store/prefix_store.hpp"
#include "seqkv/trie/serialize.hpp"

namespace fs = std::filesystem;
using namespace seqkv;

namespace {

fs::path out_root;

void write(const std::string& target, const std::string& name, std::span<const std::uint8_t> bytes) {
    fs::create_directories(out_root / target);
    std::ofstream f(out_root / target / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

/// Tokens [0, tokens) of the first `layers` layers of a cache, converted to dtype t (owning).
struct slice : chunk_buffer {
    kv_cache_view view() const { return view_of(*this); }
};

slice cut(const kv_cache_view& src, std::uint32_t layers, std::uint64_t tokens, dtype t) {
    return {copy_tokens(src, 0, tokens, layers, t)};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <data dir> <corpus dir>\n", argv[0]);
        return 2;
    }
    const fs::path data = argv[1];
    out_root = argv[2];
    const auto fixture = io::safetensors_file::load(data / "kv" / "gpl3.safetensors");
    const kv_cache_view full = io::kv_view(fixture);
    const auto ids_all = io::token_ids_of(fixture, full.layout.tokens).value_or(std::vector<std::int32_t>{});
    const auto nll_all = io::nll_of(fixture, full.layout.tokens).value_or(std::vector<float>{});
    constexpr std::uint64_t T = 12;
    const std::span<const std::int32_t> ids(ids_all.data(), ids_all.empty() ? 0 : T);
    const std::span<const float> nll(nll_all.data(), nll_all.empty() ? 0 : T);

    // .skv: lossless on every dtype (with and without RoPE / ids), every lossy preset, two chunk sizes.
    const slice bf16 = cut(full, 1, T, dtype::bf16);
    for (dtype t : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2}) {
        const slice s = cut(full, 1, T, t);
        for (std::uint32_t chunk : {4u, 12u}) {
            compress_options o;
            o.chunk_tokens = chunk;
            o.metadata = {{"model", "gpl3-fixture-slice"}, {"rope_theta", "10000"}};
            const std::string base = "lossless-" + std::string(dtype_name(t)) + "-c" + std::to_string(chunk);
            write("skv", base + ".skv", compress(s.view(), o));
            lossless::plane_options lo;
            lo.rope = lossless::rope::parameters{10000.0, lossless::rope::pairing::rotate_half};
            o.codec = lossless_config(lo);
            write("skv", base + "-rope-ids.skv", compress(s.view(), o, ids, nll));
        }
    }
    for (const char* preset : {"seqkv-1bit", "seqkv-2bit", "seqkv-step:0.25", "bound:0.05", "abs:0.01", "kivi2", "kivi4",
                               "turbo2", "turbo3", "turbo4", "int8", "fp8"}) {
        lossy_model_info m;
        m.head_dim = bf16.layout.head_dim;
        m.rope_theta = 10000.0;
        for (std::uint32_t chunk : {4u, 12u}) {
            compress_options o;
            o.codec = lossy_codec_config(lossy_preset(preset, m));
            o.chunk_tokens = chunk;
            std::string name = preset;
            for (auto& c : name)
                if (c == ':') c = '_';
            write("skv", name + "-c" + std::to_string(chunk) + ".skv", compress(bf16.view(), o, ids, nll));
        }
    }
    {  // an attachment
        compress_options o;
        o.chunk_tokens = 6;
        write("skv", "lossless-attachment.skv", format::with_attachment(compress(bf16.view(), o), "quality.json",
                                                                        byte_vector{'{', '"', 'b', '"', ':', '1', '}'}));
    }
    {  // token mode under the committed tiny model (both modes)
        auto model = reference::llama_model::load(data / "tiny-llama");
        const std::uint32_t vocab = model->vocab_size();
        std::vector<std::int32_t> toks;
        for (std::uint32_t i = 0; i < 10; ++i) toks.push_back(std::int32_t((i * 37 + 5) % vocab));
        auto session = model->session();
        session->extend(toks, {});
        kv_layout L = model->kv_shape();
        chunk_buffer kv = chunk_buffer::for_layout(L, toks.size());
        session->kv(0, toks.size(), kv);
        const kv_cache_view v = view_of(kv);
        for (auto mode : {tokens::mode::tokens, tokens::mode::corrected}) {
            compress_options o;
            o.codec = tokens_config(mode, *model);
            add_language_model(o.resources, model);
            o.chunk_tokens = 4;
            write("skv", std::string("tokens-") + (mode == tokens::mode::tokens ? "plain" : "corrected") + ".skv",
                  compress(v, o, toks));
        }
    }

    // fuzz_tokens: [mode bit 0 | action << 1 | dtype << 3 | mode bit 1 << 5 | hybrid << 6 | stored costs << 7][n - 1]
    // [n 16-bit ids][fuzzer bytes] (see fuzz_tokens.cpp). Modes 4-5 (hybrid) with the residual-favouring
    // costs as m4 / m5, with the stored-favouring ones as m6 / m7.
    for (std::uint8_t mode = 0; mode < 8; ++mode)
        for (std::uint8_t action = 0; action < 4; ++action)
            for (std::uint8_t type = 0; type < (action == 0 ? 3 : 1); ++type) {
                const std::uint8_t m = mode < 4 ? mode : std::uint8_t(2 + (mode & 1));  // the hybrids set mode bit 1 too
                const std::uint8_t hybrid = mode >= 4 ? 1 : 0, stored_costs = mode >= 6 ? 1 : 0;
                byte_vector in{std::uint8_t((m & 1) | action << 1 | type << 3 | (m >> 1) << 5 | hybrid << 6 | stored_costs << 7), 5};
                for (std::uint16_t i = 0; i < 6; ++i) {
                    const std::uint16_t id = std::uint16_t(i * 173 + 5);  // spread over the tiny model's 1024 tokens
                    in.push_back(std::uint8_t(id)), in.push_back(std::uint8_t(id >> 8));
                }
                for (std::uint8_t i = 0; i < 24; ++i) in.push_back(std::uint8_t(i * 29 + action));
                write("tokens", "m" + std::to_string(mode) + "-a" + std::to_string(action) + "-t" + std::to_string(type), in);
            }

    // safetensors: the slice as a KV dump, and an expected-KV table built from it.
    {
        auto dump = [&](std::span<const std::int32_t> token_ids) {
            io::safetensors_builder b;
            b.set_metadata("rope_theta", "10000");
            const kv_cache_view v = bf16.view();
            const std::size_t block = v.layout.elements_per_tensor() * 2;
            for (std::uint32_t l = 0; l < v.layout.layers; ++l)
                for (kv_kind kind : {kv_kind::key, kv_kind::value})
                    b.add(io::kv_tensor_name(l, kind), dtype::bf16, {v.layout.kv_heads, T, v.layout.head_dim},
                          std::span<const std::uint8_t>(bf16.bytes.data() + (2 * l + std::size_t(kind)) * block, block));
            if (!token_ids.empty())
                b.add("tokens", dtype::i32, {T}, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(token_ids.data()), 4 * T));
            return b.serialize();
        };
        write("safetensors", "kv-slice.safetensors", dump(ids));
        // The table seed: the same slice with its ids folded into 8 (a table holds vocab x heads x
        // head_dim per layer; the real ids would make it half a megabyte).
        std::vector<std::int32_t> small_ids(T);
        for (std::uint64_t t = 0; t < T; ++t) small_ids[t] = std::int32_t(t % 8);
        const auto parsed = io::safetensors_file::parse(dump(small_ids));
        const io::safetensors_file* corpus[] = {&parsed};
        write("safetensors", "expected-kv-table.safetensors", io::serialize_expected_kv_table(io::build_expected_kv_table(corpus)));
    }

    // .npy: the slice's first K tensor, as numpy writes it (v1.0, '<u2' bits of bf16, and '<f4').
    for (int variant = 0; variant < 2; ++variant) {
        const bool f32 = variant == 1;
        std::string header = std::string("{'descr': '") + (f32 ? "<f4" : "<f2") + "', 'fortran_order': False, 'shape': (2, " +
                             std::to_string(T) + ", 64), }";
        while ((10 + header.size() + 1) % 64) header += ' ';
        header += '\n';
        byte_vector npy{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, std::uint8_t(header.size()), std::uint8_t(header.size() >> 8)};
        npy.insert(npy.end(), header.begin(), header.end());
        const slice s = cut(full, 1, T, f32 ? dtype::f32 : dtype::f16);
        npy.insert(npy.end(), s.bytes.begin(), s.bytes.begin() + std::ptrdiff_t(s.bytes.size() / 2));
        write("npy", f32 ? "k-f32.npy" : "k-f16.npy", npy);
    }

    // llama.cpp states: the slice's KV as f16 rows (sequence file, session file; V plain and transposed).
    {
        const slice s = cut(full, 1, 6, dtype::f16);
        const std::uint32_t embd = s.layout.kv_heads * s.layout.head_dim;
        for (int variant = 0; variant < 3; ++variant) {
            io::llama::state st;
            st.kind = variant == 1 ? io::llama::framing::session_file : io::llama::framing::seq_file;
            st.version = variant == 1 ? io::llama::session_file_version : io::llama::seq_file_version;
            if (variant == 1) st.arch = "llama";
            for (std::int32_t i = 0; i < 6; ++i) st.tokens.push_back(ids.empty() ? i : ids[std::size_t(i)]);
            io::llama::stream str;
            for (std::int32_t i = 0; i < 6; ++i) str.cells.push_back({i, {0}, {0, 0, -1}});
            str.v_trans = variant == 2;
            str.layers = 1;
            // Token-major rows: cell t holds every head's channels.
            auto rows = [&](kv_kind kind, bool transposed) {
                io::llama::tensor_rows r;
                r.type = 1;  // GGML_TYPE_F16
                r.embd = embd;
                r.row_bytes = 2ull * embd;
                r.transposed = transposed;
                r.element_bytes = transposed ? 2 : 0;
                r.bytes.resize(6ull * embd * 2);
                const std::size_t block = s.layout.elements_per_tensor() * 2;
                const std::uint8_t* src = s.bytes.data() + std::size_t(kind) * block;
                for (std::uint32_t h = 0; h < s.layout.kv_heads; ++h)
                    for (std::uint32_t t = 0; t < 6; ++t)
                        for (std::uint32_t c = 0; c < s.layout.head_dim; ++c) {
                            const std::size_t e = h * s.layout.head_dim + c;
                            const std::size_t dst = transposed ? (e * 6 + t) : (std::size_t(t) * embd + e);
                            std::copy_n(src + ((std::size_t(h) * 6 + t) * s.layout.head_dim + c) * 2, 2, r.bytes.data() + dst * 2);
                        }
                return r;
            };
            str.k.push_back(rows(kv_kind::key, false));
            str.v.push_back(rows(kv_kind::value, str.v_trans));
            st.sections.push_back({{str}});
            write("llama_state", std::string("state-") + std::to_string(variant) + ".bin", io::llama::write_state(st));
        }
        // GGUF header + metadata (what the converter reads from a model file), no tensors.
        byte_vector g;
        byte_writer w(g);
        w.put_bytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>("GGUF"), 4));
        w.put<std::uint32_t>(3), w.put<std::uint64_t>(0), w.put<std::uint64_t>(4);
        auto key = [&](const std::string& k, std::uint32_t type) { w.put<std::uint64_t>(k.size()), w.put_bytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(k.data()), k.size())), w.put<std::uint32_t>(type); };
        key("general.architecture", 8), w.put<std::uint64_t>(5), w.put_bytes(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>("llama"), 5));
        key("llama.attention.head_count_kv", 4), w.put<std::uint32_t>(2);
        key("llama.rope.freq_base", 6), w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(10000.0f));
        key("llama.embedding_length", 4), w.put<std::uint32_t>(256);
        write("llama_state", "header.gguf", g);
    }

    // The trie index and a prefix-store index (layout and chunk size of fuzz_store_index.cpp).
    {
        trie::plt_trie t;
        const std::int32_t a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 2, 3, 9, 9}, c[] = {7, 8};
        const float na[] = {1.0f, 0.5f, 2.0f, 0.1f, 3.0f, 0.2f};
        t.insert(a, na), t.insert(b), t.insert(c);
        write("store_index", "trie.bin", trie::save(t));
        memory_chunk_store chunks;
        const slice s = cut(full, 2, 40, dtype::bf16);
        prefix_store<memory_chunk_store> store(chunks, make_codec(lossless_config()), kv_layout{2, 2, 64, 0, dtype::bf16},
                                               {.chunk_tokens = 16});
        std::vector<std::int32_t> toks(40);
        for (std::size_t i = 0; i < toks.size(); ++i) toks[i] = ids.empty() ? std::int32_t(i) : ids_all[i];
        store.put(s.view(), toks);
        write("store_index", "prefix-store.bin", store.save_index());
    }
    // Entropy decoders: [decoder, u16 symbols, u16 shape bits] + a real block (fuzz_entropy.cpp).
    {
        auto seed = [&](std::uint8_t which, std::uint32_t n, std::uint16_t shape, std::span<const std::uint8_t> block, const std::string& name) {
            byte_vector b{which, std::uint8_t(n), std::uint8_t(n >> 8), std::uint8_t(shape), std::uint8_t(shape >> 8)};
            b.insert(b.end(), block.begin(), block.end());
            write("entropy", name, b);
        };
        const std::span<const std::uint8_t> plane(bf16.bytes.data(), 600);
        seed(0, 600, 0, coding::encode_bytes(plane), "rans-bytes");
        std::vector<std::uint16_t> wide(300), ctx(300);
        for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = std::uint16_t(bf16.bytes[2 * i] | (bf16.bytes[2 * i + 1] << 8)) >> 6, ctx[i] = std::uint16_t(i % 2);
        seed(1, 300, 8 | 1, coding::encode_block(wide, ctx, 1024, 2), "rans-wide-ctx2");
        seed(2, 300, 8 | 1, coding::encode_range_block(wide, ctx, 1024, 2), "range-ctx2");
        // Lossless blocks: shape bits = heads - 1 (2 bits), dtype index << 3, (head_dim / 2 - 1) << 6.
        const lossless::block_shape s{2, T, 64};
        const std::uint16_t shape = std::uint16_t(1 | (0 << 3) | (31 << 6));
        seed(3, T, shape, lossless::encode_block(std::span<const std::uint8_t>(bf16.bytes.data(), s.elements() * 2), dtype::bf16, s), "lossless-bf16");
    }
    std::printf("seeds written under %s\n", out_root.c_str());
    return 0;
}
