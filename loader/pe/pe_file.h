// The headers of a PE32+ file, read with every offset checked: what the appliers need to check a
// base against a patch image's identity and, for the emulator, to map a DLL by hand; and the
// appliers' one file reader. Standard library only, so the mingw-built applier shares it.
#pragma once

#include "hotforge/core/outcome.h"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hotforge::pe {

constexpr uint16_t kMachineAmd64 = 0x8664, kMachineArm64 = 0xaa64;

// Data directory indices (IMAGE_DIRECTORY_ENTRY_*).
enum Directory : unsigned { kExportDirectory = 0, kImportDirectory = 1, kRelocationDirectory = 5, kTlsDirectory = 9 };

struct PeSection {
  uint32_t rva = 0, virtualSize = 0, rawOffset = 0, rawSize = 0;
  uint32_t characteristics = 0;
  uint32_t memorySize() const { return virtualSize ? virtualSize : rawSize; }  // some linkers leave VirtualSize 0
  uint32_t fileBytes() const { return rawSize < memorySize() ? rawSize : memorySize(); }  // to copy from the file
};

struct DataDirectory {
  uint32_t rva = 0, size = 0;
};

struct PeFile {
  uint16_t machine = 0;
  uint32_t timeDateStamp = 0, checkSum = 0, sizeOfImage = 0, sizeOfHeaders = 0, entryRva = 0;
  uint64_t imageBase = 0;
  std::vector<PeSection> sections;
  std::array<DataDirectory, 16> directories{};
};

Outcome<PeFile> readPeFile(std::span<const uint8_t> file);

// A whole file; an error, not an exception, for one that cannot be read (a directory).
Outcome<std::vector<uint8_t>> readWholeFile(const std::string &path);

}  // namespace hotforge::pe
