// The LLVM MC machinery shared by the per-architecture decoders: the decode loop, padding
// handling and printing. Architectures supply only what differs (arch_x64.cpp, arch_arm64.cpp).
#pragma once

#include "hotforge/arch.h"

#include "hotforge/codeflow/mc_toolkit.h"

namespace hotforge::differ {

using hotforge::McToolkit;

// What an architecture hook sees and fills while one function is decoded.
struct DecodeState {
  std::vector<CodeReference> &references;  // appended to
  uint64_t hash = 0;
  const RelocationIndex &relocations;
  const uint64_t *nextRelocation = nullptr;  // first relocation not before the instruction analysed
  uint32_t offset = 0;       // of the instruction being analysed, within the function
  uint8_t size = 0;
  const uint8_t *bytes = nullptr;  // its encoding

  // A reference of the instruction being analysed.
  void add(uint32_t index, ReferenceKind kind, uint64_t target, FixupKind encoding, uint8_t fieldOffset = 0,
           uint8_t scale = 0) {
    references.push_back({.instruction = index, .kind = kind, .size = size, .fieldOffset = fieldOffset,
                          .scale = scale, .target = target, .offset = offset, .encoding = encoding});
  }
  // Whether a relocation starts in [begin, end). Instructions are analysed in address order, so
  // one cursor walks the sorted relocations instead of a search per instruction.
  bool relocated(uint64_t begin, uint64_t end) {
    const uint64_t *last = relocations.rvas.data() + relocations.rvas.size();
    while (nextRelocation != last && *nextRelocation < begin) ++nextRelocation;
    return nextRelocation != last && *nextRelocation < end;
  }
};

class McDecoder : public InstructionDecoder {
public:
  explicit McDecoder(McToolkit toolkit) : mc_(std::move(toolkit)) {}

  DecodedFunction decode(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                         bool perInstruction) final;
  CodeSummary decodeInto(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                         std::vector<CodeReference> &references,
                         llvm::MutableArrayRef<uint64_t> instructionStarts) final;
  std::optional<InstructionText> instructionAt(llvm::ArrayRef<uint8_t> code, uint64_t rva, uint32_t index) final;
  std::vector<InstructionText> disassembleSymbolic(llvm::ArrayRef<uint8_t> code, uint64_t rva,
                                                   const RelocationIndex &relocations,
                                                   const AddressNamer &namer) final;

protected:
  // Fill instructions and landing pads: left out of the shape and the instruction count.
  virtual bool isLayoutNoise(const llvm::MCInst &inst) const = 0;
  // Mixes the instruction's shape into state.hash and records its address-dependent targets.
  virtual void analyze(const llvm::MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) = 0;
  virtual void beginFunction(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations) {}
  // An instruction beginFunction already decoded at `offset` (setting `size`), so that the
  // decode loop does not decode it again; null: not decoded there.
  virtual const llvm::MCInst *predecoded(uint64_t offset, uint64_t &size) const { return nullptr; }
  virtual void endFunction(DecodeState &state) {}
  virtual unsigned undecodableStep() const = 0;   // bytes to skip over an undecodable instruction
  virtual uint64_t printAddress(uint64_t pc, uint64_t size) const = 0;  // see LLVM 19 gotcha L5
  // When operand `operand` is a memory displacement from a register other than the stack, frame
  // or instruction pointer: the bytes one unit of it stands for.
  virtual std::optional<unsigned> displacementScale(const llvm::MCInst &inst, unsigned operand) const = 0;
  // The operand of `inst` that holds the address `reference` resolves (what analyze() masks), or -1.
  virtual int addressOperand(const llvm::MCInst &inst, const CodeReference &reference,
                             const RelocationIndex &relocations) const = 0;


  // One instruction as LLVM's disassembler decodes it (`size` set on success).
  virtual bool disassemble(llvm::MCInst &inst, uint64_t &size, llvm::ArrayRef<uint8_t> bytes, uint64_t pc) const;
  // Decodes the instruction at `pc`, reading a branch to an out-of-line instruction as that
  // instruction (outOfLineInstruction, when `relocations` has the image).
  bool decodeAt(llvm::MCInst &inst, uint64_t &size, llvm::ArrayRef<uint8_t> bytes, uint64_t pc,
                const RelocationIndex &relocations) const;
  std::optional<uint32_t> outOfLineInstruction(uint64_t, uint32_t, const Image &) const override { return std::nullopt; }

  // Shared hashing of plain operands: registers and immediates, skipping `masked`.
  void mixOperands(const llvm::MCInst &inst, DecodeState &state, int maskedA = -1, int maskedB = -1) const;

  McToolkit mc_;
  bool hasOutOfLineCode_ = false;  // the architecture implements outOfLineInstruction

private:
  // Where the decode loop puts what it finds besides the summary; null members are not wanted.
  struct Outputs {
    std::vector<CodeReference> &references;
    llvm::MutableArrayRef<uint64_t> instructionStarts;
    std::vector<uint32_t> *instructionOffsets = nullptr;
    std::vector<uint64_t> *instructionShapes = nullptr;
    std::vector<uint64_t> *instructionFrames = nullptr;
    std::vector<InstructionConstant> *constants = nullptr;
  };
  void recordFrame(const llvm::MCInst &inst, uint32_t index, const Outputs &outputs) const;
  // The disassembly loop; `rename`, when given, may replace address operands before printing;
  // with `only`, just that counted instruction is printed.
  std::vector<InstructionText> printLoop(llvm::ArrayRef<uint8_t> code, uint64_t rva,
                                         const std::function<void(llvm::MCInst &, uint32_t offset)> &rename,
                                         std::optional<uint32_t> only = std::nullopt);
  CodeSummary decodeLoop(llvm::ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                         const Outputs &outputs);
};

}  // namespace hotforge::differ
