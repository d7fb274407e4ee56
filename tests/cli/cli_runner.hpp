// Runs the real seqkv binary for the CLI tests (SEQKV_CLI_PATH, set by tests/cli/extra.cmake).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#ifndef SEQKV_CLI_PATH
#error "SEQKV_CLI_PATH must name the seqkv binary"
#endif

namespace seqkv_test {

/// Exit status (-1 when it did not exit normally) and stdout + stderr of one CLI run.
struct run_result {
    int status;
    std::string out;
};

/// Runs `seqkv ARGS` through the shell.
inline run_result run(const std::string& args) {
    const std::string cmd = std::string(SEQKV_CLI_PATH) + " " + args + " 2>&1";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return {-1, ""};
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// A per-process scratch directory under the system temp dir, named prefix + pid.
inline std::filesystem::path scratch(const std::string& prefix) {
    const auto d = std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
}

}  // namespace seqkv_test
