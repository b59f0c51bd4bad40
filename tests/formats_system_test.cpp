// Real distribution binaries of this machine: stripped shared libraries that offer only .dynsym
// and .eh_frame, for both architectures. Every FDE-covered function must be found.
#include "hotforge/image.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <map>

namespace hotforge::test {
namespace {

void expectEveryFde(const std::string &path, Machine machine) {
  SCOPED_TRACE(path);
  llvm::Expected<Image> image = readImage(path);
  ASSERT_TRUE(bool(image)) << llvm::toString(image.takeError());
  EXPECT_EQ(image->machine, machine);
  EXPECT_FALSE(image->identity.buildId.empty());
  std::map<uint64_t, const Function *> byRva;
  for (const Function &f : image->functions) byRva[f.range.rva] = &f;
  auto fdes = ehFrameRanges(path);
  ASSERT_GT(fdes.size(), 100u);
  for (auto [begin, end] : fdes) {
    if (end == begin) continue;
    auto it = byRva.find(begin - image->imageBase);
    ASSERT_NE(it, byRva.end()) << "FDE at " << std::hex << begin;
    EXPECT_TRUE(it->second->seenBy(FunctionSource::EhFrame));
    if (!it->second->seenBy(FunctionSource::Dynsym)) EXPECT_EQ(it->second->range.size, end - begin);
  }
  // Exported functions keep their names.
  size_t exported = 0;
  for (const ToolSymbol &s : readelfSymbols(path, ".dynsym")) {
    if (!s.defined || s.type != "FUNC" || !s.value) continue;
    auto it = byRva.find(s.value - image->imageBase);
    ASSERT_NE(it, byRva.end()) << s.name;
    EXPECT_TRUE(it->second->name.has_value());
    ++exported;
  }
  EXPECT_GT(exported, 50u);
}

TEST(SystemBinaries, X64SharedLibrariesFindEveryFdeFunction) {
  expectEveryFde("/usr/lib/x86_64-linux-gnu/libzstd.so.1", Machine::X64);
  expectEveryFde("/lib/x86_64-linux-gnu/libc.so.6", Machine::X64);
}

TEST(SystemBinaries, Arm64SharedLibrariesFindEveryFdeFunction) {
  expectEveryFde("/usr/aarch64-linux-gnu/lib/libc.so.6", Machine::Arm64);
}

}  // namespace
}  // namespace hotforge::test
