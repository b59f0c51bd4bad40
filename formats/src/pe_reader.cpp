// PE32+ reader (x64 and Arm64) over LLVM libObject.
#include "hotforge/core/machine_target.h"
#include "format_reader.h"

#include <llvm/BinaryFormat/COFF.h>
#include <llvm/Object/COFF.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>

#include <array>
#include <cstring>

namespace hotforge::detail {
namespace {

using namespace llvm;
using namespace llvm::object;
using support::endian::read32le;

// Reads `size` bytes at `rva`; an error names the RVA.
Expected<ArrayRef<uint8_t>> bytesAtRva(const COFFObjectFile &coff, uint32_t rva, uint32_t size, StringRef what) {
  ArrayRef<uint8_t> bytes;
  if (Error e = coff.getRvaAndSizeAsBytes(rva, size, bytes))
    return makeError(what + " at RVA " + hexOffset(rva) + " (size " + hexOffset(size) + "): " + errorText(std::move(e)));
  // LLVM checks the section's virtual size, not that its raw data holds the range (found by fuzzing).
  StringRef file = coff.getData();
  const uint8_t *begin = reinterpret_cast<const uint8_t *>(file.data());
  if (bytes.data() < begin || bytes.data() > begin + file.size() || size_t(begin + file.size() - bytes.data()) < size)
    return makeError(what + " at RVA " + hexOffset(rva) + " (size " + hexOffset(size) + ") lies beyond the file's data");
  return bytes;
}

// The functions of the exception directory (.pdata), whose entries the machine target reads. An
// entry chained to another describes a part of that entry's function, so it is folded into that
// function rather than listed as one of its own.
Error readExceptionDirectory(const COFFObjectFile &coff, Machine machine, FunctionTableBuilder &functions) {
  const data_directory *directory = coff.getDataDirectory(COFF::EXCEPTION_TABLE);
  if (!directory || !directory->Size) return Error::success();
  Expected<ArrayRef<uint8_t>> table =
      bytesAtRva(coff, directory->RelativeVirtualAddress, directory->Size, "exception directory (.pdata)");
  if (!table) return table.takeError();
  const MachineTarget &target = machineTarget(machine);
  RvaReader bytesAt = [&coff](uint32_t rva, uint32_t size, const char *what) -> Outcome<std::span<const uint8_t>> {
    Expected<ArrayRef<uint8_t>> bytes = bytesAtRva(coff, rva, size, what);
    if (!bytes) return Failure{errorText(bytes.takeError())};
    return std::span<const uint8_t>(*bytes);
  };
  std::vector<PdataEntry> entries;
  std::map<uint32_t, uint32_t> parentOf;
  size_t entrySize = target.pdataEntrySize();
  for (size_t i = 0; i + entrySize <= table->size(); i += entrySize) {
    Outcome<PdataEntry> entry = target.readPdataEntry(table->slice(i, entrySize), i / entrySize, bytesAt);
    if (!entry) return makeError(entry.error());
    entries.push_back(*entry);
    parentOf[entry->begin] = entry->parent;
  }
  auto root = [&](uint32_t begin) {
    for (int depth = 0; depth < 32; ++depth) {
      auto it = parentOf.find(begin);
      if (it == parentOf.end() || it->second == begin) break;
      begin = it->second;
    }
    return begin;
  };
  for (const PdataEntry &e : entries)
    if (e.parent == e.begin) functions.add(e.begin, e.end - e.begin, std::nullopt, FunctionSource::Pdata);
  for (const PdataEntry &e : entries)
    if (e.parent != e.begin) functions.addPart(root(e.begin), {e.begin, e.end - e.begin});
  return Error::success();
}

Error readExports(const COFFObjectFile &coff, FunctionTableBuilder &functions, std::vector<DataObject> &data,
                  const std::vector<Section> &sections) {
  const export_directory_table_entry *table = coff.getExportTable();
  if (!table) return Error::success();
  // A crafted count would make the walk below take hours; a real table fits in the file.
  if (uint64_t(table->AddressTableEntries) * 4 > coff.getData().size())
    return makeError("export directory claims " + std::to_string(uint32_t(table->AddressTableEntries)) +
                     " entries, more than the file can hold");
  for (const ExportDirectoryEntryRef &entry : coff.export_directories()) {
    StringRef name;
    uint32_t rva = 0;
    bool forwarder = false;
    if (Error e = entry.getExportRVA(rva)) return e;
    if (Error e = entry.isForwarder(forwarder)) return e;
    if (forwarder || rva == 0) continue;
    if (Error e = entry.getSymbolName(name)) return e;
    std::optional<std::string> exportName;
    if (!name.empty()) exportName = name.str();
    const Section *section = nullptr;
    for (const Section &s : sections)
      if (rva >= s.rva && rva - s.rva < s.size) section = &s;
    if (section && section->permissions.execute)
      functions.add(rva, 0, exportName, FunctionSource::Exports, true);
    else if (section && exportName)
      data.push_back({*exportName, {rva, 0}, false, DataSource::Symtab, /*sizeKnown=*/false});
  }
  return Error::success();
}

// A NUL-terminated name at `rva`, bounded by the raw data of its section.
Expected<std::string> nameAtRva(const COFFObjectFile &coff, uint32_t rva, StringRef what) {
  for (const SectionRef &ref : coff.sections()) {
    const coff_section *s = coff.getCOFFSection(ref);
    uint32_t raw = std::min<uint32_t>(s->SizeOfRawData, s->VirtualSize ? uint32_t(s->VirtualSize) : uint32_t(s->SizeOfRawData));
    if (rva < s->VirtualAddress || rva - s->VirtualAddress >= raw) continue;
    Expected<ArrayRef<uint8_t>> bytes = bytesAtRva(coff, rva, raw - (rva - s->VirtualAddress), what);
    if (!bytes) return bytes.takeError();
    auto end = std::find(bytes->begin(), bytes->end(), 0);
    if (end == bytes->end()) return makeError(what + " at RVA " + hexOffset(rva) + " is not terminated");
    return std::string(bytes->begin(), end);
  }
  return makeError(what + " at RVA " + hexOffset(rva) + " is outside every section's data");
}

// The import directory, read from its bytes with every RVA checked: LLVM's iterator follows the
// lookup tables without bounds (found by fuzzing).
Error readImports(const COFFObjectFile &coff, Image &image) {
  const data_directory *directory = coff.getDataDirectory(COFF::IMPORT_TABLE);
  if (!directory || !directory->Size) return Error::success();
  constexpr uint32_t kDescriptorSize = 20;
  for (uint32_t index = 0;; ++index) {
    Expected<ArrayRef<uint8_t>> descriptor = bytesAtRva(coff, directory->RelativeVirtualAddress + index * kDescriptorSize,
                                                        kDescriptorSize, "import descriptor");
    if (!descriptor) return descriptor.takeError();
    uint32_t lookup = read32le(descriptor->data()), nameRva = read32le(descriptor->data() + 12),
             iat = read32le(descriptor->data() + 16);
    if (!lookup && !nameRva && !iat) break;
    Expected<std::string> library = nameAtRva(coff, nameRva, "import library name");
    if (!library) return library.takeError();
    uint32_t table = lookup ? lookup : iat;
    for (uint32_t slot = 0;; ++slot) {
      if (slot > coff.getData().size() / 8) return makeError("import table of " + *library + " does not end");
      Expected<ArrayRef<uint8_t>> entry = bytesAtRva(coff, table + slot * 8, 8, "import lookup entry");
      if (!entry) return entry.takeError();
      uint64_t value = support::endian::read64le(entry->data());
      if (!value) break;
      std::string name;
      if (value >> 63) {
        name = "#" + std::to_string(value & 0xffff);
      } else {
        Expected<std::string> symbol = nameAtRva(coff, uint32_t(value) + 2, "imported symbol name");
        if (!symbol) return symbol.takeError();
        name = std::move(*symbol);
      }
      image.imports.push_back({std::move(name), *library, uint64_t(iat) + slot * 8, ImportKind::IatSlot});
    }
  }
  return Error::success();
}

// The CodeView (RSDS) record of the debug directory, read with every size checked: LLVM's reader
// trusts the record's size (found by fuzzing).
Error readCodeView(const COFFObjectFile &coff, Image &image) {
  const data_directory *directory = coff.getDataDirectory(COFF::DEBUG_DIRECTORY);
  if (!directory || !directory->Size) return Error::success();
  constexpr uint32_t kEntrySize = 28, kCodeView = 2, kRsdsHeader = 24;
  for (uint32_t at = 0; at + kEntrySize <= directory->Size; at += kEntrySize) {
    Expected<ArrayRef<uint8_t>> entry = bytesAtRva(coff, directory->RelativeVirtualAddress + at, kEntrySize, "debug directory entry");
    if (!entry) return entry.takeError();
    uint32_t type = read32le(entry->data() + 12), size = read32le(entry->data() + 16), rva = read32le(entry->data() + 20);
    if (type != kCodeView) continue;
    if (size < kRsdsHeader) return makeError("CodeView record at RVA " + hexOffset(rva) + " is too short");
    Expected<ArrayRef<uint8_t>> record = bytesAtRva(coff, rva, size, "CodeView record");
    if (!record) return record.takeError();
    if (std::memcmp(record->data(), "RSDS", 4) != 0) continue;  // an older NB10 record: no GUID to match
    CodeViewRecord cv;
    std::copy(record->begin() + 4, record->begin() + 20, cv.guid.begin());
    cv.age = read32le(record->data() + 20);
    auto path = record->drop_front(kRsdsHeader);
    cv.pdbPath.assign(path.begin(), std::find(path.begin(), path.end(), 0));
    image.identity.codeView = std::move(cv);
    return Error::success();
  }
  return Error::success();
}

std::string_view baseRelocationTypeName(uint8_t type) {
  static const std::array<std::string, 16> names = [] {
    std::array<std::string, 16> all;
    for (unsigned t = 0; t < all.size(); ++t) all[t] = "IMAGE_REL_BASED_" + std::to_string(t);
    all[COFF::IMAGE_REL_BASED_ABSOLUTE] = "IMAGE_REL_BASED_ABSOLUTE";
    all[COFF::IMAGE_REL_BASED_HIGH] = "IMAGE_REL_BASED_HIGH";
    all[COFF::IMAGE_REL_BASED_LOW] = "IMAGE_REL_BASED_LOW";
    all[COFF::IMAGE_REL_BASED_HIGHLOW] = "IMAGE_REL_BASED_HIGHLOW";
    all[COFF::IMAGE_REL_BASED_DIR64] = "IMAGE_REL_BASED_DIR64";
    return all;
  }();
  return names[type & 15];
}

// Base relocations, read from the directory's bytes: LLVM's iterator trusts the block sizes it
// finds, which a crafted image can make point past the end (found by fuzzing).
Error readBaseRelocations(const COFFObjectFile &coff, Image &image) {
  const data_directory *directory = coff.getDataDirectory(COFF::BASE_RELOCATION_TABLE);
  if (!directory || !directory->Size) return Error::success();
  Expected<ArrayRef<uint8_t>> table =
      bytesAtRva(coff, directory->RelativeVirtualAddress, directory->Size, "base relocation directory");
  if (!table) return table.takeError();
  for (size_t at = 0; at + 8 <= table->size();) {
    uint32_t page = read32le(table->data() + at), blockSize = read32le(table->data() + at + 4);
    if (page == 0 && blockSize == 0) break;  // zero padding after the last block
    if (blockSize < 8 || blockSize > table->size() - at)
      return makeError("base relocation block at directory offset " + hexOffset(at) + " claims " +
                       hexOffset(blockSize) + " bytes, which the directory does not hold");
    for (size_t entry = at + 8; entry + 2 <= at + blockSize; entry += 2) {
      uint16_t value = support::endian::read16le(table->data() + entry);
      uint8_t type = uint8_t(value >> 12);
      if (type == COFF::IMAGE_REL_BASED_ABSOLUTE) continue;  // padding entries
      image.relocations.push_back({uint64_t(page) + (value & 0xfff), type, baseRelocationTypeName(type), nullptr, 0});
    }
    at += blockSize;
  }
  return Error::success();
}

// COFF symbol table: present in mingw images, absent from lld-link/link.exe images.
void readCoffSymbols(const COFFObjectFile &coff, FunctionTableBuilder &functions, std::vector<DataObject> &data) {
  for (const SymbolRef &ref : coff.symbols()) {
    COFFSymbolRef symbol = coff.getCOFFSymbol(ref);
    if (symbol.getSectionNumber() <= 0) continue;
    Expected<const coff_section *> section = coff.getSection(symbol.getSectionNumber());
    Expected<StringRef> name = coff.getSymbolName(symbol);
    if (!section || !name) {
      consumeError(section.takeError());
      consumeError(name.takeError());
      continue;
    }
    if (!symbol.isExternal() && symbol.getStorageClass() != COFF::IMAGE_SYM_CLASS_STATIC) continue;
    // Static dot-names are section symbols (.text, .rdata$zzz); external ones such as mingw's
    // .refptr.X pointer slots are real objects.
    if (symbol.isSectionDefinition() || (!symbol.isExternal() && name->starts_with("."))) continue;
    uint64_t rva = uint64_t((*section)->VirtualAddress) + symbol.getValue();
    if (symbol.isFunctionDefinition() || symbol.getComplexType() == COFF::IMAGE_SYM_DTYPE_FUNCTION)
      functions.add(rva, 0, name->str(), FunctionSource::Symtab, symbol.isExternal());
    else if (!((*section)->Characteristics & COFF::IMAGE_SCN_MEM_EXECUTE))
      data.push_back({name->str(), {rva, 0}, false, DataSource::Symtab, /*sizeKnown=*/false});
  }
}

// The PDB named by --pdb, else the one the CodeView record names, else the same file name next to
// the image. A PDB found by lookup that is absent is no error: the image is simply stripped.
std::optional<std::string> locatePdb(const Image &image, const ImageReadOptions &options) {
  if (!options.pdbPath.empty()) return options.pdbPath;
  if (!image.identity.codeView || image.identity.codeView->pdbPath.empty()) return std::nullopt;
  const std::string &recorded = image.identity.codeView->pdbPath;
  if (sys::fs::is_regular_file(recorded)) return recorded;
  // The recorded path is often a Windows path from the build machine.
  std::string fileName = recorded.substr(recorded.find_last_of("/\\") + 1);
  SmallString<256> beside(sys::path::parent_path(image.path));
  sys::path::append(beside, fileName);
  if (sys::fs::is_regular_file(beside)) return beside.str().str();
  return std::nullopt;
}

class PeReader final : public FormatReader {
public:
  bool handles(const ObjectFile &object) const override { return object.isCOFF(); }

  bool holdsFunctions(const Section &) const override { return true; }

  // IMAGE_REL_BASED_DIR64: the slot holds an address (image base included).
  std::vector<uint64_t> pointerTargets(const Image &image) const override {
    std::vector<uint64_t> targets;
    for (const Relocation &r : image.relocations) {
      if (r.type != COFF::IMAGE_REL_BASED_DIR64) continue;
      ArrayRef<uint8_t> slot = image.bytesAt(r.rva, 8);
      if (slot.size() != 8) continue;
      uint64_t address = support::endian::read64le(slot.data());
      if (address >= image.imageBase) targets.push_back(address - image.imageBase);
    }
    return targets;
  }

  Error read(const ObjectFile &object, const ImageReadOptions &options, Image &image) const override {
    const auto &coff = cast<COFFObjectFile>(object);
    if (coff.getPE32Header())
      return makeError("PE32 (32-bit) images are not supported; Hotforge reads PE32+ for x64 and Arm64");
    const pe32plus_header *header = coff.getPE32PlusHeader();
    if (!header) return makeError("a COFF object file, not a linked PE image");
    image.format = Format::Pe;
    if (coff.getMachine() == COFF::IMAGE_FILE_MACHINE_ARM64EC || coff.getMachine() == COFF::IMAGE_FILE_MACHINE_ARM64X)
      return makeError("hybrid ARM64EC/ARM64X (CHPE) images cannot be hotpatched");
    std::optional<Machine> machine =
        findMachine([&](const MachineTarget &t) { return t.coffMachine() == coff.getMachine(); });
    if (!machine)
      return makeError("PE machine " + hexOffset(coff.getMachine()) + " is not supported (x64 and Arm64 are)");
    image.machine = *machine;
    image.imageBase = header->ImageBase;
    image.entryRva = header->AddressOfEntryPoint;
    image.identity.timeDateStamp = coff.getTimeDateStamp();
    image.identity.checkSum = header->CheckSum;
    image.identity.sizeOfImage = header->SizeOfImage;

    if (Error e = readCodeView(coff, image)) image.warnings.push_back("debug directory: " + errorText(std::move(e)));

    for (const SectionRef &ref : coff.sections()) {
      const coff_section *raw = coff.getCOFFSection(ref);
      Expected<StringRef> name = coff.getSectionName(raw);
      if (!name) return name.takeError();
      Section s;
      s.name = name->str();
      s.loaded = true;
      s.rva = raw->VirtualAddress;
      s.size = raw->VirtualSize ? raw->VirtualSize : raw->SizeOfRawData;
      s.fileOffset = raw->PointerToRawData;
      s.fileSize = std::min<uint64_t>(raw->SizeOfRawData, s.size);
      s.permissions = {(raw->Characteristics & COFF::IMAGE_SCN_MEM_READ) != 0,
                       (raw->Characteristics & COFF::IMAGE_SCN_MEM_WRITE) != 0,
                       (raw->Characteristics & COFF::IMAGE_SCN_MEM_EXECUTE) != 0};
      if (s.fileSize && (s.fileOffset > coff.getData().size() || coff.getData().size() - s.fileOffset < s.fileSize))
        return makeError("section " + s.name + " at file offset " + hexOffset(s.fileOffset) + " (size " +
                         hexOffset(s.fileSize) + ") extends past the end of the file (" +
                         hexOffset(coff.getData().size()) + " bytes)");
      image.sections.push_back(std::move(s));
    }

    FunctionTableBuilder functions;
    readCoffSymbols(coff, functions, image.dataObjects);
    if (Error e = readExceptionDirectory(coff, image.machine, functions)) return e;
    if (Error e = readExports(coff, functions, image.dataObjects, image.sections)) return e;
    collectDwarfFunctions(coff, image.imageBase, FunctionSource::Dwarf, functions, image.warnings);
    if (std::optional<std::string> pdb = locatePdb(image, options)) {
      if (!image.identity.codeView)
        return makeError("PDB " + *pdb + " was given, but the image has no CodeView record to match it against");
      if (Error e = readPdb(*pdb, *image.identity.codeView, functions, image.dataObjects)) return e;
      image.debugInfoPath = *pdb;
    }
    image.functions = functions.finish(image.sections);
    // PDB records, COFF symbols and exports carry no sizes: up to the next object or section end.
    sortAndDedupDataObjects(image.dataObjects, &image.sections);
    if (Error e = readImports(coff, image)) return e;
    if (Error e = readBaseRelocations(coff, image)) return e;

    if (const data_directory *dir = coff.getDataDirectory(COFF::LOAD_CONFIG_TABLE); dir && dir->Size) {
      const coff_load_configuration64 *config = coff.getLoadConfig64();
      if (!config)
        return makeError("load config directory at RVA " + hexOffset(dir->RelativeVirtualAddress) + " is unreadable");
      LoadConfig lc;
      lc.size = config->Size;
      auto covers = [&](size_t fieldEnd) { return lc.size >= fieldEnd; };
      if (covers(offsetof(coff_load_configuration64, SecurityCookie) + 8)) lc.securityCookie = config->SecurityCookie;
      if (covers(offsetof(coff_load_configuration64, GuardFlags) + 4)) lc.guardFlags = config->GuardFlags;
      if (covers(offsetof(coff_load_configuration64, HotPatchTableOffset) + 4))
        lc.hotPatchTableOffset = config->HotPatchTableOffset;
      image.loadConfig = lc;
    }
    return Error::success();
  }
};

}  // namespace

const FormatReader &peReader() {
  static const PeReader reader;
  return reader;
}

}  // namespace hotforge::detail
