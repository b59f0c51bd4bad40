// x86-64 control flow for discovery: calls, jumps and returns from MCInstrAnalysis, `lea` of a
// RIP-relative address as a code pointer, nop/int3/ud2 fill. An indirect jump through a register
// or an indexed memory operand is a jump-table dispatch; through a plain memory operand
// (`jmp [rip+GOT]`, `jmp [rax+8]`) it is a tail call. The usual table of 32-bit offsets is
// recognised: `lea rB, [rip+T]` (or the image base), `movsxd`/`mov rE, [rB + rI*4 (+ disp)]`,
// `add rE, rB`, `jmp rE` (gcc, clang and mingw; MSVC's form has the table's RVA as disp).
#include "flow_decoder.h"

#include <algorithm>
#include <unordered_map>

namespace hotforge::codeflow {
namespace {

using namespace llvm;

class X64Flow final : public FlowDecoder {
public:
  explicit X64Flow(McToolkit mc) : mc_(std::move(mc)) {
    kind_.resize(mc_.instructions->getNumOpcodes(), FlowKind::Plain);
    for (unsigned op = 0; op < kind_.size(); ++op) {
      StringRef name = mc_.instructions->getName(op);
      if (name.starts_with("NOOP")) kind_[op] = FlowKind::Fill;
      else if (name == "INT3") kind_[op] = FlowKind::Pad;
      else if (name == "TRAP" || name == "HLT" || name.starts_with("UD1")) kind_[op] = FlowKind::Trap;
      if (name == "LEA64r") lea_ = op;
      if (name == "MOVSX64rm32") loadSigned32_ = op;
      if (name == "MOV32rm") load32_ = op;
      if (name == "ADD64rr") add64_ = op;
      if (name.starts_with("CMP") && (name.ends_with("ri") || name.ends_with("ri8") || name.ends_with("ri32")))
        compareImmediate_.push_back(op);
    }
    widest_.resize(mc_.registers->getNumRegs());
    for (unsigned reg = 1; reg < widest_.size(); ++reg)
      for (MCPhysReg super : mc_.registers->superregs_inclusive(reg)) widest_[reg] = super;
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg)
      if (StringRef(mc_.registers->getName(reg)) == "RIP") rip_ = reg;
  }

  void beginFunction() override {
    values_.clear();
    compared_.reset();
    tableEntries_ = 0;
  }

  FlowStep step(ArrayRef<uint8_t> bytes, uint64_t rva) override {
    FlowStep out;
    uint64_t size = 0;
    if (bytes.empty() || !mc_.decode(inst_, size, bytes, rva))
      return out;  // Invalid, one byte
    out.size = uint8_t(size);
    out.kind = kind_[inst_.getOpcode()];
    // 00 00 (add [rax], al) is zero fill, not code.
    if (std::all_of(bytes.begin(), bytes.begin() + size, [](uint8_t b) { return b == 0; })) {
      out.kind = FlowKind::Pad;
      return out;
    }
    const MCInstrDesc &desc = mc_.instructions->get(inst_.getOpcode());
    uint64_t target = 0;
    bool direct = inst_.getNumOperands() > 0 && inst_.getOperand(0).isImm() &&
                  mc_.analysis->evaluateBranch(inst_, rva, size, target);
    if (desc.isCall()) {
      out.kind = FlowKind::Call;
    } else if (desc.isReturn()) {
      out.kind = FlowKind::Return;
    } else if (desc.isBranch() && direct) {
      out.kind = desc.isConditionalBranch() ? FlowKind::ConditionalJump : FlowKind::Jump;
    } else if (desc.isIndirectBranch()) {
      // jmp reg (one operand) or jmp [base + index*scale + disp] (index is operand 2).
      bool indexed = inst_.getNumOperands() >= 5 && inst_.getOperand(2).isReg() && inst_.getOperand(2).getReg();
      out.kind = inst_.getNumOperands() == 1 || indexed ? FlowKind::Dispatch : FlowKind::Return;
    } else if (inst_.getOpcode() == lea_ && inst_.getNumOperands() >= 6 && inst_.getOperand(1).isReg() &&
               inst_.getOperand(1).getReg() == rip_ && inst_.getOperand(4).isImm()) {
      out.codeAddress = rva + size + uint64_t(inst_.getOperand(4).getImm());
    }
    trackTable(desc, rva + size, out);
    if (direct && (out.kind == FlowKind::Call || out.kind == FlowKind::Jump || out.kind == FlowKind::ConditionalJump)) {
      out.hasTarget = true;
      out.target = target;
    }
    return out;
  }

private:
  // What a register holds, as far as a jump table needs: an address, an entry loaded from a
  // table, or a target computed from one.
  struct Value {
    enum Kind : uint8_t { Address, Entry, Target } kind = Address;
    uint64_t value = 0;  // Address: the address; Entry/Target: the table
    bool isSigned = true;
    uint64_t base = 0;   // Target: what the entry was added to
  };

  unsigned reg(unsigned operand) const {
    return operand < inst_.getNumOperands() && inst_.getOperand(operand).isReg() ? widest_[inst_.getOperand(operand).getReg()] : 0;
  }

  void trackTable(const MCInstrDesc &desc, uint64_t next, FlowStep &out) {
    unsigned op = inst_.getOpcode();
    if (out.kind == FlowKind::Dispatch) {
      auto it = values_.find(reg(0));
      if (inst_.getNumOperands() == 1 && it != values_.end() && it->second.kind == Value::Target)
        out.table = {.rva = it->second.value, .base = it->second.base, .entrySize = 4, .entries = tableEntries_,
                     .shift = 0, .isSigned = it->second.isSigned};
      return;
    }
    // The bounds check before a dispatch: `cmp rI, N` then `ja default` (N + 1 entries) or
    // `jae default` (N entries).
    if (std::count(compareImmediate_.begin(), compareImmediate_.end(), op) && inst_.getNumOperands() == 2 &&
        inst_.getOperand(1).isImm()) {
      compared_ = inst_.getOperand(1).getImm();
      return;
    }
    if (out.kind == FlowKind::ConditionalJump && compared_ && *compared_ >= 0 && *compared_ < (1 << 16) &&
        inst_.getNumOperands() == 2 && inst_.getOperand(1).isImm()) {
      int64_t condition = inst_.getOperand(1).getImm();
      if (condition == kConditionAbove) tableEntries_ = uint32_t(*compared_ + 1);
      else if (condition == kConditionAboveOrEqual) tableEntries_ = uint32_t(*compared_);
      return;
    }
    if (out.kind == FlowKind::Call) {
      values_.clear();
      return;
    }
    std::optional<Value> result;
    if (op == lea_ && reg(1) == widest_[rip_] && inst_.getOperand(4).isImm() && !reg(3)) {
      result = Value{Value::Address, next + uint64_t(inst_.getOperand(4).getImm())};
    } else if ((op == loadSigned32_ || op == load32_) && inst_.getNumOperands() >= 6 && reg(3) &&
               inst_.getOperand(2).isImm() && inst_.getOperand(2).getImm() == 4 && inst_.getOperand(4).isImm()) {
      auto base = values_.find(reg(1));
      if (base != values_.end() && base->second.kind == Value::Address)
        result = Value{Value::Entry, base->second.value + uint64_t(inst_.getOperand(4).getImm()), op == loadSigned32_};
    } else if (op == add64_) {
      auto a = values_.find(reg(1)), b = values_.find(reg(2));
      if (a != values_.end() && b != values_.end()) {
        if (a->second.kind == Value::Address) std::swap(a, b);
        if (a->second.kind == Value::Entry && b->second.kind == Value::Address)
          result = Value{Value::Target, a->second.value, a->second.isSigned, b->second.value};
      }
    }
    if (desc.getNumDefs() && reg(0)) {
      if (result) values_[reg(0)] = *result;
      else values_.erase(reg(0));
    }
  }

  McToolkit mc_;
  MCInst inst_;
  std::vector<FlowKind> kind_;  // by opcode, for instructions that are not branches
  unsigned lea_ = 0, rip_ = 0, loadSigned32_ = 0, load32_ = 0, add64_ = 0;
  std::vector<unsigned> widest_;  // by register: its widest super-register (eax -> rax)
  std::unordered_map<unsigned, Value> values_;
  static constexpr int64_t kConditionAboveOrEqual = 3, kConditionAbove = 7;  // X86::CondCode
  std::vector<unsigned> compareImmediate_;  // cmp reg, imm opcodes
  std::optional<int64_t> compared_;        // the immediate of the last such cmp
  uint32_t tableEntries_ = 0;              // the bound a ja/jae after it set
};

}  // namespace

Expected<std::unique_ptr<FlowDecoder>> createX64Flow() {
  Expected<McToolkit> mc = McToolkit::create("x86_64-unknown-unknown", "");
  if (!mc) return mc.takeError();
  return std::make_unique<X64Flow>(std::move(*mc));
}

}  // namespace hotforge::codeflow
