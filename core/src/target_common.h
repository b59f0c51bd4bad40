// What the machine targets share (machine_target.h): range checks, refusals, and jumps aimed
// through the field codec.
#pragma once

#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"

namespace hotforge {

const MachineTarget &x64Target();
const MachineTarget &arm64Target();

inline bool fitsSigned(int64_t value, unsigned bits) {
  return value >= -(int64_t(1) << (bits - 1)) && value < (int64_t(1) << (bits - 1));
}

inline Failure outOfReach(int64_t distance) {
  return fail("cannot reach its target (", hexAddress(uint64_t(distance)), " bytes away)");
}

inline Failure notAField(FixupKind kind, std::string_view machine) {
  return fail("is ", fixupKindName(kind), ", not an instruction field of ", machine);
}

// `jump` placed at `pc` with `field` aimed at the new function of `redirect`, or at its stub when
// the function is out of reach.
inline Status aimJump(const MachineTarget &target, std::span<const uint8_t> jump, const InstructionField &field,
                      uint64_t pc, uint64_t entry, const PatchRedirect &redirect, uint64_t imageAddress,
                      std::vector<uint8_t> &out) {
  uint64_t function = imageAddress + redirect.patchRva, stub = imageAddress + redirect.stubRva;
  out.assign(jump.begin(), jump.end());
  for (uint64_t to : {function, stub})
    if ((to != stub || redirect.stubRva) && target.writeField(field, out, pc, to)) return success();
  return fail(redirect.name.value_or("a function"), " at ", hexAddress(entry), ": the patch at ", hexAddress(function),
              " is out of reach of a ", redirectKindName(redirect.kind), " jump");
}

// The machine's absolute jump with its slot holding `address`.
inline std::vector<uint8_t> jumpThroughSlot(const MachineTarget &target, uint64_t address) {
  std::vector<uint8_t> bytes(target.absoluteJump().begin(), target.absoluteJump().end());
  bytes.resize(bytes.size() + 8);
  writeLe64(&bytes[bytes.size() - 8], address);
  return bytes;
}

}  // namespace hotforge
