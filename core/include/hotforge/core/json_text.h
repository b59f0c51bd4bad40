// How every Hotforge JSON document is written (CLI output, release summaries, state records).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace hotforge {

// Two-space indent and a final newline; bytes that are not UTF-8 (names read from binaries) are
// replaced by U+FFFD, so the text always parses and dumping never throws.
std::string jsonText(const nlohmann::json &doc);

}  // namespace hotforge
