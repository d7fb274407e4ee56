// Compute backends, chosen at compile time as a policy type: an executor that runs block workers
// over a batch of blocks, and a list of instruction-set architectures whose kernels the backend
// may pick at run time (first one the CPU supports wins, as xsimd's arch lists do). scalar is the
// reference; simd adds the AVX2 kernels (same bytes as scalar); a CUDA backend joins later with a
// grid executor through the same seam.
#pragma once

#include <concepts>
#include <string_view>

#include "seqkv/backend/executor.hpp"
#include "seqkv/coding/rans_simd.hpp"
#include "seqkv/core/cpu.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::backend {

/// Architectures kernels are written for. Each names itself and says whether this CPU runs it.
struct generic_arch {
    static constexpr std::string_view name = "generic";
    static bool available() { return true; }
};
struct avx2_arch {
    static constexpr std::string_view name = "avx2";
    static bool available() { return cpu_has_avx2(); }
};

/// An ordered list of architectures, best first; the last should be generic_arch.
template <class... Archs>
struct arch_list {
    /// Calls f(Arch{}) for the first available Arch and returns its result.
    template <class F>
    static decltype(auto) dispatch(F&& f) {
        return dispatch_from<Archs...>(f);
    }
    /// Name of the architecture dispatch() picks on this CPU.
    static std::string_view selected() {
        return dispatch([](auto arch) { return decltype(arch)::name; });
    }

private:
    template <class First, class... Rest, class F>
    static decltype(auto) dispatch_from(F& f) {
        if constexpr (sizeof...(Rest) == 0) {
            return f(First{});
        } else {
            if (First::available()) return f(First{});
            return dispatch_from<Rest...>(f);
        }
    }
};

/// The rANS decode path for an architecture.
constexpr coding::rans::decode_path rans_path(generic_arch) { return coding::rans::decode_path::scalar; }
constexpr coding::rans::decode_path rans_path(avx2_arch) { return coding::rans::decode_path::simd; }

/// Portable reference kernels; thread-pool executor.
struct scalar {
    static constexpr const char* name = "scalar";
    using archs = arch_list<generic_arch>;
    using executor = thread_pool;
};

/// SIMD kernels where the CPU has them (AVX2), else the generic ones; thread-pool executor.
struct simd {
    static constexpr const char* name = "simd";
    using archs = arch_list<avx2_arch, generic_arch>;
    using executor = thread_pool;
};

/// A backend names itself, lists its kernel architectures and its executor type.
template <class B>
concept Backend = requires {
    { B::name } -> std::convertible_to<const char*>;
    typename B::archs;
    typename B::executor;
    { B::archs::selected() } -> std::convertible_to<std::string_view>;
};

/// The rANS decode path Backend selects on this CPU.
template <Backend B>
coding::rans::decode_path rans_decode_path() {
    return B::archs::dispatch([](auto arch) { return rans_path(arch); });
}

static_assert(Backend<scalar>);
static_assert(Backend<simd>);

}  // namespace seqkv::backend

SEQKV_FP_STRICT_END
