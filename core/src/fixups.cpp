// Applying fixups: what a loader does once it knows where the base and the image are mapped.
// Tests use it to check an image against the patched build instruction by instruction.
#include "hotforge/core/bytes.h"
#include "hotforge/core/patch_format.h"

namespace hotforge {

std::vector<uint8_t> layOut(const PatchImage &image) {
  std::vector<uint8_t> memory(image.imageSize, 0);
  for (const PatchSection &s : image.sections)
    if (s.rva + s.bytes.size() <= memory.size()) std::copy(s.bytes.begin(), s.bytes.end(), memory.begin() + s.rva);
  return memory;
}

namespace {

bool fitsSigned(int64_t value, unsigned bits) {
  return value >= -(int64_t(1) << (bits - 1)) && value < (int64_t(1) << (bits - 1));
}

uint32_t setBits(uint32_t instruction, unsigned low, unsigned width, uint64_t value) {
  uint32_t mask = ((1u << width) - 1) << low;
  return (instruction & ~mask) | ((uint32_t(value) << low) & mask);
}

uint32_t setAdrImmediate(uint32_t instruction, int64_t value) {
  instruction = setBits(instruction, 29, 2, uint64_t(value) & 3);
  return setBits(instruction, 5, 19, uint64_t(value >> 2));
}

}  // namespace

std::string importDisplayName(const PatchImport &import) {
  return "`" + import.symbol + (import.version.empty() ? "" : "@" + import.version) + "`" +
         (import.library.empty() ? "" : " from " + import.library);
}

Outcome<std::vector<uint64_t>> resolveImports(const PatchImage &image, const ImportResolver &resolve) {
  std::vector<uint64_t> addresses;
  std::string missing;
  for (const PatchImport &import : image.imports) {
    Outcome<uint64_t> address = resolve(import);
    if (address) addresses.push_back(*address);
    else missing += (missing.empty() ? "" : "; ") + importDisplayName(import) + ": " + address.error();
  }
  if (!missing.empty()) return fail("the patch needs symbols the process cannot resolve, so nothing was written: ", missing);
  return addresses;
}

Status applyFixups(const PatchImage &image, uint64_t baseAddress, uint64_t imageAddress,
                   std::span<const uint64_t> importAddresses, std::span<uint8_t> memory) {
  for (const PatchFixup &f : image.fixups) {
    uint64_t target = 0;
    switch (f.space) {
    case FixupSpace::Image: target = imageAddress + f.target; break;
    case FixupSpace::Base: target = baseAddress + f.target; break;
    case FixupSpace::Import:
      if (f.target >= importAddresses.size())
        return fail("fixup at image rva ", hexAddress(f.site), " needs import ", f.target, ", which is not resolved");
      target = importAddresses[f.target];
      break;
    }
    uint64_t site = imageAddress + f.site;
    size_t width = f.kind == FixupKind::Data64 || f.kind == FixupKind::X64Abs64 || f.kind == FixupKind::Data64PcRel ? 8 : 4;
    size_t field = f.site + (f.kind == FixupKind::X64Rel32 || f.kind == FixupKind::X64Abs64 ? f.fieldOffset : 0);
    if (field + width > memory.size())
      return fail("fixup at image rva ", hexAddress(f.site), " lies outside the image (", memory.size(), " bytes)");
    uint8_t *at = &memory[field];
    auto reach = [&](int64_t distance, unsigned bits, unsigned shift) -> Outcome<int64_t> {
      if ((distance & ((int64_t(1) << shift) - 1)) == 0 && fitsSigned(distance >> shift, bits)) return distance >> shift;
      if (f.veneer) {
        int64_t viaVeneer = int64_t(imageAddress + f.veneer - site);
        if (fitsSigned(viaVeneer >> shift, bits)) return viaVeneer >> shift;
      }
      return fail("fixup ", fixupKindName(f.kind), " at image rva ", hexAddress(f.site), " cannot reach its target (",
                  hexAddress(uint64_t(distance)), " bytes away)");
    };
    uint32_t instruction = width == 4 ? readLe32(at) : 0;
    switch (f.kind) {
    case FixupKind::X64Rel32: {
      Outcome<int64_t> v = reach(int64_t(target - (site + f.instructionSize)), 32, 0);
      if (!v) return std::move(v).failure();
      if (f.veneer && *v != int64_t(target - (site + f.instructionSize)))
        *v = int64_t(imageAddress + f.veneer - (site + f.instructionSize));
      writeLe32(at, uint32_t(*v));
      break;
    }
    case FixupKind::X64Abs64:
    case FixupKind::Data64: writeLe64(at, target); break;
    case FixupKind::Data64PcRel: writeLe64(at, target - site); break;
    case FixupKind::Data32PcRel: {
      int64_t v = int64_t(target - site);
      if (!fitsSigned(v, 32)) return fail("data fixup at image rva ", hexAddress(f.site), " cannot reach its target");
      writeLe32(at, uint32_t(v));
      break;
    }
    case FixupKind::A64Branch26:
    case FixupKind::A64Branch19:
    case FixupKind::A64Branch14:
    case FixupKind::A64Literal19: {
      unsigned bits = f.kind == FixupKind::A64Branch26 ? 26 : f.kind == FixupKind::A64Branch14 ? 14 : 19;
      Outcome<int64_t> v = reach(int64_t(target - site), bits, 2);
      if (!v) return std::move(v).failure();
      writeLe32(at, bits == 26 ? setBits(instruction, 0, 26, uint64_t(*v)) : setBits(instruction, 5, bits, uint64_t(*v)));
      break;
    }
    case FixupKind::A64Adr21: {
      Outcome<int64_t> v = reach(int64_t(target - site), 21, 0);
      if (!v) return std::move(v).failure();
      writeLe32(at, setAdrImmediate(instruction, *v));
      break;
    }
    case FixupKind::A64AdrPage21: {
      int64_t pages = (int64_t(target & ~uint64_t(0xfff)) - int64_t(site & ~uint64_t(0xfff))) >> 12;
      if (!fitsSigned(pages, 21))
        return fail("ADRP at image rva ", hexAddress(f.site), " cannot reach its target (more than 4 GiB away)");
      writeLe32(at, setAdrImmediate(instruction, pages));
      break;
    }
    case FixupKind::A64AddLo12: writeLe32(at, setBits(instruction, 10, 12, target & 0xfff)); break;
    case FixupKind::A64LdStLo12: {
      if (target & ((uint64_t(1) << f.scale) - 1))
        return fail("load/store at image rva ", hexAddress(f.site), ": target ", hexAddress(target),
                    " is not aligned to its access size");
      writeLe32(at, setBits(instruction, 10, 12, (target & 0xfff) >> f.scale));
      break;
    }
    }
  }
  return success();
}

}  // namespace hotforge
