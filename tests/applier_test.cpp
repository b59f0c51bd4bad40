// The applier core (hotforge/applier.h) against a fake backend: a real image (`hotforge build` of
// sample fixes) staged into a fake process holding the baseline's sections, its jumps written and
// restored; the expected-bytes check, the wait while a thread is in the way (and giving up), the
// stop until the thread set is stable, the rollback of a failed write, and the sequence rule.
#include "hotforge/applier.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/files.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace hotforge::test {
namespace {

constexpr uint64_t kBase = 0x555555554000, kImageAt = 0x555565554000;

struct FakeThread {
  int tid = 0;
  uint64_t pc = 0;
  std::vector<uint64_t> stack;
  int leavesAfterResumes = -1;  // moves its pc to 0x10 after this many resumes; -1: never
  int appearsAtListing = 0;     // first listed at this call of threads() (0: from the start)
};

// A process in memory: byte regions, threads that move when resumed, and a log of what the core
// asked for.
class FakeBackend final : public ApplierBackend {
public:
  std::map<uint64_t, std::vector<uint8_t>> regions;
  std::vector<FakeThread> all;
  int failWriteNumber = 0;  // the n-th writeCode fails (1-based); 0: none
  bool interruptRequested = false;
  unsigned listings = 0, resumes = 0, lettingGo = 0, writes = 0, reserved = 0, released = 0;
  std::vector<int> stopRequests;

  std::string processName() const override { return "the fake process"; }
  bool read(uint64_t address, std::span<uint8_t> out) override {
    uint8_t *at = locate(address, out.size());
    if (!at) return false;
    std::copy_n(at, out.size(), out.begin());
    return true;
  }
  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override {
    if (++writes == unsigned(failWriteNumber)) return fail("the fake refuses write ", writes);
    uint8_t *at = locate(address, bytes.size());
    if (!at) return fail("no memory at ", hexAddress(address));
    std::copy(bytes.begin(), bytes.end(), at);
    return success();
  }
  std::vector<int> threads() override {
    std::vector<int> tids;
    for (const FakeThread &t : all)
      if (t.appearsAtListing <= int(listings)) tids.push_back(t.tid);
    ++listings;
    return tids;
  }
  Outcome<bool> requestStop(int tid) override {
    stopRequests.push_back(tid);
    return true;
  }
  Status awaitStops() override {
    stopped_.clear();
    for (const FakeThread &t : all)
      if (std::count(stopRequests.begin(), stopRequests.end(), t.tid)) stopped_.push_back({t.tid, t.pc, 0});
    return success();
  }
  std::span<const StoppedThread> stoppedThreads() override { return stopped_; }
  std::span<const uint64_t> stackWords(const StoppedThread &thread) override {
    return std::find_if(all.begin(), all.end(), [&](const FakeThread &t) { return t.tid == thread.tid; })->stack;
  }
  void resumeAll() override {
    ++resumes;
    for (FakeThread &t : all)
      if (t.leavesAfterResumes >= 0 && int(resumes) >= t.leavesAfterResumes) t.pc = 0x10;
    stopRequests.clear();
  }
  void letGo() override {
    ++lettingGo;
    stopRequests.clear();
  }
  bool interrupted() const override { return interruptRequested; }
  Outcome<uint64_t> reserveNear(uint64_t, uint64_t size, uint64_t) override {
    ++reserved;
    regions[kImageAt] = std::vector<uint8_t>(size);
    return kImageAt;
  }
  Status install(const PatchImage &, uint64_t address, std::span<const uint8_t> laidOut) override {
    std::copy(laidOut.begin(), laidOut.end(), regions.at(address).begin());
    return success();
  }
  void release(const PatchImage &, uint64_t address, bool) override {
    ++released;
    regions.erase(address);
  }
  Outcome<uint64_t> resolveImport(const PatchImport &import) override { return fail("no ", import.symbol, " here"); }

private:
  uint8_t *locate(uint64_t address, size_t size) {
    auto it = regions.upper_bound(address);
    if (it == regions.begin()) return nullptr;
    --it;
    if (address + size > it->first + it->second.size()) return nullptr;
    return it->second.data() + (address - it->first);
  }
  std::vector<StoppedThread> stopped_;
};

// The image `hotforge build BASE FIX` writes, read back.
PatchImage builtImage(const std::string &target, const std::string &base, const std::string &fix) {
  std::string samples = samplesDir() + "/" + target + "/", out = tempDir() + "/" + fix + ".hfpatch";
  CommandResult r = run({hotforgeBinary(), "build", samples + base, samples + fix, "-o", out});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  Outcome<std::vector<uint8_t>> bytes = readFileBytes(out);
  EXPECT_TRUE(bool(bytes));
  Outcome<PatchImage> image = bytes ? readPatchImage(*bytes) : Outcome<PatchImage>(fail("unread"));
  EXPECT_TRUE(bool(image)) << (image ? "" : image.error());
  return image ? *image : PatchImage{};
}

// The baseline's loaded sections at kBase, as a loader finds them.
void loadBaseline(FakeBackend &backend, const std::string &target, const std::string &base) {
  Outcome<std::vector<uint8_t>> file = readFileBytes(samplesDir() + "/" + target + "/" + base);
  ASSERT_TRUE(bool(file));
  Outcome<std::vector<ContainerSection>> sections = containerTarget(Format::Elf).sections(*file);
  ASSERT_TRUE(bool(sections)) << sections.error();
  std::vector<uint8_t> memory;
  for (const ContainerSection &s : *sections) {
    if (!s.loaded) continue;
    memory.resize(std::max<size_t>(memory.size(), s.rva + s.memorySize));
    std::copy(s.contents.begin(), s.contents.end(), memory.begin() + s.rva);
  }
  backend.regions[kBase] = std::move(memory);
}

std::vector<uint8_t> bytesAt(FakeBackend &backend, uint64_t address, size_t size) {
  std::vector<uint8_t> out(size);
  EXPECT_TRUE(backend.read(address, out));
  return out;
}

TEST(ApplierCore, StagesARealImageWritesItsJumpsAndRestoresTheBase) {
  FakeBackend backend;
  loadBaseline(backend, "elf-x64-gcc", "core.base");
  PatchImage image = builtImage("elf-x64-gcc", "core.base", "core.fix1");
  ASSERT_FALSE(image.redirects.empty());
  std::vector<uint8_t> baseBefore = backend.regions.at(kBase);

  Outcome<PreparedImage> prepared = stageImage(backend, image, kBase, /*checkEntries=*/true);
  ASSERT_TRUE(bool(prepared)) << prepared.error();
  EXPECT_EQ(prepared->address, kImageAt);
  EXPECT_EQ(prepared->size % 0x10000, 0u);
  ASSERT_EQ(prepared->changes.size(), image.redirects.size());
  EXPECT_EQ(backend.regions.at(kBase), baseBefore) << "staging changes no code of the target";

  StopReport report;
  ASSERT_TRUE(bool(writeEntries(backend, prepared->changes, EntryDirection::In, {}, report)));
  EXPECT_EQ(report.attempts, 1u);
  EXPECT_EQ(backend.lettingGo, 1u);
  for (size_t i = 0; i < image.redirects.size(); ++i) {
    Outcome<EntryWrite> w = entryWrite(image.redirects[i], image.machine, kBase, kImageAt);
    ASSERT_TRUE(bool(w));
    EXPECT_EQ(bytesAt(backend, w->address, w->bytes.size()), w->bytes) << prepared->changes[i].name;
  }
  EXPECT_EQ(entriesWritten(backend, prepared->changes), std::optional<bool>(true));

  ASSERT_TRUE(bool(writeEntries(backend, prepared->changes, EntryDirection::Out, {}, report)));
  EXPECT_EQ(backend.regions.at(kBase), baseBefore) << "reverting restores the base byte for byte";
  EXPECT_EQ(entriesWritten(backend, prepared->changes), std::optional<bool>(false));
}

TEST(ApplierCore, RefusesAnImageWhoseExpectedBytesAreNotThereBeforeReservingMemory) {
  FakeBackend backend;
  loadBaseline(backend, "elf-x64-gcc", "core.base");
  PatchImage image = builtImage("elf-x64-gcc", "core.base", "core.fix1");
  ASSERT_FALSE(image.redirects.empty());
  const PatchRedirect &r = image.redirects[0];
  backend.regions.at(kBase)[r.baseRva - r.paddingBefore] ^= 0xff;

  Outcome<PreparedImage> prepared = stageImage(backend, image, kBase, /*checkEntries=*/true);
  ASSERT_FALSE(bool(prepared));
  EXPECT_NE(prepared.error().find("does not hold the bytes this patch expects"), std::string::npos) << prepared.error();
  EXPECT_EQ(backend.reserved, 0u);
  // Unchecked at staging (an earlier patch may be in), the bytes are checked again under the stop.
  prepared = stageImage(backend, image, kBase, /*checkEntries=*/false);
  ASSERT_TRUE(bool(prepared)) << prepared.error();
  StopReport report;
  Status written = writeEntries(backend, prepared->changes, EntryDirection::In, {}, report);
  ASSERT_FALSE(bool(written));
  EXPECT_NE(written.error().find("does not hold the bytes this patch expects"), std::string::npos) << written.error();
  EXPECT_EQ(backend.writes, 0u);
  EXPECT_EQ(backend.lettingGo, 1u) << "the threads are let go on a refusal too";
}

TEST(ApplierCore, AnUnresolvableImportReleasesNothingBecauseNothingIsReserved) {
  FakeBackend backend;
  loadBaseline(backend, "elf-x64-gcc", "core.base");
  PatchImage image = builtImage("elf-x64-gcc", "core.base", "core.fix20");
  ASSERT_FALSE(image.imports.empty());
  Outcome<PreparedImage> prepared = stageImage(backend, image, kBase, /*checkEntries=*/true);
  ASSERT_FALSE(bool(prepared));
  EXPECT_NE(prepared.error().find(image.imports[0].symbol), std::string::npos) << prepared.error();
  EXPECT_EQ(backend.reserved, 0u);
}

// A jump of 5 bytes at 0x1000 whose base bytes are 90 90 90 90 90.
EntryChange handMadeChange(FakeBackend &backend, bool quiescent) {
  backend.regions[0x1000 - 16] = std::vector<uint8_t>(64, 0x90);
  EntryChange c;
  c.name = "spin";
  c.address = 0x1000;
  c.original = std::vector<uint8_t>(5, 0x90);
  c.written = {0xe9, 1, 2, 3, 4};
  PatchRedirect r;
  r.name = "spin";
  r.baseRva = 0x1000;
  r.baseSize = 32;
  r.expected = c.original;
  r.overwrittenSize = 5;
  r.quiescent = quiescent;
  c.redirect = r;
  return c;
}

TEST(ApplierCore, WaitsWhileAThreadIsInsideTheJumpThenWrites) {
  FakeBackend backend;
  EntryChange change = handMadeChange(backend, false);
  backend.all = {{1, 0x2000, {}, -1, 0}, {2, 0x1002, {}, /*leavesAfterResumes=*/3, 0}};
  StopReport report;
  ASSERT_TRUE(bool(writeEntries(backend, std::span(&change, 1), EntryDirection::In, {}, report)));
  EXPECT_EQ(report.attempts, 4u);
  EXPECT_EQ(backend.resumes, 3u);
  EXPECT_EQ(bytesAt(backend, 0x1000, 5), change.written);
}

TEST(ApplierCore, GivesUpNamingTheThreadAndWritesNothing) {
  FakeBackend backend;
  EntryChange change = handMadeChange(backend, false);
  backend.all = {{7, 0x1003, {}, -1, 0}};
  StopReport report;
  Status written = writeEntries(backend, std::span(&change, 1), EntryDirection::In, {std::chrono::milliseconds(30)}, report);
  ASSERT_FALSE(bool(written));
  EXPECT_NE(written.error().find("gave up after"), std::string::npos) << written.error();
  EXPECT_NE(written.error().find("thread 7 is at 0x1003 inside spin"), std::string::npos) << written.error();
  EXPECT_GT(report.attempts, 1u);
  EXPECT_EQ(backend.writes, 0u);
  EXPECT_EQ(bytesAt(backend, 0x1000, 5), change.original);

  backend.interruptRequested = true;
  report = {};
  written = writeEntries(backend, std::span(&change, 1), EntryDirection::In, {}, report);
  ASSERT_FALSE(bool(written));
  EXPECT_EQ(written.error(), "interrupted after 1 attempts while threads were in the way; nothing applied");
}

TEST(ApplierCore, QuiescentAndStrictLookAtTheStack) {
  FakeBackend backend;
  // A return address into the function, the thread elsewhere.
  backend.all = {{3, 0x5000, {0x1010}, -1, 0}};
  EntryChange entryOnly = handMadeChange(backend, false);
  StopReport report;
  EXPECT_TRUE(bool(writeEntries(backend, std::span(&entryOnly, 1), EntryDirection::In, {}, report)));

  FakeBackend strictBackend;
  strictBackend.all = backend.all;
  EntryChange plain = handMadeChange(strictBackend, false);
  Status strict = writeEntries(strictBackend, std::span(&plain, 1), EntryDirection::In,
                               {std::chrono::milliseconds(10), /*strict=*/true}, report);
  ASSERT_FALSE(bool(strict));
  EXPECT_NE(strict.error().find("has spin on its stack (return address 0x1010)"), std::string::npos) << strict.error();

  FakeBackend quiescentBackend;
  quiescentBackend.all = backend.all;
  EntryChange quiescent = handMadeChange(quiescentBackend, true);
  Status waited = writeEntries(quiescentBackend, std::span(&quiescent, 1), EntryDirection::In,
                               {std::chrono::milliseconds(10)}, report);
  ASSERT_FALSE(bool(waited));
  EXPECT_NE(waited.error().find("has spin on its stack"), std::string::npos) << waited.error();
}

TEST(ApplierCore, StopsThreadsThatStartWhileStopping) {
  FakeBackend backend;
  backend.all = {{1, 0x2000, {}, -1, 0}, {2, 0x2000, {}, -1, /*appearsAtListing=*/1}, {3, 0x2000, {}, -1, 2}};
  ASSERT_TRUE(bool(stopAllThreads(backend)));
  EXPECT_EQ(backend.stopRequests, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(backend.listings, 4u) << "listed until a listing shows no new thread";
  EXPECT_EQ(backend.stoppedThreads().size(), 3u);
}

// `count` jumps 16 bytes apart from 0x1000 over nop bytes, as a record holds them (no redirect).
std::vector<EntryChange> recordedChanges(FakeBackend &backend, size_t count) {
  backend.regions[0x1000] = std::vector<uint8_t>(64, 0x90);
  std::vector<EntryChange> changes(count);
  for (size_t i = 0; i < changes.size(); ++i) {
    changes[i].name = "f" + std::to_string(i);
    changes[i].address = 0x1000 + 16 * i;
    changes[i].original = std::vector<uint8_t>(5, 0x90);
    changes[i].written = {0xe9, uint8_t(i), 0, 0, 0};
  }
  return changes;
}

TEST(ApplierCore, AFailedWritePutsBackWhatWasWritten) {
  FakeBackend backend;
  std::vector<EntryChange> changes = recordedChanges(backend, 3);
  backend.failWriteNumber = 3;
  StopReport report;
  Status written = writeEntries(backend, changes, EntryDirection::In, {}, report);
  ASSERT_FALSE(bool(written));
  EXPECT_EQ(written.error(), "the fake refuses write 3");
  EXPECT_EQ(backend.regions.at(0x1000), std::vector<uint8_t>(64, 0x90));
  EXPECT_EQ(entriesWritten(backend, changes), std::optional<bool>(false));
}

TEST(ApplierCore, RevertLeavesRestoredEntriesAndRefusesForeignBytes) {
  FakeBackend backend;
  std::vector<EntryChange> changes = recordedChanges(backend, 2);
  std::copy(changes[1].written.begin(), changes[1].written.end(), backend.regions.at(0x1000).begin() + 16);
  EXPECT_EQ(entriesWritten(backend, changes), std::nullopt) << "some in, some out";
  StopReport report;
  ASSERT_TRUE(bool(writeEntries(backend, changes, EntryDirection::Out, {}, report)));
  EXPECT_EQ(backend.writes, 1u) << "the entry already restored is left";
  EXPECT_EQ(backend.regions.at(0x1000), std::vector<uint8_t>(64, 0x90));

  backend.regions.at(0x1000)[0] = 0xcc;
  Status refused = writeEntries(backend, changes, EntryDirection::In, {}, report);
  ASSERT_FALSE(bool(refused));
  EXPECT_EQ(refused.error(), "the jump at 0x1000 (f0) was changed by someone else (it holds cc90909090); nothing written");
}

TEST(ApplierCore, SequenceRule) {
  EXPECT_EQ(sequenceStep(std::nullopt, std::nullopt, 1), SequenceStep::Apply);
  EXPECT_EQ(sequenceStep(1, std::nullopt, 2), SequenceStep::Replace);
  EXPECT_EQ(sequenceStep(2, std::nullopt, 2), SequenceStep::NotNewer);
  EXPECT_EQ(sequenceStep(2, std::nullopt, 1), SequenceStep::NotNewer);
  EXPECT_EQ(sequenceStep(std::nullopt, 3, 2), SequenceStep::LowerThanBefore);
  EXPECT_EQ(sequenceStep(std::nullopt, 3, 3), SequenceStep::Apply);
  EXPECT_EQ(sequenceStep(3, 5, 4), SequenceStep::LowerThanBefore);
}

}  // namespace
}  // namespace hotforge::test
