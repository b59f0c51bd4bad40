// The PE container: a PE32+ DLL of the base's machine (docs/format.md, "PE container").
//
// The planner's sections keep their RVAs (.text at 0x1000, then .rdata, .data, .bss, each on its
// own pages; fixups refer to them). After the last of them, each on its own pages:
//   .rdata    the load config directory (HotPatchTableOffset) and IMAGE_HOT_PATCH_INFO with one
//             IMAGE_HOT_PATCH_BASE, its IMAGE_HOT_PATCH_HASHES and the patch table
//   .idata    the import directory of the image's new imports (when it has any)
//   .xdata    unwind records of the carried functions (pe_unwind.cpp)
//   .pdata    their RUNTIME_FUNCTION entries (the exception directory)
//   .reloc    base relocations for the absolute pointers into the image itself
//   .hotpatch the records (records.cpp), the same as in the ELF container
// References inside the image are resolved for the preferred ImageBase (absolute ones also get a
// base relocation), so the file is a consistent DLL; references into the base are left for the
// loader, which finds them in the patch table (x64 REL32 / ABSOLUTE) and in .hotpatch (all).
// Nothing depends on the clock: TimeDateStamp is derived from the content.
#include "emitter_internal.h"
#include "hotforge/core/machine_target.h"
#include "pe_unwind.h"

#include <llvm/BinaryFormat/COFF.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/SHA1.h>
#include <llvm/Support/SHA256.h>

#include <fmt/core.h>

#include <algorithm>
#include <map>

namespace hotforge::emitter {
namespace {

constexpr uint64_t kImageBase = 0x180000000;
constexpr uint32_t kFileAlignment = 0x200;
constexpr uint32_t kDosHeaderSize = 0x40, kCoffHeaderSize = 20, kOptionalHeaderSize = 240, kSectionHeaderSize = 40;
constexpr uint32_t kDataDirectories = 16;

// IMAGE_LOAD_CONFIG_DIRECTORY64: the size the sample DLLs use, which covers HotPatchTableOffset.
constexpr uint32_t kLoadConfigSize = 0x140, kHotPatchTableOffsetField = 0xF0;

// IMAGE_HOT_PATCH_* (winnt.h). Version 3 is the first with ExtraPatchSize, which carries the
// expected first bytes of each base function; version 4 adds nothing this image needs.
constexpr uint32_t kHotPatchInfoVersion = 3, kHotPatchInfoSize = 7 * 4, kHotPatchBaseSize = 8 * 4;
constexpr uint32_t kHotPatchHashesSize = 32 + 20;
constexpr uint32_t kBaseCanRollBack = 0x2;
constexpr uint32_t kRecordInverse = 0x80000000, kRecordFunction = 0x1C000, kRecordAbsolute = 0x2C000,
                   kRecordRel32 = 0x3C000;
constexpr uint32_t kMaxEntriesPerRecord = 0xFFF;  // 12-bit count
constexpr uint32_t kExtraPatchSize = 1;           // DWORDs after {source, target} in every entry

constexpr uint32_t kScnCode = 0x20, kScnInitialized = 0x40, kScnUninitialized = 0x80, kScnDiscardable = 0x02000000,
                   kScnExecute = 0x20000000, kScnRead = 0x40000000, kScnWrite = 0x80000000;

struct OutSection {
  std::string name;
  uint32_t rva = 0, virtualSize = 0;
  llvm::ArrayRef<uint8_t> bytes;  // raw data (none for .bss)
  uint32_t characteristics = 0;
  uint32_t fileOffset = 0, rawSize = 0;
};

uint32_t characteristicsOf(const PatchSection &s) {
  if (s.permissions.execute) return kScnCode | kScnExecute | kScnRead;
  if (s.bytes.empty()) return kScnUninitialized | kScnRead | kScnWrite;
  return kScnInitialized | kScnRead | (s.permissions.write ? kScnWrite : 0);
}

struct TableEntry {
  uint32_t source, target, extra;
};

// Appends patch-table records of one type, at most 4095 entries per header.
void putRecords(ByteWriter &w, uint32_t type, std::vector<TableEntry> entries) {
  std::sort(entries.begin(), entries.end(),
            [](const TableEntry &a, const TableEntry &b) { return std::tie(a.source, a.target) < std::tie(b.source, b.target); });
  for (size_t i = 0; i < entries.size(); i += kMaxEntriesPerRecord) {
    size_t n = std::min<size_t>(kMaxEntriesPerRecord, entries.size() - i);
    w.u32(type | uint32_t(n));
    for (size_t k = i; k < i + n; ++k) {
      w.u32(entries[k].source);
      w.u32(entries[k].target);
      w.u32(entries[k].extra);
    }
  }
}

// The load config and everything IMAGE_HOT_PATCH_INFO reaches, for a section at `rva`. Offsets
// inside IMAGE_HOT_PATCH_INFO are relative to its start; HotPatchTableOffset is an RVA.
std::vector<uint8_t> hotPatchMetadata(const PatchImage &image, const Image &base, uint32_t rva) {
  ByteWriter w;
  w.u32(kLoadConfigSize);
  w.zeros(kLoadConfigSize - 4);
  w.padTo(16);
  uint32_t info = uint32_t(w.size());
  w.patch32(kHotPatchTableOffsetField, rva + info);

  uint32_t baseList = kHotPatchInfoSize + 4;  // one DWORD, after the header and its padding
  uint32_t baseAt = baseList + 4, hashesAt = baseAt + kHotPatchBaseSize, tableAt = hashesAt + kHotPatchHashesSize;
  tableAt = uint32_t(alignTo(tableAt, 4));
  ByteWriter table;
  std::vector<TableEntry> functions, rel32, absolute;
  for (const PatchRedirect &r : image.redirects) {
    // The extra DWORD: the first four bytes of the base function, as the author saw them.
    llvm::ArrayRef<uint8_t> first = base.bytesAt(r.baseRva, 4);
    uint32_t expected = first.size() == 4 ? llvm::support::endian::read32le(first.data()) : 0;
    functions.push_back({r.baseRva, r.patchRva, expected});
  }
  const MachineTarget &codec = machineTarget(image.machine);
  for (const PatchFixup &f : image.fixups) {
    if (f.space != FixupSpace::Base) continue;
    uint32_t target = uint32_t(f.target);
    if (f.kind == FixupKind::Data64) {
      absolute.push_back({f.site, target, 0});
      continue;
    }
    // The table holds whole little-endian fields only: 32-bit distances and 64-bit addresses.
    // Fields of a few bits (Arm64) and PC-relative data are only in .hotpatch.
    InstructionField field{f.kind, f.fieldOffset, f.instructionSize, f.scale};
    std::optional<FieldBits> bits = codec.fieldBits(field);
    if (!bits || bits->mask) continue;
    uint32_t at = f.site + bits->begin, width = bits->end - bits->begin;
    FieldMeaning meaning = codec.meaning(f.kind);
    if (meaning == FieldMeaning::Absolute && width == 8) absolute.push_back({at, target, 0});
    if (meaning == FieldMeaning::Distance && width == 4) {
      // REL32 is measured from the end of its field; ours from the end of the instruction, which
      // is later when an immediate follows the field: aim the target as much lower.
      uint32_t tail = f.instructionSize > bits->end ? f.instructionSize - bits->end : 0u;
      rel32.push_back({at, target - tail, 0});
    }
  }
  putRecords(table, kRecordFunction, std::move(functions));
  putRecords(table, kRecordInverse | kRecordRel32, std::move(rel32));
  putRecords(table, kRecordInverse | kRecordAbsolute, std::move(absolute));
  table.u32(0);

  ByteWriter blob;
  // IMAGE_HOT_PATCH_INFO
  blob.u32(kHotPatchInfoVersion);
  blob.u32(tableAt + uint32_t(table.size()));  // Size: the whole blob
  blob.u32(image.sequence);
  blob.u32(baseList);
  blob.u32(1);  // BaseImageCount
  blob.u32(0);  // BufferOffset: no scratch buffer
  blob.u32(kExtraPatchSize);
  blob.zeros(baseList - blob.size());
  blob.u32(baseAt);
  // IMAGE_HOT_PATCH_BASE
  blob.u32(image.sequence);
  blob.u32(kBaseCanRollBack | machineTarget(image.machine).hotPatchBaseMachine());
  blob.u32(image.baseline.timeDateStamp);
  blob.u32(image.baseline.checkSum);
  blob.u32(hashesAt);
  blob.u32(kHotPatchHashesSize);
  blob.u32(tableAt);
  blob.u32(0);  // BufferOffset
  // IMAGE_HOT_PATCH_HASHES: of the whole base file, as the records' baseline identity.
  blob.raw(image.baseline.sha256);
  blob.raw(llvm::SHA1::hash(base.fileBytes()));
  blob.zeros(tableAt - blob.size());
  blob.raw(table.bytes);
  w.raw(blob.bytes);
  return std::move(w.bytes);
}

// The import directory of the new imports, for a section at `rva`: one IMAGE_IMPORT_DESCRIPTOR
// per DLL (in name order), its lookup table and address table (by name, hint 0), the names. It
// tells tools and Windows what the image needs; Hotforge's loaders resolve the same symbols from
// the records and write them to the stubs' slots (FixupSpace::Import).
struct ImportDirectory {
  std::vector<uint8_t> bytes;
  uint32_t addressTableOffset = 0, addressTableSize = 0;  // the IATs, for the IAT data directory
};
ImportDirectory importDirectory(const std::vector<PatchImport> &imports, uint32_t rva) {
  std::map<std::string, std::vector<std::string>> byLibrary;
  for (const PatchImport &i : imports) byLibrary[i.library].push_back(i.symbol);
  uint32_t descriptors = uint32_t(byLibrary.size() + 1) * 20, tableSize = 0;
  for (auto &[library, symbols] : byLibrary) tableSize += uint32_t(symbols.size() + 1) * 8;
  uint32_t lookupAt = descriptors, addressesAt = lookupAt + tableSize, namesAt = addressesAt + tableSize;
  ByteWriter head, names;
  std::vector<uint64_t> table;  // one lookup table's entries, repeated as the address table
  for (auto &[library, symbols] : byLibrary) {
    uint32_t first = uint32_t(table.size()) * 8;
    for (const std::string &symbol : symbols) {
      table.push_back(rva + namesAt + names.size());
      names.u16(0);  // hint
      names.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(symbol.c_str()), symbol.size() + 1));
      names.padTo(2);
    }
    table.push_back(0);
    uint32_t libraryName = rva + namesAt + uint32_t(names.size());
    names.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(library.c_str()), library.size() + 1));
    names.padTo(2);
    head.u32(rva + lookupAt + first);  // OriginalFirstThunk
    head.u32(0);                       // TimeDateStamp: not bound
    head.u32(0);                       // ForwarderChain
    head.u32(libraryName);
    head.u32(rva + addressesAt + first);  // FirstThunk
  }
  head.zeros(20);
  for (int copy = 0; copy < 2; ++copy)
    for (uint64_t entry : table) head.u64(entry);
  head.raw(names.bytes);
  return {std::move(head.bytes), addressesAt, tableSize};
}

// IMAGE_BASE_RELOCATION blocks of DIR64 entries, one block per 4 KiB page.
std::vector<uint8_t> baseRelocations(std::vector<uint32_t> sites) {
  std::sort(sites.begin(), sites.end());
  sites.erase(std::unique(sites.begin(), sites.end()), sites.end());
  ByteWriter w;
  for (size_t i = 0; i < sites.size();) {
    uint32_t page = sites[i] & ~(kPageSize - 1);
    size_t start = w.size();
    w.u32(page);
    w.u32(0);  // block size, below
    for (; i < sites.size() && (sites[i] & ~(kPageSize - 1)) == page; ++i)
      w.u16(uint16_t(llvm::COFF::IMAGE_REL_BASED_DIR64 << 12 | (sites[i] - page)));
    if ((w.size() - start) % 4) w.u16(0);  // IMAGE_REL_BASED_ABSOLUTE: padding
    w.patch32(start + 4, uint32_t(w.size() - start));
  }
  return std::move(w.bytes);
}

// The PE checksum: 16-bit one's-complement-style sum of the file with the field zeroed, plus the
// file size.
uint32_t peCheckSum(llvm::ArrayRef<uint8_t> file, size_t fieldAt) {
  uint64_t sum = 0;
  for (size_t i = 0; i < file.size(); i += 2) {
    if (i == fieldAt || i == fieldAt + 2) continue;
    uint32_t word = file[i] | (i + 1 < file.size() ? uint32_t(file[i + 1]) << 8 : 0u);
    sum += word;
    sum = (sum & 0xffff) + (sum >> 16);
  }
  sum = (sum & 0xffff) + (sum >> 16);
  return uint32_t(sum + file.size());
}

// Resolves the fixups that stay inside the image for the preferred ImageBase; returns the sites
// of the absolute ones, which need base relocations.
llvm::Expected<std::vector<uint32_t>> resolveInternalFixups(PatchImage &image) {
  PatchImage local;
  local.format = image.format;
  local.machine = image.machine;
  local.imageSize = image.imageSize;
  local.sections = image.sections;
  const MachineTarget &codec = machineTarget(image.machine);
  std::vector<uint32_t> relocated;
  for (const PatchFixup &f : image.fixups) {
    if (f.space != FixupSpace::Image) continue;
    local.fixups.push_back(f);
    if (f.kind == FixupKind::Data64) relocated.push_back(f.site);
    InstructionField field{f.kind, f.fieldOffset, f.instructionSize, f.scale};
    if (codec.meaning(f.kind) == FieldMeaning::Absolute)
      if (std::optional<FieldBits> bits = codec.fieldBits(field)) relocated.push_back(f.site + bits->begin);
  }
  std::vector<uint8_t> memory = layOut(local);
  if (llvm::Error e = lift(applyFixups(local, 0, kImageBase, {}, memory))) return e;
  for (PatchSection &s : image.sections)
    if (!s.bytes.empty()) std::copy(memory.begin() + s.rva, memory.begin() + s.rva + s.bytes.size(), s.bytes.begin());
  return relocated;
}

// Where the data directories point.
struct Directories {
  uint32_t metadataRva = 0, importsRva = 0, importsSize = 0, addressTableRva = 0, addressTableSize = 0;
  uint32_t pdataRva = 0, pdataSize = 0, relocRva = 0, relocSize = 0;
};

llvm::Error checkPlannedSections(PatchImage &image) {
  if (image.sections.empty() || image.sections.front().name != ".text" || image.sections.front().rva != kPageSize)
    return makeError("internal: the planner's .text is not at rva 0x1000");
  for (PatchSection &s : image.sections)
    if (s.name == ".rodata") s.name = ".rdata";
  for (const PatchSection &s : image.sections)
    if (s.rva + uint64_t(s.bytes.size()) > image.imageSize || s.memorySize < s.bytes.size())
      return formatError("internal: section {} at rva {:#x} does not fit the image", s.name, s.rva);
  return llvm::Error::success();
}

// The metadata sections after the planner's, each on its own pages: the hot-patch metadata, the
// imports, the unwind tables and the base relocations of `relocated`. Advances image.imageSize.
llvm::Expected<Directories> addMetadataSections(PatchImage &image, const PeContainerInput &input,
                                                std::vector<uint32_t> relocated) {
  Directories d;
  uint32_t next = image.imageSize;
  auto addSection = [&](const char *name, std::vector<uint8_t> bytes) {
    PatchSection s{name, next, std::move(bytes), 0, {true, false, false}};
    s.memorySize = uint32_t(s.bytes.size());
    next = uint32_t(alignTo(next + s.memorySize, kPageSize));
    image.sizes.metadata += s.memorySize;
    image.sections.push_back(std::move(s));
    return image.sections.back().rva;
  };
  d.metadataRva = next;
  addSection(".rdata", hotPatchMetadata(image, *input.base, d.metadataRva));
  if (!image.imports.empty()) {
    ImportDirectory imports = importDirectory(image.imports, next);
    d.importsSize = uint32_t(imports.bytes.size());
    d.importsRva = addSection(".idata", std::move(imports.bytes));
    d.addressTableRva = d.importsRva + imports.addressTableOffset;
    d.addressTableSize = imports.addressTableSize;
  }

  // First with provisional RVAs for the sizes, then where the tables land.
  llvm::Expected<PeUnwindTables> sizing = input.unwind->emit(0, 0, input.handlerStubs);
  if (!sizing) return sizing.takeError();
  uint32_t xdataRva = next;
  d.pdataRva = sizing->xdata.empty() ? next : uint32_t(alignTo(next + sizing->xdata.size(), kPageSize));
  llvm::Expected<PeUnwindTables> unwind = input.unwind->emit(d.pdataRva, xdataRva, input.handlerStubs);
  if (!unwind) return unwind.takeError();
  d.pdataSize = uint32_t(unwind->pdata.size());
  if (!unwind->xdata.empty()) addSection(".xdata", std::move(unwind->xdata));
  if (!unwind->pdata.empty()) addSection(".pdata", std::move(unwind->pdata));
  if (!relocated.empty()) {
    std::vector<uint8_t> relocations = baseRelocations(std::move(relocated));
    d.relocSize = uint32_t(relocations.size());
    d.relocRva = addSection(".reloc", std::move(relocations));
  }
  image.imageSize = next;
  return d;
}

// The sections as the file lays them out, the records last.
std::vector<OutSection> outSections(const PatchImage &image, llvm::ArrayRef<uint8_t> records, uint32_t recordsRva) {
  std::vector<OutSection> out;
  for (const PatchSection &s : image.sections) {
    uint32_t characteristics = characteristicsOf(s);
    if (s.name == ".reloc") characteristics |= kScnDiscardable;
    out.push_back({s.name, s.rva, s.memorySize, s.bytes, characteristics});
  }
  out.push_back({kRecordSectionName, recordsRva, uint32_t(records.size()), records, kScnInitialized | kScnRead});
  // A PE loader maps sections back to back: a page the planner reserved for an empty section
  // belongs to the section before it.
  for (size_t i = 0; i + 1 < out.size(); ++i)
    if (alignTo(out[i].rva + uint64_t(std::max<uint32_t>(out[i].virtualSize, 1)), kPageSize) < out[i + 1].rva)
      out[i].virtualSize = out[i + 1].rva - out[i].rva;
  for (OutSection &s : out) s.virtualSize = std::max<uint32_t>(s.virtualSize, 1);
  return out;
}

// Where the headers leave fields to patch once the whole file is written.
struct HeaderFields {
  size_t timeDateStampAt = 0, checkSumAt = 0;
};

// The PE32+ optional header, its data directories included.
void putOptionalHeader(ByteWriter &w, const PatchImage &image, const std::vector<OutSection> &out,
                       uint32_t headersSize, const Directories &d, HeaderFields &fields) {
  uint32_t codeSize = 0, initializedSize = 0, uninitializedSize = 0;
  for (const OutSection &s : out) {
    if (s.characteristics & kScnCode) codeSize += s.rawSize;
    else if (s.characteristics & kScnUninitialized) uninitializedSize += uint32_t(alignTo(s.virtualSize, kFileAlignment));
    else initializedSize += s.rawSize;
  }
  w.u16(0x20b);
  w.u8(0);  // linker version
  w.u8(0);
  w.u32(codeSize);
  w.u32(initializedSize);
  w.u32(uninitializedSize);
  w.u32(0);           // AddressOfEntryPoint: none
  w.u32(kPageSize);   // BaseOfCode: .text
  w.u64(kImageBase);
  w.u32(kPageSize);   // SectionAlignment
  w.u32(kFileAlignment);
  w.u16(6);  // operating system version
  w.u16(0);
  w.u16(0);  // image version
  w.u16(0);
  w.u16(6);  // subsystem version
  w.u16(0);
  w.u32(0);  // Win32VersionValue
  w.u32(image.imageSize);
  w.u32(headersSize);
  fields.checkSumAt = w.size();
  w.u32(0);  // CheckSum, once the file is written
  w.u16(llvm::COFF::IMAGE_SUBSYSTEM_WINDOWS_GUI);
  w.u16(llvm::COFF::IMAGE_DLL_CHARACTERISTICS_HIGH_ENTROPY_VA | llvm::COFF::IMAGE_DLL_CHARACTERISTICS_DYNAMIC_BASE |
        llvm::COFF::IMAGE_DLL_CHARACTERISTICS_NX_COMPAT);
  w.u64(0x100000);  // stack reserve, commit; heap reserve, commit
  w.u64(0x1000);
  w.u64(0x100000);
  w.u64(0x1000);
  w.u32(0);  // LoaderFlags
  w.u32(kDataDirectories);
  for (uint32_t directory = 0; directory < kDataDirectories; ++directory) {
    uint32_t rva = 0, size = 0;
    if (directory == llvm::COFF::EXCEPTION_TABLE && d.pdataSize) rva = d.pdataRva, size = d.pdataSize;
    if (directory == llvm::COFF::BASE_RELOCATION_TABLE && d.relocSize) rva = d.relocRva, size = d.relocSize;
    if (directory == llvm::COFF::LOAD_CONFIG_TABLE) rva = d.metadataRva, size = kLoadConfigSize;
    if (directory == llvm::COFF::IMPORT_TABLE && d.importsSize) rva = d.importsRva, size = d.importsSize;
    if (directory == llvm::COFF::IAT && d.addressTableSize) rva = d.addressTableRva, size = d.addressTableSize;
    w.u32(rva);
    w.u32(size);
  }
}

// DOS header, COFF header, optional header and section headers, padded to `headersSize`.
HeaderFields putHeaders(ByteWriter &w, const PatchImage &image, const std::vector<OutSection> &out,
                        uint32_t headersSize, uint32_t stringTableAt, const Directories &d) {
  HeaderFields fields;
  // DOS header: only the magic and the offset of the PE header.
  w.u16(0x5a4d);
  w.zeros(0x3c - 2);
  w.u32(kDosHeaderSize);
  w.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>("PE\0\0"), 4));
  // COFF file header
  w.u16(machineTarget(image.machine).coffMachine());
  w.u16(uint16_t(out.size()));
  fields.timeDateStampAt = w.size();
  w.u32(0);  // TimeDateStamp: from the content, once the file is written
  w.u32(stringTableAt);  // PointerToSymbolTable: no symbols, only the string table
  w.u32(0);
  w.u16(uint16_t(kOptionalHeaderSize));
  w.u16(llvm::COFF::IMAGE_FILE_EXECUTABLE_IMAGE | llvm::COFF::IMAGE_FILE_LARGE_ADDRESS_AWARE | llvm::COFF::IMAGE_FILE_DLL);
  putOptionalHeader(w, image, out, headersSize, d, fields);
  for (const OutSection &s : out) {
    char name[8] = {};
    std::string text = s.name.size() <= 8 ? s.name : "/4";  // ".hotpatch": offset 4 of the string table
    std::copy(text.begin(), text.end(), name);
    w.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(name), 8));
    w.u32(s.virtualSize);
    w.u32(s.rva);
    w.u32(s.rawSize);
    w.u32(s.fileOffset);
    w.zeros(12);  // relocations, line numbers and their counts
    w.u32(s.characteristics);
  }
  w.zeros(headersSize - w.size());
  return fields;
}

}  // namespace

llvm::Error writePeContainer(PatchImage &image, const PeContainerInput &input) {
  if (!input.base || !input.unwind) return makeError("internal: the PE writer needs the base and the unwind data");
  if (llvm::Error e = checkPlannedSections(image)) return e;
  llvm::Expected<std::vector<uint32_t>> relocated = resolveInternalFixups(image);
  if (!relocated) return relocated.takeError();
  llvm::Expected<Directories> directories = addMetadataSections(image, input, std::move(*relocated));
  if (!directories) return directories.takeError();

  // The records last; they name the image size, which covers them.
  uint32_t recordsRva = image.imageSize;
  size_t recordsSize = encodeRecords(image).size();
  image.imageSize = uint32_t(alignTo(recordsRva + recordsSize, kPageSize));
  std::vector<uint8_t> records = encodeRecords(image);
  image.sizes.metadata += records.size();
  std::vector<OutSection> out = outSections(image, records, recordsRva);

  // File layout: headers, then each section's raw data, then the COFF string table that holds
  // the name ".hotpatch" (longer than the 8 bytes a section header holds).
  uint32_t headersSize = uint32_t(alignTo(kDosHeaderSize + 4 + kCoffHeaderSize + kOptionalHeaderSize +
                                              kSectionHeaderSize * out.size(), kFileAlignment));
  if (headersSize > kPageSize) return makeError("internal: too many sections for the PE headers");
  uint32_t fileAt = headersSize;
  for (OutSection &s : out) {
    if (s.bytes.empty()) continue;
    s.fileOffset = fileAt;
    s.rawSize = uint32_t(alignTo(s.bytes.size(), kFileAlignment));
    fileAt += s.rawSize;
  }
  ByteWriter w;
  HeaderFields fields = putHeaders(w, image, out, headersSize, fileAt, *directories);
  for (const OutSection &s : out) {
    if (s.bytes.empty()) continue;
    w.raw(s.bytes);
    w.zeros(s.fileOffset + s.rawSize - w.size());
  }
  std::string longName = kRecordSectionName;
  w.u32(uint32_t(4 + longName.size() + 1));
  w.raw(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(longName.c_str()), longName.size() + 1));

  // TimeDateStamp from the content (as lld's /Brepro does), then the checksum over everything.
  std::array<uint8_t, 32> digest = llvm::SHA256::hash(w.bytes);
  w.patch32(fields.timeDateStampAt, llvm::support::endian::read32le(digest.data()));
  w.patch32(fields.checkSumAt, peCheckSum(w.bytes, fields.checkSumAt));

  image.file = std::move(w.bytes);
  image.sizes.file = image.file.size();
  return llvm::Error::success();
}

namespace {

class PeWriter final : public ContainerWriter {
public:
  // An exception handler that the carried unwind data names and that stays in the base is
  // reached through a stub in .text (UNWIND_INFO holds an RVA of this image).
  void addUnwindCode(PlannedImage &plan) override {
    llvm::Expected<PeUnwindSource> source = peUnwindSourceFor(plan.patched());
    if (!source) return plan.refuse(source.takeError());
    std::vector<CarriedCode> carried;
    for (const PatchFunction &f : plan.image().functions) carried.push_back({f.patchedRva, f.size, f.rva, f.name});
    llvm::Expected<std::unique_ptr<PeUnwindCopy>> unwind = readPeUnwind(std::move(*source), std::move(carried));
    if (!unwind) return plan.refuse(unwind.takeError());
    unwind_ = std::move(*unwind);
    for (uint64_t handler : unwind_->handlersOutside()) {
      std::optional<uint64_t> inBase = plan.baseCounterpart(handler);
      if (!inBase)
        plan.refuse(rule::kHandlerNotInBase,
                    fmt::format("the exception handler at patched rva {:#x} has no counterpart in the base", handler));
      else handlerStubs_[handler] = plan.addAbsoluteJump(*inBase, FixupSpace::Base);
    }
  }

  llvm::Error addUnwindSections(PlannedImage &, uint32_t) override { return llvm::Error::success(); }

  llvm::Error write(PlannedImage &plan) override {
    return writePeContainer(plan.image(), {&plan.base(), unwind_.get(), std::move(handlerStubs_)});
  }

private:
  std::unique_ptr<PeUnwindCopy> unwind_;        // read once, by addUnwindCode
  std::map<uint64_t, uint32_t> handlerStubs_;  // patched handler rva -> stub image rva
};

}  // namespace

std::unique_ptr<ContainerWriter> peWriter() { return std::make_unique<PeWriter>(); }

}  // namespace hotforge::emitter
