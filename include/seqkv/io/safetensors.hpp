// safetensors reader and writer (needs nlohmann-json). The reader validates the header length,
// every dtype, shape and data offset against the file size, and rejects overlapping tensors,
// before any tensor byte is touched. Metadata and unknown tensors are preserved.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/file_io.hpp"
#include "seqkv/io/mapped_file.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// Limits applied to untrusted safetensors input.
struct safetensors_limits {
    std::uint64_t max_header_bytes = 100ull << 20;  // the format's own cap
    std::size_t max_tensors = 1u << 20;
    std::size_t max_rank = 8;
};

/// One tensor of a safetensors file; bytes point into the owning safetensors_file.
struct tensor_entry {
    std::string name;
    dtype type = dtype::u8;
    std::vector<std::uint64_t> shape;
    std::span<const std::uint8_t> bytes;

    /// Number of elements (product of the shape; 1 for a scalar).
    std::uint64_t element_count() const {
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
};

/// A parsed safetensors file that owns (or maps) its bytes. Move-only (entries point into them).
class safetensors_file {
public:
    safetensors_file() = default;
    safetensors_file(const safetensors_file&) = delete;
    safetensors_file& operator=(const safetensors_file&) = delete;
    safetensors_file(safetensors_file&&) noexcept = default;
    safetensors_file& operator=(safetensors_file&&) noexcept = default;

    /// Parses and validates a whole file image; throws format_error / limit_error on bad input.
    static safetensors_file parse(byte_vector data, const safetensors_limits& limits = {}) {
        safetensors_file f;
        f.data_ = std::move(data);
        f.bytes_ = f.data_;
        f.index(limits);
        return f;
    }
    /// Parses a file mapped in place (io/mapped_file.hpp): nothing is copied, only the pages the
    /// caller reads are loaded, so a dump larger than memory can be compressed.
    static safetensors_file parse(std::shared_ptr<const mapped_file> file, const safetensors_limits& limits = {}) {
        safetensors_file f;
        f.bytes_ = file->bytes();
        f.mapped_ = std::move(file);
        f.index(limits);
        return f;
    }
    /// Reads and parses a file from disk.
    static safetensors_file load(const std::filesystem::path& path, const safetensors_limits& limits = {}) {
        return named_errors(path, [&] { return parse(read_file(path), limits); });
    }
    /// Maps and parses a file from disk (no copy; see parse(mapped_file)).
    static safetensors_file map(const std::filesystem::path& path, const safetensors_limits& limits = {}) {
        return named_errors(path, [&] { return parse(std::make_shared<const mapped_file>(mapped_file::open(path)), limits); });
    }

    /// Tensors in file order (ascending data offset).
    const std::vector<tensor_entry>& tensors() const { return tensors_; }
    /// The `__metadata__` string map (empty if absent).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    /// The tensor called name, or nullptr.
    const tensor_entry* find(std::string_view name) const {
        for (const auto& t : tensors_)
            if (t.name == name) return &t;
        return nullptr;
    }
    /// The tensor called name; throws format_error if it is missing.
    const tensor_entry& at(std::string_view name) const {
        if (const auto* t = find(name)) return *t;
        throw format_error("safetensors: missing tensor '" + std::string(name) + "'");
    }

private:
    void index(const safetensors_limits& limits);
    /// Runs parse, naming the file once in an error, keeping the error's type.
    template <class F>
    static safetensors_file named_errors(const std::filesystem::path& path, F&& parse_it) {
        try {
            return parse_it();
        } catch (const format_error& e) {
            rethrow_in_context(e, "'" + path.string() + "': ");
        }
    }

    byte_vector data_;                           // the file's bytes when read (parse(byte_vector))
    std::shared_ptr<const mapped_file> mapped_;  // or its mapping (parse(mapped_file))
    std::span<const std::uint8_t> bytes_;        // the one of them in use
    std::vector<tensor_entry> tensors_;
    std::map<std::string, std::string> metadata_;
};

inline void safetensors_file::index(const safetensors_limits& limits) {
    using nlohmann::json;
    if (bytes_.size() < 8) throw format_error("not a safetensors file: shorter than its 8-byte header length");
    std::uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= std::uint64_t(bytes_[i]) << (8 * i);
    // A safetensors header is a JSON object right after its length: anything else (a text file, a
    // .skv, a numpy file) is named for what it is not, before its first bytes are read as a length.
    if (bytes_.size() > 8 && header_len > 0 && bytes_[8] != '{')
        throw format_error("not a safetensors file: no JSON header after the 8-byte length (file of " +
                           std::to_string(bytes_.size()) + " bytes)");
    if (header_len > limits.max_header_bytes)
        throw limit_error("safetensors: header length " + std::to_string(header_len));
    if (header_len > bytes_.size() - 8)
        throw format_error("safetensors: header length " + std::to_string(header_len) + " exceeds the file size " +
                           std::to_string(bytes_.size()));
    const auto* header_begin = reinterpret_cast<const char*>(bytes_.data() + 8);
    json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded() || !header.is_object()) throw format_error("safetensors: header is not a JSON object");
    if (header.size() > limits.max_tensors + 1)
        throw limit_error("safetensors: " + std::to_string(header.size()) + " header entries");

    const std::span<const std::uint8_t> payload(bytes_.data() + 8 + header_len, bytes_.size() - 8 - header_len);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const json& entry = it.value();
        if (name == "__metadata__") {
            if (!entry.is_object()) throw format_error("safetensors: __metadata__ is not an object");
            for (auto m = entry.begin(); m != entry.end(); ++m) {
                if (!m.value().is_string()) throw format_error("safetensors: metadata value '" + m.key() + "' is not a string");
                metadata_[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        auto bad = [&](const std::string& why) { return format_error("safetensors: tensor '" + name + "': " + why); };
        if (!entry.is_object()) throw bad("entry is not an object");
        auto dt = entry.find("dtype");
        auto sh = entry.find("shape");
        auto off = entry.find("data_offsets");
        if (dt == entry.end() || !dt->is_string()) throw bad("missing dtype");
        if (sh == entry.end() || !sh->is_array()) throw bad("missing shape");
        if (off == entry.end() || !off->is_array() || off->size() != 2) throw bad("data_offsets must be [begin, end]");
        auto type = dtype_from_name(dt->get<std::string>());
        if (!type) throw bad("unsupported dtype '" + dt->get<std::string>() + "'");
        if (sh->size() > limits.max_rank) throw limit_error("safetensors: tensor '" + name + "' has rank " + std::to_string(sh->size()));
        tensor_entry t;
        t.name = name;
        t.type = *type;
        std::uint64_t bytes = dtype_size(*type);
        for (const auto& d : *sh) {
            if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers");
            const auto dim = d.get<std::uint64_t>();
            if (dim != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / dim) throw bad("shape overflows 64 bits");
            bytes *= dim;
            t.shape.push_back(dim);
        }
        for (const auto& o : *off)
            if (!o.is_number_unsigned()) throw bad("data_offsets must be non-negative integers");
        const auto begin = (*off)[0].get<std::uint64_t>();
        const auto end = (*off)[1].get<std::uint64_t>();
        if (begin > end) throw bad("data_offsets begin > end");
        if (end > payload.size()) throw bad("data ends at " + std::to_string(end) + ", past the file's " +
                                            std::to_string(payload.size()) + " data bytes");
        if (end - begin != bytes)
            throw bad("data_offsets span " + std::to_string(end - begin) + " bytes, shape and dtype need " +
                      std::to_string(bytes));
        t.bytes = payload.subspan(begin, end - begin);
        ranges.emplace_back(begin, end);
        tensors_.push_back(std::move(t));
    }
    std::sort(tensors_.begin(), tensors_.end(), [&](const tensor_entry& a, const tensor_entry& b) {
        return a.bytes.data() != b.bytes.data() ? a.bytes.data() < b.bytes.data() : a.name < b.name;
    });
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].first < ranges[i - 1].second)
            throw format_error("safetensors: tensor data ranges overlap at byte " + std::to_string(ranges[i].first));
}

/// Builds a safetensors file: tensors keep the order they were added in.
class safetensors_builder {
public:
    /// Adds a tensor (bytes are copied); throws usage_error if the size does not match shape × dtype.
    void add(std::string name, dtype type, std::vector<std::uint64_t> shape, std::span<const std::uint8_t> bytes) {
        std::uint64_t need = dtype_size(type);
        for (auto d : shape) need *= d;
        require_usage(need == bytes.size(), "safetensors_builder: byte count does not match shape and dtype");
        require_usage(name != "__metadata__", "safetensors_builder: '__metadata__' is reserved");
        for (const auto& e : entries_)
            if (e.name == name) throw usage_error("safetensors_builder: duplicate tensor '" + name + "'");
        entries_.push_back({std::move(name), type, std::move(shape), byte_vector(bytes.begin(), bytes.end()), need});
    }
    /// Sets one `__metadata__` entry.
    void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
    /// Replaces the whole `__metadata__` map.
    void set_metadata(std::map<std::string, std::string> metadata) { metadata_ = std::move(metadata); }

    /// Adds a tensor whose bytes the caller writes into the file itself (at plan().data_offsets[i]
    /// from the file's start): for writing a file larger than memory piece by piece.
    void add_deferred(std::string name, dtype type, std::vector<std::uint64_t> shape) {
        std::uint64_t need = dtype_size(type);
        for (auto d : shape) need *= d;
        require_usage(name != "__metadata__", "safetensors_builder: '__metadata__' is reserved");
        for (const auto& e : entries_)
            if (e.name == name) throw usage_error("safetensors_builder: duplicate tensor '" + name + "'");
        entries_.push_back({std::move(name), type, std::move(shape), {}, need});
    }

    /// The file's header (length + JSON, padded) and where each tensor's bytes start in the file.
    struct file_plan {
        byte_vector header;
        std::vector<std::uint64_t> data_offsets;  // per tensor, in add order, from the file's start
        std::uint64_t file_bytes = 0;
    };
    file_plan plan() const {
        nlohmann::ordered_json header = nlohmann::ordered_json::object();
        if (!metadata_.empty()) header["__metadata__"] = metadata_;
        std::uint64_t offset = 0;
        std::vector<std::uint64_t> offsets;
        for (const auto& e : entries_) {
            header[e.name] = {{"dtype", std::string(dtype_name(e.type))},
                              {"shape", e.shape},
                              {"data_offsets", {offset, offset + e.size()}}};
            offsets.push_back(offset);
            offset += e.size();
        }
        std::string text = header.dump();
        while ((text.size() + 8) % 8 != 0) text.push_back(' ');  // align the data section to 8 bytes
        file_plan p;
        byte_writer w(p.header);
        w.put<std::uint64_t>(text.size());
        p.header.insert(p.header.end(), text.begin(), text.end());
        for (auto& o : offsets) o += p.header.size();
        p.data_offsets = std::move(offsets);
        p.file_bytes = p.header.size() + offset;
        return p;
    }

    /// The complete file image (deferred tensors as zeros).
    byte_vector serialize() const {
        const file_plan p = plan();
        byte_vector out;
        out.reserve(p.file_bytes);
        out.insert(out.end(), p.header.begin(), p.header.end());
        for (const auto& e : entries_) {
            out.insert(out.end(), e.bytes.begin(), e.bytes.end());
            out.resize(out.size() + (e.size() - e.bytes.size()));
        }
        return out;
    }
    /// Writes the header and every non-deferred tensor through `write_at(offset, bytes)`.
    template <class WriteAt>
    file_plan write_eager(WriteAt&& write_at) const {
        file_plan p = plan();
        write_at(std::uint64_t(0), std::span<const std::uint8_t>(p.header));
        for (std::size_t i = 0; i < entries_.size(); ++i)
            if (!entries_[i].bytes.empty()) write_at(p.data_offsets[i], std::span<const std::uint8_t>(entries_[i].bytes));
        return p;
    }
    /// Writes the file to disk.
    void save(const std::filesystem::path& path) const { write_file(path, serialize()); }

private:
    struct entry {
        std::string name;
        dtype type;
        std::vector<std::uint64_t> shape;
        byte_vector bytes;          // empty for a deferred tensor
        std::uint64_t bytes_needed;  // shape × dtype
        std::uint64_t size() const { return bytes_needed; }
    };
    std::vector<entry> entries_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
