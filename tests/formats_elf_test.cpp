// The ELF reader against what llvm-readelf-19 and llvm-dwarfdump-19 report for the same files:
// every sample of the ELF targets, unstripped, stripped, and stripped with its debug file.
#include "hotforge/image.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>

namespace hotforge::test {
namespace {

std::map<uint64_t, const Function *> byRva(const Image &image) {
  std::map<uint64_t, const Function *> out;
  for (const Function &f : image.functions) out[f.range.rva] = &f;
  return out;
}

bool isFunctionType(const std::string &type) { return type == "FUNC" || type == "IFUNC"; }

// Starts that the LLVM tools see: function symbols of both tables and every FDE.
std::set<uint64_t> toolFunctionStarts(const std::string &path, uint64_t imageBase, bool withSymtab) {
  std::set<uint64_t> starts;
  for (const char *table : {".symtab", ".dynsym"}) {
    if (!withSymtab && std::string(table) == ".symtab") continue;
    for (const ToolSymbol &s : readelfSymbols(path, table))
      if (s.defined && isFunctionType(s.type) && s.value) starts.insert(s.value - imageBase);
  }
  for (auto [begin, end] : ehFrameRanges(path))
    if (end > begin) starts.insert(begin - imageBase);
  return starts;
}

// Starts some table gave: not those found only in the code (formats.md, "Functions from code").
std::set<uint64_t> ourStarts(const Image &image) {
  std::set<uint64_t> starts;
  for (const Function &f : image.functions)
    if (f.sourceMask != 1u << unsigned(FunctionSource::Code)) starts.insert(f.range.rva);
  return starts;
}

TEST(ElfReader, FunctionsMatchReadelfAndEhFrame) {
  for (const Sample &sample : samples("elf-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    ASSERT_EQ(image.format, Format::Elf);
    EXPECT_EQ(image.machine, sample.target.find("a64") != std::string::npos ? Machine::Arm64 : Machine::X64);
    EXPECT_EQ(ourStarts(image), toolFunctionStarts(sample.path, image.imageBase, true));

    auto functions = byRva(image);
    size_t checked = 0;
    for (const ToolSymbol &s : readelfSymbols(sample.path, ".symtab")) {
      if (!s.defined || !isFunctionType(s.type) || !s.size) continue;
      auto it = functions.find(s.value - image.imageBase);
      ASSERT_NE(it, functions.end()) << s.name;
      EXPECT_EQ(it->second->range.size, s.size) << s.name;
      EXPECT_TRUE(it->second->seenBy(FunctionSource::Symtab)) << s.name;
      ASSERT_TRUE(it->second->name.has_value()) << s.name;
      ++checked;
    }
    EXPECT_GT(checked, sample.program == "core" ? 14u : 1u);
    // Names: every function symbol's address carries one of the names readelf shows there.
    std::multimap<uint64_t, std::string> names;
    for (const ToolSymbol &s : readelfSymbols(sample.path, ".symtab"))
      if (s.defined && isFunctionType(s.type)) names.insert({s.value - image.imageBase, s.name});
    for (const Function &f : image.functions) {
      auto [first, last] = names.equal_range(f.range.rva);
      if (first == last) continue;
      bool found = false;
      for (auto it = first; it != last; ++it) found |= f.name && *f.name == it->second;
      EXPECT_TRUE(found) << "function at " << f.range.rva << " named " << f.name.value_or("?");
    }
  }
}

TEST(ElfReader, StrippedBinariesKeepEveryFdeFunction) {
  size_t stripped = 0;
  for (const Sample &sample : samples("elf-")) {
    if (sample.strippedPath.empty()) continue;
    ++stripped;
    SCOPED_TRACE(sample.strippedPath);
    Image image = loadImage(sample.strippedPath);
    EXPECT_EQ(ourStarts(image), toolFunctionStarts(sample.strippedPath, image.imageBase, false));
    // The code .eh_frame leaves out (_init, _fini, crtstuff's functions) is found from the code,
    // and never inside a function the tables know.
    EXPECT_TRUE(image.coverage.discoveryRan);
    std::set<uint64_t> fromTables = ourStarts(image);
    for (const Function &f : image.functions)
      if (!fromTables.count(f.range.rva))
        for (const Function &known : image.functions)
          EXPECT_FALSE(known.source != FunctionSource::Code && known.range.contains(f.range.rva) &&
                       known.range.rva != f.range.rva);
    auto functions = byRva(image);
    for (auto [begin, end] : ehFrameRanges(sample.strippedPath)) {
      auto it = functions.find(begin - image.imageBase);
      ASSERT_NE(it, functions.end());
      if (!it->second->seenBy(FunctionSource::Dynsym)) {
        EXPECT_EQ(it->second->range.size, end - begin);
        EXPECT_EQ(it->second->source, FunctionSource::EhFrame);
      }
    }
    // Stripped code has no names except exported ones.
    for (const Function &f : image.functions)
      if (!f.seenBy(FunctionSource::Dynsym)) EXPECT_FALSE(f.name.has_value());
  }
  EXPECT_GT(stripped, 20u) << "samples.json should list stripped copies of the ELF samples";
}

TEST(ElfReader, DebugFileRestoresNamesOfStrippedBinary) {
  size_t restored = 0;
  for (const Sample &sample : samples("elf-")) {
    if (sample.strippedPath.empty() || sample.debugPath.empty()) continue;
    ++restored;
    SCOPED_TRACE(sample.strippedPath);
    Image full = loadImage(sample.path);
    std::string debugDir = sample.debugPath.substr(0, sample.debugPath.rfind('/'));
    for (const ImageReadOptions &options :
         {ImageReadOptions{"", sample.debugPath, ""}, ImageReadOptions{"", "", debugDir}}) {
      Image stripped = loadImage(sample.strippedPath, options);
      EXPECT_FALSE(stripped.debugInfoPath.empty());
      auto strippedFunctions = byRva(stripped);
      for (const Function &f : full.functions) {
        if (!f.seenBy(FunctionSource::Symtab)) continue;
        auto it = strippedFunctions.find(f.range.rva);
        ASSERT_NE(it, strippedFunctions.end());
        EXPECT_EQ(it->second->name, f.name);
        EXPECT_EQ(it->second->range.size, f.range.size);
      }
    }
  }
  EXPECT_GT(restored, 20u) << "samples.json should list debug files of the ELF samples";
}

TEST(ElfReader, DebugFileOfAnotherBuildIsRefused) {
  std::vector<Sample> all = samples("elf-x64-gcc");
  const Sample *base = nullptr, *other = nullptr;
  for (const Sample &s : all) {
    if (s.debugPath.empty()) continue;
    if (s.variant == "base" && !base) base = &s;
    if (s.variant != "base" && !other) other = &s;
  }
  ASSERT_TRUE(base && other);
  llvm::Expected<Image> image = readImage(base->strippedPath, {"", other->debugPath, ""});
  ASSERT_FALSE(image);
  std::string message = llvm::toString(image.takeError());
  EXPECT_NE(message.find("does not belong"), std::string::npos) << message;
  EXPECT_NE(message.find(other->debugPath), std::string::npos) << message;
}

TEST(ElfReader, IdentitySectionsAndImportsMatchTools) {
  for (const Sample &sample : samples("elf-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    CommandResult notes = run({"llvm-readelf-19", "-n", sample.path});
    std::smatch m;
    ASSERT_TRUE(std::regex_search(notes.out, m, std::regex("Build ID: ([0-9a-f]+)")));
    EXPECT_EQ(hexEncode(image.identity.buildId), m[1].str());
    CommandResult sum = run({"sha256sum", sample.path});
    EXPECT_EQ(hexEncode(image.identity.sha256), sum.out.substr(0, 64));

    CommandResult headers = run({"llvm-readelf-19", "-S", "--wide", sample.path});
    std::regex row(R"(\[\s*\d+\] (\S+)\s+\S+\s+([0-9a-f]{16}) ([0-9a-f]+) ([0-9a-f]+) .*)");
    size_t sections = 0;
    for (std::sregex_iterator it(headers.out.begin(), headers.out.end(), row), end; it != end; ++it) {
      const std::smatch &s = *it;
      auto ours = std::find_if(image.sections.begin(), image.sections.end(),
                               [&](const Section &x) { return x.name == s[1].str(); });
      ASSERT_NE(ours, image.sections.end()) << s[1];
      EXPECT_EQ(ours->size, std::stoull(s[4], nullptr, 16)) << s[1];
      if (ours->loaded) EXPECT_EQ(ours->rva + image.imageBase, std::stoull(s[2], nullptr, 16)) << s[1];
      ++sections;
    }
    EXPECT_EQ(sections, image.sections.size());

    // Every PLT slot the dynamic relocations name is an import with its symbol.
    CommandResult relocations = run({"llvm-readelf-19", "-r", "--wide", sample.path});
    std::regex jumpSlot(R"(([0-9a-f]{16})\s+[0-9a-f]+\s+R_\w+_JUMP_SLOT\s+[0-9a-f]+\s+(\w+))");
    size_t slots = 0;
    for (std::sregex_iterator it(relocations.out.begin(), relocations.out.end(), jumpSlot), end; it != end; ++it) {
      uint64_t slot = std::stoull((*it)[1], nullptr, 16) - image.imageBase;
      std::string name = (*it)[2];
      bool found = std::any_of(image.imports.begin(), image.imports.end(), [&](const Import &i) {
        return i.slotRva == slot && i.name == name && i.kind == ImportKind::PltSlot;
      });
      EXPECT_TRUE(found) << name;
      ++slots;
    }
    EXPECT_GT(slots, 0u);
  }
}

// sectionAt finds each loaded section from its first to its last byte, and nothing just outside
// the loaded ones (it searches a sorted table once reading ends).
TEST(ElfReader, SectionAtFindsEveryLoadedSection) {
  for (const Sample &sample : samples("elf-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    size_t loaded = 0;
    for (const Section &s : image.sections) {
      if (!s.loaded || !s.size) continue;
      ++loaded;
      EXPECT_EQ(image.sectionAt(s.rva), &s) << s.name;
      EXPECT_EQ(image.sectionAt(s.rva + s.size - 1), &s) << s.name;
      for (uint64_t outside : {s.rva - 1, s.rva + s.size}) {
        const Section *found = image.sectionAt(outside);
        if (found) EXPECT_TRUE(found->loaded && outside - found->rva < found->size) << s.name;
      }
    }
    EXPECT_GT(loaded, 5u);
    EXPECT_EQ(image.sectionAt(~uint64_t(0)), nullptr);
  }
}

// Each Image keeps its relocations' names itself, so the same symbol in two builds is two
// strings: sameSymbol compares them by name.
TEST(ElfReader, RelocationsOfTwoBuildsNameTheSameSymbolByName) {
  std::vector<Sample> all = samples("elf-x64-gcc");
  auto path = [&](const std::string &variant) {
    for (const Sample &s : all)
      if (s.program == "initval" && s.variant == variant) return s.path;
    return std::string("(no initval." + variant + ")");
  };
  Image base = loadImage(path("base")), patched = loadImage(path("fix6"));
  auto named = [](const Image &image, std::string_view type) -> const Relocation * {
    for (const Relocation &r : image.relocations)
      if (r.symbol && r.typeName.ends_with(type)) return &r;
    return nullptr;
  };
  const Relocation *b = named(base, "_JUMP_SLOT"), *p = nullptr;
  ASSERT_NE(b, nullptr);
  for (const Relocation &r : patched.relocations)
    if (r.symbol && *r.symbol == *b->symbol) p = &r;
  ASSERT_NE(p, nullptr) << *b->symbol;
  EXPECT_NE(b->symbol, p->symbol);  // kept by each Image
  EXPECT_TRUE(sameSymbol(*b, *p));
  const Relocation *other = nullptr;
  for (const Relocation &r : patched.relocations)
    if (r.symbol && *r.symbol != *b->symbol) other = &r;
  ASSERT_NE(other, nullptr);
  EXPECT_FALSE(sameSymbol(*b, *other));
  Relocation none;
  EXPECT_FALSE(sameSymbol(*b, none));
  EXPECT_TRUE(sameSymbol(none, Relocation{}));
}

TEST(ElfReader, DataObjectsIncludeGlobalsAndThreadLocals) {
  for (const Sample &sample : samples("elf-")) {
    SCOPED_TRACE(sample.path);
    Image image = loadImage(sample.path);
    size_t objects = 0, tls = 0;
    for (const ToolSymbol &s : readelfSymbols(sample.path, ".symtab")) {
      if (!s.defined || (s.type != "OBJECT" && s.type != "TLS")) continue;
      bool threadLocal = s.type == "TLS";
      uint64_t rva = threadLocal ? s.value : s.value - image.imageBase;
      bool found = std::any_of(image.dataObjects.begin(), image.dataObjects.end(), [&](const DataObject &d) {
        return d.name == s.name && d.range.rva == rva && d.range.size == s.size && d.threadLocal == threadLocal;
      });
      EXPECT_TRUE(found) << s.name;
      ++objects;
      tls += threadLocal;
    }
    EXPECT_GT(objects, 0u);
    if (sample.program == "core") EXPECT_GT(tls, 0u) << "scenario 12 needs a thread-local variable";
  }
}

}  // namespace
}  // namespace hotforge::test
