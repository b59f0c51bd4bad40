// The AArch64 opcodes that function discovery and the differ's decoder both name, looked up in
// one pass over LLVM's opcode table.
#pragma once

#include "hotforge/codeflow/mc_toolkit.h"

namespace hotforge {

struct Arm64Opcodes {
  explicit Arm64Opcodes(const McToolkit &mc);
  unsigned hint = 0, udf = 0, brk = 0, hlt = 0, adr = 0, adrp = 0, addImmediate = 0, orrShifted = 0, storeX = 0,
           loadX = 0;
};

}  // namespace hotforge
