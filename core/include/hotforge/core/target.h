// What kind of binary a piece of code is for: the container format and the machine.
#pragma once

#include <string_view>

namespace hotforge {

enum class Format { Elf, Pe };
enum class Machine { X64, Arm64 };

std::string_view formatName(Format format);    // "elf", "pe"
std::string_view machineName(Machine machine);  // "x64", "arm64"

struct Permissions {
  bool read = false;
  bool write = false;
  bool execute = false;
};

}  // namespace hotforge
