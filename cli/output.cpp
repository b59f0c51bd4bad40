#include "output.h"

#include "hotforge/unit.h"  // writeFileAtomically

#include <fmt/core.h>

#include <cstdio>

namespace hotforge::cli {

llvm::Error writeOutput(const std::string &path, const std::string &content) {
  if (path.empty() || path == "-") {
    std::fwrite(content.data(), 1, content.size(), stdout);
    return llvm::Error::success();
  }
  return writeFileAtomically(path, llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(content.data()), content.size()),
                             0666, /*replace=*/true);
}

std::string printableText(std::string_view text) {
  std::string out;
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\n') || byte == 0x7f) out += fmt::format("\\x{:02x}", byte);
    else out += c;
  }
  return out;
}

}  // namespace hotforge::cli
