// Shared between the planner, the record codec and the container writers.
#pragma once

#include "hotforge/core/error.h"
#include "hotforge/patch_image.h"
#include "hotforge/core/bytes.h"

#include <cstring>
#include <map>

namespace hotforge::emitter {

constexpr uint32_t kPageSize = 0x1000;

// Container writers: fill image.file (and image.sizes.file) from the sections and records.
llvm::Error writeElfContainer(PatchImage &image);
// The PE writer also needs the builds: the base for its hashes and first bytes, the patched build
// for the unwind data of the carried functions.
struct PeContainerInput {
  const Image *base = nullptr, *patched = nullptr;
  std::map<uint64_t, uint32_t> handlerStubs;  // patched RVA of an exception handler -> its stub in .text
};
llvm::Error writePeContainer(PatchImage &image, const PeContainerInput &input);

// Copies the unwind entries (CIE/FDE, with LSDAs) of the carried functions from the patched
// build's .eh_frame into a new .eh_frame placed at `sectionRva`. `imageRvaOf` maps a patched RVA
// inside a carried function to its image RVA; fixups for personality routines and type tables
// that stay in the base are appended to `fixups`.
struct EhFrameRequest {
  const Image *patched = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> functions;  // patched rva -> image rva, per carried function
  std::function<std::optional<uint64_t>(uint64_t patchedRva)> baseCounterpart;  // for data in the base
};
llvm::Expected<std::vector<uint8_t>> buildEhFrame(const EhFrameRequest &request, uint32_t sectionRva,
                                                  uint32_t lsdaSectionRva, std::vector<uint8_t> &lsdaBytes,
                                                  std::vector<PatchFixup> &fixups);

}  // namespace hotforge::emitter
