// The PE reader against llvm-readobj-19, llvm-pdbutil-19 and llvm-dwarfdump-19 on every PE sample
// (clang/lld-link x64 and Arm64 DLLs with PDBs, mingw x64 executables with DWARF), with and without
// the PDB.
#include "hotforge/image.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>

namespace hotforge::test {
namespace {

struct RuntimeFunction {
  uint64_t start = 0, length = 0;
};

// RUNTIME_FUNCTION entries as llvm-readobj-19 --unwind prints them, as RVAs.
std::vector<RuntimeFunction> readobjUnwind(const std::string &path, uint64_t imageBase) {
  CommandResult r = run({"llvm-readobj-19", "--unwind", path});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::vector<RuntimeFunction> out;
  std::regex x64(R"(StartAddress: [^\n]*\(0x([0-9A-Fa-f]+)\)\s*\n\s*EndAddress: [^\n]*\(0x([0-9A-Fa-f]+)\))");
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), x64), end; it != end; ++it) {
    uint64_t start = std::stoull((*it)[1], nullptr, 16), stop = std::stoull((*it)[2], nullptr, 16);
    out.push_back({start - imageBase, stop - start});
  }
  std::regex arm64(R"(Function: [^\n]*?(?:0x)([0-9A-Fa-f]+)\)?\s*\n[\s\S]*?FunctionLength: (\d+))");
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), arm64), end; it != end; ++it)
    out.push_back({std::stoull((*it)[1], nullptr, 16) - imageBase, std::stoull((*it)[2])});
  return out;
}

struct PdbProc {
  std::string name;
  uint32_t segment = 0, offset = 0, size = 0;
};

std::vector<PdbProc> pdbProcs(const std::string &pdb) {
  CommandResult r = run({"llvm-pdbutil-19", "dump", "--symbols", pdb});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::vector<PdbProc> out;
  std::regex proc(R"(S_[GL]PROC32(?:_ID)? \[size = \d+\] `([^`]+)`\s*\n\s*parent = \d+, end = \d+, addr = ([0-9]+):([0-9]+), code size = (\d+))");
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), proc), end; it != end; ++it)
    out.push_back({(*it)[1], uint32_t(std::stoul((*it)[2])), uint32_t(std::stoul((*it)[3])), uint32_t(std::stoul((*it)[4]))});
  return out;
}

std::string field(const std::string &text, const std::string &pattern) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(pattern)) ? m[1].str() : std::string();
}

const Function *functionStartingAt(const Image &image, uint64_t rva) {
  const Function *f = image.functionAt(rva);
  return f && f->range.rva == rva ? f : nullptr;
}

TEST(PeReader, PdataMatchesReadobjUnwind) {
  for (const Sample &sample : samples("")) {
    if (sample.target.rfind("elf-", 0) == 0) continue;
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    ASSERT_EQ(image.format, Format::Pe);
    std::vector<RuntimeFunction> entries = readobjUnwind(sample.path, image.imageBase);
    if (sample.program == "core") ASSERT_FALSE(entries.empty());  // leaf functions have no entry
    size_t parts = 0, pdataFunctions = 0;
    for (const Function &f : image.functions) {
      parts += f.parts.size();
      pdataFunctions += f.seenBy(FunctionSource::Pdata);
    }
    EXPECT_EQ(pdataFunctions + parts, entries.size());
    for (const RuntimeFunction &entry : entries) {
      if (const Function *f = functionStartingAt(image, entry.start)) {
        EXPECT_TRUE(f->seenBy(FunctionSource::Pdata));
        if (f->source == FunctionSource::Pdata) EXPECT_EQ(f->range.size, entry.length);
        continue;
      }
      bool isPart = std::any_of(image.functions.begin(), image.functions.end(), [&](const Function &f) {
        return std::any_of(f.parts.begin(), f.parts.end(), [&](const AddressRange &p) { return p.rva == entry.start; });
      });
      EXPECT_TRUE(isPart) << "RUNTIME_FUNCTION at rva " << entry.start << " is neither a function nor a part";
    }
  }
}

TEST(PeReader, PdbFunctionsMatchPdbutil) {
  size_t withPdb = 0;
  for (const Sample &sample : samples("pe-")) {
    if (sample.pdbPath.empty()) continue;
    ++withPdb;
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    EXPECT_EQ(image.debugInfoPath.empty(), false);
    std::vector<PdbProc> procs = pdbProcs(sample.pdbPath);
    ASSERT_GT(procs.size(), sample.program == "core" ? 10u : 0u);
    for (const PdbProc &proc : procs) {
      ASSERT_GE(proc.segment, 1u);
      ASSERT_LE(proc.segment, image.sections.size());
      uint64_t rva = image.sections[proc.segment - 1].rva + proc.offset;
      const Function *f = functionStartingAt(image, rva);
      ASSERT_NE(f, nullptr) << proc.name;
      EXPECT_TRUE(f->seenBy(FunctionSource::Pdb)) << proc.name;
      EXPECT_EQ(f->name.value_or(""), proc.name);
      EXPECT_EQ(f->range.size, proc.size) << proc.name;
    }
  }
  EXPECT_GT(withPdb, 20u) << "samples.json should list the PDBs of the PE samples";
}

TEST(PeReader, IdentityLoadConfigImportsAndRelocationsMatchReadobj) {
  for (const Sample &sample : samples("pe-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    CommandResult headers = run({"llvm-readobj-19", "--file-headers", "--coff-debug-directory", "--coff-load-config",
                                 "--coff-imports", "--coff-basereloc", sample.path});
    ASSERT_EQ(headers.exitCode, 0) << headers.err;
    EXPECT_EQ(image.identity.timeDateStamp, std::stoul(field(headers.out, R"(TimeDateStamp: .*\(0x([0-9A-F]+)\))"), nullptr, 16));
    EXPECT_EQ(image.identity.checkSum, std::stoul(field(headers.out, R"(CheckSum: 0x([0-9A-F]+))"), nullptr, 16));
    ASSERT_TRUE(image.identity.codeView.has_value());
    EXPECT_EQ("{" + guidString(image.identity.codeView->guid) + "}", field(headers.out, R"(PDBGUID: (\{[0-9A-F-]+\}))"));
    EXPECT_EQ(image.identity.codeView->age, std::stoul(field(headers.out, R"(PDBAge: (\d+))")));
    ASSERT_TRUE(image.loadConfig.has_value());
    EXPECT_EQ(image.loadConfig->hotPatchTableOffset,
              std::stoul(field(headers.out, R"(HotPatchTableOffset: 0x([0-9A-F]+))"), nullptr, 16));

    size_t relocations = 0;
    std::regex entry(R"(Type: (\w+)\s*\n\s*Address: 0x([0-9A-F]+))");
    for (std::sregex_iterator it(headers.out.begin(), headers.out.end(), entry), end; it != end; ++it) {
      if ((*it)[1] == "ABSOLUTE") continue;
      uint64_t rva = std::stoull((*it)[2], nullptr, 16);
      EXPECT_TRUE(std::any_of(image.relocations.begin(), image.relocations.end(),
                              [&](const Relocation &r) { return r.rva == rva; }));
      ++relocations;
    }
    EXPECT_EQ(relocations, image.relocations.size());

    if (sample.program == "core") EXPECT_FALSE(image.imports.empty()) << "scenario 10 calls an import through the IAT";
  }
}

// Every symbol of every import directory, in IAT order (8 bytes a slot), as llvm-readobj-19 lists
// them; mingw executables import dozens of symbols per library.
TEST(PeReader, ImportsMatchReadobj) {
  size_t images = 0, multiSymbolLibraries = 0;
  for (const Sample &sample : samples("")) {
    if (sample.target.rfind("elf-", 0) == 0) continue;
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    CommandResult r = run({"llvm-readobj-19", "--coff-imports", sample.path});
    ASSERT_EQ(r.exitCode, 0) << r.err;
    std::regex block(R"(Import \{\s*\n\s*Name: (\S+)\s*\n\s*ImportLookupTableRVA: \S+\s*\n\s*ImportAddressTableRVA: 0x([0-9A-F]+)\s*\n((?:\s*Symbol: [^\n]*\n)*))");
    std::regex symbol(R"(Symbol: (\S*) \((\d+)\))");
    std::vector<Import> expected;
    for (std::sregex_iterator it(r.out.begin(), r.out.end(), block), end; it != end; ++it) {
      uint64_t slot = std::stoull((*it)[2], nullptr, 16);
      std::string symbols = (*it)[3];
      size_t count = 0;
      for (std::sregex_iterator s(symbols.begin(), symbols.end(), symbol), last; s != last; ++s, slot += 8, ++count)
        expected.push_back({(*s)[1].str().empty() ? "#" + (*s)[2].str() : (*s)[1].str(), (*it)[1], slot, ImportKind::IatSlot});
      multiSymbolLibraries += count > 1;
    }
    ASSERT_EQ(image.imports.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(image.imports[i].name, expected[i].name) << i;
      EXPECT_EQ(image.imports[i].library, expected[i].library) << i;
      EXPECT_EQ(image.imports[i].slotRva, expected[i].slotRva) << expected[i].name;
      EXPECT_EQ(image.imports[i].kind, ImportKind::IatSlot) << expected[i].name;
    }
    ++images;
  }
  EXPECT_GT(images, 40u);
  EXPECT_GT(multiSymbolLibraries, 10u) << "the mingw samples import many symbols from one library";
}

TEST(PeReader, WithoutPdbFunctionsComeFromPdataAndExports) {
  size_t stripped = 0;
  for (const Sample &sample : samples("pe-")) {
    if (sample.strippedPath.empty()) continue;
    ++stripped;
    SCOPED_TRACE(sample.strippedPath);
    Image full = loadImage(sample.path);
    Image stripped = loadImage(sample.strippedPath);
    EXPECT_TRUE(stripped.debugInfoPath.empty());
    std::map<uint64_t, const Function *> strippedByRva;
    for (const Function &f : stripped.functions) strippedByRva[f.range.rva] = &f;
    for (const Function &f : full.functions) {
      if (!f.seenBy(FunctionSource::Pdata) && !f.seenBy(FunctionSource::Exports)) continue;
      auto it = strippedByRva.find(f.range.rva);
      ASSERT_NE(it, strippedByRva.end()) << f.name.value_or("?");
      if (f.seenBy(FunctionSource::Pdata)) EXPECT_EQ(it->second->range.size, f.range.size);
      if (f.seenBy(FunctionSource::Exports)) EXPECT_EQ(it->second->name, f.name);
      else EXPECT_FALSE(it->second->name.has_value());
    }
  }
  EXPECT_GT(stripped, 20u) << "samples.json should list copies of the PE samples without their PDB";
}

TEST(PeReader, PdbOfAnotherBuildIsRefused) {
  const Sample *base = nullptr, *other = nullptr;
  std::vector<Sample> all = samples("pe-");
  for (const Sample &s : all) {
    if (s.pdbPath.empty() || s.program != "core") continue;
    if (s.variant == "base" && !base) base = &s;
    if (s.variant != "base" && !other && base && s.target == base->target) other = &s;
  }
  ASSERT_TRUE(base && other);
  llvm::Expected<Image> image = readImage(base->path, {other->pdbPath, "", ""});
  ASSERT_FALSE(image);
  std::string message = llvm::toString(image.takeError());
  EXPECT_NE(message.find("does not belong"), std::string::npos) << message;
  EXPECT_NE(message.find(other->pdbPath), std::string::npos) << message;
}

TEST(PeReader, MingwImagesNameFunctionsFromSymbolsAndDwarf) {
  for (const Sample &sample : samples("mingw-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    EXPECT_EQ(image.machine, Machine::X64);
    size_t named = 0, fromSymbols = 0;
    for (const Function &f : image.functions) {
      named += f.name.has_value();
      fromSymbols += f.seenBy(FunctionSource::Symtab);
    }
    EXPECT_GT(named, 20u);
    EXPECT_GT(fromSymbols, 20u);
    EXPECT_TRUE(std::any_of(image.functions.begin(), image.functions.end(),
                            [](const Function &f) { return f.name == "main"; }));
  }
}

// Subprograms with code as llvm-dwarfdump-19 --debug-info prints them, by start VA: DW_AT_low_pc or
// the lowest DW_AT_ranges entry, and the end that goes with it; the names it shows for the DIE (its
// own, or the one of the DIE its DW_AT_specification or DW_AT_abstract_origin refers to).
struct DwarfdumpSubprogram {
  uint64_t end = 0;
  std::set<std::string> names;
};
std::map<uint64_t, DwarfdumpSubprogram> dwarfdumpSubprograms(const std::string &path) {
  CommandResult r = run({"llvm-dwarfdump-19", "--debug-info", path});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::map<uint64_t, DwarfdumpSubprogram> out;
  std::regex die(R"(\n0x[0-9a-f]+:\s+(DW_TAG_\w+|NULL))");
  std::regex lowPc(R"(DW_AT_low_pc\s+\(0x([0-9a-f]+)\)\s*\n\s*DW_AT_high_pc\s+\(0x([0-9a-f]+)\))");
  std::regex range(R"(\[0x([0-9a-f]+), 0x([0-9a-f]+)\))");
  std::regex name(R"(DW_AT_(?:linkage_name|name|specification|abstract_origin)\s+\((?:0x[0-9a-f]+ )?"([^"]*)\"\))");
  std::vector<std::pair<size_t, bool>> starts;  // DIE text offset, whether it is a subprogram
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), die), end; it != end; ++it)
    starts.push_back({size_t(it->position()), (*it)[1] == "DW_TAG_subprogram"});
  for (size_t i = 0; i < starts.size(); ++i) {
    if (!starts[i].second) continue;
    size_t stop = i + 1 < starts.size() ? starts[i + 1].first : r.out.size();
    std::string text = r.out.substr(starts[i].first, stop - starts[i].first);
    std::smatch m;
    uint64_t begin = 0, end = 0;
    if (std::regex_search(text, m, lowPc)) {
      begin = std::stoull(m[1], nullptr, 16), end = std::stoull(m[2], nullptr, 16);
    } else if (size_t ranges = text.find("DW_AT_ranges"); ranges != std::string::npos) {
      std::string list = text.substr(ranges, text.find("))", ranges) - ranges);
      for (std::sregex_iterator it(list.begin(), list.end(), range), last; it != last; ++it) {
        uint64_t b = std::stoull((*it)[1], nullptr, 16);
        if (!begin || b < begin) begin = b, end = std::stoull((*it)[2], nullptr, 16);
      }
    }
    if (!begin || end <= begin) continue;
    out[begin].end = end;
    for (std::sregex_iterator it(text.begin(), text.end(), name), last; it != last; ++it)
      out[begin].names.insert((*it)[1]);
  }
  return out;
}

TEST(PeReader, MingwDwarfFunctionsMatchDwarfdump) {
  for (const Sample &sample : samples("mingw-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    for (const std::string &warning : image.warnings) EXPECT_EQ(warning.find("DWARF"), std::string::npos) << warning;
    std::map<uint64_t, DwarfdumpSubprogram> expected = dwarfdumpSubprograms(sample.path);
    std::set<uint64_t> expectedStarts, ourStarts;
    for (const auto &[start, subprogram] : expected) expectedStarts.insert(start - image.imageBase);
    for (const Function &f : image.functions) {
      if (!f.seenBy(FunctionSource::Dwarf)) continue;
      ourStarts.insert(f.range.rva);
      auto it = expected.find(f.range.rva + image.imageBase);
      if (it == expected.end()) continue;
      if (f.source == FunctionSource::Dwarf) EXPECT_EQ(f.range.size, it->second.end - it->first) << f.range.rva;
      if (f.name && f.nameSource == FunctionSource::Dwarf) EXPECT_TRUE(it->second.names.count(*f.name)) << *f.name;
    }
    EXPECT_GT(ourStarts.size(), 20u);
    EXPECT_EQ(ourStarts, expectedStarts);
  }
}

}  // namespace
}  // namespace hotforge::test
