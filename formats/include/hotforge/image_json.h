// The stable JSON form of an Image (`hotforge inspect --json`), documented in docs/inspect-json.md.
#pragma once

#include "hotforge/image.h"

#include <nlohmann/json.hpp>

namespace hotforge {

struct ImageJsonOptions {
  bool relocations = false;  // the full relocation list (large for big binaries); a count otherwise
};

constexpr const char *kInspectSchema = "hotforge.inspect/1";

nlohmann::json toJson(const Image &image, const ImageJsonOptions &options = {});

std::string permissionsText(const Permissions &permissions);  // "r-x"

}  // namespace hotforge
