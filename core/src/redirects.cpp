// The bytes a loader writes at the entry of a changed base function (docs/format.md, "Redirects").
#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/patch_format.h"

#include <algorithm>

namespace hotforge {
AddressSpan overwrittenSpan(const PatchRedirect &r, uint64_t baseAddress) {
  uint64_t begin = baseAddress + r.baseRva + int64_t(r.overwrittenOffset);
  return {begin, begin + r.overwrittenSize};
}

std::string threadInTheWay(const PatchRedirect &r, uint64_t baseAddress, uint64_t pc, std::span<const uint64_t> stack,
                           bool strict) {
  std::string name = r.name.value_or("a function");
  if (overwrittenSpan(r, baseAddress).strictlyContains(pc)) return fail("is at ", hexAddress(pc), " inside ", name).message;
  if (!strict && !r.quiescent) return "";
  AddressSpan function{baseAddress + r.baseRva, baseAddress + r.baseRva + r.baseSize};
  if (function.contains(pc)) return fail("runs in ", name, " (at ", hexAddress(pc), ")").message;
  for (uint64_t word : stack)
    if (function.strictlyContains(word))  // a return address points after a call, never at the entry
      return fail("has ", name, " on its stack (return address ", hexAddress(word), ")").message;
  return "";
}

Outcome<EntryWrite> entryWrite(const PatchRedirect &r, Machine machine, uint64_t baseAddress, uint64_t imageAddress) {
  const MachineTarget &target = machineTarget(machine);
  if (!target.writesRedirect(r.kind))
    return fail("redirect kind ", redirectKindName(r.kind), " does not fit a ", target.name(), " image");
  EntryWrite w;
  w.address = baseAddress + r.baseRva + r.entryOffset;
  w.expectedAddress = baseAddress + r.baseRva - r.paddingBefore;
  if (Status written = target.writeRedirect(r, baseAddress, imageAddress, w); !written) return std::move(written).failure();
  return w;
}

}  // namespace hotforge
