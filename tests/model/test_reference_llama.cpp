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

TEST(ReferenceLlama, RejectsBadInput) {
    const auto m = tiny();
    auto s = m->session(1);
    const std::int32_t bad[] = {5, 1024};
    EXPECT_THROW(s->extend(bad, {}), usage_error);
    EXPECT_THROW(reference::llama_model::load(data_dir / "kv"), resource_error);  // no config.json
    EXPECT_THROW(reference::llama_model::load(data_dir / "kv" / "gpl3.safetensors"), resource_error);  // no config metadata
}
