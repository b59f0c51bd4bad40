// The architecture plug-in axis (after lld's TargetInfo): everything the differ must know about an
// instruction set lives behind InstructionDecoder, one implementation per architecture. Adding
// RISC-V means one new file and one line in createInstructionDecoder().
#pragma once

#include "hotforge/image.h"
#include "hotforge/core/machine_target.h"

#include <llvm/ADT/ArrayRef.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotforge::differ {

// How an instruction depends on an address. The decoder masks the address bits out of the
// instruction's shape and reports the resolved target instead, so that moved code compares equal.
enum class ReferenceKind : uint8_t {
  Call,       // x64 call rel32; Arm64 BL
  Branch,     // jmp/jcc rel8/rel32; B, B.cond, CBZ/CBNZ, TBZ/TBNZ
  Memory,     // x64 RIP-relative operand; Arm64 ADRP paired with ADD/LDR/STR; LDR literal; ADR
  Page,       // Arm64 ADRP whose consumer was not found: only the 4 KiB page is known
  Absolute,   // a pointer-sized immediate covered by a relocation
};

struct CodeReference {
  uint32_t instruction = 0;  // index of the referencing instruction within the function
  ReferenceKind kind = ReferenceKind::Memory;
  uint8_t size = 0;          // instruction size in bytes
  uint8_t fieldOffset = 0;   // x64: where the address field starts within the instruction
  uint8_t scale = 0;         // A64LdStLo12: log2 of the access size
  uint64_t target = 0;       // RVA, or an address when decoding code at its run-time address
  uint32_t offset = 0;       // byte offset of the instruction within the function
  FixupKind encoding = FixupKind::None;
  // A reference with no encoding that adds an offset to an address an earlier reference formed
  // (Arm64: ADD or LDR/STR from a register an ADRP+ADD set, as section anchors do): that address.
  // The emitter keeps the two the same distance apart. 0: none.
  uint64_t offsetFrom = 0;
  // With offsetFrom: an index was added to that address in a register before the offset, so the
  // access lands at target plus the index (target is where index 0 lands).
  bool indexed = false;
};

// One function reduced to what "unchanged" means: the shape (opcodes and every operand that does
// not depend on an address, in order) and the address-dependent targets, in order. Padding
// (NOP/int3 fill) and landing pads (endbr64, BTI) are left out of both.
struct CodeSummary {
  uint64_t shape = 0;
  uint32_t instructions = 0;  // counted without padding and landing pads
  uint32_t calls = 0;
  uint32_t branches = 0;
  bool complete = true;  // false when some bytes did not decode
};

// A plain immediate of an instruction (not an address the decoder resolved).
struct InstructionConstant {
  uint32_t instruction = 0;  // index of the counted instruction
  int64_t value = 0;         // for a displacement: in bytes
  // A memory operand's displacement from a register that is neither the stack nor the frame
  // pointer (a field offset in a structure).
  bool displacement = false;
};

struct DecodedFunction : CodeSummary {
  std::vector<CodeReference> references;
  // Filled only when asked for (first differences, tests): the offset and the shape of each
  // counted instruction on its own, its frame (the opcode and registers: the shape with every
  // immediate left out) and its immediates, in instruction order.
  std::vector<uint32_t> instructionOffsets;
  std::vector<uint64_t> instructionShapes;
  std::vector<uint64_t> instructionFrames;
  std::vector<InstructionConstant> constants;
};

// One instruction for people: offset in the function, encoding and text.
struct InstructionText {
  uint32_t offset = 0;
  std::string bytes;  // hex
  std::string text;
};

// A name for an address, for symbolic disassembly: `symbol` plus `offset` bytes.
struct AddressName {
  std::string symbol;
  uint64_t offset = 0;
};
using AddressNamer = std::function<std::optional<AddressName>(uint64_t target)>;

// Absolute relocations of the image, sorted by RVA, so the decoder can tell which immediates are
// pointers that move with the layout.
struct RelocationIndex {
  uint64_t imageBase = 0;  // pointer values are addresses: target RVA = value - imageBase
  std::vector<uint64_t> rvas;
  // The image, for code the linker moved out of the function (outOfLineInstruction); none: not
  // followed.
  const Image *image = nullptr;
};

// The image's relocations as a decoder wants them.
RelocationIndex relocationIndex(const Image &image);

class InstructionDecoder {
public:
  virtual ~InstructionDecoder() = default;
  // With `perInstruction`, also fills instructionOffsets and instructionShapes.
  virtual DecodedFunction decode(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                                 bool perInstruction = false) = 0;
  // The compact form for whole programs: appends the references to `references` and sets, in
  // `instructionStarts` (one bit per byte of `code`, zero on entry), the bit of the first byte of
  // every counted instruction.
  virtual CodeSummary decodeInto(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                                 std::vector<CodeReference> &references,
                                 llvm::MutableArrayRef<uint64_t> instructionStarts) = 0;
  // Counted instruction `index` (same indexing as DecodedFunction) with its text, or nothing past
  // the end; only that one is printed.
  virtual std::optional<InstructionText> instructionAt(llvm::ArrayRef<uint8_t> code, uint64_t rva, uint32_t index) = 0;
  // When `code` (at `rva`) starts with an import thunk, the slot it jumps through: x64
  // `jmp [rip+slot]`, Arm64 `adrp x16, slot; ldr x16, [x16, :lo12:slot]; br x16` (the stubs
  // lld-link and link.exe put into .text for imports called without dllimport).
  virtual std::optional<uint64_t> importThunkSlot(llvm::ArrayRef<uint8_t> code, uint64_t rva) const = 0;
  // When the instruction at `pc` (encoded `word`) branches to a linker veneer that holds one
  // instruction of the function out of line and returns right after the branch (Arm64: GNU ld's
  // Cortex-A53 erratum 843419 fix), the encoding of that instruction. Decoding reads the branch as
  // that instruction; the emitter carries that instruction in the branch's place.
  virtual std::optional<uint32_t> outOfLineInstruction(uint64_t pc, uint32_t word, const Image &image) const = 0;
  // Whether `code` placed at `rva` puts an instruction where the CPU may execute it wrongly, so
  // the emitter places it elsewhere (Arm64: an ADRP, or an ADR or NOP+ADR the emitter may turn
  // into one, at page offset 0xff8 or 0xffc, Cortex-A53 erratum 843419).
  virtual bool hazardousPlacement(llvm::ArrayRef<uint8_t> code, uint64_t rva) const = 0;
  // Same, with every address operand the decoder resolves printed as its name (`call png_free`,
  // `lea rdi, [rip + table+0x8]`), so that code which only moved prints the same on both sides.
  // Targets the namer has no name for keep their number.
  virtual std::vector<InstructionText> disassembleSymbolic(llvm::ArrayRef<uint8_t> code, uint64_t rva,
                                                           const RelocationIndex &relocations,
                                                           const AddressNamer &namer) = 0;
};

// Where a reference's address lives in the function's bytes: bytes [begin, end), of which only
// the bits in `mask` (per little-endian 32-bit word; all bits when 0) hold the address.
struct FieldSpan {
  uint32_t begin = 0, end = 0;
  uint32_t mask = 0;
};
// For references whose target follows from their own field alone (not ADRP pairs).
std::optional<FieldSpan> fieldSpan(const MachineTarget &target, const CodeReference &reference);
// The target the same reference has in `function` placed at `functionRva`.
uint64_t retarget(const MachineTarget &target, const CodeReference &reference, llvm::ArrayRef<uint8_t> function,
                  uint64_t functionRva, uint64_t imageBase);

// A decoder is not thread-safe; each worker thread creates its own.
llvm::Expected<std::unique_ptr<InstructionDecoder>> createInstructionDecoder(Machine machine);

// Deterministic 64-bit mixing for shapes (llvm::hash_combine may be seeded per process).
inline uint64_t mixHash(uint64_t h, uint64_t value) {
  h ^= value + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 32);
}

}  // namespace hotforge::differ
