// Writing files that appear whole or not at all: the runtime's writer, for LLVM-side callers.
#include "hotforge/core/error.h"
#include "hotforge/core/files.h"
#include "hotforge/unit.h"

#include <fcntl.h>

namespace hotforge {

llvm::Error writeFileAtomically(const std::string &path, llvm::ArrayRef<uint8_t> bytes, unsigned mode, bool replace) {
  return lift(writeAtomically(AT_FDCWD, path, bytes, {.mode = mode, .durable = true, .replace = replace}, path));
}

}  // namespace hotforge
