// ELF64 little-endian reader (x86-64 and AArch64) over LLVM libObject.
#include "hotforge/core/machine_target.h"
#include "format_reader.h"

#include <llvm/BinaryFormat/ELF.h>
#include <llvm/DebugInfo/DWARF/DWARFContext.h>
#include <llvm/Object/Binary.h>
#include <llvm/Object/BuildID.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/Path.h>

#include <functional>
#include <map>

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

// .eh_frame FDEs: the only function boundaries a stripped distribution library still has. Only
// the FDE headers are read (LLVM's DWARFDebugFrame would also expand every CFI program, which
// costs hundreds of megabytes on large binaries).
class EhFrameWalker {
public:
  EhFrameWalker(ArrayRef<uint8_t> bytes, uint64_t address) : bytes_(bytes), address_(address) {}

  // Calls found(start, size) for every FDE; returns a description of the first malformed entry.
  std::optional<std::string> walk(const std::function<void(uint64_t, uint64_t)> &found) {
    std::map<uint64_t, uint8_t> cieEncodings;
    uint64_t offset = 0;
    while (offset + 4 <= bytes_.size()) {
      uint64_t length = read32(offset);
      if (length == 0) break;
      if (length == 0xffffffff) return "64-bit entry at offset " + hexOffset(offset) + " is not supported";
      uint64_t body = offset + 4, end = body + length;
      if (end > bytes_.size() || length < 4) return "entry at offset " + hexOffset(offset) + " runs past the section";
      uint32_t id = read32(body);
      position_ = body + 4;
      if (id == 0) {
        uint8_t encoding = 0;  // DW_EH_PE_absptr unless the augmentation says otherwise
        ++position_;           // version
        std::string augmentation;
        while (position_ < end && bytes_[position_]) augmentation.push_back(char(bytes_[position_++]));
        ++position_;
        uleb(), uleb(), uleb();  // alignment factors and return register
        if (!augmentation.empty() && augmentation[0] == 'z') {
          uleb();
          for (char c : augmentation.substr(1)) {
            if (c == 'R') encoding = byte();
            else if (c == 'L') byte();
            else if (c == 'P') pointer(byte());
          }
        }
        if (position_ > end) return "CIE at offset " + hexOffset(offset) + " is malformed";
        cieEncodings[offset] = encoding;
      } else {
        auto cie = cieEncodings.find(body - id);
        if (cie == cieEncodings.end()) return "FDE at offset " + hexOffset(offset) + " names no CIE";
        uint64_t start = pointer(cie->second);
        uint64_t size = pointer(cie->second & 0x0f);
        if (position_ > end) return "FDE at offset " + hexOffset(offset) + " is malformed";
        if (size) found(start, size);
      }
      offset = end;
    }
    return std::nullopt;
  }

private:
  uint32_t read32(uint64_t at) const { return support::endian::read32le(&bytes_[at]); }
  uint8_t byte() { return position_ < bytes_.size() ? bytes_[position_++] : (position_ = bytes_.size() + 1, 0); }
  uint64_t uleb() {
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      value |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    return value;
  }
  // A DW_EH_PE-encoded pointer: 0x0f selects the format, 0x70 the base (0x10: pc-relative).
  uint64_t pointer(uint8_t encoding) {
    uint64_t field = address_ + position_, value = 0;
    auto fixed = [&](unsigned n, bool sign) {
      if (position_ + n > bytes_.size()) return position_ = bytes_.size() + 1, uint64_t(0);
      uint64_t v = 0;
      for (unsigned i = 0; i < n; ++i) v |= uint64_t(bytes_[position_ + i]) << (8 * i);
      position_ += n;
      if (sign && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);
      return v;
    };
    switch (encoding & 0x0f) {
    case 0x00: case 0x04: case 0x0c: value = fixed(8, false); break;
    case 0x01: value = uleb(); break;
    case 0x02: value = fixed(2, false); break;
    case 0x03: value = fixed(4, false); break;
    case 0x0a: value = fixed(2, true); break;
    case 0x0b: value = fixed(4, true); break;
    default: position_ = bytes_.size() + 1; return 0;
    }
    return (encoding & 0x70) == 0x10 ? value + field : value;
  }

  ArrayRef<uint8_t> bytes_;
  uint64_t address_;
  uint64_t position_ = 0;
};

void collectEhFrame(const ELFObjectFileBase &elf, uint64_t imageBase, FunctionTableBuilder &functions,
                    std::vector<std::string> &warnings) {
  for (const SectionRef &s : elf.sections()) {
    Expected<StringRef> name = s.getName();
    if (!name) {
      consumeError(name.takeError());
      continue;
    }
    if (*name != ".eh_frame" || ELFSectionRef(s).getType() == ELF::SHT_NOBITS) continue;
    Expected<StringRef> contents = s.getContents();
    if (!contents) {
      warnings.push_back(".eh_frame ignored: " + errorText(contents.takeError()));
      return;
    }
    EhFrameWalker walker(arrayRefFromStringRef(*contents), s.getAddress());
    std::optional<std::string> problem = walker.walk([&](uint64_t start, uint64_t size) {
      if (start >= imageBase) functions.add(start - imageBase, size, std::nullopt, FunctionSource::EhFrame);
    });
    if (problem) warnings.push_back(".eh_frame: " + *problem + "; the entries after it were not read");
    return;
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
  Expected<OwningBinary<Binary>> owning = [&]() -> Expected<OwningBinary<Binary>> {
    Expected<std::unique_ptr<MemoryBuffer>> buffer = readFileBuffer(path);
    if (!buffer) return buffer.takeError();
    Expected<std::unique_ptr<Binary>> binary = createBinary((*buffer)->getMemBufferRef());
    if (!binary) return binary.takeError();
    return OwningBinary<Binary>(std::move(*binary), std::move(*buffer));
  }();
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

// Dynamic relocations, read through ELFFile, whose accessors report malformed tables as errors
// (ELFObjectFile's relocation iterator aborts the process on them, found by fuzzing).
Error collectDynamicRelocations(const ELF64LEObjectFile &elf, Image &image) {
  const ELFFile<ELF64LE> &file = elf.getELFFile();
  Expected<ArrayRef<ELF64LE::Shdr>> sections = file.sections();
  if (!sections) return sections.takeError();
  auto dynamicRelas = [](const ELF64LE::Shdr &section) {
    return section.sh_type == ELF::SHT_RELA && (section.sh_flags & ELF::SHF_ALLOC);
  };
  // Exactly as many as there are: a large library has hundreds of thousands.
  size_t count = 0;
  for (const ELF64LE::Shdr &section : *sections) {
    if (!dynamicRelas(section)) continue;
    if (Expected<ELF64LE::RelaRange> relas = file.relas(section))
      count += relas->size();
    else
      consumeError(relas.takeError());
  }
  image.relocations.reserve(count);
  // What relocations need of a symbol, read once per symbol of the table they link to: a large
  // library has hundreds of thousands of relocations and tens of thousands of symbols.
  struct SymbolFacts {
    bool read = false, undefined = false;
    const std::string *name = nullptr;  // null: no name
    std::string_view version;
  };
  const ELF64LE::Shdr *symbolTable = nullptr;
  StringRef strings;
  std::vector<VersionEntry> versions;  // of the .dynsym entries from index 1 on (none without .gnu.version)
  std::vector<SymbolFacts> symbols;    // by symbol index
  for (const ELF64LE::Shdr &section : *sections) {
    if (!dynamicRelas(section)) continue;
    Expected<ELF64LE::RelaRange> relas = file.relas(section);
    if (!relas) return relas.takeError();
    const ELF64LE::Shdr *table = nullptr;
    if (section.sh_link) {
      Expected<const ELF64LE::Shdr *> linked = file.getSection(section.sh_link);
      if (!linked) return linked.takeError();
      table = *linked;
    }
    if (table != symbolTable) {
      symbolTable = table;
      strings = {};
      versions.clear();
      symbols.clear();
      if (table) {
        Expected<StringRef> names = file.getStringTableForSymtab(*table);
        if (!names) return names.takeError();
        strings = *names;
        Expected<ELF64LE::SymRange> all = file.symbols(table);  // within the file
        if (!all) return all.takeError();
        symbols.resize(all->size());
      }
      if (table && table->sh_type == ELF::SHT_DYNSYM) {
        Expected<std::vector<VersionEntry>> read = elf.readDynsymVersions();
        if (!read) return read.takeError();
        versions = std::move(*read);
      }
    }
    for (const ELF64LE::Rela &rela : *relas) {
      Relocation r;
      r.rva = rela.r_offset >= image.imageBase ? rela.r_offset - image.imageBase : 0;
      r.type = rela.getType(false);
      r.addend = rela.r_addend;
      r.typeName = file.getRelocationTypeName(r.type);
      bool undefinedSymbol = false;
      if (uint32_t index = rela.getSymbol(false); symbolTable && index) {
        SymbolFacts outside;  // past the table: getRelocationSymbol says what is wrong
        SymbolFacts &facts = index < symbols.size() ? symbols[index] : outside;
        if (!facts.read) {
          Expected<const ELF64LE::Sym *> symbol = file.getRelocationSymbol(rela, symbolTable);
          if (!symbol) return symbol.takeError();
          if (*symbol) {
            Expected<StringRef> name = (*symbol)->getName(strings);
            if (!name) return name.takeError();
            if (!name->empty()) facts.name = image.keepRelocationName(*name);
            facts.undefined = (*symbol)->st_shndx == ELF::SHN_UNDEF;
          }
          if (index <= versions.size() && !versions[index - 1].Name.empty())
            facts.version = *image.keepRelocationName(versions[index - 1].Name);
          facts.read = true;
        }
        r.symbol = facts.name;
        undefinedSymbol = facts.undefined;
        r.version = facts.version;
      }
      // On every ELF machine the type names end in _JUMP_SLOT (lazily bound calls) and _GLOB_DAT
      // (GOT entries); other symbolic relocations fill pointers inside data (vtables).
      bool jumpSlot = StringRef(r.typeName).ends_with("_JUMP_SLOT");
      bool gotSlot = StringRef(r.typeName).ends_with("_GLOB_DAT");
      if (r.symbol && (jumpSlot || (gotSlot && undefinedSymbol)))
        image.imports.push_back(
            {*r.symbol, "", r.rva, jumpSlot ? ImportKind::PltSlot : ImportKind::GotSlot, std::string(r.version)});
      image.relocations.push_back(std::move(r));
    }
  }
  return Error::success();
}

class ElfReader final : public FormatReader {
public:
  bool handles(const ObjectFile &object) const override { return object.isELF(); }

  bool holdsFunctions(const Section &section) const override {
    return !StringRef(section.name).starts_with(".plt") && section.name != ".iplt";
  }

  // R_*_RELATIVE and R_*_IRELATIVE: the addend is the address the slot receives.
  std::vector<uint64_t> pointerTargets(const Image &image) const override {
    std::vector<uint64_t> targets;
    for (const Relocation &r : image.relocations)
      if (StringRef(r.typeName).ends_with("_RELATIVE") && uint64_t(r.addend) >= image.imageBase)
        targets.push_back(uint64_t(r.addend) - image.imageBase);
    return targets;
  }

  Error read(const ObjectFile &object, const ImageReadOptions &options, Image &image) const override {
    const auto &base = cast<ELFObjectFileBase>(object);
    if (!base.is64Bit())
      return makeError("ELF32 (32-bit) binaries are not supported; Hotforge reads ELF64 for x86-64 and AArch64");
    const auto *elf = dyn_cast<ELF64LEObjectFile>(&object);
    if (!elf) return makeError("big-endian ELF is not supported; Hotforge reads little-endian x86-64 and AArch64");
    image.format = Format::Elf;
    std::optional<Machine> machine =
        findMachine([&](const MachineTarget &t) { return t.elfMachine() == base.getEMachine(); });
    if (!machine)
      return makeError("ELF machine " + std::to_string(base.getEMachine()) +
                       " is not supported (x86-64 and AArch64 are)");
    image.machine = *machine;
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
      // A .tbss takes no room in the address space: it only sizes each thread's TLS block.
      s.loaded = (section.getFlags() & ELF::SHF_ALLOC) != 0 &&
                 !((section.getFlags() & ELF::SHF_TLS) && section.getType() == ELF::SHT_NOBITS);
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
    // DWARF adds nothing a symbol table has not given, only the cost of walking every DIE: read it
    // only when the image has no .symtab.
    bool hasSymtab = false;
    for (const SectionRef &s : elf->sections()) hasSymtab |= ELFSectionRef(s).getType() == ELF::SHT_SYMTAB;
    if (!hasSymtab) collectDwarfFunctions(*elf, image.imageBase, FunctionSource::Dwarf, functions, image.warnings);

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
    return collectDynamicRelocations(*elf, image);
  }
};

}  // namespace

const FormatReader &elfReader() {
  static const ElfReader reader;
  return reader;
}

}  // namespace hotforge::detail
