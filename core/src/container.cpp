// Reading a patch image back from its container: the section headers of the ELF shared object
// or PE32+ DLL the emitter wrote, with every offset and size checked against the file. Only what
// a loader needs is read, so the agent and the PE appliers carry no object-file library.
#include "hotforge/core/bytes.h"
#include "hotforge/core/patch_format.h"
#include "hotforge/core/process_maps.h"

#include <cstring>
#include <optional>

namespace hotforge {
namespace {

struct ContainerSection {
  std::string name;
  uint32_t rva = 0, memorySize = 0;
  std::span<const uint8_t> contents;  // empty for zero-filled sections
  bool loaded = false;                // part of the mapped image
  Permissions permissions;
  uint32_t type = 0, link = 0;        // ELF: sh_type, sh_link
};

bool fits(std::span<const uint8_t> file, uint64_t offset, uint64_t size) {
  return offset <= file.size() && size <= file.size() - offset;
}

std::string cString(std::span<const uint8_t> bytes, uint64_t offset) {
  std::string text;
  for (uint64_t i = offset; i < bytes.size() && bytes[i]; ++i) text.push_back(char(bytes[i]));
  return text;
}

Outcome<std::vector<ContainerSection>> elfSections(std::span<const uint8_t> file) {
  constexpr uint64_t kHeaderSize = 64, kSectionHeaderSize = 64;
  constexpr uint32_t kNoBits = 8;
  constexpr uint64_t kWrite = 1, kAlloc = 2, kExecute = 4;
  if (file.size() < kHeaderSize || file[4] != 2 || file[5] != 1)
    return fail("offset 0x4: not a little-endian ELF64 container");
  uint64_t headersAt = readLe64(&file[0x28]);
  uint16_t entrySize = readLe16(&file[0x3a]), count = readLe16(&file[0x3c]), namesIndex = readLe16(&file[0x3e]);
  if (entrySize != kSectionHeaderSize || !fits(file, headersAt, uint64_t(count) * kSectionHeaderSize) ||
      namesIndex >= count)
    return fail("offset 0x28: the section headers (", count, " at ", hexAddress(headersAt), ") lie outside the file");
  const uint8_t *namesHeader = &file[headersAt + namesIndex * kSectionHeaderSize];
  uint64_t namesAt = readLe64(namesHeader + 24), namesSize = readLe64(namesHeader + 32);
  if (!fits(file, namesAt, namesSize)) return fail("offset ", hexAddress(namesAt), ": section names lie outside the file");
  std::span<const uint8_t> names = file.subspan(namesAt, namesSize);
  std::vector<ContainerSection> sections;
  for (uint16_t i = 0; i < count; ++i) {
    const uint8_t *h = &file[headersAt + i * kSectionHeaderSize];
    uint32_t type = readLe32(h + 4);
    uint64_t flags = readLe64(h + 8), address = readLe64(h + 16), offset = readLe64(h + 24), size = readLe64(h + 32);
    ContainerSection s;
    s.name = cString(names, readLe32(h));
    s.type = type;
    s.link = readLe32(h + 40);
    s.loaded = (flags & kAlloc) != 0;
    s.rva = uint32_t(address);
    s.memorySize = uint32_t(size);
    if (address > UINT32_MAX || size > UINT32_MAX) return fail("section ", s.name, " is larger than a patch image can be");
    s.permissions = {true, (flags & kWrite) != 0, (flags & kExecute) != 0};
    if (type != kNoBits && i != 0) {
      if (!fits(file, offset, size))
        return fail("offset ", hexAddress(offset), ": section ", s.name, " lies outside the file");
      s.contents = file.subspan(offset, size);
    }
    sections.push_back(std::move(s));
  }
  return sections;
}

Outcome<std::vector<ContainerSection>> peSections(std::span<const uint8_t> file) {
  constexpr uint64_t kSectionHeaderSize = 40;
  constexpr uint32_t kUninitialized = 0x80, kExecute = 0x20000000, kWrite = 0x80000000;
  if (file.size() < 0x40) return fail("offset 0x0: too small for a PE container");
  uint32_t peAt = readLe32(&file[0x3c]);
  if (!fits(file, peAt, 24) || std::memcmp(&file[peAt], "PE\0\0", 4) != 0)
    return fail("offset 0x3c: no PE signature at ", hexAddress(peAt));
  const uint8_t *coff = &file[peAt + 4];
  uint16_t count = readLe16(coff + 2), optionalSize = readLe16(coff + 16);
  uint32_t symbolsAt = readLe32(coff + 8), symbols = readLe32(coff + 12);
  uint64_t headersAt = uint64_t(peAt) + 24 + optionalSize;
  if (!fits(file, headersAt, count * kSectionHeaderSize))
    return fail("offset ", hexAddress(headersAt), ": the section table lies outside the file");
  // Names longer than 8 bytes are "/N": offset N in the string table after the (empty) symbols.
  uint64_t stringsAt = uint64_t(symbolsAt) + uint64_t(symbols) * 18;
  std::vector<ContainerSection> sections;
  for (uint16_t i = 0; i < count; ++i) {
    const uint8_t *h = &file[headersAt + i * kSectionHeaderSize];
    ContainerSection s;
    s.name = cString(std::span<const uint8_t>(h, 8), 0);
    if (s.name.size() > 1 && s.name[0] == '/') {
      uint64_t at = std::strtoull(s.name.c_str() + 1, nullptr, 10);
      if (!symbolsAt || !fits(file, stringsAt + at, 1))
        return fail("offset ", hexAddress(headersAt + i * kSectionHeaderSize), ": section name ", s.name,
                    " points outside the string table");
      s.name = cString(file, stringsAt + at);
    }
    uint32_t virtualSize = readLe32(h + 8), rva = readLe32(h + 12), rawSize = readLe32(h + 16), rawAt = readLe32(h + 20),
             characteristics = readLe32(h + 36);
    s.loaded = true;
    s.rva = rva;
    s.memorySize = virtualSize;
    s.permissions = {true, (characteristics & kWrite) != 0, (characteristics & kExecute) != 0};
    if (!(characteristics & kUninitialized)) {
      uint32_t size = std::min(rawSize, virtualSize);
      if (!fits(file, rawAt, size)) return fail("offset ", hexAddress(rawAt), ": section ", s.name, " lies outside the file");
      s.contents = file.subspan(rawAt, size);
    }
    sections.push_back(std::move(s));
  }
  return sections;
}

Outcome<std::vector<ContainerSection>> containerSections(std::span<const uint8_t> file) {
  if (file.size() >= 4 && std::memcmp(file.data(), "\x7f" "ELF", 4) == 0) return elfSections(file);
  if (file.size() >= 2 && file[0] == 'M' && file[1] == 'Z') return peSections(file);
  return fail("offset 0x0: neither an ELF nor a PE container");
}

}  // namespace

bool looksLikePatchImage(std::span<const uint8_t> file) {
  Outcome<std::vector<ContainerSection>> sections = containerSections(file);
  if (!sections) return false;
  for (const ContainerSection &s : *sections)
    if (s.name == kRecordSectionName) return s.contents.size() >= 8 && std::memcmp(s.contents.data(), "HFPATCH", 8) == 0;
  return false;
}

namespace {

// The names of an ELF file's symbol versions by index (.gnu.version_d), for the dynamic symbols'
// version indices (.gnu.version). Index 0 and 1 are "local" and "global": no name.
std::vector<std::string> versionNames(const std::vector<ContainerSection> &sections) {
  constexpr uint32_t kVersionDefinitions = 0x6ffffffd;
  std::vector<std::string> names;
  for (const ContainerSection &definitions : sections) {
    if (definitions.type != kVersionDefinitions || definitions.link >= sections.size()) continue;
    std::span<const uint8_t> d = definitions.contents, strings = sections[definitions.link].contents;
    for (uint64_t at = 0, count = 0; at + 20 <= d.size() && count < 0x8000; ++count) {
      uint16_t index = readLe16(&d[at + 4]) & 0x7fff;
      uint64_t aux = at + readLe32(&d[at + 12]), next = readLe32(&d[at + 16]);
      if (aux + 8 <= d.size()) {
        if (index >= names.size()) names.resize(index + 1);
        names[index] = cString(strings, readLe32(&d[aux]));
      }
      if (!next) break;
      at += next;
    }
  }
  return names;
}

}  // namespace

Outcome<ElfDynamicSymbol> elfDynamicSymbol(std::span<const uint8_t> file, std::string_view name,
                                           std::string_view version) {
  constexpr uint32_t kDynamicSymbols = 11, kVersionIndices = 0x6fffffff;
  constexpr uint64_t kSymbolSize = 24;
  constexpr uint8_t kIndirectFunction = 10;  // STT_GNU_IFUNC
  if (file.size() < 4 || std::memcmp(file.data(), "\x7f" "ELF", 4) != 0) return fail("not an ELF file");
  Outcome<std::vector<ContainerSection>> sections = elfSections(file);
  if (!sections) return std::move(sections).failure();
  std::vector<std::string> versions = versionNames(*sections);
  std::optional<ElfDynamicSymbol> unversioned;  // a definition with no version, for a versioned request
  for (size_t table = 0; table < sections->size(); ++table) {
    const ContainerSection &symbols = (*sections)[table];
    if (symbols.type != kDynamicSymbols || symbols.link >= sections->size()) continue;
    std::span<const uint8_t> strings = (*sections)[symbols.link].contents, indices;
    for (const ContainerSection &s : *sections)
      if (s.type == kVersionIndices && s.link == table) indices = s.contents;
    for (uint64_t at = 0, i = 0; at + kSymbolSize <= symbols.contents.size(); at += kSymbolSize, ++i) {
      const uint8_t *symbol = &symbols.contents[at];
      uint8_t info = symbol[4];
      if (readLe16(symbol + 6) == 0 || (info >> 4) == 0 || cString(strings, readLe32(symbol)) != name) continue;
      ElfDynamicSymbol found{readLe64(symbol + 8), (info & 0xf) == kIndirectFunction};
      uint16_t index = 2 * i + 2 <= indices.size() ? readLe16(&indices[2 * i]) : 1;
      bool hidden = index & 0x8000;
      index &= 0x7fff;
      if (version.empty() ? !hidden : index < versions.size() && versions[index] == version) return found;
      if (!version.empty() && index <= 1) unversioned = found;
    }
  }
  if (unversioned) return *unversioned;
  return fail("no dynamic symbol ", std::string(name), version.empty() ? "" : "@" + std::string(version));
}

Outcome<PatchImage> readPatchImage(std::span<const uint8_t> file) {
  Outcome<std::vector<ContainerSection>> sections = containerSections(file);
  if (!sections) return std::move(sections).failure();
  PatchImage image;
  const ContainerSection *records = nullptr;
  for (const ContainerSection &s : *sections)
    if (s.name == kRecordSectionName) records = &s;
  if (!records) return fail("no .hotpatch record section: not a Hotforge patch image");
  if (Status decoded = decodeRecords(records->contents, image); !decoded) return std::move(decoded).failure();
  if ((file[0] == 'M') != (image.format == Format::Pe))
    return fail("the records describe a ", formatName(image.format), " image but the container is not one");
  for (const ContainerSection &s : *sections) {
    if (!s.loaded || s.name == kRecordSectionName) continue;
    if (uint64_t(s.rva) + s.memorySize > image.imageSize)
      return fail("section ", s.name, " at rva ", hexAddress(s.rva), " lies outside the image size ",
                  hexAddress(image.imageSize));
    PatchSection section;
    section.name = s.name;
    section.rva = s.rva;
    section.memorySize = s.memorySize;
    section.permissions = s.permissions;
    section.bytes.assign(s.contents.begin(), s.contents.begin() + std::min<size_t>(s.contents.size(), s.memorySize));
    image.sections.push_back(std::move(section));
  }
  image.file.assign(file.begin(), file.end());
  image.sizes.file = file.size();
  return image;
}

}  // namespace hotforge
