#include "hotforge/codeflow/arm64_opcodes.h"

#include <algorithm>

namespace hotforge {

Arm64Opcodes::Arm64Opcodes(const McToolkit &mc) {
  static const llvm::StringRef names[] = {"HINT", "UDF", "BRK", "HLT", "ADR", "ADRP", "ADDXri", "ORRXrs", "STRXui", "LDRXui"};
  llvm::StringMap<unsigned> byName = mc.opcodesNamed([](llvm::StringRef name) {
    return std::find(std::begin(names), std::end(names), name) != std::end(names);
  });
  unsigned *fields[] = {&hint, &udf, &brk, &hlt, &adr, &adrp, &addImmediate, &orrShifted, &storeX, &loadX};
  for (size_t i = 0; i < std::size(names); ++i) *fields[i] = byName.lookup(names[i]);
}

}  // namespace hotforge
