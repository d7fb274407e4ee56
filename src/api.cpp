// seqkv::runtime: compress / decompress for both backends (the container code they run; the
// codecs are in the other files of src/).
#include "runtime_part.hpp"

#include "seqkv/api.hpp"

namespace seqkv {
SEQKV_API_INSTANCES(/* explicit instantiation definition */, backend::simd)
SEQKV_API_INSTANCES(/* explicit instantiation definition */, backend::scalar)
}  // namespace seqkv
