// The ELF container: an ELF64 shared object of the base's machine. Loaded sections get one
// PT_LOAD each (sections sharing a page share one); the records, a symbol table naming every
// carried function and every new import, and the section names follow, unloaded.
#include "emitter_internal.h"

#include <llvm/BinaryFormat/ELF.h>

#include <fmt/core.h>

namespace hotforge::emitter {
namespace {

struct Placed {
  const PatchSection *section;
  uint64_t fileOffset = 0;
  uint32_t index = 0;  // section header index
};

struct Segment {
  uint32_t flags = 0;
  uint64_t vaddr = 0, memorySize = 0, fileOffset = 0, fileSize = 0;
};

uint32_t segmentFlags(const Permissions &p) {
  return (p.read ? uint32_t(llvm::ELF::PF_R) : 0u) | (p.write ? uint32_t(llvm::ELF::PF_W) : 0u) |
         (p.execute ? uint32_t(llvm::ELF::PF_X) : 0u);
}

uint64_t sectionFlags(const Permissions &p) {
  return uint64_t(llvm::ELF::SHF_ALLOC) | (p.write ? uint64_t(llvm::ELF::SHF_WRITE) : 0u) |
         (p.execute ? uint64_t(llvm::ELF::SHF_EXECINSTR) : 0u);
}

}  // namespace

llvm::Error writeElfContainer(PatchImage &image) {
  std::vector<const PatchSection *> loaded;
  for (const PatchSection &s : image.sections) loaded.push_back(&s);
  std::sort(loaded.begin(), loaded.end(), [](auto *a, auto *b) { return a->rva < b->rva; });

  constexpr uint64_t kHeader = 64, kProgramHeader = 56, kSectionHeader = 64;
  // Segments: consecutive sections with the same permissions that share a page go together.
  std::vector<Segment> segments;
  for (const PatchSection *s : loaded) {
    uint32_t flags = segmentFlags(s->permissions);
    if (!segments.empty() && segments.back().flags == flags &&
        s->rva < alignTo(segments.back().vaddr + segments.back().memorySize, kPageSize)) {
      segments.back().memorySize = s->rva + s->memorySize - segments.back().vaddr;
      continue;
    }
    segments.push_back({flags, s->rva, s->memorySize, 0, 0});
  }
  ByteWriter w;
  w.zeros(kHeader + kProgramHeader * segments.size());
  std::vector<Placed> placed;
  uint32_t index = 1;
  for (Segment &segment : segments) {
    w.padTo(kPageSize);
    segment.fileOffset = w.size();
    for (const PatchSection *s : loaded) {
      if (s->rva < segment.vaddr || s->rva >= segment.vaddr + segment.memorySize) continue;
      uint64_t at = segment.fileOffset + (s->rva - segment.vaddr);
      w.zeros(at - w.size());
      w.raw(s->bytes);
      placed.push_back({s, at, index++});
      if (!s->bytes.empty()) segment.fileSize = at + s->bytes.size() - segment.fileOffset;
    }
  }
  uint32_t textIndex = 0;
  for (const Placed &p : placed)
    if (p.section->name == ".text") textIndex = p.index;

  // Unloaded: records, symbols, names.
  std::vector<uint8_t> records = encodeRecords(image);
  w.padTo(8);
  uint64_t recordsAt = w.size();
  w.raw(records);
  ByteWriter strtab, symtab;
  strtab.u8(0);
  symtab.zeros(24);
  for (const PatchFunction &f : image.functions) {
    uint32_t name = uint32_t(strtab.size());
    std::string text = f.name.value_or(fmt::format("hotforge.function.{:x}", f.patchedRva));
    strtab.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()));
    strtab.u8(0);
    symtab.u32(name);
    symtab.u8(llvm::ELF::STB_GLOBAL << 4 | llvm::ELF::STT_FUNC);
    symtab.u8(llvm::ELF::STV_DEFAULT);
    symtab.u16(uint16_t(textIndex));
    symtab.u64(f.rva);
    symtab.u64(f.size);
  }
  // The symbols the image needs from the target, undefined and named with their version as an
  // object file names a versioned reference ("strspn@GLIBC_2.2.5").
  for (const PatchImport &i : image.imports) {
    uint32_t name = uint32_t(strtab.size());
    std::string text = i.symbol + (i.version.empty() ? "" : "@" + i.version);
    strtab.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()));
    strtab.u8(0);
    symtab.u32(name);
    symtab.u8(llvm::ELF::STB_GLOBAL << 4 | llvm::ELF::STT_NOTYPE);
    symtab.u8(llvm::ELF::STV_DEFAULT);
    symtab.u16(llvm::ELF::SHN_UNDEF);
    symtab.u64(0);
    symtab.u64(0);
  }
  w.padTo(8);
  uint64_t symtabAt = w.size();
  w.raw(symtab.bytes);
  uint64_t strtabAt = w.size();
  w.raw(strtab.bytes);
  ByteWriter names;
  names.u8(0);
  auto addName = [&](const std::string &n) {
    uint32_t at = uint32_t(names.size());
    names.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(n.data()), n.size()));
    names.u8(0);
    return at;
  };
  std::vector<uint32_t> loadedNames;
  for (const Placed &p : placed) loadedNames.push_back(addName(p.section->name));
  uint32_t recordsName = addName(kRecordSectionName), symtabName = addName(".symtab"), strtabName = addName(".strtab"),
           shstrtabName = addName(".shstrtab");
  uint64_t shstrtabAt = w.size();
  w.raw(names.bytes);
  w.padTo(8);
  uint64_t sectionHeadersAt = w.size();
  uint32_t sectionCount = uint32_t(placed.size()) + 5;
  uint32_t strtabIndex = uint32_t(placed.size()) + 3, shstrtabIndex = strtabIndex + 1;
  auto sectionHeader = [&](uint32_t name, uint32_t type, uint64_t flags, uint64_t address, uint64_t offset,
                           uint64_t size, uint32_t link, uint32_t info, uint64_t align, uint64_t entrySize) {
    w.u32(name);
    w.u32(type);
    w.u64(flags);
    w.u64(address);
    w.u64(offset);
    w.u64(size);
    w.u32(link);
    w.u32(info);
    w.u64(align);
    w.u64(entrySize);
  };
  sectionHeader(0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  for (size_t i = 0; i < placed.size(); ++i) {
    const PatchSection &s = *placed[i].section;
    bool noBits = s.bytes.empty();
    sectionHeader(loadedNames[i], noBits ? llvm::ELF::SHT_NOBITS : llvm::ELF::SHT_PROGBITS, sectionFlags(s.permissions),
                  s.rva, placed[i].fileOffset, s.memorySize, 0, 0, 16, 0);
  }
  sectionHeader(recordsName, llvm::ELF::SHT_PROGBITS, 0, 0, recordsAt, records.size(), 0, 0, 8, 0);
  sectionHeader(symtabName, llvm::ELF::SHT_SYMTAB, 0, 0, symtabAt, symtab.size(), strtabIndex, 1, 8, 24);
  sectionHeader(strtabName, llvm::ELF::SHT_STRTAB, 0, 0, strtabAt, strtab.size(), 0, 0, 1, 0);
  sectionHeader(shstrtabName, llvm::ELF::SHT_STRTAB, 0, 0, shstrtabAt, names.size(), 0, 0, 1, 0);

  // ELF header and program headers, now that every offset is known.
  ByteWriter h;
  const uint8_t ident[16] = {0x7f, 'E', 'L', 'F', llvm::ELF::ELFCLASS64, llvm::ELF::ELFDATA2LSB, llvm::ELF::EV_CURRENT};
  h.raw(ident);
  h.u16(llvm::ELF::ET_DYN);
  h.u16(image.machine == Machine::X64 ? llvm::ELF::EM_X86_64 : llvm::ELF::EM_AARCH64);
  h.u32(llvm::ELF::EV_CURRENT);
  h.u64(0);  // no entry point
  h.u64(kHeader);
  h.u64(sectionHeadersAt);
  h.u32(0);
  h.u16(uint16_t(kHeader));
  h.u16(uint16_t(kProgramHeader));
  h.u16(uint16_t(segments.size()));
  h.u16(uint16_t(kSectionHeader));
  h.u16(uint16_t(sectionCount));
  h.u16(uint16_t(shstrtabIndex));
  for (const Segment &s : segments) {
    h.u32(llvm::ELF::PT_LOAD);
    h.u32(s.flags);
    h.u64(s.fileOffset);
    h.u64(s.vaddr);
    h.u64(s.vaddr);
    h.u64(s.fileSize);
    h.u64(s.memorySize);
    h.u64(kPageSize);
  }
  std::copy(h.bytes.begin(), h.bytes.end(), w.bytes.begin());
  image.sizes.metadata += records.size() + symtab.size() + strtab.size();
  image.file = std::move(w.bytes);
  image.sizes.file = image.file.size();
  return llvm::Error::success();
}

}  // namespace hotforge::emitter
