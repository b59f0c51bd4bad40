// The factories of the machine and container targets: the only switches over Machine and
// Format. A new machine or container adds its case here (and to the list the lookups walk).
#include "hotforge/core/container_target.h"
#include "hotforge/core/machine_target.h"
#include "target_common.h"

namespace hotforge {

const ContainerTarget &elfContainer();
const ContainerTarget &peContainer();

namespace {
constexpr Machine kMachines[] = {Machine::X64, Machine::Arm64};
constexpr Format kFormats[] = {Format::Elf, Format::Pe};
}  // namespace

const MachineTarget &machineTarget(Machine machine) {
  switch (machine) {
  case Machine::X64: return x64Target();
  case Machine::Arm64: return arm64Target();
  }
  return x64Target();  // not reached: the switch names every machine
}

const ContainerTarget &containerTarget(Format format) {
  switch (format) {
  case Format::Elf: return elfContainer();
  case Format::Pe: return peContainer();
  }
  return elfContainer();  // not reached: the switch names every format
}

std::optional<Machine> findMachine(const std::function<bool(const MachineTarget &)> &matches) {
  for (Machine m : kMachines)
    if (matches(machineTarget(m))) return m;
  return std::nullopt;
}

std::optional<Format> findFormat(const std::function<bool(const ContainerTarget &)> &matches) {
  for (Format f : kFormats)
    if (matches(containerTarget(f))) return f;
  return std::nullopt;
}

Machine hostMachine() {
#if defined(__aarch64__)
  return Machine::Arm64;
#else
  return Machine::X64;
#endif
}

Format hostFormat() {
#if defined(_WIN32)
  return Format::Pe;
#else
  return Format::Elf;
#endif
}

std::string_view formatName(Format format) { return containerTarget(format).name(); }
std::string_view machineName(Machine machine) { return machineTarget(machine).name(); }

bool fitsInFile(std::span<const uint8_t> file, uint64_t offset, uint64_t size) {
  return offset <= file.size() && size <= file.size() - offset;
}

std::string cString(std::span<const uint8_t> bytes, uint64_t offset) {
  std::string text;
  for (uint64_t i = offset; i < bytes.size() && bytes[i]; ++i) text.push_back(char(bytes[i]));
  return text;
}

}  // namespace hotforge
