#include "hotforge/arch.h"

#include <llvm/Support/Endian.h>

#include <algorithm>

namespace hotforge::differ {

RelocationIndex relocationIndex(const Image &image) {
  RelocationIndex index{image.imageBase, {}, &image};
  index.rvas.reserve(image.relocations.size());
  for (const Relocation &r : image.relocations) index.rvas.push_back(r.rva);
  std::sort(index.rvas.begin(), index.rvas.end());
  return index;
}

llvm::Expected<std::unique_ptr<InstructionDecoder>> createX64Decoder();
llvm::Expected<std::unique_ptr<InstructionDecoder>> createArm64Decoder();

std::optional<FieldSpan> fieldSpan(const CodeReference &r) {
  uint32_t at = r.offset + r.fieldOffset;
  switch (r.encoding) {
  case FieldEncoding::X64Rel8: return FieldSpan{at, at + 1, 0};
  case FieldEncoding::X64Rel32: return FieldSpan{at, at + 4, 0};
  case FieldEncoding::X64Abs64: return FieldSpan{at, at + 8, 0};
  case FieldEncoding::A64Branch26: return FieldSpan{r.offset, r.offset + 4, 0x03ffffff};
  case FieldEncoding::A64Branch19:
  case FieldEncoding::A64Literal19: return FieldSpan{r.offset, r.offset + 4, 0x00ffffe0};
  case FieldEncoding::A64Branch14: return FieldSpan{r.offset, r.offset + 4, 0x0007ffe0};
  case FieldEncoding::A64Adr21: return FieldSpan{r.offset, r.offset + 4, 0x60ffffe0};
  default: return std::nullopt;  // ADRP pairs and derived addresses need the instructions around them
  }
}

uint64_t retarget(const CodeReference &r, llvm::ArrayRef<uint8_t> function, uint64_t functionRva, uint64_t imageBase) {
  using namespace llvm::support::endian;
  uint64_t pc = functionRva + r.offset;
  const uint8_t *field = function.data() + r.offset + r.fieldOffset;
  auto signExtend = [](uint64_t value, unsigned bits) { return int64_t(value << (64 - bits)) >> (64 - bits); };
  uint32_t word = r.encoding >= FieldEncoding::A64Branch26 ? read32le(function.data() + r.offset) : 0;
  switch (r.encoding) {
  case FieldEncoding::X64Rel8: return pc + r.size + int8_t(*field);
  case FieldEncoding::X64Rel32: return pc + r.size + int32_t(read32le(field));
  case FieldEncoding::X64Abs64: return read64le(field) - imageBase;
  case FieldEncoding::A64Branch26: return pc + 4 * signExtend(word & 0x03ffffff, 26);
  case FieldEncoding::A64Branch19:
  case FieldEncoding::A64Literal19: return pc + 4 * signExtend((word >> 5) & 0x7ffff, 19);
  case FieldEncoding::A64Branch14: return pc + 4 * signExtend((word >> 5) & 0x3fff, 14);
  case FieldEncoding::A64Adr21: return pc + signExtend(((word >> 5) & 0x7ffff) << 2 | ((word >> 29) & 3), 21);
  default: return r.target;
  }
}

llvm::Expected<std::unique_ptr<InstructionDecoder>> createInstructionDecoder(Machine machine) {
  switch (machine) {
  case Machine::X64: return createX64Decoder();
  case Machine::Arm64: return createArm64Decoder();
  }
  return createX64Decoder();
}

}  // namespace hotforge::differ
