#include "pe_file.h"

#include "hotforge/core/bytes.h"

#include <cstring>
#include <fstream>
#include <iterator>

namespace hotforge::pe {

Outcome<std::vector<uint8_t>> readWholeFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot open ", path);
  // libstdc++ reports a failed read (a directory, EIO) by throwing from the stream buffer.
  try {
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::ios_base::failure &) {
    return fail("cannot read ", path, " (a directory?)");
  }
}

Outcome<PeFile> readPeFile(std::span<const uint8_t> file) {
  auto fits = [&](uint64_t offset, uint64_t size) { return offset <= file.size() && size <= file.size() - offset; };
  if (!fits(0, 0x40) || file[0] != 'M' || file[1] != 'Z') return fail("not a PE file (no MZ header)");
  uint32_t peAt = readLe32(&file[0x3c]);
  if (!fits(peAt, 24) || std::memcmp(&file[peAt], "PE\0\0", 4) != 0) return fail("no PE signature at ", hexAddress(peAt));
  const uint8_t *coff = &file[peAt + 4];
  uint16_t sectionCount = readLe16(coff + 2), optionalSize = readLe16(coff + 16);
  uint64_t optionalAt = uint64_t(peAt) + 24;
  constexpr uint16_t kPe32Plus = 0x20b;
  constexpr uint64_t kDirectoriesAt = 112, kSectionHeaderSize = 40;
  if (optionalSize < kDirectoriesAt || !fits(optionalAt, optionalSize) || readLe16(&file[optionalAt]) != kPe32Plus)
    return fail("not a PE32+ file (optional header at ", hexAddress(optionalAt), ")");
  const uint8_t *optional = &file[optionalAt];
  PeFile pe;
  pe.machine = readLe16(coff);
  pe.timeDateStamp = readLe32(coff + 4);
  pe.entryRva = readLe32(optional + 16);
  pe.imageBase = readLe64(optional + 24);
  pe.sizeOfImage = readLe32(optional + 56);
  pe.sizeOfHeaders = readLe32(optional + 60);
  pe.checkSum = readLe32(optional + 64);
  uint32_t directoryCount = std::min<uint32_t>(readLe32(optional + 108), 16);
  if (kDirectoriesAt + directoryCount * 8 > optionalSize) return fail("the data directories overrun the optional header");
  for (uint32_t i = 0; i < directoryCount; ++i)
    pe.directories[i] = {readLe32(optional + kDirectoriesAt + i * 8), readLe32(optional + kDirectoriesAt + i * 8 + 4)};
  uint64_t sectionsAt = optionalAt + optionalSize;
  if (!fits(sectionsAt, sectionCount * kSectionHeaderSize)) return fail("the section table lies outside the file");
  for (uint16_t i = 0; i < sectionCount; ++i) {
    const uint8_t *h = &file[sectionsAt + i * kSectionHeaderSize];
    PeSection s{readLe32(h + 12), readLe32(h + 8), readLe32(h + 20), readLe32(h + 16), readLe32(h + 36)};
    if (s.rawSize && !fits(s.rawOffset, s.rawSize)) return fail("section ", i, " lies outside the file");
    if (uint64_t(s.rva) + s.memorySize() > pe.sizeOfImage)
      return fail("section ", i, " lies outside SizeOfImage");
    pe.sections.push_back(s);
  }
  return pe;
}

}  // namespace hotforge::pe
