// Lossy rate–distortion report + encode/decode timings on the real KV fixture.
//   seqkv_bench_lossy [--rd-report out/rd.svg] [--rd-only | --timings-only] [--chunk N] [benchmark flags]
// For every data/kv/*.safetensors dump (or the files in $SEQKV_KV_FILES, colon-separated; a dump
// whose queries cover only some layers is measured on those layers): per-vector baselines (int8, fp8, KIVI-2/4, TurboQuant
// 2/2.5/3/3.5/4) and seqkv series (uniform step + adaptive entropy coding with predictors),
// bits per element with ALL side information (scales, norms, tables of the chunk, headers,
// the codec config), attention-output relative error and attention KL with the dump's real
// queries, K/V SNR. The expected-KV table for a dump is fitted on the OTHER dumps only
// (leave-one-out; with a single dump no table series is run). Numbers are means over dumps.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "common/kv_files.hpp"
#include "lossy_rd_plot.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/metrics/kv_metrics.hpp"

using namespace seqkv;
namespace fs = std::filesystem;

namespace {

struct dump {
    std::string name;
    io::safetensors_file file;
    kv_cache_view view;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    std::vector<kv_tensor_view> queries;
    double rope_theta = 0;
    bool rope_interleaved = false;
    std::string layers_note = "all layers";
};

std::vector<std::unique_ptr<dump>> load_dumps() {
    std::vector<fs::path> paths = seqkv_bench::kv_input_files();
    std::sort(paths.begin(), paths.end());
    std::vector<std::unique_ptr<dump>> dumps;
    for (const auto& p : paths) {
        auto d = std::make_unique<dump>();
        d->name = p.filename().string();
        d->file = io::safetensors_file::load(p);
        d->view = io::kv_view(d->file);
        // One model per run (tables are fitted across dumps): other shapes are skipped.
        if (!dumps.empty() && (d->view.layout.kv_heads != dumps[0]->view.layout.kv_heads ||
                               d->view.layout.head_dim != dumps[0]->view.layout.head_dim ||
                               d->file.metadata().count("model") != dumps[0]->file.metadata().count("model") ||
                               (d->file.metadata().count("model") && d->file.metadata().at("model") != dumps[0]->file.metadata().at("model")))) {
            std::fprintf(stderr, "bench_lossy: skipping %s (another model)\n", p.string().c_str());
            continue;
        }
        const auto& t = d->file.at("tokens");
        for (std::uint64_t i = 0; i < t.element_count(); ++i) d->ids.push_back(std::int32_t(load_le32(t.bytes.data() + 4 * i)));
        if (const auto* n = d->file.find("nll"); n && n->type == dtype::f32)
            for (std::uint64_t i = 0; i < n->element_count(); ++i) d->nll.push_back(load_as_float(n->bytes.data(), dtype::f32, i));
        // Layers with real queries; when only some have them, keep just those layers' K/V.
        std::vector<std::uint32_t> with_q;
        for (std::uint32_t l = 0; l < d->view.layout.layers; ++l)
            if (d->file.find("layer." + std::to_string(l) + ".q")) with_q.push_back(l);
        if (!with_q.empty() && with_q.size() < d->view.layout.layers) {
            kv_cache_view sub;
            sub.layout = d->view.layout;
            sub.layout.layers = std::uint32_t(with_q.size());
            d->layers_note = "layers";
            for (auto l : with_q) {
                sub.keys.push_back(d->view.keys[l]), sub.values.push_back(d->view.values[l]);
                d->layers_note += " " + std::to_string(l);
            }
            d->view = std::move(sub);
        }
        for (std::uint32_t l : with_q) {
            const auto* q = d->file.find("layer." + std::to_string(l) + ".q");
            d->queries.push_back({q->bytes.data(), q->type, std::uint32_t(q->shape[0]), q->shape[1], std::uint32_t(q->shape[2]),
                                  kv_strides::head_major(q->shape[1], std::uint32_t(q->shape[2]))});
        }
        if (auto it = d->file.metadata().find("rope_theta"); it != d->file.metadata().end()) d->rope_theta = std::stod(it->second);
        if (auto it = d->file.metadata().find("rope_style"); it != d->file.metadata().end())
            d->rope_interleaved = it->second == "interleaved" || it->second == "gptj";
        dumps.push_back(std::move(d));
    }
    return dumps;
}

struct config_entry {
    std::string series, label;
    lossy_config config;
    bool uses_table = false;
};

std::vector<config_entry> configs_for(const lossy_model_info& m, bool have_table) {
    std::vector<config_entry> list;
    for (const char* p : {"int8", "fp8", "kivi4", "kivi2", "turbo4", "turbo3.5", "turbo3", "turbo2.5", "turbo2"})
        list.push_back({"baseline", p, lossy_preset(p, m)});
    lossy_config qjl = lossy_preset("turbo3", m);
    qjl.qjl = true;
    list.push_back({"baseline", "turbo3-qjl", qjl});
    lossy_config kivi_ec = lossy_preset("kivi2", m);
    kivi_ec.coding = lossy::symbol_coding::adaptive, kivi_ec.channel_contexts = true;
    list.push_back({"kivi2+entropy", "kivi2+ec", kivi_ec});
    const float steps[] = {4.0f, 2.0f, 1.41f, 1.0f, 0.71f, 0.5f, 0.35f, 0.25f, 0.18f, 0.125f, 0.088f, 0.0625f};
    for (float s : steps) {
        const std::string st = "seqkv-step:" + std::to_string(s);
        lossy_config mean = lossy_preset(st, m);
        mean.table_hash = 0;
        list.push_back({"uniform+EC (no prediction)", st, apply_lossy_option(mean, "predictor", "zero")});
        list.push_back({"previous-token", st, apply_lossy_option(mean, "predictor", "previous")});
        list.push_back({"token-mean (in-chunk)", st, mean});
        if (have_table) {
            lossy_config t = lossy_preset(st, m);
            list.push_back({"token-mean + table (held out)", st, t, true});
            list.push_back({"token-mean + table, adaptive range coder", st, apply_lossy_option(t, "coding", "adaptive"), true});
            list.push_back({"token-mean + table + surprisal", st, apply_lossy_option(t, "rate", "surprisal"), true});
        }
    }
    return list;
}

std::uint64_t g_chunk_tokens = 1024;

}  // namespace

int main(int argc, char** argv) {
    std::string svg = "rd.svg";
    bool rd_only = false, timings_only = false;
    std::vector<char*> rest{argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--rd-report" && i + 1 < argc) svg = argv[++i];
        else if (a == "--rd-only") rd_only = true;
        else if (a == "--timings-only") timings_only = true;
        else if (a == "--chunk" && i + 1 < argc) g_chunk_tokens = std::stoull(argv[++i]);
        else rest.push_back(argv[i]);
    }
    const auto dumps = load_dumps();
    if (dumps.empty()) {
        std::fprintf(stderr, "bench_lossy: no %s/kv/*.safetensors fixture found\n", SEQKV_DATA_DIR);
        return 1;
    }
    std::printf("# seqkv lossy rate-distortion report (%zu dumps, chunk %llu tokens)\n", dumps.size(),
                static_cast<unsigned long long>(g_chunk_tokens));
    std::map<std::string, std::vector<bench::rd_point>> acc;  // key: series|label
    std::vector<std::string> order;
    for (std::size_t i = 0; i < (timings_only ? 0 : dumps.size()); ++i) {
        const dump& d = *dumps[i];
        std::shared_ptr<const predict::expected_kv_table> table;
        // A held-out table needs every layer (and is vocab x layers x KV big: skipped for layer subsets).
        if (dumps.size() > 1 && d.layers_note == "all layers") {
            std::vector<const io::safetensors_file*> corpus;
            for (std::size_t j = 0; j < dumps.size(); ++j)
                if (j != i) corpus.push_back(&dumps[j]->file);
            table = std::make_shared<const predict::expected_kv_table>(io::build_expected_kv_table(corpus));
        }
        const lossy_model_info m{d.rope_theta, d.view.layout.head_dim, table.get(), d.rope_interleaved};
        const metrics::attention_probe probe(d.view, d.queries);
        std::printf("# %s (%s): %llu tokens, %u layers, %u kv heads, head_dim %u, %s queries, table %s\n", d.name.c_str(), d.layers_note.c_str(),
                    static_cast<unsigned long long>(d.view.layout.tokens), d.view.layout.layers, d.view.layout.kv_heads,
                    d.view.layout.head_dim, probe.real_queries() ? "real" : "NO (keys as proxy)",
                    table ? "fitted on the other dumps" : "none");
        for (const auto& e : configs_for(m, table != nullptr)) {
            const lossy_runtime_codec codec(e.config, e.uses_table ? table : nullptr);
            const auto t0 = std::chrono::steady_clock::now();
            auto r = lossy_round_trip(codec, d.view, d.ids, d.nll, g_chunk_tokens);
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!r.decoder_matches_encoder) std::printf("!! %s %s: decoder differs from encoder\n", e.series.c_str(), e.label.c_str());
            const auto q = probe.compare(view_of(r.decoded));
            bench::rd_point p{e.series, e.label, r.bits_per_element(), q.overall.attention_rel_error, q.overall.attention_kl,
                              q.overall.snr_k_db, q.overall.snr_v_db,
                              double(d.view.layout.total_bytes()) / 1e6 / secs, 0};
            const std::string key = e.series + "|" + e.label;
            if (!acc.count(key)) order.push_back(key);
            acc[key].push_back(p);
        }
    }
    std::vector<bench::rd_point> points;
    for (const auto& key : order) {
        const auto& v = acc[key];
        bench::rd_point m = v[0];
        m.bits = m.attn_error = m.attn_kl = m.snr_k = m.snr_v = m.encode_mb_s = 0;
        for (const auto& p : v)
            m.bits += p.bits / v.size(), m.attn_error += p.attn_error / v.size(), m.attn_kl += p.attn_kl / v.size(),
                m.snr_k += p.snr_k / v.size(), m.snr_v += p.snr_v / v.size(), m.encode_mb_s += p.encode_mb_s / v.size();
        points.push_back(m);
    }
    std::printf("\n| series | config | bits/elem | ratio vs bf16 | attn-out rel err | attn KL (nats) | SNR K dB | SNR V dB | enc+dec MB/s |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& p : points)
        std::printf("| %s | %s | %.3f | %.1fx | %.4f | %.2e | %.1f | %.1f | %.1f |\n", p.series.c_str(), p.label.c_str(), p.bits,
                    16.0 / p.bits, p.attn_error, p.attn_kl, p.snr_k, p.snr_v, p.encode_mb_s);
    // Goal check: bits of each seqkv series at every baseline's attention error.
    std::map<std::string, std::vector<bench::rd_point>> series;
    for (const auto& p : points)
        if (p.series != "baseline") series[p.series].push_back(p);
    std::printf("\n## bits at equal attention-output error (log-log interpolation; '-' = out of the measured range)\n\n| baseline | bits | error |");
    for (const auto& [name, _] : series) std::printf(" %s |", name.c_str());
    std::printf("\n|---|---:|---:|");
    for (std::size_t k = 0; k < series.size(); ++k) std::printf("---:|");
    std::printf("\n");
    for (const auto& b : points) {
        if (b.series != "baseline") continue;
        std::printf("| %s | %.3f | %.4f |", b.label.c_str(), b.bits, b.attn_error);
        for (const auto& [name, s] : series) {
            const double bits = bench::bits_at_error(s, b.attn_error);
            if (bits < 0) std::printf(" - |");
            else std::printf(" %.3f (%.2fx) |", bits, bits / b.bits);
        }
        std::printf("\n");
    }
    if (!svg.empty() && !timings_only) {
        if (const auto parent = fs::path(svg).parent_path(); !parent.empty()) fs::create_directories(parent);
        const bool ok = bench::write_rd_svg(svg, points, "seqkv lossy: bits/element vs attention-output error (" +
                                                             std::to_string(dumps.size()) + " real KV dumps)");
        std::printf("\nSVG plot: %s%s\n", svg.c_str(), ok ? "" : " (FAILED to write)");
    }
    if (rd_only) return 0;

    // Timings (first dump): encode and decode throughput in MB/s of the original cache.
    const dump& d = *dumps[0];
    for (const char* preset : {"kivi2", "turbo3.5", "seqkv-step:0.5"}) {
        const lossy_model_info m{d.rope_theta, d.view.layout.head_dim, nullptr, d.rope_interleaved};
        auto codec = std::make_shared<lossy_runtime_codec>(lossy_preset(preset, m));
        const std::uint64_t T = std::min<std::uint64_t>(d.view.layout.tokens, g_chunk_tokens);
        chunk_input in{&d.view, 0, T, std::span(d.ids).first(T), {}};
        const double bytes = double(d.view.layout.elements_per_token() * T * dtype_size(d.view.layout.type));
        benchmark::RegisterBenchmark((std::string("encode/") + preset).c_str(), [codec, in, bytes](benchmark::State& st) {
            for (auto _ : st) benchmark::DoNotOptimize(codec->encode(in));
            st.SetBytesProcessed(std::int64_t(bytes) * st.iterations());
        })->Unit(benchmark::kMillisecond);
        const byte_vector payload = codec->encode(in);
        benchmark::RegisterBenchmark((std::string("decode/") + preset).c_str(), [codec, in, payload, bytes, &d, T](benchmark::State& st) {
            chunk_input side = in;
            side.cache = nullptr;
            chunk_buffer out = chunk_buffer::for_layout(d.view.layout, T);
            for (auto _ : st) codec->decode(payload, side, out);
            st.SetBytesProcessed(std::int64_t(bytes) * st.iterations());
        })->Unit(benchmark::kMillisecond);
    }
    int bargc = int(rest.size());
    benchmark::Initialize(&bargc, rest.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
