// The bytes a loader writes at the entry of a changed base function (docs/format.md, "Redirects").
#include "hotforge/core/bytes.h"
#include "hotforge/core/patch_format.h"

#include <algorithm>

namespace hotforge {
namespace {

bool fitsSigned(int64_t value, unsigned bits) {
  return value >= -(int64_t(1) << (bits - 1)) && value < (int64_t(1) << (bits - 1));
}

std::vector<uint8_t> x64Jump32(uint64_t from, uint64_t to) {
  std::vector<uint8_t> bytes{0xe9, 0, 0, 0, 0};
  writeLe32(&bytes[1], uint32_t(to - (from + 5)));
  return bytes;
}

}  // namespace

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
  uint64_t entry = baseAddress + r.baseRva + r.entryOffset;
  uint64_t function = imageAddress + r.patchRva, stub = imageAddress + r.stubRva;
  EntryWrite w;
  w.address = entry;
  w.expectedAddress = baseAddress + r.baseRva - r.paddingBefore;
  auto reachable = [&](uint64_t from, unsigned bits, unsigned shift) -> Outcome<uint64_t> {
    for (uint64_t to : {function, stub})
      if ((to != stub || r.stubRva) && fitsSigned(int64_t(to - from) >> shift, bits)) return to;
    return fail(r.name.value_or("a function"), " at ", hexAddress(entry), ": the patch at ", hexAddress(function),
                " is out of reach of a ", redirectKindName(r.kind), " jump");
  };
  bool wantsArm64 = r.kind == RedirectKind::A64Branch || r.kind == RedirectKind::A64Absolute;
  if (wantsArm64 != (machine == Machine::Arm64))
    return fail("redirect kind ", redirectKindName(r.kind), " does not fit a ", machineName(machine), " image");
  switch (r.kind) {
  case RedirectKind::X64Jump32: {
    Outcome<uint64_t> to = reachable(entry + 5, 32, 0);
    if (!to) return std::move(to).failure();
    w.bytes = x64Jump32(entry, *to);
    break;
  }
  case RedirectKind::X64ShortJump: {
    // E9 rel32 in the padding at jumpOffset, EB rel8 to it at the entry, written as one run; the
    // bytes between them (endbr64, the rest of a short function) are written unchanged.
    uint64_t jumpAt = baseAddress + r.baseRva + int64_t(r.jumpOffset);
    uint64_t from = std::min(jumpAt, entry), to = std::max(jumpAt + 5, entry + 2);
    if (from < w.expectedAddress || to - w.expectedAddress > r.expected.size() ||
        !fitsSigned(int64_t(jumpAt - (entry + 2)), 8) || (jumpAt < entry + 2 && jumpAt + 5 > entry))
      return fail(r.name.value_or("a function"), ": the short-jump redirect lacks its expected bytes or its padding");
    Outcome<uint64_t> target = reachable(jumpAt + 5, 32, 0);
    if (!target) return std::move(target).failure();
    w.address = from;
    auto kept = r.expected.begin() + (from - w.expectedAddress);
    w.bytes.assign(kept, kept + (to - from));
    std::vector<uint8_t> jump = x64Jump32(jumpAt, *target);
    std::copy(jump.begin(), jump.end(), w.bytes.begin() + (jumpAt - from));
    w.bytes[entry - from] = 0xeb;
    w.bytes[entry - from + 1] = uint8_t(int8_t(int64_t(jumpAt) - int64_t(entry + 2)));
    break;
  }
  case RedirectKind::X64Absolute:
    w.bytes = {0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // jmp [rip+0]; .quad function
    writeLe64(&w.bytes[6], function);
    break;
  case RedirectKind::A64Branch: {
    Outcome<uint64_t> to = reachable(entry, 26, 2);
    if (!to) return std::move(to).failure();
    w.bytes.resize(4);
    writeLe32(w.bytes.data(), 0x14000000u | (uint32_t(int64_t(*to - entry) >> 2) & 0x3ffffff));
    break;
  }
  case RedirectKind::A64Absolute:
    w.bytes.resize(16);
    writeLe32(&w.bytes[0], 0x58000050u);  // ldr x16, #8
    writeLe32(&w.bytes[4], 0xd61f0200u);  // br x16
    writeLe64(&w.bytes[8], function);
    break;
  }
  return w;
}

}  // namespace hotforge
