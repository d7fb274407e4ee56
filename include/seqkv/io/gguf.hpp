// GGUF metadata reader: the key/value header of a GGUF model file (versions 2 and 3), nothing
// after it. Scalars and strings are kept; arrays keep their element type and count, numeric
// arrays of up to max_kept_array elements also their values (string arrays such as the
// vocabulary are skipped without being stored). From a file only the header is read, with
// every length checked against the bytes left in the file before anything is allocated.
// attention_model_of() picks out what a KV codec needs (KV heads, head size, RoPE).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io::gguf {

inline constexpr std::uint32_t magic = 0x46554747u;  // "GGUF"

/// GGUF value type codes.
enum class value_type : std::uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
    string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

/// An array value: element type, count, and the numbers of a small numeric array.
struct array_value {
    value_type element = value_type::u8;
    std::uint64_t count = 0;
    std::vector<double> numbers;  // filled for numeric/bool arrays of at most max_kept_array elements
};

/// A metadata value (integers widened to 64 bits, floats to double).
using value = std::variant<std::uint64_t, std::int64_t, double, bool, std::string, array_value>;

/// Limits applied to untrusted GGUF headers.
struct gguf_limits {
    std::uint64_t max_keys = 1u << 20;
    std::uint64_t max_key_bytes = 65535;
    std::uint64_t max_string_bytes = 16u << 20;
    std::uint64_t max_kept_array = 1u << 16;
};

/// The parsed key/value header of a GGUF file.
struct metadata {
    std::uint32_t version = 0;
    std::uint64_t tensor_count = 0;
    std::map<std::string, value> values;

    /// The string stored under key, or nullopt (absent or not a string).
    std::optional<std::string> get_string(const std::string& key) const {
        const auto it = values.find(key);
        if (it == values.end() || !std::holds_alternative<std::string>(it->second)) return std::nullopt;
        return std::get<std::string>(it->second);
    }
    /// The number stored under key (any integer or float type; a numeric array whose elements
    /// are all equal counts as that number), or nullopt.
    std::optional<double> get_number(const std::string& key) const {
        const auto it = values.find(key);
        if (it == values.end()) return std::nullopt;
        if (auto* u = std::get_if<std::uint64_t>(&it->second)) return double(*u);
        if (auto* i = std::get_if<std::int64_t>(&it->second)) return double(*i);
        if (auto* d = std::get_if<double>(&it->second)) return *d;
        if (auto* a = std::get_if<array_value>(&it->second); a && !a->numbers.empty() && a->numbers.size() == a->count) {
            for (double x : a->numbers)
                if (x != a->numbers[0]) throw format_error("gguf: '" + key + "' differs between layers");
            return a->numbers[0];
        }
        return std::nullopt;
    }
};

namespace detail {

// Bytes of one scalar of type t (0 for strings and arrays).
inline std::size_t scalar_bytes(value_type t) {
    switch (t) {
        case value_type::u8: case value_type::i8: case value_type::boolean: return 1;
        case value_type::u16: case value_type::i16: return 2;
        case value_type::u32: case value_type::i32: case value_type::f32: return 4;
        case value_type::u64: case value_type::i64: case value_type::f64: return 8;
        default: return 0;
    }
}

inline value scalar_of(value_type t, const std::uint8_t* p) {
    std::uint64_t u = 0;
    const std::size_t n = scalar_bytes(t);
    for (std::size_t i = 0; i < n; ++i) u |= std::uint64_t(p[i]) << (8 * i);
    switch (t) {
        case value_type::u8: case value_type::u16: case value_type::u32: case value_type::u64: return u;
        case value_type::i8: return std::int64_t(std::int8_t(u));
        case value_type::i16: return std::int64_t(std::int16_t(u));
        case value_type::i32: return std::int64_t(std::int32_t(u));
        case value_type::i64: return std::int64_t(u);
        case value_type::f32: return double(std::bit_cast<float>(std::uint32_t(u)));
        case value_type::f64: return std::bit_cast<double>(u);
        case value_type::boolean:
            if (u > 1) throw format_error("gguf: bool value " + std::to_string(u));
            return u == 1;
        default: throw format_error("gguf: not a scalar type");
    }
}

inline double number_of(const value& v) {
    if (auto* u = std::get_if<std::uint64_t>(&v)) return double(*u);
    if (auto* i = std::get_if<std::int64_t>(&v)) return double(*i);
    if (auto* b = std::get_if<bool>(&v)) return *b ? 1.0 : 0.0;
    return std::get<double>(v);
}

// Reads from a span or from a file stream; `remaining` is exact in both cases.
class cursor {
public:
    explicit cursor(std::span<const std::uint8_t> bytes) : span_(bytes), remaining_(bytes.size()) {}
    cursor(std::istream& in, std::uint64_t size) : in_(&in), remaining_(size) {}

    std::uint64_t remaining() const { return remaining_; }
    void read(std::uint8_t* dst, std::uint64_t n) {
        need(n);
        if (in_) {
            if (!in_->read(reinterpret_cast<char*>(dst), std::streamsize(n))) throw io_error("gguf: short read");
        } else {
            std::memcpy(dst, span_.data() + pos_, n);
        }
        pos_ += n;
        remaining_ -= n;
    }
    void skip(std::uint64_t n) {
        need(n);
        if (in_ && !in_->seekg(std::streamoff(n), std::ios::cur)) throw io_error("gguf: seek failed");
        pos_ += n;
        remaining_ -= n;
    }
    template <class T>
    T get() {
        std::uint8_t b[8];
        read(b, sizeof(T));
        std::uint64_t u = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) u |= std::uint64_t(b[i]) << (8 * i);
        return static_cast<T>(u);
    }
    std::string get_string(std::uint64_t max_bytes, const char* what) {
        const auto n = get<std::uint64_t>();
        if (n > max_bytes) throw limit_error(std::string("gguf: ") + what + " of " + std::to_string(n) + " bytes");
        need(n);
        std::string s(n, '\0');
        read(reinterpret_cast<std::uint8_t*>(s.data()), n);
        return s;
    }

private:
    void need(std::uint64_t n) const {
        if (n > remaining_)
            throw format_error("gguf: truncated: need " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
                               ", have " + std::to_string(remaining_));
    }
    std::span<const std::uint8_t> span_;
    std::istream* in_ = nullptr;
    std::uint64_t pos_ = 0;
    std::uint64_t remaining_ = 0;
};

inline value_type get_type(cursor& c) {
    const auto t = c.get<std::uint32_t>();
    if (t > 12) throw format_error("gguf: unknown value type " + std::to_string(t));
    return static_cast<value_type>(t);
}

inline value get_value(cursor& c, value_type t, const gguf_limits& lim) {
    if (t == value_type::string) return c.get_string(lim.max_string_bytes, "string");
    if (t != value_type::array) {
        std::uint8_t b[8];
        c.read(b, scalar_bytes(t));
        return scalar_of(t, b);
    }
    array_value a;
    a.element = get_type(c);
    if (a.element == value_type::array) throw format_error("gguf: nested arrays are not supported");
    a.count = c.get<std::uint64_t>();
    if (a.element == value_type::string) {
        if (a.count > c.remaining() / 8) throw format_error("gguf: array count exceeds the file");
        for (std::uint64_t i = 0; i < a.count; ++i) {
            const auto n = c.get<std::uint64_t>();
            if (n > lim.max_string_bytes) throw limit_error("gguf: array string of " + std::to_string(n) + " bytes");
            c.skip(n);
        }
        return a;
    }
    const std::size_t es = scalar_bytes(a.element);
    if (a.count > c.remaining() / es) throw format_error("gguf: array count exceeds the file");
    if (a.count > lim.max_kept_array) {
        c.skip(a.count * es);
        return a;
    }
    a.numbers.reserve(a.count);
    for (std::uint64_t i = 0; i < a.count; ++i) {
        std::uint8_t b[8];
        c.read(b, es);
        a.numbers.push_back(number_of(scalar_of(a.element, b)));
    }
    return a;
}

inline metadata parse(cursor& c, const gguf_limits& lim) {
    if (c.get<std::uint32_t>() != magic) throw format_error("gguf: bad magic (not a GGUF file)");
    metadata m;
    m.version = c.get<std::uint32_t>();
    if (m.version != 2 && m.version != 3) throw format_error("gguf: unsupported version " + std::to_string(m.version));
    m.tensor_count = c.get<std::uint64_t>();
    const auto keys = c.get<std::uint64_t>();
    if (keys > lim.max_keys || keys > c.remaining() / 12) throw format_error("gguf: key count " + std::to_string(keys));
    for (std::uint64_t i = 0; i < keys; ++i) {
        auto key = c.get_string(lim.max_key_bytes, "key");
        const auto t = get_type(c);
        auto v = get_value(c, t, lim);
        if (!m.values.emplace(std::move(key), std::move(v)).second) throw format_error("gguf: duplicate key");
    }
    return m;
}

}  // namespace detail

/// Parses the metadata header at the start of a GGUF image (the tensor data may be absent).
inline metadata parse_metadata(std::span<const std::uint8_t> bytes, const gguf_limits& limits = {}) {
    detail::cursor c(bytes);
    return detail::parse(c, limits);
}

/// Reads only the metadata header of a GGUF file.
inline metadata load_metadata(const std::filesystem::path& path, const gguf_limits& limits = {}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error("cannot open '" + path.string() + "' for reading");
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw io_error("cannot determine the size of '" + path.string() + "'");
    detail::cursor c(in, size);
    try {
        return detail::parse(c, limits);
    } catch (const format_error& e) {
        rethrow_in_context(e, "'" + path.string() + "': ");
    }
}

/// How a model's RoPE pairs the channels of a head.
enum class rope_pairing : std::uint8_t {
    none = 0,         // no RoPE (or one seqkv cannot predict: M-RoPE, partial rotary dims)
    interleaved = 1,  // llama.cpp LLAMA_ROPE_TYPE_NORM: channel 2i pairs with 2i + 1
    rotate_half = 2,  // llama.cpp LLAMA_ROPE_TYPE_NEOX: channel i pairs with i + D/2
};

/// llama.cpp's RoPE pairing of an architecture (general.architecture), nullopt when unknown.
inline std::optional<rope_pairing> llama_rope_pairing(const std::string& arch) {
    static const char* const interleaved[] = {
        "llama", "llada", "llama4", "deci", "baichuan", "starcoder", "internlm2", "minicpm", "xverse", "command-r",
        "cohere2", "olmo", "arctic", "deepseek", "deepseek2", "plm", "chatglm", "granite", "granitemoe", "chameleon",
        "bailingmoe", "smollm3", "arcee", "ernie4_5", "ernie4_5-moe", "mistral3"};
    static const char* const rotate_half[] = {
        "falcon", "grok", "dbrx", "bert", "stablelm", "bitnet", "qwen", "qwen2", "qwen2moe", "qwen3", "qwen3moe",
        "olmo2", "olmoe", "phi2", "phi3", "phimoe", "plamo", "gemma", "gemma2", "gemma3", "gemma3n", "starcoder2",
        "openelm", "gptneox", "codeshell", "orion", "nemotron", "exaone", "exaone4", "minicpm3", "dots1",
        "hunyuan-moe", "gpt-oss", "hunyuan-dense", "lfm2", "smallthinker", "seed_oss", "apertus"};
    static const char* const none[] = {"gpt2", "gptj", "mpt", "refact", "bloom", "jais", "t5", "t5encoder",
                                       "qwen2vl", "qwen3vl", "qwen3vlmoe"};
    for (const char* a : interleaved)
        if (arch == a) return rope_pairing::interleaved;
    for (const char* a : rotate_half)
        if (arch == a) return rope_pairing::rotate_half;
    for (const char* a : none)
        if (arch == a) return rope_pairing::none;
    return std::nullopt;
}

/// What a KV codec needs to know about a model's attention, from its GGUF metadata.
struct attention_model {
    std::string arch;
    std::uint32_t layers = 0;
    std::uint32_t kv_heads = 0;
    std::uint32_t head_dim = 0;    // key_length, else embedding_length / head_count
    std::uint32_t value_dim = 0;   // value_length, else head_dim
    double rope_theta = 0;         // rope.freq_base (llama.cpp's default 10000 when absent)
    rope_pairing rope = rope_pairing::none;
    bool rope_known = false;       // false: the architecture is not in llama_rope_pairing's table
    bool mla = false;              // multi-head latent attention: llama.cpp caches K only
};

/// Reads {arch}.block_count, attention.head_count(_kv), key/value_length, rope.freq_base and
/// rope.dimension_count; format_error when a required key is missing or inconsistent.
inline attention_model attention_model_of(const metadata& m) {
    attention_model a;
    const auto arch = m.get_string("general.architecture");
    if (!arch || arch->empty()) throw format_error("gguf: no general.architecture");
    a.arch = *arch;
    const auto count = [&](const std::string& key) -> std::optional<std::uint32_t> {
        const auto v = m.get_number(a.arch + "." + key);
        if (!v) return std::nullopt;
        if (!(*v >= 1 && *v <= 1048576) || *v != double(std::uint32_t(*v)))
            throw format_error("gguf: " + a.arch + "." + key + " is not a positive count");
        return std::uint32_t(*v);
    };
    const auto layers = count("block_count");
    const auto heads = count("attention.head_count");
    if (!layers || !heads) throw format_error("gguf: " + a.arch + ".block_count / attention.head_count missing");
    a.layers = *layers;
    a.kv_heads = count("attention.head_count_kv").value_or(*heads);
    if (auto k = count("attention.key_length")) {
        a.head_dim = *k;
    } else {
        const auto embd = count("embedding_length");
        if (!embd || *embd % *heads) throw format_error("gguf: cannot tell the head size of " + a.arch);
        a.head_dim = *embd / *heads;
    }
    a.value_dim = count("attention.value_length").value_or(a.head_dim);
    a.mla = m.values.count(a.arch + ".attention.key_length_mla") > 0;
    const auto theta = m.get_number(a.arch + ".rope.freq_base");
    a.rope_theta = theta.value_or(10000.0);
    if (!(a.rope_theta >= 1 && a.rope_theta <= 1e18)) throw format_error("gguf: rope.freq_base out of range");
    const auto pairing = llama_rope_pairing(a.arch);
    a.rope_known = pairing.has_value();
    a.rope = pairing.value_or(rope_pairing::none);
    // Partial rotary embeddings (rope.dimension_count < head size) rotate only some channels.
    if (auto dims = count("rope.dimension_count"); dims && *dims != a.head_dim) a.rope = rope_pairing::none;
    return a;
}

}  // namespace seqkv::io::gguf

SEQKV_FP_STRICT_END
