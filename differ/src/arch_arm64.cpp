// AArch64: B/BL imm26, B.cond/CBZ/CBNZ imm19, TBZ/TBNZ imm14, ADR, LDR literal, and ADRP paired
// with the ADD/LDR/STR that consume its page, wherever in the function they are (data flow over
// its basic blocks, through `mov` copies).
#include "mc_decoder.h"

#include <llvm/ADT/StringSet.h>
#include <llvm/ADT/bit.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/MathExtras.h>

#include <map>
#include <optional>
#include <set>
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
    hasOutOfLineCode_ = true;
    // Unsigned-offset loads and stores scale their 12-bit immediate by the access size.
    static const std::pair<const char *, unsigned> scaled[] = {
        {"LDRBBui", 1}, {"LDRHHui", 2}, {"LDRWui", 4}, {"LDRXui", 8}, {"LDRSBWui", 1}, {"LDRSBXui", 1},
        {"LDRSHWui", 2}, {"LDRSHXui", 2}, {"LDRSWui", 4}, {"LDRBui", 1}, {"LDRHui", 2}, {"LDRSui", 4},
        {"LDRDui", 8}, {"LDRQui", 16}, {"STRBBui", 1}, {"STRHHui", 2}, {"STRWui", 4}, {"STRXui", 8},
        {"STRBui", 1}, {"STRHui", 2}, {"STRSui", 4}, {"STRDui", 8}, {"STRQui", 16}, {"PRFMui", 8}};
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
    static const std::pair<const char *, unsigned> pairs[] = {
        {"LDPWi", 4}, {"LDPXi", 8}, {"LDPSWi", 4}, {"LDPSi", 4}, {"LDPDi", 8}, {"LDPQi", 16},
        {"STPWi", 4}, {"STPXi", 8}, {"STPSi", 4}, {"STPDi", 8}, {"STPQi", 16}};
    StringSet<> wanted{"HINT", "ADR", "ADRP", "ADDXri", "ORRXrs", "STRXui", "LDRXui"};
    for (auto [name, scale] : scaled) wanted.insert(name);
    for (auto [name, encoding] : pcRelative) wanted.insert(name);
    for (auto [name, scale] : pairs) wanted.insert(name);
    auto isUnscaled = [](StringRef name) { return (name.starts_with("LDUR") || name.starts_with("STUR")) && name.ends_with("i"); };
    StringMap<unsigned> byName = mc_.opcodesNamed([&](StringRef name) { return wanted.contains(name) || isUnscaled(name); });
    for (auto [name, scale] : scaled)
      if (auto it = byName.find(name); it != byName.end()) accessScale_[it->second] = scale;
    for (auto [name, encoding] : pcRelative)
      if (auto it = byName.find(name); it != byName.end()) pcRelativeEncoding_[it->second] = encoding;
    // Calls preserve x19-x28 (AAPCS64): addresses held there survive a call, the rest do not.
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg) {
      StringRef name = mc_.registers->getName(reg);
      unsigned number = 0;
      if ((name.consume_front("X") || name.consume_front("W")) && !name.getAsInteger(10, number) && number <= 18)
        callerSaved_.push_back(reg);
    }
    for (auto [name, scale] : pairs)
      if (auto it = byName.find(name); it != byName.end()) pairScale_[it->second] = scale;
    for (const auto &entry : byName)
      if (isUnscaled(entry.getKey())) unscaled_.insert(entry.getValue());
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg) {
      StringRef name = mc_.registers->getName(reg);
      if (name == "SP" || name == "WSP" || name == "FP" || name == "X29") notFieldBases_.insert(reg);
      if (name == "FP" || name == "X29") framePointer_ = reg;
    }
    hint_ = byName["HINT"];
    adr_ = byName["ADR"];
    adrp_ = byName["ADRP"];
    addImmediate_ = byName["ADDXri"];
    orrShifted_ = byName["ORRXrs"];
    storeX_ = byName["STRXui"];
    loadX_ = byName["LDRXui"];
    for (unsigned reg = 1; reg < mc_.registers->getNumRegs(); ++reg)
      if (mc_.registers->getName(reg) == StringRef("XZR")) zeroRegister_ = reg;
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

  std::optional<uint64_t> importThunkSlot(ArrayRef<uint8_t> code, uint64_t rva) const override {
    if (code.size() < 12) return std::nullopt;
    uint32_t adrp = support::endian::read32le(&code[0]), ldr = support::endian::read32le(&code[4]),
             br = support::endian::read32le(&code[8]);
    // adrp x16, page; ldr x16, [x16, #imm]; br x16
    if ((adrp & 0x9f00001f) != 0x90000010 || (ldr & 0xffc003ff) != 0xf9400210 || br != 0xd61f0200) return std::nullopt;
    int64_t pages = SignExtend64<21>(((adrp >> 29) & 3) | ((adrp >> 3) & 0x1ffffc));
    return (rva & ~uint64_t(0xfff)) + uint64_t(pages) * 4096 + ((ldr >> 10) & 0xfff) * 8;
  }

  // GNU ld's other fix for erratum 843419 (see isErratumAdr): the load or store after such an ADRP
  // moves to a veneer, `ldr/str ...; b back`, and `b veneer` takes its place.
  bool hazardousPlacement(ArrayRef<uint8_t> code, uint64_t rva) const override {
    constexpr uint32_t kAdrOrAdrpMask = 0x1f000000, kAdrOrAdrp = 0x10000000, kNop = 0xd503201f;
    auto isAdrOrAdrp = [&](uint64_t offset) {
      return offset + 4 <= code.size() && (support::endian::read32le(code.data() + offset) & kAdrOrAdrpMask) == kAdrOrAdrp;
    };
    for (uint64_t offset = 0; offset + 4 <= code.size(); offset += 4) {
      uint64_t inPage = (rva + offset) & 0xfff;
      if (inPage != 0xff8 && inPage != 0xffc) continue;
      if (isAdrOrAdrp(offset) || (support::endian::read32le(code.data() + offset) == kNop && isAdrOrAdrp(offset + 4)))
        return true;
    }
    return false;
  }

  std::optional<uint32_t> outOfLineInstruction(uint64_t pc, uint32_t word, const Image &image) const override {
    constexpr uint32_t kBranchMask = 0xfc000000, kBranch = 0x14000000;
    if ((word & kBranchMask) != kBranch) return std::nullopt;
    uint64_t veneer = pc + uint64_t(SignExtend64<26>(word & 0x03ffffff) * 4);
    ArrayRef<uint8_t> bytes = image.bytesAt(veneer, 8);
    if (bytes.size() != 8) return std::nullopt;
    uint32_t moved = support::endian::read32le(&bytes[0]), back = support::endian::read32le(&bytes[4]);
    if ((back & kBranchMask) != kBranch || veneer + 4 + uint64_t(SignExtend64<26>(back & 0x03ffffff) * 4) != pc + 4)
      return std::nullopt;
    MCInst inst;
    uint64_t size = 0;
    if (!mc_.decode(inst, size, bytes.take_front(4), veneer) || !accessScale_.count(inst.getOpcode()))
      return std::nullopt;
    return moved;
  }

  // LDR/STR Rt, [Xn, #imm] (scaled), LDUR/STUR Rt, [Xn, #simm] and LDP/STP Rt, Rt2, [Xn, #imm]
  // (signed offset) from a register other than sp and the frame pointer x29.
  std::optional<unsigned> displacementScale(const MCInst &inst, unsigned operand) const override {
    unsigned scale = 0, base = 1;
    if (auto it = accessScale_.find(inst.getOpcode()); it != accessScale_.end()) scale = it->second;
    else if (unscaled_.count(inst.getOpcode())) scale = 1;
    else if (auto pair = pairScale_.find(inst.getOpcode()); pair != pairScale_.end()) scale = pair->second, base = 2;
    if (!scale || operand != base + 1 || inst.getNumOperands() <= operand || !inst.getOperand(base).isReg() ||
        notFieldBases_.count(inst.getOperand(base).getReg()))
      return std::nullopt;
    return scale;
  }

  // ADRP pages are followed to their uses by a forward data-flow pass over the function's basic
  // blocks, iterated until nothing changes (loops included; see meet() for how ways in join). A
  // block that no direct branch enters is entered by the function's indirect branches (jump
  // tables), when it has any. The decode loop then walks the instructions in order, starting every
  // block from what the pass found.
  const MCInst *predecoded(uint64_t offset, uint64_t &size) const override {
    if (offset % 4 != 0 || offset / 4 >= predecodedAt_.size() || predecodedAt_[offset / 4] < 0) return nullptr;
    size = 4;
    return &predecoded_[size_t(predecodedAt_[offset / 4])].inst;
  }

  void beginFunction(ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations) override {
    known_.clear();
    pendingPages_.clear();
    consumedPages_.clear();
    spilledTo_.clear();
    reloadedUses_.clear();
    blockEntry_.clear();
    predecoded_.clear();
    predecodedAt_.assign(code.size() / 4, -1);
    // ADR and ADRP are the words with bits 28-24 = 10000: without one there is nothing to
    // follow, and the function needs no decoding here.
    bool hasAddress = false;
    for (uint64_t offset = 0; offset + 4 <= code.size() && !hasAddress; offset += 4)
      hasAddress = (support::endian::read32le(code.data() + offset) & 0x1f000000) == 0x10000000;
    if (!hasAddress) return;
    std::vector<Decoded> &insts = predecoded_;
    uint32_t index = 0;
    bool sawAddress = false;
    for (uint64_t offset = 0; offset + 4 <= code.size(); offset += 4) {
      uint64_t size = 0;
      Decoded d;
      if (!decodeAt(d.inst, size, code.slice(offset), rva + offset, relocations)) continue;
      if (isLayoutNoise(d.inst)) continue;
      d.offset = uint32_t(offset);
      d.index = index++;
      sawAddress |= d.inst.getOpcode() == adrp_ || d.inst.getOpcode() == adr_;
      predecodedAt_[offset / 4] = int32_t(insts.size());
      insts.push_back(std::move(d));
    }
    if (!sawAddress || insts.empty()) return;  // nothing to follow

    // Blocks: the first instruction, every branch target inside the function, and whatever
    // follows a branch or a return start one.
    std::map<uint32_t, size_t> blockAt;  // offset -> block
    auto targetOf = [&](const Decoded &d, uint64_t &target) {
      const MCInstrDesc &desc = mc_.instructions->get(d.inst.getOpcode());
      return desc.isBranch() && !desc.isIndirectBranch() &&
             mc_.analysis->evaluateBranch(d.inst, rva + d.offset, 4, target) && target >= rva &&
             target < rva + code.size();
    };
    std::set<uint32_t> leaders{insts.front().offset};
    for (size_t i = 0; i < insts.size(); ++i) {
      const MCInstrDesc &desc = mc_.instructions->get(insts[i].inst.getOpcode());
      uint64_t target = 0;
      if (targetOf(insts[i], target)) leaders.insert(uint32_t(target - rva));
      if ((desc.isBranch() || desc.isReturn()) && i + 1 < insts.size()) leaders.insert(insts[i + 1].offset);
    }
    struct Block {
      size_t first = 0, end = 0;  // instructions [first, end)
      std::vector<size_t> successors;
      bool entered = false;
      Known in;
    };
    std::vector<Block> blocks;
    for (size_t i = 0; i < insts.size(); ++i) {
      if (leaders.count(insts[i].offset)) {
        if (!blocks.empty()) blocks.back().end = i;
        blockAt[insts[i].offset] = blocks.size();
        blocks.push_back({i, insts.size(), {}, false, {}});
      }
    }
    std::vector<bool> directlyEntered(blocks.size(), false);
    std::vector<size_t> indirectSources;
    for (size_t b = 0; b < blocks.size(); ++b) {
      const Decoded &last = insts[blocks[b].end - 1];
      const MCInstrDesc &desc = mc_.instructions->get(last.inst.getOpcode());
      uint64_t target = 0;
      // Targets that fall between instructions (data in code) enter no block.
      if (targetOf(last, target))
        if (auto it = blockAt.find(uint32_t(target - rva)); it != blockAt.end()) blocks[b].successors.push_back(it->second);
      bool fallsThrough = !desc.isReturn() && (!desc.isBranch() || desc.isConditionalBranch() || desc.isCall());
      if (fallsThrough && b + 1 < blocks.size()) blocks[b].successors.push_back(b + 1);
      if (desc.isIndirectBranch() && !desc.isReturn() && !desc.isCall()) indirectSources.push_back(b);
      for (size_t s : blocks[b].successors) directlyEntered[s] = true;
    }
    for (size_t b = 1; b < blocks.size(); ++b)
      if (!directlyEntered[b])
        for (size_t source : indirectSources) blocks[source].successors.push_back(b);

    blocks[0].entered = true;
    for (bool changed = true; changed;) {
      changed = false;
      for (Block &block : blocks) {
        if (!block.entered) continue;
        Known state = block.in;
        for (size_t i = block.first; i < block.end; ++i) track(insts[i].inst, rva + insts[i].offset, insts[i], state);
        for (size_t s : block.successors) {
          Block &next = blocks[s];
          if (!next.entered) {
            next.entered = true;
            next.in = state;
            changed = true;
          } else {
            changed |= meet(next.in, state);
          }
        }
      }
    }
    for (size_t b = 0; b < blocks.size(); ++b) blockEntry_[insts[blocks[b].first].offset] = std::move(blocks[b].in);
  }

  void endFunction(DecodeState &state) override {
    // An ADRP nobody consumed still depends on the layout, at page granularity, unless it was
    // spilled to a stack slot whose reloads are used on its page: compilers spill a page for
    // later uses, and a path may store it again before any reload. It then stands for that use,
    // the address any reload of it would form. An erratum ADR nobody consumed holds its exact
    // address.
    for (auto &[instruction, page] : pendingPages_) {
      std::optional<uint64_t> use;
      if (auto slots = spilledTo_.find(instruction); slots != spilledTo_.end())
        for (unsigned slot : slots->second)
          for (uint64_t target : reloadedUses_[slot])
            if ((target & ~uint64_t(0xfff)) == page.page && (!use || target < *use)) use = target;
      bool exact = page.isAdr || use;
      state.references.push_back({.instruction = instruction, .kind = exact ? ReferenceKind::Memory : ReferenceKind::Page,
                                  .size = 4, .target = use.value_or(page.page), .offset = page.offset,
                                  .encoding = page.isAdr ? FieldEncoding::A64Adr21 : FieldEncoding::A64AdrPage21});
    }
  }

  void analyze(const MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) override {
    if (auto entry = blockEntry_.find(state.offset); entry != blockEntry_.end()) known_ = entry->second;
    // An erratum ADR is the ADRP the linker rewrote: it hashes as one, so both compare equal.
    state.hash = mixHash(state.hash, isErratumAdr(inst, pc) ? adrp_ : inst.getOpcode());
    Effect effect = track(inst, pc, {MCInst(), state.offset, index}, known_);
    switch (effect.kind) {
    case Effect::Plain: mixOperands(inst, state); return;
    case Effect::Spill:
      mixOperands(inst, state);
      for (auto [producer, offset] : effect.producer.producers) spilledTo_[producer].insert(effect.slot);
      return;
    case Effect::Page:
      mixOperands(inst, state, effect.operand);
      // A use before it in address order (reached through a backward branch) consumed it already.
      if (!consumedPages_.count(index)) pendingPages_[index] = {state.offset, effect.target, inst.getOpcode() == adr_};
      return;
    case Effect::PcRelative: {
      const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
      mixOperands(inst, state, effect.operand);
      ReferenceKind kind = desc.isCall() ? ReferenceKind::Call
                           : desc.isBranch() ? ReferenceKind::Branch
                                             : ReferenceKind::Memory;
      auto encoding = pcRelativeEncoding_.find(inst.getOpcode());
      state.add(index, kind, effect.target, encoding != pcRelativeEncoding_.end() ? encoding->second : FieldEncoding::None);
      return;
    }
    case Effect::Consumer:
      mixOperands(inst, state, effect.operand);
      if (effect.producer.isPage && effect.producer.reloadedFrom) reloadedUses_[effect.producer.reloadedFrom].insert(effect.target);
      if (!effect.producer.isPage) {
        // An offset from an address an earlier ADD formed: follows from that reference.
        state.add(index, ReferenceKind::Memory, effect.target, FieldEncoding::None);
        state.references.back().offsetFrom = effect.producer.value;
        return;
      }
      // Every ADRP that can reach here is re-aimed at this consumer's target too (one reference
      // per consumer).
      for (auto [producer, offset] : effect.producer.producers) {
        pendingPages_.erase(producer);
        consumedPages_.insert(producer);
        state.references.push_back({.instruction = producer, .kind = ReferenceKind::Memory, .size = 4,
                                    .target = effect.target, .offset = offset,
                                    .encoding = FieldEncoding::A64AdrPage21});
      }
      state.add(index, ReferenceKind::Memory, effect.target,
                effect.scale ? FieldEncoding::A64LdStLo12 : FieldEncoding::A64AddLo12, 0,
                effect.scale ? uint8_t(llvm::countr_zero(effect.scale)) : 0);
      return;
    }
  }

private:
  // The Cortex-A53 erratum 843419 fix of GNU ld (--fix-cortex-a53-843419, on by default for
  // Debian's arm64 gcc) turns an ADRP at page offset 0xff8 or 0xffc whose page is within 1 MiB into
  // an ADR of that page. Its register holds a page as an ADRP's would, and its uses are the
  // ADRP's :lo12: uses: followed as a page, re-aimed as an ADRP.
  bool isErratumAdr(const MCInst &inst, uint64_t pc) const {
    if (inst.getOpcode() != adr_ || (pc & 0xfff) < 0xff8 || !inst.getOperand(1).isImm()) return false;
    return ((pc + uint64_t(inst.getOperand(1).getImm())) & 0xfff) == 0;
  }

  struct KnownAddress {
    uint64_t value = 0;
    bool isPage = false;
    // For a page: the ADRPs (instruction index, byte offset) it may come from, sorted.
    std::vector<std::pair<uint32_t, uint32_t>> producers = {};
    bool conflict = false;  // ways into a block disagree: not known, and stays so
    unsigned reloadedFrom = 0;  // a page: the stack slot it was last reloaded from, if any
  };
  using Known = std::map<unsigned, KnownAddress>;  // register (or stack slot) -> address it holds
  static constexpr unsigned kStackSlots = 1u << 24;  // keys of stack slots: kStackSlots + offset
  struct Decoded {
    MCInst inst;
    uint32_t offset = 0, index = 0;
  };
  // What one instruction does with addresses.
  struct Effect {
    enum Kind { Plain, Page, PcRelative, Consumer, Spill } kind = Plain;
    int operand = -1;  // the operand that holds the address
    uint64_t target = 0;
    KnownAddress producer;  // Consumer: the address its base register held
    unsigned scale = 0;     // Consumer: access size of a load or store, 0 for ADD
    unsigned slot = 0;      // Spill: the stack slot a page was stored to
  };

  // Applies one instruction to `known`: ADRP and ADR set their register, ADD from a known address
  // sets its register, `mov` copies a known address, every other write forgets the register, and
  // a call forgets x0-x18.
  Effect track(const MCInst &inst, uint64_t pc, const Decoded &at, Known &known) const {
    const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
    int pcRelative = -1;
    for (unsigned i = 0; i < inst.getNumOperands() && i < desc.getNumOperands(); ++i)
      if (desc.operands()[i].OperandType == MCOI::OPERAND_PCREL && inst.getOperand(i).isImm()) pcRelative = int(i);
    if (pcRelative >= 0) {
      int64_t imm = inst.getOperand(pcRelative).getImm();
      if (inst.getOpcode() == adrp_ || isErratumAdr(inst, pc)) {
        uint64_t page = inst.getOpcode() == adrp_ ? (pc & ~uint64_t(0xfff)) + uint64_t(imm) * 4096 : pc + uint64_t(imm);
        known[inst.getOperand(0).getReg()] = {page, true, {{at.index, at.offset}}};
        return {Effect::Page, pcRelative, page, {}, 0};
      }
      uint64_t target = inst.getOpcode() == adr_ ? pc + uint64_t(imm) : pc + uint64_t(imm) * 4;
      if (inst.getOpcode() == adr_) known[inst.getOperand(0).getReg()] = {target, false, {}};
      else killDefinitions(inst, desc, known);
      if (desc.isCall()) forgetCallerSaved(known);
      return {Effect::PcRelative, pcRelative, target, {}, 0};
    }
    // A consumer of a known address: ADD Xd, Xn, #imm or LDR/STR Rt, [Xn, #imm].
    auto scale = accessScale_.find(inst.getOpcode());
    bool isAdd = inst.getOpcode() == addImmediate_;
    if ((isAdd || scale != accessScale_.end()) && inst.getNumOperands() >= 3 && inst.getOperand(1).isReg() &&
        inst.getOperand(2).isImm()) {
      auto base = known.find(inst.getOperand(1).getReg());
      if (base != known.end() && !base->second.conflict) {
        uint64_t imm = uint64_t(inst.getOperand(2).getImm());
        uint64_t target = isAdd ? base->second.value + (imm << (inst.getNumOperands() > 3 ? inst.getOperand(3).getImm() : 0))
                                : base->second.value + imm * scale->second;
        Effect effect{Effect::Consumer, 2, target, base->second, isAdd ? 0 : scale->second};
        killDefinitions(inst, desc, known);
        if (isAdd) known[inst.getOperand(0).getReg()] = {target, false, {}};
        return effect;
      }
    }
    // A page spilled to the stack (str Xt, [sp|x29, #imm]) and reloaded (ldr Xt, [sp|x29, #imm]).
    if ((inst.getOpcode() == storeX_ || inst.getOpcode() == loadX_) && inst.getNumOperands() == 3 &&
        inst.getOperand(1).isReg() && notFieldBases_.count(inst.getOperand(1).getReg()) && inst.getOperand(2).isImm()) {
      unsigned slot = kStackSlots + (inst.getOperand(1).getReg() == framePointer_ ? 1u << 16 : 0) +
                      unsigned(inst.getOperand(2).getImm() & 0xffff);
      unsigned reg = inst.getOperand(0).getReg();
      if (inst.getOpcode() == storeX_) {
        auto value = known.find(reg);
        if (value == known.end() || !value->second.isPage || value->second.conflict) {
          known.erase(slot);
          return {};
        }
        known[slot] = value->second;
        Effect spill{Effect::Spill, -1, value->second.value, value->second, 0};
        spill.slot = slot;
        return spill;
      }
      std::optional<KnownAddress> copy;
      if (auto value = known.find(slot); value != known.end() && !value->second.conflict) copy = value->second;
      killDefinitions(inst, desc, known);
      if (copy) {
        copy->reloadedFrom = slot;
        known[reg] = std::move(*copy);
      }
      return {};
    }
    // mov Xd, Xm (orr Xd, xzr, Xm) carries a known address into another register.
    if (inst.getOpcode() == orrShifted_ && inst.getNumOperands() == 4 && inst.getOperand(1).getReg() == zeroRegister_ &&
        inst.getOperand(3).getImm() == 0) {
      auto source = known.find(inst.getOperand(2).getReg());
      std::optional<KnownAddress> copy;
      if (source != known.end() && !source->second.conflict) copy = source->second;
      killDefinitions(inst, desc, known);
      if (copy) known[inst.getOperand(0).getReg()] = std::move(*copy);
      return {};
    }
    if (desc.isCall()) forgetCallerSaved(known);
    else killDefinitions(inst, desc, known);
    return {};
  }

  // Joins what another way into a block knows into `into`; returns whether `into` changed. A
  // page is kept when every way that knows the register agrees on it: no compiled code joins a
  // bare page with another value, while a way that lost it (a reload, a path into a noreturn
  // call) would hide its use. Other addresses are real pointers, kept only when every way agrees.
  static bool meet(Known &into, const Known &other) {
    bool changed = false;
    auto conflict = [&changed](KnownAddress &k) {
      if (k.conflict) return;
      k = {};
      k.conflict = changed = true;
    };
    for (auto &[reg, mine] : into) {
      if (mine.conflict) continue;
      auto theirs = other.find(reg);
      if (theirs == other.end()) {
        if (!mine.isPage) conflict(mine);
        continue;
      }
      if (theirs->second.conflict || theirs->second.value != mine.value || theirs->second.isPage != mine.isPage) {
        conflict(mine);
        continue;
      }
      if (!mine.reloadedFrom && theirs->second.reloadedFrom) {
        mine.reloadedFrom = theirs->second.reloadedFrom;
        changed = true;
      }
      for (const auto &producer : theirs->second.producers)
        if (auto at = std::lower_bound(mine.producers.begin(), mine.producers.end(), producer);
            at == mine.producers.end() || *at != producer) {
          mine.producers.insert(at, producer);
          changed = true;
        }
    }
    for (const auto &[reg, theirs] : other)
      if (!into.count(reg)) {
        into[reg] = theirs.isPage ? theirs : KnownAddress{};
        if (!theirs.isPage) into[reg].conflict = true;
        changed = true;
      }
    return changed;
  }

  void killDefinitions(const MCInst &inst, const MCInstrDesc &desc, Known &known) const {
    for (unsigned i = 0; i < desc.getNumDefs() && i < inst.getNumOperands(); ++i) {
      if (!inst.getOperand(i).isReg()) continue;
      unsigned reg = inst.getOperand(i).getReg();
      for (auto it = known.begin(); it != known.end();)
        it = it->first < kStackSlots && mc_.registers->regsOverlap(it->first, reg) ? known.erase(it) : std::next(it);
    }
  }

  void forgetCallerSaved(Known &known) const {
    for (unsigned reg : callerSaved_) known.erase(reg);
  }

  std::vector<unsigned> callerSaved_;
  std::unordered_map<unsigned, unsigned> accessScale_, pairScale_;  // opcode -> access size
  std::unordered_set<unsigned> unscaled_, notFieldBases_;  // LDUR/STUR opcodes; sp and x29
  unsigned hint_ = 0, adr_ = 0, adrp_ = 0, addImmediate_ = 0, orrShifted_ = 0, zeroRegister_ = 0, storeX_ = 0,
           loadX_ = 0, framePointer_ = 0;
  Known known_;
  std::map<uint32_t, Known> blockEntry_;  // per block's first offset: what is known on entry
  struct PendingPage {
    uint32_t offset = 0;
    uint64_t page = 0;
    bool isAdr = false;  // an erratum ADR
  };
  std::map<uint32_t, PendingPage> pendingPages_;  // ADRPs not consumed yet
  std::vector<Decoded> predecoded_;     // the function's instructions, as beginFunction decoded them
  std::vector<int32_t> predecodedAt_;   // per 4-byte word: its index in predecoded_, or -1
  std::unordered_set<uint32_t> consumedPages_;                      // ADRPs some use consumed
  std::map<uint32_t, std::set<unsigned>> spilledTo_;     // ADRP -> stack slots it was stored to
  std::map<unsigned, std::set<uint64_t>> reloadedUses_;  // stack slot -> targets its reloaded pages formed
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
