// x86-64: rel8/rel32 branches and calls, RIP-relative operands of every instruction (SSE/AVX
// included, since the operand form is the same), and relocated absolute immediates.
#include "mc_decoder.h"

#include <llvm/MC/MCCodeEmitter.h>
#include <llvm/MC/MCExpr.h>
#include <llvm/MC/MCFixup.h>
#include <llvm/Support/Endian.h>

#include <unordered_set>

namespace hotforge::differ {
namespace {

using namespace llvm;

// What the decoder needs from LLVM's x86 opcode and register tables. Finding it reads all ~20,000
// opcode names: done once per process, not per decoder (2 million instructions each).
struct X64Tables {
  explicit X64Tables(const McToolkit &mc) {
    for (unsigned reg = 1; reg < mc.registers->getNumRegs(); ++reg) {
      StringRef name = mc.registers->getName(reg);
      if (name == "RIP") rip = reg;
      if (name == "RIP" || name == "RSP" || name == "RBP" || name == "ESP" || name == "EBP") notFieldBases.insert(reg);
    }
    StringMap<unsigned> byName;
    for (unsigned op = 0; op < mc.instructions->getNumOpcodes(); ++op) {
      StringRef name = mc.instructions->getName(op);
      noise.push_back(name.starts_with("NOOP") || name == "INT3" || name == "ENDBR64" || name == "ENDBR32");
      if (name.starts_with("JMP_") || name.starts_with("JCC_")) byName[name] = op;
    }
    // Short and near forms of a branch are one shape: the assembler picks by distance.
    shortJmp = byName["JMP_1"];
    shortJcc = byName["JCC_1"];
    canonicalOpcode.resize(mc.instructions->getNumOpcodes());
    for (unsigned op = 0; op < canonicalOpcode.size(); ++op) canonicalOpcode[op] = op;
    for (const char *family : {"JMP", "JCC"})
      for (const char *width : {"_1", "_2", "_4"})
        if (auto it = byName.find(std::string(family) + width); it != byName.end())
          canonicalOpcode[it->second] = byName[std::string(family) + "_4"];
  }

  unsigned shortJmp = 0, shortJcc = 0;
  unsigned rip = 0;
  std::unordered_set<unsigned> notFieldBases;  // instruction, stack and frame pointer
  std::vector<bool> noise;                     // by opcode
  std::vector<unsigned> canonicalOpcode;       // by opcode: itself, or the near form of a short branch
};

class X64Decoder final : public McDecoder {
public:
  explicit X64Decoder(McToolkit toolkit) : McDecoder(std::move(toolkit)), tables_(sharedTables(mc_)) {
    emitter_.reset(mc_.target->createMCCodeEmitter(*mc_.instructions, *mc_.context));
    marker_ = mc_.context->createTempSymbol();
  }

protected:
  bool isLayoutNoise(const MCInst &inst) const override { return tables_.noise[inst.getOpcode()]; }
  unsigned undecodableStep() const override { return 1; }
  uint64_t printAddress(uint64_t pc, uint64_t size) const override { return pc + size; }

  std::optional<uint64_t> importThunkSlot(ArrayRef<uint8_t> code, uint64_t rva) const override {
    return machineTarget(Machine::X64).importThunkSlot(code, rva);
  }

  // A memory operand is base, scale, index, displacement, segment; fs:/gs: (TLS) and absolute
  // addresses hold no field offsets, and lea does no access (its displacement is arithmetic).
  std::optional<unsigned> displacementScale(const MCInst &inst, unsigned operand) const override {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    if (!desc.mayLoad() && !desc.mayStore()) return std::nullopt;
    for (unsigned i = 0; i + 4 < inst.getNumOperands() && i < desc.getNumOperands(); ++i) {
      if (desc.operands()[i].OperandType != MCOI::OPERAND_MEMORY) continue;
      const MCOperand &base = inst.getOperand(i), &segment = inst.getOperand(i + 4);
      if (operand != i + 3 || !base.isReg() || !base.getReg() || tables_.notFieldBases.count(base.getReg()) ||
          !segment.isReg() || segment.getReg())
        return std::nullopt;
      return 1;
    }
    return std::nullopt;
  }

  int addressOperand(const MCInst &inst, const CodeReference &reference, const RelocationIndex &relocations) const override {
    switch (reference.kind) {
    case ReferenceKind::Call:
    case ReferenceKind::Branch: return 0;
    case ReferenceKind::Memory:
      for (unsigned i = 0; i + 3 < inst.getNumOperands(); ++i)
        if (inst.getOperand(i).isReg() && inst.getOperand(i).getReg() == tables_.rip) return int(i) + 3;
      return -1;
    case ReferenceKind::Absolute:
      for (unsigned i = 0; i < inst.getNumOperands(); ++i)
        if (inst.getOperand(i).isImm() && uint64_t(inst.getOperand(i).getImm()) == relocations.imageBase + reference.target)
          return int(i);
      return -1;
    case ReferenceKind::Page: return -1;
    }
    return -1;
  }

  void analyze(const MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) override {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    uint64_t target = 0;
    if ((desc.isBranch() || desc.isCall()) && inst.getNumOperands() > 0 && inst.getOperand(0).isImm() &&
        mc_.analysis->evaluateBranch(inst, pc, size, target)) {
      state.hash = mixHash(state.hash, tables_.canonicalOpcode[inst.getOpcode()]);
      mixOperands(inst, state, 0);
      bool rel8 = inst.getOpcode() == tables_.shortJmp || inst.getOpcode() == tables_.shortJcc;
      state.add(index, desc.isCall() ? ReferenceKind::Call : ReferenceKind::Branch, target,
                rel8 ? FixupKind::X64Rel8 : FixupKind::X64Rel32, uint8_t(size - (rel8 ? 1 : 4)));
      return;
    }
    state.hash = mixHash(state.hash, inst.getOpcode());
    int displacement = -1;
    for (unsigned i = 0; i + 3 < inst.getNumOperands(); ++i)
      if (inst.getOperand(i).isReg() && inst.getOperand(i).getReg() == tables_.rip) displacement = int(i) + 3;
    int absolute = -1;
    if (state.relocated(pc, pc + size)) {
      for (unsigned i = 0; i < inst.getNumOperands(); ++i) {
        const MCOperand &op = inst.getOperand(i);
        if (op.isImm() && int(i) != displacement && uint64_t(op.getImm()) >= state.relocations.imageBase &&
            uint64_t(op.getImm()) - state.relocations.imageBase < (1ull << 32)) {
          absolute = int(i);
          // movabs: the 8-byte immediate ends the instruction.
          state.add(index, ReferenceKind::Absolute, uint64_t(op.getImm()) - state.relocations.imageBase,
                    FixupKind::X64Abs64, uint8_t(size - 8));
        }
      }
    }
    mixOperands(inst, state, displacement, absolute);
    if (displacement >= 0) {
      if (std::optional<uint64_t> address =
              mc_.analysis->evaluateMemoryOperandAddress(inst, mc_.subtarget.get(), pc, size))
        state.add(index, ReferenceKind::Memory, *address, FixupKind::X64Rel32,
                  displacementOffset(inst, displacement, size, state.bytes));
    }
  }

private:
  // Where disp32 sits in a RIP-relative instruction: right before an immediate of 0, 1, 2 or 4
  // bytes. When the displacement's value appears at more than one of those places, re-encode the
  // instruction with the displacement as a symbol and read the fixup's offset (measured from the
  // end, since the re-encoding may choose other prefixes).
  uint8_t displacementOffset(const MCInst &inst, int displacement, uint64_t size, const uint8_t *bytes) {
    uint32_t value = uint32_t(inst.getOperand(displacement).getImm());
    int found = -1, matches = 0;
    for (unsigned tail : {0u, 1u, 2u, 4u}) {
      if (size < 4 + tail + 2) continue;
      unsigned at = unsigned(size) - 4 - tail;
      if (llvm::support::endian::read32le(bytes + at) == value) found = int(at), ++matches;
    }
    if (matches == 1) return uint8_t(found);
    MCInst copy = inst;
    copy.getOperand(displacement) = MCOperand::createExpr(MCSymbolRefExpr::create(marker_, *mc_.context));
    SmallVector<char, 16> encoded;
    SmallVector<MCFixup, 2> fixups;
    emitter_->encodeInstruction(copy, encoded, fixups, *mc_.subtarget);
    for (const MCFixup &f : fixups)
      if (f.getOffset() + 4 <= encoded.size()) return uint8_t(size - (encoded.size() - f.getOffset()));
    return uint8_t(size - 4);
  }

  static const X64Tables &sharedTables(const McToolkit &mc) {
    static const X64Tables tables(mc);
    return tables;
  }

  const X64Tables &tables_;
  std::unique_ptr<MCCodeEmitter> emitter_;
  MCSymbol *marker_ = nullptr;
};

}  // namespace

Expected<std::unique_ptr<InstructionDecoder>> createX64Decoder() {
  Expected<McToolkit> mc = McToolkit::create("x86_64-unknown-unknown", "");
  if (!mc) return mc.takeError();
  return std::make_unique<X64Decoder>(std::move(*mc));
}

}  // namespace hotforge::differ
