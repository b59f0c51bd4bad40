// x86-64: rel8/rel32 branches and calls, RIP-relative operands of every instruction (SSE/AVX
// included, since the operand form is the same), and relocated absolute immediates.
#include "mc_decoder.h"

#include <unordered_map>
#include <unordered_set>

namespace hotforge::differ {
namespace {

using namespace llvm;

class X64Decoder final : public McDecoder {
public:
  explicit X64Decoder(McToolkit toolkit) : McDecoder(std::move(toolkit)) {
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg)
      if (StringRef(mc_.registers->getName(reg)) == "RIP") rip_ = reg;
    std::unordered_map<std::string, unsigned> byName;
    for (unsigned op = 0; op < mc_.instructions->getNumOpcodes(); ++op) {
      StringRef name = mc_.instructions->getName(op);
      if (name.starts_with("NOOP") || name == "INT3" || name == "ENDBR64" || name == "ENDBR32") noise_.insert(op);
      byName[name.str()] = op;
    }
    // Short and near forms of a branch are one shape: the assembler picks by distance.
    for (const char *family : {"JMP", "JCC"})
      for (const char *width : {"_1", "_2", "_4"})
        if (auto it = byName.find(std::string(family) + width); it != byName.end())
          canonicalBranch_[it->second] = byName[std::string(family) + "_4"];
  }

protected:
  bool isLayoutNoise(const MCInst &inst) const override { return noise_.count(inst.getOpcode()) != 0; }
  unsigned undecodableStep() const override { return 1; }
  uint64_t printAddress(uint64_t pc, uint64_t size) const override { return pc + size; }

  void analyze(const MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) override {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    uint64_t target = 0;
    if ((desc.isBranch() || desc.isCall()) && inst.getNumOperands() > 0 && inst.getOperand(0).isImm() &&
        mc_.analysis->evaluateBranch(inst, pc, size, target)) {
      auto canonical = canonicalBranch_.find(inst.getOpcode());
      state.hash = mixHash(state.hash, canonical != canonicalBranch_.end() ? canonical->second : inst.getOpcode());
      mixOperands(inst, state, 0);
      state.out.references.push_back({index, desc.isCall() ? ReferenceKind::Call : ReferenceKind::Branch, target});
      return;
    }
    state.hash = mixHash(state.hash, inst.getOpcode());
    int displacement = -1;
    for (unsigned i = 0; i + 3 < inst.getNumOperands(); ++i)
      if (inst.getOperand(i).isReg() && inst.getOperand(i).getReg() == rip_) displacement = int(i) + 3;
    int absolute = -1;
    if (state.relocations.covers(pc, pc + size)) {
      for (unsigned i = 0; i < inst.getNumOperands(); ++i) {
        const MCOperand &op = inst.getOperand(i);
        if (op.isImm() && int(i) != displacement && uint64_t(op.getImm()) >= state.relocations.imageBase &&
            uint64_t(op.getImm()) - state.relocations.imageBase < (1ull << 32)) {
          absolute = int(i);
          state.out.references.push_back(
              {index, ReferenceKind::Absolute, uint64_t(op.getImm()) - state.relocations.imageBase});
        }
      }
    }
    mixOperands(inst, state, displacement, absolute);
    if (displacement >= 0) {
      if (std::optional<uint64_t> address =
              mc_.analysis->evaluateMemoryOperandAddress(inst, mc_.subtarget.get(), pc, size))
        state.out.references.push_back({index, ReferenceKind::Memory, *address});
    }
  }

private:
  unsigned rip_ = 0;
  std::unordered_set<unsigned> noise_;
  std::unordered_map<unsigned, unsigned> canonicalBranch_;
};

}  // namespace

Expected<std::unique_ptr<InstructionDecoder>> createX64Decoder() {
  Expected<McToolkit> mc = McToolkit::create("x86_64-unknown-unknown", "");
  if (!mc) return mc.takeError();
  return std::make_unique<X64Decoder>(std::move(*mc));
}

}  // namespace hotforge::differ
