// Shared between the planner, the record codec and the container writers.
#pragma once

#include "hotforge/error.h"
#include "hotforge/patch_image.h"

#include <cstring>
#include <map>

namespace hotforge::emitter {

constexpr uint32_t kPageSize = 0x1000;
constexpr char kRecordSectionName[] = ".hotpatch";

inline uint64_t alignTo(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

// Little-endian byte buffer writer.
class ByteWriter {
public:
  std::vector<uint8_t> bytes;
  void u8(uint8_t v) { bytes.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void raw(llvm::ArrayRef<uint8_t> data) { bytes.insert(bytes.end(), data.begin(), data.end()); }
  void zeros(size_t n) { bytes.insert(bytes.end(), n, 0); }
  void padTo(size_t alignment) { zeros(alignTo(bytes.size(), alignment) - bytes.size()); }
  size_t size() const { return bytes.size(); }
  void patch32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = uint8_t(v >> (8 * i));
  }

private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(uint8_t(v >> (8 * i)));
  }
};

// The .hotpatch record section: identity, redirects, fixups, functions (docs/format.md).
std::vector<uint8_t> encodeRecords(const PatchImage &image);
// Fills identity, redirects, fixups and functions of `image` from a record section.
llvm::Error decodeRecords(llvm::ArrayRef<uint8_t> records, PatchImage &image);

// Container writers: fill image.file (and image.sizes.file) from the sections and records.
llvm::Error writeElfContainer(PatchImage &image);
// The PE writer also needs the builds: the base for its hashes and first bytes, the patched build
// for the unwind data of the carried functions.
struct PeContainerInput {
  const Image *base = nullptr, *patched = nullptr;
  std::map<uint64_t, uint32_t> handlerStubs;  // patched RVA of an exception handler -> its stub in .text
};
llvm::Error writePeContainer(PatchImage &image, const PeContainerInput &input);

// The record section inside a container file.
llvm::Expected<llvm::ArrayRef<uint8_t>> findRecordSection(llvm::ArrayRef<uint8_t> file);

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
