// Function discovery from code (codeflow/, docs/formats.md "Functions from code"): on the samples
// built without unwind tables (samples/build.sh, nounwind/) the boundaries found from code in the
// stripped images are checked against the symbols of the same build, and the coverage of the
// executable code is checked on those and on the usual stripped samples.
#include "test_support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <algorithm>
#include <map>

namespace hotforge::test {
namespace {

namespace fs = std::filesystem;

struct Agreement {
  size_t agreeing = 0;
  std::vector<std::string> differences;  // "name: what differs"
};

// Every function of `reference` with an extent that lies in code the stripped image covers,
// compared with the function `stripped` has at the same start.
Agreement compareBoundaries(const Image &reference, const Image &stripped) {
  Agreement out;
  std::map<uint64_t, const Function *> found;
  for (const Function &f : stripped.functions) found[f.range.rva] = &f;
  std::map<uint64_t, const Function *> expected;
  for (const Function &f : reference.functions) {
    const Section *section = reference.sectionAt(f.range.rva);
    if (!section || !section->permissions.execute || !f.range.size || section->name.starts_with(".plt")) continue;
    expected[f.range.rva] = &f;
    std::string name = f.name.value_or("?");
    auto it = found.find(f.range.rva);
    if (it == found.end())
      out.differences.push_back(name + ": not found");
    else if (it->second->range.size != f.range.size)
      out.differences.push_back(name + ": size " + std::to_string(it->second->range.size) + ", symbols " +
                                std::to_string(f.range.size));
    else
      ++out.agreeing;
  }
  for (const Function &f : stripped.functions) {
    const Section *section = stripped.sectionAt(f.range.rva);
    if (!expected.count(f.range.rva) && section && !section->name.starts_with(".plt")) {
      const Function *owner = reference.functionAt(f.range.rva);
      out.differences.push_back("extra start inside " + (owner ? owner->name.value_or("?") : std::string("no function")) +
                                " at +" + std::to_string(owner ? f.range.rva - owner->range.rva : f.range.rva));
    }
  }
  return out;
}

std::string nounwindDir(const std::string &target) { return samplesDir() + "/nounwind/" + target; }

TEST(Discovery, ElfWithoutUnwindTablesAgreesWithSymbols) {
  // glibc's Arm64 _init and _fini begin with a nop, and nothing the reader follows points at them
  // (DT_INIT/DT_FINI are not read): their start is found after the nop, as code in a gap.
  const std::vector<std::string> arm64Differences = {"_init: not found", "_fini: not found",
                                                     "extra start inside _init at +4",
                                                     "extra start inside _fini at +4"};
  for (std::string target : {"elf-x64-gcc", "elf-x64-clang", "elf-a64-gcc", "elf-a64-clang"}) {
    SCOPED_TRACE(target);
    Image reference = loadImage(nounwindDir(target) + "/core");
    Image stripped = loadImage(nounwindDir(target) + "/stripped/core");
    EXPECT_TRUE(stripped.coverage.discoveryRan);
    EXPECT_GE(stripped.coverage.ratio(), 0.95);
    Agreement agreement = compareBoundaries(reference, stripped);
    std::vector<std::string> expected = target.starts_with("elf-a64") ? arm64Differences : std::vector<std::string>{};
    std::sort(agreement.differences.begin(), agreement.differences.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(agreement.differences, expected);
    // Every scenario function of core.c, the jump table's (op_apply) and main among them.
    EXPECT_GE(agreement.agreeing, 17u);
  }
}

TEST(Discovery, EfiStylePeAgreesWithItsPdb) {
  for (std::string target : {"pe-x64", "pe-a64"}) {
    SCOPED_TRACE(target);
    std::string efi = nounwindDir(target) + "/stripped/core.efi";
    Image reference = loadImage(efi, {.pdbPath = nounwindDir(target) + "/debug/core.pdb", .debugFile = {}, .debugDir = {}});
    Image stripped = loadImage(efi);
    EXPECT_TRUE(stripped.debugInfoPath.empty());
    EXPECT_TRUE(stripped.coverage.discoveryRan);
    EXPECT_GE(stripped.coverage.ratio(), 0.95);
    Agreement agreement = compareBoundaries(reference, stripped);
    for (const std::string &d : agreement.differences) ADD_FAILURE() << d;
    EXPECT_GE(agreement.agreeing, 15u);
  }
}

TEST(Discovery, StrippedMingwAgreesWithDwarf) {
  for (std::string stem : {"mingw-x64/core.base.exe", "nounwind/mingw-x64/core.exe"}) {
    SCOPED_TRACE(stem);
    std::string path = samplesDir() + "/" + stem;
    fs::path p(path);
    Image reference = loadImage(path);
    Image stripped = loadImage((p.parent_path() / "stripped" / p.filename()).string());
    EXPECT_GE(stripped.coverage.ratio(), 0.95);
    Agreement agreement = compareBoundaries(reference, stripped);
    for (const std::string &d : agreement.differences) ADD_FAILURE() << d;
  }
}

TEST(Discovery, StrippedSamplesAreCovered) {
  for (const Sample &s : samples()) {
    if (s.strippedPath.empty()) continue;
    SCOPED_TRACE(s.strippedPath);
    Image stripped = loadImage(s.strippedPath);
    EXPECT_GE(stripped.coverage.ratio(), 0.95);
  }
}

}  // namespace
}  // namespace hotforge::test
