#include "arch.h"

namespace hotforge::differ {

llvm::Expected<std::unique_ptr<InstructionDecoder>> createX64Decoder();
llvm::Expected<std::unique_ptr<InstructionDecoder>> createArm64Decoder();

llvm::Expected<std::unique_ptr<InstructionDecoder>> createInstructionDecoder(Machine machine) {
  switch (machine) {
  case Machine::X64: return createX64Decoder();
  case Machine::Arm64: return createArm64Decoder();
  }
  return createX64Decoder();
}

}  // namespace hotforge::differ
