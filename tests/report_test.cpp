// The review pages on every sample scenario of every target: well-formed and self-contained
// (tests/check_html.py), one section per change; symbolic disassembly makes code that only moved
// read the same; escaping covers any bytes.
#include "hotforge/arch.h"
#include "hotforge/diff.h"
#include "hotforge/report.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

namespace hotforge::test {
namespace {

using json = nlohmann::json;

const Sample *find(const std::vector<Sample> &all, const std::string &target, const std::string &program,
                   const std::string &variant) {
  for (const Sample &s : all)
    if (s.target == target && s.program == program && s.variant == variant) return &s;
  return nullptr;
}

// Every built (base, patched) sample pair of every target.
std::vector<std::pair<Sample, Sample>> scenarioPairs() {
  std::vector<Sample> all = samples();
  std::vector<std::pair<Sample, Sample>> out;
  for (const json &t : samplesManifest()["targets"])
    for (const json &s : samplesManifest()["scenarios"]) {
      const Sample *base = find(all, t["name"], s["program"], "base");
      const Sample *patched = find(all, t["name"], s["program"], s["variant"]);
      if (base && patched) out.push_back({*base, *patched});
    }
  return out;
}

// What tests/check_html.py found on each page, by path; fails the test when a page is not well-formed.
json checkPages(const std::vector<std::string> &paths) {
  std::vector<std::string> argv = {"/usr/bin/python3", std::string(HOTFORGE_SOURCE_DIR) + "/tests/check_html.py"};
  argv.insert(argv.end(), paths.begin(), paths.end());
  CommandResult r = run(argv);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  return r.exitCode == 0 ? json::parse(r.out) : json::object();
}

TEST(Report, MarkupEscapesMarkupAndBytesThatAreNotText) {
  EXPECT_EQ(markupEscape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
  EXPECT_EQ(markupEscape("caf\xc3\xa9 \xe2\x86\x92"), "caf\xc3\xa9 \xe2\x86\x92");  // UTF-8 stays
  EXPECT_EQ(markupEscape(std::string("x\xff\xc3(\x01\0y", 7)), "x\\xff\\xc3(\\x01\\x00y");
  EXPECT_EQ(markupEscape("\xed\xa0\x80\xc0\xaf"), "\\xed\\xa0\\x80\\xc0\\xaf");  // surrogate, overlong
}

TEST(Report, EveryScenarioPageIsWellFormedAndShowsEveryChange) {
  std::string dir = tempDir();
  size_t listings = 0;
  std::vector<std::string> paths;
  std::vector<std::multiset<std::string>> expectedHeadings;
  std::vector<bool> hasListing;
  for (const auto &[baseSample, patchedSample] : scenarioPairs()) {
    SCOPED_TRACE(patchedSample.path);
    Image base = loadImage(baseSample.path), patched = loadImage(patchedSample.path);
    llvm::Expected<Diff> diff = diffImages(base, patched);
    ASSERT_TRUE(bool(diff)) << llvm::toString(diff.takeError());
    llvm::Expected<std::string> page = diffPageHtml(*diff, base, patched);
    ASSERT_TRUE(bool(page)) << llvm::toString(page.takeError());
    paths.push_back(dir + "/page-" + std::to_string(paths.size()) + ".html");
    writeFile(paths.back(), *page);
    std::multiset<std::string> expected;
    for (const Change &c : diff->changes) expected.insert(c.name.value_or("(unnamed)"));
    expectedHeadings.push_back(expected);
    hasListing.push_back(std::any_of(diff->changes.begin(), diff->changes.end(),
                                     [](const Change &c) { return c.kind != ChangeKind::Data; }));
    // Deterministic: the same diff gives the same bytes.
    llvm::Expected<std::string> again = diffPageHtml(*diff, base, patched);
    ASSERT_TRUE(bool(again));
    EXPECT_EQ(*again, *page);
  }
  json found = checkPages(paths);
  for (size_t i = 0; i < paths.size(); ++i) {
    SCOPED_TRACE(paths[i]);
    std::multiset<std::string> headings;
    for (const json &h : found[paths[i]]["headings"]) headings.insert(h.get<std::string>());
    EXPECT_EQ(headings, expectedHeadings[i]);
    const json &rows = found[paths[i]]["rows"];
    if (!hasListing[i]) continue;
    ++listings;
    EXPECT_GT(rows.value("chg", 0) + rows.value("ins", 0) + rows.value("del", 0), 0);  // the change is visible
  }
  EXPECT_GT(paths.size(), 20u);
  EXPECT_GT(listings, 10u);
}

// Functions the differ pairs as unchanged but that moved: with every address operand that leaves
// the function named, base and patched listings are equal line for line, while their plain
// listings differ for some.
TEST(Report, CodeThatOnlyMovedReadsTheSame) {
  std::map<std::string, size_t> movedWithAddresses;  // per target
  for (const auto &[baseSample, patchedSample] : scenarioPairs()) {
    SCOPED_TRACE(patchedSample.path);
    Image base = loadImage(baseSample.path), patched = loadImage(patchedSample.path);
    llvm::Expected<Diff> diff = diffImages(base, patched);
    ASSERT_TRUE(bool(diff)) << llvm::toString(diff.takeError());
    auto decoder = differ::createInstructionDecoder(base.machine);
    ASSERT_TRUE(bool(decoder)) << llvm::toString(decoder.takeError());
    differ::RelocationIndex baseRelocations = differ::relocationIndex(base),
                            patchedRelocations = differ::relocationIndex(patched);
    // Named things only: functions and data objects with a name, import slots. Branches within
    // the function read `function+offset`, which moves with padding inside it: one name for them.
    auto namer = [](const Image &image, const Function &self) {
      return [&image, &self](uint64_t target) -> std::optional<differ::AddressName> {
        if (self.range.contains(target)) return differ::AddressName{"(local)", 0};
        for (const Import &i : image.imports)
          if (i.slotRva == target) return differ::AddressName{i.name, 0};
        if (const Function *f = image.functionAt(target); f && f->name)
          return differ::AddressName{*f->name, target - f->range.rva};
        for (const DataObject &o : image.dataObjects)
          // An object whose size was inferred (mingw's `__data_end__`) spans other data that moves.
          if (!o.threadLocal && o.sizeKnown && o.range.contains(target))
            return differ::AddressName{o.name, target - o.range.rva};
        return std::nullopt;
      };
    };
    auto allNamed = [&](const Image &image, const Function &f, const differ::RelocationIndex &relocations) {
      auto names = namer(image, f);
      for (const differ::CodeReference &r :
           (*decoder)->decode(image.bytesAt(f.range.rva, f.range.size), f.range.rva, relocations).references)
        if (!names(r.target)) return false;
      return true;
    };
    std::set<uint64_t> lineOnly;  // paired, not changed, but their line-number constants differ
    for (const Change &c : diff->changes)
      if (c.kind == ChangeKind::LineOnly && c.patched) lineOnly.insert(c.patched->rva);
    for (const FunctionPair &pair : diff->pairs) {
      const Function &fb = base.functions[pair.base], &fp = patched.functions[pair.patched];
      if (pair.changed || lineOnly.count(fp.range.rva) || fb.range.rva == fp.range.rva || !allNamed(base, fb, baseRelocations) ||
          !allNamed(patched, fp, patchedRelocations))
        continue;
      auto b = (*decoder)->disassembleSymbolic(base.bytesAt(fb.range.rva, fb.range.size), fb.range.rva,
                                               baseRelocations, namer(base, fb));
      auto p = (*decoder)->disassembleSymbolic(patched.bytesAt(fp.range.rva, fp.range.size), fp.range.rva,
                                               patchedRelocations, namer(patched, fp));
      ASSERT_EQ(b.size(), p.size()) << fb.name.value_or("?");
      for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i].text, p[i].text) << fb.name.value_or("?") << " #" << i;
      // Without names, the same code prints its addresses.
      differ::AddressNamer numbers = [](uint64_t) -> std::optional<differ::AddressName> { return std::nullopt; };
      auto plainB = (*decoder)->disassembleSymbolic(base.bytesAt(fb.range.rva, fb.range.size), fb.range.rva,
                                                    baseRelocations, numbers);
      auto plainP = (*decoder)->disassembleSymbolic(patched.bytesAt(fp.range.rva, fp.range.size), fp.range.rva,
                                                    patchedRelocations, numbers);
      bool plainDiffers = false;
      for (size_t i = 0; i < plainB.size() && i < plainP.size(); ++i) plainDiffers |= plainB[i].text != plainP[i].text;
      movedWithAddresses[baseSample.target] += plainDiffers;
    }
  }
  // Every target has moved functions whose addresses changed (the check above is not vacuous).
  for (const json &t : samplesManifest()["targets"])
    EXPECT_GT(movedWithAddresses[t["name"].get<std::string>()], 0u) << t["name"];
}

}  // namespace
}  // namespace hotforge::test
