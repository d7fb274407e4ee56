// seqkv::runtime: every lossy codec (7 quantizers x 6 predictors) with the adaptive symbol coder, scalar backend.
#include "runtime_part.hpp"

#include "seqkv/codec/lossy/runtime.hpp"

namespace seqkv::lossy {
SEQKV_LOSSY_RUNTIME_CODER(/* explicit instantiation definition */, backend::scalar, adaptive_range_symbols)
}  // namespace seqkv::lossy
