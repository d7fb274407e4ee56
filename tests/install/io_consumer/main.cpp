// A downstream project built against the installed package's seqkv::io (seqkv + nlohmann_json):
// parses a safetensors image written by hand in memory, then (if given) a KV dump from disk.
#include <seqkv/io/safetensors.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
    // 8-byte little-endian header length, the JSON header, the data (one bf16 [1, 2, 2] tensor).
    const std::string header =
        R"({"__metadata__":{"model":"hand-made"},"layer.0.k":{"dtype":"BF16","shape":[1,2,2],"data_offsets":[0,8]}})";
    seqkv::byte_vector image;
    for (int i = 0; i < 8; ++i) image.push_back(std::uint8_t(std::uint64_t(header.size()) >> (8 * i)));
    image.insert(image.end(), header.begin(), header.end());
    const float values[4] = {1.0f, -2.5f, 0.375f, 96.0f};
    for (float v : values) {
        const std::uint16_t b = seqkv::float_to_bf16(v);
        image.push_back(std::uint8_t(b & 0xff));
        image.push_back(std::uint8_t(b >> 8));
    }
    const auto file = seqkv::io::safetensors_file::parse(image);
    const auto& k = file.at("layer.0.k");
    if (k.type != seqkv::dtype::bf16 || k.element_count() != 4 || file.metadata().at("model") != "hand-made") return 1;
    for (int i = 0; i < 4; ++i) {
        const std::uint16_t b = std::uint16_t(k.bytes[2 * i] | (k.bytes[2 * i + 1] << 8));
        if (seqkv::bf16_to_float(b) != values[i]) return 1;
    }
    std::printf("seqkv::io consumer: in-memory safetensors ok");
    if (argc > 1) {  // e.g. data/kv/gpl3.safetensors
        const auto dump = seqkv::io::safetensors_file::load(argv[1]);
        if (!dump.find("layer.0.k") || !dump.find("tokens")) return 1;
        std::printf(", %s: %zu tensors", argv[1], dump.tensors().size());
    }
    std::printf("\n");
    return 0;
}
