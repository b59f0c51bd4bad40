// One object per container format (ELF, PE), the way MachineTarget is one per machine: its name
// and record code, how to tell its files, how a loader reads its sections, and what identifies a
// baseline in it. A new container is one file and one line in containerTarget() (targets.cpp).
#pragma once

#include "hotforge/core/outcome.h"
#include "hotforge/core/target.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge {

// A section as a loader reads it from a container, offsets and sizes checked against the file.
struct ContainerSection {
  std::string name;
  uint32_t rva = 0, memorySize = 0;
  std::span<const uint8_t> contents;  // empty for zero-filled sections
  bool loaded = false;                // part of the mapped image
  Permissions permissions;
  uint32_t type = 0, link = 0;        // ELF: sh_type, sh_link
};

class ContainerTarget {
public:
  virtual ~ContainerTarget() = default;

  virtual Format format() const = 0;
  virtual std::string_view name() const = 0;  // "elf", "pe"
  virtual uint16_t recordCode() const = 0;    // in the records' header (docs/format.md)
  // Whether `file` starts as a file of this container does.
  virtual bool holds(std::span<const uint8_t> file) const = 0;
  virtual Outcome<std::vector<ContainerSection>> sections(std::span<const uint8_t> file) const = 0;
  // A baseline is told by its build id (ELF) rather than by timestamp, checksum and size (PE).
  virtual bool identifiedByBuildId() const = 0;
  // Pointers to the image need no relocation of their own to be found: ELF's relative
  // relocations carry the target as an addend; PE's base relocations do not, and images linked
  // without them still hold aligned absolute pointers.
  virtual bool relocationsCarryAddends() const = 0;
};

const ContainerTarget &containerTarget(Format format);
std::optional<Format> findFormat(const std::function<bool(const ContainerTarget &)> &matches);
// The container of this code's own processes (the agent, the ptrace loader).
Format hostFormat();

// Helpers for the per-format readers.
bool fitsInFile(std::span<const uint8_t> file, uint64_t offset, uint64_t size);
std::string cString(std::span<const uint8_t> bytes, uint64_t offset);

}  // namespace hotforge
