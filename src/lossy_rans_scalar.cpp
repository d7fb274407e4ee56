// seqkv::runtime: every lossy codec (7 quantizers x 6 predictors) with the rans symbol coder, scalar backend.
#include "runtime_part.hpp"

#include "seqkv/codec/lossy/runtime.hpp"

namespace seqkv::lossy {
SEQKV_LOSSY_RUNTIME_CODER(/* explicit instantiation definition */, backend::scalar, grouped_rans_symbols<true>)
}  // namespace seqkv::lossy
