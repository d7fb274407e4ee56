// .npy reader: files written by NumPy itself (Debian's python3-numpy via torch) and bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "seqkv/io/npy.hpp"

namespace {

using namespace seqkv;

byte_vector npy_image(const std::string& header_dict, std::size_t data_bytes, std::uint8_t major = 1) {
    std::string h = header_dict;
    while ((10 + h.size() + 1) % 64 != 0) h.push_back(' ');
    h.push_back('\n');
    byte_vector out = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
    byte_writer w(out);
    if (major == 1) w.put<std::uint16_t>(static_cast<std::uint16_t>(h.size()));
    else w.put<std::uint32_t>(static_cast<std::uint32_t>(h.size()));
    out.insert(out.end(), h.begin(), h.end());
    for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::uint8_t>(i));
    return out;
}

TEST(Npy, ParsesHeadersAndData) {
    auto a = io::parse_npy(npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24));
    EXPECT_EQ(a.type, dtype::f32);
    EXPECT_EQ(a.shape, (std::vector<std::uint64_t>{2, 3}));
    EXPECT_EQ(a.bytes.size(), 24u);
    EXPECT_EQ(a.bytes[5], 5);
    auto s = io::parse_npy(npy_image("{'descr': '<f2', 'fortran_order': False, 'shape': (), }", 2, 2));
    EXPECT_TRUE(s.shape.empty());
    auto v = io::parse_npy(npy_image("{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", 20));
    EXPECT_EQ(v.shape, (std::vector<std::uint64_t>{5}));
}

TEST(Npy, RejectsMalformedFiles) {
    const std::vector<byte_vector> bad = {
        byte_vector{1, 2, 3},
        npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23),
        npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
        npy_image("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8),
        npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 4),
        npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999), }", 4),
        npy_image("{'descr': '<f4', 'fortran_order': False}", 4),
    };
    for (const auto& b : bad) EXPECT_THROW(io::parse_npy(b), format_error);
    auto ok = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16);
    for (std::size_t n = 0; n < ok.size(); ++n)
        EXPECT_THROW(io::parse_npy(std::span(ok).first(n)), format_error) << n;
}

TEST(Npy, ReadsWhatNumpyWrites) {
    const auto path = std::filesystem::temp_directory_path() / "seqkv_numpy_written.npy";
    const std::string cmd = "/usr/bin/python3 -c \"import numpy as np; np.save('" + path.string() +
                            "', np.arange(24, dtype=np.float16).reshape(2,3,4))\" 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "Debian's python3-numpy is not installed";
    const auto a = io::load_npy(path);
    EXPECT_EQ(a.type, dtype::f16);
    EXPECT_EQ(a.shape, (std::vector<std::uint64_t>{2, 3, 4}));
    EXPECT_EQ(fp16_to_float(load_le16(a.bytes.data() + 2 * 23)), 23.0f);
    std::filesystem::remove(path);
}

}  // namespace
