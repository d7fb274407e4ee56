// The reference model (seqkv/reference/llama.hpp): deterministic math, batched == incremental ==
// threaded bits, and closeness to the PyTorch dumps of the committed tiny fixture model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "seqkv/model/det_math.hpp"
#include "seqkv/model/token_model.hpp"
#include "seqkv/reference/llama.hpp"

using namespace seqkv;

namespace {

const std::filesystem::path data_dir = SEQKV_DATA_DIR;

std::vector<std::int32_t> dump_tokens(const io::safetensors_file& f, std::size_t n) {
    const auto& t = f.at("tokens");
    std::vector<std::int32_t> ids(std::min<std::size_t>(n, t.element_count()));
    std::memcpy(ids.data(), t.bytes.data(), ids.size() * 4);
    return ids;
}

std::shared_ptr<const reference::llama_model> tiny() {
    static auto m = reference::llama_model::load(data_dir / "tiny-llama");
    return m;
}

chunk_buffer kv_of(const model::model_session& s, const model::language_model& m, std::uint64_t b, std::uint64_t e) {
    auto out = chunk_buffer::for_layout(m.kv_shape(), e - b);
    s.kv(b, e, out);
    return out;
}

}  // namespace

TEST(DetMath, ExpWithinTwoUlpOfCorrectlyRounded) {
    // Every 97th float in [-87, 88]: |exp_f32(x) − exp(x)| <= 2 ulp of the fp32 result.
    const std::uint32_t lo = std::bit_cast<std::uint32_t>(1e-30f);
    int checked = 0;
    for (float x = -87.0f; x <= 88.0f; x = std::nextafter(x + 0.0123f, 100.0f)) {
        const double want = std::exp(double(x));
        const float got = model::exp_f32(x);
        const double ulp = double(std::nextafter(float(want), INFINITY)) - double(float(want));
        ASSERT_LE(std::fabs(double(got) - want), 2.0 * ulp) << "x = " << x;
        ++checked;
    }
    (void)lo;
    EXPECT_GT(checked, 10000);
    EXPECT_EQ(model::exp_f32(0.0f), 1.0f);
    EXPECT_EQ(model::exp_f32(std::numeric_limits<float>::quiet_NaN()), model::exp_f32(-87.0f));
    EXPECT_EQ(model::exp_f32(-1000.0f), model::exp_f32(-87.0f));
    EXPECT_TRUE(std::isfinite(model::exp_f32(1000.0f)));
}

TEST(DetMath, ThisBuildDoesNotContract) { EXPECT_FALSE(model::contracts_multiply_add()); }

TEST(Distribution, EveryTokenNonzeroAndTotalExact) {
    std::vector<float> logits(1000);
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)) * 12.0);
    logits[17] = 40.0f;  // a near-certain token
    std::vector<std::uint32_t> f(logits.size());
    model::quantize_distribution(logits, f);
    std::uint64_t total = 0;
    for (auto v : f) {
        EXPECT_GE(v, 1u);
        total += v;
    }
    EXPECT_EQ(total, model::frequency_total);
    EXPECT_GT(f[17], model::frequency_total - 2000);
    // A larger logit never gets a smaller frequency (apart from the mode's remainder).
    for (std::size_t i = 0; i < logits.size(); ++i)
        for (std::size_t j = 0; j < 30; ++j)
            if (logits[i] > logits[j] && i != 17 && j != 17) {
                EXPECT_GE(f[i], f[j]);
            }
    logits[3] = NAN;
    EXPECT_THROW(model::quantize_distribution(logits, f), resource_error);
}

TEST(ReferenceLlama, TinyModelMatchesThePyTorchDumpWithinBf16Rounding) {
    const auto m = tiny();
    const auto dump = io::safetensors_file::load(data_dir / "kv" / "gpl3.safetensors");
    const auto ids = dump_tokens(dump, 512);
    auto s = m->session(2);
    double bits = 0;
    s->extend(ids, [&](std::size_t i, std::span<const std::uint32_t> f) {
        if (i + 1 < ids.size()) bits += -std::log2(double(f[std::size_t(ids[i + 1])]) / model::frequency_total);
    });
    const auto kv = kv_of(*s, *m, 0, ids.size());
    // K and V: our fp32 values rounded to bf16 against PyTorch's (fp32 forward of the same bf16
    // weights, other summation order): equal, or one bf16 step apart where the fp32 values straddle
    // a rounding boundary; the relative RMS difference stays far below bf16's own 2^-9 step.
    for (std::uint32_t l = 0; l < m->config().n_layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            const auto& ref = dump.at("layer." + std::to_string(l) + (kind ? ".v" : ".k"));
            const auto ours = kv.block(l, kind ? kv_kind::value : kv_kind::key);
            ASSERT_EQ(ref.bytes.size(), ours.size());
            std::size_t equal = 0, n = ours.size() / 2;
            double diff2 = 0, ref2 = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint16_t a = std::uint16_t(ours[2 * i] | ours[2 * i + 1] << 8), b = std::uint16_t(ref.bytes[2 * i] | ref.bytes[2 * i + 1] << 8);
                equal += a == b;
                const double x = bf16_to_float(a), y = bf16_to_float(b);
                diff2 += (x - y) * (x - y), ref2 += y * y;
            }
            EXPECT_GT(double(equal) / double(n), 0.9) << "layer " << l << " kind " << kind;
            EXPECT_LT(std::sqrt(diff2 / ref2), 1e-3) << "layer " << l << " kind " << kind;
        }
    // Bits per token under the quantized distribution against the dump's cross-entropy (nll in nats).
    const auto& nll_t = dump.at("nll");
    std::vector<float> nll(nll_t.element_count());
    std::memcpy(nll.data(), nll_t.bytes.data(), nll.size() * 4);
    double ce = 0;
    for (std::size_t i = 1; i < ids.size(); ++i) ce += double(nll[i]) / std::log(2.0);
    EXPECT_NEAR(bits / ce, 1.0, 0.005) << "ours " << bits / 511 << " bits/token, PyTorch " << ce / 511;
}

TEST(ReferenceLlama, BatchedIncrementalAndThreadedGiveTheSameBits) {
    const auto m = tiny();
    const auto dump = io::safetensors_file::load(data_dir / "kv" / "py311-textwrap.safetensors");
    const auto ids = dump_tokens(dump, 150);
    auto run = [&](unsigned threads, std::size_t step) {
        auto s = m->session(threads);
        std::vector<std::uint32_t> all;
        for (std::size_t b = 0; b < ids.size(); b += step)
            s->extend(std::span(ids).subspan(b, std::min(step, ids.size() - b)),
                      [&](std::size_t, std::span<const std::uint32_t> f) { all.insert(all.end(), f.begin(), f.end()); });
        const auto kv = kv_of(*s, *m, 0, ids.size());
        return std::make_pair(all, kv.bytes);
    };
    const auto ref = run(1, ids.size());
    EXPECT_EQ(ref.first.size(), ids.size() * m->vocab_size());
    for (auto [threads, step] : {std::pair<unsigned, std::size_t>{1, 1}, {3, 7}, {2, 64}, {4, 150}}) {
        const auto got = run(threads, step);
        EXPECT_TRUE(got.first == ref.first) << threads << " threads, step " << step;
        EXPECT_TRUE(got.second == ref.second) << threads << " threads, step " << step;
    }
}

// Seeding (assign_kv): a session given the model's own fp32 KV of a prefix continues with the
// same bits as the session that computed it (tables and KV), whether the prefix is appended or
// overwrites positions already computed; other KV moves what follows; bad ranges are refused.
TEST(ReferenceLlama, SeededKvContinuesLikeTheComputedContext) {
    const auto m = tiny();
    const auto dump = io::safetensors_file::load(data_dir / "kv" / "py311-textwrap.safetensors");
    const auto ids = dump_tokens(dump, 96);
    const auto prefix = std::span(ids).first(64), rest = std::span(ids).subspan(64);
    auto tail = [&](model::model_session& s) {
        std::vector<std::uint32_t> tables;
        s.extend(rest, [&](std::size_t, std::span<const std::uint32_t> f) { tables.insert(tables.end(), f.begin(), f.end()); });
        auto kv = chunk_buffer::for_layout(m->kv_shape(), rest.size());
        s.kv(64, 96, kv);
        return std::make_pair(tables, kv.bytes);
    };
    auto a = m->session(1);
    a->extend(prefix, {});
    kv_layout f32 = m->kv_shape();
    f32.type = dtype::f32;
    auto own = chunk_buffer::for_layout(f32, 64);
    a->kv(0, 64, own);
    const auto want = tail(*a);

    auto appended = m->session(2);
    appended->assign_kv(0, prefix, own);
    EXPECT_EQ(appended->length(), 64u);
    EXPECT_TRUE(tail(*appended) == want);

    auto overwritten = m->session(1);
    overwritten->extend(prefix.first(40), {});
    overwritten->assign_kv(0, prefix, own);  // positions 0..39 overwritten, 40..63 appended
    EXPECT_TRUE(tail(*overwritten) == want);

    // Other KV (the prefix's bf16 rounding) is what later tokens attend to: their KV moves.
    auto rounded = chunk_buffer::for_layout(m->kv_shape(), 64);
    a->kv(0, 64, rounded);
    auto seeded = m->session(1);
    seeded->assign_kv(0, prefix, rounded);
    EXPECT_FALSE(tail(*seeded).second == want.second);

    auto bad = m->session(1);
    EXPECT_THROW(bad->assign_kv(1, prefix, own), usage_error);                 // begin past the context
    EXPECT_THROW(bad->assign_kv(0, prefix.first(10), own), usage_error);       // ids and KV disagree
    const std::int32_t outside[1] = {std::int32_t(m->vocab_size())};
    EXPECT_THROW(bad->assign_kv(0, outside, chunk_buffer::for_layout(f32, 1)), usage_error);
    EXPECT_EQ(bad->length(), 0u);
}

// forward_flops: the sum of flops_per_token over the positions (context p + 1 at position p).
TEST(ReferenceLlama, ForwardFlopsSumsThePerTokenCost) {
    const auto m = tiny();
    double sum = 0;
    for (std::uint64_t p = 37; p < 101; ++p) sum += m->flops_per_token(p + 1, false);
    EXPECT_NEAR(m->forward_flops(37, 101), sum, 1e-9 * sum);  // the closed form vs the loop, double rounding only
    EXPECT_EQ(m->forward_flops(5, 5), 0.0);
    EXPECT_GT(m->forward_flops(1000, 1001), m->forward_flops(0, 1));  // attention grows with the context
}

TEST(ReferenceLlama, RejectsBadInput) {
    const auto m = tiny();
    auto s = m->session(1);
    const std::int32_t bad[] = {5, 1024};
    EXPECT_THROW(s->extend(bad, {}), usage_error);
    EXPECT_THROW(reference::llama_model::load(data_dir / "kv"), resource_error);  // no config.json
    EXPECT_THROW(reference::llama_model::load(data_dir / "kv" / "gpl3.safetensors"), resource_error);  // no config metadata
}

// The drafts' integer kernels: every kernel this CPU runs gives the scalar kernel's integers, at
// every length around the SIMD steps and the int32 lanes' flush points, at the largest magnitudes
// (where a lane would overflow without the flush) and on random values.
template <class W>
void expect_kernels_agree(W wmax) {
    const auto kernels = reference::detail::dot4_kernels<W>();
    ASSERT_GE(kernels.size(), 1u);
    std::uint64_t x = 0x243F6A8885A308D3ull;
    auto next = [&] { return x ^= x << 13, x ^= x >> 7, x ^= x << 17; };
    for (std::size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 223, 224, 225, 448, 576, 1536, 2047, 2048, 2049, 4100, 6000}) {
        for (int pattern = 0; pattern < 3; ++pattern) {
            std::vector<W> w(n);
            std::vector<std::int16_t> a(4 * n);
            for (std::size_t i = 0; i < n; ++i) {
                // 0: worst case (every product at its largest, one sign); 1: alternating signs; 2: random
                w[i] = pattern == 0 ? W(-wmax) : pattern == 1 ? W(i % 2 ? wmax : -wmax) : W(std::int64_t(next() % (2 * wmax + 1)) - wmax);
                for (int k = 0; k < 4; ++k)
                    a[k * n + i] = pattern == 0 ? std::int16_t(-32767) : pattern == 1 ? std::int16_t(k % 2 ? 32767 : -32767)
                                                                         : std::int16_t(std::int64_t(next() % 65535) - 32767);
            }
            const std::int16_t* xs[4] = {a.data(), a.data() + n, a.data() + 2 * n, a.data() + 3 * n};
            std::int64_t want[4];
            kernels[0].fn(w.data(), xs, n, want);
            if (pattern == 0) {
                EXPECT_EQ(want[0], std::int64_t(n) * wmax * 32767);
            }
            for (const auto& k : kernels) {
                std::int64_t got[4];
                k.fn(w.data(), xs, n, got);
                for (int j = 0; j < 4; ++j) EXPECT_EQ(got[j], want[j]) << k.name << " n " << n << " pattern " << pattern;
            }
        }
    }
}

TEST(ReferenceDraft, EveryIntegerKernelGivesTheScalarKernelsSums) {
    expect_kernels_agree<std::int8_t>(127);
    expect_kernels_agree<std::int16_t>(2047);
    std::printf("int8 kernels: %zu, int12 kernels: %zu (the widest: %s)\n", reference::detail::dot4_kernels<std::int8_t>().size(),
                reference::detail::dot4_kernels<std::int16_t>().size(), reference::detail::dot4_kernels<std::int16_t>().back().name);
}

TEST(ReferenceDraft, QuantizationIsPerRowAndRoundsToNearestEven) {
    const std::vector<float> w = {1.0f, -0.5f, 0.25f, 0.0f, /* row 2 */ 0.0f, 0.0f, 0.0f, 0.0f, /* row 3 */ 2.0f, 1.0f, -3.0f, 0.0f};
    const auto q = reference::detail::quantize_rows_int8(w, 3, 4);
    EXPECT_EQ(q.scale[0], 1.0f / 127.0f);
    EXPECT_EQ(q.q[0], 127);
    EXPECT_EQ(q.q[1], -64);  // -63.5 to even
    EXPECT_EQ(q.q[2], 32);   // 31.75
    EXPECT_EQ(q.scale[1], 0.0f);
    EXPECT_EQ(q.q[5], 0);
    EXPECT_EQ(q.q[10], -127);
    const auto q12 = reference::detail::quantize_rows_int12(w, 3, 4);
    EXPECT_EQ(q12.q[0], 2047);
    EXPECT_EQ(q12.q[1], -1024);  // -1023.5 to even
    reference::detail::int16_rows a;
    const float x[] = {0.5f, -1.0f, 0.0f, 0.25f};
    reference::detail::quantize_rows_int16(x, 1, 4, a);
    EXPECT_EQ(a.q[1], -32767);
    EXPECT_EQ(a.q[0], 16384);  // 16383.5 to even
}

// A draft is a model of its own: its hash differs, its bits are the same batched, token by token
// and threaded, and its KV is close to the reference model's (int12 closer than int8).
TEST(ReferenceDraft, DraftsAreDeterministicAndCloseToTheReference) {
    const auto ref = tiny();
    const auto m8 = reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int8);
    const auto m12 = reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int12);
    EXPECT_NE(m8->content_hash(), ref->content_hash());
    EXPECT_NE(m12->content_hash(), ref->content_hash());
    EXPECT_NE(m8->content_hash(), m12->content_hash());
    const auto dump = io::safetensors_file::load(data_dir / "kv" / "py311-textwrap.safetensors");
    const auto ids = dump_tokens(dump, 150);
    auto s_ref = ref->session(1);
    s_ref->extend(ids, {});
    const auto kv_ref = kv_of(*s_ref, *ref, 0, ids.size());
    double rel[2] = {0, 0};
    int which = 0;
    for (const auto& m : {m8, m12}) {
        auto run = [&](unsigned threads, std::size_t step) {
            auto s = m->session(threads);
            for (std::size_t b = 0; b < ids.size(); b += step) s->extend(std::span(ids).subspan(b, std::min(step, ids.size() - b)), {});
            return kv_of(*s, *m, 0, ids.size()).bytes;
        };
        const auto want = run(1, ids.size());
        for (auto [threads, step] : {std::pair<unsigned, std::size_t>{1, 1}, {3, 7}, {2, 64}})
            EXPECT_TRUE(run(threads, step) == want) << m->name() << ": " << threads << " threads, step " << step;
        double d2 = 0, r2 = 0;
        for (std::size_t i = 0; i + 1 < want.size(); i += 2) {
            const double a = bf16_to_float(std::uint16_t(want[i] | want[i + 1] << 8));
            const double b = bf16_to_float(std::uint16_t(kv_ref.bytes[i] | kv_ref.bytes[i + 1] << 8));
            d2 += (a - b) * (a - b), r2 += b * b;
        }
        rel[which++] = std::sqrt(d2 / r2);
    }
    // Relative RMS distance to the reference's KV: a few percent at most for int8 (measured 0.33 %
    // on this model), and int12's 16× finer weight steps must bring it well below int8's (0.074 %).
    EXPECT_LT(rel[0], 0.03);
    EXPECT_LT(rel[1], rel[0] / 2);
    EXPECT_GT(rel[1], 0.0);
    std::printf("relative RMS distance to the reference KV: int8 %.2e, int12 %.2e\n", rel[0], rel[1]);
}

// The determinism contract across machines: the KV and next-token tables of 48 tokens have the
// content hashes this test records, for the reference model and both drafts. They were recorded
// on an AVX-512 Xeon; scripts/test-cpus.sh reruns this under emulated CPUs without AVX / with
// AVX2 only, and CI runs it on other hosts: any ISA, compiler flag or kernel change that moves a
// single bit fails here (a token-mode file written elsewhere would then fail its checksums).
TEST(ReferenceDraft, KvAndTablesHaveTheRecordedHashesOnEveryMachine) {
    const auto dump = io::safetensors_file::load(data_dir / "kv" / "gpl3.safetensors");
    const auto ids = dump_tokens(dump, 48);
    struct expected {
        reference::weight_format w;
        std::uint64_t kv, tables;
    };
    const expected want[] = {{reference::weight_format::f32, 0x0890cc3f1a96d780ull, 0x0ee1753d379d8153ull},
                             {reference::weight_format::int8, 0x8ef89a4831589c01ull, 0xe5fdb737079c2dd4ull},
                             {reference::weight_format::int12, 0x286fb5b71244810aull, 0xe674aa1ea06d1610ull}};
    for (const auto& e : want) {
        const auto m = reference::llama_model::load(data_dir / "tiny-llama", dtype::f32, e.w);
        auto s = m->session(2);
        std::uint64_t tables = 0;
        s->extend(ids, [&](std::size_t, std::span<const std::uint32_t> f) {
            tables = content_hash64({reinterpret_cast<const std::uint8_t*>(f.data()), f.size() * 4}, tables);
        });
        const auto kv = kv_of(*s, *m, 0, ids.size());  // f32: every bit of the model's KV
        const std::uint64_t kv_hash = content_hash64(kv.bytes);
        EXPECT_EQ(kv_hash, e.kv) << "weights " << int(e.w);
        EXPECT_EQ(tables, e.tables) << "weights " << int(e.w);
    }
}
