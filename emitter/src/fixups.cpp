// Applying fixups: what a loader does once it knows where the base and the image are mapped.
// Tests use it to check an image against the patched build instruction by instruction.
#include "emitter_internal.h"

#include <llvm/Support/Endian.h>

namespace hotforge {

using llvm::support::endian::read32le;
using llvm::support::endian::write32le;
using llvm::support::endian::write64le;

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

llvm::Error applyFixups(const PatchImage &image, uint64_t baseAddress, uint64_t imageAddress,
                        llvm::MutableArrayRef<uint8_t> memory) {
  for (const PatchFixup &f : image.fixups) {
    uint64_t target = (f.toBase ? baseAddress : imageAddress) + f.target;
    uint64_t site = imageAddress + f.site;
    size_t width = f.kind == FixupKind::Data64 || f.kind == FixupKind::X64Abs64 || f.kind == FixupKind::Data64PcRel ? 8 : 4;
    size_t field = f.site + (f.kind == FixupKind::X64Rel32 || f.kind == FixupKind::X64Abs64 ? f.fieldOffset : 0);
    if (field + width > memory.size())
      return formatError("fixup at image rva {:#x} lies outside the image ({} bytes)", f.site, memory.size());
    uint8_t *at = &memory[field];
    auto reach = [&](int64_t distance, unsigned bits, unsigned shift) -> llvm::Expected<int64_t> {
      if ((distance & ((int64_t(1) << shift) - 1)) == 0 && fitsSigned(distance >> shift, bits)) return distance >> shift;
      if (f.veneer) {
        int64_t viaVeneer = int64_t(imageAddress + f.veneer - site);
        if (fitsSigned(viaVeneer >> shift, bits)) return viaVeneer >> shift;
      }
      return formatError("fixup {} at image rva {:#x} cannot reach its target ({:#x} bytes away)", fixupKindName(f.kind),
                         f.site, distance);
    };
    uint32_t instruction = width == 4 ? read32le(at) : 0;
    switch (f.kind) {
    case FixupKind::X64Rel32: {
      llvm::Expected<int64_t> v = reach(int64_t(target - (site + f.instructionSize)), 32, 0);
      if (!v) return v.takeError();
      if (f.veneer && *v != int64_t(target - (site + f.instructionSize)))
        *v = int64_t(imageAddress + f.veneer - (site + f.instructionSize));
      write32le(at, uint32_t(*v));
      break;
    }
    case FixupKind::X64Abs64:
    case FixupKind::Data64: write64le(at, target); break;
    case FixupKind::Data64PcRel: write64le(at, target - site); break;
    case FixupKind::Data32PcRel: {
      int64_t v = int64_t(target - site);
      if (!fitsSigned(v, 32)) return formatError("data fixup at image rva {:#x} cannot reach its target", f.site);
      write32le(at, uint32_t(v));
      break;
    }
    case FixupKind::A64Branch26:
    case FixupKind::A64Branch19:
    case FixupKind::A64Branch14:
    case FixupKind::A64Literal19: {
      unsigned bits = f.kind == FixupKind::A64Branch26 ? 26 : f.kind == FixupKind::A64Branch14 ? 14 : 19;
      llvm::Expected<int64_t> v = reach(int64_t(target - site), bits, 2);
      if (!v) return v.takeError();
      write32le(at, bits == 26 ? setBits(instruction, 0, 26, uint64_t(*v)) : setBits(instruction, 5, bits, uint64_t(*v)));
      break;
    }
    case FixupKind::A64Adr21: {
      llvm::Expected<int64_t> v = reach(int64_t(target - site), 21, 0);
      if (!v) return v.takeError();
      write32le(at, setAdrImmediate(instruction, *v));
      break;
    }
    case FixupKind::A64AdrPage21: {
      int64_t pages = (int64_t(target & ~uint64_t(0xfff)) - int64_t(site & ~uint64_t(0xfff))) >> 12;
      if (!fitsSigned(pages, 21))
        return formatError("ADRP at image rva {:#x} cannot reach its target (more than 4 GiB away)", f.site);
      write32le(at, setAdrImmediate(instruction, pages));
      break;
    }
    case FixupKind::A64AddLo12: write32le(at, setBits(instruction, 10, 12, target & 0xfff)); break;
    case FixupKind::A64LdStLo12: {
      if (target & ((uint64_t(1) << f.scale) - 1))
        return formatError("load/store at image rva {:#x}: target {:#x} is not aligned to its access size", f.site, target);
      write32le(at, setBits(instruction, 10, 12, (target & 0xfff) >> f.scale));
      break;
    }
    }
  }
  return llvm::Error::success();
}

}  // namespace hotforge
