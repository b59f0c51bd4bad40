// AArch64 control flow for discovery: B/BL/B.cond/CB(N)Z/TB(N)Z through MCInstrAnalysis, RET,
// ADR and ADRP+ADD as code pointers, NOP fill, UDF #0 (zero words) as padding, BRK/HLT/UDF as
// traps. BR is a jump-table dispatch, except through x16/x17 (IP0/IP1), which veneers and PLT
// stubs use to leave the function.
#include "flow_decoder.h"
#include "hotforge/codeflow/arm64_opcodes.h"

#include <unordered_map>

namespace hotforge::codeflow {
namespace {

using namespace llvm;

class Arm64Flow final : public FlowDecoder {
public:
  explicit Arm64Flow(McToolkit mc) : mc_(std::move(mc)), opcodes_(mc_) {
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg) {
      StringRef name = mc_.registers->getName(reg);
      if (name == "X16" || name == "X17") veneerRegisters_.push_back(reg);
    }
  }

  void beginFunction() override { pages_.clear(); }

  FlowStep step(ArrayRef<uint8_t> bytes, uint64_t rva) override {
    FlowStep out;
    out.size = uint8_t(std::min<size_t>(4, std::max<size_t>(1, bytes.size())));
    uint64_t size = 0;
    if (bytes.size() < 4 || !mc_.decode(inst_, size, bytes, rva))
      return out;  // Invalid
    out.size = 4;
    out.kind = FlowKind::Plain;
    unsigned op = inst_.getOpcode();
    const MCInstrDesc &desc = mc_.instructions->get(op);
    auto immediate = [&](unsigned i) { return i < inst_.getNumOperands() && inst_.getOperand(i).isImm() ? inst_.getOperand(i).getImm() : -1; };
    uint64_t target = 0;
    bool direct = mc_.analysis->evaluateBranch(inst_, rva, 4, target);
    if (op == opcodes_.hint && immediate(0) == 0) out.kind = FlowKind::Fill;
    else if (op == opcodes_.udf) out.kind = immediate(0) == 0 ? FlowKind::Pad : FlowKind::Trap;
    else if (op == opcodes_.brk || op == opcodes_.hlt) out.kind = FlowKind::Trap;
    else if (desc.isCall()) out.kind = FlowKind::Call;
    else if (desc.isReturn()) out.kind = FlowKind::Return;
    else if (desc.isBranch() && direct) out.kind = desc.isConditionalBranch() ? FlowKind::ConditionalJump : FlowKind::Jump;
    else if (desc.isIndirectBranch()) {
      bool veneer = inst_.getNumOperands() > 0 && inst_.getOperand(0).isReg() &&
                    std::count(veneerRegisters_.begin(), veneerRegisters_.end(), inst_.getOperand(0).getReg());
      out.kind = veneer ? FlowKind::Return : FlowKind::Dispatch;
    }
    if (direct && (out.kind == FlowKind::Call || out.kind == FlowKind::Jump || out.kind == FlowKind::ConditionalJump)) {
      out.hasTarget = true;
      out.target = target;
    }
    trackAddresses(desc, rva, out);
    return out;
  }

private:
  // ADR gives an address; ADRP a page that a later ADD completes.
  void trackAddresses(const MCInstrDesc &desc, uint64_t rva, FlowStep &out) {
    unsigned op = inst_.getOpcode();
    if (inst_.getNumOperands() < 2 || !inst_.getOperand(0).isReg()) return;
    unsigned defined = inst_.getOperand(0).getReg();
    if ((op == opcodes_.adr || op == opcodes_.adrp) && inst_.getOperand(1).isImm()) {
      int64_t imm = inst_.getOperand(1).getImm();
      if (op == opcodes_.adr) out.codeAddress = rva + uint64_t(imm);
      else pages_[defined] = (rva & ~uint64_t(0xfff)) + uint64_t(imm) * 4096;
      return;
    }
    if (op == opcodes_.addImmediate && inst_.getNumOperands() >= 4 && inst_.getOperand(1).isReg() && inst_.getOperand(2).isImm()) {
      auto page = pages_.find(inst_.getOperand(1).getReg());
      if (page != pages_.end())
        out.codeAddress = page->second + (uint64_t(inst_.getOperand(2).getImm()) << inst_.getOperand(3).getImm());
    }
    if (desc.getNumDefs()) pages_.erase(defined);
  }

  McToolkit mc_;
  MCInst inst_;
  Arm64Opcodes opcodes_;
  std::vector<unsigned> veneerRegisters_;
  std::unordered_map<unsigned, uint64_t> pages_;  // registers holding an ADRP page
};

}  // namespace

Expected<std::unique_ptr<FlowDecoder>> createArm64Flow() {
  Expected<McToolkit> mc = McToolkit::create("aarch64-unknown-unknown", "+all");
  if (!mc) return mc.takeError();
  return std::make_unique<Arm64Flow>(std::move(*mc));
}

}  // namespace hotforge::codeflow
