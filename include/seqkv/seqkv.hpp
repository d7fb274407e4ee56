// seqkv umbrella header: everything that needs only the C++20 standard library.
// Optional extras have their own headers: seqkv/io/safetensors.hpp (nlohmann-json),
// seqkv/backend/simd.hpp (xsimd).
#pragma once

#include "seqkv/version.hpp"

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/file_io.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/checksum.hpp"

#include "seqkv/api.hpp"
#include "seqkv/codec/codec.hpp"
