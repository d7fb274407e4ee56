// llama.cpp sequence state files: seqkv lossless (K/V through the codec, the rest in the
// llama_state attachment, decode = the state's exact bytes back) against what llama.cpp users
// reach for (zstd -3, zstd -19, lz4, xz -9 on the whole file), in one run, single thread.
// Ratio = state file bytes / compressed bytes; MB/s = state file MB per second.
//   seqkv_bench_llama_state [--gguf MODEL.gguf] [--min-seconds S] [--codecs a,b] STATE...
// bench/llama_state_peers.py makes SmolLM2 states of 1k/4k/8k tokens and runs this binary.
#include <lz4.h>
#include <lzma.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "seqkv/io/gguf.hpp"
#include "seqkv/convert/llama_skv.hpp"

namespace {

using seqkv::byte_vector;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

struct codec_row {
    std::string name;
    std::function<byte_vector(const byte_vector&)> encode;
    std::function<byte_vector(const byte_vector&, std::size_t)> decode;
};

byte_vector zstd_encode(const byte_vector& in, int level) {
    byte_vector out(ZSTD_compressBound(in.size()));
    const auto n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), level);
    if (ZSTD_isError(n)) throw std::runtime_error("zstd");
    out.resize(n);
    return out;
}

std::vector<codec_row> peers() {
    std::vector<codec_row> rows;
    for (int level : {3, 19})
        rows.push_back({"zstd -" + std::to_string(level), [level](const byte_vector& in) { return zstd_encode(in, level); },
                        [](const byte_vector& z, std::size_t n) {
                            byte_vector out(n);
                            if (ZSTD_isError(ZSTD_decompress(out.data(), n, z.data(), z.size()))) throw std::runtime_error("zstd");
                            return out;
                        }});
    rows.push_back({"lz4",
                    [](const byte_vector& in) {
                        byte_vector out(LZ4_compressBound(int(in.size())));
                        out.resize(LZ4_compress_default(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()),
                                                        int(in.size()), int(out.size())));
                        return out;
                    },
                    [](const byte_vector& z, std::size_t n) {
                        byte_vector out(n);
                        if (LZ4_decompress_safe(reinterpret_cast<const char*>(z.data()), reinterpret_cast<char*>(out.data()), int(z.size()),
                                                int(n)) != int(n))
                            throw std::runtime_error("lz4");
                        return out;
                    }});
    rows.push_back({"xz -9",
                    [](const byte_vector& in) {
                        byte_vector out(lzma_stream_buffer_bound(in.size()));
                        std::size_t pos = 0;
                        if (lzma_easy_buffer_encode(9, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(), &pos, out.size()) != LZMA_OK)
                            throw std::runtime_error("xz");
                        out.resize(pos);
                        return out;
                    },
                    [](const byte_vector& z, std::size_t n) {
                        byte_vector out(n);
                        std::uint64_t memlimit = UINT64_MAX;
                        std::size_t in_pos = 0, out_pos = 0;
                        if (lzma_stream_buffer_decode(&memlimit, 0, nullptr, z.data(), &in_pos, z.size(), out.data(), &out_pos, n) != LZMA_OK)
                            throw std::runtime_error("xz");
                        return out;
                    }});
    return rows;
}

// seqkv lossless as `seqkv compress --from llama-state --gguf MODEL` configures it.
codec_row seqkv_row(const seqkv::io::gguf::attention_model* model) {
    seqkv::io::llama::kv_shape shape;
    seqkv::compress_options o;
    seqkv::lossless::plane_options lo;
    std::string name = "seqkv lossless";
    if (model) {
        shape = {model->kv_heads, model->head_dim};
        if (model->rope != seqkv::io::gguf::rope_pairing::none) {
            lo.rope = seqkv::lossless::rope::parameters{model->rope_theta, model->rope == seqkv::io::gguf::rope_pairing::interleaved
                                                                               ? seqkv::lossless::rope::pairing::interleaved
                                                                               : seqkv::lossless::rope::pairing::rotate_half};
            name += " (rope-aware)";
        }
    }
    o.codec = seqkv::lossless_config(lo);
    o.chunk_tokens = 512;
    return {name,
            [shape, o](const byte_vector& in) { return seqkv::io::llama::compress_state(seqkv::io::llama::parse_state(in), shape, o); },
            [](const byte_vector& z, std::size_t) { return seqkv::io::llama::write_state(seqkv::io::llama::decompress_state(z)); }};
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> files, only;
    std::string gguf_path;
    double min_seconds = 0.5;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--gguf" && i + 1 < argc) gguf_path = argv[++i];
        else if (a == "--min-seconds" && i + 1 < argc) min_seconds = std::stod(argv[++i]);
        else if (a == "--codecs" && i + 1 < argc) {
            std::string list = argv[++i];
            for (std::size_t p = 0; p != std::string::npos;) {
                const auto q = list.find(',', p);
                only.push_back(list.substr(p, q == std::string::npos ? q : q - p));
                p = q == std::string::npos ? q : q + 1;
            }
        } else files.push_back(a);
    }
    if (files.empty()) {
        std::fprintf(stderr, "usage: %s [--gguf MODEL.gguf] [--min-seconds S] [--codecs a,b] STATE...\n", argv[0]);
        return 2;
    }
    try {
        std::optional<seqkv::io::gguf::attention_model> model;
        if (!gguf_path.empty()) model = seqkv::io::gguf::attention_model_of(seqkv::io::gguf::load_metadata(gguf_path));
        std::vector<codec_row> codecs{seqkv_row(model ? &*model : nullptr)};
        for (auto& p : peers()) codecs.push_back(std::move(p));
        std::printf("%-34s %-28s %8s %10s %10s\n", "state file", "codec", "ratio", "enc MB/s", "dec MB/s");
        for (const auto& path : files) {
            const byte_vector state = seqkv::read_file(path);
            const double mb = state.size() / 1e6;
            for (const auto& c : codecs) {
                if (!only.empty() && std::find_if(only.begin(), only.end(), [&](const auto& o) { return c.name.starts_with(o); }) == only.end())
                    continue;
                auto t0 = clock_type::now();
                const byte_vector z = c.encode(state);
                const double enc = seconds_since(t0);
                int reps = 0;
                byte_vector back;
                t0 = clock_type::now();
                do {
                    back = c.decode(z, state.size());
                    ++reps;
                } while (seconds_since(t0) < min_seconds);
                const double dec = seconds_since(t0) / reps;
                if (back != state) throw std::runtime_error(c.name + ": decoded bytes differ from " + path);
                std::printf("%-34s %-28s %8.3f %10.1f %10.1f\n", std::filesystem::path(path).filename().string().c_str(),
                            c.name.c_str(), double(state.size()) / double(z.size()), mb / enc, mb / dec);
                std::fflush(stdout);
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
