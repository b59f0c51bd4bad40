// x86-64: rel8/rel32 displacements from the instruction's end and relocated 64-bit immediates;
// entry redirects by E9 rel32, EB rel8 via padding, or FF 25 absolute.
#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"
#include "target_common.h"

#include <algorithm>
#include <cstdlib>

namespace hotforge {
namespace {

constexpr uint8_t kEndbr64[] = {0xf3, 0x0f, 0x1e, 0xfa};
constexpr uint8_t kJumpRel32[] = {0xe9, 0, 0, 0, 0};
constexpr uint8_t kJumpThroughSlot[] = {0xff, 0x25, 0, 0, 0, 0};  // jmp [rip+0]: the slot follows
constexpr InstructionField kJumpRel32Field{FixupKind::X64Rel32, 1, 5, 0};

class X64Target final : public MachineTarget {
public:
  Machine machine() const override { return Machine::X64; }
  std::string_view name() const override { return "x64"; }
  uint16_t recordCode() const override { return 1; }
  uint16_t elfMachine() const override { return 62; }     // EM_X86_64
  uint16_t coffMachine() const override { return 0x8664; }  // IMAGE_FILE_MACHINE_AMD64
  uint32_t hotPatchBaseMachine() const override { return 0x10; }
  uint64_t patchReach() const override { return uint64_t(1) << 30; }

  FieldMeaning meaning(FixupKind kind) const override {
    switch (kind) {
    case FixupKind::X64Rel8:
    case FixupKind::X64Rel32: return FieldMeaning::Distance;
    case FixupKind::X64Abs64: return FieldMeaning::Absolute;
    default: return FieldMeaning::None;
    }
  }

  std::optional<FieldBits> fieldBits(const InstructionField &f) const override {
    unsigned width = f.kind == FixupKind::X64Rel8 ? 1 : f.kind == FixupKind::X64Rel32 ? 4 : f.kind == FixupKind::X64Abs64 ? 8 : 0;
    if (!width) return std::nullopt;
    return FieldBits{f.fieldOffset, f.fieldOffset + width, 0};
  }

  uint64_t readField(const InstructionField &f, std::span<const uint8_t> instruction, uint64_t pc) const override {
    const uint8_t *at = &instruction[f.fieldOffset];
    uint64_t end = pc + f.instructionSize;
    switch (f.kind) {
    case FixupKind::X64Rel8: return end + int8_t(*at);
    case FixupKind::X64Rel32: return end + int32_t(readLe32(at));
    case FixupKind::X64Abs64: return readLe64(at);
    default: return 0;
    }
  }

  Status writeField(const InstructionField &f, std::span<uint8_t> instruction, uint64_t pc,
                    uint64_t target) const override {
    uint8_t *at = &instruction[f.fieldOffset];
    int64_t distance = int64_t(target - (pc + f.instructionSize));
    switch (f.kind) {
    case FixupKind::X64Rel8:
      if (!fitsSigned(distance, 8)) return outOfReach(distance);
      *at = uint8_t(distance);
      return success();
    case FixupKind::X64Rel32:
      if (!fitsSigned(distance, 32)) return outOfReach(distance);
      writeLe32(at, uint32_t(distance));
      return success();
    case FixupKind::X64Abs64: writeLe64(at, target); return success();
    default: return notAField(f.kind, name());
    }
  }

  void adoptField(const InstructionField &, std::span<uint8_t>) const override {}

  std::span<const uint8_t> absoluteJump() const override { return kJumpThroughSlot; }
  BranchIsland directJump() const override { return {kJumpRel32, kJumpRel32Field}; }
  // x64 code forms no address that a later instruction offsets: every access is RIP-relative.
  std::optional<AccessIsland> accessIsland(std::span<const uint8_t>) const override { return std::nullopt; }
  bool reaimOffset(std::span<uint8_t>, uint64_t, uint64_t) const override { return false; }

  std::optional<BranchIsland> islandFor(FixupKind kind) const override {
    if (kind != FixupKind::X64Rel8) return std::nullopt;
    return BranchIsland{kJumpRel32, kJumpRel32Field};
  }

  bool reachesBase(FixupKind) const override { return true; }
  std::vector<std::pair<uint32_t, InstructionField>> widen(std::span<uint8_t>, uint32_t,
                                                           const InstructionField &) const override {
    return {};
  }

  // rel32 branches and calls end in their field; RIP-relative operands may not, and are data
  // accesses, which a veneer cannot serve.
  bool wantsVeneer(const InstructionField &f, std::span<const uint8_t> instruction) const override {
    if (f.kind != FixupKind::X64Rel32 || f.fieldOffset + 4 != f.instructionSize || f.fieldOffset == 0) return false;
    uint8_t opcode = instruction[f.fieldOffset - 1];
    return opcode == 0xe8 || opcode == 0xe9 ||
           (f.fieldOffset >= 2 && instruction[f.fieldOffset - 2] == 0x0f && (opcode & 0xf0) == 0x80);
  }

  // RUNTIME_FUNCTION {Begin, End, UnwindInfo}. An entry whose UNWIND_INFO is chained describes a
  // part of the function it chains to (hot/cold splitting, shrink-wrapping).
  size_t pdataEntrySize() const override { return 12; }
  Outcome<PdataEntry> readPdataEntry(std::span<const uint8_t> entry, size_t index,
                                     const RvaReader &bytesAt) const override {
    constexpr uint8_t kUnwindFlagChainInfo = 0x4;
    uint32_t begin = readLe32(&entry[0]), end = readLe32(&entry[4]), unwind = readLe32(&entry[8]);
    if (end <= begin) return fail(".pdata entry ", index, " has end ", hexAddress(end), " <= begin ", hexAddress(begin));
    uint32_t parent = begin;
    if (unwind & 1) {
      // The low bit marks an indirect entry: UnwindData is the RVA of the parent RUNTIME_FUNCTION.
      Outcome<std::span<const uint8_t>> rf = bytesAt(unwind & ~1u, 12, "chained RUNTIME_FUNCTION");
      if (!rf) return std::move(rf).failure();
      parent = readLe32(rf->data());
    } else {
      Outcome<std::span<const uint8_t>> header = bytesAt(unwind, 4, "UNWIND_INFO");
      if (!header) return std::move(header).failure();
      if (((*header)[0] >> 3) & kUnwindFlagChainInfo) {
        uint32_t codes = (*header)[2];
        uint32_t chained = unwind + 4 + ((codes + 1) & ~1u) * 2;
        Outcome<std::span<const uint8_t>> rf = bytesAt(chained, 12, "chained RUNTIME_FUNCTION");
        if (!rf) return std::move(rf).failure();
        parent = readLe32(rf->data());
      }
    }
    return PdataEntry{begin, end, parent};
  }

  std::optional<uint64_t> importThunkSlot(std::span<const uint8_t> code, uint64_t rva) const override {
    if (code.size() < 6 || code[0] != 0xff || code[1] != 0x25) return std::nullopt;  // jmp [rip+disp32]
    return rva + 6 + uint64_t(int64_t(int32_t(readLe32(&code[2]))));
  }
  bool hazardousPlacement(std::span<const uint8_t>, uint64_t) const override { return false; }

  Status chooseRedirect(const RedirectSite &site, PatchRedirect &r) const override {
    r.entryOffset = site.code.size() >= 4 && std::equal(std::begin(kEndbr64), std::end(kEndbr64), site.code.begin()) ? 4 : 0;
    if (chooseEntry(site, r)) return success();
    return fail(site.name, " is ", site.code.size(),
                " bytes: too short for a 5-byte jump, with no 5 bytes of padding after it or within a short jump's "
                "reach, so it cannot be redirected without overwriting the next function (needs restart)");
  }

  bool writesRedirect(RedirectKind kind) const override {
    return kind == RedirectKind::X64Jump32 || kind == RedirectKind::X64ShortJump || kind == RedirectKind::X64Absolute;
  }

  Status writeRedirect(const PatchRedirect &r, uint64_t baseAddress, uint64_t imageAddress,
                       EntryWrite &w) const override {
    uint64_t entry = w.address;
    switch (r.kind) {
    case RedirectKind::X64Jump32:
      return aimJump(*this, kJumpRel32, kJumpRel32Field, entry, entry, r, imageAddress, w.bytes);
    case RedirectKind::X64ShortJump: {
      // E9 rel32 in the padding at jumpOffset, EB rel8 to it at the entry, written as one run; the
      // bytes between them (endbr64, the rest of a short function) are written unchanged.
      uint64_t jumpAt = baseAddress + r.baseRva + int64_t(r.jumpOffset);
      uint64_t from = std::min(jumpAt, entry), to = std::max(jumpAt + 5, entry + 2);
      if (from < w.expectedAddress || to - w.expectedAddress > r.expected.size() ||
          !fitsSigned(int64_t(jumpAt - (entry + 2)), 8) || (jumpAt < entry + 2 && jumpAt + 5 > entry))
        return fail(r.name.value_or("a function"), ": the short-jump redirect lacks its expected bytes or its padding");
      std::vector<uint8_t> jump;
      if (Status aimed = aimJump(*this, kJumpRel32, kJumpRel32Field, jumpAt, entry, r, imageAddress, jump); !aimed)
        return aimed;
      w.address = from;
      auto kept = r.expected.begin() + (from - w.expectedAddress);
      w.bytes.assign(kept, kept + (to - from));
      std::copy(jump.begin(), jump.end(), w.bytes.begin() + (jumpAt - from));
      w.bytes[entry - from] = 0xeb;
      w.bytes[entry - from + 1] = uint8_t(int8_t(int64_t(jumpAt) - int64_t(entry + 2)));
      return success();
    }
    case RedirectKind::X64Absolute: w.bytes = jumpThroughSlot(*this, imageAddress + r.patchRva); return success();
    default: return fail("redirect kind ", redirectKindName(r.kind), " does not fit a ", name(), " image");
    }
  }

private:
  // E9 rel32 at the entry when the function, with the fill after it, has 5 bytes; else EB rel8
  // to an E9 in the nearest fill within its reach whose span with the entry `expected` can hold.
  // The short jump wins where the function's own branches land in the E9's bytes but not in the
  // EB's: it then needs no quiescence.
  static bool chooseEntry(const RedirectSite &site, PatchRedirect &r) {
    int64_t entry = r.entryOffset, size = int64_t(site.size);
    bool jumpFits = size >= entry + 5 || (size > entry && site.isFill(site.rva + site.size, uint32_t(entry + 5 - size)));
    std::optional<int64_t> shortJump;
    if (size >= entry + 2 &&
        (!jumpFits || (site.branchFloor < uint64_t(entry + 5) && site.branchFloor >= uint64_t(entry + 2))))
      for (int64_t jump = entry + 2 - 128; jump <= entry + 2 + 127; ++jump) {
        int64_t from = std::min(jump, entry), to = std::max(jump + 5, entry + 2);
        bool apart = jump + 5 <= entry || jump >= entry + 2;
        if (!apart || to - std::min<int64_t>(from, 0) > int64_t(kMaxExpectedBytes) || int64_t(site.rva) + jump < 0)
          continue;
        if (shortJump && std::abs(jump - entry) >= std::abs(*shortJump - entry)) continue;
        if (site.isFill(site.rva + jump, 5)) shortJump = jump;
      }
    if (shortJump) {
      r.kind = RedirectKind::X64ShortJump;
      r.jumpOffset = int32_t(*shortJump);
      r.overwrittenOffset = int32_t(std::min(*shortJump, entry));
      r.overwrittenSize = uint32_t(std::max(*shortJump + 5, entry + 2) - r.overwrittenOffset);
      return true;
    }
    if (!jumpFits) return false;
    r.kind = RedirectKind::X64Jump32;
    r.overwrittenOffset = int32_t(entry);
    r.overwrittenSize = 5;
    return true;
  }
};

}  // namespace

const MachineTarget &x64Target() {
  static const X64Target target;
  return target;
}

}  // namespace hotforge
