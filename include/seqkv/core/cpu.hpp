// Run-time CPU feature checks shared by the SIMD kernels (function-level target attributes,
// so a default build carries the kernels and picks them only on CPUs that have the feature).
#pragma once

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SEQKV_X86_AVX2_KERNELS 1
#include <immintrin.h>
#else
#define SEQKV_X86_AVX2_KERNELS 0
#endif

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// True when this build has the AVX2 kernels and the CPU it runs on supports AVX2.
inline bool cpu_has_avx2() {
#if SEQKV_X86_AVX2_KERNELS
    static const bool available = __builtin_cpu_supports("avx2");
    return available;
#else
    return false;
#endif
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
