#include "hotforge/arch.h"


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

namespace {

InstructionField fieldOf(const CodeReference &r) { return {r.encoding, r.fieldOffset, r.size, r.scale}; }

// Fields whose target follows from their own bits (not ADRP pairs, not derived addresses).
bool selfContained(const MachineTarget &target, FixupKind kind) {
  FieldMeaning meaning = target.meaning(kind);
  return meaning == FieldMeaning::Distance || meaning == FieldMeaning::Absolute;
}

}  // namespace

std::optional<FieldSpan> fieldSpan(const MachineTarget &target, const CodeReference &r) {
  std::optional<FieldBits> bits = target.fieldBits(fieldOf(r));
  if (!bits || !selfContained(target, r.encoding)) return std::nullopt;
  return FieldSpan{r.offset + bits->begin, r.offset + bits->end, bits->mask};
}

uint64_t retarget(const MachineTarget &target, const CodeReference &r, llvm::ArrayRef<uint8_t> function,
                  uint64_t functionRva, uint64_t imageBase) {
  if (!selfContained(target, r.encoding)) return r.target;
  uint64_t value = target.readField(fieldOf(r), function.drop_front(r.offset), functionRva + r.offset);
  return target.meaning(r.encoding) == FieldMeaning::Absolute ? value - imageBase : value;
}

llvm::Expected<std::unique_ptr<InstructionDecoder>> createInstructionDecoder(Machine machine) {
  switch (machine) {
  case Machine::X64: return createX64Decoder();
  case Machine::Arm64: return createArm64Decoder();
  }
  return createX64Decoder();
}

}  // namespace hotforge::differ
