// Shared helpers for tests: the built samples (HOTFORGE_SAMPLES, written by samples/build.sh),
// running external tools, and parsing what the LLVM tools print.
#pragma once

#include "hotforge/image.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace hotforge::test {

struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

// Runs argv (no shell) and captures both streams.
CommandResult run(const std::vector<std::string> &argv);

// The samples directory; the test fails when HOTFORGE_SAMPLES is unset or has no samples.json.
std::string samplesDir();
const nlohmann::json &samplesManifest();

struct Sample {
  std::string target, program, variant;
  std::string path, strippedPath, debugPath, pdbPath;  // absolute; empty when absent
};
// Every built sample, optionally only those of one target prefix ("elf-", "pe-", "mingw-").
std::vector<Sample> samples(const std::string &targetPrefix = "");

// Reads an image; a failure fails the test and returns an empty Image.
Image loadImage(const std::string &path, const ImageReadOptions &options = {});

// The path of the hotforge executable under test (HOTFORGE_BIN, set by CTest).
std::string hotforgeBinary();

// FDE ranges [start, end) that llvm-dwarfdump-19 --eh-frame reports, as VAs.
std::vector<std::pair<uint64_t, uint64_t>> ehFrameRanges(const std::string &path);

struct ToolSymbol {
  uint64_t value = 0, size = 0;
  std::string type, name;
  bool defined = false;
};
// llvm-readelf-19 symbols of one table: ".symtab" or ".dynsym".
std::vector<ToolSymbol> readelfSymbols(const std::string &path, const std::string &table);

std::string readFile(const std::string &path);
void writeFile(const std::string &path, const std::string &bytes);
std::string tempDir();  // a fresh directory for this test process

}  // namespace hotforge::test
