// Writing results: to stdout, or to a file that appears whole or not at all.
#pragma once

#include "hotforge/core/json_text.h"

#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <string>

namespace hotforge::cli {

// Writes `content` to `path` through a temporary file in the same directory and a rename, so an
// interrupted run never leaves a half-written file. An empty path or "-" means stdout.
llvm::Error writeOutput(const std::string &path, const std::string &content);

// Text for a terminal: control characters (names from a manifest or a file tree can hold any)
// become \xNN, so they cannot move the cursor or rewrite what was printed. Line breaks stay.
std::string printableText(std::string_view text);

}  // namespace hotforge::cli
