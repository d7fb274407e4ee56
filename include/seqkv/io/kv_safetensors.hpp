// The seqkv KV convention on top of safetensors: `layer.{l}.k` / `layer.{l}.v` of shape
// [kv_heads, tokens, head_dim], `tokens` I32 [T], optional q / k_prerope / nll tensors.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/core/layout.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// Name of the K or V tensor of a layer in the convention.
inline std::string kv_tensor_name(std::uint32_t layer, kv_kind kind) {
    return "layer." + std::to_string(layer) + (kind == kv_kind::key ? ".k" : ".v");
}

/// Layer and kind of a convention K/V tensor name ("layer.3.v"), or nullopt for any other name.
inline std::optional<std::pair<std::uint32_t, kv_kind>> parse_kv_tensor_name(std::string_view name) {
    constexpr std::string_view prefix = "layer.";
    if (!name.starts_with(prefix)) return std::nullopt;
    name.remove_prefix(prefix.size());
    const auto dot = name.find('.');
    if (dot == std::string_view::npos || dot == 0) return std::nullopt;
    std::uint32_t layer = 0;
    auto [ptr, ec] = std::from_chars(name.data(), name.data() + dot, layer);
    if (ec != std::errc{} || ptr != name.data() + dot) return std::nullopt;
    const auto suffix = name.substr(dot + 1);
    if (suffix == "k") return std::pair{layer, kv_kind::key};
    if (suffix == "v") return std::pair{layer, kv_kind::value};
    return std::nullopt;
}

/// Builds a view of the KV tensors of a convention file; throws format_error if they are
/// missing, not consecutive from layer 0, of differing shapes or dtypes, or not KV floats.
inline kv_cache_view kv_view(const safetensors_file& file) {
    kv_cache_view view;
    std::uint32_t layers = 0;
    for (const auto& t : file.tensors())
        if (auto p = parse_kv_tensor_name(t.name)) layers = std::max(layers, p->first + 1);
    if (layers == 0) throw format_error("KV safetensors: no 'layer.{l}.k' / 'layer.{l}.v' tensors");
    for (std::uint32_t l = 0; l < layers; ++l) {
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto name = kv_tensor_name(l, kind);
            const tensor_entry* t = file.find(name);
            if (!t) throw format_error("KV safetensors: missing tensor '" + name + "'");
            if (!is_kv_float(t->type))
                throw format_error("KV safetensors: '" + name + "' has dtype " + std::string(dtype_name(t->type)) +
                                   ", expected BF16, F16, F32, F8_E4M3 or F8_E5M2");
            if (t->shape.size() != 3) throw format_error("KV safetensors: '" + name + "' is not [heads, tokens, head_dim]");
            if (t->shape[0] == 0 || t->shape[2] == 0)
                throw format_error("KV safetensors: '" + name + "' has no heads or no channels");
            if (t->shape[0] > 0xffffffffull || t->shape[2] > 0xffffffffull)
                throw limit_error("KV safetensors: '" + name + "' has too many heads or channels");
            kv_tensor_view v{t->bytes.data(), t->type, std::uint32_t(t->shape[0]), t->shape[1], std::uint32_t(t->shape[2]),
                             kv_strides::head_major(t->shape[1], std::uint32_t(t->shape[2]))};
            if (l == 0 && kind == kv_kind::key) view.layout = {layers, v.heads, v.head_dim, v.tokens, v.type};
            if (v.type != view.layout.type || v.heads != view.layout.kv_heads || v.tokens != view.layout.tokens ||
                v.head_dim != view.layout.head_dim)
                throw format_error("KV safetensors: '" + name + "' differs in shape or dtype from layer.0.k");
            (kind == kv_kind::key ? view.keys : view.values).push_back(v);
        }
    }
    return view;
}

/// The convention's `tokens` (I32 [tokens]) as ids; nullopt if absent or of another dtype/shape.
inline std::optional<std::vector<std::int32_t>> token_ids_of(const safetensors_file& file, std::uint64_t tokens) {
    const tensor_entry* t = file.find("tokens");
    if (!t || t->type != dtype::i32 || t->shape != std::vector<std::uint64_t>{tokens}) return std::nullopt;
    std::vector<std::int32_t> ids;
    ids.resize(tokens);
    for (std::uint64_t i = 0; i < tokens; ++i) ids[i] = static_cast<std::int32_t>(load_le32(t->bytes.data() + 4 * i));
    return ids;
}

/// The convention's `nll` (F32 [tokens]); nullopt if absent or of another dtype/shape.
inline std::optional<std::vector<float>> nll_of(const safetensors_file& file, std::uint64_t tokens) {
    const tensor_entry* t = file.find("nll");
    if (!t || t->type != dtype::f32 || t->shape != std::vector<std::uint64_t>{tokens}) return std::nullopt;
    std::vector<float> nll;
    nll.resize(tokens);
    for (std::uint64_t i = 0; i < tokens; ++i) nll[i] = std::bit_cast<float>(load_le32(t->bytes.data() + 4 * i));
    return nll;
}

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
