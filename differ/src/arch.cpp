#include "hotforge/arch.h"

namespace hotforge::differ {

std::string_view fieldEncodingName(FieldEncoding encoding) {
  switch (encoding) {
  case FieldEncoding::None: return "none";
  case FieldEncoding::X64Rel8: return "x64-rel8";
  case FieldEncoding::X64Rel32: return "x64-rel32";
  case FieldEncoding::X64Abs64: return "x64-abs64";
  case FieldEncoding::A64Branch26: return "a64-branch26";
  case FieldEncoding::A64Branch19: return "a64-branch19";
  case FieldEncoding::A64Branch14: return "a64-branch14";
  case FieldEncoding::A64Literal19: return "a64-literal19";
  case FieldEncoding::A64Adr21: return "a64-adr21";
  case FieldEncoding::A64AdrPage21: return "a64-adrp-page21";
  case FieldEncoding::A64AddLo12: return "a64-add-lo12";
  case FieldEncoding::A64LdStLo12: return "a64-ldst-lo12";
  }
  return "unknown";
}

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
