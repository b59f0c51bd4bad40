// The PE container as a loader reads it: a PE32+ DLL (docs/format.md, "PE container").
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"

#include <cstdlib>
#include <cstring>

namespace hotforge {

const ContainerTarget &peContainer();

namespace {

class PeContainer final : public ContainerTarget {
public:
  Format format() const override { return Format::Pe; }
  std::string_view name() const override { return "pe"; }
  uint16_t recordCode() const override { return 2; }
  bool holds(std::span<const uint8_t> file) const override {
    return file.size() >= 2 && file[0] == 'M' && file[1] == 'Z';
  }
  bool identifiedByBuildId() const override { return false; }
  bool relocationsCarryAddends() const override { return false; }

  Outcome<std::vector<ContainerSection>> sections(std::span<const uint8_t> file) const override {
    constexpr uint64_t kSectionHeaderSize = 40;
    constexpr uint32_t kUninitialized = 0x80, kExecute = 0x20000000, kWrite = 0x80000000;
    if (file.size() < 0x40) return fail("offset 0x0: too small for a PE container");
    uint32_t peAt = readLe32(&file[0x3c]);
    if (!fitsInFile(file, peAt, 24) || std::memcmp(&file[peAt], "PE\0\0", 4) != 0)
      return fail("offset 0x3c: no PE signature at ", hexAddress(peAt));
    const uint8_t *coff = &file[peAt + 4];
    uint16_t count = readLe16(coff + 2), optionalSize = readLe16(coff + 16);
    uint32_t symbolsAt = readLe32(coff + 8), symbols = readLe32(coff + 12);
    uint64_t headersAt = uint64_t(peAt) + 24 + optionalSize;
    if (!fitsInFile(file, headersAt, count * kSectionHeaderSize))
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
        if (!symbolsAt || !fitsInFile(file, stringsAt + at, 1))
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
        if (!fitsInFile(file, rawAt, size)) return fail("offset ", hexAddress(rawAt), ": section ", s.name, " lies outside the file");
        s.contents = file.subspan(rawAt, size);
      }
      sections.push_back(std::move(s));
    }
    return sections;
  }
};

}  // namespace

const ContainerTarget &peContainer() {
  static const PeContainer container;
  return container;
}

}  // namespace hotforge
