// Umbrella header for seqkv's entropy coding stage.
#pragma once

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/context_model.hpp"
#include "seqkv/coding/entropy_coder.hpp"
#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/coding/parametric_model.hpp"
#include "seqkv/coding/pow2_adaptive_model.hpp"
#include "seqkv/coding/range_block.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "seqkv/coding/rans_interleaved.hpp"
#include "seqkv/coding/rans_simd.hpp"
#include "seqkv/coding/varint.hpp"
