// Entropy-coding stage bench: seqkv interleaved rANS (scalar and AVX2 decode), the adaptive range
// coder (static table, Fenwick adaptive model, power-of-two adaptive model, adaptive binary tree), zstd -3 / -19 and lz4 on the same symbol streams from a real KV dump (bf16 exponent
// bytes, 8-bit and 16-bit quantized values). MB/s counts symbol bytes (u8 = 1, u16 = 2) per
// second on one core; ratio = symbol bytes / coded bytes. Data: $SEQKV_KV_FILE or the first
// data/kv/*.safetensors (synthetic fallback, labelled, if there is none).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/coding_kv_streams.hpp"
#include "seqkv/coding/coding.hpp"
#include "seqkv_peers.hpp"

namespace {

using seqkv::byte_vector;
namespace coding = seqkv::coding;

/// One coder bound to one stream: compress() codes the stream, decompress() decodes into an
/// internal buffer, matches() compares that buffer with the stream.
struct bound_codec {
    std::function<byte_vector()> compress;
    std::function<void(const byte_vector&)> decompress;
    std::function<bool()> matches;
};

struct stream {
    std::string name;
    std::vector<std::uint8_t> bytes;    // the symbols as raw little-endian bytes (what peers see)
    std::vector<std::uint16_t> wide;    // the symbols as u16 (for 16-bit streams and the range coder)
    bool is_wide = false;
};

bound_codec make_rans(const stream& s, coding::rans::decode_path path) {
    if (!s.is_wide) {
        auto out = std::make_shared<std::vector<std::uint8_t>>(s.bytes.size());
        return {[&s] { return coding::encode_bytes(s.bytes); },
                [out, path](const byte_vector& c) { coding::decode_bytes(c, {}, *out, path); },
                [out, &s] { return *out == s.bytes; }};
    }
    auto out = std::make_shared<std::vector<std::uint16_t>>(s.wide.size());
    return {[&s] { return coding::encode_block(s.wide, {}, 65536, 1); },
            [out, path](const byte_vector& c) { coding::decode_block(c, {}, *out, path); },
            [out, &s] { return *out == s.wide; }};
}

bound_codec make_range(const stream& s) {
    auto out = std::make_shared<std::vector<std::uint16_t>>(s.wide.size());
    const std::uint32_t alphabet = s.is_wide ? 65536 : 256;
    return {[&s, alphabet] { return coding::encode_range_block(s.wide, {}, alphabet, 1); },
            [out](const byte_vector& c) { coding::decode_range_block(c, {}, *out); },
            [out, &s] { return *out == s.wide; }};
}

/// Range coder with the power-of-two-total adaptive model (pow2_adaptive_model).
bound_codec make_range_fast(const stream& s) {
    auto out = std::make_shared<std::vector<std::uint16_t>>(s.wide.size());
    const std::uint32_t alphabet = s.is_wide ? 65536 : 256;
    return {[&s, alphabet] { return coding::encode_range_block<coding::pow2_adaptive_model>(s.wide, {}, alphabet, 1); },
            [out](const byte_vector& c) { coding::decode_range_block<coding::pow2_adaptive_model>(c, {}, *out); },
            [out, &s] { return *out == s.wide; }};
}

/// Adaptive binary range coding: each symbol as a binary tree of adaptive_bit_model decisions
/// (MSB first, one model per tree node: 2^bits models).
bound_codec make_range_binary(const stream& s) {
    auto out = std::make_shared<std::vector<std::uint16_t>>(s.wide.size());
    const unsigned bits = s.is_wide ? 16 : 8;
    return {[&s, bits] {
                byte_vector c;
                coding::range_encoder enc(c);
                std::vector<coding::adaptive_bit_model> models(std::size_t{1} << bits);
                for (auto symbol : s.wide) {
                    std::uint32_t node = 1;
                    for (unsigned b = bits; b-- > 0;) {
                        const unsigned bit = (symbol >> b) & 1u;
                        enc.encode_bit(models[node], bit);
                        node = 2 * node + bit;
                    }
                }
                enc.finish();
                return c;
            },
            [out, bits](const byte_vector& c) {
                coding::range_decoder dec(c);
                std::vector<coding::adaptive_bit_model> models(std::size_t{1} << bits);
                for (auto& symbol : *out) {
                    std::uint32_t node = 1;
                    for (unsigned b = 0; b < bits; ++b) node = 2 * node + dec.decode_bit(models[node]);
                    symbol = static_cast<std::uint16_t>(node - (1u << bits));
                }
            },
            [out, &s] { return *out == s.wide; }};
}

/// Range coder with one static 15-bit table per stream (serialized in front, counted in the ratio).
bound_codec make_range_static(const stream& s) {
    auto out = std::make_shared<std::vector<std::uint16_t>>(s.wide.size());
    const std::uint32_t alphabet = s.is_wide ? 65536 : 256;
    constexpr unsigned precision = 15;
    return {[&s, alphabet] {
                const auto table = coding::frequency_table::from_counts(coding::histogram<std::uint16_t>(s.wide, alphabet), precision);
                byte_vector c;
                seqkv::byte_writer w(c);
                table.serialize(w);
                coding::range_encoder enc(c);
                for (auto symbol : s.wide) coding::encode_symbol(enc, table, symbol);
                enc.finish();
                return c;
            },
            [out, alphabet](const byte_vector& c) {
                seqkv::byte_reader r(c);
                const auto table = coding::frequency_table::deserialize(r, alphabet, precision);
                const coding::static_symbol_lookup lookup(table);
                coding::range_decoder dec(r.get_bytes(r.remaining()));
                for (auto& symbol : *out) symbol = static_cast<std::uint16_t>(coding::decode_symbol(dec, lookup));
            },
            [out, &s] { return *out == s.wide; }};
}

bound_codec make_zstd(const stream& s, int level) {
    auto out = std::make_shared<std::vector<std::uint8_t>>(s.bytes.size());
    return {[&s, level] { return seqkv::peers::zstd_compress(s.bytes, level); },
            [out](const byte_vector& c) { seqkv::peers::zstd_decompress(c, *out); }, [out, &s] { return *out == s.bytes; }};
}

bound_codec make_lz4(const stream& s) {
    auto out = std::make_shared<std::vector<std::uint8_t>>(s.bytes.size());
    return {[&s] { return seqkv::peers::lz4_compress(s.bytes); }, [out](const byte_vector& c) { seqkv::peers::lz4_decompress(c, *out); },
            [out, &s] { return *out == s.bytes; }};
}

void set_counters(benchmark::State& state, const stream& s, std::size_t coded_bytes) {
    const double symbol_bytes = static_cast<double>(s.bytes.size());
    state.counters["MB/s"] = benchmark::Counter(symbol_bytes / 1e6, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["ratio"] = symbol_bytes / static_cast<double>(coded_bytes);
    state.counters["bits/sym"] = 8.0 * static_cast<double>(coded_bytes) / static_cast<double>(s.is_wide ? s.wide.size() : s.bytes.size());
}

void bench_encode(benchmark::State& state, const stream* s, std::function<bound_codec(const stream&)> make) {
    const bound_codec codec = make(*s);
    std::size_t coded = 0;
    for (auto _ : state) {
        byte_vector c = codec.compress();
        coded = c.size();
        benchmark::DoNotOptimize(c.data());
    }
    set_counters(state, *s, coded);
}

void bench_decode(benchmark::State& state, const stream* s, std::function<bound_codec(const stream&)> make) {
    const bound_codec codec = make(*s);
    const byte_vector coded = codec.compress();
    for (auto _ : state) {
        codec.decompress(coded);
        benchmark::ClobberMemory();
    }
    if (!codec.matches()) state.SkipWithError("decoded symbols differ from the input");
    set_counters(state, *s, coded.size());
}

std::vector<stream>& streams() {
    static std::vector<stream> all = [] {
        const auto data = seqkv_bench::make_coding_streams();
        std::printf("coding bench data: %s, %zu bf16 values\n", data.source.c_str(), data.bf16.size());
        std::printf("rANS SIMD decode available: %s\n", coding::rans::simd_decode_available() ? "yes (AVX2)" : "no");
        std::vector<stream> out;
        auto add_bytes = [&](std::string name, const std::vector<std::uint8_t>& symbols) {
            stream s{std::move(name), symbols, std::vector<std::uint16_t>(symbols.begin(), symbols.end()), false};
            out.push_back(std::move(s));
        };
        add_bytes("bf16_exponent", data.exponents);
        add_bytes("residual_u8", data.residual8);
        stream wide{"residual_u16", std::vector<std::uint8_t>(2 * data.residual16.size()), data.residual16, true};
        std::memcpy(wide.bytes.data(), data.residual16.data(), wide.bytes.size());  // little-endian host
        out.push_back(std::move(wide));
        return out;
    }();
    return all;
}

void register_all() {
    using maker = std::function<bound_codec(const stream&)>;
    for (const stream& s : streams()) {
        const std::vector<std::pair<std::string, maker>> codecs = {
            {"rans_scalar", [](const stream& x) { return make_rans(x, coding::rans::decode_path::scalar); }},
            {"rans_simd", [](const stream& x) { return make_rans(x, coding::rans::decode_path::simd); }},
            {"range_static", make_range_static},
            {"range_adaptive", make_range},
            {"range_adaptive_fast", make_range_fast},
            {"range_binary", make_range_binary},
            {"zstd-3", [](const stream& x) { return make_zstd(x, 3); }},
            {"zstd-19", [](const stream& x) { return make_zstd(x, 19); }},
            {"lz4", make_lz4},
        };
        for (const auto& [name, make] : codecs) {
            if (name != "rans_simd")  // rANS encoding is the same for both decode paths
                benchmark::RegisterBenchmark(("encode/" + s.name + "/" + (name == "rans_scalar" ? "rans" : name)).c_str(),
                                             bench_encode, &s, make)->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(("decode/" + s.name + "/" + name).c_str(), bench_decode, &s, make)
                ->Unit(benchmark::kMillisecond);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
