// A deterministic Llama-architecture forward pass (RoPE, GQA, RMSNorm, SwiGLU, tied or separate
// LM head) that drives token mode: seqkv's reference model, not a fast engine. It loads
// safetensors weights (the committed tiny fixture model as trained; SmolLM2 as exported by
// `tools/seqkv_corpus.py export-weights`) and computes in fp32 with the same bits on every x86-64
// machine, with or without AVX2 / AVX-512, at any thread count, batched or token by token:
//   - every dot product has one fixed order: 8 lanes (lane j sums the terms i ≡ j mod 8 in
//     ascending i), then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); sums over tokens run in ascending
//     position; each output element is computed whole by one thread;
//   - no FMA contraction (the seqkv target compiles with -ffp-contract=off; a session refuses to
//     start when this translation unit was built with contraction);
//   - exp / SiLU from model/det_math.hpp, cos / sin from predict/rope_math.hpp, sqrt and division
//     are IEEE (correctly rounded).
// Outside the core headers: seqkv.hpp does not include it. Layer: reference (core, model,
// predict, io, backend).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqkv/backend/executor.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/core/hash.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/model/det_math.hpp"
#include "seqkv/model/token_model.hpp"
#include "seqkv/predict/rope_math.hpp"
#include "seqkv/reference/int_matmul.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::reference {

/// How RoPE angles are formed (both then take cos / sin with rope_math's fp32 rule).
enum class rope_angles : std::uint8_t {
    hf = 0,    ///< Hugging Face: float(pos) · inv_freq_i, inv_freq_i = fp32(θ^(−2i/D))
    ggml = 1,  ///< llama.cpp CPU: angle_0 = pos, angle_{i+1} = angle_i · fp32(θ^(−2/D))
};

/// How the projection weights are held and multiplied.
enum class weight_format : std::uint8_t {
    f32 = 0,   ///< the weights as loaded, fp32 dot products in the fixed order (the reference model)
    int8 = 1,  ///< a draft: int8 weights (one scale per row) × int16 activations (one scale per token),
               ///< exact integer sums (reference/int_matmul.hpp); embeddings, norms, attention and the
               ///< LM head stay fp32. A cheaper model whose KV predicts the reference model's.
    int12 = 2, ///< the same with 12-bit weights held in int16 (16× finer steps, twice int8's memory)
};

/// Shape and numerics of a Llama-architecture model.
struct llama_config {
    std::uint32_t vocab_size = 0, d_model = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, ffn_hidden = 0;
    float norm_eps = 1e-5f;
    double rope_theta = 10000.0;
    predict::rope_math::pairing rope_style = predict::rope_math::pairing::rotate_half;
    rope_angles angles = rope_angles::hf;
    bool tie_embeddings = true;
    weight_format weights = weight_format::f32;
    std::string name;

    /// Throws resource_error when a field is out of range (sizes come from files).
    void validate() const {
        auto bad = [](const std::string& what) { throw resource_error("llama model: " + what); };
        if (vocab_size < 2 || vocab_size > model::max_vocab) bad("vocab_size out of range");
        if (d_model == 0 || d_model > 65536 || ffn_hidden == 0 || ffn_hidden > 262144) bad("d_model / ffn_hidden out of range");
        if (n_layers == 0 || n_layers > 1024) bad("n_layers out of range");
        if (n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || n_heads > 1024) bad("heads out of range");
        if (head_dim == 0 || head_dim % 2 != 0 || head_dim > 1024) bad("head_dim must be even and <= 1024");
        if (!(norm_eps > 0 && norm_eps < 1)) bad("norm_eps out of range");
        if (!(rope_theta >= 1 && rope_theta <= 1e12)) bad("rope_theta out of range");
    }
    /// Bytes that identify the configuration (hashed with the weights).
    std::string key() const {
        std::ostringstream s;
        s << "llama v1 " << vocab_size << ' ' << d_model << ' ' << n_layers << ' ' << n_heads << ' ' << n_kv_heads << ' '
          << head_dim << ' ' << ffn_hidden << ' ' << std::bit_cast<std::uint32_t>(norm_eps) << ' '
          << std::bit_cast<std::uint64_t>(rope_theta) << ' ' << int(rope_style) << ' ' << int(angles) << ' ' << tie_embeddings;
        if (weights == weight_format::int8) s << " weights int8-rows x int16-tokens";  // f32 keys (and hashes) as before
        if (weights == weight_format::int12) s << " weights int12-rows x int16-tokens";
        return s.str();
    }
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // 8-float vectors by value in inline helpers: no ABI boundary
#endif

namespace detail {

// The fp32 kernels below are compiled twice: for the build's baseline and, on x86-64 GCC/Clang,
// with AVX2 enabled (picked at run time). Their vector-extension operations are lane-wise IEEE and
// the code has no FMA (AVX2 does not enable it; the target compiles with -ffp-contract=off), so
// both copies compute the same bits (test ReferenceDraft.KvAndTablesHaveTheRecordedHashesOnEveryMachine,
// run under emulated CPUs by scripts/test-cpus.sh). Helpers are always inlined into both copies.
#define SEQKV_REF_INLINE inline __attribute__((always_inline))
#if SEQKV_X86_AVX2_KERNELS
#define SEQKV_REF_AVX2 1
#else
#define SEQKV_REF_AVX2 0
#endif

using v8f = float __attribute__((vector_size(32)));

SEQKV_REF_INLINE v8f load8(const float* p) {
    v8f r;
    std::memcpy(&r, p, sizeof r);
    return r;
}
SEQKV_REF_INLINE float lane_sum(const v8f& a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

/// Terms n − n mod 8 .. n − 1, placed in their lanes (the others zero).
SEQKV_REF_INLINE v8f tail8(const float* a, const float* b, std::size_t i, std::size_t n) {
    v8f t = {};
    for (std::size_t j = 0; i + j < n; ++j) t[j] = a[i + j] * b[i + j];
    return t;
}

/// The one dot product (see the file comment).
SEQKV_REF_INLINE float dot(const float* a, const float* b, std::size_t n) {
    v8f acc = {};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
    if (i < n) acc += tail8(a, b, i, n);
    return lane_sum(acc);
}

/// Four dot products of w with x0..x3 (each bit-identical to dot()), sharing w's loads.
SEQKV_REF_INLINE void dot4(const float* w, const float* x0, const float* x1, const float* x2, const float* x3, std::size_t n, float* out) {
    v8f a0 = {}, a1 = {}, a2 = {}, a3 = {};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const v8f wv = load8(w + i);
        a0 += wv * load8(x0 + i);
        a1 += wv * load8(x1 + i);
        a2 += wv * load8(x2 + i);
        a3 += wv * load8(x3 + i);
    }
    if (i < n) a0 += tail8(w, x0, i, n), a1 += tail8(w, x1, i, n), a2 += tail8(w, x2, i, n), a3 += tail8(w, x3, i, n);
    out[0] = lane_sum(a0), out[1] = lane_sum(a1), out[2] = lane_sum(a2), out[3] = lane_sum(a3);
}

/// Rows r0..r1 of Y[t, o] = W[o, :] · X[t, :] (see matmul).
SEQKV_REF_INLINE void matmul_rows_body(const float* w, std::size_t rows, std::size_t cols, const float* x, std::size_t tokens, float* y,
                                       std::size_t r0, std::size_t r1) {
    constexpr std::size_t token_tile = 16;  // X tile stays in L1/L2 while the rows stream
    for (std::size_t t0 = 0; t0 < tokens; t0 += token_tile) {
        const std::size_t t1 = std::min(tokens, t0 + token_tile);
        for (std::size_t o = r0; o < r1; ++o) {
            const float* wr = w + o * cols;
            std::size_t t = t0;
            for (; t + 4 <= t1; t += 4) {
                float r[4];
                dot4(wr, x + t * cols, x + (t + 1) * cols, x + (t + 2) * cols, x + (t + 3) * cols, cols, r);
                for (int k = 0; k < 4; ++k) y[(t + k) * rows + o] = r[k];
            }
            for (; t < t1; ++t) y[t * rows + o] = dot(wr, x + t * cols, cols);
        }
    }
}
inline void matmul_rows_generic(const float* w, std::size_t rows, std::size_t cols, const float* x, std::size_t tokens, float* y,
                                std::size_t r0, std::size_t r1) {
    matmul_rows_body(w, rows, cols, x, tokens, y, r0, r1);
}
#if SEQKV_REF_AVX2
__attribute__((target("avx2"))) inline void matmul_rows_avx2(const float* w, std::size_t rows, std::size_t cols, const float* x,
                                                             std::size_t tokens, float* y, std::size_t r0, std::size_t r1) {
    matmul_rows_body(w, rows, cols, x, tokens, y, r0, r1);
}
#endif

/// Y[t, o] = W[o, :] · X[t, :] for t < tokens, o < rows (W rows × cols, X tokens × cols, Y tokens × rows).
inline void matmul(const float* w, std::size_t rows, std::size_t cols, const float* x, std::size_t tokens, float* y,
                   backend::thread_pool& pool) {
    constexpr std::size_t row_block = 32;
    const std::size_t tasks = (rows + row_block - 1) / row_block;
    auto rows_fn = &matmul_rows_generic;
#if SEQKV_REF_AVX2
    if (cpu_has_avx2()) rows_fn = &matmul_rows_avx2;
#endif
    pool.run(tasks, [&](std::size_t task) {
        const std::size_t r0 = task * row_block, r1 = std::min(rows, r0 + row_block);
        rows_fn(w, rows, cols, x, tokens, y, r0, r1);
    });
}

/// Attention of one (new token, head): softmax(q · K[j] · scale) over j < ctx, weights · V[j].
/// K, V: [token][kv_head][D] from kv head kh (KH heads); s: ctx floats of scratch.
SEQKV_REF_INLINE void attend_body(const float* qv, const float* K, const float* V, std::size_t KH, std::size_t kh, std::size_t D,
                                  std::uint64_t ctx, float scale, float* s, float* out) {
    float hi = -INFINITY;
    for (std::uint64_t j = 0; j < ctx; ++j) {
        s[j] = dot(qv, K + (j * KH + kh) * D, D) * scale;
        hi = std::max(hi, s[j]);
    }
    // Element-wise loops apart from the one sequential sum, so that compilers vectorize them
    // (the same operations on each element: the same bits).
    for (std::uint64_t j = 0; j < ctx; ++j) s[j] = model::exp_f32(s[j] - hi);
    float sum = 0.0f;
    for (std::uint64_t j = 0; j < ctx; ++j) sum += s[j];
    for (std::uint64_t j = 0; j < ctx; ++j) s[j] = s[j] / sum;
    std::fill_n(out, D, 0.0f);
    for (std::uint64_t j = 0; j < ctx; ++j) {
        const float p = s[j];
        const float* vv = V + (j * KH + kh) * D;
        for (std::size_t e = 0; e < D; ++e) out[e] += p * vv[e];
    }
}
inline void attend_generic(const float* qv, const float* K, const float* V, std::size_t KH, std::size_t kh, std::size_t D,
                           std::uint64_t ctx, float scale, float* s, float* out) {
    attend_body(qv, K, V, KH, kh, D, ctx, scale, s, out);
}
#if SEQKV_REF_AVX2
__attribute__((target("avx2"))) inline void attend_avx2(const float* qv, const float* K, const float* V, std::size_t KH, std::size_t kh,
                                                        std::size_t D, std::uint64_t ctx, float scale, float* s, float* out) {
    attend_body(qv, K, V, KH, kh, D, ctx, scale, s, out);
}
#endif

/// Y[t, o] = W[o, :] · X[t, :] with integer rows and int16 tokens (int_matmul.hpp): exact integer
/// sums, then scale_sum. Same tiling as matmul; the result does not depend on it.
template <class W>
void matmul_int(const int_matrix<W>& w, const int16_rows& x, std::size_t tokens, float* y, backend::thread_pool& pool) {
    constexpr std::size_t row_block = 32, token_tile = 16;
    const std::size_t rows = w.rows, cols = w.cols, tasks = (rows + row_block - 1) / row_block;
    const dot4_fn<W> kernel = best_dot4<W>();
    pool.run(tasks, [&](std::size_t task) {
        const std::size_t r0 = task * row_block, r1 = std::min(rows, r0 + row_block);
        for (std::size_t t0 = 0; t0 < tokens; t0 += token_tile) {
            const std::size_t t1 = std::min(tokens, t0 + token_tile);
            for (std::size_t o = r0; o < r1; ++o) {
                const W* wr = w.q.data() + o * cols;
                for (std::size_t t = t0; t < t1; t += 4) {
                    const std::int16_t* xs[4];
                    for (std::size_t k = 0; k < 4; ++k) xs[k] = x.q.data() + std::min(t + k, t1 - 1) * cols;  // a short tile repeats its last token
                    std::int64_t acc[4];
                    kernel(wr, xs, cols, acc);
                    for (std::size_t k = 0; k < 4 && t + k < t1; ++k) y[(t + k) * rows + o] = scale_sum(acc[k], w.scale[o], x.scale[t + k]);
                }
            }
        }
    });
}

/// out = x / sqrt(mean(x²) + eps) · w (Hugging Face's LlamaRMSNorm in fp32).
inline void rms_norm(const float* x, const float* w, std::size_t n, float eps, float* out) {
    const float mean = dot(x, x, n) / float(n);
    const float r = 1.0f / std::sqrt(mean + eps);
    for (std::size_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
}

inline std::vector<float> to_f32(const io::tensor_entry& t) {
    std::vector<float> out(t.element_count());
    const auto* p = t.bytes.data();
    switch (t.type) {
        case dtype::f32: std::memcpy(out.data(), p, out.size() * 4); break;
        case dtype::bf16:
            for (std::size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(std::uint16_t(p[2 * i] | p[2 * i + 1] << 8));
            break;
        case dtype::f16:
            for (std::size_t i = 0; i < out.size(); ++i) out[i] = fp16_to_float(std::uint16_t(p[2 * i] | p[2 * i + 1] << 8));
            break;
        default: throw resource_error("llama model: tensor " + t.name + " is not f32 / bf16 / f16");
    }
    for (float v : out)
        if (!std::isfinite(v)) throw resource_error("llama model: tensor " + t.name + " holds a non-finite value");
    return out;
}

}  // namespace detail

/// One projection, row-major [out, in] as Hugging Face stores it: fp32, or integer rows for a draft.
struct projection {
    std::vector<float> f32;      // weight_format::f32
    detail::int8_matrix int8;    // weight_format::int8
    detail::int12_matrix int12;  // weight_format::int12
};

/// The weights of one layer.
struct llama_layer {
    std::vector<float> attn_norm, ffn_norm;
    projection wq, wk, wv, wo, w_gate, w_up, w_down;
};

class llama_session;

/// A loaded model (immutable; sessions share it). Implements model::language_model.
class llama_model : public model::language_model, public std::enable_shared_from_this<llama_model> {
public:
    /// Loads a directory (model.safetensors + config.json, Hugging Face keys) or one safetensors
    /// file whose `config` metadata is an export-weights config (GGUF row order: interleaved RoPE,
    /// llama.cpp angles). kv_type is the dtype kv() writes. Throws resource_error / format_error.
    /// `weights` int8 makes the draft of the same weights (weight_format).
    static std::shared_ptr<const llama_model> load(const std::filesystem::path& path, dtype kv_type = dtype::bf16,
                                                   weight_format weights = weight_format::f32);

    /// From parsed weights and a configuration (names as Hugging Face's LlamaForCausalLM).
    static std::shared_ptr<const llama_model> from_tensors(const io::safetensors_file& weights, llama_config config,
                                                           dtype kv_type = dtype::bf16) {
        config.validate();
        require_usage(kv_type == dtype::bf16 || kv_type == dtype::f16 || kv_type == dtype::f32, "llama model: kv dtype bf16, f16 or f32");
        auto m = std::shared_ptr<llama_model>(new llama_model);
        m->config_ = std::move(config);
        m->kv_type_ = kv_type;
        const auto& c = m->config_;
        auto take = [&](const std::string& name, std::uint64_t rows, std::uint64_t cols) {
            const io::tensor_entry& t = weights.at(name);
            const bool ok = cols == 0 ? (t.shape.size() == 1 && t.shape[0] == rows)
                                      : (t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols);
            if (!ok) throw resource_error("llama model: tensor " + name + " has the wrong shape");
            auto v = detail::to_f32(t);
            m->hash_ = content_hash64({reinterpret_cast<const std::uint8_t*>(v.data()), v.size() * 4}, m->hash_);
            return v;
        };
        auto take_projection = [&](const std::string& name, std::uint64_t rows, std::uint64_t cols) {
            projection p;
            p.f32 = take(name, rows, cols);
            if (c.weights == weight_format::int8) p.int8 = detail::quantize_rows_int8(p.f32, rows, cols), p.f32 = {};
            if (c.weights == weight_format::int12) p.int12 = detail::quantize_rows_int12(p.f32, rows, cols), p.f32 = {};
            return p;
        };
        m->hash_ = content_hash64({reinterpret_cast<const std::uint8_t*>(c.key().data()), c.key().size()});
        const std::uint64_t d = c.d_model, q = std::uint64_t(c.n_heads) * c.head_dim, kv = std::uint64_t(c.n_kv_heads) * c.head_dim;
        m->embed_ = take("model.embed_tokens.weight", c.vocab_size, d);
        m->layers_.resize(c.n_layers);
        for (std::uint32_t l = 0; l < c.n_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            auto& L = m->layers_[l];
            L.attn_norm = take(p + "input_layernorm.weight", d, 0);
            L.wq = take_projection(p + "self_attn.q_proj.weight", q, d);
            L.wk = take_projection(p + "self_attn.k_proj.weight", kv, d);
            L.wv = take_projection(p + "self_attn.v_proj.weight", kv, d);
            L.wo = take_projection(p + "self_attn.o_proj.weight", d, q);
            L.ffn_norm = take(p + "post_attention_layernorm.weight", d, 0);
            L.w_gate = take_projection(p + "mlp.gate_proj.weight", c.ffn_hidden, d);
            L.w_up = take_projection(p + "mlp.up_proj.weight", c.ffn_hidden, d);
            L.w_down = take_projection(p + "mlp.down_proj.weight", d, c.ffn_hidden);
        }
        m->final_norm_ = take("model.norm.weight", d, 0);
        if (!c.tie_embeddings) m->head_ = take("lm_head.weight", c.vocab_size, d);
        m->init_rope();
        return m;
    }

    const llama_config& config() const { return config_; }
    std::uint32_t vocab_size() const override { return config_.vocab_size; }
    kv_layout kv_shape() const override { return {config_.n_layers, config_.n_kv_heads, config_.head_dim, 0, kv_type_}; }
    std::uint64_t content_hash() const override { return hash_; }
    std::string name() const override { return config_.name; }
    std::unique_ptr<model::model_session> session(unsigned threads = 1) const override;
    /// Multiply-adds per token of a forward pass at context length `context` (for cost reports).
    double flops_per_token(std::uint64_t context, bool logits) const {
        const auto& c = config_;
        const double d = c.d_model, q = double(c.n_heads) * c.head_dim, kv = double(c.n_kv_heads) * c.head_dim;
        const double per_layer = d * (q + 2 * kv) + q * d + 3.0 * d * c.ffn_hidden + 2.0 * double(context) * q;
        return 2.0 * (c.n_layers * per_layer + (logits ? d * c.vocab_size : 0.0));
    }
    /// Σ flops_per_token over positions [begin, end) (context p + 1 at position p), no logits.
    double forward_flops(std::uint64_t begin, std::uint64_t end) const override {
        if (end <= begin) return 0;
        const auto& c = config_;
        const double n = double(end - begin), contexts = (double(end) * double(end + 1) - double(begin) * double(begin + 1)) / 2;
        return n * flops_per_token(0, false) + 2.0 * c.n_layers * 2.0 * contexts * double(c.n_heads) * c.head_dim;
    }

private:
    friend class llama_session;
    llama_model() = default;
    static std::shared_ptr<const llama_model> load_unchecked(const std::filesystem::path& path, dtype kv_type, weight_format weights);

    void init_rope() {
        namespace rm = predict::rope_math;
        const std::uint32_t half = config_.head_dim / 2;
        inv_freq_.resize(half);
        const double log_theta = rm::log(config_.rope_theta);
        for (std::uint32_t i = 0; i < half; ++i)
            inv_freq_[i] = float(1.0 / rm::exp(unfused_mul(log_theta, double(2 * i) / double(config_.head_dim))));
        theta_scale_ = float(rm::exp(-unfused_mul(log_theta, 2.0 / double(config_.head_dim))));
    }
    /// cos / sin of every pair at `position` (fp32).
    void rope_at(std::uint64_t position, float* cos_out, float* sin_out) const {
        const std::uint32_t half = config_.head_dim / 2;
        float angle = float(position);
        for (std::uint32_t i = 0; i < half; ++i) {
            const float a = config_.angles == rope_angles::hf ? float(position) * inv_freq_[i] : angle;
            double c, s;
            predict::rope_math::cos_sin<predict::rope_math::precision::fp32>(a, c, s);
            cos_out[i] = float(c), sin_out[i] = float(s);
            angle = angle * theta_scale_;
        }
    }

    llama_config config_;
    dtype kv_type_ = dtype::bf16;
    std::uint64_t hash_ = 0;
    std::vector<float> embed_, final_norm_, head_;
    std::vector<llama_layer> layers_;
    std::vector<float> inv_freq_;
    float theta_scale_ = 1.0f;
};

/// A growing context under a llama_model: fp32 KV cache, batched or incremental forward passes
/// with identical bits.
class llama_session final : public model::model_session {
public:
    llama_session(std::shared_ptr<const llama_model> m, unsigned threads) : m_(std::move(m)), pool_(threads) {
        if (model::contracts_multiply_add())
            throw usage_error("reference model: compiled with FMA contraction; build with -ffp-contract=off (the seqkv target sets it)");
        k_.resize(m_->config_.n_layers);
        v_.resize(m_->config_.n_layers);
    }

    std::uint64_t length() const override { return length_; }
    void reset() override {
        length_ = 0;
        for (auto& k : k_) k.clear();
        for (auto& v : v_) v.clear();
    }

    void extend(std::span<const std::int32_t> tokens, const model::next_fn& on_next) override {
        const auto& c = m_->config_;
        for (auto t : tokens) require_usage(t >= 0 && std::uint32_t(t) < c.vocab_size, "reference model: token id outside the vocabulary");
        constexpr std::size_t batch = 64;  // bounds the activations and the logits buffer
        for (std::size_t b = 0; b < tokens.size(); b += batch) {
            const std::size_t n = std::min(batch, tokens.size() - b);
            forward(tokens.subspan(b, n), on_next, b);
        }
    }

    void kv(std::uint64_t begin, std::uint64_t end, chunk_buffer& out) const override {
        const auto& c = m_->config_;
        require_usage(begin <= end && end <= length_, "reference model: kv range outside the context");
        kv_layout want = m_->kv_shape();
        want.tokens = end - begin;
        want.type = out.layout.type;  // any of bf16 / f16 / f32, rounded to nearest even
        require_usage(out.layout == want && out.bytes.size() == want.total_bytes() &&
                          (want.type == dtype::bf16 || want.type == dtype::f16 || want.type == dtype::f32),
                      "reference model: kv buffer layout (the model's shape; bf16, f16 or f32)");
        const std::size_t es = dtype_size(want.type), D = c.head_dim, KH = c.n_kv_heads;
        for (std::uint32_t l = 0; l < c.n_layers; ++l)
            for (int kind = 0; kind < 2; ++kind) {
                const auto& src = kind == 0 ? k_[l] : v_[l];
                auto dst = out.block(l, kind == 0 ? kv_kind::key : kv_kind::value);
                std::size_t o = 0;
                for (std::size_t h = 0; h < KH; ++h)
                    for (std::uint64_t t = begin; t < end; ++t)
                        for (std::size_t d = 0; d < D; ++d, o += es) store(src[(t * KH + h) * D + d], want.type, dst.data() + o);
            }
    }

    /// Drops the context's tokens from position n on (n <= length()): what-if continuations (the
    /// bench's expected-KV predictor tries candidates and takes them back).
    void truncate(std::uint64_t n) {
        require_usage(n <= length_, "reference model: truncate past the context");
        const std::size_t row = std::size_t(m_->config_.n_kv_heads) * m_->config_.head_dim;
        for (auto& k : k_) k.resize(n * row);
        for (auto& v : v_) v.resize(n * row);
        length_ = n;
    }

    void assign_kv(std::uint64_t begin, std::span<const std::int32_t> tokens, const chunk_buffer& kv) override {
        const auto& c = m_->config_;
        const std::uint64_t n = tokens.size();
        kv_layout want = m_->kv_shape();
        want.tokens = n;
        want.type = kv.layout.type;
        require_usage(begin <= length_ && kv.layout == want && kv.bytes.size() == want.total_bytes() &&
                          (want.type == dtype::bf16 || want.type == dtype::f16 || want.type == dtype::f32),
                      "reference model: assign_kv range or layout (the model's shape, bf16 / f16 / f32, begin <= length)");
        for (auto t : tokens) require_usage(t >= 0 && std::uint32_t(t) < c.vocab_size, "reference model: token id outside the vocabulary");
        const std::size_t D = c.head_dim, KH = c.n_kv_heads, row = KH * D;
        const std::uint64_t end = std::max<std::uint64_t>(length_, begin + n);
        for (std::uint32_t l = 0; l < c.n_layers; ++l)
            for (int kind = 0; kind < 2; ++kind) {
                auto& dst = kind == 0 ? k_[l] : v_[l];
                dst.resize(end * row);
                const auto src = kv.block(l, kind == 0 ? kv_kind::key : kv_kind::value);
                std::size_t i = 0;
                for (std::size_t h = 0; h < KH; ++h)
                    for (std::uint64_t t = 0; t < n; ++t)
                        for (std::size_t d = 0; d < D; ++d) dst[((begin + t) * KH + h) * D + d] = load_as_float(src.data(), want.type, i++);
            }
        length_ = end;
    }

    /// The fp32 K (kind 0) or V (kind 1) cache of one layer, [token][kv_head][head_dim].
    std::span<const float> cache(std::uint32_t layer, int kind) const { return kind == 0 ? k_[layer] : v_[layer]; }

private:
    static void store(float x, dtype type, std::uint8_t* p) {
        if (type == dtype::f32) {
            std::memcpy(p, &x, 4);
            return;
        }
        const std::uint16_t b = type == dtype::bf16 ? float_to_bf16(x) : float_to_fp16(x);
        p[0] = std::uint8_t(b), p[1] = std::uint8_t(b >> 8);
    }

    void forward(std::span<const std::int32_t> tokens, const model::next_fn& on_next, std::size_t index_base) {
        const auto& c = m_->config_;
        const std::size_t n = tokens.size(), d = c.d_model, H = c.n_heads, KH = c.n_kv_heads, D = c.head_dim;
        const std::size_t q_dim = H * D, kv_dim = KH * D, F = c.ffn_hidden, half = D / 2;
        const std::uint64_t p0 = length_;
        x_.assign(n * d, 0.0f);
        for (std::size_t i = 0; i < n; ++i) std::copy_n(m_->embed_.data() + std::size_t(tokens[i]) * d, d, x_.data() + i * d);
        // RoPE tables for the new positions.
        cos_.resize(n * half), sin_.resize(n * half);
        for (std::size_t i = 0; i < n; ++i) m_->rope_at(p0 + i, cos_.data() + i * half, sin_.data() + i * half);
        h_.resize(n * std::max(d, q_dim));
        q_.resize(n * q_dim), kt_.resize(n * kv_dim), vt_.resize(n * kv_dim), att_.resize(n * q_dim), o_.resize(n * d);
        g_.resize(n * F), u_.resize(n * F);
        const float scale = float(1.0 / std::sqrt(double(D)));
        const bool integer = c.weights != weight_format::f32;
        // x (n rows of `cols`) quantized once for the projections that read it (integer drafts only).
        auto quantize = [&](const float* x, std::size_t cols) {
            if (integer) detail::quantize_rows_int16(x, n, cols, xq_);
        };
        auto project = [&](const projection& p, std::size_t rows, std::size_t cols, const float* x, float* y) {
            if (c.weights == weight_format::int8) detail::matmul_int(p.int8, xq_, n, y, pool_);
            else if (c.weights == weight_format::int12) detail::matmul_int(p.int12, xq_, n, y, pool_);
            else detail::matmul(p.f32.data(), rows, cols, x, n, y, pool_);
        };
        for (std::uint32_t l = 0; l < c.n_layers; ++l) {
            const auto& L = m_->layers_[l];
            for (std::size_t i = 0; i < n; ++i) detail::rms_norm(x_.data() + i * d, L.attn_norm.data(), d, c.norm_eps, h_.data() + i * d);
            quantize(h_.data(), d);
            project(L.wq, q_dim, d, h_.data(), q_.data());
            project(L.wk, kv_dim, d, h_.data(), kt_.data());
            project(L.wv, kv_dim, d, h_.data(), vt_.data());
            for (std::size_t i = 0; i < n; ++i) {
                for (std::size_t h = 0; h < H; ++h) rotate(q_.data() + i * q_dim + h * D, i);
                for (std::size_t h = 0; h < KH; ++h) rotate(kt_.data() + i * kv_dim + h * D, i);
            }
            k_[l].insert(k_[l].end(), kt_.begin(), kt_.begin() + std::ptrdiff_t(n * kv_dim));
            v_[l].insert(v_[l].end(), vt_.begin(), vt_.begin() + std::ptrdiff_t(n * kv_dim));
            const float* K = k_[l].data();
            const float* V = v_[l].data();
            auto attend = &detail::attend_generic;
#if SEQKV_REF_AVX2
            if (cpu_has_avx2()) attend = &detail::attend_avx2;
#endif
            pool_.run(n * H, [&](std::size_t task) {  // one (token, head) per task: its own scores buffer
                const std::size_t i = task / H, h = task % H, kh = h / (H / KH);
                const std::uint64_t ctx = p0 + i + 1;
                thread_local std::vector<float> s;
                s.resize(ctx);
                attend(q_.data() + i * q_dim + h * D, K, V, KH, kh, D, ctx, scale, s.data(), att_.data() + i * q_dim + h * D);
            });
            quantize(att_.data(), q_dim);
            project(L.wo, d, q_dim, att_.data(), o_.data());
            for (std::size_t e = 0; e < n * d; ++e) x_[e] += o_[e];
            for (std::size_t i = 0; i < n; ++i) detail::rms_norm(x_.data() + i * d, L.ffn_norm.data(), d, c.norm_eps, h_.data() + i * d);
            quantize(h_.data(), d);
            project(L.w_gate, F, d, h_.data(), g_.data());
            project(L.w_up, F, d, h_.data(), u_.data());
            for (std::size_t e = 0; e < n * F; ++e) g_[e] = model::silu_f32(g_[e]) * u_[e];
            quantize(g_.data(), F);
            project(L.w_down, d, F, g_.data(), o_.data());
            for (std::size_t e = 0; e < n * d; ++e) x_[e] += o_[e];
        }
        length_ += n;
        if (!on_next) return;
        for (std::size_t i = 0; i < n; ++i) detail::rms_norm(x_.data() + i * d, m_->final_norm_.data(), d, c.norm_eps, h_.data() + i * d);
        const auto& head = c.tie_embeddings ? m_->embed_ : m_->head_;
        logits_.resize(n * c.vocab_size);
        detail::matmul(head.data(), c.vocab_size, d, h_.data(), n, logits_.data(), pool_);
        freq_.resize(c.vocab_size);
        for (std::size_t i = 0; i < n; ++i) {
            model::quantize_distribution({logits_.data() + i * c.vocab_size, c.vocab_size}, freq_);
            on_next(index_base + i, freq_);
        }
    }

    /// RoPE of one head vector of new token i, with the pairing the model's rows use.
    void rotate(float* x, std::size_t i) const {
        const std::size_t half = m_->config_.head_dim / 2;
        const float* cs = cos_.data() + i * half;
        const float* sn = sin_.data() + i * half;
        const auto style = m_->config_.rope_style;
        for (std::size_t p = 0; p < half; ++p) {
            float& a = x[predict::rope_math::pair_channel(style, half, p, 0)];
            float& b = x[predict::rope_math::pair_channel(style, half, p, 1)];
            const float x0 = a, x1 = b;
            a = x0 * cs[p] - x1 * sn[p];
            b = x1 * cs[p] + x0 * sn[p];
        }
    }

    std::shared_ptr<const llama_model> m_;
    backend::thread_pool pool_;
    std::uint64_t length_ = 0;
    std::vector<std::vector<float>> k_, v_;  // per layer: [token][kv_head][head_dim]
    std::vector<float> x_, h_, q_, kt_, vt_, att_, o_, g_, u_, cos_, sin_, logits_;
    std::vector<std::uint32_t> freq_;
    detail::int16_rows xq_;
};

inline std::unique_ptr<model::model_session> llama_model::session(unsigned threads) const {
    return std::make_unique<llama_session>(shared_from_this(), threads);
}

namespace detail {

inline nlohmann::json parse_json_text(const std::string& text, const std::string& what) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw resource_error("llama model: " + what + " is not valid JSON (" + e.what() + ")");
    }
}

template <class T>
T json_number(const nlohmann::json& j, const char* key) {
    if (!j.contains(key) || !j[key].is_number()) throw resource_error(std::string("llama model: config lacks number ") + key);
    const double v = j[key].get<double>();
    if constexpr (std::is_integral_v<T>) {
        if (!(v >= 0 && v <= 4294967295.0) || v != std::floor(v)) throw resource_error(std::string("llama model: config ") + key + " out of range");
    }
    return static_cast<T>(v);
}

}  // namespace detail

inline std::shared_ptr<const llama_model> llama_model::load(const std::filesystem::path& path, dtype kv_type, weight_format weights) {
    try {
        return load_unchecked(path, kv_type, weights);
    } catch (const nlohmann::json::exception& e) {  // a config field of the wrong JSON type
        throw resource_error("llama model: bad config in " + path.string() + " (" + e.what() + ")");
    }
}

inline std::shared_ptr<const llama_model> llama_model::load_unchecked(const std::filesystem::path& path, dtype kv_type,
                                                                     weight_format weights) {
    namespace fs = std::filesystem;
    llama_config c;
    c.weights = weights;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        std::ifstream in(path / "config.json");
        if (!in) throw resource_error("llama model: cannot read " + (path / "config.json").string());
        std::stringstream text;
        text << in.rdbuf();
        const auto j = detail::parse_json_text(text.str(), "config.json");
        if (j.contains("model_type") && j["model_type"] != "llama") throw resource_error("llama model: model_type is not llama");
        c.vocab_size = detail::json_number<std::uint32_t>(j, "vocab_size");
        c.d_model = detail::json_number<std::uint32_t>(j, "hidden_size");
        c.n_layers = detail::json_number<std::uint32_t>(j, "num_hidden_layers");
        c.n_heads = detail::json_number<std::uint32_t>(j, "num_attention_heads");
        c.n_kv_heads = j.contains("num_key_value_heads") ? detail::json_number<std::uint32_t>(j, "num_key_value_heads") : c.n_heads;
        c.head_dim = j.contains("head_dim") ? detail::json_number<std::uint32_t>(j, "head_dim") : (c.n_heads ? c.d_model / c.n_heads : 0);
        c.ffn_hidden = detail::json_number<std::uint32_t>(j, "intermediate_size");
        c.norm_eps = detail::json_number<float>(j, "rms_norm_eps");
        c.rope_theta = j.contains("rope_theta") ? detail::json_number<double>(j, "rope_theta") : 10000.0;
        c.tie_embeddings = j.value("tie_word_embeddings", true);
        c.rope_style = predict::rope_math::pairing::rotate_half;
        c.angles = rope_angles::hf;
        c.name = path.filename().string();
        if (c.name.empty()) c.name = path.parent_path().filename().string();
        return from_tensors(io::safetensors_file::load(path / "model.safetensors"), std::move(c), kv_type);
    }
    auto file = io::safetensors_file::load(path);
    const auto& meta = file.metadata();
    const auto it = meta.find("config");
    if (it == meta.end()) throw resource_error("llama model: " + path.string() + " has no `config` metadata (export-weights writes it)");
    const auto j = detail::parse_json_text(it->second, "config metadata");
    if (j.value("arch", std::string()) != "llama") throw resource_error("llama model: architecture is not llama");
    if (j.value("sliding_window", 0) != 0) throw resource_error("llama model: sliding-window attention is not supported");
    c.vocab_size = detail::json_number<std::uint32_t>(j, "vocab_size");
    c.d_model = detail::json_number<std::uint32_t>(j, "d_model");
    c.n_layers = detail::json_number<std::uint32_t>(j, "n_layers");
    c.n_heads = detail::json_number<std::uint32_t>(j, "n_heads");
    c.n_kv_heads = detail::json_number<std::uint32_t>(j, "n_kv_heads");
    c.head_dim = detail::json_number<std::uint32_t>(j, "head_dim");
    c.ffn_hidden = detail::json_number<std::uint32_t>(j, "ffn_hidden");
    c.norm_eps = detail::json_number<float>(j, "norm_eps");
    c.rope_theta = detail::json_number<double>(j, "rope_theta");
    c.tie_embeddings = j.value("tie_embeddings", true);
    const std::string style = j.value("rope_style", std::string("interleaved"));
    c.rope_style = style == "rotate_half" ? predict::rope_math::pairing::rotate_half : predict::rope_math::pairing::interleaved;
    c.angles = rope_angles::ggml;  // export-weights: dequantized GGUF, as llama.cpp runs it
    c.name = j.value("name", path.stem().string());
    return from_tensors(file, std::move(c), kv_type);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace seqkv::reference

SEQKV_FP_STRICT_END
