// ELF64 little-endian reader (x86-64 and AArch64) over LLVM libObject.
#include "format_reader.h"

#include <llvm/BinaryFormat/ELF.h>
#include <llvm/DebugInfo/DWARF/DWARFContext.h>
#include <llvm/DebugInfo/DWARF/DWARFDebugFrame.h>
#include <llvm/Object/Binary.h>
#include <llvm/Object/BuildID.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>

namespace hotforge::detail {
namespace {

using namespace llvm;
using namespace llvm::object;

Permissions sectionPermissions(uint64_t flags) {
  return {(flags & ELF::SHF_ALLOC) != 0, (flags & ELF::SHF_WRITE) != 0, (flags & ELF::SHF_EXECINSTR) != 0};
}

std::string segmentTypeName(uint32_t type) {
  switch (type) {
  case ELF::PT_LOAD: return "LOAD";
  case ELF::PT_DYNAMIC: return "DYNAMIC";
  case ELF::PT_INTERP: return "INTERP";
  case ELF::PT_NOTE: return "NOTE";
  case ELF::PT_PHDR: return "PHDR";
  case ELF::PT_TLS: return "TLS";
  case ELF::PT_GNU_EH_FRAME: return "GNU_EH_FRAME";
  case ELF::PT_GNU_STACK: return "GNU_STACK";
  case ELF::PT_GNU_RELRO: return "GNU_RELRO";
  case ELF::PT_GNU_PROPERTY: return "GNU_PROPERTY";
  default: return hexOffset(type);
  }
}

struct SymbolTables {
  FunctionSource functionSource;
  DataSource dataSource;
};

// Function and data symbols of one symbol table. TLS symbols are recorded at their offset in the
// TLS template, which is what an access in code encodes.
void collectSymbols(const ELFObjectFileBase &elf, ELFObjectFileBase::elf_symbol_iterator_range symbols, uint64_t imageBase,
                    SymbolTables kind, FunctionTableBuilder &functions,
                    std::vector<DataObject> &dataObjects) {
  for (const ELFSymbolRef &symbol : symbols) {
    Expected<section_iterator> section = symbol.getSection();
    if (!section) {
      consumeError(section.takeError());
      continue;
    }
    if (*section == elf.section_end()) continue;  // undefined or absolute
    Expected<StringRef> name = symbol.getName();
    Expected<uint64_t> address = symbol.getAddress();
    if (!name || !address) {
      consumeError(name.takeError());
      consumeError(address.takeError());
      continue;
    }
    uint8_t type = symbol.getELFType();
    bool global = symbol.getBinding() != ELF::STB_LOCAL;
    if (type == ELF::STT_FUNC || type == ELF::STT_GNU_IFUNC) {
      if (!((*section)->isText()) || *address < imageBase) continue;
      functions.add(*address - imageBase, symbol.getSize(), name->str(), kind.functionSource, global);
    } else if (type == ELF::STT_OBJECT || type == ELF::STT_TLS) {
      bool tls = type == ELF::STT_TLS;
      if (!tls && *address < imageBase) continue;
      uint64_t rva = tls ? *address : *address - imageBase;
      dataObjects.push_back({name->str(), {rva, symbol.getSize()}, tls, kind.dataSource});
    }
  }
}

// .eh_frame FDEs: the only function boundaries a stripped distribution library still has.
void collectEhFrame(const ELFObjectFileBase &elf, uint64_t imageBase, FunctionTableBuilder &functions,
                    std::vector<std::string> &warnings) {
  bool hasEhFrame = false;
  for (const SectionRef &s : elf.sections()) {
    Expected<StringRef> name = s.getName();
    if (name && *name == ".eh_frame") hasEhFrame = true;
    if (!name) consumeError(name.takeError());
  }
  if (!hasEhFrame) return;
  auto onError = [&](Error e) { warnings.push_back(".eh_frame: " + errorText(std::move(e))); };
  std::unique_ptr<DWARFContext> context =
      DWARFContext::create(elf, DWARFContext::ProcessDebugRelocations::Ignore, nullptr, "", onError, onError);
  Expected<const DWARFDebugFrame *> frames = context->getEHFrame();
  if (!frames) {
    warnings.push_back(".eh_frame ignored: " + errorText(frames.takeError()));
    return;
  }
  for (const dwarf::FrameEntry &entry : (*frames)->entries()) {
    const auto *fde = dyn_cast<dwarf::FDE>(&entry);
    if (!fde || fde->getAddressRange() == 0 || fde->getInitialLocation() < imageBase) continue;
    functions.add(fde->getInitialLocation() - imageBase, fde->getAddressRange(), std::nullopt,
                  FunctionSource::EhFrame);
  }
}

std::optional<std::string> gnuDebugLink(const ELFObjectFileBase &elf) {
  for (const SectionRef &s : elf.sections()) {
    Expected<StringRef> name = s.getName();
    if (!name) {
      consumeError(name.takeError());
      continue;
    }
    if (*name != ".gnu_debuglink") continue;
    Expected<StringRef> contents = s.getContents();
    if (!contents) {
      consumeError(contents.takeError());
      return std::nullopt;
    }
    StringRef link = contents->take_until([](char c) { return c == 0; });
    if (link.empty() || link.size() == contents->size()) return std::nullopt;
    return link.str();
  }
  return std::nullopt;
}

// Where a separate debug file for `image` may be: build-id first (it identifies the exact build),
// then the .gnu_debuglink name next to the image, in its .debug folder and in the debug directory.
std::vector<std::string> debugFileCandidates(const ELFObjectFileBase &elf, const Image &image,
                                             const ImageReadOptions &options) {
  std::vector<std::string> candidates;
  const std::vector<uint8_t> &id = image.identity.buildId;
  if (!options.debugDir.empty() && id.size() > 1) {
    std::string hex = hexEncode(id);
    SmallString<256> path(options.debugDir);
    sys::path::append(path, ".build-id", hex.substr(0, 2), hex.substr(2) + ".debug");
    candidates.push_back(path.str().str());
  }
  if (std::optional<std::string> link = gnuDebugLink(elf)) {
    std::vector<StringRef> dirs = {sys::path::parent_path(image.path)};
    if (!options.debugDir.empty()) dirs.push_back(options.debugDir);
    for (StringRef dir : dirs) {
      SmallString<256> direct(dir), hidden(dir);
      sys::path::append(direct, *link);
      sys::path::append(hidden, ".debug", *link);
      candidates.push_back(direct.str().str());
      candidates.push_back(hidden.str().str());
    }
  }
  return candidates;
}

// Reads symbols and DWARF of a separate debug file. An explicitly named file that does not belong
// to the image is an error; a candidate found by lookup that does not belong is skipped.
Error readDebugFile(const std::string &path, bool explicitlyNamed, uint16_t machine, Image &image, FunctionTableBuilder &functions,
                    std::vector<DataObject> &dataObjects) {
  Expected<OwningBinary<Binary>> owning = createBinary(path);
  if (!owning) {
    if (!explicitlyNamed) {
      consumeError(owning.takeError());
      return Error::success();
    }
    return makeError("debug file " + path + ": " + errorText(owning.takeError()));
  }
  auto *debug = dyn_cast<ELFObjectFileBase>(owning->getBinary());
  std::string problem;
  if (!debug || !debug->is64Bit() || !debug->isLittleEndian())
    problem = "is not an ELF64 little-endian file";
  else if (debug->getEMachine() != machine)
    problem = "has another machine";
  else {
    BuildIDRef debugId = getBuildID(debug);
    if (!image.identity.buildId.empty() && !debugId.empty() &&
        !std::equal(debugId.begin(), debugId.end(), image.identity.buildId.begin(), image.identity.buildId.end()))
      problem = "does not belong to the image (build-id " + hexEncode(debugId) + ", image has " +
                hexEncode(image.identity.buildId) + ")";
  }
  if (!problem.empty()) {
    if (explicitlyNamed) return makeError("debug file " + path + " " + problem);
    image.warnings.push_back("skipped debug file " + path + ": " + problem);
    return Error::success();
  }
  collectSymbols(*debug, debug->symbols(), image.imageBase, {FunctionSource::DebugFile, DataSource::DebugFile},
                 functions, dataObjects);
  collectDwarfFunctions(*debug, image.imageBase, FunctionSource::Dwarf, functions, image.warnings);
  image.debugInfoPath = path;
  return Error::success();
}

void collectDynamicRelocations(const ELFObjectFileBase &elf, Image &image) {
  for (const SectionRef &section : elf.dynamic_relocation_sections()) {
    for (const RelocationRef &relocation : section.relocations()) {
      Relocation r;
      r.rva = relocation.getOffset() - image.imageBase;
      r.type = static_cast<uint32_t>(relocation.getType());
      SmallString<32> typeName;
      relocation.getTypeName(typeName);
      r.typeName = typeName.str().str();
      Expected<int64_t> addend = ELFRelocationRef(relocation).getAddend();
      if (addend)
        r.addend = *addend;
      else
        consumeError(addend.takeError());
      bool undefinedSymbol = false;
      symbol_iterator symbol = relocation.getSymbol();
      if (symbol != elf.symbol_end()) {
        Expected<StringRef> name = symbol->getName();
        if (name && !name->empty()) r.symbol = name->str();
        if (!name) consumeError(name.takeError());
        Expected<section_iterator> defined = symbol->getSection();
        undefinedSymbol = defined && *defined == elf.section_end();
        if (!defined) consumeError(defined.takeError());
      }
      // On every ELF machine the type names end in _JUMP_SLOT (lazily bound calls) and _GLOB_DAT
      // (GOT entries); other symbolic relocations fill pointers inside data (vtables).
      bool jumpSlot = StringRef(r.typeName).ends_with("_JUMP_SLOT");
      bool gotSlot = StringRef(r.typeName).ends_with("_GLOB_DAT");
      if (r.symbol && (jumpSlot || (gotSlot && undefinedSymbol)))
        image.imports.push_back({*r.symbol, "", r.rva, jumpSlot ? ImportKind::PltSlot : ImportKind::GotSlot});
      image.relocations.push_back(std::move(r));
    }
  }
}

class ElfReader final : public FormatReader {
public:
  bool handles(const ObjectFile &object) const override { return object.isELF(); }

  Error read(const ObjectFile &object, const ImageReadOptions &options, Image &image) const override {
    const auto &base = cast<ELFObjectFileBase>(object);
    if (!base.is64Bit())
      return makeError("ELF32 (32-bit) binaries are not supported; Hotforge reads ELF64 for x86-64 and AArch64");
    const auto *elf = dyn_cast<ELF64LEObjectFile>(&object);
    if (!elf) return makeError("big-endian ELF is not supported; Hotforge reads little-endian x86-64 and AArch64");
    image.format = Format::Elf;
    switch (base.getEMachine()) {
    case ELF::EM_X86_64: image.machine = Machine::X64; break;
    case ELF::EM_AARCH64: image.machine = Machine::Arm64; break;
    default:
      return makeError("ELF machine " + std::to_string(base.getEMachine()) +
                       " is not supported (x86-64 and AArch64 are)");
    }
    const ELFFile<ELF64LE> &file = elf->getELFFile();
    if (file.getHeader().e_type != ELF::ET_EXEC && file.getHeader().e_type != ELF::ET_DYN)
      return makeError("ELF type " + std::to_string(file.getHeader().e_type) +
                       " is not an executable or shared object (relocatable objects are not linked images)");

    Expected<ArrayRef<ELF64LE::Phdr>> phdrs = file.program_headers();
    if (!phdrs) return phdrs.takeError();
    std::optional<uint64_t> lowestLoad;
    for (const ELF64LE::Phdr &p : *phdrs)
      if (p.p_type == ELF::PT_LOAD && (!lowestLoad || p.p_vaddr < *lowestLoad)) lowestLoad = p.p_vaddr;
    if (!lowestLoad) return makeError("no PT_LOAD segment: nothing would be mapped at run time");
    image.imageBase = *lowestLoad;
    for (const ELF64LE::Phdr &p : *phdrs) {
      Permissions perms{(p.p_flags & ELF::PF_R) != 0, (p.p_flags & ELF::PF_W) != 0, (p.p_flags & ELF::PF_X) != 0};
      uint64_t rva = p.p_vaddr >= image.imageBase ? p.p_vaddr - image.imageBase : 0;
      image.segments.push_back({segmentTypeName(p.p_type), rva, p.p_memsz, p.p_offset, p.p_filesz, perms});
    }
    uint64_t entry = file.getHeader().e_entry;
    image.entryRva = entry >= image.imageBase ? entry - image.imageBase : 0;
    BuildIDRef id = getBuildID(elf);
    image.identity.buildId.assign(id.begin(), id.end());

    for (const ELFSectionRef section : elf->sections()) {
      Expected<StringRef> name = section.getName();
      if (!name) return name.takeError();
      Section s;
      s.name = name->str();
      s.loaded = (section.getFlags() & ELF::SHF_ALLOC) != 0;
      s.rva = s.loaded && section.getAddress() >= image.imageBase ? section.getAddress() - image.imageBase : 0;
      s.size = section.getSize();
      s.fileOffset = section.getOffset();
      s.fileSize = section.getType() == ELF::SHT_NOBITS ? 0 : section.getSize();
      s.permissions = sectionPermissions(section.getFlags());
      if (s.fileSize && (s.fileOffset > file.getBufSize() || file.getBufSize() - s.fileOffset < s.fileSize))
        return makeError("section " + s.name + " at file offset " + hexOffset(s.fileOffset) + " (size " +
                         hexOffset(s.fileSize) + ") extends past the end of the file (" +
                         hexOffset(file.getBufSize()) + " bytes)");
      if (s.name.empty() && !s.loaded) continue;  // the null section
      image.sections.push_back(std::move(s));
    }

    FunctionTableBuilder functions;
    collectSymbols(*elf, elf->symbols(), image.imageBase, {FunctionSource::Symtab, DataSource::Symtab},
                   functions, image.dataObjects);
    collectSymbols(*elf, elf->getDynamicSymbolIterators(), image.imageBase,
                   {FunctionSource::Dynsym, DataSource::Dynsym}, functions, image.dataObjects);
    collectEhFrame(*elf, image.imageBase, functions, image.warnings);
    collectDwarfFunctions(*elf, image.imageBase, FunctionSource::Dwarf, functions, image.warnings);

    if (!options.debugFile.empty()) {
      if (Error e = readDebugFile(options.debugFile, true, base.getEMachine(), image, functions, image.dataObjects)) return e;
    } else {
      for (const std::string &candidate : debugFileCandidates(*elf, image, options)) {
        if (!sys::fs::is_regular_file(candidate)) continue;
        if (Error e = readDebugFile(candidate, false, base.getEMachine(), image, functions, image.dataObjects)) return e;
        if (!image.debugInfoPath.empty()) break;
      }
    }

    image.functions = functions.finish(image.sections);
    sortAndDedupDataObjects(image.dataObjects, nullptr);  // ELF symbols carry their sizes
    collectDynamicRelocations(*elf, image);
    return Error::success();
  }
};

}  // namespace

const FormatReader &elfReader() {
  static const ElfReader reader;
  return reader;
}

}  // namespace hotforge::detail
