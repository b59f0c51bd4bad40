// The ELF container as a loader reads it: an ELF64 little-endian shared object (docs/format.md,
// "ELF container"), and the dynamic symbols a loader looks up in the libraries of a process.
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/process_maps.h"

#include <cstring>

namespace hotforge {

const ContainerTarget &elfContainer();

namespace {

class ElfContainer final : public ContainerTarget {
public:
  Format format() const override { return Format::Elf; }
  std::string_view name() const override { return "elf"; }
  uint16_t recordCode() const override { return 1; }
  bool holds(std::span<const uint8_t> file) const override {
    return file.size() >= 4 && std::memcmp(file.data(), "\x7f" "ELF", 4) == 0;
  }
  bool identifiedByBuildId() const override { return true; }
  bool relocationsCarryAddends() const override { return true; }

  Outcome<std::vector<ContainerSection>> sections(std::span<const uint8_t> file) const override {
    constexpr uint64_t kHeaderSize = 64, kSectionHeaderSize = 64;
    constexpr uint32_t kNoBits = 8;
    constexpr uint64_t kWrite = 1, kAlloc = 2, kExecute = 4;
    if (file.size() < kHeaderSize || file[4] != 2 || file[5] != 1)
      return fail("offset 0x4: not a little-endian ELF64 container");
    uint64_t headersAt = readLe64(&file[0x28]);
    uint16_t entrySize = readLe16(&file[0x3a]), count = readLe16(&file[0x3c]), namesIndex = readLe16(&file[0x3e]);
    if (entrySize != kSectionHeaderSize || !fitsInFile(file, headersAt, uint64_t(count) * kSectionHeaderSize) ||
        namesIndex >= count)
      return fail("offset 0x28: the section headers (", count, " at ", hexAddress(headersAt), ") lie outside the file");
    const uint8_t *namesHeader = &file[headersAt + namesIndex * kSectionHeaderSize];
    uint64_t namesAt = readLe64(namesHeader + 24), namesSize = readLe64(namesHeader + 32);
    if (!fitsInFile(file, namesAt, namesSize)) return fail("offset ", hexAddress(namesAt), ": section names lie outside the file");
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
        if (!fitsInFile(file, offset, size))
          return fail("offset ", hexAddress(offset), ": section ", s.name, " lies outside the file");
        s.contents = file.subspan(offset, size);
      }
      sections.push_back(std::move(s));
    }
    return sections;
  }
};

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

const ContainerTarget &elfContainer() {
  static const ElfContainer container;
  return container;
}

Outcome<ElfDynamicSymbol> elfDynamicSymbol(std::span<const uint8_t> file, std::string_view name,
                                           std::string_view version) {
  constexpr uint32_t kDynamicSymbols = 11, kVersionIndices = 0x6fffffff;
  constexpr uint64_t kSymbolSize = 24;
  constexpr uint8_t kIndirectFunction = 10;  // STT_GNU_IFUNC
  if (!elfContainer().holds(file)) return fail("not an ELF file");
  Outcome<std::vector<ContainerSection>> sections = elfContainer().sections(file);
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

}  // namespace hotforge
