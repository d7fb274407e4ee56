// Resources: side information a codec needs beyond the file itself (an expected-KV table, model
// weights, a prefix store, a chunk payload stored elsewhere). A file names each one by kind and
// content hash (docs/FORMAT.md "Resources"), as zstd names its dictionary by id; the caller
// supplies the objects through a resource_provider when encoding and decoding.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// What a resource is (values stored in files).
enum class resource_kind : std::uint16_t {
    expected_kv_table = 1,  ///< predict::expected_kv_table; hash = its content_hash()
    model_weights = 2,      ///< a model's weights (token mode, draft models)
    prefix_store = 3,       ///< a prefix store whose chunks a file references
    chunk_payload = 4,      ///< bytes of one chunk payload stored outside the file; hash = content_hash64
};

/// The largest resource kind value a reader accepts.
inline constexpr std::uint16_t max_resource_kind = 4;

/// A file's reference to a resource.
struct resource_ref {
    resource_kind kind = resource_kind::expected_kv_table;
    std::uint64_t content_hash = 0;
    std::string name;  // optional, informative (e.g. "smollm2-135m expected KV")
    friend bool operator==(const resource_ref& a, const resource_ref& b) { return a.kind == b.kind && a.content_hash == b.content_hash; }
};

/// Short description for error messages: "expected-KV table 0123abcd… (name)".
inline std::string describe(const resource_ref& r) {
    static const char* names[] = {"?", "expected-KV table", "model weights", "prefix store", "chunk payload"};
    char hex[17];
    for (int i = 0; i < 16; ++i) hex[i] = "0123456789abcdef"[(r.content_hash >> (60 - 4 * i)) & 15];
    hex[16] = 0;
    const auto k = std::uint16_t(r.kind);
    return std::string(k <= max_resource_kind ? names[k] : "unknown resource") + " " + hex + (r.name.empty() ? "" : " (" + r.name + ")");
}

/// Where a codec or the container finds resources: objects registered up front, then an
/// optional lookup function (e.g. a prefix store or a directory of tables) for anything else.
/// Objects are immutable and shared; lookups are thread-safe once the provider is built.
class resource_provider {
public:
    /// Returns the object for (kind, hash), or nullptr when the provider has none.
    using lookup_fn = std::function<std::shared_ptr<const void>(resource_kind, std::uint64_t content_hash)>;

    resource_provider() = default;
    explicit resource_provider(lookup_fn lookup) : lookup_(std::move(lookup)) {}

    /// Registers an object under (kind, hash). T must be the type the kind documents
    /// (chunk payloads are byte_vector).
    template <class T>
    resource_provider& add(resource_kind kind, std::uint64_t content_hash, std::shared_ptr<const T> object) {
        objects_[{kind, content_hash}] = std::move(object);
        return *this;
    }
    /// The object for (kind, hash) as T, or nullptr.
    template <class T>
    std::shared_ptr<const T> find(resource_kind kind, std::uint64_t content_hash) const {
        if (auto it = objects_.find({kind, content_hash}); it != objects_.end()) return std::static_pointer_cast<const T>(it->second);
        if (lookup_) return std::static_pointer_cast<const T>(lookup_(kind, content_hash));
        return nullptr;
    }
    /// Same, but a missing resource is a resource_error naming it.
    template <class T>
    std::shared_ptr<const T> require(const resource_ref& ref) const {
        auto p = find<T>(ref.kind, ref.content_hash);
        if (!p) throw resource_error("missing resource: " + describe(ref));
        return p;
    }
    bool empty() const { return objects_.empty() && !lookup_; }

private:
    std::map<std::pair<resource_kind, std::uint64_t>, std::shared_ptr<const void>> objects_;
    lookup_fn lookup_;
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
