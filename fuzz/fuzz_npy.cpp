// libFuzzer target: .npy parsing (magic, header dict, dtype, shape, data size).
#include "fuzz_support.hpp"
#include "seqkv/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    seqkv::fuzz::expect_seqkv_errors_only([&] { (void)seqkv::io::parse_npy(std::span<const std::uint8_t>(data, size)); });
    return 0;
}
