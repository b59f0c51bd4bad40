// A Linux process's address space as /proc/PID/maps shows it: where the baseline of a patch is
// mapped, and where free memory near it is. Shared by the ptrace loader (another process) and
// the agent (its own process, also under qemu-user, which emulates /proc/self/maps).
#pragma once

#include "hotforge/core/outcome.h"
#include "hotforge/core/patch_format.h"

#include <cstdint>
#include <span>
#include <string_view>
#include <string>
#include <vector>

namespace hotforge {

struct Mapping {
  uint64_t start = 0, end = 0, offset = 0;
  std::string permissions, path;
};

// The mappings in a maps file ("/proc/123/maps", "/proc/self/maps"), in address order.
std::vector<Mapping> readMaps(const std::string &mapsFile);

struct MappedBaseline {
  std::string path;
  uint64_t address = 0;  // where RVA 0 is: the start of the file's offset-0 mapping
};
// The mapped file whose SHA-256 is the image's baseline. Files named like the baseline are
// hashed first; the refusal names what is mapped under that name instead.
Outcome<MappedBaseline> findBaseline(const std::vector<Mapping> &maps, const PatchImage &image,
                                     const std::string &processName);

// Addresses where `size` bytes fit in a free gap within `reach` of `near`, nearest first, each
// 64 KiB aligned with 64 KiB of room on both sides.
std::vector<uint64_t> freeAddressesNear(const std::vector<Mapping> &maps, uint64_t near, uint64_t size,
                                        uint64_t reach);

// A defined dynamic symbol (.dynsym) of an ELF64 file: where a loader finds a function of a
// library mapped into another process, such as libgcc's __register_frame or a patch's new import.
// With a `version`, the definition of that version (or an unversioned one); without, the default.
struct ElfDynamicSymbol {
  uint64_t rva = 0;
  bool indirect = false;  // STT_GNU_IFUNC: `rva` is a resolver that returns the function's address
};
Outcome<ElfDynamicSymbol> elfDynamicSymbol(std::span<const uint8_t> file, std::string_view name,
                                           std::string_view version = {});

}  // namespace hotforge
