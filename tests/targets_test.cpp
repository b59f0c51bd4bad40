// The machine and container targets on their own: each machine's field codec writes and reads
// back every field kind at the edges of its reach and refuses one step beyond, leaving the
// instruction as it was; each container's writer, on a sample, writes a file that its
// container target (and no other) holds, with the image's sections and the machine's id.
#include "hotforge/patch_image.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/machine_target.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace hotforge::test {
namespace {

// One field kind in an instruction that holds it, and the targets it reaches from `pc`:
// [pc + lowest, pc + highest] in steps of `step` (Distance kinds).
struct FieldCase {
  Machine machine;
  InstructionField field;
  std::vector<uint8_t> instruction;
  int64_t lowest = 0, highest = 0, step = 1;
};

std::vector<uint8_t> word(uint32_t value) {
  std::vector<uint8_t> bytes(4);
  writeLe32(bytes.data(), value);
  return bytes;
}

// The little-endian bytes of `words`.
std::vector<uint8_t> words(std::initializer_list<uint32_t> values) {
  std::vector<uint8_t> bytes;
  for (uint32_t value : values) {
    std::vector<uint8_t> w = word(value);
    bytes.insert(bytes.end(), w.begin(), w.end());
  }
  return bytes;
}

std::vector<FieldCase> distanceCases() {
  constexpr int64_t k1M = int64_t(1) << 20;
  return {
      // jmp rel8, from the instruction's end
      {Machine::X64, {FixupKind::X64Rel8, 1, 2}, {0xeb, 0}, -128 + 2, 127 + 2},
      // call rel32
      {Machine::X64, {FixupKind::X64Rel32, 1, 5}, {0xe8, 0, 0, 0, 0}, INT32_MIN + 5ll, INT32_MAX + 5ll},
      // cmp dword [rip+disp32], 7: an immediate follows the field
      {Machine::X64, {FixupKind::X64Rel32, 2, 7}, {0x83, 0x3d, 0, 0, 0, 0, 7}, INT32_MIN + 7ll, INT32_MAX + 7ll},
      {Machine::Arm64, {FixupKind::A64Branch26}, word(0x94000000), -128 * k1M, 128 * k1M - 4, 4},      // bl
      {Machine::Arm64, {FixupKind::A64Branch19}, word(0x54000001), -k1M, k1M - 4, 4},                  // b.ne
      {Machine::Arm64, {FixupKind::A64Branch14}, word(0x36080003), -32 * 1024, 32 * 1024 - 4, 4},      // tbz w3, #1
      {Machine::Arm64, {FixupKind::A64Literal19}, word(0x58000005), -k1M, k1M - 4, 4},                 // ldr x5, lit
      {Machine::Arm64, {FixupKind::A64Adr21}, word(0x10000007), -k1M, k1M - 1},                        // adr x7
  };
}

// Everything the field's bits do not cover is as it was.
void expectOnlyFieldChanged(const FieldCase &c, const std::vector<uint8_t> &after, const FieldBits &bits) {
  for (size_t i = 0; i < after.size(); ++i) {
    bool inField = i >= bits.begin && i < bits.end;
    if (!inField || bits.mask) {
      uint8_t keep = inField ? uint8_t(~(bits.mask >> (8 * ((i - bits.begin) % 4)))) : 0xff;
      EXPECT_EQ(after[i] & keep, c.instruction[i] & keep) << "byte " << i << " of " << fixupKindName(c.field.kind);
    }
  }
}

TEST(MachineTargetCodec, DistanceFieldsRoundTripAtTheirEdgesAndRefuseBeyond) {
  for (const FieldCase &c : distanceCases()) {
    const MachineTarget &target = machineTarget(c.machine);
    SCOPED_TRACE(std::string(target.name()) + " " + std::string(fixupKindName(c.field.kind)));
    EXPECT_EQ(target.meaning(c.field.kind), FieldMeaning::Distance);
    std::optional<FieldBits> bits = target.fieldBits(c.field);
    ASSERT_TRUE(bits.has_value());
    ASSERT_LE(bits->end, c.instruction.size());
    for (uint64_t pc : {uint64_t(0x7f0000001000), uint64_t(0x7f0000ff8ffc)}) {
      for (int64_t distance : {c.lowest, c.lowest + c.step, int64_t(0), c.highest - c.step, c.highest}) {
        std::vector<uint8_t> bytes = c.instruction;
        Status written = target.writeField(c.field, bytes, pc, pc + distance);
        ASSERT_TRUE(bool(written)) << distance << ": " << written.error();
        EXPECT_EQ(target.readField(c.field, bytes, pc), pc + distance) << distance;
        expectOnlyFieldChanged(c, bytes, *bits);
      }
      for (int64_t distance : {c.lowest - c.step, c.highest + c.step}) {
        std::vector<uint8_t> bytes = c.instruction;
        Status refused = target.writeField(c.field, bytes, pc, pc + distance);
        ASSERT_FALSE(bool(refused)) << distance;
        EXPECT_NE(refused.error().find("cannot reach"), std::string::npos) << refused.error();
        EXPECT_EQ(bytes, c.instruction) << "a refused write changed the instruction";
      }
      if (c.step > 1) {  // a misaligned target is not a branch target
        std::vector<uint8_t> bytes = c.instruction;
        EXPECT_FALSE(bool(target.writeField(c.field, bytes, pc, pc + 2)));
        EXPECT_EQ(bytes, c.instruction);
      }
    }
  }
}

TEST(MachineTargetCodec, AbsoluteFieldHoldsAnyAddress) {
  const MachineTarget &x64 = machineTarget(Machine::X64);
  InstructionField movabs{FixupKind::X64Abs64, 2, 10};  // movabs rax, imm64
  std::vector<uint8_t> instruction{0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(x64.meaning(movabs.kind), FieldMeaning::Absolute);
  for (uint64_t address : {uint64_t(0), uint64_t(0x180001234), UINT64_MAX}) {
    std::vector<uint8_t> bytes = instruction;
    ASSERT_TRUE(bool(x64.writeField(movabs, bytes, 0x1000, address)));
    EXPECT_EQ(x64.readField(movabs, bytes, 0x1000), address);
    EXPECT_EQ(bytes[0], 0x48);
    EXPECT_EQ(bytes[1], 0xb8);
  }
}

TEST(MachineTargetCodec, AdrpPagesAndLow12Bits) {
  const MachineTarget &arm64 = machineTarget(Machine::Arm64);
  InstructionField adrp{FixupKind::A64AdrPage21}, add{FixupKind::A64AddLo12}, load{FixupKind::A64LdStLo12, 0, 0, 3};
  EXPECT_EQ(arm64.meaning(adrp.kind), FieldMeaning::Page);
  EXPECT_EQ(arm64.meaning(add.kind), FieldMeaning::PageOffset);
  EXPECT_EQ(arm64.meaning(load.kind), FieldMeaning::PageOffset);
  constexpr int64_t kReach = (int64_t(1) << 20) * 4096;  // +-4 GiB in pages
  uint64_t pc = 0x7f0012345678;
  uint64_t page = pc & ~uint64_t(0xfff);
  for (int64_t pages : {-kReach, -kReach + 4096, int64_t(0), kReach - 4096}) {
    uint64_t target = page + pages + 0xab8;
    std::vector<uint8_t> first = word(0x90000010), second = word(0x91000210), third = word(0xf9400210);
    ASSERT_TRUE(bool(arm64.writeField(adrp, first, pc, target))) << pages;
    EXPECT_EQ(arm64.readField(adrp, first, pc), target & ~uint64_t(0xfff));
    EXPECT_EQ(readLe32(first.data()) & 0x9f00001f, 0x90000010u);  // still adrp x16
    ASSERT_TRUE(bool(arm64.writeField(add, second, pc + 4, target)));
    EXPECT_EQ(arm64.readField(add, second, pc + 4), 0xab8u);
    ASSERT_TRUE(bool(arm64.writeField(load, third, pc + 8, target)));
    EXPECT_EQ(arm64.readField(load, third, pc + 8), 0xab8u);
    EXPECT_EQ(readLe32(third.data()) & ~0x003ffc00u, 0xf9400210u);
  }
  for (int64_t pages : {-kReach - 4096, kReach}) {
    std::vector<uint8_t> first = word(0x90000010);
    EXPECT_FALSE(bool(arm64.writeField(adrp, first, pc, page + pages))) << pages;
    EXPECT_EQ(readLe32(first.data()), 0x90000010u);
  }
  std::vector<uint8_t> misaligned = word(0xf9400210);
  EXPECT_FALSE(bool(arm64.writeField(load, misaligned, pc, page + 0xab4)));  // an 8-byte load at 4 mod 8
  EXPECT_EQ(readLe32(misaligned.data()), 0xf9400210u);
  // An ADR that GNU ld wrote for an ADRP becomes the ADRP again.
  std::vector<uint8_t> adr = word(0x10000010);
  arm64.adoptField(adrp, adr);
  EXPECT_EQ(readLe32(adr.data()), 0x90000010u);
}

TEST(MachineTargetCodec, KindsOfAnotherMachineAreRefused) {
  std::vector<uint8_t> bytes(16, 0);
  EXPECT_FALSE(bool(machineTarget(Machine::X64).writeField({FixupKind::A64Branch26}, bytes, 0, 0)));
  EXPECT_FALSE(bool(machineTarget(Machine::Arm64).writeField({FixupKind::X64Rel32, 1, 5}, bytes, 0, 0)));
  EXPECT_FALSE(machineTarget(Machine::X64).fieldBits({FixupKind::Data64}).has_value());
  EXPECT_EQ(std::vector<uint8_t>(16, 0), bytes);
}

TEST(MachineTargetRedirects, BranchFallsBackToTheStubWhenTheFunctionIsOutOfReach) {
  for (Machine machine : {Machine::X64, Machine::Arm64}) {
    const MachineTarget &target = machineTarget(machine);
    SCOPED_TRACE(std::string(target.name()));
    PatchRedirect r;
    r.kind = machine == Machine::X64 ? RedirectKind::X64Jump32 : RedirectKind::A64Branch;
    r.baseRva = 0x1000;
    r.patchRva = 0x2000;
    r.stubRva = 0x1000;
    uint64_t base = 0x7f0000000000;
    // Near: straight to the function.
    Outcome<EntryWrite> near = entryWrite(r, machine, base, base + 0x100000);
    ASSERT_TRUE(bool(near)) << near.error();
    InstructionField field = machine == Machine::X64 ? InstructionField{FixupKind::X64Rel32, 1, 5}
                                                     : InstructionField{FixupKind::A64Branch26};
    EXPECT_EQ(target.readField(field, near->bytes, near->address), base + 0x100000 + r.patchRva);
    // The function beyond reach (3.75 GiB on), its stub within: to the stub.
    r.patchRva = 0xf0000000;
    r.stubRva = 0x10;
    Outcome<EntryWrite> viaStub = entryWrite(r, machine, base, base + 0x1000);
    ASSERT_TRUE(bool(viaStub)) << viaStub.error();
    EXPECT_EQ(target.readField(field, viaStub->bytes, viaStub->address), base + 0x1000 + r.stubRva);
    // Neither within reach: refused, naming the kind.
    r.stubRva = 0;
    Outcome<EntryWrite> refused = entryWrite(r, machine, base, base + 0x1000);
    ASSERT_FALSE(bool(refused));
    EXPECT_NE(refused.error().find("out of reach"), std::string::npos);
    // The other machine's kind is refused.
    r.kind = machine == Machine::X64 ? RedirectKind::A64Branch : RedirectKind::X64Jump32;
    EXPECT_FALSE(bool(entryWrite(r, machine, base, base + 0x1000)));
  }
}

// The writer of each container, on core.base -> core.fix1 of one sample per container and machine.
// Erratum 843419: an ADRP (or an ADR, or a NOP before an ADR, that may become one) in the last
// two words of a page is a hazard on Arm64; x64 has none.
TEST(MachineTargetPlacement, AdrpInTheLastTwoWordsOfAPageIsHazardousOnArm64Only) {
  const MachineTarget &arm64 = machineTarget(Machine::Arm64), &x64 = machineTarget(Machine::X64);
  constexpr uint32_t kAdrp = 0x90000010, kAdr = 0x10000010, kNop = 0xd503201f, kAdd = 0x91000210;
  std::vector<uint8_t> code = words({kAdd, kAdrp, kAdd});
  EXPECT_TRUE(arm64.hazardousPlacement(code, 0x1ff4));   // the ADRP at 0x1ff8
  EXPECT_TRUE(arm64.hazardousPlacement(code, 0x1ff8));   // at 0x1ffc
  EXPECT_FALSE(arm64.hazardousPlacement(code, 0x1ff0));  // at 0x1ff4
  EXPECT_FALSE(arm64.hazardousPlacement(code, 0x1ffc));  // at 0x2000
  std::vector<uint8_t> nopAdr = words({kNop, kAdr});
  EXPECT_TRUE(arm64.hazardousPlacement(nopAdr, 0x3ffc));   // the NOP at 0xffc
  EXPECT_FALSE(arm64.hazardousPlacement(word(kNop), 0x3ffc));
  EXPECT_FALSE(x64.hazardousPlacement(code, 0x1ff4));
}

// Import thunks: x64 `jmp [rip+slot]`, Arm64 `adrp x16; ldr x16, [x16, #lo12]; br x16`.
TEST(MachineTargetThunks, ImportThunksGiveTheirSlot) {
  const MachineTarget &x64 = machineTarget(Machine::X64), &arm64 = machineTarget(Machine::Arm64);
  std::vector<uint8_t> jmp = {0xff, 0x25, 0, 0, 0, 0};
  writeLe32(&jmp[2], uint32_t(-0x20));
  EXPECT_EQ(x64.importThunkSlot(jmp, 0x5000), uint64_t(0x5000 + 6 - 0x20));
  EXPECT_EQ(x64.importThunkSlot(std::span(jmp).first(5), 0x5000), std::nullopt);
  std::vector<uint8_t> thunk = words({0x90000010, 0xf9400210, 0xd61f0200});
  constexpr uint64_t kThunk = 0x140001000, kSlot = 0x140223458;
  ASSERT_TRUE(bool(arm64.writeField({FixupKind::A64AdrPage21}, thunk, kThunk, kSlot)));
  ASSERT_TRUE(bool(arm64.writeField({FixupKind::A64LdStLo12, 0, 0, 3}, std::span(thunk).subspan(4), kThunk + 4, kSlot)));
  EXPECT_EQ(arm64.importThunkSlot(thunk, kThunk), kSlot);
  thunk[8] ^= 1;  // no longer br x16
  EXPECT_EQ(arm64.importThunkSlot(thunk, kThunk), std::nullopt);
  EXPECT_EQ(x64.importThunkSlot(thunk, kThunk), std::nullopt);
}

// .pdata entries: x64 RUNTIME_FUNCTION with direct, chained and indirect unwind data, Arm64
// packed and .xdata lengths; bad entries fail with their number.
TEST(MachineTargetPdata, EntriesGiveTheirCodeAndTheEntryTheyUnwindWith) {
  std::map<uint32_t, std::vector<uint8_t>> memory;
  RvaReader bytesAt = [&](uint32_t rva, uint32_t size, const char *what) -> Outcome<std::span<const uint8_t>> {
    auto it = memory.upper_bound(rva);
    if (it == memory.begin() || (--it, rva - it->first + size > it->second.size()))
      return fail(what, " at ", hexAddress(rva), " is missing");
    return std::span<const uint8_t>(it->second).subspan(rva - it->first, size);
  };
  auto entry = [](std::initializer_list<uint32_t> values) { return words(values); };
  const MachineTarget &x64 = machineTarget(Machine::X64), &arm64 = machineTarget(Machine::Arm64);
  EXPECT_EQ(x64.pdataEntrySize(), 12u);
  EXPECT_EQ(arm64.pdataEntrySize(), 8u);
  memory[0x9000] = entry({1u | 2u << 16, 0});                           // UNWIND_INFO, 2 codes, no chain
  memory[0x9100] = entry({1u | 4u << 3 | 2u << 16, 0, 0x1000, 0x1100, 0x9000});  // chained to 0x1000
  memory[0x8000] = entry({0x1000, 0x1100, 0x9000});                    // the RUNTIME_FUNCTION of 0x1000
  Outcome<PdataEntry> own = x64.readPdataEntry(entry({0x1000, 0x1100, 0x9000}), 0, bytesAt);
  ASSERT_TRUE(own) << own.error();
  EXPECT_EQ(std::tuple(own->begin, own->end, own->parent), std::tuple(0x1000u, 0x1100ull, 0x1000u));
  Outcome<PdataEntry> chained = x64.readPdataEntry(entry({0x3000, 0x3040, 0x9100}), 1, bytesAt);
  ASSERT_TRUE(chained) << chained.error();
  EXPECT_EQ(chained->parent, 0x1000u);
  Outcome<PdataEntry> indirect = x64.readPdataEntry(entry({0x4000, 0x4020, 0x8000 | 1}), 2, bytesAt);
  ASSERT_TRUE(indirect) << indirect.error();
  EXPECT_EQ(indirect->parent, 0x1000u);
  Outcome<PdataEntry> backwards = x64.readPdataEntry(entry({0x5000, 0x5000, 0x9000}), 3, bytesAt);
  ASSERT_FALSE(backwards);
  EXPECT_EQ(backwards.error(), ".pdata entry 3 has end 0x5000 <= begin 0x5000");
  Outcome<PdataEntry> missing = x64.readPdataEntry(entry({0x5000, 0x5010, 0x9200}), 4, bytesAt);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), "UNWIND_INFO at 0x9200 is missing");

  memory[0x7000] = entry({40});  // .xdata: 40 instructions
  Outcome<PdataEntry> packed = arm64.readPdataEntry(entry({0x1000, 1u | 16u << 2}), 0, bytesAt);
  ASSERT_TRUE(packed) << packed.error();
  EXPECT_EQ(std::tuple(packed->begin, packed->end, packed->parent), std::tuple(0x1000u, 0x1040ull, 0x1000u));
  Outcome<PdataEntry> xdata = arm64.readPdataEntry(entry({0x2000, 0x7000}), 1, bytesAt);
  ASSERT_TRUE(xdata) << xdata.error();
  EXPECT_EQ(xdata->end, 0x2000u + 40 * 4);
  Outcome<PdataEntry> reserved = arm64.readPdataEntry(entry({0x3000, 3}), 2, bytesAt);
  ASSERT_FALSE(reserved);
  EXPECT_EQ(reserved.error(), ".pdata entry 2 uses reserved unwind flag 3");
}

TEST(ContainerWriters, WriteWhatTheirContainerTargetReadsBack) {
  for (const char *directory : {"elf-x64-gcc", "elf-a64-clang", "pe-x64", "pe-a64"}) {
    SCOPED_TRACE(directory);
    std::string suffix = std::string(directory).rfind("pe-", 0) == 0 ? ".dll" : "";
    std::string at = samplesDir() + "/" + directory + "/core.";
    Image base = loadImage(at + "base" + suffix), patched = loadImage(at + "fix1" + suffix);
    llvm::Expected<Diff> diff = diffImages(base, patched);
    ASSERT_TRUE(bool(diff)) << llvm::toString(diff.takeError());
    llvm::Expected<PatchImage> image = buildPatchImage(base, patched, *diff);
    ASSERT_TRUE(bool(image)) << llvm::toString(image.takeError());
    const std::vector<uint8_t> &file = image->file;
    EXPECT_EQ(findFormat([&](const ContainerTarget &c) { return c.holds(file); }), base.format);
    const ContainerTarget &container = containerTarget(base.format);
    Outcome<std::vector<ContainerSection>> sections = container.sections(file);
    ASSERT_TRUE(bool(sections)) << sections.error();
    for (const PatchSection &s : image->sections) {
      auto found = std::find_if(sections->begin(), sections->end(), [&](const ContainerSection &c) {
        return c.loaded && c.rva == s.rva && c.memorySize >= s.bytes.size();
      });
      ASSERT_NE(found, sections->end()) << s.name;
      EXPECT_TRUE(std::equal(s.bytes.begin(), s.bytes.end(), found->contents.begin())) << s.name;
      EXPECT_EQ(found->permissions.execute, s.permissions.execute) << s.name;
    }
    const MachineTarget &machine = machineTarget(base.machine);
    if (container.identifiedByBuildId()) {
      EXPECT_EQ(readLe16(&file[0x12]), machine.elfMachine());  // e_machine
    } else {
      uint32_t peAt = readLe32(&file[0x3c]);
      EXPECT_EQ(readLe16(&file[peAt + 4]), machine.coffMachine());  // IMAGE_FILE_HEADER.Machine
    }
    Outcome<PatchImage> back = readPatchImage(file);
    ASSERT_TRUE(bool(back)) << back.error();
    EXPECT_EQ(back->format, base.format);
    EXPECT_EQ(back->machine, base.machine);
    EXPECT_EQ(back->fixups.size(), image->fixups.size());
    EXPECT_EQ(back->redirects.size(), image->redirects.size());
  }
}

}  // namespace
}  // namespace hotforge::test
