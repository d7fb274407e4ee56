# Conan 2 recipe for seqkv (header-only). `conan create .` packages the headers through the
# project's own CMake install and builds + runs test_package/; with the default options it needs
# no remote. scripts/test-conan.sh runs it in a private CONAN_HOME (ctest `conan_create`).
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import load, rmdir

required_conan_version = ">=2.0"


class SeqkvConan(ConanFile):
    name = "seqkv"
    description = "Header-only C++20 compression of transformer KV caches as sequences"
    topics = ("compression", "kv-cache", "transformer", "llm", "header-only")
    # No license file in the repository yet: no `license` attribute until there is one.
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "simd": [True, False],  # seqkv::simd: xsimd kernels (SEQKV_HAVE_XSIMD)
        "cuda": [True, False],  # seqkv::cuda: CUDA code paths (SEQKV_HAVE_CUDA); the CUDA toolkit is the user's
        "io": [True, False],  # seqkv::io: seqkv/io/ (safetensors, expected-KV tables, GGUF) needs nlohmann_json
    }
    default_options = {"simd": False, "cuda": False, "io": False}
    exports_sources = "CMakeLists.txt", "cmake/*", "include/*"
    no_copy_source = True

    def set_version(self):
        header = load(self, os.path.join(self.recipe_folder, "include", "seqkv", "version.hpp"))
        self.version = re.search(r'#define SEQKV_VERSION_STRING "([^"]+)"', header).group(1)

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        if self.options.simd:
            self.requires("xsimd/[>=8.1 <14]")
        if self.options.io:
            self.requires("nlohmann_json/[>=3.10 <4]")

    def package_id(self):
        self.info.clear()  # the same headers for every configuration and option

    def validate(self):
        check_min_cppstd(self, 20)

    def generate(self):
        tc = CMakeToolchain(self)
        # The header-only library alone: no runtime archive, CLI, tests, examples, benches, extras.
        for opt in ("RUNTIME", "TESTS", "EXAMPLES", "CLI", "BENCH", "FUZZERS"):
            tc.cache_variables[f"SEQKV_BUILD_{opt}"] = False
        tc.cache_variables["SEQKV_ENABLE_SIMD"] = False
        tc.cache_variables["SEQKV_ENABLE_CUDA"] = False
        tc.generate()

    def build(self):
        pass  # header-only: nothing to compile

    def package(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.install(component="seqkv")
        # Conan consumers get CMakeDeps / PkgConfigDeps files generated from package_info().
        rmdir(self, os.path.join(self.package_folder, "share"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "seqkv")
        self.cpp_info.set_property("cmake_target_name", "seqkv::seqkv")
        self.cpp_info.set_property("pkg_config_name", "seqkv")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # Encoder and decoder must compute identical floating-point results: no FMA contraction.
        if str(self.settings.get_safe("compiler")) in ("gcc", "clang", "apple-clang"):
            self.cpp_info.cxxflags.append("-ffp-contract=off")
        # The CMake package's optional targets, as aliases of seqkv::seqkv (which carries the
        # enabled options' defines and dependencies).
        aliases = []
        if self.options.simd:
            self.cpp_info.defines.append("SEQKV_HAVE_XSIMD=1")
            aliases.append("seqkv::simd")
        if self.options.cuda:
            self.cpp_info.defines.append("SEQKV_HAVE_CUDA=1")
            aliases.append("seqkv::cuda")
        if self.options.io:
            aliases.append("seqkv::io")
        if aliases:
            self.cpp_info.set_property("cmake_target_aliases", aliases)
