// Lossless pass-through quantizer: the element's own little-endian bytes are the symbols
// (one context per byte position), so reconstruction equals the original bit for bit.
// The prediction is ignored; an entropy coder still gains from the skewed high (exponent) byte.
#pragma once

#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// Bit-exact pass-through; symbols are the element's bytes in the block's dtype.
class lossless : public shape_only_params {
public:

    std::uint32_t symbols_per_row(const params& p) const { return p.shape.cols * element_bytes(p); }
    std::uint32_t context_count(const params& p) const { return element_bytes(p); }
    std::uint32_t symbol_context(const params& p, std::uint32_t index) const { return index % element_bytes(p); }
    std::uint32_t context_alphabet(const params&, std::uint32_t) const { return 256; }

    void quantize_row(const params& p, row_hint, std::span<const float> x, std::span<const float>,
                      std::span<std::uint16_t> symbols, byte_writer&, std::span<float> recon) const {
        const std::uint32_t es = element_bytes(p);
        std::uint8_t bytes[4];
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            store_from_float(bytes, p.shape.output_type, 0, x[c]);
            for (std::uint32_t b = 0; b < es; ++b) symbols[c * es + b] = bytes[b];
            recon[c] = load_as_float(bytes, p.shape.output_type, 0);
        }
    }
    void dequantize_row(const params& p, row_hint, std::span<const float>, std::span<const std::uint16_t> symbols,
                        byte_reader&, std::span<float> recon) const {
        const std::uint32_t es = element_bytes(p);
        std::uint8_t bytes[4];
        for (std::uint32_t c = 0; c < p.shape.cols; ++c) {
            for (std::uint32_t b = 0; b < es; ++b) bytes[b] = static_cast<std::uint8_t>(symbols[c * es + b]);
            recon[c] = load_as_float(bytes, p.shape.output_type, 0);
        }
    }

private:
    static std::uint32_t element_bytes(const params& p) { return static_cast<std::uint32_t>(dtype_size(p.shape.output_type)); }
};
static_assert(Quantizer<lossless>);

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
