// seqkv command-line tool: compress / decompress / info for KV safetensors dumps, and `demo`,
// which runs the main job on the bundled real KV fixture.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include "seqkv/convert/skv_file.hpp"
#include "seqkv/seqkv.hpp"
#include "seqkv/format/recover.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv_bench.hpp"
#include "seqkv_chart.hpp"
#include "seqkv_dedup.hpp"
#include "seqkv_llama.hpp"
#include "seqkv_presets.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Exit codes, one scheme for every subcommand (README "CLI"; `seqkv --help` says it too).
constexpr int exit_ok = 0;
constexpr int exit_usage = 1;      // the command line: unknown option, bad value, a preset without what it needs
constexpr int exit_bad_input = 2;  // an input is not a valid file: format, checksum or limit error; info --verify failed
constexpr int exit_resource = 3;   // a file needs side information not given (--table, --model) or given wrong
constexpr int exit_io = 4;         // a file cannot be read or written; a store unreachable
constexpr int exit_internal = 5;   // anything else (e.g. out of memory)

/// One error line on stderr; with --json also {"error": {...}} on stdout. Returns `code`.
int report_error(bool as_json, const char* kind, const std::string& message, int code) {
    std::cerr << message << "\n";
    if (as_json) std::cout << json{{"error", {{"type", kind}, {"message", message}, {"exit_code", code}}}}.dump(2) << "\n";
    return code;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void print(const json& j, bool as_json, const std::string& text) {
    if (as_json) std::cout << j.dump(2) << "\n";
    else std::cout << text;
}

std::pair<std::uint64_t, std::optional<std::uint64_t>> parse_range(const std::string& spec) {
    if (spec.empty()) return {0, std::nullopt};
    const auto colon = spec.find(':');
    if (colon == std::string::npos) throw seqkv::usage_error("--tokens expects a:b");
    const std::string a = spec.substr(0, colon), b = spec.substr(colon + 1);
    try {
        return {a.empty() ? 0 : std::stoull(a), b.empty() ? std::nullopt : std::optional<std::uint64_t>(std::stoull(b))};
    } catch (const std::exception&) {
        throw seqkv::usage_error("--tokens expects non-negative integers a:b");
    }
}

/// CRC-checks every chunk record (the reader checked the preamble, index and attachments when it
/// opened), so nothing `info` reports comes from bytes that fail their checksum.
void check_chunk_records(const seqkv::format::stream_reader& reader) {
    for (std::size_t i = 0; i < reader.chunks().size(); ++i) {
        const auto& c = reader.chunks()[i];
        try {
            (void)reader.record(i);
        } catch (const seqkv::checksum_error&) {
            throw seqkv::checksum_error("chunk " + std::to_string(i) + " (record of " + std::to_string(c.record_bytes) +
                                        " bytes at offset " + std::to_string(c.offset) + ") fails its CRC");
        }
    }
}

/// Decodes the whole file as `decompress` would (KV, token ids, nll, every attachment it reads);
/// throws the first error. Returns what was decoded, for the report.
std::string verify_decode(std::span<const std::uint8_t> skv, const seqkv::resource_provider& res, unsigned threads) {
    const bool llama = seqkv::format::stream_reader(skv).find_attachment(seqkv::io::llama::state_attachment).has_value();
    const auto out = llama ? seqkv::cli::decompress_llama(skv, res, threads)
                           : seqkv::io::decompress_to_safetensors(skv, 0, std::nullopt, res, threads);
    return std::string(llama ? "llama.cpp state" : "safetensors") + " of " + std::to_string(out.size()) + " bytes";
}

json info_json(std::span<const std::uint8_t> skv) {
    seqkv::format::stream_reader reader(skv);
    check_chunk_records(reader);
    const auto L = reader.layout();
    json j;
    j["format_version"] = reader.version();
    j["layers"] = L.layers;
    j["kv_heads"] = L.kv_heads;
    j["head_dim"] = L.head_dim;
    j["tokens"] = L.tokens;
    j["dtype"] = std::string(seqkv::dtype_name(L.type));
    j["chunk_tokens"] = reader.header().chunk_tokens;
    j["chunks"] = reader.chunks().size();
    j["codec"] = seqkv::describe_codec(reader.header().codec);
    j["kv_bytes"] = L.total_bytes();
    std::uint64_t coded = 0;
    for (const auto& c : reader.chunks()) coded += c.record_bytes;
    j["kv_coded_bytes"] = coded;
    j["file_bytes"] = skv.size();
    j["kv_ratio"] = coded ? double(L.total_bytes()) / double(coded) : 0.0;
    j["kv_bits_per_element"] = L.tokens ? 8.0 * double(coded) / double(L.total_bytes() / seqkv::dtype_size(L.type)) : 0.0;
    j["metadata"] = reader.header().metadata;
    j["attachments"] = reader.attachment_names();
    j["keyframe_interval"] = reader.header().keyframe_interval;
    std::size_t dependent = 0, external = 0;
    for (const auto& c : reader.chunks()) dependent += c.dependent(), external += c.external();
    j["dependent_chunks"] = dependent;
    j["external_chunks"] = external;
    json resources = json::array();
    for (const auto& r : reader.resources()) {
        char hash[17];
        std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r.content_hash);
        resources.push_back({{"kind", std::uint16_t(r.kind)}, {"content_hash", hash}, {"name", r.name},
                             {"description", seqkv::describe(r)}});
    }
    j["resources"] = resources;
    // Token mode's hybrid: what each chunk chose (stored / residual / recompute).
    if (reader.header().codec.codec_id == std::uint16_t(seqkv::codec_family::tokens) &&
        seqkv::tokens::is_hybrid(seqkv::detail::parse_tokens_config(reader.header().codec).mode)) {
        json choices = json::array();
        for (std::size_t i = 0; i < reader.chunks().size(); ++i) {
            if (reader.chunks()[i].external()) {
                choices.push_back(nullptr);
                continue;
            }
            const auto c = seqkv::tokens::hybrid_choice_of(reader.record(i).payload);
            if (!c) break;
            choices.push_back(*c == seqkv::tokens::hybrid_choice::stored ? "stored" : *c == seqkv::tokens::hybrid_choice::residual ? "residual" : "recompute");
        }
        if (!choices.empty()) j["hybrid_choices"] = choices;
    }
    j["checksums_ok"] = true;  // check_chunk_records above and the reader's own checks passed
    if (auto stats = reader.find_attachment(seqkv::cli::stats_attachment))
        j["quality"] = json::parse(stats->begin(), stats->end(), nullptr, false);
    return j;
}

std::string info_text(const json& j) {
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "layers %u, kv_heads %u, head_dim %u, tokens %llu, dtype %s\n"
                  "codec %s, %zu chunks of up to %u tokens\n"
                  "KV %llu bytes -> %llu bytes coded: ratio %.3fx, %.3f bits/element; file %llu bytes\n",
                  j["layers"].get<unsigned>(), j["kv_heads"].get<unsigned>(), j["head_dim"].get<unsigned>(),
                  (unsigned long long)j["tokens"].get<std::uint64_t>(), j["dtype"].get<std::string>().c_str(),
                  j["codec"].get<std::string>().c_str(), j["chunks"].get<std::size_t>(), j["chunk_tokens"].get<unsigned>(),
                  (unsigned long long)j["kv_bytes"].get<std::uint64_t>(),
                  (unsigned long long)j["kv_coded_bytes"].get<std::uint64_t>(), j["kv_ratio"].get<double>(),
                  j["kv_bits_per_element"].get<double>(), (unsigned long long)j["file_bytes"].get<std::uint64_t>());
    std::string s = "format version " + std::to_string(j["format_version"].get<unsigned>()) + "\n" + buf;
    if (j["dependent_chunks"].get<std::size_t>() || j["external_chunks"].get<std::size_t>())
        s += std::to_string(j["dependent_chunks"].get<std::size_t>()) + " dependent chunks (a keyframe every " +
             std::to_string(j["keyframe_interval"].get<unsigned>()) + " chunks), " +
             std::to_string(j["external_chunks"].get<std::size_t>()) + " with the payload stored elsewhere\n";
    for (const auto& r : j["resources"]) s += "needs " + r["description"].get<std::string>() + "\n";
    if (j.contains("hybrid_choices")) {
        std::size_t n[3] = {0, 0, 0};
        std::string list;
        for (const auto& c : j["hybrid_choices"]) {
            const std::string v = c.is_string() ? c.get<std::string>() : "external";
            n[v == "stored" ? 0 : v == "residual" ? 1 : 2] += v != "external";
            list += (list.empty() ? "" : " ") + v;
        }
        s += "hybrid choices: " + std::to_string(n[0]) + " stored, " + std::to_string(n[1]) + " residual, " + std::to_string(n[2]) +
             " recompute" + (j["hybrid_choices"].size() <= 32 ? " (" + list + ")" : std::string(" (per chunk: --json)")) + "\n";
    }
    if (j.contains("quality") && j["quality"].is_object()) s += "quality: " + j["quality"].dump() + "\n";
    s += "checksums: OK (preamble, index, every chunk record and attachment)\n";
    if (j.contains("verified")) s += "verified: OK, decoded " + j["verified"].get<std::string>() + "\n";
    return s;
}

/// `seqkv recover`: keeps every whole, valid chunk of an unfinished or damaged stream, writes a
/// complete one. Exit 0 when the output was written (even with 0 chunks); an error (exit 2) when
/// the preamble itself is damaged.
int run_recover(const std::string& in, const std::string& out, bool as_json) {
    const auto src = seqkv::read_file(in);
    seqkv::format::recovery r;
    try {
        r = seqkv::format::recover_stream(src);
    } catch (const seqkv::format_error& e) {
        throw seqkv::format_error("recover: nothing to recover from " + in + ": its preamble is damaged or incomplete (" +
                                  seqkv::reason_of(e) + ")");
    }
    seqkv::write_file(out, r.file);
    json j{{"input", in}, {"output", out}, {"chunks", r.chunks}, {"tokens", r.tokens}, {"bytes_in", src.size()},
           {"bytes_out", r.file.size()}, {"chunks_end", r.chunks_end}, {"damaged_at", r.damaged_at},
           {"dropped_bytes", r.dropped_bytes}, {"attachments", r.attachments}, {"complete", r.complete}, {"reason", r.reason}};
    print(j, as_json,
          "kept " + std::to_string(r.chunks) + " chunks (" + std::to_string(r.tokens) + " tokens), dropped " +
              std::to_string(r.dropped_bytes) + " of " + std::to_string(src.size()) + " bytes: " + r.reason + "\nwrote " + out +
              " (" + std::to_string(r.file.size()) + " bytes)\n");
    return 0;
}

/// True when dir/kv holds a .safetensors file.
bool has_fixture(const fs::path& dir) {
    std::error_code ec;
    for (fs::directory_iterator it(dir / "kv", ec), end; !ec && it != end; it.increment(ec))
        if (it->path().extension() == ".safetensors") return true;
    return false;
}

/// The data directory `demo` reads (its kv/*.safetensors), first of: --data, $SEQKV_DATA_DIR
/// (either one must hold the fixture), the installed fixture beside the executable
/// (<bindir>/SEQKV_INSTALL_DATA_RELDIR = ../share/seqkv/data) when present, the source tree's data/.
fs::path demo_data_dir(const std::string& option, const char* argv0) {
    if (!option.empty()) return option;
    if (const char* env = std::getenv("SEQKV_DATA_DIR"); env && *env) return env;
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);  // Linux; else argv[0] when it is a path
    if (ec) exe = argv0 && std::string_view(argv0).find('/') != std::string_view::npos ? fs::absolute(argv0, ec) : fs::path();
    if (!ec && !exe.empty()) {
        const fs::path installed = (exe.parent_path() / SEQKV_INSTALL_DATA_RELDIR).lexically_normal();
        if (has_fixture(installed)) return installed;
    }
    return SEQKV_DATA_DIR;
}

int run_demo(bool as_json, const std::string& preset_name, const seqkv::cli::lossy_flags& flags, const fs::path& data_dir) {
    const fs::path dir = data_dir / "kv";
    std::vector<fs::path> files;
    if (fs::exists(dir))
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw seqkv::io_error("no fixture under " + dir.string());
    json rows = json::array();
    std::string text = "seqkv demo: preset '" + preset_name + "' on the bundled real KV fixture (" + dir.string() + ")\n";
    for (const auto& path : files) {
        auto file = seqkv::io::safetensors_file::load(path);
        const auto opts = seqkv::cli::options_for_preset(preset_name, 0, file, flags);
        seqkv::io::skv_summary summary;
        const auto skv = seqkv::io::compress_safetensors(file, opts, &summary);
        const auto cache = seqkv::io::kv_view(file);
        // Encode speed of the KV alone (what an engine streams), not of the extra tensors.
        const auto ids = seqkv::io::token_ids_of(file, cache.layout.tokens).value_or(std::vector<std::int32_t>{});
        auto t0 = std::chrono::steady_clock::now();
        int enc_reps = 0;
        do {
            (void)seqkv::compress(cache, opts, ids);
            ++enc_reps;
        } while (seconds_since(t0) < 0.3);
        const double enc = seconds_since(t0) / enc_reps;
        // Decode the KV alone (what an engine does) and time it, then check it.
        seqkv::format::stream_reader reader(skv);
        const auto codec = seqkv::make_codec(reader.header().codec, opts.resources);
        t0 = std::chrono::steady_clock::now();
        int reps = 0;
        seqkv::chunk_buffer back;
        do {
            back = reader.decode(codec);
            ++reps;
        } while (seconds_since(t0) < 0.3);
        const double dec = seconds_since(t0) / reps;
        json row;
        row["file"] = path.filename().string();
        row["tokens"] = cache.layout.tokens;
        row["kv_bytes"] = summary.kv_bytes;
        row["kv_coded_bytes"] = summary.kv_coded_bytes;
        row["kv_ratio"] = double(summary.kv_bytes) / double(summary.kv_coded_bytes);
        row["file_bytes_in"] = fs::file_size(path);
        row["file_bytes_out"] = summary.output_bytes;
        row["encode_MBps"] = summary.kv_bytes / 1e6 / enc;
        row["decode_MBps"] = summary.kv_bytes / 1e6 / dec;
        const auto quality = seqkv::cli::quality_of(file, back, opts);
        row["quality"] = quality;
        rows.push_back(row);
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "  %-28s %5llu tokens  KV %8llu B -> %8llu B  ratio %.3fx  encode %7.1f MB/s  decode %7.1f MB/s  %s\n",
                      path.filename().string().c_str(), (unsigned long long)cache.layout.tokens,
                      (unsigned long long)summary.kv_bytes, (unsigned long long)summary.kv_coded_bytes,
                      row["kv_ratio"].get<double>(), row["encode_MBps"].get<double>(), row["decode_MBps"].get<double>(),
                      quality.dump().c_str());
        text += buf;
    }
    print(json{{"preset", preset_name}, {"files", rows}}, as_json, text);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"seqkv: compress transformer KV caches (safetensors) as sequences"};
    app.footer("Exit codes: 0 OK, 1 usage (command line), 2 invalid input file (format, checksum, limit; info --verify\n"
               "failed), 3 missing or wrong side information (--table, --model), 4 I/O or store, 5 internal.\n"
               "With --json, an error is also printed as {\"error\": {\"type\", \"message\", \"exit_code\"}} on stdout.");
    app.require_subcommand(1);
    bool as_json = false;
    app.add_flag("--json", as_json, "machine-readable output");

    std::string in, out, preset = "lossless", range;
    std::uint32_t chunk = 0;
    auto* compress = app.add_subcommand("compress", "safetensors KV dump -> .skv");
    compress->add_option("input", in, "input .safetensors")->required()->check(CLI::ExistingFile);
    compress->add_option("-o,--output", out, "output .skv")->required();
    compress->add_option("--preset", preset, seqkv::cli::preset_help());
    compress->add_option("--chunk", chunk, "tokens per chunk (default, or 0: the preset's: 512 lossless and tokens, 1024 lossy)");
    compress->add_flag("--json", as_json, "machine-readable output");
    seqkv::cli::lossy_flags lossy;
    seqkv::cli::add_lossy_flags(*compress, lossy);
    seqkv::cli::llama_flags llama;
    seqkv::cli::add_llama_flags(*compress, llama);

    auto* decompress = app.add_subcommand("decompress", ".skv -> safetensors (every tensor, its metadata)");
    decompress->add_option("input", in, "input .skv")->required()->check(CLI::ExistingFile);
    decompress->add_option("-o,--output", out, "output .safetensors")->required();
    decompress->add_option("--tokens", range, "decode only tokens a:b");
    std::string to = "safetensors";
    decompress->add_option("--to", to, "output kind: safetensors (default) | llama-state (for files compressed --from llama-state)")
        ->check(CLI::IsMember({"safetensors", "llama-state"}));
    decompress->add_option("--table", lossy.table_path, "expected-KV table the file was coded with")->check(CLI::ExistingFile);
    seqkv::cli::add_model_flag(*decompress, lossy);
    seqkv::cli::add_threads_flag(*decompress, lossy);
    decompress->add_flag("--json", as_json, "machine-readable output");

    auto* info = app.add_subcommand("info", "describe a .skv file");
    info->add_option("input", in, "input .skv")->required()->check(CLI::ExistingFile);
    info->add_flag("--json", as_json, "machine-readable output");
    bool verify = false;
    info->add_flag("--verify", verify, "also decode the whole file (KV, side data, attachments) and report OK or the error");
    info->add_option("--table", lossy.table_path, "expected-KV table the file was coded with (for --verify)")->check(CLI::ExistingFile);
    seqkv::cli::add_model_flag(*info, lossy);
    seqkv::cli::add_threads_flag(*info, lossy);

    auto* recover = app.add_subcommand("recover", "rebuild an unfinished or damaged .skv: keep every whole, valid chunk");
    recover->add_option("input", in, "input .skv")->required()->check(CLI::ExistingFile);
    recover->add_option("-o,--output", out, "output .skv")->required();
    recover->add_flag("--json", as_json, "machine-readable output");

    auto* demo = app.add_subcommand("demo", "compress + decompress the bundled real KV fixture, print ratio and speed");
    demo->add_option("--preset", preset, seqkv::cli::preset_help());
    demo->add_flag("--json", as_json, "machine-readable output");
    std::string data_dir;
    demo->add_option("--data", data_dir,
                     "directory holding kv/*.safetensors (default: $SEQKV_DATA_DIR, else the installed fixture, "
                     "else the source tree's data/)");
    seqkv::cli::add_lossy_flags(*demo, lossy);

    seqkv::cli::bench_settings bench_set;
    std::vector<std::string> bench_files;
    auto* bench = app.add_subcommand("bench", "seqkv presets vs zstd / lz4 / blosc on the same KV: ratio, encode and decode MB/s");
    bench->add_option("inputs", bench_files, "KV .safetensors dumps")->required()->check(CLI::ExistingFile);
    bench->add_option("--preset", bench_set.presets, "seqkv preset(s) to measure (repeatable; default lossless)")->expected(1)->take_all();
    bench->add_option("--codecs", bench_set.codecs,
                      "only these rows, comma-separated: seqkv:<preset>, zstd-3, zstd-19, lz4, blosc-zstd-byteshuffle, blosc-zstd-bitshuffle")
        ->delimiter(',')
        ->expected(1)
        ->take_all();  // one argument per --codecs: the input files after it stay inputs
    bench->add_option("--threads", bench_set.threads, "threads of the second seqkv row (default 0: every core; 1: one row)");
    bench->add_option("--seconds", bench_set.seconds, "least wall-clock seconds per measurement (default 0.3)")->check(CLI::Range(0.0, 3600.0));
    bench->add_option("--table", bench_set.flags.table_path, "expected-KV table for presets that use one")->check(CLI::ExistingFile);
    bench->add_option("--model", bench_set.flags.model_path, "model of the tokens and draft presets")->check(CLI::ExistingPath);
    bench->add_option("--model-weights", bench_set.flags.model_weights, "how --model computes: f32 (default), int12 or int8 (drafts)")
        ->check(CLI::IsMember({"f32", "int8", "int12"}));
    seqkv::cli::add_cost_flags(*bench, bench_set.flags);
    std::string bench_svg;
    bench->add_option("--svg", bench_svg, "also draw the results: ratio against encode and decode MB/s (SVG file)");
    bench->add_flag("--json", as_json, "machine-readable output");

    std::vector<std::string> corpus;
    std::vector<std::string> dedup_files;
    seqkv::cli::dedup_settings dedup_set;
    auto* dedup = app.add_subcommand("dedup", "what a prefix store would save on a set of sessions (KV dumps with token ids)");
    dedup->add_option("inputs", dedup_files, "KV .safetensors dumps of one model, in the order they arrive")->required()->check(CLI::ExistingFile);
    dedup->add_option("--preset", dedup_set.preset, "preset chunks are coded with (default lossless)");
    dedup->add_option("--chunk", dedup_set.chunk, "tokens per stored chunk: the sharing granularity (default 64)")->check(CLI::Range(1u, 1u << 20));
    dedup->add_option("--near-gap", dedup_set.near_gap,
                      "code a session that leaves a stored one for at most N tokens, then continues alike, against it (lossless; default 0: off)");
    dedup->add_option("--table", dedup_set.flags.table_path, "expected-KV table for presets that use one")->check(CLI::ExistingFile);
    dedup->add_flag("--json", as_json, "machine-readable output");

    auto* table = app.add_subcommand("table", "build an expected-KV table (mean K/V per token id) from KV dumps");
    table->add_option("inputs", corpus, "KV .safetensors dumps of one model")->required()->check(CLI::ExistingFile);
    table->add_option("-o,--output", out, "output table .safetensors")->required();
    table->add_flag("--json", as_json, "machine-readable output");

    // One exit-code scheme (README "CLI"): command-line errors are usage errors (exit 1), not CLI11's 105/106.
    bool json_requested = false;  // --json anywhere: errors as JSON too (the flag may not have parsed)
    for (int i = 1; i < argc; ++i) json_requested = json_requested || std::string_view(argv[i]) == "--json";
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {  // --help
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        if (json_requested) return report_error(json_requested, "usage_error", std::string("seqkv: usage error: ") + e.what(), exit_usage);
        (void)app.exit(e);  // CLI11's message and "Run with --help"
        return exit_usage;
    }
    auto json_out = [&] { return as_json || json_requested; };  // --json parsed, or anywhere on the line
    try {
        if (*compress && llama.from == "llama-state") {
            auto extra = seqkv::cli::compress_llama(in, out, preset, chunk, lossy, llama);
            auto j = info_json(seqkv::read_file(out));
            j.update(extra);
            print(j, as_json, info_text(j));
        } else if (*compress) {
            // Streams: the dump is mapped (not read into memory) and the .skv written as its chunks
            // are coded, so memory stays at a few chunks whatever the cache's size.
            auto file = seqkv::io::safetensors_file::map(in);
            auto opts = seqkv::cli::options_for_preset(preset, chunk, file, lossy);
            seqkv::io::skv_summary summary;
            seqkv::io::file_sink sink(out);
            {
                const auto L = seqkv::io::kv_view(file).layout;
                seqkv::cli::progress_bar bar("compress", L.elements_per_token() * seqkv::dtype_size(L.type), json_out());
                seqkv::io::compress_safetensors_to(file, opts, [&](std::span<const std::uint8_t> b) { sink.append(b); }, &summary,
                                                   [&](std::uint64_t done, std::uint64_t total) { bar(done, total); });
            }
            // Record the achieved quality (lossless: verified bit-exact) in the stats attachment.
            sink.flush();
            std::string q;
            {
                const auto written = seqkv::io::mapped_file::open(sink.temporary_path());
                q = seqkv::cli::quality_of_stream(file, written, opts).dump();
            }
            seqkv::cli::add_attachment_in_place(sink, seqkv::cli::stats_attachment, seqkv::byte_vector(q.begin(), q.end()));
            sink.commit();
            file = seqkv::io::safetensors_file{};  // unmapped: the input's pages leave memory before the output's are read
            const auto skv_map = seqkv::io::mapped_file::open(out);
            const auto skv = skv_map.bytes();
            auto j = info_json(skv);
            j["input_file_bytes"] = fs::file_size(in);
            j["encode_seconds"] = summary.encode_seconds;
            print(j, as_json, info_text(j));
        } else if (*decompress) {
            const auto skv_map = seqkv::io::mapped_file::open(in);  // read in place: only the chunks decoded are loaded
            const auto skv = skv_map.bytes();
            auto [a, b] = parse_range(range);
            const auto t0 = std::chrono::steady_clock::now();
            seqkv::resource_provider res;
            seqkv::add_expected_kv_table(res, seqkv::cli::load_table(lossy));
            seqkv::add_language_model(res, seqkv::cli::load_model(lossy));
            if (to == "llama-state" && !range.empty()) throw seqkv::usage_error("--to llama-state decodes the whole state (no --tokens)");
            std::uint64_t bytes = 0;
            if (to == "llama-state") {
                const auto st = seqkv::cli::decompress_llama(skv, res, lossy.threads);
                seqkv::write_file(out, st);
                bytes = st.size();
            } else {  // one decoded chunk in memory at a time, written where it goes in the output
                seqkv::io::file_sink sink(out);
                const auto L = seqkv::format::stream_reader(skv).layout();
                seqkv::cli::progress_bar bar("decompress", L.elements_per_token() * seqkv::dtype_size(L.type), json_out());
                seqkv::io::decompress_to_safetensors_at(
                    skv, [&](std::uint64_t at, std::span<const std::uint8_t> part) { sink.write_at(at, part); }, a, b, res, lossy.threads,
                    [&](std::uint64_t done, std::uint64_t total) { bar(done, total); });
                bytes = sink.size();
                sink.commit();
            }
            const double sec = seconds_since(t0);
            json j{{"output", out}, {"bytes", bytes}, {"seconds", sec}};
            print(j, as_json, "wrote " + out + " (" + std::to_string(bytes) + " bytes)\n");
        } else if (*info) {
            const auto skv_map = seqkv::io::mapped_file::open(in);
            const auto skv = skv_map.bytes();
            auto j = info_json(skv);  // throws on any checksum that fails
            if (verify) {
                // The side files first, outside the verdict: a bad --table / --model is not a bad .skv.
                seqkv::resource_provider res;
                seqkv::add_expected_kv_table(res, seqkv::cli::load_table(lossy));
                seqkv::add_language_model(res, seqkv::cli::load_model(lossy));
                try {
                    j["verified"] = verify_decode(skv, res, lossy.threads);
                } catch (const seqkv::format_error& e) {  // the file is damaged (others: their own exit codes)
                    return report_error(as_json, "verify_failed", std::string("seqkv info --verify: FAILED: ") + e.what(),
                                        exit_bad_input);
                }
            }
            print(j, as_json, info_text(j));
        } else if (*recover) {
            return run_recover(in, out, as_json);
        } else if (*bench) {
            std::string text;
            bench_set.context_curve = !bench_svg.empty();
            auto j = seqkv::cli::run_bench(bench_files, bench_set, text);
            if (!bench_svg.empty()) {
                std::string names;
                for (const auto& f : j["files"]) names += (names.empty() ? "" : ", ") + fs::path(f["file"].get<std::string>()).filename().string();
                seqkv::cli::write_bench_svg(bench_svg, j, "seqkv bench: " + names + " (" + std::to_string(bench_set.threads ? bench_set.threads : std::max(1u, std::thread::hardware_concurrency())) + " cores max)");
                j["svg"] = bench_svg;
                text += "chart: " + bench_svg + "\n";
            }
            print(j, as_json, text);
        } else if (*dedup) {
            std::string text;
            const auto j = seqkv::cli::run_dedup(dedup_files, dedup_set, text);
            print(j, as_json, text);
        } else if (*demo) {
            return run_demo(as_json, preset, lossy, demo_data_dir(data_dir, argc > 0 ? argv[0] : nullptr));
        } else if (*table) {
            std::vector<seqkv::io::safetensors_file> files;
            std::vector<const seqkv::io::safetensors_file*> ptrs;
            for (const auto& p : corpus) files.push_back(seqkv::io::safetensors_file::load(p));
            for (const auto& f : files) ptrs.push_back(&f);
            const auto t = seqkv::io::build_expected_kv_table(ptrs);
            const auto bytes = seqkv::io::serialize_expected_kv_table(t);
            seqkv::write_file(out, bytes);
            char hash[32];
            std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)t.content_hash());
            print(json{{"output", out}, {"bytes", bytes.size()}, {"content_hash", hash}}, as_json,
                  "wrote " + out + " (" + std::to_string(bytes.size()) + " bytes, hash " + hash + ")\n");
        }
    } catch (const seqkv::usage_error& e) {
        return report_error(json_out(), "usage_error", e.what(), exit_usage);
    } catch (const seqkv::format_error& e) {  // checksum_error and limit_error included
        const char* kind = dynamic_cast<const seqkv::checksum_error*>(&e) ? "checksum_error"
                           : dynamic_cast<const seqkv::limit_error*>(&e)  ? "limit_error"
                                                                          : "format_error";
        return report_error(json_out(), kind, e.what(), exit_bad_input);
    } catch (const seqkv::resource_error& e) {
        return report_error(json_out(), "resource_error", e.what(), exit_resource);
    } catch (const seqkv::io_error& e) {
        return report_error(json_out(), "io_error", e.what(), exit_io);
    } catch (const std::filesystem::filesystem_error& e) {  // e.g. file_size of a file that went away
        return report_error(json_out(), "io_error", std::string("seqkv: I/O error: ") + e.what(), exit_io);
    } catch (const seqkv::store_error& e) {
        return report_error(json_out(), "store_error", e.what(), exit_io);
    } catch (const seqkv::error& e) {
        return report_error(json_out(), "error", e.what(), exit_internal);
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: report, never abort
        return report_error(json_out(), "internal_error", std::string("seqkv: ") + e.what(), exit_internal);
    } catch (...) {
        return report_error(json_out(), "internal_error", "seqkv: unknown error", exit_internal);
    }
    return exit_ok;
}
