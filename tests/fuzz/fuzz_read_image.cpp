// Feeds arbitrary bytes to the image reader: ELF and PE headers, sections, symbols, .eh_frame,
// DWARF, .pdata, exports, imports, base relocations and the load config, and function discovery,
// which decodes whatever the executable sections hold as code.
#include "hotforge/image.h"

#include <llvm/Support/MemoryBuffer.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz");
  llvm::Expected<hotforge::Image> image = hotforge::readImage(std::move(buffer));
  if (!image) {
    llvm::consumeError(image.takeError());
    return 0;
  }
  // Touch what later stages read.
  for (const hotforge::Function &f : image->functions) (void)image->bytesAt(f.range.rva, f.range.size);
  return 0;
}
