// End-to-end lossless benchmark: seqkv vs zstd -3/-19, xz -9, lz4, blosc (byte/bit shuffle + zstd) and
// fpzip (on the fp32 view) on the same real KV bytes, in one run. Data: every
// data/kv/*.safetensors (or the files in $SEQKV_KV_FILES, colon-separated), as stored (bf16) and
// converted to fp8 e4m3 with a per-tensor scale (as engines store fp8 KV).
// Prints Google Benchmark rows and then a summary table: ratio, encode / decode MB/s per core.
// Environment: SEQKV_BENCH_CODECS=name,name (only these codecs), SEQKV_BENCH_BF16_ONLY=1 (skip the
// fp8 conversion), SEQKV_BENCH_SUMMARY_ONLY=1 (skip the entropy bound and per-block tables): for
// long contexts (bench/context_sweep.sh).
#include <benchmark/benchmark.h>
#include <fpzip.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/kv_files.hpp"
#include "seqkv_peers.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/seqkv.hpp"

namespace {

using seqkv::byte_vector;

struct dataset {
    std::string name;
    seqkv::kv_layout layout;
    std::vector<byte_vector> k, v;  // per layer, [H, T, D] raw
    byte_vector flat;               // all K then V tensors concatenated (what peers compress)
    std::vector<float> as_f32;      // fp32 view for fpzip
    std::vector<std::int32_t> token_ids;  // from the `tokens` tensor, or empty
    std::optional<seqkv::lossless::rope::parameters> rope;  // from metadata rope_theta / rope_style, or none

    seqkv::kv_cache_view view() const {
        seqkv::kv_cache_view c;
        c.layout = layout;
        const auto s = seqkv::kv_strides::head_major(layout.tokens, layout.head_dim);
        for (std::uint32_t l = 0; l < layout.layers; ++l) {
            c.keys.push_back({k[l].data(), layout.type, layout.kv_heads, layout.tokens, layout.head_dim, s});
            c.values.push_back({v[l].data(), layout.type, layout.kv_heads, layout.tokens, layout.head_dim, s});
        }
        return c;
    }
};

// RoPE parameters as the CLI would pass them: metadata rope_theta, rope_style (rotate_half default).
std::optional<seqkv::lossless::rope::parameters> rope_from_metadata(const std::map<std::string, std::string>& meta) {
    const auto it = meta.find("rope_theta");
    if (it == meta.end()) return std::nullopt;
    seqkv::lossless::rope::parameters p;
    try {
        p.theta = std::stod(it->second);
    } catch (...) {
        return std::nullopt;
    }
    if (auto st = meta.find("rope_style"); st != meta.end() && (st->second == "interleaved" || st->second == "gptj"))
        p.style = seqkv::lossless::rope::pairing::interleaved;
    if (!seqkv::lossless::rope::valid(p)) return std::nullopt;
    return p;
}

// All input files' KV, concatenated along the token axis requires equal shapes; instead each file
// is its own dataset and the summary sums bytes over files.
std::vector<dataset> load_datasets(bool fp8) {
    std::vector<dataset> out;
    for (const auto& path : seqkv_bench::kv_input_files()) {
        auto file = seqkv::io::safetensors_file::load(path);
        const auto view = seqkv::io::kv_view(file);
        // One model per run: files of another shape (e.g. the SmolLM2 fixture beside the tiny one
        // in data/kv) are skipped; pass them with $SEQKV_KV_FILES.
        if (!out.empty() && (view.layout.layers != out[0].layout.layers || view.layout.kv_heads != out[0].layout.kv_heads ||
                             view.layout.head_dim != out[0].layout.head_dim)) {
            if (!fp8) std::fprintf(stderr, "bench_lossless: skipping %s (another model's shape)\n", path.string().c_str());
            continue;
        }
        dataset d;
        d.name = path.stem().string();
        d.layout = view.layout;
        if (const auto* tok = file.find("tokens"); tok && tok->type == seqkv::dtype::i32 && tok->shape.size() == 1 &&
                                                     tok->shape[0] == view.layout.tokens)
            for (std::uint64_t i = 0; i < view.layout.tokens; ++i) {
                std::int32_t id;
                std::memcpy(&id, tok->bytes.data() + 4 * i, 4);
                d.token_ids.push_back(id);
            }
        d.rope = rope_from_metadata(file.metadata());
        if (fp8) d.layout.type = seqkv::dtype::f8_e4m3;
        const std::size_t n = view.layout.elements_per_tensor();
        for (std::uint32_t l = 0; l < view.layout.layers; ++l)
            for (auto kind : {seqkv::kv_kind::key, seqkv::kv_kind::value}) {
                const auto& t = view.tensor(l, kind);
                byte_vector raw(t.data, t.data + n * seqkv::dtype_size(t.type));
                if (fp8) {
                    float amax = 0;
                    for (std::size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(seqkv::load_as_float(raw.data(), t.type, i)));
                    const float scale = amax > 0 ? 448.0f / amax : 1.0f;
                    byte_vector q(n);
                    for (std::size_t i = 0; i < n; ++i) q[i] = seqkv::float_to_fp8_e4m3(seqkv::load_as_float(raw.data(), t.type, i) * scale);
                    raw = std::move(q);
                }
                for (std::size_t i = 0; i < n; ++i) d.as_f32.push_back(seqkv::load_as_float(raw.data(), d.layout.type, i));
                d.flat.insert(d.flat.end(), raw.begin(), raw.end());
                (kind == seqkv::kv_kind::key ? d.k : d.v).push_back(std::move(raw));
            }
        out.push_back(std::move(d));
    }
    return out;
}

struct codec_fns {
    std::string name;
    std::function<byte_vector(const dataset&)> encode;
    std::function<void(const dataset&, const byte_vector&, byte_vector&)> decode;  // into flat-sized output
};

std::vector<codec_fns> codecs() {
    std::vector<codec_fns> c;
    // seqkv with the chunk's token ids (as the CLI stores them), at two chunk sizes, and without ids.
    // With the file's rope parameters (rope = true) the rotated same-token predictor is available.
    // threads: 1 = the caller's thread (per-core rows), 0 = every core; estimate_stride 1 = the
    // exhaustive predictor search (every token; the encoder before sampling), 0 = the default.
    auto seqkv_codec = [](std::string name, std::uint32_t chunk, bool ids, bool scalar, bool rope = true, unsigned threads = 1,
                          std::uint32_t estimate_stride = 0) {
        return codec_fns{std::move(name),
                         [=](const dataset& d) {
                             seqkv::lossless::plane_options o;
                             if (rope) o.rope = d.rope;
                             o.estimate_stride = estimate_stride;
                             const seqkv::compress_options opts{
                                 .codec = seqkv::lossless_config(o), .chunk_tokens = chunk, .metadata = {}, .resources = {}, .threads = threads};
                             const auto id_span = ids ? std::span<const std::int32_t>(d.token_ids) : std::span<const std::int32_t>{};
                             if (estimate_stride == 0) return seqkv::compress(d.view(), opts, id_span);
                             // The search stride is an encoder choice the file's codec config does not
                             // carry (make_codec would drop it): the writer gets this encoder itself.
                             const auto view = d.view();
                             seqkv::format::preamble p;
                             p.layout = view.layout;
                             seqkv::apply_options(p, opts);
                             p.has_token_ids = !id_span.empty();
                             byte_vector out;
                             seqkv::format::stream_writer w(
                                 [&](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }, p,
                                 seqkv::any_chunk_codec::wrap(seqkv::lossless_codec<>(o, seqkv::executor_for(threads)), "lossless"),
                                 seqkv::writer_options_for(opts));
                             w.append(view, 0, view.layout.tokens, id_span, {}, /*last=*/true);
                             w.finish();
                             return out;
                         },
                         [=](const dataset&, const byte_vector& z, byte_vector& out) {
                             auto b = scalar ? seqkv::decompress<seqkv::backend::scalar>(z) : seqkv::decompress(z, 0, std::nullopt, {}, threads);
                             std::copy(b.bytes.begin(), b.bytes.end(), out.begin());
                         }};
    };
    c.push_back(seqkv_codec("seqkv-lossless", 256, true, false));
    c.push_back(seqkv_codec("seqkv-lossless-c512", 512, true, false));
    c.push_back(seqkv_codec("seqkv-lossless-c512-exhaustive", 512, true, false, true, 1, 1));
    c.push_back(seqkv_codec("seqkv-lossless-c512-mt", 512, true, false, true, 0));
    c.push_back(seqkv_codec("seqkv-lossless-norope", 256, true, false, false));
    c.push_back(seqkv_codec("seqkv-lossless-c512-norope", 512, true, false, false));
    c.push_back(seqkv_codec("seqkv-lossless-noids", 256, false, false));
    c.push_back(seqkv_codec("seqkv-lossless-scalar", 256, true, true));
    // The peers on the flat bytes, with the KV's element size for blosc's shuffles.
    for (auto& p : seqkv::peers::available(true))
        c.push_back({p.name, [enc = p.encode](const dataset& d) { return enc(d.flat, seqkv::dtype_size(d.layout.type)); },
                     [dec = p.decode](const dataset&, const byte_vector& z, byte_vector& out) { dec(z, out); }});
    c.push_back({"fpzip-f32view",
                 [](const dataset& d) {
                     byte_vector out(d.as_f32.size() * 4 + 1024);
                     FPZ* f = fpzip_write_to_buffer(out.data(), out.size());
                     f->type = FPZIP_TYPE_FLOAT;
                     f->prec = 0;
                     f->nx = int(d.layout.head_dim);
                     f->ny = int(d.layout.tokens);
                     f->nz = int(d.layout.kv_heads);
                     f->nf = int(2 * d.layout.layers);
                     fpzip_write_header(f);
                     const size_t n = fpzip_write(f, d.as_f32.data());
                     fpzip_write_close(f);
                     out.resize(n);
                     return out;
                 },
                 [](const dataset& d, const byte_vector& z, byte_vector& out) {
                     std::vector<float> back(d.as_f32.size());
                     FPZ* f = fpzip_read_from_buffer(z.data());
                     fpzip_read_header(f);
                     fpzip_read(f, back.data());
                     fpzip_read_close(f);
                     for (std::size_t i = 0; i < back.size(); ++i) seqkv::store_from_float(out.data(), d.layout.type, i, back[i]);
                 }});
    return c;
}

struct result {
    double ratio = 0, encode_mbps = 0, decode_mbps = 0;
};
std::map<std::pair<std::string, std::string>, result> results;  // (dtype, codec) -> result

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::string(v) != "0";
}

bool codec_selected(const std::string& name) {
    const char* env = std::getenv("SEQKV_BENCH_CODECS");
    if (!env || !*env) return true;
    std::stringstream ss(env);
    for (std::string c; std::getline(ss, c, ',');)
        if (c == name) return true;
    return false;
}

void register_all(const std::string& dtype_label, const std::vector<dataset>& sets) {
    if (sets.empty()) return;
    for (const auto& codec : codecs()) {
        if (!codec_selected(codec.name)) continue;
        // Verify every peer round-trips bit-exactly before timing it (a benchmark of a broken codec is worthless).
        std::uint64_t raw = 0, coded = 0;
        std::vector<byte_vector> encoded;
        for (const auto& d : sets) {
            encoded.push_back(codec.encode(d));
            byte_vector back(d.flat.size());
            codec.decode(d, encoded.back(), back);
            if (back != d.flat) std::fprintf(stderr, "WARNING: %s is not bit-exact on %s\n", codec.name.c_str(), d.name.c_str());
            raw += d.flat.size();
            coded += encoded.back().size();
        }
        results[{dtype_label, codec.name}].ratio = double(raw) / double(coded);
        const bool wall_clock = codec.name.ends_with("-mt");  // work on pool threads: CPU time of this one would flatter it
        auto* enc = benchmark::RegisterBenchmark(("encode/" + dtype_label + "/" + codec.name).c_str(), [=, &sets](benchmark::State& st) {
            for (auto _ : st)
                for (const auto& d : sets) benchmark::DoNotOptimize(codec.encode(d));
            st.SetBytesProcessed(std::int64_t(st.iterations() * raw));
            st.counters["ratio"] = double(raw) / double(coded);
        });
        auto* dec = benchmark::RegisterBenchmark(("decode/" + dtype_label + "/" + codec.name).c_str(), [=, &sets](benchmark::State& st) {
            std::vector<byte_vector> outs;
            for (const auto& d : sets) outs.emplace_back(d.flat.size());
            for (auto _ : st)
                for (std::size_t i = 0; i < sets.size(); ++i) {
                    codec.decode(sets[i], encoded[i], outs[i]);
                    benchmark::DoNotOptimize(outs[i].data());
                }
            st.SetBytesProcessed(std::int64_t(st.iterations() * raw));
            st.counters["ratio"] = double(raw) / double(coded);
        });
        for (auto* b : {enc, dec}) {
            b->Unit(benchmark::kMillisecond);
            if (wall_clock) b->UseRealTime();
        }
    }
}

// Empirical conditional entropy of the data, bits per element, no side information: per
// (layer, K/V) tensor, the bits of each element are split into fields and each field is charged
// its order-0 entropy given the element's channel (exponent, sign) or pooled (mantissa), either
// on all raw elements or with rows that exactly repeat their same-token reference row charged one
// bit per row (the better of the two per tensor). This is the ceiling for any coder that models
// fields per channel and copies exact repeats, without value prediction.
struct entropy_bound {
    double raw_bits = 0, residual_bits = 0, best_bits = 0;  // per element
    double exponent = 0, sign = 0, mantissa = 0;             // parts of best_bits
};

double entropy_of(const std::vector<std::uint64_t>& counts) {
    std::uint64_t n = 0;
    for (auto c : counts) n += c;
    double h = 0;
    for (auto c : counts)
        if (c) h -= double(c) * std::log2(double(c) / double(n));
    return h;  // total bits
}

entropy_bound measure_entropy(const std::vector<dataset>& sets) {
    entropy_bound b;
    double elements = 0;
    for (const auto& d : sets) {
        const auto& L = d.layout;
        const std::size_t es = seqkv::dtype_size(L.type), D = L.head_dim, T = L.tokens, C = std::size_t(L.kv_heads) * D;
        const unsigned mant_bits = es == 1 ? 3 : es == 2 ? (L.type == seqkv::dtype::bf16 ? 7 : 10) : 23;
        const unsigned width = 8 * unsigned(es);
        // Same-token reference of every token (last earlier occurrence), as the codec uses it.
        std::vector<std::int64_t> ref(T, -1);
        std::map<std::int32_t, std::int64_t> last;
        for (std::size_t t = 0; t < d.token_ids.size(); ++t) {
            if (auto it = last.find(d.token_ids[t]); it != last.end()) ref[t] = it->second;
            last[d.token_ids[t]] = std::int64_t(t);
        }
        for (std::size_t l = 0; l < L.layers; ++l)
            for (const auto* tensor : {&d.k[l], &d.v[l]}) {
                double parts[2][3] = {};
                for (int residual = 0; residual < 2; ++residual) {
                    const std::size_t exp_symbols = std::size_t(1) << (width - 1 - mant_bits);
                    std::vector<std::vector<std::uint64_t>> ex(C, std::vector<std::uint64_t>(exp_symbols)), sg(C, std::vector<std::uint64_t>(2));
                    std::vector<std::uint64_t> mant(std::size_t(1) << std::min(mant_bits, 16u));
                    // Rows equal to their same-token reference row cost one flag bit; the rest are charged their fields.
                    std::vector<std::uint8_t> copied(L.kv_heads * T, 0);
                    std::size_t coded = C * T;
                    if (residual)
                        for (std::size_t h = 0; h < L.kv_heads; ++h)
                            for (std::size_t t = 0; t < T; ++t)
                                if (ref[t] >= 0 && std::memcmp(tensor->data() + (h * T + t) * D * es,
                                                               tensor->data() + (h * T + std::size_t(ref[t])) * D * es, D * es) == 0)
                                    copied[h * T + t] = 1, coded -= D;
                    if (residual) parts[residual][0] += double(L.kv_heads * T);
                    for (std::size_t h = 0; h < L.kv_heads; ++h)
                        for (std::size_t t = 0; t < T; ++t)
                            for (std::size_t c = 0; c < D; ++c) {
                                auto bits = [&](std::size_t tok) {
                                    std::uint32_t u = 0;
                                    std::memcpy(&u, tensor->data() + ((h * T + tok) * D + c) * es, es);
                                    return u;
                                };
                                const std::uint32_t u = bits(t);
                                if (residual && copied[h * T + t]) continue;
                                const std::size_t ch = h * D + c;
                                ++ex[ch][(u >> mant_bits) & (exp_symbols - 1)];
                                ++sg[ch][(u >> (width - 1)) & 1];
                                ++mant[u & ((1u << std::min(mant_bits, 16u)) - 1)];
                            }
                    for (std::size_t ch = 0; ch < C; ++ch) parts[residual][0] += entropy_of(ex[ch]), parts[residual][1] += entropy_of(sg[ch]);
                    parts[residual][2] = entropy_of(mant) + (mant_bits > 16 ? double(mant_bits - 16) * double(coded) : 0.0);
                }
                const double raw = parts[0][0] + parts[0][1] + parts[0][2], res = parts[1][0] + parts[1][1] + parts[1][2];
                const int best = res < raw ? 1 : 0;
                b.raw_bits += raw, b.residual_bits += res, b.best_bits += std::min(raw, res);
                b.exponent += parts[best][0], b.sign += parts[best][1], b.mantissa += parts[best][2];
                elements += double(C * T);
            }
    }
    for (double* x : {&b.raw_bits, &b.residual_bits, &b.best_bits, &b.exponent, &b.sign, &b.mantissa}) *x /= elements;
    return b;
}

// Captures bytes/second per run for the summary table.
class summary_reporter : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const auto& r : runs) {
            const std::string name = r.benchmark_name();
            const auto a = name.find('/'), b = name.find('/', a + 1);
            const std::string op = name.substr(0, a), dt = name.substr(a + 1, b - a - 1);
            std::string codec = name.substr(b + 1);
            codec = codec.substr(0, codec.find('/'));
            const auto it = r.counters.find("bytes_per_second");
            const double mbps = it != r.counters.end() ? double(it->second) / 1e6 : 0;
            auto& res = results[{dt, codec}];
            (op == "encode" ? res.encode_mbps : res.decode_mbps) = mbps;
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    const auto bf16 = load_datasets(false);
    const bool bf16_only = env_flag("SEQKV_BENCH_BF16_ONLY"), summary_only = env_flag("SEQKV_BENCH_SUMMARY_ONLY");
    const auto fp8 = bf16_only ? std::vector<dataset>{} : load_datasets(true);
    if (bf16.empty()) {
        std::fprintf(stderr, "no KV files: put safetensors dumps in data/kv or set SEQKV_KV_FILES\n");
        return 1;
    }
    std::string files;
    for (const auto& d : bf16) files += " " + d.name;
    register_all(std::string(seqkv::dtype_name(bf16[0].layout.type)), bf16);
    register_all("F8_E4M3", fp8);
    summary_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    std::printf("\nLossless summary on real KV (%s), single thread, bytes = KV bytes in the stored dtype:\n", files.c_str());
    std::printf("(-mt rows: every core, %u here, wall-clock MB/s; -exhaustive: the predictor search on every token)\n",
                std::thread::hardware_concurrency());
    std::printf("%-9s %-30s %8s %12s %12s\n", "dtype", "codec", "ratio", "enc MB/s", "dec MB/s");
    for (const auto& [key, r] : results)
        std::printf("%-9s %-30s %8.3f %12.1f %12.1f\n", key.first.c_str(), key.second.c_str(), r.ratio, r.encode_mbps, r.decode_mbps);
    std::printf("(fpzip codes the exact fp32 view of the same values; its ratio is against the stored dtype's bytes.)\n");
    // The goal's yardstick: seqkv's CLI default (512-token chunks) over the best general-purpose peer.
    for (const auto* sets : {&bf16, &fp8}) {
        if (sets->empty()) continue;
        const std::string dt(seqkv::dtype_name((*sets)[0].layout.type));
        std::string best_name;
        double best = 0;
        for (const char* peer : {"zstd-19", "xz-9", "blosc-zstd-byteshuffle", "blosc-zstd-bitshuffle"})
            if (results[{dt, peer}].ratio > best) best = results[{dt, peer}].ratio, best_name = peer;
        const double ours = results[{dt, "seqkv-lossless-c512"}].ratio;
        std::printf("%-9s seqkv-lossless-c512 %.3f / best peer %s %.3f = %.3fx\n", dt.c_str(), ours, best_name.c_str(), best, ours / best);
    }
    std::printf("\nEmpirical entropy bound (per tensor: H(exponent|channel) + H(sign|channel) + H(mantissa), no side info;\n"
                "exact same-token row repeats at 1 bit per row, best per tensor) vs achieved, bits per element:\n");
    std::printf("%-9s %8s %8s %8s %8s %10s %10s %11s %10s\n", "dtype", "exp", "sign", "mant", "bound", "raw-only", "bound-x", "achieved", "ratio");
    if (summary_only) {
        benchmark::Shutdown();
        return 0;
    }
    for (const auto* sets : {&bf16, &fp8}) {
        if (sets->empty()) continue;
        const auto e = measure_entropy(*sets);
        const std::string dt(seqkv::dtype_name((*sets)[0].layout.type));
        const double width = 8.0 * double(seqkv::dtype_size((*sets)[0].layout.type));
        const double ratio = results[{dt, "seqkv-lossless"}].ratio;
        std::printf("%-9s %8.3f %8.3f %8.3f %8.3f %10.3f %9.3fx %11.3f %9.3fx\n", dt.c_str(), e.exponent, e.sign, e.mantissa, e.best_bits,
                    e.raw_bits, width / e.best_bits, width / ratio, ratio);
    }
    // Per (layer, K/V) block: coded bytes without / with the rope-aware predictor (512-token chunks).
    std::printf("\nPer-block coded bytes, 512-token chunks, summed over files (without rope -> with rope):\n");
    for (const auto* sets : {&bf16, &fp8}) {
        if (sets->empty()) continue;
        const auto& L0 = (*sets)[0].layout;
        for (std::uint32_t l = 0; l < L0.layers; ++l)
            for (auto kind : {seqkv::kv_kind::key, seqkv::kv_kind::value}) {
                std::uint64_t without = 0, with = 0, raw = 0;
                for (const auto& d : *sets) {
                    const auto& L = d.layout;
                    if (L.layers != L0.layers) continue;  // the table is for the first file's model
                    const auto& tensor = kind == seqkv::kv_kind::key ? d.k[l] : d.v[l];
                    const std::size_t es = seqkv::dtype_size(L.type);
                    for (std::uint64_t t0 = 0; t0 < L.tokens; t0 += 512) {
                        const std::uint64_t t1 = std::min<std::uint64_t>(L.tokens, t0 + 512);
                        const seqkv::lossless::block_shape shape{L.kv_heads, t1 - t0, L.head_dim};
                        byte_vector block;
                        for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                            block.insert(block.end(), tensor.begin() + std::ptrdiff_t(((h * L.tokens) + t0) * L.head_dim * es),
                                         tensor.begin() + std::ptrdiff_t(((h * L.tokens) + t1) * L.head_dim * es));
                        const std::span<const std::int32_t> ids =
                            d.token_ids.empty() ? std::span<const std::int32_t>{} : std::span<const std::int32_t>(d.token_ids).subspan(t0, t1 - t0);
                        seqkv::lossless::plane_options o;
                        without += seqkv::lossless::encode_block(block, L.type, shape, o, ids).size();
                        o.rope = d.rope;
                        with += seqkv::lossless::encode_block(block, L.type, shape, o, ids).size();
                        raw += block.size();
                    }
                }
                std::printf("%-9s layer %u %c: %9llu -> %9llu bytes (%+.1f%%), ratio %.3fx -> %.3fx\n",
                            std::string(seqkv::dtype_name(L0.type)).c_str(), l, kind == seqkv::kv_kind::key ? 'K' : 'V',
                            (unsigned long long)without, (unsigned long long)with, 100.0 * (double(with) - double(without)) / double(without),
                            double(raw) / double(without), double(raw) / double(with));
            }
    }
    benchmark::Shutdown();
    return 0;
}
