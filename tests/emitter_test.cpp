// The emitter on every sample scenario: the image reads cleanly with the LLVM tools, its records
// round-trip, and every carried function, once the fixups are applied for a base and an image at
// chosen addresses, is the patched build's function instruction by instruction: same shape, and
// every reference lands on the counterpart of what the patched build's reference lands on.
#include "hotforge/arch.h"
#include "hotforge/patch_image.h"
#include "live_process.h"
#include "test_support.h"
// The PE writer's internals, for tests that feed them crafted input.
#include "../emitter/src/emitter_internal.h"
#include "../emitter/src/pe_unwind.h"

#include <gtest/gtest.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/SHA1.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

namespace hotforge::test {
namespace {

struct Built {
  Image base, patched;
  Diff diff;
  std::optional<PatchImage> image;
  std::string error;
};

Built build(const std::string &basePath, const std::string &patchedPath, uint32_t sequence = 1) {
  Built b{loadImage(basePath), loadImage(patchedPath), {}, std::nullopt, {}};
  llvm::Expected<Diff> diff = diffImages(b.base, b.patched);
  if (!diff) {
    b.error = llvm::toString(diff.takeError());
    return b;
  }
  b.diff = std::move(*diff);
  BuildOptions options;
  options.sequence = sequence;
  llvm::Expected<PatchImage> image = buildPatchImage(b.base, b.patched, b.diff, options);
  if (image) b.image = std::move(*image);
  else b.error = llvm::toString(image.takeError());
  return b;
}

const Sample *find(const std::vector<Sample> &all, const std::string &target, const std::string &program,
                   const std::string &variant) {
  for (const Sample &s : all)
    if (s.target == target && s.program == program && s.variant == variant) return &s;
  return nullptr;
}

std::vector<std::pair<int, std::string>> scenarios() {
  std::vector<std::pair<int, std::string>> out;
  for (const auto &s : samplesManifest()["scenarios"]) out.push_back({s["scenario"].get<int>(), s["program"]});
  return out;
}

// The scenario's expected verdict says its changes need a restart (6: an initial value, 31: a layout).
bool needsRestart(int number) {
  for (const auto &s : samplesManifest()["scenarios"])
    if (s["scenario"] == number) return s["expected"]["verdict"] == "needs-restart";
  return false;
}

std::string normalized(std::string name) {
  for (const char *suffix : {".cold", ".part.", ".isra.", ".constprop."})
    if (auto at = name.find(suffix); at != std::string::npos) name.resize(at);
  return name;
}

// What an address of one build is, for comparing across builds: "f:name+off", "i:import",
// "d:name+off", or empty when nothing names it. Import slots come before data objects: on PE an
// object whose size the PDB does not give (sizeKnown false) reaches over the IAT that follows it.
// Objects with a known size come before those without.
std::string describe(const Image &image, uint64_t rva) {
  if (const Function *f = image.functionAt(rva); f && f->name)
    return "f:" + normalized(*f->name) + "+" + std::to_string(rva - f->range.rva);
  for (const Import &i : image.imports)
    if (i.slotRva == rva) return "i:" + i.name;
  for (bool sized : {true, false})
    for (const DataObject &d : image.dataObjects)
      if (!d.threadLocal && d.sizeKnown == sized && (d.range.contains(rva) || d.range.rva == rva) && d.range.size)
        return "d:" + normalized(d.name) + "+" + std::to_string(rva - d.range.rva);
  return "";
}

// A PLT entry, named by the import whose slot it jumps through: "plt:" and what names the slot.
// The slot is found by decoding the entry, as a CPU would run it, not from the diff's bindings.
std::string describeStub(const Image &image, uint64_t rva, differ::InstructionDecoder &decoder) {
  const Section *section = image.sectionAt(rva);
  if (!section || section->name.find(".plt") == std::string::npos) return "";
  constexpr uint64_t kEntryBytes = 16;  // x64 and Arm64 PLT entries, and .plt.sec's
  llvm::ArrayRef<uint8_t> entry = image.bytesAt(rva, std::min(kEntryBytes, section->rva + section->size - rva));
  differ::RelocationIndex none;
  for (const differ::CodeReference &r : decoder.decode(entry, rva, none).references)
    if (r.kind == differ::ReferenceKind::Memory) {
      std::string slot = describe(image, r.target);
      return slot.empty() ? "" : "plt:" + slot;
    }
  return "";
}

// The .pdata entries of the patched build that start inside a function the image carries, read
// with llvm-readobj.
size_t unwindEntriesOf(const Image &patched, const PatchImage &image) {
  CommandResult r = run({"llvm-readobj-19", "--unwind", patched.path});
  size_t n = 0;
  for (const std::string key : {"StartAddress: (0x", "Function: 0x"})
    for (size_t at = r.out.find(key); at != std::string::npos; at = r.out.find(key, at + 1)) {
      uint64_t rva = std::stoull(r.out.substr(at + key.size(), 16), nullptr, 16) - patched.imageBase;
      for (const PatchFunction &f : image.functions)
        if (rva >= f.patchedRva && rva < f.patchedRva + f.size) ++n;
    }
  return n;
}

size_t pointersChecked = 0;  // pointers in copied data that checkInstructionByInstruction followed

// A pointer in copied data, `value` once the fixups are applied, against the patched build's
// pointer to `patchedTarget`: the same function, or data with the same first bytes.
void checkPointee(const Built &b, const std::vector<uint8_t> &memory,
                  const std::map<uint32_t, const PatchFunction *> &byImageRva, uint64_t baseAddress,
                  uint64_t imageAddress, uint64_t value, uint64_t patchedTarget) {
  llvm::ArrayRef<uint8_t> want = b.patched.bytesAt(patchedTarget, 8);
  want = want.take_front(std::find(want.begin(), want.end(), 0) - want.begin() + 1);  // a string: up to its NUL
  if (value >= imageAddress && value - imageAddress < memory.size()) {
    uint32_t imageRva = uint32_t(value - imageAddress);
    auto g = byImageRva.upper_bound(imageRva);
    if (g != byImageRva.begin() && imageRva < std::prev(g)->first + std::prev(g)->second->size) {
      EXPECT_EQ(std::prev(g)->second->patchedRva + (imageRva - std::prev(g)->first), patchedTarget);
      return;
    }
    ASSERT_LE(imageRva + want.size(), memory.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), memory.begin() + imageRva)) << "image rva " << imageRva;
    return;
  }
  uint64_t baseRva = value - baseAddress;
  std::string inPatched = describe(b.patched, patchedTarget);
  if (!inPatched.empty() && inPatched.rfind("d:", 0) != 0) {
    EXPECT_EQ(describe(b.base, baseRva), inPatched) << "base rva " << baseRva;
    return;
  }
  llvm::ArrayRef<uint8_t> have = b.base.bytesAt(baseRva, want.size());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), have.begin(), have.end())) << "base rva " << baseRva;
}

bool isCarriedCode(const PatchImage &image, uint32_t rva) {
  return std::any_of(image.functions.begin(), image.functions.end(),
                     [&](const PatchFunction &f) { return rva >= f.rva && rva < f.rva + f.size; });
}

// An island the emitter made for an access at an offset from a copied anchor: it reaches the base's
// counterpart of what the patched access reaches, then branches back to `back`.
void checkBaseReachIsland(const Built &b, const std::vector<uint8_t> &memory, uint64_t island, uint64_t back,
                          uint64_t baseAddress, uint64_t imageAddress, uint64_t patchedTarget,
                          differ::InstructionDecoder &decoder) {
  constexpr size_t kLongestIsland = 20;  // save x16, ADRP, the access, restore x16, B back
  differ::RelocationIndex none;
  llvm::ArrayRef<uint8_t> code = llvm::ArrayRef<uint8_t>(memory).slice(island - imageAddress, kLongestIsland);
  differ::DecodedFunction decoded = decoder.decode(code, island, none);
  std::optional<uint64_t> reached, branchedTo;
  for (const differ::CodeReference &r : decoded.references) {
    if (r.encoding == FixupKind::A64AddLo12 || r.encoding == FixupKind::A64LdStLo12)
      reached = reached.value_or(r.target);
    if (r.kind == differ::ReferenceKind::Branch) branchedTo = branchedTo.value_or(r.target);
  }
  ASSERT_TRUE(reached.has_value());
  EXPECT_EQ(branchedTo, back);
  EXPECT_FALSE(describe(b.patched, patchedTarget).empty());
  EXPECT_EQ(describe(b.base, *reached - baseAddress), describe(b.patched, patchedTarget));
}

// Where the tests resolve the new imports of an image: apart from the base and the image.
std::vector<uint64_t> importAddresses(const PatchImage &image) {
  std::vector<uint64_t> addresses;
  for (size_t i = 0; i < image.imports.size(); ++i) addresses.push_back(0x6000'0000'0000 + 0x10 * i);
  return addresses;
}

uint64_t importAddress(const PatchImage &image, const std::string &symbol) {
  auto it = std::find_if(image.imports.begin(), image.imports.end(), [&](const PatchImport &i) { return i.symbol == symbol; });
  return it == image.imports.end() ? 0 : importAddresses(image)[size_t(it - image.imports.begin())];
}

// Checks one laid-out image against the patched build.
void checkInstructionByInstruction(const Built &b, uint64_t baseAddress, uint64_t imageAddress) {
  const PatchImage &image = *b.image;
  std::vector<uint8_t> memory = layOut(image);
  llvm::Error applied = lift(applyFixups(image, baseAddress, imageAddress, importAddresses(image), memory));
  ASSERT_FALSE(bool(applied)) << llvm::toString(std::move(applied));
  auto decoder = differ::createInstructionDecoder(image.machine);
  ASSERT_TRUE(bool(decoder));
  differ::RelocationIndex none, patchedRelocations = differ::relocationIndex(b.patched);
  std::map<uint32_t, const PatchFunction *> byImageRva;
  for (const PatchFunction &f : image.functions) byImageRva[f.rva] = &f;
  std::map<uint64_t, const FunctionBindings *> bindings;
  for (const FunctionBindings &fb : b.diff.bindings) bindings[b.patched.functions[fb.patched].range.rva] = &fb;
  std::set<uint32_t> veneers, importSlots;
  for (const PatchFixup &f : image.fixups) {
    if (f.veneer) veneers.insert(f.veneer);
    if (f.space == FixupSpace::Import) importSlots.insert(f.site);
  }

  for (const PatchFunction &f : image.functions) {
    SCOPED_TRACE(f.name.value_or("unnamed"));
    differ::DecodedFunction ours = (*decoder)->decode(llvm::ArrayRef<uint8_t>(memory).slice(f.rva, f.size),
                                                      imageAddress + f.rva, none, true);
    differ::DecodedFunction theirs = (*decoder)->decode(b.patched.bytesAt(f.patchedRva, f.size), f.patchedRva,
                                                        patchedRelocations, true);
    // The rewrites the emitter makes: a linker-relaxed NOP+ADR of base data becomes ADRP+ADD
    // again (the NOP is layout noise, so the patched side has one instruction fewer there); an
    // access at an offset from a copied anchor that lands in the base becomes a branch to an
    // island that forms the base address.
    std::vector<uint32_t> widened;  // our instruction index of each ADRP+ADD that replaced an ADR
    std::map<uint32_t, uint64_t> islandAt;  // our instruction offset of each such branch -> island address
    for (size_t k = 0, j = 0; k < ours.instructionShapes.size() || j < theirs.instructionShapes.size(); ++k, ++j) {
      ASSERT_LT(k, ours.instructionShapes.size());
      ASSERT_LT(j, theirs.instructionShapes.size());
      if (ours.instructionShapes[k] == theirs.instructionShapes[j]) continue;
      uint32_t word = llvm::support::endian::read32le(&memory[f.rva + ours.instructionOffsets[k]]);
      if (image.machine == Machine::Arm64 && (word & 0xfc000000) == 0x14000000) {
        uint64_t island = f.rva + ours.instructionOffsets[k] + (uint64_t(llvm::SignExtend64<26>(word)) << 2);
        ASSERT_LT(island, image.imageSize);
        EXPECT_FALSE(isCarriedCode(image, uint32_t(island))) << "instruction " << k << " differs";
        islandAt[ours.instructionOffsets[k]] = imageAddress + island;
        continue;
      }
      ASSERT_TRUE(image.machine == Machine::Arm64 && (word & 0x9f000000) == 0x90000000)
          << "instruction " << k << " differs";
      widened.push_back(uint32_t(k));
      ++k;
    }
    const FunctionBindings *fb = bindings.at(f.patchedRva);
    ASSERT_EQ(ours.references.size(), theirs.references.size() + widened.size());
    for (size_t i = 0, skip = 0; i < theirs.references.size(); ++i) {
      while (skip < widened.size() && ours.references[i + skip].instruction == widened[skip]) {
        // ADRP+ADD aimed at the base counterpart of what the ADR aimed at.
        const differ::CodeReference &adrp = ours.references[i + skip];
        EXPECT_EQ(adrp.target - baseAddress, fb->references[i].binding.address);
        ++skip;
      }
      const differ::CodeReference &o = ours.references[i + skip], &t = theirs.references[i];
      if (auto island = islandAt.find(o.offset); island != islandAt.end()) {
        SCOPED_TRACE("island for the access at +" + std::to_string(t.offset));
        checkBaseReachIsland(b, memory, island->second, imageAddress + f.rva + o.offset + 4, baseAddress,
                             imageAddress, t.target, **decoder);
        continue;
      }
      if (t.encoding == FixupKind::None) continue;  // follows from another reference
      SCOPED_TRACE("reference at +" + std::to_string(t.offset));
      uint64_t target = o.target;
      uint64_t imageRva = target - imageAddress;
      if (o.encoding == FixupKind::X64Rel8 && target >= imageAddress && imageRva < image.imageSize &&
          !isCarriedCode(image, uint32_t(imageRva))) {
        // A branch island: a jmp rel32 on to the real target.
        EXPECT_EQ(memory[imageRva], 0xe9);
        target = target + 5 + int64_t(int32_t(llvm::support::endian::read32le(&memory[imageRva + 1])));
        imageRva = target - imageAddress;
      }
      if (target >= imageAddress && imageRva < image.imageSize && veneers.count(uint32_t(imageRva))) {
        // A veneer: its 8-byte slot holds the real target.
        uint32_t slot = uint32_t(imageRva) + (image.machine == Machine::X64 ? 6 : 8);
        target = llvm::support::endian::read64le(&memory[slot]);
        imageRva = target - imageAddress;
      }
      const Binding &binding = fb->references[i].binding;
      if (target >= imageAddress && imageRva < image.imageSize) {
        auto g = byImageRva.upper_bound(uint32_t(imageRva));
        ASSERT_NE(g, byImageRva.begin());
        --g;
        if (imageRva < g->first + g->second->size) {  // code in the image: the same place of the same function
          EXPECT_EQ(g->second->patchedRva + (imageRva - g->first), t.target);
          continue;
        }
        if (binding.kind == Binding::Kind::Import) {  // a new import's stub or its slot: the symbol's address
          uint32_t slot = uint32_t(imageRva) + (importSlots.count(uint32_t(imageRva)) ? 0 : image.machine == Machine::X64 ? 6 : 8);
          ASSERT_TRUE(importSlots.count(slot));
          EXPECT_EQ(llvm::support::endian::read64le(&memory[slot]), importAddress(image, binding.symbol));
          continue;
        }
        // Data the image carries: its bytes are the patched build's (jump tables are rebuilt),
        // and every pointer in it reaches what the patched build's pointer reaches.
        if (binding.kind == Binding::Kind::JumpTable) continue;
        auto pointer = b.diff.dataPointers.upper_bound(t.target);
        bool inPointer = pointer != b.diff.dataPointers.begin() && std::prev(pointer)->first + 8 > t.target;
        llvm::ArrayRef<uint8_t> want = b.patched.bytesAt(t.target, 1);
        if (!want.empty() && !inPointer) EXPECT_EQ(memory[imageRva], want[0]);
        uint64_t copyStart = imageRva - (t.target - binding.address);
        for (auto p = b.diff.dataPointers.lower_bound(binding.address);
             p != b.diff.dataPointers.end() && p->first < binding.address + binding.size; ++p) {
          SCOPED_TRACE("pointer at patched rva " + std::to_string(p->first));
          uint64_t value = llvm::support::endian::read64le(&memory[copyStart + (p->first - binding.address)]);
          if (p->second.binding.kind == Binding::Kind::Import) {
            EXPECT_EQ(value, importAddress(image, p->second.binding.symbol));
            continue;
          }
          checkPointee(b, memory, byImageRva, baseAddress, imageAddress, value, p->second.target);
          ++pointersChecked;
        }
        continue;
      }
      // Into the base: the same named place, or the PLT entry of the same import, as the patched
      // build's reference reaches.
      uint64_t baseRva = target - baseAddress;
      std::string inBase = describe(b.base, baseRva), inPatched = describe(b.patched, t.target);
      if (inBase.empty()) inBase = describeStub(b.base, baseRva, **decoder);
      if (inPatched.empty()) inPatched = describeStub(b.patched, t.target, **decoder);
      EXPECT_FALSE(inPatched.empty()) << "nothing names patched rva " << t.target;
      EXPECT_EQ(inBase, inPatched) << "base rva " << baseRva << ", patched rva " << t.target;
    }
  }
}

TEST(Emitter, EveryScenarioBuildsAnImageThatIsThePatchedCode) {
  std::vector<Sample> all = samples();
  size_t built = 0;
  for (const auto &target : samplesManifest()["targets"]) {
    std::string name = target["name"];
    bool pe = name == "pe-x64" || name == "pe-a64";
    if (name.rfind("elf-", 0) != 0 && !pe) continue;
    for (auto [number, program] : scenarios()) {
      const Sample *base = find(all, name, program, "base");
      const Sample *patched = find(all, name, program, "fix" + std::to_string(number));
      if (!base || !patched) continue;
      SCOPED_TRACE(name + " scenario " + std::to_string(number));
      Built b = build(base->path, patched->path, 3);
      if (needsRestart(number)) {  // refused, with the reason
        EXPECT_FALSE(b.image.has_value());
        EXPECT_NE(b.error.find(number == 6 ? "HF210" : "HF213"), std::string::npos) << b.error;
        EXPECT_NE(b.error.find(number == 6 ? "g_limit" : "upd_session_total"), std::string::npos) << b.error;
        continue;
      }
      ASSERT_TRUE(b.image.has_value()) << b.error;
      const PatchImage &image = *b.image;
      ++built;
      EXPECT_EQ(image.sequence, 3u);
      EXPECT_EQ(image.baseline.sha256, b.base.identity.sha256);
      EXPECT_EQ(image.baseline.buildId, b.base.identity.buildId);
      // The records name exactly the changed functions.
      std::set<std::string> redirected, changed;
      for (const PatchRedirect &r : image.redirects) redirected.insert(normalized(r.name.value_or("?")));
      for (const Change &c : b.diff.changes)
        if (c.kind == ChangeKind::Changed) changed.insert(normalized(c.name.value_or("?")));
      EXPECT_EQ(redirected, changed);
      for (const PatchRedirect &r : image.redirects) {  // the function's bytes, or fill no function owns
        SCOPED_TRACE(r.name.value_or("?"));
        EXPECT_LE(r.overwrittenOffset, int32_t(r.entryOffset));
        EXPECT_GE(r.overwrittenOffset + int64_t(r.overwrittenSize), r.entryOffset + redirectSize(r.kind));
        EXPECT_LE(r.overwrittenOffset + int64_t(r.overwrittenSize) + r.paddingBefore, int64_t(r.expected.size()));
        for (int64_t at = r.overwrittenOffset; at < r.overwrittenOffset + int64_t(r.overwrittenSize); ++at)
          if (at < 0 || at >= int64_t(r.baseSize)) EXPECT_EQ(b.base.functionAt(r.baseRva + at), nullptr) << at;
      }
      // Readable by the LLVM tools, and its records round-trip.
      std::string file = tempDir() + "/image.hfpatch";
      writeFile(file, std::string(image.file.begin(), image.file.end()));
      if (pe) {
        CommandResult readobj = run({"llvm-readobj-19", "--coff-load-config", "--unwind", "--sections", "--file-headers",
                                     "--coff-basereloc", file});
        EXPECT_EQ(readobj.exitCode, 0) << readobj.err;
        EXPECT_EQ(readobj.err.find("warning"), std::string::npos) << readobj.err;
        EXPECT_EQ(readobj.out.find("HotPatchTableOffset: 0x0\n"), std::string::npos);
        EXPECT_NE(readobj.out.find("HotPatchTableOffset: 0x"), std::string::npos);
        // Every carried function that has unwind data in the patched build has a RUNTIME_FUNCTION.
        size_t shown = 0;
        for (size_t at = readobj.out.find("RuntimeFunction {"); at != std::string::npos;
             at = readobj.out.find("RuntimeFunction {", at + 1))
          ++shown;
        EXPECT_EQ(shown, unwindEntriesOf(b.patched, image));
      } else {
        CommandResult readelf = run({"llvm-readelf-19", "-a", "--wide", file});
        EXPECT_EQ(readelf.exitCode, 0) << readelf.err;
        EXPECT_EQ(readelf.err.find("warning"), std::string::npos) << readelf.err;
      }
      llvm::Expected<PatchImage> back = lift(readPatchImage(image.file));
      ASSERT_TRUE(bool(back)) << llvm::toString(back.takeError());
      for (const PatchSection &s : image.sections) {  // every section where the planner put it
        auto same = std::find_if(back->sections.begin(), back->sections.end(),
                                 [&](const PatchSection &t) { return t.name == s.name && t.rva == s.rva; });
        EXPECT_NE(same, back->sections.end()) << s.name << " at " << s.rva;
      }
      EXPECT_EQ(back->fixups.size(), image.fixups.size());
      EXPECT_EQ(back->redirects.size(), image.redirects.size());
      EXPECT_EQ(back->functions.size(), image.functions.size());
      EXPECT_EQ(layOut(*back), layOut(image));
      // Near the base (direct branches) and 512 MiB away (Arm64 branches through veneers).
      uint64_t baseAddress = 0x555555000000;
      checkInstructionByInstruction(b, baseAddress, baseAddress + 0x4000000);
      checkInstructionByInstruction(b, baseAddress, baseAddress + 0x20000000);
    }
  }
  EXPECT_GT(built, 70u);  // 4 ELF targets x 13, 2 PE targets x 12
  // Scenario 50: per target, two references into its table of 3 strings and 3 functions, at two
  // image addresses.
  EXPECT_GE(pointersChecked, 6u * 2 * 6 * 2);
}

// Scenarios 40-42 wherever they arise: a 4-byte function (x64) gets its jump over the fill after
// it, a loop whose head is the entry gets a quiescent redirect (the loaders then wait until no
// thread is inside it), and a short tail jump out of a carried function goes through an island.
// The live tests (loader_test, pe_apply_test) run all three.
TEST(Emitter, ShortFunctionsLoopHeadsAndShortTailJumpsAreRedirected) {
  std::vector<Sample> all = samples();
  std::set<std::string> spilled, quiescent, islands;
  for (const Sample &s : all) {
    if (s.program != "entry" || s.variant == "base") continue;
    SCOPED_TRACE(s.target + " " + s.variant);
    const Sample *base = find(all, s.target, "entry", "base");
    ASSERT_NE(base, nullptr);
    Built b = build(base->path, s.path);
    ASSERT_TRUE(b.image.has_value()) << b.error;
    ASSERT_EQ(b.image->redirects.size(), 1u);
    const PatchRedirect &r = b.image->redirects[0];
    const Function *f = b.base.functionAt(r.baseRva);
    ASSERT_NE(f, nullptr);
    auto decoder = differ::createInstructionDecoder(b.base.machine);
    ASSERT_TRUE(bool(decoder));
    differ::RelocationIndex none;
    uint64_t lowest = UINT64_MAX;  // the lowest offset the function's own branches jump to
    for (const differ::CodeReference &ref :
         (*decoder)->decode(b.base.bytesAt(f->range.rva, f->range.size), f->range.rva, none).references)
      if (ref.kind == differ::ReferenceKind::Branch && f->range.contains(ref.target))
        lowest = std::min(lowest, ref.target - f->range.rva);
    EXPECT_EQ(r.quiescent, lowest < r.entryOffset + redirectSize(r.kind));
    if (s.variant == "fix41" && r.quiescent) quiescent.insert(s.target);
    if (s.variant == "fix40" && r.overwrittenOffset + int64_t(r.overwrittenSize) > int64_t(r.baseSize)) {
      EXPECT_LT(r.baseSize, 5u);
      spilled.insert(s.target);
    }
    for (const PatchFixup &x : b.image->fixups)  // stubs and veneers jump through slots: an E9 is an island
      if (s.variant == "fix42" && x.kind == FixupKind::X64Rel32 && x.fieldOffset == 1 && !isCarriedCode(*b.image, x.site))
        islands.insert(s.target);
  }
  EXPECT_EQ(spilled, (std::set<std::string>{"elf-x64-clang", "elf-x64-gcc", "mingw-x64", "pe-x64"}));
  EXPECT_EQ(quiescent, (std::set<std::string>{"elf-a64-clang", "elf-x64-clang", "pe-a64", "pe-x64"}));
  EXPECT_EQ(islands, (std::set<std::string>{"elf-x64-clang", "elf-x64-gcc", "mingw-x64"}));
}

// X64ShortJump, live. gcc's entry_triple (4 bytes, 12 bytes of NOPs after it, 11 before it): the
// diff hands the emitter that fill, and the emitter works from the diff alone. With some of the
// fill taken out of the diff, the redirect becomes a 2-byte jump to an E9 in the fill before the
// entry, or in the fill further after it. Applied with ptrace to the running base, each must
// switch the process to the patched values and back.
TEST(Emitter, ShortJumpIntoNearbyFillAppliesLive) {
  std::string basePath = samplePath("elf-x64-gcc", "entry", "base");
  std::string patchedPath = samplePath("elf-x64-gcc", "entry", "fix40");
  struct Case {
    std::vector<std::pair<int64_t, int64_t>> owned;  // [begin, end) relative to the entry, sorted
    int32_t jumpOffset;
  };
  for (const Case &c : {Case{{{4, 16}}, -5}, Case{{{-11, 0}, {4, 6}}, 6}}) {
    SCOPED_TRACE("E9 at " + std::to_string(c.jumpOffset));
    Built b{loadImage(basePath), loadImage(patchedPath), {}, std::nullopt, {}};
    llvm::Expected<Diff> diff = diffImages(b.base, b.patched);
    ASSERT_TRUE(bool(diff)) << llvm::toString(diff.takeError());
    b.diff = std::move(*diff);
    FunctionBindings *triple = nullptr;
    for (FunctionBindings &fb : b.diff.bindings)
      if (fb.base && b.base.functions[*fb.base].name == "entry_triple") triple = &fb;
    ASSERT_NE(triple, nullptr);
    const AddressRange &range = b.base.functions[*triple->base].range;
    ASSERT_EQ(range.size, 4u);
    uint64_t entry = range.rva;
    std::set<std::pair<uint64_t, uint64_t>> runs;
    for (const AddressRange &run : triple->baseFill) runs.insert({run.rva, run.size});
    EXPECT_TRUE(runs.count({entry - 11, 11})) << "the NOPs before the entry";
    EXPECT_TRUE(runs.count({entry + 4, 12})) << "the NOPs after the function";
    std::vector<AddressRange> fill;  // the diff's fill without the owned bytes
    for (const AddressRange &run : triple->baseFill) {
      uint64_t at = run.rva;
      for (auto [begin, end] : c.owned) {
        if (entry + end <= at || entry + begin >= run.end()) continue;
        if (entry + begin > at) fill.push_back({at, entry + begin - at});
        at = std::max(at, entry + end);
      }
      if (at < run.end()) fill.push_back({at, run.end() - at});
    }
    triple->baseFill = fill;
    llvm::Expected<PatchImage> image = buildPatchImage(b.base, b.patched, b.diff);
    ASSERT_TRUE(bool(image)) << llvm::toString(image.takeError());
    ASSERT_EQ(image->redirects.size(), 1u);
    EXPECT_EQ(image->redirects[0].kind, RedirectKind::X64ShortJump);
    EXPECT_EQ(image->redirects[0].jumpOffset, c.jumpOffset);

    std::string name = "short-jump" + std::to_string(c.jumpOffset), file = tempDir() + "/" + name + ".hfpatch";
    writeFile(file, std::string(image->file.begin(), image->file.end()));
    std::string key = tempDir() + "/" + name + "-key", unit = tempDir() + "/" + name + ".hfu";
    ASSERT_EQ(hotforge({"keygen", "-o", key}).exitCode, 0);
    CommandResult packed = hotforge({"pack", file, "-o", unit, "--key", key + ".pem"});
    ASSERT_EQ(packed.exitCode, 0) << packed.err;
    Serving serving({basePath, "serve"}, {}, tempDir() + "/" + name + ".err");
    ASSERT_EQ(serving.round(), expectedOutput("entry", "base"));
    CommandResult applied = hotforge({"apply", "--pid", std::to_string(serving.pid()), unit, "--pubkey", key + ".pub.pem"});
    ASSERT_EQ(applied.exitCode, 0) << applied.err;
    EXPECT_EQ(serving.round(), expectedOutput("entry", "fix40"));
    ASSERT_EQ(hotforge({"revert", "--pid", std::to_string(serving.pid())}).exitCode, 0);
    EXPECT_EQ(serving.round(), expectedOutput("entry", "base"));
  }
}

// A library of two hand-written Arm64 functions on variables `seen` and `limit`, as a base and a
// fix: `peek` is the same in both, `get` adds in the base and subtracts in the fix. `body` is their
// code (NAME, VAR and OP stand for the function, its variable and the operation); each starts
// `pad` bytes into a page, the base's at `basePad`, the fix's at `fixPad`.
Built buildAsmPair(const std::vector<std::string> &compiler, const std::string &tag, const std::string &prelude,
                   const std::string &body, const std::string &basePad, const std::string &fixPad) {
  std::string dir = tempDir();
  std::vector<std::string> built;
  for (auto [pad, op] : {std::pair{basePad, "add"}, std::pair{fixPad, "sub"}}) {
    std::string source = dir + "/" + tag + "-" + op + ".c", out = dir + "/lib" + tag + "-" + op + ".so";
    auto instance = [&](const char *name, const char *var, const char *operation) {
      std::string text = ".balign 4096\n.skip PAD\n.globl NAME\n.type NAME, %function\nNAME:\n" + body +
                         "ret\n.size NAME, .-NAME\n";
      for (auto [from, to] : {std::pair<std::string, std::string>{"PAD", pad}, {"NAME", name}, {"VAR", var},
                              {"OP", operation}})
        for (size_t at; (at = text.find(from)) != std::string::npos;) text.replace(at, from.size(), to);
      std::string quoted;
      for (char c : text) quoted += c == '\n' ? std::string("\\n\"\n\"") : std::string(1, c);
      return "\"" + quoted + "\"";
    };
    writeFile(source, prelude + "__attribute__((visibility(\"hidden\"))) int seen = 1, limit = 2;\n__asm__(\".text\\n\"\n" +
                          instance("peek", "seen", "add") + instance("get", "limit", op) + ");\n");
    std::vector<std::string> argv = compiler;
    for (const std::string &arg : {std::string("-O2"), std::string("-fPIC"), std::string("-shared"), source,
                                   std::string("-o"), out})
      argv.push_back(arg);
    CommandResult r = run(argv);
    EXPECT_EQ(r.exitCode, 0) << r.err;
    built.push_back(out);
  }
  return build(built[0], built[1]);
}

std::vector<uint32_t> wordsOf(const Image &image, std::string_view name) {
  std::vector<uint32_t> out;
  for (const Function &f : image.functions)
    if (f.name == name)
      for (uint64_t at = 0; at + 4 <= f.range.size; at += 4)
        out.push_back(llvm::support::endian::read32le(image.bytesAt(f.range.rva + at, 4).data()));
  return out;
}

// Only `get` changed, nothing needs a restart, and the image is the patched `get`.
void expectOnlyGetCarried(const Built &b) {
  std::set<std::string> changed;
  for (const Change &c : b.diff.changes) changed.insert(c.name.value_or("?") + " " + c.rule);
  EXPECT_EQ(changed, std::set<std::string>{"get HF100"});
  EXPECT_FALSE(b.diff.needsRestart());
  ASSERT_TRUE(b.image.has_value()) << b.error;
  ASSERT_EQ(b.image->functions.size(), 1u);
  uint64_t baseAddress = 0x555555000000;
  checkInstructionByInstruction(b, baseAddress, baseAddress + 0x20000000);
}

// GNU ld's fix for the Cortex-A53 erratum 843419 (on by default in Debian's arm64 toolchain) for an
// ADRP at page offset 0xff8 or 0xffc: when the page lies within 1 MiB the ADRP becomes an ADR of the
// page (Debian's arm64 libgobject, libxslt, libunbound, libzstd); otherwise the load that uses it
// moves to a veneer that branches back (libgio). Here the fix moves `peek` so that its ADRP lands
// there: it is unchanged. `get` changed and got the same treatment: the image carries the ADRP
// again (an ADR cannot reach the base from the image) and the load in place of the branch (the
// veneer's way back leads into the patched build). lld and link.exe patch the erratum their own
// way, so only GNU ld builds this case.
TEST(Emitter, Arm64ErratumFixesOfGnuLdAreTheCodeTheyReplaced) {
  constexpr uint32_t kOpMask = 0x9f000000, kAdr = 0x10000000, kAdrp = 0x90000000;
  constexpr uint32_t kBranchMask = 0xfc000000, kBranch = 0x14000000;
  auto hasBranch = [&](const std::vector<uint32_t> &code) {
    return std::any_of(code.begin(), code.end(), [&](uint32_t w) { return (w & kBranchMask) == kBranch; });
  };
  // Near: the variables follow the code. Far: 3 MiB of constants between them.
  for (std::string layout : {"near", "far"}) {
    SCOPED_TRACE(layout);
    Built b = buildAsmPair({"aarch64-linux-gnu-gcc", "-Wl,--fix-cortex-a53-843419"}, "erratum-" + layout,
                           layout == "far" ? "const char far_away[3 << 20] = {1};\n" : "",
                           "adrp x1, VAR\nldr w2, [x0]\nldr w0, [x1, :lo12:VAR]\nOP w0, w0, w2\n", "0x10", "0xff8");
    for (const char *name : {"peek", "get"}) {
      std::vector<uint32_t> base = wordsOf(b.base, name), patched = wordsOf(b.patched, name);
      ASSERT_EQ(base.size(), 5u);
      ASSERT_EQ(patched.size(), 5u);
      EXPECT_EQ(base[0] & kOpMask, kAdrp) << name;
      EXPECT_FALSE(hasBranch(base)) << name;
      if (layout == "near") EXPECT_EQ(patched[0] & kOpMask, kAdr) << name << ": the linker should have written an ADR";
      else EXPECT_TRUE(hasBranch(patched)) << name << ": the linker should have moved the load to a veneer";
    }
    expectOnlyGetCarried(b);
    ASSERT_TRUE(b.image.has_value());
    std::vector<uint8_t> memory = layOut(*b.image);
    std::vector<uint32_t> carried;
    for (uint32_t at = 0; at < 20; at += 4)
      carried.push_back(llvm::support::endian::read32le(&memory[b.image->functions[0].rva + at]));
    EXPECT_EQ(carried[0] & kOpMask, kAdrp);
    EXPECT_FALSE(hasBranch(carried));
  }
}

// A page spilled to the stack and stored again before any reload (gcc does this, as in
// _httpTLSStart of Debian's arm64 libcups2): the first ADRP has no use of its own. It stands for
// the use its reloads have, so carried code that holds it binds to the base, on both linkers.
TEST(Emitter, Arm64PageSpilledAndStoredAgainBindsLikeItsReloads) {
  for (std::vector<std::string> compiler :
       {std::vector<std::string>{"aarch64-linux-gnu-gcc"},
        std::vector<std::string>{"clang-19", "--target=aarch64-linux-gnu", "-fuse-ld=lld"}}) {
    SCOPED_TRACE(compiler[0]);
    Built b = buildAsmPair(compiler, "spill-" + compiler[0], "",
                           "sub sp, sp, #16\nadrp x1, VAR\nstr x1, [sp, #8]\nadrp x2, VAR\nstr x2, [sp, #8]\n"
                           "ldr x3, [sp, #8]\nldr w0, [x3, :lo12:VAR]\nOP w0, w0, w0\nadd sp, sp, #16\n",
                           "0x10", "0x20");
    expectOnlyGetCarried(b);
  }
}

TEST(Emitter, ImagesAreDeterministic) {
  std::vector<Sample> all = samples();
  for (const char *target : {"elf-x64-gcc", "elf-a64-clang", "pe-x64", "pe-a64"}) {
    const Sample *base = find(all, target, "core", "base"), *fix = find(all, target, "core", "fix9");
    ASSERT_TRUE(base && fix);
    Built one = build(base->path, fix->path), two = build(base->path, fix->path);
    ASSERT_TRUE(one.image && two.image) << one.error << two.error;
    EXPECT_EQ(one.image->file, two.image->file);
  }
}

// Scenario 20's new import, as each container names it and as the records carry it; a reader
// refuses a fixup that names an import the records do not have, and no fixup to an import is
// applied before the import is resolved.
TEST(Emitter, NewImportsAreNamedInTheImageAndResolvedBeforeTheyAreApplied) {
  std::vector<Sample> all = samples();
  for (const char *target : {"elf-x64-gcc", "elf-a64-gcc", "pe-x64", "pe-a64"}) {
    SCOPED_TRACE(target);
    const Sample *base = find(all, target, "core", "base"), *fix = find(all, target, "core", "fix20");
    ASSERT_TRUE(base && fix);
    Built b = build(base->path, fix->path);
    ASSERT_TRUE(b.image) << b.error;
    bool pe = b.image->format == Format::Pe;
    ASSERT_EQ(b.image->imports.size(), 1u);
    const PatchImport &import = b.image->imports[0];
    EXPECT_EQ(import.symbol, pe ? "hfplat_strspn" : "strspn");
    EXPECT_EQ(import.library, pe ? "hfplat.dll" : "");
    EXPECT_EQ(import.version, pe ? "" : b.image->machine == Machine::X64 ? "GLIBC_2.2.5" : "GLIBC_2.17");
    std::string path = tempDir() + "/imports-" + target;
    writeFile(path, std::string(b.image->file.begin(), b.image->file.end()));
    CommandResult tool = pe ? run({"llvm-readobj-19", "--coff-imports", path}) : run({"llvm-readelf-19", "--syms", "--wide", path});
    EXPECT_EQ(tool.err, "");
    EXPECT_NE(tool.out.find(pe ? "Symbol: hfplat_strspn" : "UND " + import.symbol + "@" + import.version), std::string::npos)
        << tool.out;
    llvm::Expected<PatchImage> back = lift(readPatchImage(b.image->file));
    ASSERT_TRUE(bool(back)) << llvm::toString(back.takeError());
    EXPECT_EQ(back->imports, b.image->imports);
    std::vector<uint8_t> memory = layOut(*back);
    llvm::Error unresolved = lift(applyFixups(*back, 0x7f0000000000, 0x7f0010000000, {}, memory));
    EXPECT_NE(llvm::toString(std::move(unresolved)).find("needs import 0, which is not resolved"), std::string::npos);
    PatchImage crafted = *back;
    for (PatchFixup &f : crafted.fixups)
      if (f.space == FixupSpace::Import) f.target = 1;
    PatchImage decoded;
    llvm::Error refused = lift(decodeRecords(encodeRecords(crafted), decoded));
    std::string message = llvm::toString(std::move(refused));
    EXPECT_NE(message.find("names import 1 of 1"), std::string::npos) << message;
  }
}

TEST(Emitter, BuildCommandRefusesRestartsAndWritesNothing) {
  std::vector<Sample> all = samples();
  const Sample *base = find(all, "elf-x64-gcc", "initval", "base"), *fix = find(all, "elf-x64-gcc", "initval", "fix6");
  ASSERT_TRUE(base && fix);
  std::string out = tempDir() + "/refused.hfpatch";
  CommandResult r = run({hotforgeBinary(), "build", base->path, fix->path, "-o", out});
  EXPECT_EQ(r.exitCode, 3) << r.err;
  EXPECT_NE(r.err.find("g_limit"), std::string::npos) << r.err;
  EXPECT_TRUE(readFile(out).empty());
  const Sample *core = find(all, "elf-x64-gcc", "core", "base"), *fix1 = find(all, "elf-x64-gcc", "core", "fix1");
  r = run({hotforgeBinary(), "build", core->path, fix1->path, "-o", out});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  CommandResult inspect = run({hotforgeBinary(), "inspect", out, "--json"});
  ASSERT_EQ(inspect.exitCode, 0) << inspect.err;
  nlohmann::json doc = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(doc["schema"], kPatchImageSchema);
  EXPECT_EQ(doc["redirects"][0]["name"], "table_get");
  // The same for a PE base: a DLL the command writes and inspect reads back.
  const Sample *dll = find(all, "pe-a64", "core", "base"), *dllFix = find(all, "pe-a64", "core", "fix1");
  ASSERT_TRUE(dll && dllFix);
  r = run({hotforgeBinary(), "build", dll->path, dllFix->path, "-o", out});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(readFile(out).substr(0, 2), "MZ");
  inspect = run({hotforgeBinary(), "inspect", out, "--json"});
  ASSERT_EQ(inspect.exitCode, 0) << inspect.err;
  doc = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(doc["format"], "pe");
  EXPECT_EQ(doc["machine"], "arm64");
  EXPECT_EQ(doc["redirects"][0]["name"], "table_get");
}

// Two builds with no change: `release` calls the pair unchanged, so `build` exits 0 (no error),
// says so, and writes no image.
TEST(Emitter, BuildCommandOnTwoBuildsWithNoChangeExitsZeroAndWritesNothing) {
  std::vector<Sample> all = samples();
  for (const char *target : {"elf-x64-gcc", "pe-a64"}) {
    SCOPED_TRACE(target);
    const Sample *base = find(all, target, "core", "base");
    ASSERT_TRUE(base);
    std::string out = tempDir() + "/unchanged.hfpatch";
    CommandResult r = run({hotforgeBinary(), "build", base->path, base->path, "-o", out});
    EXPECT_EQ(r.exitCode, 0) << r.err;
    EXPECT_EQ(r.out, out + ": not written: no change between the two builds, nothing to patch\n");
    EXPECT_EQ(r.err, "");
    EXPECT_FALSE(std::filesystem::exists(out));
    r = run({hotforgeBinary(), "build", base->path, base->path, "-o", out, "--json"});
    EXPECT_EQ(r.exitCode, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json({{"unchanged", true}}));
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

// A refusal lists each reason once: copied data whose every pointer fails to bind is named once.
TEST(Emitter, ARefusalListsEachReasonOnce) {
  std::vector<Sample> all = samples();
  for (const char *target : {"elf-x64-gcc", "elf-a64-clang", "pe-x64", "pe-a64"}) {
    SCOPED_TRACE(target);
    const Sample *base = find(all, target, "upd", "base"), *fix = find(all, target, "upd", "fix50");
    ASSERT_TRUE(base && fix);
    Built b = build(base->path, fix->path);
    ASSERT_TRUE(b.image) << b.error;
    // As if every pointer in the copied tables named a symbol the images cannot bind yet.
    size_t pointers = 0;
    for (auto &[slot, pointer] : b.diff.dataPointers)
      if (pointer.binding.kind == Binding::Kind::Base || pointer.binding.kind == Binding::Kind::Function) {
        pointer.binding = {Binding::Kind::Unbound, slot, 0, "`free` is imported, and images bind no imports in data yet"};
        ++pointers;
      }
    EXPECT_GE(pointers, 3u);  // the string table and the function table
    llvm::Expected<PatchImage> refused = buildPatchImage(b.base, b.patched, b.diff, {});
    ASSERT_FALSE(bool(refused));
    llvm::Error error = refused.takeError();
    std::optional<BuildRefusal> refusal = takeRefusal(error);
    ASSERT_TRUE(refusal) << llvm::toString(std::move(error));
    EXPECT_FALSE(refusal->needsRestart);
    std::set<std::string> reasons;
    for (const Refusal &r : refusal->refusals) {
      EXPECT_TRUE(reasons.insert(r.reason).second) << "listed twice: " << r.reason;
      EXPECT_EQ(r.rule, "HF403") << r.reason;
      EXPECT_NE(r.reason.find("holds a pointer that cannot be bound: `free` is imported,"), std::string::npos) << r.reason;
    }
    EXPECT_GE(reasons.size(), 1u);
    EXPECT_LT(reasons.size(), pointers);
    EXPECT_NE(refusal->message().find("\n  HF403 the data at patched rva"), std::string::npos) << refusal->message();
  }
}

// Scenario 52 on gcc Arm64: upd_band_limit forms &upd_weights (ADRP+ADD), adds the index in a
// register and loads at +10, in the new upd_bands. The differ copies the unchanged upd_weights
// with the new table, so the offset lands in the copy. Had the anchor stayed in the base (a
// writable one cannot be copied), the access would go through an island to the copy; after an
// index no island can carry it, and the build refuses (HF415) instead of reading the base.
TEST(Emitter, AnAnchorOfTheBaseReachingCopiedDataIsCopiedIslandedOrRefused) {
  Built b = build(samplePath("elf-a64-gcc", "upd", "base"), samplePath("elf-a64-gcc", "upd", "fix52"));
  ASSERT_TRUE(b.image) << b.error;
  FunctionBindings *fb = nullptr;
  for (FunctionBindings &candidate : b.diff.bindings)
    if (b.patched.functions[candidate.patched].name == std::optional<std::string>("upd_band_limit")) fb = &candidate;
  ASSERT_NE(fb, nullptr);
  auto indexed = std::find_if(fb->references.begin(), fb->references.end(),
                              [](const BoundReference &r) { return r.indexed && r.offsetFrom; });
  ASSERT_NE(indexed, fb->references.end()) << "the load after the index add is followed";
  EXPECT_EQ(indexed->target - indexed->offsetFrom, 10u);
  std::vector<BoundReference *> anchor;
  for (BoundReference &r : fb->references)
    if (r.field.kind != FixupKind::None && r.target == indexed->offsetFrom) anchor.push_back(&r);
  ASSERT_EQ(anchor.size(), 2u) << "its ADRP and its ADD";
  for (const BoundReference *r : anchor) {
    EXPECT_EQ(r->binding.kind, Binding::Kind::Constant) << "the unchanged anchor is copied with the new table";
    EXPECT_GE(r->binding.address + r->binding.size, indexed->binding.address + indexed->binding.size);
  }

  // As if the anchor were a variable the base keeps, and the new table new data.
  const DataObject *weights = nullptr;
  for (const DataObject &d : b.base.dataObjects)
    if (d.name == "upd_weights") weights = &d;
  ASSERT_NE(weights, nullptr);
  for (BoundReference *r : anchor) r->binding = {Binding::Kind::Base, weights->range.rva, 0, {}};
  indexed->binding.kind = Binding::Kind::NewData;
  llvm::Expected<PatchImage> refused = buildPatchImage(b.base, b.patched, b.diff, {});
  ASSERT_FALSE(bool(refused));
  llvm::Error error = refused.takeError();
  std::optional<BuildRefusal> refusal = takeRefusal(error);
  ASSERT_TRUE(refusal) << llvm::toString(std::move(error));
  ASSERT_EQ(refusal->refusals.size(), 1u);
  EXPECT_EQ(refusal->refusals[0].rule, "HF415") << refusal->refusals[0].reason;

  // Without the index, the load goes through an island that forms the copy's address.
  indexed->indexed = false;
  llvm::Expected<PatchImage> islanded = buildPatchImage(b.base, b.patched, b.diff, {});
  ASSERT_TRUE(bool(islanded)) << llvm::toString(islanded.takeError());
  auto function = std::find_if(islanded->functions.begin(), islanded->functions.end(),
                               [](const PatchFunction &f) { return f.name == std::optional<std::string>("upd_band_limit"); });
  ASSERT_NE(function, islanded->functions.end());
  uint32_t load = function->rva + indexed->offset;
  const PatchSection &text = islanded->sections.front();
  uint32_t word = llvm::support::endian::read32le(&text.bytes[load - text.rva]);
  EXPECT_EQ(word & 0xfc000000u, 0x14000000u) << "the load became a B to its island";
  bool islandFormsTheCopy = std::any_of(islanded->fixups.begin(), islanded->fixups.end(), [&](const PatchFixup &f) {
    return f.kind == FixupKind::A64AdrPage21 && f.space == FixupSpace::Image && f.site >= function->rva + function->size;
  });
  EXPECT_TRUE(islandFormsTheCopy);
}

// `build --json` gives every refusal as data, with its rule id, on real refused samples: the
// diff's restarts (scenarios 6 and 31, every target) and the emitter's own (scenario 11 on mingw:
// its exception handler's data cannot be re-aimed). Exit 3, no image.
TEST(Emitter, BuildCommandGivesRefusalsWithRuleIds) {
  std::vector<Sample> all = samples();
  struct Case {
    std::string target;
    const char *program, *variant, *rule, *name;
  };
  std::vector<Case> cases;
  for (const auto &target : samplesManifest()["targets"]) {
    cases.push_back({target["name"], "initval", "fix6", "HF210", "g_limit"});
    cases.push_back({target["name"], "upd", "fix31", "HF213", nullptr});
  }
  cases.push_back({"mingw-x64", "exc", "fix11", "HF412", nullptr});
  for (const Case &c : cases) {
    SCOPED_TRACE(c.target + " " + c.program + "." + c.variant);
    const Sample *base = find(all, c.target, c.program, "base"), *fix = find(all, c.target, c.program, c.variant);
    ASSERT_TRUE(base && fix);
    std::string out = tempDir() + "/refused-with-rules.hfpatch";
    CommandResult r = run({hotforgeBinary(), "build", base->path, fix->path, "-o", out, "--json"});
    EXPECT_EQ(r.exitCode, 3) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
    nlohmann::json doc = nlohmann::json::parse(r.out);
    ASSERT_TRUE(doc["refusals"].is_array() && !doc["refusals"].empty()) << r.out;
    bool found = false;
    for (const nlohmann::json &refusal : doc["refusals"]) {
      EXPECT_TRUE(refusal["rule"].is_string() && refusal["reason"].is_string()) << refusal;
      // The text on stderr lists the same refusal with its rule.
      EXPECT_NE(r.err.find(refusal["rule"].get<std::string>() + " " + refusal["reason"].get<std::string>()),
                std::string::npos) << r.err;
      found = found || (refusal["rule"] == c.rule && (!c.name || refusal["name"] == c.name));
    }
    EXPECT_TRUE(found) << r.out;
  }
}

// A PE32+ image read by hand, as a loader would: headers, sections, bytes at an RVA.
struct PeView {
  struct Section {
    std::string name;
    uint32_t virtualSize = 0, rva = 0, rawSize = 0, rawAt = 0, characteristics = 0;
  };
  llvm::ArrayRef<uint8_t> file;
  uint16_t machine = 0, characteristics = 0, dllCharacteristics = 0;
  uint32_t timeDateStamp = 0, entry = 0, sectionAlignment = 0, fileAlignment = 0, sizeOfImage = 0;
  uint64_t imageBase = 0;
  std::vector<std::pair<uint32_t, uint32_t>> directories;
  std::vector<Section> sections;

  static std::optional<PeView> parse(llvm::ArrayRef<uint8_t> file) {
    using llvm::support::endian::read16le, llvm::support::endian::read32le, llvm::support::endian::read64le;
    PeView v;
    v.file = file;
    if (file.size() < 0x40 || file[0] != 'M' || file[1] != 'Z') return std::nullopt;
    uint32_t pe = read32le(&file[0x3c]);
    if (pe + 24 + 240 > file.size() || std::memcmp(&file[pe], "PE\0\0", 4) != 0) return std::nullopt;
    const uint8_t *coff = &file[pe + 4], *opt = coff + 20;
    v.machine = read16le(coff);
    uint16_t sections = read16le(coff + 2);
    v.timeDateStamp = read32le(coff + 4);
    uint32_t strings = read32le(coff + 8) + read32le(coff + 12) * 18;
    v.characteristics = read16le(coff + 18);
    if (read16le(opt) != 0x20b) return std::nullopt;
    v.entry = read32le(opt + 16);
    v.imageBase = read64le(opt + 24);
    v.sectionAlignment = read32le(opt + 32);
    v.fileAlignment = read32le(opt + 36);
    v.sizeOfImage = read32le(opt + 56);
    v.dllCharacteristics = read16le(opt + 70);
    for (uint32_t d = 0; d < read32le(opt + 108); ++d) v.directories.push_back({read32le(opt + 112 + 8 * d), read32le(opt + 116 + 8 * d)});
    const uint8_t *h = opt + read16le(coff + 16);
    for (uint16_t i = 0; i < sections; ++i, h += 40) {
      Section s;
      s.name.assign(reinterpret_cast<const char *>(h), strnlen(reinterpret_cast<const char *>(h), 8));
      if (s.name[0] == '/') s.name = reinterpret_cast<const char *>(&file[strings + std::stoul(s.name.substr(1))]);
      s.virtualSize = read32le(h + 8);
      s.rva = read32le(h + 12);
      s.rawSize = read32le(h + 16);
      s.rawAt = read32le(h + 20);
      s.characteristics = read32le(h + 36);
      v.sections.push_back(s);
    }
    return v;
  }
  const Section *sectionAt(uint32_t rva) const {
    for (const Section &s : sections)
      if (rva >= s.rva && rva - s.rva < s.virtualSize) return &s;
    return nullptr;
  }
  uint32_t u32(uint32_t rva) const {
    const Section *s = sectionAt(rva);
    if (!s || rva - s->rva + 4 > s->rawSize) return 0xdeadbeef;
    return llvm::support::endian::read32le(&file[s->rawAt + rva - s->rva]);
  }
  llvm::ArrayRef<uint8_t> bytes(uint32_t rva, uint32_t size) const {
    const Section *s = sectionAt(rva);
    if (!s || rva - s->rva + size > s->rawSize) return {};
    return file.slice(s->rawAt + rva - s->rva, size);
  }
};

struct HotPatchTableEntry {
  uint32_t header, source, target, extra;
};

// IMAGE_HOT_PATCH_INFO, its one base and the patch table, checked for shape on the way.
struct HotPatchView {
  uint32_t infoRva = 0, version = 0, size = 0, sequence = 0, baseCount = 0, extraPatchSize = 0;
  uint32_t baseSequence = 0, baseFlags = 0, timeDateStamp = 0, checkSum = 0, hashesSize = 0;
  std::vector<uint8_t> sha256, sha1;
  std::vector<HotPatchTableEntry> entries;
  std::vector<uint32_t> headers;
};

HotPatchView readHotPatchInfo(const PeView &pe) {
  HotPatchView h;
  EXPECT_GT(pe.directories.size(), 10u);
  uint32_t loadConfig = pe.directories[10].first;
  EXPECT_NE(loadConfig, 0u);
  EXPECT_GE(pe.u32(loadConfig), 0xF4u);  // Size covers HotPatchTableOffset
  h.infoRva = pe.u32(loadConfig + 0xF0);
  uint32_t i = h.infoRva;
  h.version = pe.u32(i);
  h.size = pe.u32(i + 4);
  h.sequence = pe.u32(i + 8);
  uint32_t baseList = pe.u32(i + 12);
  h.baseCount = pe.u32(i + 16);
  h.extraPatchSize = pe.u32(i + 24);
  uint32_t base = i + pe.u32(i + baseList);
  h.baseSequence = pe.u32(base);
  h.baseFlags = pe.u32(base + 4);
  h.timeDateStamp = pe.u32(base + 8);
  h.checkSum = pe.u32(base + 12);
  uint32_t hashes = i + pe.u32(base + 16);
  h.hashesSize = pe.u32(base + 20);
  llvm::ArrayRef<uint8_t> digest = pe.bytes(hashes, 52);
  if (digest.size() == 52) {
    h.sha256.assign(digest.begin(), digest.begin() + 32);
    h.sha1.assign(digest.begin() + 32, digest.end());
  }
  uint32_t at = i + pe.u32(base + 24);
  for (int guard = 0; guard < 100; ++guard) {
    uint32_t header = pe.u32(at);
    at += 4;
    if (header == 0) break;
    h.headers.push_back(header);
    for (uint32_t n = 0; n < (header & 0xfff); ++n, at += 4 * (2 + h.extraPatchSize))
      h.entries.push_back({header & ~0xfffu, pe.u32(at), pe.u32(at + 4), pe.u32(at + 8)});
  }
  EXPECT_LE(at, i + h.size) << "the patch table runs past IMAGE_HOT_PATCH_INFO.Size";
  return h;
}

TEST(Emitter, PeImagesCarryTheLoadConfigAndHotPatchInfo) {
  std::vector<Sample> all = samples();
  size_t checked = 0;
  for (const char *target : {"pe-x64", "pe-a64"}) {
    for (auto [number, program] : scenarios()) {
      const Sample *base = find(all, target, program, "base");
      const Sample *patched = find(all, target, program, "fix" + std::to_string(number));
      if (!base || !patched || needsRestart(number)) continue;
      SCOPED_TRACE(std::string(target) + " scenario " + std::to_string(number));
      Built b = build(base->path, patched->path, 7);
      ASSERT_TRUE(b.image.has_value()) << b.error;
      const PatchImage &image = *b.image;
      std::optional<PeView> pe = PeView::parse(image.file);
      ASSERT_TRUE(pe.has_value());
      ++checked;
      bool x64 = image.machine == Machine::X64;
      EXPECT_EQ(pe->machine, x64 ? 0x8664 : 0xaa64);
      EXPECT_TRUE(pe->characteristics & 0x2000);  // IMAGE_FILE_DLL
      EXPECT_EQ(pe->entry, 0u);
      EXPECT_EQ(pe->sectionAlignment, 0x1000u);
      EXPECT_EQ(pe->fileAlignment, 0x200u);
      EXPECT_TRUE(pe->dllCharacteristics & 0x100);  // NX compatible
      EXPECT_EQ(pe->sizeOfImage, image.imageSize);
      EXPECT_EQ(image.sizes.file, image.file.size());
      // The planner's sections where it put them (.text first, at 0x1000), back to back.
      ASSERT_FALSE(pe->sections.empty());
      EXPECT_EQ(pe->sections[0].name, ".text");
      EXPECT_EQ(pe->sections[0].rva, 0x1000u);
      for (size_t i = 0; i + 1 < pe->sections.size(); ++i)
        EXPECT_EQ((pe->sections[i].rva + pe->sections[i].virtualSize + 0xfffu) & ~0xfffu, pe->sections[i + 1].rva);
      for (const PatchSection &s : image.sections) {
        const PeView::Section *h = pe->sectionAt(s.rva);
        ASSERT_NE(h, nullptr) << s.name;
        EXPECT_EQ(h->name, s.name);
        EXPECT_EQ(h->rva, s.rva);
      }
      EXPECT_EQ(pe->sections.back().name, ".hotpatch");

      HotPatchView h = readHotPatchInfo(*pe);
      const PeView::Section *holder = pe->sectionAt(h.infoRva);
      ASSERT_NE(holder, nullptr);
      EXPECT_EQ(holder->name, ".rdata");
      EXPECT_EQ(h.version, 3u);
      EXPECT_EQ(h.sequence, 7u);
      EXPECT_EQ(h.baseCount, 1u);
      EXPECT_EQ(h.extraPatchSize, 1u);
      EXPECT_EQ(h.baseSequence, 7u);
      EXPECT_EQ(h.baseFlags, 0x2u | (x64 ? 0x10u : 0x8u));  // CAN_ROLL_BACK | machine
      EXPECT_EQ(h.timeDateStamp, b.base.identity.timeDateStamp);
      EXPECT_EQ(h.checkSum, b.base.identity.checkSum);
      EXPECT_NE(h.checkSum, 0u);
      EXPECT_EQ(h.hashesSize, 52u);
      EXPECT_EQ(h.sha256, std::vector<uint8_t>(b.base.identity.sha256.begin(), b.base.identity.sha256.end()));
      std::array<uint8_t, 20> sha1 = llvm::SHA1::hash(b.base.fileBytes());
      EXPECT_EQ(h.sha1, std::vector<uint8_t>(sha1.begin(), sha1.end()));

      // One FUNCTION entry per redirect: base RVA, patch RVA, the base's first four bytes.
      std::map<uint32_t, HotPatchTableEntry> functions;
      std::vector<HotPatchTableEntry> rel32, absolute;
      for (const HotPatchTableEntry &e : h.entries) {
        if (e.header == 0x1C000) functions[e.source] = e;
        else if (e.header == (0x80000000u | 0x3C000)) rel32.push_back(e);
        else if (e.header == (0x80000000u | 0x2C000)) absolute.push_back(e);
        else ADD_FAILURE() << "unexpected record header " << e.header;
      }
      EXPECT_EQ(functions.size(), image.redirects.size());
      for (const PatchRedirect &r : image.redirects) {
        ASSERT_TRUE(functions.count(r.baseRva)) << r.name.value_or("?");
        EXPECT_EQ(functions[r.baseRva].target, r.patchRva);
        EXPECT_EQ(functions[r.baseRva].extra, llvm::support::endian::read32le(b.base.bytesAt(r.baseRva, 4).data()));
      }
      // Inverse records: exactly the references into the base that Windows has a record type for,
      // and each one, applied as Windows would, gives what the fixups give.
      size_t wantRel32 = 0, wantAbsolute = 0;
      for (const PatchFixup &f : image.fixups) {
        if (f.space != FixupSpace::Base) continue;
        wantRel32 += f.kind == FixupKind::X64Rel32;
        wantAbsolute += f.kind == FixupKind::X64Abs64 || f.kind == FixupKind::Data64;
      }
      EXPECT_EQ(rel32.size(), wantRel32);
      EXPECT_EQ(absolute.size(), wantAbsolute);
      if (!x64) EXPECT_TRUE(rel32.empty());
      uint64_t baseAddress = 0x7ff600000000, imageAddress = baseAddress + 0x10000000;
      std::vector<uint8_t> memory = layOut(image);
      ASSERT_TRUE(bool(applyFixups(image, baseAddress, imageAddress, importAddresses(image), memory)));
      for (const HotPatchTableEntry &e : rel32)
        EXPECT_EQ(int32_t(llvm::support::endian::read32le(&memory[e.source])),
                  int64_t(baseAddress + e.target) - int64_t(imageAddress + e.source + 4));
      for (const HotPatchTableEntry &e : absolute)
        EXPECT_EQ(llvm::support::endian::read64le(&memory[e.source]), baseAddress + e.target);
      // The exception directory lists the image's RUNTIME_FUNCTIONs, inside .pdata.
      if (pe->directories[3].second) EXPECT_EQ(pe->sectionAt(pe->directories[3].first)->name, ".pdata");
    }
  }
  EXPECT_GE(checked, 20u);
}

// More entries than a 12-bit count holds: the writer splits them over several headers. And the
// inverse records the samples never need: an 8-byte pointer into the base (ABSOLUTE), and a rel32
// field followed by an immediate (REL32 counts from the field's end, the fixup from the
// instruction's).
TEST(Emitter, PePatchTableSplitsEvery4095EntriesAndMirrorsFixupsIntoTheBase) {
  std::vector<Sample> all = samples();
  const Sample *base = find(all, "pe-x64", "core", "base"), *fix = find(all, "pe-x64", "core", "fix1");
  ASSERT_TRUE(base && fix);
  Built b = build(base->path, fix->path);
  ASSERT_TRUE(b.image.has_value()) << b.error;
  // Back to what the planner handed the writer: its sections only, and many redirects.
  PatchImage image = *b.image;
  std::optional<PeView> first = PeView::parse(image.file);
  ASSERT_TRUE(first.has_value());
  uint32_t plannerEnd = first->directories[10].first;  // the metadata .rdata comes first after them
  std::erase_if(image.sections, [&](const PatchSection &s) { return s.rva >= plannerEnd; });
  for (PatchSection &s : image.sections)
    if (s.name == ".rdata") s.name = ".rodata";
  image.imageSize = plannerEnd;
  image.sizes = b.image->sizes;
  image.sizes.metadata = 0;
  PatchRedirect one = image.redirects.at(0);
  image.redirects.clear();
  for (uint32_t i = 0; i < 5000; ++i) {
    image.redirects.push_back(one);
    image.redirects.back().patchRva = one.patchRva + i;
  }
  PatchFixup pointer, rel32;
  pointer.site = 0x1000;
  pointer.kind = FixupKind::Data64;
  pointer.target = 0x2345;
  rel32.site = 0x1010;  // e.g. cmp dword [rip+disp32], imm8: field at +2, 7 bytes
  rel32.kind = FixupKind::X64Rel32;
  rel32.fieldOffset = 2;
  rel32.instructionSize = 7;
  rel32.target = 0x3000;
  image.fixups = {pointer, rel32};
  std::vector<emitter::CarriedCode> carried;
  for (const PatchFunction &f : image.functions) carried.push_back({f.patchedRva, f.size, f.rva, f.name});
  llvm::Expected<emitter::PeUnwindSource> source = emitter::peUnwindSourceFor(b.patched);
  ASSERT_TRUE(bool(source)) << llvm::toString(source.takeError());
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> unwind = emitter::readPeUnwind(std::move(*source), carried);
  ASSERT_TRUE(bool(unwind)) << llvm::toString(unwind.takeError());
  llvm::Error e = emitter::writePeContainer(image, {&b.base, unwind->get(), {}});
  ASSERT_FALSE(bool(e)) << llvm::toString(std::move(e));
  std::optional<PeView> pe = PeView::parse(image.file);
  ASSERT_TRUE(pe.has_value());
  HotPatchView h = readHotPatchInfo(*pe);
  std::vector<uint32_t> functionHeaders;
  for (uint32_t header : h.headers)
    if ((header & ~0xfffu) == 0x1C000) functionHeaders.push_back(header & 0xfff);
  EXPECT_EQ(functionHeaders, (std::vector<uint32_t>{4095, 905}));
  size_t functions = 0;
  for (const HotPatchTableEntry &entry : h.entries) functions += entry.header == 0x1C000;
  EXPECT_EQ(functions, 5000u);
  llvm::Expected<PatchImage> back = lift(readPatchImage(image.file));
  ASSERT_TRUE(bool(back)) << llvm::toString(back.takeError());
  EXPECT_EQ(back->redirects.size(), 5000u);
  std::vector<std::array<uint32_t, 3>> inverse;
  for (const HotPatchTableEntry &entry : h.entries)
    if (entry.header & 0x80000000u) inverse.push_back({entry.header, entry.source, entry.target});
  EXPECT_EQ(inverse, (std::vector<std::array<uint32_t, 3>>{{0x8003c000u, 0x1012, 0x2fff}, {0x8002c000u, 0x1000, 0x2345}}));
  uint64_t baseAddress = 0x7ff600000000, imageAddress = baseAddress - 0x40000000;
  std::vector<uint8_t> memory = layOut(image);
  ASSERT_TRUE(bool(applyFixups(image, baseAddress, imageAddress, {}, memory)));
  EXPECT_EQ(int32_t(llvm::support::endian::read32le(&memory[0x1012])),
            int64_t(baseAddress + 0x2fff) - int64_t(imageAddress + 0x1012 + 4));
  EXPECT_EQ(llvm::support::endian::read64le(&memory[0x1000]), baseAddress + 0x2345);
}

// Crafted unwind data: a patched build whose bytes live in a map of RVA -> bytes.
struct FakeBuild {
  std::map<uint64_t, std::vector<uint8_t>> blobs;
  std::map<uint64_t, std::string> names;
  std::vector<uint8_t> pdata;

  void put(uint64_t rva, std::vector<uint32_t> words) {
    std::vector<uint8_t> bytes;
    for (uint32_t w : words)
      for (int i = 0; i < 4; ++i) bytes.push_back(uint8_t(w >> (8 * i)));
    blobs[rva] = bytes;
  }
  void entry(std::vector<uint32_t> words) {
    for (uint32_t w : words)
      for (int i = 0; i < 4; ++i) pdata.push_back(uint8_t(w >> (8 * i)));
  }
  emitter::PeUnwindSource source(Machine machine) const {
    emitter::PeUnwindSource s;
    s.machine = machine;
    s.exceptionDirectory = pdata;
    s.exceptionDirectoryRva = 0x8000;
    s.bytesAt = [this](uint64_t rva, uint64_t size) -> llvm::ArrayRef<uint8_t> {
      auto it = blobs.upper_bound(rva);
      if (it == blobs.begin()) return {};
      --it;
      if (rva - it->first + size > it->second.size()) return {};
      return llvm::ArrayRef<uint8_t>(it->second).slice(rva - it->first, size);
    };
    s.nameAt = [this](uint64_t rva) -> std::optional<std::string> {
      auto it = names.find(rva);
      return it == names.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    return s;
  }
};

std::vector<uint32_t> words(llvm::ArrayRef<uint8_t> bytes) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) out.push_back(llvm::support::endian::read32le(&bytes[i]));
  return out;
}

TEST(Emitter, PeUnwindX64ReaimsChainsIndirectEntriesHandlersAndScopeTables) {
  FakeBuild f;
  // A at 0x1000 (handler: __C_specific_handler, one scope), B at 0x3000 chained to A, C at 0x4000
  // an indirect entry naming A's RUNTIME_FUNCTION, D at 0x5000 not carried.
  f.entry({0x1000, 0x1100, 0x9000});
  f.entry({0x3000, 0x3040, 0x9100});
  f.entry({0x4000, 0x4020, 0x8000 | 1});
  f.entry({0x5000, 0x5010, 0x9200});
  f.put(0x9000, {1u | 1u << 3 | 0x04u << 8 | 2u << 16,  // version 1, EHANDLER, prolog 4 bytes, 2 codes
                 0x00003204, 0x6000, /*scopes*/ 1, 0x1010, 0x1050, 1, 0x1060});
  f.put(0x9100, {1u | 4u << 3 | 0u << 8 | 1u << 16, 0x00000000, 0x1000, 0x1100, 0x9000});
  f.put(0x9200, {1u, 0});
  f.names[0x6000] = "__C_specific_handler";
  std::vector<emitter::CarriedCode> carried = {
      {0x1000, 0x100, 0x2000, "A"}, {0x3000, 0x40, 0x2200, "B"}, {0x4000, 0x20, 0x2300, "C"}};
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> unwind = emitter::readPeUnwind(f.source(Machine::X64), carried);
  ASSERT_TRUE(bool(unwind)) << llvm::toString(unwind.takeError());
  EXPECT_EQ((*unwind)->handlersOutside(), std::vector<uint64_t>{0x6000});
  llvm::Expected<emitter::PeUnwindTables> t = (*unwind)->emit(0x5000, 0x4000, {{0x6000, 0x2400}});
  ASSERT_TRUE(bool(t)) << llvm::toString(t.takeError());
  EXPECT_EQ(t->entries, 3u);
  EXPECT_EQ(words(t->pdata), (std::vector<uint32_t>{0x2000, 0x2100, 0x4000,  //
                                                    0x2200, 0x2240, 0x4020,  //
                                                    0x2300, 0x2320, 0x5000 | 1}));
  std::vector<uint32_t> x = words(t->xdata);
  ASSERT_EQ(x.size(), 8u + 5u);
  // A: header and codes as they were, the handler at its stub, the scope in image RVAs.
  EXPECT_EQ(x[0], llvm::support::endian::read32le(f.blobs[0x9000].data()));
  EXPECT_EQ(std::vector<uint32_t>(x.begin() + 2, x.begin() + 8),
            (std::vector<uint32_t>{0x2400, 1, 0x2010, 0x2050, 1, 0x2060}));
  // B: its chained RUNTIME_FUNCTION is A's new entry.
  EXPECT_EQ(std::vector<uint32_t>(x.begin() + 10, x.end()), (std::vector<uint32_t>{0x2000, 0x2100, 0x4000}));

  // Refused, with the reason: a handler whose data is private, a parent the patch does not carry.
  f.names[0x6000] = "__CxxFrameHandler4";
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> refused = emitter::readPeUnwind(f.source(Machine::X64), carried);
  ASSERT_FALSE(bool(refused));
  std::string why = llvm::toString(refused.takeError());
  EXPECT_NE(why.find("__CxxFrameHandler4"), std::string::npos) << why;
  EXPECT_NE(why.find("needs restart"), std::string::npos) << why;
  EXPECT_NE(why.find("\n  HF412 "), std::string::npos) << why;  // a refusal with its rule id
  f.names[0x6000] = "__C_specific_handler";
  for (emitter::CarriedCode child : {emitter::CarriedCode{0x3000, 0x40, 0x2200, "B"}, {0x4000, 0x20, 0x2300, "C"}}) {
    llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> orphan = emitter::readPeUnwind(f.source(Machine::X64), {child});
    ASSERT_FALSE(bool(orphan));
    EXPECT_NE(llvm::toString(orphan.takeError()).find("does not carry"), std::string::npos);
  }
  // A scope whose code stays behind cannot be re-aimed.
  f.put(0x9000, {1u | 1u << 3 | 0x04u << 8 | 2u << 16, 0x00003204, 0x6000, 1, 0x1010, 0x1050, 0x7000, 0x1060});
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> scope = emitter::readPeUnwind(f.source(Machine::X64), carried);
  ASSERT_FALSE(bool(scope));
  EXPECT_NE(llvm::toString(scope.takeError()).find("scope 0"), std::string::npos);

  // Sizes from the header alone.
  EXPECT_EQ(*emitter::x64UnwindDialect().recordSize(std::vector<uint8_t>{1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0}, true), 12u);
  EXPECT_FALSE(bool(emitter::x64UnwindDialect().recordSize(std::vector<uint8_t>{1, 0, 3, 0, 0, 0}, true)));  // truncated
  llvm::Expected<size_t> v3 = emitter::x64UnwindDialect().recordSize(std::vector<uint8_t>{3, 0, 0, 0}, true);
  EXPECT_FALSE(bool(v3));
  llvm::consumeError(v3.takeError());
}

TEST(Emitter, PeUnwindArm64SizesXdataFromItsHeaderAndCopiesPackedEntries) {
  auto size = [](std::vector<uint32_t> w) -> size_t {
    std::vector<uint8_t> bytes(64 * 4 + 256 * 4, 0);
    for (size_t i = 0; i < w.size(); ++i) llvm::support::endian::write32le(&bytes[i * 4], w[i]);
    llvm::Expected<size_t> s = emitter::arm64UnwindDialect().recordSize(bytes, true);
    if (!s) {
      llvm::consumeError(s.takeError());
      return 0;
    }
    return *s;
  };
  EXPECT_EQ(size({0x10 | 2u << 22 | 3u << 27}), 4u + 2 * 4 + 3 * 4);            // two epilog scopes, three code words
  EXPECT_EQ(size({0x10 | 1u << 21 | 5u << 22 | 1u << 27}), 4u + 4);             // E: one epilog, no scopes
  EXPECT_EQ(size({0x10 | 1u << 20 | 1u << 22 | 1u << 27}), 4u + 4 + 4 + 4);     // X: the handler RVA
  EXPECT_EQ(size({0x10, 3u | 40u << 16}), 8u + 3 * 4 + 40 * 4);                 // extended header
  EXPECT_EQ(size({0x10 | 1u << 18 | 1u << 27}), 0u);                            // version 1
  llvm::Expected<size_t> truncated = emitter::arm64UnwindDialect().recordSize(std::vector<uint8_t>{0x10, 0, 0, 0x18}, true);
  EXPECT_FALSE(bool(truncated));
  llvm::consumeError(truncated.takeError());

  FakeBuild f;
  // A: packed (16 instructions); B: .xdata with one epilog scope, one code word, and a /GS handler.
  f.entry({0x1000, 1u | 16u << 2 | 0x00abc000u});
  f.entry({0x2000, 0x9000});
  f.entry({0x3000, 1u | 4u << 2});  // not carried
  f.put(0x9000, {0x40 | 1u << 20 | 1u << 22 | 1u << 27, 0x00000030, 0xe4e3e2e1, 0x6000, /*GS data*/ 0x58});
  f.names[0x6000] = "__GSHandlerCheck";
  std::vector<emitter::CarriedCode> carried = {{0x1000, 0x40, 0x5000, "A"}, {0x2000, 0x100, 0x5100, "B"}};
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> unwind = emitter::readPeUnwind(f.source(Machine::Arm64), carried);
  ASSERT_TRUE(bool(unwind)) << llvm::toString(unwind.takeError());
  llvm::Expected<emitter::PeUnwindTables> t = (*unwind)->emit(0x8000, 0x7000, {{0x6000, 0x5400}});
  ASSERT_TRUE(bool(t)) << llvm::toString(t.takeError());
  EXPECT_EQ(words(t->pdata), (std::vector<uint32_t>{0x5000, 1u | 16u << 2 | 0x00abc000u, 0x5100, 0x7000}));
  EXPECT_EQ(words(t->xdata), (std::vector<uint32_t>{0x40 | 1u << 20 | 1u << 22 | 1u << 27, 0x30, 0xe4e3e2e1, 0x5400, 0x58}));
  // An entry longer than its function is refused.
  llvm::Expected<std::unique_ptr<emitter::PeUnwindCopy>> tooLong =
      emitter::readPeUnwind(f.source(Machine::Arm64), {{0x1000, 0x20, 0x5000, "A"}});
  ASSERT_FALSE(bool(tooLong));
  EXPECT_NE(llvm::toString(tooLong.takeError()).find("does not lie inside"), std::string::npos);
}

}  // namespace
}  // namespace hotforge::test
