// Symbol streams of the lossy codec, behind one small interface so the entropy stage can change
// without touching quantizers: `packed` spends bits_for_alphabet(alphabet) bits per symbol (what
// per-vector quantizers store in practice); `adaptive` codes each symbol with the coding/
// library's range coder under an adaptive order-0 model per context (no tables to ship).
// Symbols are coded one at a time, interleaved with closed-loop reconstruction, so contexts may
// depend on anything the decoder already knows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/quant/quantizer.hpp"

namespace seqkv::lossy {

/// How quantized symbols become bytes. Values are stored in configs.
enum class symbol_coding : std::uint8_t { packed = 0, adaptive = 1 };

/// Encoder side: put() symbols under contexts, then finish() once.
class symbol_writer {
public:
    symbol_writer(symbol_coding mode, byte_vector& out) : mode_(mode), out_(&out), range_(out) {}

    /// Starts a new model set (one per context, with its alphabet size); resets adaptation.
    void set_models(std::span<const std::uint32_t> alphabets) {
        alphabets_.assign(alphabets.begin(), alphabets.end());
        models_.clear();
        if (mode_ == symbol_coding::adaptive)
            for (auto a : alphabets_) models_.emplace_back(a);
    }
    void put(std::uint32_t symbol, std::uint32_t context) {
        require_usage(context < alphabets_.size() && symbol < alphabets_[context], "symbol_writer: symbol out of range");
        if (mode_ == symbol_coding::adaptive) {
            coding::encode_symbol(range_, models_[context], symbol);
            return;
        }
        const unsigned bits = quant::bits_for_alphabet(alphabets_[context]);
        bit_buffer_ |= std::uint64_t(symbol) << bit_count_;
        bit_count_ += bits;
        while (bit_count_ >= 8) {
            out_->push_back(static_cast<std::uint8_t>(bit_buffer_));
            bit_buffer_ >>= 8;
            bit_count_ -= 8;
        }
    }
    void finish() {
        if (mode_ == symbol_coding::adaptive) {
            range_.finish();
        } else if (bit_count_ > 0) {
            out_->push_back(static_cast<std::uint8_t>(bit_buffer_));
            bit_count_ = 0;
        }
    }

private:
    symbol_coding mode_;
    byte_vector* out_;
    coding::range_encoder range_;
    std::vector<std::uint32_t> alphabets_;
    std::vector<coding::adaptive_frequency_model> models_;
    std::uint64_t bit_buffer_ = 0;
    unsigned bit_count_ = 0;
};

/// Decoder side, mirroring symbol_writer call for call. Corrupt input yields format_error at
/// the latest in finish(), never an out-of-bounds read.
class symbol_reader {
public:
    symbol_reader(symbol_coding mode, std::span<const std::uint8_t> bytes) : mode_(mode), bytes_(bytes), range_(bytes) {}

    void set_models(std::span<const std::uint32_t> alphabets) {
        alphabets_.assign(alphabets.begin(), alphabets.end());
        models_.clear();
        if (mode_ == symbol_coding::adaptive)
            for (auto a : alphabets_) models_.emplace_back(a);
    }
    std::uint16_t get(std::uint32_t context) {
        require_usage(context < alphabets_.size(), "symbol_reader: context out of range");
        if (mode_ == symbol_coding::adaptive) {
            if (range_.overrun_bytes() > 8) throw format_error("lossy symbol stream truncated");
            return static_cast<std::uint16_t>(coding::decode_symbol(range_, models_[context]));
        }
        const unsigned bits = quant::bits_for_alphabet(alphabets_[context]);
        while (bit_count_ < bits) {
            if (position_ >= bytes_.size()) throw format_error("lossy packed symbol stream truncated");
            bit_buffer_ |= std::uint64_t(bytes_[position_++]) << bit_count_;
            bit_count_ += 8;
        }
        const auto symbol = static_cast<std::uint32_t>(bit_buffer_ & ((std::uint64_t(1) << bits) - 1));
        bit_buffer_ >>= bits;
        bit_count_ -= bits;
        if (symbol >= alphabets_[context]) throw format_error("lossy packed symbol out of range");
        return static_cast<std::uint16_t>(symbol);
    }
    /// Checks that the stream was consumed consistently.
    void finish() const {
        if (mode_ == symbol_coding::adaptive) {
            if (range_.overrun_bytes() > 3) throw format_error("lossy symbol stream truncated");
        } else if (position_ != bytes_.size()) {
            throw format_error("lossy packed symbol stream has trailing bytes");
        }
    }

private:
    symbol_coding mode_;
    std::span<const std::uint8_t> bytes_;
    coding::range_decoder range_;
    std::vector<std::uint32_t> alphabets_;
    std::vector<coding::adaptive_frequency_model> models_;
    std::uint64_t bit_buffer_ = 0;
    unsigned bit_count_ = 0;
    std::size_t position_ = 0;
};

}  // namespace seqkv::lossy
