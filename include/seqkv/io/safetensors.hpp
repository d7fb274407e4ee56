// safetensors reader and writer (needs nlohmann-json). The reader validates the header length,
// every dtype, shape and data offset against the file size, and rejects overlapping tensors,
// before any tensor byte is touched. Metadata and unknown tensors are preserved.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/file_io.hpp"

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

/// A parsed safetensors file that owns its bytes. Move-only (entries point into the buffer).
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
        f.index(limits);
        return f;
    }
    /// Reads and parses a file from disk.
    static safetensors_file load(const std::filesystem::path& path, const safetensors_limits& limits = {}) {
        // Names the file once, keeping the error's type, without a second "seqkv: format error: ".
        auto named = [&](const format_error& e, const char* kind) {
            std::string why = e.what();
            for (const char* prefix : {"seqkv: ", "format error: ", kind})
                if (why.starts_with(prefix)) why.erase(0, std::char_traits<char>::length(prefix));
            return "'" + path.string() + "': " + why;
        };
        try {
            return parse(read_file(path), limits);
        } catch (const limit_error& e) {
            throw limit_error(named(e, "limit exceeded: "));
        } catch (const checksum_error& e) {
            throw checksum_error(named(e, "checksum mismatch: "));
        } catch (const format_error& e) {
            throw format_error(named(e, ""));
        }
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

    byte_vector data_;
    std::vector<tensor_entry> tensors_;
    std::map<std::string, std::string> metadata_;
};

inline void safetensors_file::index(const safetensors_limits& limits) {
    using nlohmann::json;
    if (data_.size() < 8) throw format_error("not a safetensors file: shorter than its 8-byte header length");
    std::uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= std::uint64_t(data_[i]) << (8 * i);
    // A safetensors header is a JSON object right after its length: anything else (a text file, a
    // .skv, a numpy file) is named for what it is not, before its first bytes are read as a length.
    if (data_.size() > 8 && header_len > 0 && data_[8] != '{')
        throw format_error("not a safetensors file: no JSON header after the 8-byte length (file of " +
                           std::to_string(data_.size()) + " bytes)");
    if (header_len > limits.max_header_bytes)
        throw limit_error("safetensors: header length " + std::to_string(header_len));
    if (header_len > data_.size() - 8)
        throw format_error("safetensors: header length " + std::to_string(header_len) + " exceeds the file size " +
                           std::to_string(data_.size()));
    const auto* header_begin = reinterpret_cast<const char*>(data_.data() + 8);
    json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded() || !header.is_object()) throw format_error("safetensors: header is not a JSON object");
    if (header.size() > limits.max_tensors + 1)
        throw limit_error("safetensors: " + std::to_string(header.size()) + " header entries");

    const std::span<const std::uint8_t> payload(data_.data() + 8 + header_len, data_.size() - 8 - header_len);
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
        entries_.push_back({std::move(name), type, std::move(shape), byte_vector(bytes.begin(), bytes.end())});
    }
    /// Sets one `__metadata__` entry.
    void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
    /// Replaces the whole `__metadata__` map.
    void set_metadata(std::map<std::string, std::string> metadata) { metadata_ = std::move(metadata); }

    /// The complete file image.
    byte_vector serialize() const {
        nlohmann::ordered_json header = nlohmann::ordered_json::object();
        if (!metadata_.empty()) header["__metadata__"] = metadata_;
        std::uint64_t offset = 0;
        for (const auto& e : entries_) {
            header[e.name] = {{"dtype", std::string(dtype_name(e.type))},
                              {"shape", e.shape},
                              {"data_offsets", {offset, offset + e.bytes.size()}}};
            offset += e.bytes.size();
        }
        std::string text = header.dump();
        while ((text.size() + 8) % 8 != 0) text.push_back(' ');  // align the data section to 8 bytes
        byte_vector out;
        out.reserve(8 + text.size() + offset);
        byte_writer w(out);
        w.put<std::uint64_t>(text.size());
        out.insert(out.end(), text.begin(), text.end());
        for (const auto& e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
        return out;
    }
    /// Writes the file to disk.
    void save(const std::filesystem::path& path) const { write_file(path, serialize()); }

private:
    struct entry {
        std::string name;
        dtype type;
        std::vector<std::uint64_t> shape;
        byte_vector bytes;
    };
    std::vector<entry> entries_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace seqkv::io
