// Compute backends, chosen at compile time as a policy type. The scalar backend is the
// reference; simd uses the xsimd/AVX2 rANS decode path where the build has it (it reads and
// writes the same bytes as scalar); a CUDA backend joins later through the same seam.
#pragma once

#include <concepts>

#include "seqkv/coding/rans_simd.hpp"

namespace seqkv::backend {

/// Portable reference kernels.
struct scalar {
    static constexpr const char* name = "scalar";
    static constexpr coding::rans::decode_path rans_decode = coding::rans::decode_path::scalar;
};

/// SIMD kernels where available (falls back to scalar at run time otherwise).
struct simd {
    static constexpr const char* name = "simd";
    static constexpr coding::rans::decode_path rans_decode = coding::rans::decode_path::automatic;
};

/// A backend names itself and picks the rANS decode path.
template <class B>
concept Backend = requires {
    { B::name } -> std::convertible_to<const char*>;
    { B::rans_decode } -> std::convertible_to<coding::rans::decode_path>;
};

static_assert(Backend<scalar>);
static_assert(Backend<simd>);

}  // namespace seqkv::backend
