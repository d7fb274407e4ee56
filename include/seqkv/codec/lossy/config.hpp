// Runtime configuration of the lossy codec: which quantizer, predictor, rate policy and symbol
// coding to compose, with their knobs. The container stores to_bytes() in its header;
// from_bytes() validates everything (format_error on bad bytes).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/lossy/symbols.hpp"
#include "seqkv/coding/varint.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/quant/uniform.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Quantizer adapters (values stored in files).
enum class lossy_quantizer : std::uint8_t {
    lossless = 0, uniform_step = 1, uniform_grouped = 2, turbo = 3, int8 = 4, fp8 = 5, error_bounded = 6,
};
/// Residual predictors (values stored in files).
enum class lossy_predictor : std::uint8_t {
    zero = 0, previous_token = 1, linear_ar = 2, anchor = 3, cross_layer = 4, token_mean = 5,
};
/// Rate policies (values stored in files).
enum class lossy_rate : std::uint8_t { fixed = 0, surprisal = 1 };

/// Everything both sides need to rebuild the codec (the expected-KV table itself is shared
/// side information referenced by table_hash).
struct lossy_config {
    static constexpr std::uint8_t version = 2;  // serialized form written by to_bytes()

    lossy_quantizer quantizer = lossy_quantizer::uniform_step;
    lossy_predictor predictor = lossy_predictor::token_mean;
    lossy_rate rate = lossy_rate::fixed;
    lossy::symbol_coding coding = lossy::symbol_coding::adaptive;
    // uniform_step
    float relative_step = 0.5f;  // step in units of the block residual RMS (power-of-two normalized)
    bool per_channel_step = false;
    // uniform_grouped (KIVI) / turbo / int
    std::uint8_t bits = 4;
    std::uint16_t group_size = 32;
    quant::scale_axis key_axis = quant::scale_axis::per_channel;
    quant::scale_axis value_axis = quant::scale_axis::per_token;
    bool channel_contexts = false;
    float outlier_fraction = 0.0f;  // turbo: fraction of channels coded with bits + 1
    bool qjl = false;
    std::uint64_t seed = 0x5eedcafe;
    // error_bounded
    float error_bound = 1e-2f;
    bool relative_bound = true;  // bound × value range of each block
    // predictors
    std::uint32_t anchor_interval = 16;
    float prior_weight = 1.0f;
    bool keys_prerope = false;          // predict keys in the pre-RoPE domain
    bool rope_interleaved = false;      // pre-RoPE pairing: 2i with 2i + 1 (else i with i + D/2)
    std::vector<float> rope_inv_freq;   // head_dim / 2 values, computed once by the encoder
    std::uint64_t table_hash = 0;       // expected-KV table content hash, 0 = none
    // rate
    std::uint8_t surprisal_base_bits = 4;
    float target_bits = 0.0f;  // > 0: encoder searches relative_step per chunk for <= this many bits/element

    /// Throws usage_error for inconsistent knobs.
    void validate() const {
        require_usage(std::uint8_t(quantizer) <= 6 && std::uint8_t(predictor) <= 5 && std::uint8_t(rate) <= 1 &&
                          std::uint8_t(coding) <= 2,
                      "lossy_config: unknown component");
        require_usage(relative_step >= 0x1p-20f && relative_step <= 0x1p20f, "lossy_config: step out of range");
        require_usage(group_size >= 1 && std::uint8_t(key_axis) <= 1 && std::uint8_t(value_axis) <= 1, "lossy_config: bad grouping");
        if (quantizer == lossy_quantizer::uniform_grouped) require_usage(bits >= 1 && bits <= 8, "lossy_config: bits in [1, 8]");
        if (quantizer == lossy_quantizer::turbo) {
            require_usage(bits >= 1 && bits <= 4, "lossy_config: turbo bits in [1, 4]");
            require_usage(outlier_fraction >= 0 && outlier_fraction < 1 && (outlier_fraction == 0 || bits < 4),
                          "lossy_config: turbo outlier fraction");
            require_usage(!qjl || bits >= 2, "lossy_config: QJL needs bits >= 2");
        }
        require_usage(error_bound > 0 && std::isfinite(error_bound), "lossy_config: error bound must be > 0");
        require_usage(anchor_interval >= 1 && prior_weight >= 0 && std::isfinite(prior_weight), "lossy_config: predictor knobs");
        require_usage(!keys_prerope || !rope_inv_freq.empty(), "lossy_config: pre-RoPE keys need rope_inv_freq");
        for (float f : rope_inv_freq) require_usage(f >= 0 && f <= 1, "lossy_config: inverse frequency outside [0, 1]");
        require_usage(surprisal_base_bits >= 1 && surprisal_base_bits <= 16, "lossy_config: surprisal bits in [1, 16]");
        require_usage(target_bits >= 0 && target_bits <= 64 && std::isfinite(target_bits), "lossy_config: target bits");
    }

    /// Serialized form (version 2): u8 version, u8 block count, then one tagged parameter block
    /// per component — u8 tag, varint length, body — so a new quantizer or predictor adds a kind
    /// (or a tag) without changing any other block's layout. Tags (docs/FORMAT.md, "Codec 2"):
    ///   1 quantizer   u8 kind, then that kind's parameters      (required)
    ///   2 predictor   u8 kind, then that kind's parameters      (required)
    ///   3 rate        u8 kind (0 fixed, 1 surprisal), u8 surprisal base bits, f32 target bits
    ///   4 coding      u8 symbol coding (0 packed, 1 adaptive, 2 rANS)
    ///   5 pre-RoPE    u8 pairing (1 rotate-half, 2 interleaved), u16 n, n × f32 inverse frequency
    ///   6 table       u64 expected-KV table content hash (also in the file's resource table)
    /// Absent 3/4/5/6 mean: fixed rate, adaptive coding, keys predicted as cached, no table.
    /// Version-1 bytes (one flat record, files written before format 2) are still read.
    byte_vector to_bytes() const {
        validate();
        std::vector<std::pair<std::uint8_t, byte_vector>> blocks;
        auto block = [&](std::uint8_t tag) -> byte_writer {
            blocks.emplace_back(tag, byte_vector{});
            return byte_writer(blocks.back().second);
        };
        {
            byte_writer w = block(tag_quantizer);
            w.put<std::uint8_t>(std::uint8_t(quantizer));
            switch (quantizer) {
                case lossy_quantizer::uniform_step: put_f32(w, relative_step), w.put<std::uint8_t>(per_channel_step); break;
                case lossy_quantizer::uniform_grouped:
                    w.put<std::uint8_t>(bits), w.put<std::uint16_t>(group_size), w.put<std::uint8_t>(std::uint8_t(key_axis));
                    w.put<std::uint8_t>(std::uint8_t(value_axis)), w.put<std::uint8_t>(channel_contexts);
                    break;
                case lossy_quantizer::turbo:
                    w.put<std::uint8_t>(bits), put_f32(w, outlier_fraction), w.put<std::uint8_t>(qjl), w.put<std::uint64_t>(seed);
                    break;
                case lossy_quantizer::error_bounded: put_f32(w, error_bound), w.put<std::uint8_t>(relative_bound); break;
                default: break;  // lossless, int8, fp8: no parameters
            }
        }
        {
            byte_writer w = block(tag_predictor);
            w.put<std::uint8_t>(std::uint8_t(predictor));
            if (predictor == lossy_predictor::anchor) w.put<std::uint32_t>(anchor_interval);
            if (predictor == lossy_predictor::token_mean) put_f32(w, prior_weight);
        }
        if (rate != lossy_rate::fixed || target_bits != 0 || surprisal_base_bits != lossy_config{}.surprisal_base_bits) {
            byte_writer w = block(tag_rate);
            w.put<std::uint8_t>(std::uint8_t(rate)), w.put<std::uint8_t>(surprisal_base_bits), put_f32(w, target_bits);
        }
        if (coding != lossy::symbol_coding::adaptive) block(tag_coding).put<std::uint8_t>(std::uint8_t(coding));
        if (keys_prerope) {
            byte_writer w = block(tag_prerope);
            w.put<std::uint8_t>(rope_interleaved ? 2 : 1);
            w.put<std::uint16_t>(std::uint16_t(rope_inv_freq.size()));
            for (float f : rope_inv_freq) put_f32(w, f);
        }
        if (table_hash != 0) block(tag_table).put<std::uint64_t>(table_hash);
        byte_vector out{version, std::uint8_t(blocks.size())};
        byte_writer w(out);
        for (const auto& [tag, body] : blocks) {
            w.put<std::uint8_t>(tag);
            coding::put_varint(w, body.size());
            w.put_bytes(body);
        }
        return out;
    }

    /// Parses and validates bytes written by to_bytes() (version 2) or by version-1 writers;
    /// format_error on anything wrong.
    static lossy_config from_bytes(std::span<const std::uint8_t> bytes) {
        byte_reader r(bytes, "lossy config");
        const auto v = r.get<std::uint8_t>();
        lossy_config c = v == 1 ? from_v1(r) : v == version ? from_blocks(r) : throw format_error("lossy config: unknown version");
        require_format(r.at_end(), "lossy config: trailing bytes");
        try {
            c.validate();
        } catch (const usage_error& e) {
            throw format_error(std::string("lossy config invalid: ") + e.what());
        }
        return c;
    }

private:
    static constexpr std::uint8_t tag_quantizer = 1, tag_predictor = 2, tag_rate = 3, tag_coding = 4, tag_prerope = 5, tag_table = 6;

    static lossy_config from_blocks(byte_reader& r) {
        lossy_config c;
        c.rate = lossy_rate::fixed, c.coding = lossy::symbol_coding::adaptive;
        const auto count = r.get<std::uint8_t>();
        unsigned seen = 0;
        for (unsigned i = 0; i < count; ++i) {
            const auto tag = r.get<std::uint8_t>();
            require_format(tag >= tag_quantizer && tag <= tag_table, "lossy config: unknown component tag");
            require_format(!(seen & (1u << tag)), "lossy config: component given twice");
            seen |= 1u << tag;
            byte_reader b(r.get_bytes(coding::get_varint(r, r.remaining())), "lossy config block");
            switch (tag) {
                case tag_quantizer:
                    c.quantizer = lossy_quantizer(b.get<std::uint8_t>());
                    switch (c.quantizer) {
                        case lossy_quantizer::uniform_step: c.relative_step = get_f32(b), c.per_channel_step = get_bool(b); break;
                        case lossy_quantizer::uniform_grouped:
                            c.bits = b.get<std::uint8_t>(), c.group_size = b.get<std::uint16_t>();
                            c.key_axis = quant::scale_axis(b.get<std::uint8_t>()), c.value_axis = quant::scale_axis(b.get<std::uint8_t>());
                            c.channel_contexts = get_bool(b);
                            break;
                        case lossy_quantizer::turbo:
                            c.bits = b.get<std::uint8_t>(), c.outlier_fraction = get_f32(b), c.qjl = get_bool(b), c.seed = b.get<std::uint64_t>();
                            break;
                        case lossy_quantizer::error_bounded: c.error_bound = get_f32(b), c.relative_bound = get_bool(b); break;
                        case lossy_quantizer::lossless: case lossy_quantizer::int8: case lossy_quantizer::fp8: break;
                        default: throw format_error("lossy config: unknown quantizer");
                    }
                    break;
                case tag_predictor:
                    c.predictor = lossy_predictor(b.get<std::uint8_t>());
                    require_format(std::uint8_t(c.predictor) <= 5, "lossy config: unknown predictor");
                    if (c.predictor == lossy_predictor::anchor) c.anchor_interval = b.get<std::uint32_t>();
                    if (c.predictor == lossy_predictor::token_mean) c.prior_weight = get_f32(b);
                    break;
                case tag_rate:
                    c.rate = lossy_rate(b.get<std::uint8_t>()), c.surprisal_base_bits = b.get<std::uint8_t>(), c.target_bits = get_f32(b);
                    break;
                case tag_coding: c.coding = lossy::symbol_coding(b.get<std::uint8_t>()); break;
                case tag_prerope: {
                    const auto pairing = b.get<std::uint8_t>();
                    require_format(pairing == 1 || pairing == 2, "lossy config: bad pre-RoPE key mode");
                    c.keys_prerope = true, c.rope_interleaved = pairing == 2;
                    const auto n = b.get<std::uint16_t>();
                    require_format(n <= b.remaining() / 4, "lossy config: inverse frequencies exceed the block");
                    for (std::uint16_t k = 0; k < n; ++k) c.rope_inv_freq.push_back(get_f32(b));
                    break;
                }
                default: c.table_hash = b.get<std::uint64_t>(); break;  // tag_table
            }
            require_format(b.at_end(), "lossy config: trailing bytes in a component block");
        }
        require_format((seen & (1u << tag_quantizer)) && (seen & (1u << tag_predictor)), "lossy config: quantizer or predictor missing");
        return c;
    }

    // Version 1: one flat record (kept so files written before format 2 decode).
    static lossy_config from_v1(byte_reader& r) {
        lossy_config c;
        c.quantizer = lossy_quantizer(r.get<std::uint8_t>());
        c.predictor = lossy_predictor(r.get<std::uint8_t>());
        c.rate = lossy_rate(r.get<std::uint8_t>());
        c.coding = lossy::symbol_coding(r.get<std::uint8_t>());
        c.relative_step = get_f32(r);
        c.per_channel_step = get_bool(r);
        c.bits = r.get<std::uint8_t>();
        c.group_size = r.get<std::uint16_t>();
        c.key_axis = quant::scale_axis(r.get<std::uint8_t>());
        c.value_axis = quant::scale_axis(r.get<std::uint8_t>());
        c.channel_contexts = get_bool(r);
        c.outlier_fraction = get_f32(r);
        c.qjl = get_bool(r);
        c.seed = r.get<std::uint64_t>();
        c.error_bound = get_f32(r);
        c.relative_bound = get_bool(r);
        c.anchor_interval = r.get<std::uint32_t>();
        c.prior_weight = get_f32(r);
        const auto prerope = r.get<std::uint8_t>();
        require_format(prerope <= 2, "lossy config: bad pre-RoPE key mode");
        c.keys_prerope = prerope != 0, c.rope_interleaved = prerope == 2;
        const auto n = r.get<std::uint16_t>();
        for (std::uint16_t i = 0; i < n; ++i) c.rope_inv_freq.push_back(get_f32(r));
        c.table_hash = r.get<std::uint64_t>();
        c.surprisal_base_bits = r.get<std::uint8_t>();
        c.target_bits = get_f32(r);
        return c;
    }

    static void put_f32(byte_writer& w, float v) { w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(v)); }
    static float get_f32(byte_reader& r) {
        const float v = std::bit_cast<float>(r.get<std::uint32_t>());
        require_format(std::isfinite(v), "lossy config: non-finite value");
        return v;
    }
    static bool get_bool(byte_reader& r) {
        const auto v = r.get<std::uint8_t>();
        require_format(v <= 1, "lossy config: bad flag");
        return v == 1;
    }
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
