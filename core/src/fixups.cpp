// Applying fixups: what a loader does once it knows where the base and the image are mapped.
// Tests use it to check an image against the patched build instruction by instruction.
#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/patch_format.h"

namespace hotforge {

std::vector<uint8_t> layOut(const PatchImage &image) {
  std::vector<uint8_t> memory(image.imageSize, 0);
  for (const PatchSection &s : image.sections)
    if (s.rva + s.bytes.size() <= memory.size()) std::copy(s.bytes.begin(), s.bytes.end(), memory.begin() + s.rva);
  return memory;
}

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
  const MachineTarget &codec = machineTarget(image.machine);
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
    auto refuse = [&](const std::string &why) {
      return fail("fixup ", fixupKindName(f.kind), " at image rva ", hexAddress(f.site), " ", why);
    };
    auto dataField = [&](size_t width) -> uint8_t * {
      return f.site + width <= memory.size() ? &memory[f.site] : nullptr;
    };
    switch (f.kind) {
    case FixupKind::Data64:
    case FixupKind::Data64PcRel:
      if (uint8_t *at = dataField(8)) writeLe64(at, f.kind == FixupKind::Data64 ? target : target - site);
      else return refuse("lies outside the image (" + std::to_string(memory.size()) + " bytes)");
      break;
    case FixupKind::Data32PcRel: {
      uint8_t *at = dataField(4);
      if (!at) return refuse("lies outside the image (" + std::to_string(memory.size()) + " bytes)");
      int64_t v = int64_t(target - site);
      if (v < INT32_MIN || v > INT32_MAX) return refuse("cannot reach its target");
      writeLe32(at, uint32_t(v));
      break;
    }
    default: {
      // An instruction field: the machine's codec writes it, through the veneer when the target
      // is out of the field's reach.
      InstructionField field{f.kind, f.fieldOffset, f.instructionSize, f.scale};
      std::optional<FieldBits> bits = codec.fieldBits(field);
      if (!bits) return refuse(std::string("is not an instruction field of ") + std::string(codec.name()));
      if (f.site + uint64_t(bits->end) > memory.size())
        return refuse("lies outside the image (" + std::to_string(memory.size()) + " bytes)");
      std::span<uint8_t> instruction = memory.subspan(f.site, bits->end);
      Status written = codec.writeField(field, instruction, site, target);
      if (!written && f.veneer) written = codec.writeField(field, instruction, site, imageAddress + f.veneer);
      if (!written) return refuse(written.error());
    }
    }
  }
  return success();
}

}  // namespace hotforge
