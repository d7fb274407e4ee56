// Streaming .skv writer (append tokens as they are generated, flush whole chunks) and a
// random-access reader (decode everything, or only the chunks a token range needs).
#pragma once

#include "seqkv/format/reader.hpp"
#include "seqkv/format/writer.hpp"
