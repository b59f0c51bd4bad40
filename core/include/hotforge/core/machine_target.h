// One object per machine (after lld's TargetInfo from getTarget()): everything Hotforge knows
// about an instruction set that is not decoding with LLVM MC: the instruction fields that hold an
// address (one codec reads and writes them), branch reach, entry redirects, absolute-jump stubs,
// branch islands and veneers, and the machine's ids in ELF, COFF and the records. Every other
// file asks this object; a new machine is one file (its MachineTarget) and one line in
// machineTarget() (targets.cpp). Like the rest of the runtime it needs only the standard library.
#pragma once

#include "hotforge/core/patch_format.h"

#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace hotforge {

// Where an address sits in an instruction: its kind and, for kinds inside longer instructions
// (x64), where.
struct InstructionField {
  FixupKind kind = FixupKind::None;
  uint8_t fieldOffset = 0;      // x64: where the field starts within the instruction
  uint8_t instructionSize = 0;  // x64: distances count from the instruction's end
  uint8_t scale = 0;            // A64LdStLo12: log2 of the access size
};

// What a field's value means.
enum class FieldMeaning : uint8_t {
  None,        // not an address field of this machine
  Distance,    // target - pc (or the instruction's end): unchanged when the code moves whole
  Absolute,    // the address itself (a relocated immediate)
  Page,        // the target's 4 KiB page, counted from the pc's page
  PageOffset,  // the target's offset within its page
};

// The bytes [begin, end) of an instruction that hold a field, of which only the bits in `mask`
// (per little-endian 32-bit word; all bits when 0) hold the address.
struct FieldBits {
  uint32_t begin = 0, end = 0;
  uint32_t mask = 0;
};

// A branch island: code placed after a function for a branch whose field cannot leave it (x64
// jmp rel8), and the field in it that a fixup aims at the target.
struct BranchIsland {
  std::span<const uint8_t> bytes;
  InstructionField field;
};

// Code placed out of line for one instruction that reached data at an offset from an address an
// earlier instruction formed: it forms the data's own address instead and does the access
// (Arm64: ADRP into a register, then the ADD or the load/store from it). `fields` (by offset in
// `code`) are aimed at the data; the island ends with a jump back (directJump()) to `resume`
// bytes after the instruction.
struct AccessIsland {
  std::vector<uint8_t> code;
  std::vector<std::pair<uint32_t, InstructionField>> fields;
  uint32_t resume = 0;
};

// A base function whose entry gets a redirect.
struct RedirectSite {
  std::span<const uint8_t> code;  // the function's bytes in the file
  uint64_t rva = 0, size = 0;
  uint64_t branchFloor = UINT64_MAX;  // the lowest offset after the entry its own branches reach
  // Whether the `bytes` bytes at base rva `rva` are fill that no function owns.
  std::function<bool(uint64_t rva, uint32_t bytes)> isFill;
  std::string name;  // for refusals
};

// One entry of a PE exception directory (.pdata) as a reader lists functions: the code
// [begin, end) it covers and the begin of the entry it unwinds as part of (its own begin unless
// it is chained to another).
struct PdataEntry {
  uint32_t begin = 0;
  uint64_t end = 0;
  uint32_t parent = 0;
};
// The image's bytes at [rva, rva + size), or why not (the message names them `what`).
using RvaReader = std::function<Outcome<std::span<const uint8_t>>(uint32_t rva, uint32_t size, const char *what)>;

class MachineTarget {
public:
  virtual ~MachineTarget() = default;

  virtual Machine machine() const = 0;
  virtual std::string_view name() const = 0;  // "x64", "arm64"
  virtual uint16_t recordCode() const = 0;    // in the records' header (docs/format.md)
  virtual uint16_t elfMachine() const = 0;    // e_machine
  virtual uint16_t coffMachine() const = 0;   // IMAGE_FILE_MACHINE_*
  virtual uint32_t hotPatchBaseMachine() const = 0;  // IMAGE_HOT_PATCH_BASE machine flag
  // How near the base a loader maps an image, so that direct branches and the fixups reach.
  virtual uint64_t patchReach() const = 0;

  // The PE exception directory (.pdata): the size of an entry, and what entry number `index`
  // (its bytes) covers; its unwind data is read through `bytesAt`.
  virtual size_t pdataEntrySize() const = 0;
  virtual Outcome<PdataEntry> readPdataEntry(std::span<const uint8_t> entry, size_t index,
                                             const RvaReader &bytesAt) const = 0;

  // The field codec: the one place that knows how each field kind is laid out.
  virtual FieldMeaning meaning(FixupKind kind) const = 0;
  // Where `field` lies in its instruction (nothing for kinds this machine does not have).
  virtual std::optional<FieldBits> fieldBits(const InstructionField &field) const = 0;
  // The value `field` holds in `instruction` (at least fieldBits().end bytes) placed at `pc`: the
  // target for a Distance, the address for Absolute, the page's address for Page, the offset
  // (scaled back) for PageOffset.
  virtual uint64_t readField(const InstructionField &field, std::span<const uint8_t> instruction,
                             uint64_t pc) const = 0;
  // Aims `field` of `instruction` placed at `pc` at `target`; fails, saying why, when the field
  // cannot hold it (out of reach, misaligned), leaving the instruction unchanged.
  virtual Status writeField(const InstructionField &field, std::span<uint8_t> instruction, uint64_t pc,
                            uint64_t target) const = 0;
  // Makes `instruction` one that holds `field` before it is written (Arm64: an ADR that GNU ld
  // wrote for an ADRP, Cortex-A53 erratum 843419, becomes the ADRP again).
  virtual void adoptField(const InstructionField &field, std::span<uint8_t> instruction) const = 0;

  // Code the emitter places: an absolute jump through the 8-byte slot that follows these bytes
  // (stubs, veneers), and the island for a field that cannot leave its function.
  virtual std::span<const uint8_t> absoluteJump() const = 0;
  // A direct jump and its field (x64 E9 rel32, Arm64 B imm26).
  virtual BranchIsland directJump() const = 0;
  // The island for `instruction`, which reaches data at an offset from an address formed earlier
  // (nothing: it cannot be rewritten).
  virtual std::optional<AccessIsland> accessIsland(std::span<const uint8_t> instruction) const = 0;
  // Gives `instruction`, which adds `patchedDistance` to an address formed earlier, `distance`
  // instead, scaled as it scales its immediate; false when it cannot encode it.
  virtual bool reaimOffset(std::span<uint8_t> instruction, uint64_t patchedDistance, uint64_t distance) const = 0;
  virtual std::optional<BranchIsland> islandFor(FixupKind kind) const = 0;
  // Whether a field of `kind` in a mapped image reaches the base from anywhere within
  // patchReach(); the others (Arm64 ADR, LDR literal: +-1 MiB) need their data copied or widen().
  virtual bool reachesBase(FixupKind kind) const = 0;
  // Rewrites the reference with `field` at offset `at` of `code` into instructions that reach
  // anywhere, when the code around it allows (Arm64: a linker-relaxed NOP+ADR becomes ADRP+ADD
  // again): the fields to aim at the target, by offset in `code`. Empty: it cannot.
  virtual std::vector<std::pair<uint32_t, InstructionField>> widen(std::span<uint8_t> code, uint32_t at,
                                                                   const InstructionField &field) const = 0;
  // Whether a branch with `field` to the base may be out of reach once the image is mapped, so
  // it gets a veneer (an absolute jump) to fall back on.
  virtual bool wantsVeneer(const InstructionField &field, std::span<const uint8_t> instruction) const = 0;
  // When `code` (at `rva`) starts with an import thunk, the slot it jumps through: x64
  // `jmp [rip+slot]`, Arm64 `adrp x16, slot; ldr x16, [x16, :lo12:slot]; br x16` (the stubs
  // lld-link and link.exe put into .text for imports called without dllimport).
  virtual std::optional<uint64_t> importThunkSlot(std::span<const uint8_t> code, uint64_t rva) const = 0;
  // Whether `code` placed at `rva` puts an instruction where the CPU may execute it wrongly, so
  // the emitter places it elsewhere (Arm64: an ADRP, or an ADR or NOP+ADR the emitter may turn
  // into one, at page offset 0xff8 or 0xffc, Cortex-A53 erratum 843419).
  virtual bool hazardousPlacement(std::span<const uint8_t> code, uint64_t rva) const = 0;

  // The redirect for a base function's entry (kind, entry offset, overwritten bytes), or why it
  // cannot take one.
  virtual Status chooseRedirect(const RedirectSite &site, PatchRedirect &redirect) const = 0;
  virtual bool writesRedirect(RedirectKind kind) const = 0;
  // Fills `write` (address: the entry; expectedAddress set) with the bytes of `redirect` for the
  // base at `baseAddress` and the image at `imageAddress`: a jump to the new function or, when
  // that is out of reach, to its stub.
  virtual Status writeRedirect(const PatchRedirect &redirect, uint64_t baseAddress, uint64_t imageAddress,
                               EntryWrite &write) const = 0;
};

const MachineTarget &machineTarget(Machine machine);
// The machine whose target answers `matches` (readers: e_machine, COFF machine, record code).
std::optional<Machine> findMachine(const std::function<bool(const MachineTarget &)> &matches);
// The machine this code runs on (the agent, the ptrace loader).
Machine hostMachine();

}  // namespace hotforge
