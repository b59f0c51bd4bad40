// AArch64: B/BL imm26, B.cond/CBZ/CBNZ imm19, TBZ/TBNZ imm14, ADR, LDR literal, and ADRP paired
// with the ADD/LDR/STR that consume its page, wherever in the function they are (data flow over
// its basic blocks, through `mov` copies).
#include "mc_decoder.h"

#include "hotforge/codeflow/arm64_opcodes.h"

#include <llvm/ADT/DenseMap.h>
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

// What the decoder needs from LLVM's AArch64 opcode and register tables. Finding it reads all
// opcode names: done once per process, not per decoder.
struct Arm64Tables : Arm64Opcodes {
  explicit Arm64Tables(const McToolkit &mc) : Arm64Opcodes(mc) {
    // Unsigned-offset loads and stores scale their 12-bit immediate by the access size.
    static const std::pair<const char *, unsigned> scaled[] = {
        {"LDRBBui", 1}, {"LDRHHui", 2}, {"LDRWui", 4}, {"LDRXui", 8}, {"LDRSBWui", 1}, {"LDRSBXui", 1},
        {"LDRSHWui", 2}, {"LDRSHXui", 2}, {"LDRSWui", 4}, {"LDRBui", 1}, {"LDRHui", 2}, {"LDRSui", 4},
        {"LDRDui", 8}, {"LDRQui", 16}, {"STRBBui", 1}, {"STRHHui", 2}, {"STRWui", 4}, {"STRXui", 8},
        {"STRBui", 1}, {"STRHui", 2}, {"STRSui", 4}, {"STRDui", 8}, {"STRQui", 16}, {"PRFMui", 8}};
    static const std::pair<const char *, FixupKind> pcRelative[] = {
        {"B", FixupKind::A64Branch26},      {"BL", FixupKind::A64Branch26},
        {"Bcc", FixupKind::A64Branch19},    {"BCcc", FixupKind::A64Branch19},
        {"CBZW", FixupKind::A64Branch19},   {"CBZX", FixupKind::A64Branch19},
        {"CBNZW", FixupKind::A64Branch19},  {"CBNZX", FixupKind::A64Branch19},
        {"TBZW", FixupKind::A64Branch14},   {"TBZX", FixupKind::A64Branch14},
        {"TBNZW", FixupKind::A64Branch14},  {"TBNZX", FixupKind::A64Branch14},
        {"ADR", FixupKind::A64Adr21},       {"LDRWl", FixupKind::A64Literal19},
        {"LDRXl", FixupKind::A64Literal19}, {"LDRSl", FixupKind::A64Literal19},
        {"LDRDl", FixupKind::A64Literal19}, {"LDRQl", FixupKind::A64Literal19},
        {"LDRSWl", FixupKind::A64Literal19}, {"PRFMl", FixupKind::A64Literal19}};
    static const std::pair<const char *, unsigned> pairs[] = {
        {"LDPWi", 4}, {"LDPXi", 8}, {"LDPSWi", 4}, {"LDPSi", 4}, {"LDPDi", 8}, {"LDPQi", 16},
        {"STPWi", 4}, {"STPXi", 8}, {"STPSi", 4}, {"STPDi", 8}, {"STPQi", 16}};
    StringSet<> wanted;
    for (auto [name, scale] : scaled) wanted.insert(name);
    for (auto [name, encoding] : pcRelative) wanted.insert(name);
    for (auto [name, scale] : pairs) wanted.insert(name);
    for (const char *name : kAddRegister) wanted.insert(name);
    auto isUnscaled = [](StringRef name) { return (name.starts_with("LDUR") || name.starts_with("STUR")) && name.ends_with("i"); };
    StringMap<unsigned> byName = mc.opcodesNamed([&](StringRef name) { return wanted.contains(name) || isUnscaled(name); });
    accessScale.assign(mc.instructions->getNumOpcodes(), 0);
    hasPcRelative.assign(mc.instructions->getNumOpcodes(), false);
    for (unsigned op = 0; op < mc.instructions->getNumOpcodes(); ++op)
      for (const MCOperandInfo &operand : mc.instructions->get(op).operands())
        hasPcRelative[op] = hasPcRelative[op] || operand.OperandType == MCOI::OPERAND_PCREL;
    for (auto [name, scale] : scaled)
      if (auto it = byName.find(name); it != byName.end()) accessScale[it->second] = uint8_t(scale);
    for (auto [name, encoding] : pcRelative)
      if (auto it = byName.find(name); it != byName.end()) pcRelativeEncoding[it->second] = encoding;
    // Calls preserve x19-x28 (AAPCS64): addresses held there survive a call, the rest do not.
    callerSaved.assign(mc.registers->getNumRegs(), false);
    for (unsigned reg = 1; reg < mc.registers->getNumRegs(); ++reg) {
      StringRef name = mc.registers->getName(reg);
      unsigned number = 0;
      if ((name.consume_front("X") || name.consume_front("W")) && !name.getAsInteger(10, number) && number <= 18)
        callerSaved[reg] = true;
    }
    pairScale.assign(mc.instructions->getNumOpcodes(), 0);
    for (auto [name, scale] : pairs)
      if (auto it = byName.find(name); it != byName.end()) pairScale[it->second] = uint8_t(scale);
    unscaled.assign(mc.instructions->getNumOpcodes(), false);
    for (const auto &entry : byName)
      if (isUnscaled(entry.getKey())) unscaled[entry.getValue()] = true;
    addRegister.assign(mc.instructions->getNumOpcodes(), false);
    for (const char *name : kAddRegister)
      if (auto it = byName.find(name); it != byName.end()) addRegister[it->second] = true;
    notFieldBases.assign(mc.registers->getNumRegs(), false);
    for (unsigned reg = 1; reg < mc.registers->getNumRegs(); ++reg) {
      StringRef name = mc.registers->getName(reg);
      if (name == "SP" || name == "WSP" || name == "FP" || name == "X29") notFieldBases[reg] = true;
      if (name == "FP" || name == "X29") framePointer = reg;
    }
    for (unsigned reg = 1; reg < mc.registers->getNumRegs(); ++reg)
      if (mc.registers->getName(reg) == StringRef("XZR")) zeroRegister = reg;
  }

  std::vector<bool> callerSaved;  // per register
  std::vector<uint8_t> accessScale;  // by opcode: the access size of an unsigned-offset load or store, else 0
  std::vector<bool> hasPcRelative;   // by opcode: it has a PC-relative operand
  std::vector<uint8_t> pairScale;   // by opcode: the access size of an LDP/STP with a signed offset, else 0
  std::vector<bool> unscaled;       // by opcode: LDUR/STUR
  std::vector<bool> notFieldBases;  // by register: sp and x29
  // ADD Xd, Xn, Xm{, shift} and ADD Xd, Xn, Wm{, extend}: an index added to an address.
  static constexpr const char *kAddRegister[] = {"ADDXrs", "ADDXrx", "ADDXrx64"};
  std::vector<bool> addRegister;  // by opcode
  unsigned zeroRegister = 0, framePointer = 0;
  std::unordered_map<unsigned, FixupKind> pcRelativeEncoding;
};

class Arm64Decoder final : public McDecoder {
public:
  explicit Arm64Decoder(McToolkit toolkit) : McDecoder(std::move(toolkit)), tables_(sharedTables(mc_)) {
    hasOutOfLineCode_ = true;
  }

protected:
  bool isLayoutNoise(const MCInst &inst) const override {
    if (inst.getOpcode() != tables_.hint || !inst.getOperand(0).isImm()) return false;
    int64_t imm = inst.getOperand(0).getImm();
    return imm == kHintNop || isBtiHint(imm);
  }
  unsigned undecodableStep() const override { return 4; }

  // A word always decodes to the same MCInst: PC-relative operands are offsets, not addresses. A
  // library holds about a fifth as many distinct words as instructions (libgio: 61,000 of
  // 298,000), and LLVM's decoder takes about 1,000 instructions per word, a lookup a few dozen.
  bool disassemble(MCInst &inst, uint64_t &size, ArrayRef<uint8_t> bytes, uint64_t pc) const override {
    uint32_t word = bytes.size() >= 4 ? support::endian::read32le(bytes.data()) : 0;
    if (bytes.size() < 4 || word >= WordKey::getTombstoneKey())  // the map's reserved keys
      return McDecoder::disassemble(inst, size, bytes, pc);
    if (auto known = decodedWords_.find(word); known != decodedWords_.end()) {
      if (known->second < 0) return false;
      const MCOperand *kept = &decodedWordOperands_[size_t(known->second)];
      uint64_t header = uint64_t(kept->getImm());
      inst.clear();
      inst.setOpcode(unsigned(header >> 32));
      inst.setFlags(0);
      for (uint32_t i = 1; i <= uint32_t(header); ++i) inst.addOperand(kept[i]);
      size = 4;
      return true;
    }
    bool decoded = McDecoder::disassemble(inst, size, bytes.take_front(4), pc) && size == 4;
    // (An instruction with flags, which Arm64 does not set, is decoded every time.)
    if (decodedWords_.size() < kDecodedWordsKept && (!decoded || inst.getFlags() == 0)) {
      // Reserved whole, but only what is used gets pages: growing it step by step copied it and
      // faulted in every larger buffer.
      if (decodedWordOperands_.capacity() == 0) decodedWordOperands_.reserve(kDecodedWordsKept * 5);
      decodedWords_[word] = decoded ? int32_t(decodedWordOperands_.size()) : -1;
      if (decoded) {
        decodedWordOperands_.push_back(
            MCOperand::createImm(int64_t((uint64_t(inst.getOpcode()) << 32) | inst.getNumOperands())));
        decodedWordOperands_.append(inst.begin(), inst.end());
      }
    }
    return decoded;
  }
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
    return codec_.importThunkSlot(code, rva);
  }

  // GNU ld's other fix for erratum 843419 (see isErratumAdr): the load or store after such an ADRP
  // moves to a veneer, `ldr/str ...; b back`, and `b veneer` takes its place.
  std::optional<uint32_t> outOfLineInstruction(uint64_t pc, uint32_t word, const Image &image) const override {
    constexpr uint32_t kBranchMask = 0xfc000000, kBranch = 0x14000000;
    if ((word & kBranchMask) != kBranch) return std::nullopt;
    constexpr InstructionField kBranchField{FixupKind::A64Branch26};
    uint8_t branch[4];
    support::endian::write32le(branch, word);
    uint64_t veneer = codec_.readField(kBranchField, branch, pc);
    ArrayRef<uint8_t> bytes = image.bytesAt(veneer, 8);
    if (bytes.size() != 8) return std::nullopt;
    uint32_t moved = support::endian::read32le(&bytes[0]), back = support::endian::read32le(&bytes[4]);
    if ((back & kBranchMask) != kBranch || codec_.readField(kBranchField, bytes.drop_front(4), veneer + 4) != pc + 4)
      return std::nullopt;
    MCInst inst;
    uint64_t size = 0;
    if (!mc_.decode(inst, size, bytes.take_front(4), veneer) || !tables_.accessScale[inst.getOpcode()])
      return std::nullopt;
    return moved;
  }

  // LDR/STR Rt, [Xn, #imm] (scaled), LDUR/STUR Rt, [Xn, #simm] and LDP/STP Rt, Rt2, [Xn, #imm]
  // (signed offset) from a register other than sp and the frame pointer x29.
  std::optional<unsigned> displacementScale(const MCInst &inst, unsigned operand) const override {
    unsigned scale = 0, base = 1;
    if (unsigned access = tables_.accessScale[inst.getOpcode()]) scale = access;
    else if (tables_.unscaled[inst.getOpcode()]) scale = 1;
    else if (unsigned pair = tables_.pairScale[inst.getOpcode()]) scale = pair, base = 2;
    if (!scale || operand != base + 1 || inst.getNumOperands() <= operand || !inst.getOperand(base).isReg() ||
        tables_.notFieldBases[inst.getOperand(base).getReg()])
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
    blockEntries_.clear();
    blockEntryAt_.clear();
    predecoded_.clear();
    predecodedAt_.clear();
    // ADR and ADRP are the words with bits 28-24 = 10000: without one there is nothing to
    // follow, and the function needs no decoding here.
    bool hasAddress = false;
    for (uint64_t offset = 0; offset + 4 <= code.size() && !hasAddress; offset += 4)
      hasAddress = (support::endian::read32le(code.data() + offset) & 0x1f000000) == 0x10000000;
    if (!hasAddress) return;
    predecodedAt_.assign(code.size() / 4, -1);
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
      sawAddress |= d.inst.getOpcode() == tables_.adrp || d.inst.getOpcode() == tables_.adr;
      predecodedAt_[offset / 4] = int32_t(insts.size());
      insts.push_back(std::move(d));
    }
    if (!sawAddress || insts.empty()) return;  // nothing to follow

    // Blocks: the first instruction, every branch target inside the function, and whatever
    // follows a branch or a return start one. Both indexes are per 4-byte word.
    size_t words = code.size() / 4;
    std::vector<bool> leaders(words, false);
    std::vector<int32_t> blockAt(words, -1);
    auto targetOf = [&](const Decoded &d, uint64_t &target) {
      const MCInstrDesc &desc = mc_.instructions->get(d.inst.getOpcode());
      return desc.isBranch() && !desc.isIndirectBranch() &&
             mc_.analysis->evaluateBranch(d.inst, rva + d.offset, 4, target) && target >= rva &&
             target < rva + code.size();
    };
    leaders[insts.front().offset / 4] = true;
    for (size_t i = 0; i < insts.size(); ++i) {
      const MCInstrDesc &desc = mc_.instructions->get(insts[i].inst.getOpcode());
      uint64_t target = 0;
      if (targetOf(insts[i], target)) leaders[(target - rva) / 4] = true;
      if ((desc.isBranch() || desc.isReturn()) && i + 1 < insts.size()) leaders[insts[i + 1].offset / 4] = true;
    }
    struct Block {
      size_t first = 0, end = 0;  // instructions [first, end)
      SmallVector<size_t, 2> successors;
      bool entered = false;
      bool pending = false;  // `in` changed since the block was last followed
      Known in;
    };
    std::vector<Block> blocks;
    blocks.reserve(size_t(std::count(leaders.begin(), leaders.end(), true)));
    for (size_t i = 0; i < insts.size(); ++i) {
      if (leaders[insts[i].offset / 4]) {
        if (!blocks.empty()) blocks.back().end = i;
        blockAt[insts[i].offset / 4] = int32_t(blocks.size());
        blocks.push_back({i, insts.size(), {}, false, false, {}});
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
        if (int32_t next = blockAt[(target - rva) / 4]; next >= 0) blocks[b].successors.push_back(size_t(next));
      bool fallsThrough = !desc.isReturn() && (!desc.isBranch() || desc.isConditionalBranch() || desc.isCall());
      if (fallsThrough && b + 1 < blocks.size()) blocks[b].successors.push_back(b + 1);
      if (desc.isIndirectBranch() && !desc.isReturn() && !desc.isCall()) indirectSources.push_back(b);
      for (size_t s : blocks[b].successors) directlyEntered[s] = true;
    }
    for (size_t b = 1; b < blocks.size(); ++b)
      if (!directlyEntered[b])
        for (size_t source : indirectSources) blocks[source].successors.push_back(b);

    // Passes in block order until nothing changes. A block whose `in` did not change since it was
    // last followed would only meet the same state into its successors again, which changes
    // nothing (meet is idempotent): it is skipped.
    blocks[0].entered = blocks[0].pending = true;
    for (bool changed = true; changed;) {
      changed = false;
      for (Block &block : blocks) {
        if (!block.pending) continue;
        block.pending = false;
        Known state = block.in;
        for (size_t i = block.first; i < block.end; ++i) track(insts[i].inst, rva + insts[i].offset, insts[i], state);
        for (size_t s : block.successors) {
          Block &next = blocks[s];
          bool grew = !next.entered;
          if (grew) {
            next.entered = true;
            next.in = state;
          } else {
            grew = meet(next.in, state);
          }
          next.pending |= grew;
          changed |= grew;
        }
      }
    }
    blockEntryAt_.assign(words, -1);
    for (size_t b = 0; b < blocks.size(); ++b) {
      blockEntryAt_[insts[blocks[b].first].offset / 4] = int32_t(blockEntries_.size());
      blockEntries_.push_back(std::move(blocks[b].in));
    }
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
                                  .encoding = page.isAdr ? FixupKind::A64Adr21 : FixupKind::A64AdrPage21});
    }
  }

  void analyze(const MCInst &inst, uint64_t pc, uint64_t size, uint32_t index, DecodeState &state) override {
    if (size_t word = state.offset / 4; word < blockEntryAt_.size() && blockEntryAt_[word] >= 0)
      known_ = blockEntries_[size_t(blockEntryAt_[word])];
    // An erratum ADR is the ADRP the linker rewrote: it hashes as one, so both compare equal.
    state.hash = mixHash(state.hash, isErratumAdr(inst, pc) ? tables_.adrp : inst.getOpcode());
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
      if (!consumedPages_.count(index)) pendingPages_[index] = {state.offset, effect.target, inst.getOpcode() == tables_.adr};
      return;
    case Effect::PcRelative: {
      const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
      mixOperands(inst, state, effect.operand);
      ReferenceKind kind = desc.isCall() ? ReferenceKind::Call
                           : desc.isBranch() ? ReferenceKind::Branch
                                             : ReferenceKind::Memory;
      auto encoding = tables_.pcRelativeEncoding.find(inst.getOpcode());
      state.add(index, kind, effect.target, encoding != tables_.pcRelativeEncoding.end() ? encoding->second : FixupKind::None);
      return;
    }
    case Effect::Consumer:
      mixOperands(inst, state, effect.operand);
      if (effect.producer.isPage && effect.producer.reloadedFrom) reloadedUses_[effect.producer.reloadedFrom].insert(effect.target);
      if (!effect.producer.isPage) {
        // An offset from an address an earlier ADD formed: follows from that reference.
        state.add(index, ReferenceKind::Memory, effect.target, FixupKind::None);
        state.references.back().offsetFrom = effect.producer.value;
        state.references.back().indexed = effect.producer.indexed;
        return;
      }
      // Every ADRP that can reach here is re-aimed at this consumer's target too (one reference
      // per consumer).
      for (auto [producer, offset] : effect.producer.producers) {
        pendingPages_.erase(producer);
        consumedPages_.insert(producer);
        state.references.push_back({.instruction = producer, .kind = ReferenceKind::Memory, .size = 4,
                                    .target = effect.target, .offset = offset,
                                    .encoding = FixupKind::A64AdrPage21});
      }
      state.add(index, ReferenceKind::Memory, effect.target,
                effect.scale ? FixupKind::A64LdStLo12 : FixupKind::A64AddLo12, 0,
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
    if (inst.getOpcode() != tables_.adr || (pc & 0xfff) < 0xff8 || !inst.getOperand(1).isImm()) return false;
    return ((pc + uint64_t(inst.getOperand(1).getImm())) & 0xfff) == 0;
  }

  struct KnownAddress {
    uint64_t value = 0;
    bool isPage = false;
    // For a page: the ADRPs (instruction index, byte offset) it may come from, sorted.
    SmallVector<std::pair<uint32_t, uint32_t>, 2> producers = {};
    bool conflict = false;  // ways into a block disagree: not known, and stays so
    unsigned reloadedFrom = 0;  // a page: the stack slot it was last reloaded from, if any
    bool indexed = false;  // an address plus an index held in a register: value is index 0's
  };
  // Register (or stack slot) -> the address it holds, sorted by key. It holds a handful of
  // entries and the data flow copies it at every block: a small vector, not a tree of nodes.
  class Known {
  public:
    using Entry = std::pair<unsigned, KnownAddress>;
    Entry *begin() { return entries_.begin(); }
    Entry *end() { return entries_.end(); }
    const Entry *begin() const { return entries_.begin(); }
    const Entry *end() const { return entries_.end(); }
    Entry *find(unsigned key) {
      Entry *at = lowerBound(key);
      return at != end() && at->first == key ? at : end();
    }
    const Entry *find(unsigned key) const { return const_cast<Known *>(this)->find(key); }
    size_t count(unsigned key) const { return find(key) != end(); }
    KnownAddress &operator[](unsigned key) {
      Entry *at = lowerBound(key);
      if (at == end() || at->first != key) at = entries_.insert(at, {key, KnownAddress{}});
      return at->second;
    }
    void erase(unsigned key) {
      if (Entry *at = find(key); at != end()) entries_.erase(at);
    }
    template <typename Predicate> void eraseIf(Predicate predicate) {
      entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const Entry &e) { return predicate(e.first); }),
                     entries_.end());
    }
    void clear() { entries_.clear(); }

  private:
    Entry *lowerBound(unsigned key) {
      return std::lower_bound(entries_.begin(), entries_.end(), key,
                              [](const Entry &e, unsigned k) { return e.first < k; });
    }
    SmallVector<Entry, 8> entries_;
  };
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
    if (tables_.hasPcRelative[inst.getOpcode()])
      for (unsigned i = 0; i < inst.getNumOperands() && i < desc.getNumOperands(); ++i)
        if (desc.operands()[i].OperandType == MCOI::OPERAND_PCREL && inst.getOperand(i).isImm()) pcRelative = int(i);
    if (pcRelative >= 0) {
      int64_t imm = inst.getOperand(pcRelative).getImm();
      if (inst.getOpcode() == tables_.adrp || isErratumAdr(inst, pc)) {
        uint64_t page = inst.getOpcode() == tables_.adrp ? (pc & ~uint64_t(0xfff)) + uint64_t(imm) * 4096 : pc + uint64_t(imm);
        known[inst.getOperand(0).getReg()] = {page, true, {{at.index, at.offset}}};
        return {Effect::Page, pcRelative, page, {}, 0};
      }
      uint64_t target = inst.getOpcode() == tables_.adr ? pc + uint64_t(imm) : pc + uint64_t(imm) * 4;
      if (inst.getOpcode() == tables_.adr) known[inst.getOperand(0).getReg()] = {target, false, {}};
      else killDefinitions(inst, desc, known);
      if (desc.isCall()) forgetCallerSaved(known);
      return {Effect::PcRelative, pcRelative, target, {}, 0};
    }
    // A consumer of a known address: ADD Xd, Xn, #imm or LDR/STR Rt, [Xn, #imm].
    unsigned scale = tables_.accessScale[inst.getOpcode()];
    bool isAdd = inst.getOpcode() == tables_.addImmediate;
    if ((isAdd || scale) && inst.getNumOperands() >= 3 && inst.getOperand(1).isReg() &&
        inst.getOperand(2).isImm()) {
      auto base = known.find(inst.getOperand(1).getReg());
      if (base != known.end() && !base->second.conflict) {
        uint64_t imm = uint64_t(inst.getOperand(2).getImm());
        uint64_t target = isAdd ? base->second.value + (imm << (inst.getNumOperands() > 3 ? inst.getOperand(3).getImm() : 0))
                                : base->second.value + imm * scale;
        // An offset after an index stays in the shape: only the address it is added to moves.
        bool indexed = base->second.indexed;
        Effect effect{Effect::Consumer, indexed ? -1 : 2, target, base->second, isAdd ? 0 : scale};
        killDefinitions(inst, desc, known);
        if (isAdd) known[inst.getOperand(0).getReg()] = {target, false, {}, false, 0, indexed};
        return effect;
      }
    }
    // ADD Xd, Xn, index: Xd holds Xn's address plus an index. gcc reaches the objects of a
    // section anchor's block so (&anchor + index, then a load at the object's offset).
    if (tables_.addRegister[inst.getOpcode()] && inst.getNumOperands() >= 3 && inst.getOperand(1).isReg() &&
        inst.getOperand(2).isReg()) {
      std::optional<KnownAddress> indexed;
      if (auto base = known.find(inst.getOperand(1).getReg());
          base != known.end() && !base->second.conflict && !base->second.isPage)
        indexed = KnownAddress{base->second.value, false, {}, false, 0, true};
      killDefinitions(inst, desc, known);
      if (indexed) known[inst.getOperand(0).getReg()] = *indexed;
      return {};
    }
    // A page spilled to the stack (str Xt, [sp|x29, #imm]) and reloaded (ldr Xt, [sp|x29, #imm]).
    if ((inst.getOpcode() == tables_.storeX || inst.getOpcode() == tables_.loadX) && inst.getNumOperands() == 3 &&
        inst.getOperand(1).isReg() && tables_.notFieldBases[inst.getOperand(1).getReg()] && inst.getOperand(2).isImm()) {
      unsigned slot = kStackSlots + (inst.getOperand(1).getReg() == tables_.framePointer ? 1u << 16 : 0) +
                      unsigned(inst.getOperand(2).getImm() & 0xffff);
      unsigned reg = inst.getOperand(0).getReg();
      if (inst.getOpcode() == tables_.storeX) {
        auto value = known.find(reg);
        if (value == known.end() || !value->second.isPage || value->second.conflict) {
          known.erase(slot);
          return {};
        }
        KnownAddress page = value->second;  // known[slot] may move the entries
        known[slot] = page;
        Effect spill{Effect::Spill, -1, page.value, page, 0};
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
    if (inst.getOpcode() == tables_.orrShifted && inst.getNumOperands() == 4 && inst.getOperand(1).getReg() == tables_.zeroRegister &&
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
      if (theirs->second.conflict || theirs->second.value != mine.value || theirs->second.isPage != mine.isPage ||
          theirs->second.indexed != mine.indexed) {
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
    if (known.begin() == known.end()) return;
    for (unsigned i = 0; i < desc.getNumDefs() && i < inst.getNumOperands(); ++i) {
      if (!inst.getOperand(i).isReg()) continue;
      unsigned reg = inst.getOperand(i).getReg();
      known.eraseIf([&](unsigned key) { return key < kStackSlots && mc_.registers->regsOverlap(key, reg); });
    }
  }

  void forgetCallerSaved(Known &known) const {
    known.eraseIf([&](unsigned key) { return key < tables_.callerSaved.size() && tables_.callerSaved[key]; });
  }

  static const Arm64Tables &sharedTables(const McToolkit &mc) {
    static const Arm64Tables tables(mc);
    return tables;
  }

  const Arm64Tables &tables_;
  const MachineTarget &codec_ = machineTarget(Machine::Arm64);
  // disassemble()'s words already decoded: index into decodedWordOperands_, or -1 when undecodable.
  static constexpr size_t kDecodedWordsKept = size_t(1) << 17;  // about 10 MiB at most
  // DenseMap's own hash of a uint32_t (x * 37) leaves instruction words in long probe chains.
  struct WordKey : DenseMapInfo<uint32_t> {
    static unsigned getHashValue(uint32_t word) { return unsigned((uint64_t(word) * 0x9e3779b97f4a7c15ull) >> 32); }
  };
  mutable DenseMap<uint32_t, int32_t, WordKey> decodedWords_;
  // Per decoded word, an immediate holding opcode << 32 | operand count, then the operands: a hit
  // reads one place after the map (a separate header array cost a third cache miss per word).
  mutable SmallVector<MCOperand, 0> decodedWordOperands_;
  Known known_;
  std::vector<Known> blockEntries_;     // per block: what is known on entry
  std::vector<int32_t> blockEntryAt_;   // per 4-byte word: the block starting there, or -1
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
};

}  // namespace

Expected<std::unique_ptr<InstructionDecoder>> createArm64Decoder() {
  // "+all" so that every extension decodes, as llvm-objdump does.
  Expected<McToolkit> mc = McToolkit::create("aarch64-unknown-unknown", "+all");
  if (!mc) return mc.takeError();
  return std::make_unique<Arm64Decoder>(std::move(*mc));
}

}  // namespace hotforge::differ
