// The emitter on every sample scenario: the image reads cleanly with the LLVM tools, its records
// round-trip, and every carried function, once the fixups are applied for a base and an image at
// chosen addresses, is the patched build's function instruction by instruction: same shape, and
// every reference lands on the counterpart of what the patched build's reference lands on.
#include "hotforge/arch.h"
#include "hotforge/patch_image.h"
#include "test_support.h"

#include <gtest/gtest.h>
#include <llvm/Support/Endian.h>

#include <map>
#include <set>

namespace hotforge::test {
namespace {

Image load(const std::string &path) {
  llvm::Expected<Image> image = readImage(path);
  if (!image) {
    ADD_FAILURE() << llvm::toString(image.takeError());
    return Image();
  }
  return std::move(*image);
}

struct Built {
  Image base, patched;
  Diff diff;
  std::optional<PatchImage> image;
  std::string error;
};

Built build(const std::string &basePath, const std::string &patchedPath, uint32_t sequence = 1) {
  Built b{load(basePath), load(patchedPath), {}, std::nullopt, {}};
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

std::string normalized(std::string name) {
  for (const char *suffix : {".cold", ".part.", ".isra.", ".constprop."})
    if (auto at = name.find(suffix); at != std::string::npos) name.resize(at);
  return name;
}

// What an address of one build is, for comparing across builds: "f:name+off", "d:name+off", or
// empty when nothing names it.
std::string describe(const Image &image, uint64_t rva) {
  if (const Function *f = image.functionAt(rva); f && f->name)
    return "f:" + normalized(*f->name) + "+" + std::to_string(rva - f->range.rva);
  for (const DataObject &d : image.dataObjects)
    if (!d.threadLocal && (d.range.contains(rva) || d.range.rva == rva) && d.range.size)
      return "d:" + normalized(d.name) + "+" + std::to_string(rva - d.range.rva);
  for (const Import &i : image.imports)
    if (i.slotRva == rva) return "i:" + i.name;
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

// Checks one laid-out image against the patched build.
void checkInstructionByInstruction(const Built &b, uint64_t baseAddress, uint64_t imageAddress) {
  const PatchImage &image = *b.image;
  std::vector<uint8_t> memory = layOut(image);
  llvm::Error applied = applyFixups(image, baseAddress, imageAddress, memory);
  ASSERT_FALSE(bool(applied)) << llvm::toString(std::move(applied));
  auto decoder = differ::createInstructionDecoder(image.machine);
  ASSERT_TRUE(bool(decoder));
  differ::RelocationIndex none, patchedRelocations;
  patchedRelocations.imageBase = b.patched.imageBase;
  for (const Relocation &r : b.patched.relocations) patchedRelocations.rvas.push_back(r.rva);
  std::sort(patchedRelocations.rvas.begin(), patchedRelocations.rvas.end());
  std::map<uint32_t, const PatchFunction *> byImageRva;
  for (const PatchFunction &f : image.functions) byImageRva[f.rva] = &f;
  std::map<uint64_t, const FunctionBindings *> bindings;
  for (const FunctionBindings &fb : b.diff.bindings) bindings[b.patched.functions[fb.patched].range.rva] = &fb;
  std::set<uint32_t> veneers;
  for (const PatchFixup &f : image.fixups)
    if (f.veneer) veneers.insert(f.veneer);

  for (const PatchFunction &f : image.functions) {
    SCOPED_TRACE(f.name.value_or("unnamed"));
    differ::DecodedFunction ours = (*decoder)->decode(llvm::ArrayRef<uint8_t>(memory).slice(f.rva, f.size),
                                                      imageAddress + f.rva, none, true);
    differ::DecodedFunction theirs = (*decoder)->decode(b.patched.bytesAt(f.patchedRva, f.size), f.patchedRva,
                                                        patchedRelocations, true);
    // The one rewrite the emitter makes: a linker-relaxed NOP+ADR of base data becomes ADRP+ADD
    // again (the NOP is layout noise, so the patched side has one instruction fewer there).
    std::vector<uint32_t> widened;  // our instruction index of each ADRP+ADD that replaced an ADR
    for (size_t k = 0, j = 0; k < ours.instructionShapes.size() || j < theirs.instructionShapes.size(); ++k, ++j) {
      ASSERT_LT(k, ours.instructionShapes.size());
      ASSERT_LT(j, theirs.instructionShapes.size());
      if (ours.instructionShapes[k] == theirs.instructionShapes[j]) continue;
      uint32_t word = llvm::support::endian::read32le(&memory[f.rva + ours.instructionOffsets[k]]);
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
        EXPECT_EQ(adrp.target - baseAddress, fb->references[i].address);
        ++skip;
      }
      const differ::CodeReference &o = ours.references[i + skip], &t = theirs.references[i];
      if (t.encoding == differ::FieldEncoding::None) continue;  // follows from another reference
      SCOPED_TRACE("reference at +" + std::to_string(t.offset));
      uint64_t target = o.target;
      uint64_t imageRva = target - imageAddress;
      if (target >= imageAddress && imageRva < image.imageSize && veneers.count(uint32_t(imageRva))) {
        // A veneer: its 8-byte slot holds the real target.
        uint32_t slot = uint32_t(imageRva) + (image.machine == Machine::X64 ? 6 : 8);
        target = llvm::support::endian::read64le(&memory[slot]);
        imageRva = target - imageAddress;
      }
      const Binding &binding = fb->references[i];
      if (target >= imageAddress && imageRva < image.imageSize) {
        auto g = byImageRva.upper_bound(uint32_t(imageRva));
        ASSERT_NE(g, byImageRva.begin());
        --g;
        if (imageRva < g->first + g->second->size) {  // code in the image: the same place of the same function
          EXPECT_EQ(g->second->patchedRva + (imageRva - g->first), t.target);
          continue;
        }
        // Data the image carries: its bytes are the patched build's (jump tables are rebuilt).
        if (binding.kind == Binding::Kind::JumpTable) continue;
        llvm::ArrayRef<uint8_t> want = b.patched.bytesAt(t.target, 1);
        if (!want.empty()) EXPECT_EQ(memory[imageRva], want[0]);
        continue;
      }
      uint64_t baseRva = target - baseAddress;
      std::string inBase = describe(b.base, baseRva), inPatched = describe(b.patched, t.target);
      if (!inBase.empty() && !inPatched.empty()) EXPECT_EQ(inBase, inPatched);
      else EXPECT_EQ(baseRva, binding.address) << "base rva " << baseRva;
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
      if (number == 6) {  // a changed initial value: refused, with the reason
        EXPECT_FALSE(b.image.has_value());
        EXPECT_NE(b.error.find("HF210"), std::string::npos) << b.error;
        EXPECT_NE(b.error.find("g_limit"), std::string::npos) << b.error;
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
      for (const PatchRedirect &r : image.redirects) {  // never past the function's end
        if (r.kind == RedirectKind::X64ShortJump) EXPECT_GE(r.paddingBefore, 5);
        EXPECT_LE(r.entryOffset + redirectSize(r.kind), r.baseSize) << r.name.value_or("?");
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
      llvm::Expected<PatchImage> back = readPatchImage(image.file);
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
  EXPECT_GT(built, 60u);
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
}

}  // namespace
}  // namespace hotforge::test
