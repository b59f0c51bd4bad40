// AArch64: B/BL imm26, B.cond/CBZ/CBNZ imm19, TBZ/TBNZ imm14, LDR literal imm19, ADR imm21, ADRP
// page imm21 and the ADD/LDR/STR low 12 bits that complete it; entry redirects by B imm26 or
// LDR x16 + BR x16 through a literal.
#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"
#include "target_common.h"

namespace hotforge {
namespace {

constexpr uint32_t kBranch = 0x14000000;  // B imm26
constexpr uint8_t kJumpThroughSlot[] = {0x50, 0x00, 0x00, 0x58, 0x00, 0x02, 0x1f, 0xd6};  // ldr x16, #8; br x16
constexpr uint64_t kPageMask = ~uint64_t(0xfff);

bool isBti(uint32_t instruction) { return (instruction & 0xffffff3f) == 0xd503241f; }

int64_t signExtend(uint64_t value, unsigned bits) { return int64_t(value << (64 - bits)) >> (64 - bits); }

uint32_t setBits(uint32_t instruction, unsigned low, unsigned width, uint64_t value) {
  uint32_t mask = ((1u << width) - 1) << low;
  return (instruction & ~mask) | ((uint32_t(value) << low) & mask);
}

// ADR and ADRP split their 21-bit immediate: the low 2 bits in 29-30, the rest in 5-23.
uint32_t setAdrImmediate(uint32_t instruction, int64_t value) {
  instruction = setBits(instruction, 29, 2, uint64_t(value) & 3);
  return setBits(instruction, 5, 19, uint64_t(value >> 2));
}
int64_t adrImmediate(uint32_t instruction) {
  return signExtend(((instruction >> 5) & 0x7ffff) << 2 | ((instruction >> 29) & 3), 21);
}

// The low bit and width of a scaled branch or literal offset.
struct Offset {
  unsigned low, bits;
};
std::optional<Offset> branchOffset(FixupKind kind) {
  switch (kind) {
  case FixupKind::A64Branch26: return Offset{0, 26};
  case FixupKind::A64Branch19:
  case FixupKind::A64Literal19: return Offset{5, 19};
  case FixupKind::A64Branch14: return Offset{5, 14};
  default: return std::nullopt;
  }
}

class Arm64Target final : public MachineTarget {
public:
  Machine machine() const override { return Machine::Arm64; }
  std::string_view name() const override { return "arm64"; }
  uint16_t recordCode() const override { return 2; }
  uint16_t elfMachine() const override { return 183; }      // EM_AARCH64
  uint16_t coffMachine() const override { return 0xaa64; }  // IMAGE_FILE_MACHINE_ARM64
  uint32_t hotPatchBaseMachine() const override { return 0x8; }
  uint64_t patchReach() const override { return uint64_t(120) << 20; }  // B imm26 reaches 128 MiB

  FieldMeaning meaning(FixupKind kind) const override {
    switch (kind) {
    case FixupKind::A64Branch26:
    case FixupKind::A64Branch19:
    case FixupKind::A64Branch14:
    case FixupKind::A64Literal19:
    case FixupKind::A64Adr21: return FieldMeaning::Distance;
    case FixupKind::A64AdrPage21: return FieldMeaning::Page;
    case FixupKind::A64AddLo12:
    case FixupKind::A64LdStLo12: return FieldMeaning::PageOffset;
    default: return FieldMeaning::None;
    }
  }

  std::optional<FieldBits> fieldBits(const InstructionField &f) const override {
    if (std::optional<Offset> o = branchOffset(f.kind)) return FieldBits{0, 4, ((1u << o->bits) - 1) << o->low};
    switch (f.kind) {
    case FixupKind::A64Adr21:
    case FixupKind::A64AdrPage21: return FieldBits{0, 4, 0x60ffffe0};
    case FixupKind::A64AddLo12:
    case FixupKind::A64LdStLo12: return FieldBits{0, 4, 0x003ffc00};
    default: return std::nullopt;
    }
  }

  uint64_t readField(const InstructionField &f, std::span<const uint8_t> instruction, uint64_t pc) const override {
    uint32_t word = readLe32(instruction.data());
    if (std::optional<Offset> o = branchOffset(f.kind))
      return pc + 4 * signExtend((word >> o->low) & ((1u << o->bits) - 1), o->bits);
    switch (f.kind) {
    case FixupKind::A64Adr21: return pc + adrImmediate(word);
    case FixupKind::A64AdrPage21: return (pc & kPageMask) + uint64_t(adrImmediate(word)) * 4096;
    case FixupKind::A64AddLo12: return (word >> 10) & 0xfff;
    case FixupKind::A64LdStLo12: return uint64_t((word >> 10) & 0xfff) << f.scale;
    default: return 0;
    }
  }

  Status writeField(const InstructionField &f, std::span<uint8_t> instruction, uint64_t pc,
                    uint64_t target) const override {
    uint32_t word = readLe32(instruction.data());
    int64_t distance = int64_t(target - pc);
    if (std::optional<Offset> o = branchOffset(f.kind)) {
      if ((distance & 3) || !fitsSigned(distance >> 2, o->bits)) return outOfReach(distance);
      word = setBits(word, o->low, o->bits, uint64_t(distance >> 2));
    } else {
      switch (f.kind) {
      case FixupKind::A64Adr21:
        if (!fitsSigned(distance, 21)) return outOfReach(distance);
        word = setAdrImmediate(word, distance);
        break;
      case FixupKind::A64AdrPage21: {
        int64_t pages = (int64_t(target & kPageMask) - int64_t(pc & kPageMask)) >> 12;
        if (!fitsSigned(pages, 21)) return fail("cannot reach its target (more than 4 GiB away)");
        word = setAdrImmediate(word, pages);
        break;
      }
      case FixupKind::A64AddLo12: word = setBits(word, 10, 12, target & 0xfff); break;
      case FixupKind::A64LdStLo12:
        if (target & ((uint64_t(1) << f.scale) - 1))
          return fail("cannot hold target ", hexAddress(target), ": it is not aligned to the access size");
        word = setBits(word, 10, 12, (target & 0xfff) >> f.scale);
        break;
      default: return notAField(f.kind, name());
      }
    }
    writeLe32(instruction.data(), word);
    return success();
  }

  void adoptField(const InstructionField &f, std::span<uint8_t> instruction) const override {
    if (f.kind == FixupKind::A64AdrPage21) writeLe32(instruction.data(), readLe32(instruction.data()) | 0x80000000u);
  }

  std::span<const uint8_t> absoluteJump() const override { return kJumpThroughSlot; }
  BranchIsland directJump() const override {
    static constexpr uint8_t branch[] = {kBranch & 0xff, (kBranch >> 8) & 0xff, (kBranch >> 16) & 0xff, kBranch >> 24};
    return {branch, {FixupKind::A64Branch26}};
  }

  // ADD Xd, Xn, #off: ADRP+ADD into Xd. LDR/STR Rt, [Xn, #off]: ADRP into Rt when it is a loaded
  // GPR, then the load from it; otherwise ADRP into x16 (x17 when the access uses x16), saved on
  // the stack around the access.
  std::optional<AccessIsland> accessIsland(std::span<const uint8_t> at) const override {
    constexpr uint32_t kPushX16 = 0xf81f0ff0, kPopX16 = 0xf84107f0;  // str x16, [sp, #-16]! / ldr x16, [sp], #16
    uint32_t instruction = readLe32(at.data());
    uint32_t rt = instruction & 0x1f;
    bool isAdd = (instruction & 0xff800000u) == 0x91000000u;        // ADD Xd, Xn, #imm{, lsl #12}
    bool isLoadStore = (instruction & 0x3b000000u) == 0x39000000u;  // unsigned-offset LDR/STR/PRFM
    if ((!isAdd && !isLoadStore) || (isAdd && rt == 31)) return std::nullopt;
    bool simd = instruction >> 26 & 1;
    uint32_t size = instruction >> 30, opc = instruction >> 22 & 3;
    bool gprLoad = isLoadStore && !simd && opc != 0 && !(size == 3 && opc == 2) && rt != 31;
    uint32_t scratch = isAdd || gprLoad ? rt : rt == 16 ? 17 : 16;
    bool saves = !isAdd && !gprLoad;
    std::vector<uint32_t> words;
    AccessIsland island;
    if (saves) words.push_back(kPushX16 - 16 + scratch);
    island.fields.push_back({uint32_t(words.size() * 4), {FixupKind::A64AdrPage21}});
    words.push_back(0x90000000u | scratch);  // adrp scratch, page of the data
    uint8_t scale = isAdd ? 0 : uint8_t(simd ? size | (opc >> 1) << 2 : size);
    island.fields.push_back({uint32_t(words.size() * 4),
                             {isAdd ? FixupKind::A64AddLo12 : FixupKind::A64LdStLo12, 0, 0, scale}});
    words.push_back(isAdd ? 0x91000000u | scratch << 5 | rt
                          : (instruction & ~(0xfffu << 10) & ~(0x1fu << 5)) | scratch << 5);
    if (saves) words.push_back(kPopX16 - 16 + scratch);
    island.code.resize(words.size() * 4);
    for (size_t i = 0; i < words.size(); ++i) writeLe32(&island.code[i * 4], words[i]);
    island.resume = 4;
    return island;
  }

  // The unsigned 12-bit immediate of ADD or LDR/STR, scaled by the access size.
  bool reaimOffset(std::span<uint8_t> at, uint64_t patchedDistance, uint64_t distance) const override {
    uint32_t instruction = readLe32(at.data());
    uint64_t immediate = (instruction >> 10) & 0xfff;
    if (immediate == 0 || patchedDistance % immediate != 0) return false;
    uint64_t scale = patchedDistance / immediate;
    if (distance % scale != 0 || distance / scale > 0xfff) return false;
    writeLe32(at.data(), (instruction & ~(0xfffu << 10)) | uint32_t(distance / scale) << 10);
    return true;
  }
  std::optional<BranchIsland> islandFor(FixupKind) const override { return std::nullopt; }

  bool reachesBase(FixupKind kind) const override {
    return kind != FixupKind::A64Adr21 && kind != FixupKind::A64Literal19;
  }

  // The linker relaxes ADRP+ADD into NOP+ADR when the target is near; the base is not near the
  // image, so the pair becomes ADRP+ADD again.
  std::vector<std::pair<uint32_t, InstructionField>> widen(std::span<uint8_t> code, uint32_t at,
                                                           const InstructionField &field) const override {
    constexpr uint32_t kNop = 0xd503201f;
    if (field.kind != FixupKind::A64Adr21 || at < 4 || at + 4 > code.size() || readLe32(&code[at - 4]) != kNop)
      return {};
    uint32_t rd = readLe32(&code[at]) & 0x1f;
    writeLe32(&code[at - 4], 0x90000000u | rd);             // adrp xd, page
    writeLe32(&code[at], 0x91000000u | (rd << 5) | rd);     // add xd, xd, #lo12
    return {{at - 4, {FixupKind::A64AdrPage21}}, {at, {FixupKind::A64AddLo12}}};
  }

  bool wantsVeneer(const InstructionField &f, std::span<const uint8_t>) const override {
    return f.kind == FixupKind::A64Branch26;
  }

  // .pdata {Begin, UnwindData}. The low two bits of UnwindData say whether it is packed (1:
  // function, 2: fragment without prologue) with the length in bits 2..12, or the RVA of an .xdata
  // record whose first word holds the length in bits 0..17. Lengths count instructions.
  size_t pdataEntrySize() const override { return 8; }
  Outcome<PdataEntry> readPdataEntry(std::span<const uint8_t> entry, size_t index,
                                     const RvaReader &bytesAt) const override {
    uint32_t begin = readLe32(&entry[0]), unwind = readLe32(&entry[4]);
    uint32_t instructions = 0;
    switch (unwind & 3) {
    case 0: {
      Outcome<std::span<const uint8_t>> xdata = bytesAt(unwind, 4, ".xdata record");
      if (!xdata) return std::move(xdata).failure();
      instructions = readLe32(xdata->data()) & 0x3ffff;
      break;
    }
    case 1:
    case 2: instructions = (unwind >> 2) & 0x7ff; break;
    default: return fail(".pdata entry ", index, " uses reserved unwind flag 3");
    }
    return PdataEntry{begin, begin + uint64_t(instructions) * 4, begin};
  }

  std::optional<uint64_t> importThunkSlot(std::span<const uint8_t> code, uint64_t rva) const override {
    if (code.size() < 12) return std::nullopt;
    uint32_t adrp = readLe32(&code[0]), ldr = readLe32(&code[4]), br = readLe32(&code[8]);
    // adrp x16, page; ldr x16, [x16, #imm]; br x16
    if ((adrp & 0x9f00001f) != 0x90000010 || (ldr & 0xffc003ff) != 0xf9400210 || br != 0xd61f0200) return std::nullopt;
    return readField({FixupKind::A64AdrPage21}, code, rva) +
           readField({FixupKind::A64LdStLo12, 0, 0, 3}, code.subspan(4), rva + 4);
  }

  bool hazardousPlacement(std::span<const uint8_t> code, uint64_t rva) const override {
    constexpr uint32_t kAdrOrAdrpMask = 0x1f000000, kAdrOrAdrp = 0x10000000, kNop = 0xd503201f;
    auto isAdrOrAdrp = [&](uint64_t offset) {
      return offset + 4 <= code.size() && (readLe32(code.data() + offset) & kAdrOrAdrpMask) == kAdrOrAdrp;
    };
    for (uint64_t offset = 0; offset + 4 <= code.size(); offset += 4) {
      uint64_t inPage = (rva + offset) & 0xfff;
      if (inPage != 0xff8 && inPage != 0xffc) continue;
      if (isAdrOrAdrp(offset) || (readLe32(code.data() + offset) == kNop && isAdrOrAdrp(offset + 4))) return true;
    }
    return false;
  }

  Status chooseRedirect(const RedirectSite &site, PatchRedirect &r) const override {
    uint32_t first = site.code.size() >= 4 ? readLe32(site.code.data()) : 0;
    r.entryOffset = isBti(first) ? 4 : 0;
    if (site.code.size() < r.entryOffset + 4u) return fail(site.name, " cannot take a branch at its entry: it is too short");
    r.kind = RedirectKind::A64Branch;
    r.overwrittenOffset = r.entryOffset;
    r.overwrittenSize = 4;
    return success();
  }

  bool writesRedirect(RedirectKind kind) const override {
    return kind == RedirectKind::A64Branch || kind == RedirectKind::A64Absolute;
  }

  Status writeRedirect(const PatchRedirect &r, uint64_t, uint64_t imageAddress, EntryWrite &w) const override {
    BranchIsland branch = directJump();
    switch (r.kind) {
    case RedirectKind::A64Branch:
      return aimJump(*this, branch.bytes, branch.field, w.address, w.address, r, imageAddress, w.bytes);
    case RedirectKind::A64Absolute: w.bytes = jumpThroughSlot(*this, imageAddress + r.patchRva); return success();
    default: return fail("redirect kind ", redirectKindName(r.kind), " does not fit a ", name(), " image");
    }
  }
};

}  // namespace

const MachineTarget &arm64Target() {
  static const Arm64Target target;
  return target;
}

}  // namespace hotforge
