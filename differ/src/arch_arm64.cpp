// AArch64: B/BL imm26, B.cond/CBZ/CBNZ imm19, TBZ/TBNZ imm14, ADR, LDR literal, and ADRP paired
// with the ADD/LDR/STR that consume its page, also when they are not adjacent.
#include "mc_decoder.h"

#include <llvm/ADT/bit.h>

#include <map>
#include <unordered_map>
#include <unordered_set>

namespace hotforge::differ {
namespace {

using namespace llvm;

constexpr int64_t kHintNop = 0;
bool isBtiHint(int64_t imm) { return imm == 32 || imm == 34 || imm == 36 || imm == 38; }

class Arm64Decoder final : public McDecoder {
public:
  explicit Arm64Decoder(McToolkit toolkit) : McDecoder(std::move(toolkit)) {
    // Unsigned-offset loads and stores scale their 12-bit immediate by the access size.
    static const std::pair<const char *, unsigned> scaled[] = {
        {"LDRBBui", 1}, {"LDRHHui", 2}, {"LDRWui", 4}, {"LDRXui", 8}, {"LDRSBWui", 1}, {"LDRSBXui", 1},
        {"LDRSHWui", 2}, {"LDRSHXui", 2}, {"LDRSWui", 4}, {"LDRBui", 1}, {"LDRHui", 2}, {"LDRSui", 4},
        {"LDRDui", 8}, {"LDRQui", 16}, {"STRBBui", 1}, {"STRHHui", 2}, {"STRWui", 4}, {"STRXui", 8},
        {"STRBui", 1}, {"STRHui", 2}, {"STRSui", 4}, {"STRDui", 8}, {"STRQui", 16}, {"PRFMui", 8}};
    std::unordered_map<std::string, unsigned> byName;
    for (unsigned op = 0; op < mc_.instructions->getNumOpcodes(); ++op) byName[mc_.instructions->getName(op).str()] = op;
    for (auto [name, scale] : scaled)
      if (auto it = byName.find(name); it != byName.end()) accessScale_[it->second] = scale;
    static const std::pair<const char *, FieldEncoding> pcRelative[] = {
        {"B", FieldEncoding::A64Branch26},      {"BL", FieldEncoding::A64Branch26},
        {"Bcc", FieldEncoding::A64Branch19},    {"BCcc", FieldEncoding::A64Branch19},
        {"CBZW", FieldEncoding::A64Branch19},   {"CBZX", FieldEncoding::A64Branch19},
        {"CBNZW", FieldEncoding::A64Branch19},  {"CBNZX", FieldEncoding::A64Branch19},
        {"TBZW", FieldEncoding::A64Branch14},   {"TBZX", FieldEncoding::A64Branch14},
        {"TBNZW", FieldEncoding::A64Branch14},  {"TBNZX", FieldEncoding::A64Branch14},
        {"ADR", FieldEncoding::A64Adr21},       {"LDRWl", FieldEncoding::A64Literal19},
        {"LDRXl", FieldEncoding::A64Literal19}, {"LDRSl", FieldEncoding::A64Literal19},
        {"LDRDl", FieldEncoding::A64Literal19}, {"LDRQl", FieldEncoding::A64Literal19},
        {"LDRSWl", FieldEncoding::A64Literal19}, {"PRFMl", FieldEncoding::A64Literal19}};
    for (auto [name, encoding] : pcRelative)
      if (auto it = byName.find(name); it != byName.end()) pcRelativeEncoding_[it->second] = encoding;
    // Calls preserve x19-x28 (AAPCS64): addresses held there survive a call, the rest do not.
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg) {
      StringRef name = mc_.registers->getName(reg);
      unsigned number = 0;
      if ((name.consume_front("X") || name.consume_front("W")) && !name.getAsInteger(10, number) && number <= 18)
        callerSaved_.push_back(reg);
    }
    hint_ = byName["HINT"];
    adr_ = byName["ADR"];
    adrp_ = byName["ADRP"];
    addImmediate_ = byName["ADDXri"];
  }

protected:
  bool isLayoutNoise(const MCInst &inst) const override {
    if (inst.getOpcode() != hint_ || !inst.getOperand(0).isImm()) return false;
    int64_t imm = inst.getOperand(0).getImm();
    return imm == kHintNop || isBtiHint(imm);
  }
  unsigned undecodableStep() const override { return 4; }
  uint64_t printAddress(uint64_t pc, uint64_t) const override { return pc; }

  // The PC-relative operand (branches, ADR, ADRP, LDR literal), else the immediate of an ADD or a
  // load/store that consumes a known address.
  int addressOperand(const MCInst &inst, const CodeReference &, const RelocationIndex &) const override {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    for (unsigned i = 0; i < inst.getNumOperands() && i < desc.getNumOperands(); ++i)
      if (desc.operands()[i].OperandType == MCOI::OPERAND_PCREL && inst.getOperand(i).isImm()) return int(i);
    return inst.getNumOperands() >= 3 && inst.getOperand(2).isImm() ? 2 : -1;
  }

  // Which offsets forward branches enter, and from where: at those join points an address is
  // known only if every way in agrees (back edges are not followed; compilers keep a hoisted ADRP
  // live around loops). Code after a barrier that only a back edge enters is a rotated loop's
  // body (`b cond; body: ...; cond: b.xx body`): it keeps what was known before the barrier.
  void beginFunction(ArrayRef<uint8_t> code, uint64_t rva) override {
    known_.clear();
    pendingPages_.clear();
    joins_.clear();
    loopHeads_.clear();
    barrier_ = false;
    MCInst inst;
    for (uint64_t offset = 0; offset + 4 <= code.size(); offset += 4) {
      uint64_t size = 0, target = 0;
      inst.clear();
      if (mc_.disassembler->getInstruction(inst, size, code.slice(offset), rva + offset, nulls()) !=
          MCDisassembler::Success)
        continue;
      const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
      if (desc.isBranch() && !desc.isIndirectBranch() && mc_.analysis->evaluateBranch(inst, rva + offset, 4, target) &&
          target >= rva && target < rva + code.size()) {
        if (target > rva + offset) joins_[uint32_t(target - rva)].pending = true;
        else loopHeads_.insert(uint32_t(target - rva));
      }
    }
  }

  // Entering instruction `offset`: merge what forward branches to it carried.
  void enterInstruction(uint32_t offset) {
    auto join = joins_.find(offset);
    if (join == joins_.end()) {
      if (barrier_ && !loopHeads_.count(offset)) known_.clear();
      barrier_ = false;
      return;
    }
    std::vector<const std::unordered_map<unsigned, KnownAddress> *> ways;
    if (!barrier_) ways.push_back(&known_);
    for (const auto &incoming : join->second.incoming) ways.push_back(&incoming);
    std::unordered_map<unsigned, KnownAddress> merged;
    if (!ways.empty()) merged = *ways.front();  // no way in seen: an indirect target, nothing known
    for (size_t w = 1; w < ways.size(); ++w)
      for (auto it = merged.begin(); it != merged.end();) {
        auto other = ways[w]->find(it->first);
        bool same = other != ways[w]->end() && other->second.value == it->second.value &&
                    other->second.isPage == it->second.isPage;
        it = same ? std::next(it) : merged.erase(it);
      }
    known_ = std::move(merged);
    barrier_ = false;
  }

  void recordBranch(uint64_t pc, uint64_t target, uint64_t rva) {
    if (target <= pc) return;
    auto join = joins_.find(uint32_t(target - rva));
    if (join != joins_.end()) join->second.incoming.push_back(known_);
  }

  void endFunction(DecodeState &state) override {
    // An ADRP nobody consumed still depends on the layout, at page granularity.
    for (auto &[instruction, adrp] : pendingPages_)
      state.references.push_back({.instruction = instruction, .kind = ReferenceKind::Page, .size = 4,
                                  .target = adrp.value, .offset = adrp.offset,
                                  .encoding = FieldEncoding::A64AdrPage21});
  }

  void analyze(const MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) override {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    enterInstruction(state.offset);
    state.hash = mixHash(state.hash, inst.getOpcode());

    int pcRelative = -1;
    for (unsigned i = 0; i < inst.getNumOperands() && i < desc.getNumOperands(); ++i)
      if (desc.operands()[i].OperandType == MCOI::OPERAND_PCREL && inst.getOperand(i).isImm()) pcRelative = int(i);
    if (pcRelative >= 0) {
      int64_t imm = inst.getOperand(pcRelative).getImm();
      mixOperands(inst, state, pcRelative);
      if (inst.getOpcode() == adrp_) {
        uint64_t page = (pc & ~uint64_t(0xfff)) + uint64_t(imm) * 4096;
        unsigned reg = inst.getOperand(0).getReg();
        known_[reg] = {page, index, state.offset, true};
        pendingPages_[index] = known_[reg];
        return;
      }
      uint64_t target = inst.getOpcode() == adr_ ? pc + uint64_t(imm) : pc + uint64_t(imm) * 4;
      if (desc.isBranch()) recordBranch(pc, target, pc - state.offset);
      ReferenceKind kind = desc.isCall() ? ReferenceKind::Call
                           : desc.isBranch() ? ReferenceKind::Branch
                                             : ReferenceKind::Memory;
      auto encoding = pcRelativeEncoding_.find(inst.getOpcode());
      state.add(index, kind, target, encoding != pcRelativeEncoding_.end() ? encoding->second : FieldEncoding::None);
      if (inst.getOpcode() == adr_) known_[inst.getOperand(0).getReg()] = {target, index, state.offset, false};
      else killDefinitions(inst, desc);
      if (desc.isCall()) forgetCallerSaved();
      else if (desc.isBranch() && !desc.isConditionalBranch()) barrier_ = true;
      return;
    }

    // A consumer of a known address: ADD Xd, Xn, #imm or LDR/STR Rt, [Xn, #imm].
    auto scale = accessScale_.find(inst.getOpcode());
    bool isAdd = inst.getOpcode() == addImmediate_;
    if ((isAdd || scale != accessScale_.end()) && inst.getNumOperands() >= 3 && inst.getOperand(1).isReg() &&
        inst.getOperand(2).isImm()) {
      auto base = known_.find(inst.getOperand(1).getReg());
      if (base != known_.end()) {
        uint64_t imm = uint64_t(inst.getOperand(2).getImm());
        uint64_t target = isAdd ? base->second.value + (imm << (inst.getNumOperands() > 3 ? inst.getOperand(3).getImm() : 0))
                                : base->second.value + imm * scale->second;
        const KnownAddress producer = base->second;
        mixOperands(inst, state, 2);
        if (producer.isPage) {
          // The ADRP is re-aimed at this consumer's target too (one reference per consumer).
          pendingPages_.erase(producer.instruction);
          state.references.push_back({.instruction = producer.instruction, .kind = ReferenceKind::Memory,
                                      .size = 4, .target = target, .offset = producer.offset,
                                      .encoding = FieldEncoding::A64AdrPage21});
          state.add(index, ReferenceKind::Memory, target,
                    isAdd ? FieldEncoding::A64AddLo12 : FieldEncoding::A64LdStLo12, 0,
                    isAdd ? 0 : uint8_t(llvm::countr_zero(scale->second)));
        } else {
          // An offset from an address an earlier ADD formed: follows from that reference.
          state.add(index, ReferenceKind::Memory, target, FieldEncoding::None);
        }
        killDefinitions(inst, desc);
        if (isAdd) known_[inst.getOperand(0).getReg()] = {target, index, state.offset, false};
        return;
      }
    }
    mixOperands(inst, state);
    if (desc.isCall()) forgetCallerSaved();
    else killDefinitions(inst, desc);
    // After ret, br or an unconditional b, the next instruction is reached only by branches.
    if (desc.isReturn() || (desc.isBranch() && !desc.isConditionalBranch())) barrier_ = true;
  }

private:
  struct KnownAddress {
    uint64_t value = 0;
    uint32_t instruction = 0;  // the ADRP or ADD that produced it
    uint32_t offset = 0;       // its byte offset in the function
    bool isPage = false;
  };

  void killDefinitions(const MCInst &inst, const MCInstrDesc &desc) {
    for (unsigned i = 0; i < desc.getNumDefs() && i < inst.getNumOperands(); ++i) {
      if (!inst.getOperand(i).isReg()) continue;
      unsigned reg = inst.getOperand(i).getReg();
      for (auto it = known_.begin(); it != known_.end();)
        it = mc_.registers->regsOverlap(it->first, reg) ? known_.erase(it) : std::next(it);
    }
  }

  void forgetCallerSaved() {
    for (unsigned reg : callerSaved_) known_.erase(reg);
  }

  std::vector<unsigned> callerSaved_;
  std::unordered_map<unsigned, unsigned> accessScale_;
  unsigned hint_ = 0, adr_ = 0, adrp_ = 0, addImmediate_ = 0;
  std::unordered_map<unsigned, KnownAddress> known_;
  std::map<uint32_t, KnownAddress> pendingPages_;  // ADRPs not consumed yet; ordered: deterministic
  std::unordered_set<uint32_t> loopHeads_;  // targets of back edges
  struct Join {
    bool pending = false;
    std::vector<std::unordered_map<unsigned, KnownAddress>> incoming;  // states of forward branches here
  };
  std::map<uint32_t, Join> joins_;
  bool barrier_ = false;  // the previous instruction does not fall through
  std::unordered_map<unsigned, FieldEncoding> pcRelativeEncoding_;
};

}  // namespace

Expected<std::unique_ptr<InstructionDecoder>> createArm64Decoder() {
  // "+all" so that every extension decodes, as llvm-objdump does.
  Expected<McToolkit> mc = McToolkit::create("aarch64-unknown-unknown", "+all");
  if (!mc) return mc.takeError();
  return std::make_unique<Arm64Decoder>(std::move(*mc));
}

}  // namespace hotforge::differ
