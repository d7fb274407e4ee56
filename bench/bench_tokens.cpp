// Token mode against its floor and its price (issue "Layer 2 at the paper's floor"): for a model
// (the reference Llama forward pass over safetensors weights) and KV dumps of that model, prints
//   - closeness of the reference model to the dump's engine (bf16 elements equal, relative RMS
//     difference of K/V, bits/token of its quantized tables against the dump's cross-entropy);
//   - tokens mode: bits/token against the cross-entropy, ratio against the raw KV, encode and
//     decode tokens/s and decoded KV MB/s (decode = decode tokens + recompute KV, token by token);
//   - corrected mode (bit-exact restore of the dump's KV): correction bits/element and ratio;
//   - draft residuals (modes residual and residual_bounded) under the reference model and its int8
//     draft: residual bits/element, ratio, exactness / largest error and SNR, encode and decode speed;
//   - the lossless codec on the same KV, for scale;
//   - prefill (recompute) tokens/s and KV MB/s of the reference model at 1 and all threads;
//   - --hybrid (or --only-hybrid): the per-chunk hybrid (lossless stored codec vs the int12 draft's
//     residual vs recompute) calibrated on this machine (the draft's FLOP/s, the stored codec's and
//     the residual coder's decode MB/s), then swept over bandwidths for a decoder with this CPU's
//     compute and for one with --gpu-flops (default 1e14): choices, ratio, the cost model's decode
//     time of the hybrid against storing every chunk and against the residual in every chunk, and
//     (this CPU) the measured decode time beside the predicted one;
//   - --expected-kv K (or --only-expected-kv K): the "model-guided expected KV" predictor —
//     at every position the probability-weighted mean of the KV the reference model computes for
//     each of the top-K candidates of its next-token table (K forward passes per token, the true
//     token unknown) — against the model's and the int12 draft's KV of the true token, all coded
//     by the residual modes' coder over the whole dump (bits/element, forward passes per token);
//   - --roundtrip N: N tokens of sessions (the dumps' tokens cut into --session-tokens pieces,
//     then sequences sampled from the model) encoded and decoded with zero desyncs; with
//     --roundtrip-draft in the draft residual mode (the reference model's KV as the engine's, the
//     int12 draft predicting it, every chunk compared bit for bit).
//
//   seqkv_bench_tokens [--model DIR|FILE] [--threads N] [--tokens N] [--chunk N] [--roundtrip N]
//                      [--session-tokens N] [--only-roundtrip] [--roundtrip-draft] [--draft-bound B] [--only-draft]
//                      [--hybrid] [--only-hybrid] [--gpu-flops F] [--expected-kv K] [--only-expected-kv K]
//                      [dump.safetensors ...]
// Defaults: the committed tiny model and the dumps of data/kv/ whose shape is the model's.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/kv_files.hpp"
#include "seqkv/api.hpp"
#include "seqkv/codec/registry.hpp"
#include "seqkv/codec/tokens/token_codec.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/reference/llama.hpp"

using namespace seqkv;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

struct run_result {
    std::vector<byte_vector> payloads;
    std::vector<chunk_buffer> decoded;
    double encode_s = 0, decode_s = 0;
    std::uint64_t token_bits = 0, bytes = 0;
};

run_result round_trip(const tokens::token_codec& codec, const kv_cache_view& view, std::span<const std::int32_t> ids, std::uint64_t chunk,
                      bool keep_decoded = true) {
    run_result r;
    const std::uint64_t n = ids.size();
    std::any carry;
    auto t0 = clk::now();
    for (std::uint64_t b = 0; b < n; b += chunk) {
        const std::uint64_t e = std::min(n, b + chunk);
        chunk_input in{&view, b, e, ids.subspan(b, e - b), {}, nullptr, &carry, 0};
        r.payloads.push_back(codec.encode(in));
        const auto& p = r.payloads.back();
        r.bytes += p.size();
        r.token_bits += 8ull * tokens::token_stream_bytes(p);
    }
    r.encode_s = seconds_since(t0);
    std::any dcarry;
    t0 = clk::now();
    for (std::uint64_t b = 0, i = 0; b < n; b += chunk, ++i) {
        const std::uint64_t e = std::min(n, b + chunk);
        chunk_input in{&view, b, e, {}, {}, nullptr, &dcarry, 0};
        auto buf = chunk_buffer::for_layout(view.layout, e - b);
        codec.decode(r.payloads[i], in, buf);
        if (keep_decoded) r.decoded.push_back(std::move(buf));
    }
    r.decode_s = seconds_since(t0);
    return r;
}

/// The cost model's decode time of coded chunks (from their sizes and choices): what the hybrid's
/// encoder minimized, chunk by chunk.
double predicted_seconds(const run_result& r, const model::language_model& m, const tokens::hybrid_cost& cost, std::uint64_t chunk,
                         std::uint64_t tokens, double kv_bytes_per_token) {
    double t = 0;
    for (std::size_t i = 0; i < r.payloads.size(); ++i) {
        const auto c = *tokens::hybrid_choice_of(r.payloads[i]);
        const std::uint64_t b = i * chunk, n = std::min(chunk, tokens - b);
        const double kv = kv_bytes_per_token * double(n);
        if (c == tokens::hybrid_choice::stored) t += cost.seconds(double(r.payloads[i].size()), 0, kv, cost.stored_decode);
        else
            t += cost.seconds(double(r.payloads[i].size()), m.forward_flops(b, b + n), c == tokens::hybrid_choice::residual ? kv : 0,
                              cost.residual_decode);
    }
    return t;
}

/// Bits per element of the residual modes' coder (zigzag of the ord difference, as mode 2) coding
/// `view` against `prediction` (the same tokens, as one chunk).
double residual_bits_per_element(const kv_cache_view& view, const chunk_buffer& prediction) {
    const unsigned width = unsigned(dtype_size(view.layout.type)) * 8;
    const std::size_t es = width / 8;
    const std::uint32_t mask = width == 32 ? ~0u : (1u << width) - 1;
    byte_vector out;
    coding::range_encoder enc(out);
    tokens::detail::residual_coder coder(view.layout.head_dim);
    std::vector<std::uint8_t> block(prediction.block_bytes());
    double elements = 0;
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            gather_block(view.tensor(l, kind), 0, prediction.layout.tokens, block);
            const auto p = prediction.block(l, kind);
            coder.start_block();
            for (std::size_t i = 0, e = 0; i < block.size(); i += es, ++e) {
                const std::uint32_t d = (tokens::detail::ord(tokens::detail::load_bits(&block[i], width), width) -
                                         tokens::detail::ord(tokens::detail::load_bits(&p[i], width), width)) & mask;
                coder.encode(enc, e, zigzag(width == 32 ? std::int32_t(d) : std::int32_t(std::int16_t(std::uint16_t(d)))));
            }
            elements += double(block.size() / es);
        }
    enc.finish();
    return 8.0 * double(out.size()) / elements;
}

/// The expected KV over the top-k candidates of the model's table at every position (position 0:
/// the true token's KV, there is no table), rounded to `type`; the context is always the true prefix.
chunk_buffer expected_kv(const reference::llama_model& m, std::span<const std::int32_t> ids, std::size_t k, dtype type) {
    const auto shape = m.kv_shape();
    kv_layout f32 = shape;
    f32.type = dtype::f32;
    kv_layout out_layout = shape;
    out_layout.type = type;
    chunk_buffer out = chunk_buffer::for_layout(out_layout, ids.size());
    auto owned = m.session(1);
    auto& s = dynamic_cast<reference::llama_session&>(*owned);
    std::vector<std::uint32_t> table;
    auto keep = [&](std::size_t, std::span<const std::uint32_t> f) { table.assign(f.begin(), f.end()); };
    const std::size_t per_block = std::size_t(shape.kv_heads) * shape.head_dim;
    std::vector<double> mean(2 * shape.layers * per_block);
    chunk_buffer one = chunk_buffer::for_layout(f32, 1);
    auto put = [&](std::uint64_t t, auto&& value) {  // element (layer, kind, head, channel) of token t
        for (std::uint32_t l = 0; l < shape.layers; ++l)
            for (int kind = 0; kind < 2; ++kind) {
                auto dst = out.block(l, kind == 0 ? kv_kind::key : kv_kind::value);
                for (std::size_t h = 0; h < shape.kv_heads; ++h)
                    for (std::size_t c = 0; c < shape.head_dim; ++c)
                        store_from_float(dst.data(), type, (h * ids.size() + t) * shape.head_dim + c,
                                         value((std::size_t(l) * 2 + kind) * per_block + h * shape.head_dim + c, l, kind, h, c));
            }
    };
    for (std::uint64_t t = 0; t < ids.size(); ++t) {
        if (t > 0) {
            std::vector<std::uint32_t> order(table.size());
            for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
            std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(),
                              [&](std::uint32_t a, std::uint32_t b) { return table[a] > table[b] || (table[a] == table[b] && a < b); });
            std::fill(mean.begin(), mean.end(), 0.0);
            double weight = 0;
            for (std::size_t j = 0; j < k; ++j) {
                const std::int32_t cand = std::int32_t(order[j]);
                s.extend(std::span(&cand, 1), {});
                s.kv(t, t + 1, one);
                s.truncate(t);
                const double w = double(table[order[j]]);
                weight += w;
                for (std::uint32_t l = 0; l < shape.layers; ++l)
                    for (int kind = 0; kind < 2; ++kind) {
                        const auto b = one.block(l, kind == 0 ? kv_kind::key : kv_kind::value);
                        for (std::size_t e = 0; e < per_block; ++e)
                            mean[(std::size_t(l) * 2 + kind) * per_block + e] += w * double(load_as_float(b.data(), dtype::f32, e));
                    }
            }
            put(t, [&](std::size_t i, auto...) { return float(mean[i] / weight); });
        }
        s.extend(ids.subspan(t, 1), keep);
        if (t == 0) {
            s.kv(0, 1, one);
            put(0, [&](std::size_t, std::uint32_t l, int kind, std::size_t h, std::size_t c) {
                return load_as_float(one.block(l, kind == 0 ? kv_kind::key : kv_kind::value).data(), dtype::f32, h * shape.head_dim + c);
            });
        }
    }
    return out;
}

/// A view of the first n tokens of a cache (same tensors, fewer tokens).
kv_cache_view first_tokens(kv_cache_view v, std::uint64_t n) {
    v.layout.tokens = n;
    for (auto* ts : {&v.keys, &v.values})
        for (auto& t : *ts) t.tokens = n;
    return v;
}

/// Tokens sampled from the model (temperature 1, a fixed integer PRNG): text the model finds typical.
std::vector<std::int32_t> sample(const model::language_model& m, std::int32_t first, std::size_t n, std::uint64_t seed, unsigned threads) {
    auto s = m.session(threads);
    std::vector<std::int32_t> ids{first};
    std::vector<std::uint32_t> next;
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    while (ids.size() < n) {
        s->extend(std::span(ids).last(1), [&](std::size_t, std::span<const std::uint32_t> f) { next.assign(f.begin(), f.end()); });
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::uint32_t target = std::uint32_t(x >> 40) & (model::frequency_total - 1), cum = 0, t = 0;
        while (cum + next[t] <= target) cum += next[t++];
        ids.push_back(std::int32_t(t));
    }
    return ids;
}

}  // namespace

int main(int argc, char** argv) {
    std::filesystem::path model_path = std::filesystem::path(SEQKV_DATA_DIR) / "tiny-llama";
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    std::uint64_t max_tokens = 512, roundtrip = 0, session_tokens = 512, chunk = 128;
    bool only_roundtrip = false;
    float draft_bound = 0.05f;  // the bounded draft residual's |error| bound
    bool only_draft = false;    // only the draft-residual rows
    bool roundtrip_draft = false;  // --roundtrip in the draft residual mode instead of tokens mode
    bool hybrid = false, only_hybrid = false;
    std::size_t expected_k = 0;
    bool only_expected = false;
    double gpu_flops = 1e14;
    std::vector<std::filesystem::path> dumps;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--model") model_path = next();
        else if (a == "--threads") threads = unsigned(std::stoul(next()));
        else if (a == "--tokens") max_tokens = std::stoull(next());
        else if (a == "--roundtrip") roundtrip = std::stoull(next());
        else if (a == "--session-tokens") session_tokens = std::stoull(next());
        else if (a == "--chunk") chunk = std::stoull(next());
        else if (a == "--only-roundtrip") only_roundtrip = true;
        else if (a == "--draft-bound") draft_bound = std::stof(next());
        else if (a == "--only-draft") only_draft = true;
        else if (a == "--roundtrip-draft") roundtrip_draft = true;
        else if (a == "--hybrid") hybrid = true;
        else if (a == "--only-hybrid") hybrid = only_hybrid = true;
        else if (a == "--gpu-flops") gpu_flops = std::stod(next());
        else if (a == "--expected-kv") expected_k = std::stoull(next());
        else if (a == "--only-expected-kv") expected_k = std::stoull(next()), only_expected = true;
        else if (a.rfind("--", 0) == 0) {
            std::fprintf(stderr, "unknown option %s\n", a.c_str());
            return 2;
        } else dumps.emplace_back(a);
    }
    if (dumps.empty()) dumps = seqkv_bench::kv_input_files();
    auto t0 = clk::now();
    const auto m = reference::llama_model::load(model_path);
    const auto m8 = reference::llama_model::load(model_path, dtype::bf16, reference::weight_format::int8);
    const auto m12 = reference::llama_model::load(model_path, dtype::bf16, reference::weight_format::int12);
    const auto& c = m->config();
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    std::printf("model %s: %u layers, d %u, %u/%u heads x %u, ffn %u, vocab %u; loaded in %.1f s; %u threads\n", m->name().c_str(),
                c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_hidden, c.vocab_size, seconds_since(t0), threads);

    std::vector<std::int32_t> all_ids;  // for --roundtrip
    for (const auto& path : dumps) {
        auto file = io::safetensors_file::load(path);
        kv_cache_view full = io::kv_view(file);
        const auto shape = m->kv_shape();
        if (full.layout.layers != shape.layers || full.layout.kv_heads != shape.kv_heads || full.layout.head_dim != shape.head_dim) continue;
        const auto ids_opt = io::token_ids_of(file, full.layout.tokens);
        const auto nll_opt = io::nll_of(file, full.layout.tokens);
        if (!ids_opt) continue;
        const std::uint64_t n = std::min<std::uint64_t>(max_tokens, full.layout.tokens);
        const kv_cache_view view = first_tokens(full, n);
        const std::vector<std::int32_t> ids(ids_opt->begin(), ids_opt->begin() + std::ptrdiff_t(n));
        all_ids.insert(all_ids.end(), ids_opt->begin(), ids_opt->end());  // round trips use every token of the dumps
        if (only_roundtrip) continue;
        double ce = 0;
        if (nll_opt)
            for (std::uint64_t i = 1; i < n; ++i) ce += double((*nll_opt)[i]) / std::log(2.0);
        const double raw = double(view.layout.total_bytes());
        std::printf("\n%s: %llu tokens, %s KV %.2f MB, cross-entropy %.3f bits/token (dump's nll)\n", path.filename().c_str(),
                    (unsigned long long)n, dtype_name(view.layout.type).data(), raw / 1e6, ce / double(n - 1));
        // Decoded chunks against the input: bit-exact?, largest |error|, SNR in dB.
        struct closeness {
            bool exact = true;
            double max_err = 0, snr_db = 0;
        };
        auto compare = [&](const run_result& r) {
            closeness c;
            double s2 = 0, e2 = 0;
            const std::size_t es = dtype_size(view.layout.type);
            for (std::size_t i = 0; i < r.decoded.size(); ++i)
                for (std::uint32_t l = 0; l < view.layout.layers; ++l)
                    for (auto kind : {kv_kind::key, kv_kind::value}) {
                        std::vector<std::uint8_t> want(r.decoded[i].block_bytes());
                        const std::uint64_t b = i * chunk;
                        gather_block(view.tensor(l, kind), b, b + r.decoded[i].layout.tokens, want);
                        const auto got = r.decoded[i].block(l, kind);
                        c.exact = c.exact && std::equal(got.begin(), got.end(), want.begin());
                        for (std::size_t j = 0; j < want.size(); j += es) {
                            const double x = load_as_float(&want[j], view.layout.type, 0), y = load_as_float(&got[j], view.layout.type, 0);
                            c.max_err = std::max(c.max_err, std::fabs(x - y)), s2 += x * x, e2 += (x - y) * (x - y);
                        }
                    }
            c.snr_db = e2 > 0 ? 10 * std::log10(s2 / e2) : INFINITY;
            return c;
        };
        if (expected_k > 0) {
            if (expected_k > m->vocab_size()) throw usage_error("--expected-kv: more candidates than the vocabulary");
            auto own_kv = [&](const reference::llama_model& dm) {
                auto s = dm.session(threads);
                s->extend(ids, {});
                auto kv = chunk_buffer::for_layout(view.layout, n);
                s->kv(0, n, kv);
                return kv;
            };
            std::printf("  predictors of the dump's KV, coded by the residual coder (bits/element; forward passes per token):\n");
            std::printf("    reference f32, true token: %.3f (1, batched)\n", residual_bits_per_element(view, own_kv(*m)));
            std::printf("    int12 draft, true token:   %.3f (1, batched)\n", residual_bits_per_element(view, own_kv(*m12)));
            for (std::size_t k : {std::size_t(1), expected_k}) {
                t0 = clk::now();
                const auto e = expected_kv(*m, ids, k, view.layout.type);
                const double dt = seconds_since(t0);
                std::printf("    expected KV over the top-%zu candidates (reference f32): %.3f (%zu + 1, token by token: %.1f tokens/s)\n", k,
                            residual_bits_per_element(view, e), k, double(n) / dt);
                if (k == expected_k) break;
            }
            if (only_expected) continue;
        }
        if (hybrid) {
            // Calibration on this machine (one thread): the int12 draft's FLOP/s (a batched prefill),
            // the stored codec's and the residual coder's decode speed (all-stored and all-residual runs).
            const auto stored = std::make_shared<const any_chunk_codec>(make_codec(lossless_config()));
            auto codec_for = [&](tokens::hybrid_cost cost) { return tokens::token_codec(m12, tokens::mode::hybrid, 1, 0, stored, cost); };
            auto cost_of = [](double bw, double compute, const tokens::hybrid_cost& base) {
                tokens::hybrid_cost k = base;
                k.bandwidth = float(bw), k.compute = float(compute);
                return k;
            };
            auto s = m12->session(1);
            t0 = clk::now();
            s->extend(ids, {});
            const double flops_s = m12->forward_flops(0, n) / seconds_since(t0);
            const tokens::hybrid_cost defaults;
            const auto all_stored = round_trip(codec_for(cost_of(INFINITY, 1, defaults)), view, ids, chunk);
            const auto all_residual = round_trip(codec_for(cost_of(1, INFINITY, defaults)), view, ids, chunk);
            if (!compare(all_stored).exact || !compare(all_residual).exact) {
                std::printf("  hybrid: NOT EXACT\n");
                return 1;
            }
            tokens::hybrid_cost cpu = defaults;
            cpu.compute = float(flops_s);
            cpu.stored_decode = float(raw / all_stored.decode_s);
            cpu.residual_decode = float(raw / std::max(1e-9, all_residual.decode_s - m12->forward_flops(0, n) / flops_s));
            std::printf("  hybrid calibration (1 thread): int12 draft %.1f GFLOP/s, stored (lossless) decode %.0f MB/s, residual coder "
                        "decode %.0f MB/s; all stored %.2fx, all residual %.2fx\n",
                        flops_s / 1e9, cpu.stored_decode / 1e6, cpu.residual_decode / 1e6, raw / double(all_stored.bytes),
                        raw / double(all_residual.bytes));
            const double per_token = raw / double(n);
            for (const double compute : {double(cpu.compute), gpu_flops}) {
                std::printf("  decoder at %.3g GFLOP/s:\n", compute / 1e9);
                for (const double bw : {1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9}) {
                    const auto k = cost_of(bw, compute, cpu);
                    const auto r = round_trip(codec_for(k), view, ids, chunk, compute == double(cpu.compute));
                    unsigned counts[3] = {0, 0, 0};
                    for (const auto& p : r.payloads) ++counts[int(*tokens::hybrid_choice_of(p))];
                    const double t = predicted_seconds(r, *m12, k, chunk, n, per_token);
                    std::printf("    %6.0f MB/s: %u stored / %u residual / %u recompute, ratio %.2fx; predicted decode %.3f s "
                                "(all stored %.3f s, all residual %.3f s)",
                                bw / 1e6, counts[0], counts[1], counts[2], raw / double(r.bytes), t,
                                predicted_seconds(all_stored, *m12, k, chunk, n, per_token),
                                predicted_seconds(all_residual, *m12, k, chunk, n, per_token));
                    if (compute == double(cpu.compute))
                        std::printf("; measured %.3f s (decode %.3f s + transfer %.3f s)", r.decode_s + double(r.bytes) / bw, r.decode_s,
                                    double(r.bytes) / bw);
                    std::printf("\n");
                    if (!r.decoded.empty() && !compare(r).exact) return 1;
                }
            }
            if (only_hybrid) continue;
        }

        // Prefill (recompute) speed and closeness to the dump.
        for (unsigned th : {1u, threads}) {
            if (only_draft) break;
            auto s = m->session(th);
            t0 = clk::now();
            s->extend(ids, {});
            const double dt = seconds_since(t0);
            std::printf("  prefill (recompute) %u thread%s: %.1f tokens/s, %.1f MB/s of KV\n", th, th == 1 ? "" : "s", double(n) / dt,
                        raw / dt / 1e6);
            if (th == threads) break;
        }
        if (!only_draft) {
            auto s = m->session(threads);
            double ideal = 0;
            s->extend(ids, [&](std::size_t i, std::span<const std::uint32_t> f) {
                if (i + 1 < n) ideal -= std::log2(double(f[std::size_t(ids[i + 1])]) / model::frequency_total);
            });
            auto ours = chunk_buffer::for_layout(view.layout, n);
            s->kv(0, n, ours);
            std::uint64_t equal = 0, count = 0;
            double d2 = 0, r2 = 0;
            std::vector<std::uint8_t> block(ours.block_bytes());
            const std::size_t es = dtype_size(view.layout.type);
            for (std::uint32_t l = 0; l < view.layout.layers; ++l)
                for (auto kind : {kv_kind::key, kv_kind::value}) {
                    gather_block(view.tensor(l, kind), 0, n, block);
                    const auto mine = ours.block(l, kind);
                    for (std::size_t i = 0; i < block.size(); i += es, ++count) {
                        equal += std::memcmp(&block[i], &mine[i], es) == 0;
                        const double a = load_as_float(&block[i], view.layout.type, 0), b = load_as_float(&mine[i], view.layout.type, 0);
                        d2 += (a - b) * (a - b), r2 += a * a;
                    }
                }
            std::printf("  reference model vs dump: %.2f %% of elements equal, relative RMS difference %.2e; its tables cost %.3f bits/token "
                        "(%.4f x the dump's cross-entropy)\n",
                        100.0 * double(equal) / double(count), std::sqrt(d2 / r2), ideal / double(n - 1), ce > 0 ? ideal / ce : 0.0);
        }
        // Tokens mode.
        if (!only_draft) {
            tokens::token_codec codec(m, tokens::mode::tokens, 1);
            const auto r = round_trip(codec, view, ids, chunk, false);
            std::printf("  tokens mode (1 thread): %.3f bits/token in the token stream (%.4f x cross-entropy), %.1f bytes/chunk of headers; "
                        "ratio %.0fx vs raw KV\n",
                        double(r.token_bits) / double(n), ce > 0 ? double(r.token_bits) / ce : 0.0,
                        double(r.bytes * 8 - r.token_bits) / 8.0 / double(r.payloads.size()), raw / double(r.bytes));
            std::printf("    encode %.1f tokens/s; decode %.1f tokens/s = %.2f MB/s of KV\n", double(n) / r.encode_s, double(n) / r.decode_s,
                        raw / r.decode_s / 1e6);
        }
        // Corrected mode.
        if (!only_draft) {
            tokens::token_codec codec(m, tokens::mode::corrected, threads);
            const auto r = round_trip(codec, view, ids, chunk);
            const bool exact = compare(r).exact;
            const double elements = double(view.layout.elements_per_token()) * double(n);
            std::printf("  corrected mode (%u threads): %s; correction %.3f bits/element; ratio %.2fx vs raw KV; decode %.2f MB/s of KV\n",
                        threads, exact ? "bit-exact" : "NOT EXACT", double(r.bytes * 8 - r.token_bits) / elements, raw / double(r.bytes),
                        raw / r.decode_s / 1e6);
            if (!exact) return 1;
        }
        // Draft-model residuals: ids stored plainly, the chunk recomputed in one batched pass by the
        // model (f32: the reference model itself; int8: its draft) and the input coded against it.
        for (const auto& [label, dm] : {std::pair{"reference f32", m}, std::pair{"draft int12", m12}, std::pair{"draft int8", m8}}) {
            for (unsigned th : {1u, threads}) {
                auto s = dm->session(th);
                t0 = clk::now();
                s->extend(ids, {});
                const double dt = seconds_since(t0);
                std::printf("  %s prefill, %u thread%s: %.1f tokens/s = %.2f MB/s of KV\n", label, th, th == 1 ? "" : "s", double(n) / dt,
                            raw / dt / 1e6);
                if (th == threads) break;
            }
            const double elements = double(view.layout.elements_per_token()) * double(n);
            for (const float bound : {0.0f, draft_bound}) {
                tokens::token_codec codec(dm, bound == 0 ? tokens::mode::residual : tokens::mode::residual_bounded, 1, bound);
                const auto r = round_trip(codec, view, ids, chunk);
                const auto c = compare(r);
                std::printf("  %s residual%s (1 thread): %s, max |error| %.4g, SNR %.1f dB; residual %.3f bits/element; ratio %.2fx vs raw KV; "
                            "encode %.2f MB/s, decode %.1f tokens/s = %.2f MB/s of KV\n",
                            label, bound == 0 ? "" : (" within " + std::to_string(bound)).c_str(), c.exact ? "bit-exact" : "lossy", c.max_err,
                            c.snr_db, double(r.bytes * 8 - r.token_bits) / elements, raw / double(r.bytes), raw / r.encode_s / 1e6,
                            double(n) / r.decode_s, raw / r.decode_s / 1e6);
                if (bound == 0 && !c.exact) return 1;
            }
        }
        // The lossless codec, for scale.
        {
            compress_options o;
            o.threads = threads;
            t0 = clk::now();
            const auto f = compress(view, o, ids);
            const double dt = seconds_since(t0);
            std::printf("  lossless codec (for scale): ratio %.2fx, encode %.1f MB/s\n", raw / double(f.size()), raw / dt / 1e6);
        }
    }

    if (roundtrip > 0) {
        if (all_ids.empty()) all_ids.push_back(1);
        std::printf("\nround trips: %llu tokens in sessions of %llu (chunks of %llu tokens), %s\n", (unsigned long long)roundtrip,
                    (unsigned long long)session_tokens, (unsigned long long)chunk,
                    roundtrip_draft ? "draft residual (int12 draft predicting the reference model's bf16 KV, bit-exact)" : "tokens mode");
        const auto shape = m->kv_shape();
        std::uint64_t done = 0, sessions = 0, bits = 0;
        double enc = 0, dec = 0, gen = 0, draft_elements = 0;
        std::size_t offset = 0;
        while (done < roundtrip) {
            const std::uint64_t n = std::min(session_tokens, roundtrip - done);
            std::vector<std::int32_t> ids;
            if (offset + n <= all_ids.size()) {
                ids.assign(all_ids.begin() + std::ptrdiff_t(offset), all_ids.begin() + std::ptrdiff_t(offset + n));
                offset += n;
            } else {
                t0 = clk::now();
                ids = sample(*m, all_ids[sessions % all_ids.size()], n, sessions + 1, threads);
                gen += seconds_since(t0);
            }
            kv_layout l = shape;
            l.tokens = n;
            l.type = dtype::bf16;
            std::vector<std::uint8_t> zeros(std::size_t(l.elements_per_tensor()) * 2);
            kv_cache_view view{l, {}, {}};
            for (std::uint32_t i = 0; i < l.layers; ++i)
                for (auto* ts : {&view.keys, &view.values})
                    ts->push_back({zeros.data(), l.type, l.kv_heads, n, l.head_dim, kv_strides::head_major(n, l.head_dim)});
            if (roundtrip_draft) {  // the engine's KV: the reference model's, in bf16; coded against the int12 draft
                auto engine = m->session(threads);
                engine->extend(ids, {});
                auto kv = chunk_buffer::for_layout(l, n);
                engine->kv(0, n, kv);
                const kv_cache_view ev = view_of(kv);
                tokens::token_codec codec(m12, tokens::mode::residual, threads);
                const auto r = round_trip(codec, ev, ids, chunk, true);  // hashes checked by the decoder
                std::uint64_t at = 0;
                for (const auto& c : r.decoded) {  // and every decoded chunk against the input, bit for bit
                    for (std::uint32_t li = 0; li < l.layers; ++li)
                        for (auto kind : {kv_kind::key, kv_kind::value}) {
                            std::vector<std::uint8_t> want(c.block_bytes());
                            gather_block(ev.tensor(li, kind), at, at + c.layout.tokens, want);
                            const auto got = c.block(li, kind);
                            if (!std::equal(got.begin(), got.end(), want.begin())) {
                                std::printf("  NOT EXACT: session %llu\n", (unsigned long long)sessions);
                                return 1;
                            }
                        }
                    at += c.layout.tokens;
                }
                enc += r.encode_s, dec += r.decode_s, bits += r.bytes * 8;
                draft_elements += double(l.elements_per_token()) * double(n);
            } else {
                tokens::token_codec codec(m, tokens::mode::tokens, threads);
                const auto r = round_trip(codec, view, ids, chunk, false);  // decode checks ids and KV hashes: a desync throws
                enc += r.encode_s, dec += r.decode_s, bits += r.token_bits;
            }
            done += n, ++sessions;
            if (sessions % 10 == 0)
                std::printf("  ... %llu sessions, %llu tokens, %.3f bits/token so far\n", (unsigned long long)sessions,
                            (unsigned long long)done, double(bits) / double(done));
            std::fflush(stdout);
        }
        std::printf("  %llu sessions, %llu tokens, 0 desyncs; %.3f bits/token%s; encode %.1f tokens/s, decode %.1f tokens/s "
                    "(sampling sessions took %.1f s)\n",
                    (unsigned long long)sessions, (unsigned long long)done, double(bits) / double(done),
                    roundtrip_draft ? (" (" + std::to_string(double(bits) / draft_elements) + " bits/element, every chunk bit-exact)").c_str() : "",
                    double(done) / enc, double(done) / dec, gen);
    }
    return 0;
}
