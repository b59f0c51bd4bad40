// The ELF container: an ELF64 shared object of the base's machine. Loaded sections get one
// PT_LOAD each (sections sharing a page share one); the records, a symbol table naming every
// carried function and every new import, and the section names follow, unloaded.
#include "emitter_internal.h"
#include "hotforge/core/machine_target.h"

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

constexpr uint64_t kHeader = 64, kProgramHeader = 56, kSectionHeader = 64;

// Segments: consecutive sections with the same permissions that share a page go together.
std::vector<Segment> segmentsOf(const std::vector<const PatchSection *> &loaded) {
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
  return segments;
}

// Writes each segment's sections page-aligned into `w`, filling the segments' file extents.
std::vector<Placed> placeSegments(ByteWriter &w, std::vector<Segment> &segments,
                                  const std::vector<const PatchSection *> &loaded) {
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
  return placed;
}

struct StringTable {
  ByteWriter bytes;
  StringTable() { bytes.u8(0); }
  uint32_t add(const std::string &text) {
    uint32_t at = uint32_t(bytes.size());
    bytes.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()));
    bytes.u8(0);
    return at;
  }
};

// Every carried function, defined in .text (section `textIndex`), then the symbols the image
// needs from the target, undefined and named with their version as an object file names a
// versioned reference ("strspn@GLIBC_2.2.5").
void addSymbols(const PatchImage &image, uint32_t textIndex, ByteWriter &symtab, StringTable &strtab) {
  symtab.zeros(24);
  auto symbol = [&](uint32_t name, uint8_t type, uint16_t section, uint64_t value, uint64_t size) {
    symtab.u32(name);
    symtab.u8(llvm::ELF::STB_GLOBAL << 4 | type);
    symtab.u8(llvm::ELF::STV_DEFAULT);
    symtab.u16(section);
    symtab.u64(value);
    symtab.u64(size);
  };
  for (const PatchFunction &f : image.functions)
    symbol(strtab.add(f.name.value_or(fmt::format("hotforge.function.{:x}", f.patchedRva))), llvm::ELF::STT_FUNC,
           uint16_t(textIndex), f.rva, f.size);
  for (const PatchImport &i : image.imports)
    symbol(strtab.add(i.symbol + (i.version.empty() ? "" : "@" + i.version)), llvm::ELF::STT_NOTYPE,
           llvm::ELF::SHN_UNDEF, 0, 0);
}

struct SectionHeader {
  uint32_t name = 0, type = 0;
  uint64_t flags = 0, address = 0, offset = 0, size = 0;
  uint32_t link = 0, info = 0;
  uint64_t align = 0, entrySize = 0;
};

void putSectionHeader(ByteWriter &w, const SectionHeader &h) {
  w.u32(h.name);
  w.u32(h.type);
  w.u64(h.flags);
  w.u64(h.address);
  w.u64(h.offset);
  w.u64(h.size);
  w.u32(h.link);
  w.u32(h.info);
  w.u64(h.align);
  w.u64(h.entrySize);
}

// The ELF header and program headers, once every offset is known.
std::vector<uint8_t> fileHeader(const PatchImage &image, const std::vector<Segment> &segments, uint64_t sectionHeadersAt,
                                uint32_t sectionCount, uint32_t namesIndex) {
  ByteWriter h;
  const uint8_t ident[16] = {0x7f, 'E', 'L', 'F', llvm::ELF::ELFCLASS64, llvm::ELF::ELFDATA2LSB, llvm::ELF::EV_CURRENT};
  h.raw(ident);
  h.u16(llvm::ELF::ET_DYN);
  h.u16(machineTarget(image.machine).elfMachine());
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
  h.u16(uint16_t(namesIndex));
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
  return std::move(h.bytes);
}

}  // namespace

llvm::Error writeElfContainer(PatchImage &image) {
  std::vector<const PatchSection *> loaded;
  for (const PatchSection &s : image.sections) loaded.push_back(&s);
  std::sort(loaded.begin(), loaded.end(), [](auto *a, auto *b) { return a->rva < b->rva; });
  std::vector<Segment> segments = segmentsOf(loaded);
  ByteWriter w;
  w.zeros(kHeader + kProgramHeader * segments.size());
  std::vector<Placed> placed = placeSegments(w, segments, loaded);
  uint32_t textIndex = 0;
  for (const Placed &p : placed)
    if (p.section->name == ".text") textIndex = p.index;

  // Unloaded: records, symbols, names.
  std::vector<uint8_t> records = encodeRecords(image);
  w.padTo(8);
  uint64_t recordsAt = w.size();
  w.raw(records);
  ByteWriter symtab;
  StringTable strtab, names;
  addSymbols(image, textIndex, symtab, strtab);
  w.padTo(8);
  uint64_t symtabAt = w.size();
  w.raw(symtab.bytes);
  uint64_t strtabAt = w.size();
  w.raw(strtab.bytes.bytes);
  std::vector<uint32_t> loadedNames;
  for (const Placed &p : placed) loadedNames.push_back(names.add(p.section->name));
  uint32_t recordsName = names.add(kRecordSectionName), symtabName = names.add(".symtab"),
           strtabName = names.add(".strtab"), shstrtabName = names.add(".shstrtab");
  uint64_t shstrtabAt = w.size();
  w.raw(names.bytes.bytes);
  w.padTo(8);
  uint64_t sectionHeadersAt = w.size();
  uint32_t sectionCount = uint32_t(placed.size()) + 5;
  uint32_t strtabIndex = uint32_t(placed.size()) + 3, shstrtabIndex = strtabIndex + 1;
  putSectionHeader(w, {});
  for (size_t i = 0; i < placed.size(); ++i) {
    const PatchSection &s = *placed[i].section;
    putSectionHeader(w, {loadedNames[i], s.bytes.empty() ? llvm::ELF::SHT_NOBITS : llvm::ELF::SHT_PROGBITS,
                         sectionFlags(s.permissions), s.rva, placed[i].fileOffset, s.memorySize, 0, 0, 16, 0});
  }
  putSectionHeader(w, {recordsName, llvm::ELF::SHT_PROGBITS, 0, 0, recordsAt, records.size(), 0, 0, 8, 0});
  putSectionHeader(w, {symtabName, llvm::ELF::SHT_SYMTAB, 0, 0, symtabAt, symtab.size(), strtabIndex, 1, 8, 24});
  putSectionHeader(w, {strtabName, llvm::ELF::SHT_STRTAB, 0, 0, strtabAt, strtab.bytes.size(), 0, 0, 1, 0});
  putSectionHeader(w, {shstrtabName, llvm::ELF::SHT_STRTAB, 0, 0, shstrtabAt, names.bytes.size(), 0, 0, 1, 0});

  std::vector<uint8_t> header = fileHeader(image, segments, sectionHeadersAt, sectionCount, shstrtabIndex);
  std::copy(header.begin(), header.end(), w.bytes.begin());
  image.sizes.metadata += records.size() + symtab.size() + strtab.bytes.size();
  image.file = std::move(w.bytes);
  image.sizes.file = image.file.size();
  return llvm::Error::success();
}

namespace {

class ElfWriter final : public ContainerWriter {
public:
  void addUnwindCode(PlannedImage &) override {}

  // .eh_frame with the carried functions' CIEs and FDEs, then their LSDAs (.gcc_except_table).
  llvm::Error addUnwindSections(PlannedImage &plan, uint32_t rva) override {
    PatchImage &image = plan.image();
    EhFrameRequest request;
    request.patched = &plan.patched();
    request.functions = plan.carriedFunctions();
    request.baseCounterpart = [&plan](uint64_t patchedRva) { return plan.baseCounterpart(patchedRva); };
    std::vector<uint8_t> lsda;
    std::vector<PatchFixup> scratch;
    uint32_t lsdaRva = rva + kPageSize * 16;  // provisional; fixed below once .eh_frame's size is known
    llvm::Expected<std::vector<uint8_t>> first = buildEhFrame(request, rva, lsdaRva, lsda, scratch);
    if (!first) return first.takeError();
    lsdaRva = uint32_t(alignTo(rva + first->size(), 16));
    lsda.clear();
    llvm::Expected<std::vector<uint8_t>> frames = buildEhFrame(request, rva, lsdaRva, lsda, image.fixups);
    if (!frames) return frames.takeError();
    if (frames->empty()) return llvm::Error::success();
    PatchSection eh{".eh_frame", rva, std::move(*frames), 0, {true, false, false}};
    eh.memorySize = uint32_t(eh.bytes.size());
    image.sizes.metadata += eh.bytes.size() + lsda.size();
    image.sections.push_back(std::move(eh));
    if (!lsda.empty()) {
      PatchSection table{".gcc_except_table", lsdaRva, std::move(lsda), 0, {true, false, false}};
      table.memorySize = uint32_t(table.bytes.size());
      image.sections.push_back(std::move(table));
    }
    return llvm::Error::success();
  }

  llvm::Error write(PlannedImage &plan) override { return writeElfContainer(plan.image()); }
};

}  // namespace

std::unique_ptr<ContainerWriter> elfWriter() { return std::make_unique<ElfWriter>(); }

}  // namespace hotforge::emitter
