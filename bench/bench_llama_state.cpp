// llama.cpp sequence state files: seqkv lossless (K/V through the codec, the rest in the
// llama_state attachment, decode = the state's exact bytes back) against what llama.cpp users
// reach for (zstd -3, zstd -19, lz4, xz -9 on the whole file), in one run, single thread.
// Ratio = state file bytes / compressed bytes; MB/s = state file MB per second.
//   seqkv_bench_llama_state [--gguf MODEL.gguf] [--min-seconds S] [--codecs a,b] STATE...
// bench/llama_state_peers.py makes SmolLM2 states of 1k/4k/8k tokens and runs this binary.
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
#include "seqkv_peers.hpp"

namespace {

using seqkv::byte_vector;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

struct codec_row {
    std::string name;
    std::function<byte_vector(const byte_vector&)> encode;
    std::function<byte_vector(const byte_vector&, std::size_t)> decode;
};

// zstd -3 / -19, lz4 and xz -9 on the whole state file (blosc's shuffles need an element size the
// state's mixed sections do not have).
std::vector<codec_row> peers() {
    std::vector<codec_row> rows;
    for (auto& p : seqkv::peers::available(true)) {
        if (p.name.starts_with("blosc")) continue;
        rows.push_back({p.name, [enc = p.encode](const byte_vector& in) { return enc(in, 1); },
                        [dec = p.decode](const byte_vector& z, std::size_t n) {
                            byte_vector out(n);
                            dec(z, out);
                            return out;
                        }});
    }
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
