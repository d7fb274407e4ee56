// libFuzzer target: the entropy decoders and the lossless block decoder on raw bytes.
// Byte 0 picks the decoder, bytes 1..4 the output shape; the rest is the coded block. Every
// rANS decode runs on the scalar and the SIMD path (where the CPU has one) and the lossless
// block decode with and without token references: the scalar and SIMD outputs must be equal.
#include <cstdlib>

#include "fuzz_support.hpp"
#include "seqkv/codec/lossless/planes.hpp"
#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/rans_block.hpp"

namespace {

using namespace seqkv;
using coding::rans::decode_path;

template <class T, class F>
void both_paths(std::size_t n, F&& decode) {
    std::vector<T> a(n), b(n);
    bool ok_a = false, ok_b = false;
    fuzz::expect_seqkv_errors_only([&] { decode(std::span<T>(a), decode_path::scalar), ok_a = true; });
    if (!coding::rans::simd_decode_available()) return;
    fuzz::expect_seqkv_errors_only([&] { decode(std::span<T>(b), decode_path::automatic), ok_b = true; });
    if (ok_a != ok_b || (ok_a && a != b)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 5) return 0;
    const std::uint8_t which = data[0] % 5;
    const std::uint32_t n = load_le16(data + 1) % 4097;     // symbols / tokens
    const std::uint32_t shape = load_le16(data + 3);
    const std::span<const std::uint8_t> coded(data + 5, size - 5);
    const std::uint32_t contexts = 1 + (shape & 7);
    std::vector<std::uint8_t> ctx8(n);
    std::vector<std::uint16_t> ctx16(n);
    for (std::uint32_t i = 0; i < n; ++i) ctx8[i] = std::uint8_t(i % contexts), ctx16[i] = std::uint16_t(i % contexts);
    switch (which) {
        case 0:
            both_paths<std::uint8_t>(n, [&](std::span<std::uint8_t> out, decode_path p) {
                coding::decode_bytes(coded, (shape & 8) ? std::span<const std::uint8_t>(ctx8) : std::span<const std::uint8_t>{}, out, p);
            });
            break;
        case 1:
            both_paths<std::uint16_t>(n, [&](std::span<std::uint16_t> out, decode_path p) {
                coding::decode_block(coded, (shape & 8) ? std::span<const std::uint16_t>(ctx16) : std::span<const std::uint16_t>{}, out, p);
            });
            break;
        case 2:
            fuzz::expect_seqkv_errors_only([&] {
                std::vector<std::uint16_t> out(n);
                coding::decode_range_block(coded, (shape & 8) ? std::span<const std::uint16_t>(ctx16) : std::span<const std::uint16_t>{}, out);
            });
            break;
        default: {  // lossless block: heads 1..4, head_dim 1..128 (even), tokens n % 257, dtype from the shape bits
            const dtype types[] = {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2};
            const dtype t = types[((shape >> 3) & 7) % 5];
            const lossless::block_shape s{1 + (shape & 3), n % 257, 2 * (1 + ((shape >> 6) & 63))};
            std::vector<std::int32_t> ids(s.tokens);
            for (std::uint64_t i = 0; i < s.tokens; ++i) ids[i] = std::int32_t((i * 7) % 5);  // repeats: references exist
            const bool with_refs = which == 4;
            const std::optional<lossless::rope::parameters> rope =
                with_refs ? std::optional<lossless::rope::parameters>(lossless::rope::parameters{}) : std::nullopt;
            both_paths<std::uint8_t>(s.elements() * dtype_size(t), [&](std::span<std::uint8_t> out, decode_path p) {
                lossless::decode_block(coded, t, s, out, p, with_refs ? std::span<const std::int32_t>(ids) : std::span<const std::int32_t>{}, rope);
            });
        }
    }
    return 0;
}
