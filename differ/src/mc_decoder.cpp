#include "mc_decoder.h"

#include "hotforge/core/error.h"

#include <llvm/MC/MCExpr.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <map>

namespace hotforge::differ {

using namespace llvm;

void McDecoder::mixOperands(const MCInst &inst, DecodeState &state, int maskedA, int maskedB) const {
  for (unsigned i = 0; i < inst.getNumOperands(); ++i) {
    if (int(i) == maskedA || int(i) == maskedB) {
      state.hash = mixHash(state.hash, 0xadd7e55);
      continue;
    }
    const MCOperand &op = inst.getOperand(i);
    if (op.isReg())
      state.hash = mixHash(state.hash, 0x7e600000ull + op.getReg());
    else if (op.isImm())
      state.hash = mixHash(state.hash, uint64_t(op.getImm()));
    else if (op.isDFPImm())
      state.hash = mixHash(state.hash, op.getDFPImm());
    else if (op.isSFPImm())
      state.hash = mixHash(state.hash, op.getSFPImm());
  }
}

DecodedFunction McDecoder::decode(ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                                  bool perInstruction) {
  DecodedFunction out;
  Outputs outputs{out.references, {}};
  if (perInstruction) {
    outputs.instructionOffsets = &out.instructionOffsets;
    outputs.instructionShapes = &out.instructionShapes;
    outputs.instructionFrames = &out.instructionFrames;
    outputs.constants = &out.constants;
  }
  static_cast<CodeSummary &>(out) = decodeLoop(code, rva, relocations, outputs);
  return out;
}

CodeSummary McDecoder::decodeInto(ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                                  std::vector<CodeReference> &references, MutableArrayRef<uint64_t> instructionStarts) {
  return decodeLoop(code, rva, relocations, {references, instructionStarts});
}

CodeSummary McDecoder::decodeLoop(ArrayRef<uint8_t> code, uint64_t rva, const RelocationIndex &relocations,
                                  const Outputs &outputs) {
  CodeSummary out;
  size_t firstReference = outputs.references.size();
  const std::vector<uint64_t> &relocated = relocations.rvas;
  DecodeState state{outputs.references, 0x484f54464f524745ull, relocations,
                    relocated.data() + (std::lower_bound(relocated.begin(), relocated.end(), rva) - relocated.begin())};
  beginFunction(code, rva, relocations);
  uint64_t offset = 0;
  MCInst decoded;
  while (offset < code.size()) {
    uint64_t size = 0;
    const MCInst *known = predecoded(offset, size);
    if (!known) {
      if (!decodeAt(decoded, size, code.slice(offset), rva + offset, relocations)) size = 0;
    }
    const MCInst &inst = known ? *known : decoded;
    if (size == 0) {
      // Undecodable bytes (data in code, or truncation) still count, by value.
      out.complete = false;
      size = std::min<uint64_t>(undecodableStep(), code.size() - offset);
      for (uint64_t i = 0; i < size; ++i) state.hash = mixHash(state.hash, code[offset + i]);
      offset += size;
      continue;
    }
    if (!isLayoutNoise(inst)) {
      uint32_t index = out.instructions++;
      if (!outputs.instructionStarts.empty()) outputs.instructionStarts[offset / 64] |= 1ull << (offset % 64);
      if (outputs.instructionOffsets) outputs.instructionOffsets->push_back(uint32_t(offset));
      const MCInstrDesc &desc = mc_.instructions->get(inst.getOpcode());
      out.calls += desc.isCall();
      out.branches += desc.isBranch();
      // Each instruction's shape is hashed on its own, then chained into the function's.
      uint64_t chain = state.hash;
      state.hash = 0;
      state.offset = uint32_t(offset);
      state.size = uint8_t(size);
      state.bytes = code.data() + offset;
      analyze(inst, rva + offset, size, index, state);
      if (outputs.instructionShapes) outputs.instructionShapes->push_back(state.hash);
      if (outputs.instructionFrames) recordFrame(inst, index, outputs);
      state.hash = mixHash(chain, state.hash);
    }
    offset += size;
  }
  endFunction(state);
  // Only references found after their instruction (Arm64 ADRPs at their consumers) are out of
  // order; sorting allocates, so it is skipped for the usual ordered case.
  auto byInstruction = [](const CodeReference &a, const CodeReference &b) { return a.instruction < b.instruction; };
  auto ownReferences = outputs.references.begin() + ptrdiff_t(firstReference);
  if (!std::is_sorted(ownReferences, outputs.references.end(), byInstruction))
    std::stable_sort(ownReferences, outputs.references.end(), byInstruction);
  out.shape = mixHash(state.hash, out.instructions);
  return out;
}

bool McDecoder::decodeAt(MCInst &inst, uint64_t &size, ArrayRef<uint8_t> bytes, uint64_t pc,
                         const RelocationIndex &relocations) const {
  if (!disassemble(inst, size, bytes, pc) || size == 0) return false;
  if (!hasOutOfLineCode_ || !relocations.image || size != 4) return true;
  std::optional<uint32_t> moved = outOfLineInstruction(pc, support::endian::read32le(bytes.data()), *relocations.image);
  if (!moved) return true;
  uint8_t word[4];
  support::endian::write32le(word, *moved);
  MCInst replaced;
  if (disassemble(replaced, size, word, pc) && size == 4) inst = replaced;
  size = 4;
  return true;
}

bool McDecoder::disassemble(MCInst &inst, uint64_t &size, ArrayRef<uint8_t> bytes, uint64_t pc) const {
  return mc_.decode(inst, size, bytes, pc);
}

void McDecoder::recordFrame(const MCInst &inst, uint32_t index, const Outputs &outputs) const {
  uint64_t frame = mixHash(0x6672616d65ull, inst.getOpcode());
  for (unsigned i = 0; i < inst.getNumOperands(); ++i) {
    const MCOperand &op = inst.getOperand(i);
    if (op.isReg()) {
      frame = mixHash(frame, 0x7e600000ull + op.getReg());
    } else if (op.isImm()) {
      frame = mixHash(frame, 0x1337);
      std::optional<unsigned> scale = displacementScale(inst, i);
      outputs.constants->push_back({index, op.getImm() * int64_t(scale.value_or(1)), scale.has_value()});
    }
  }
  outputs.instructionFrames->push_back(frame);
}

std::optional<InstructionText> McDecoder::instructionAt(ArrayRef<uint8_t> code, uint64_t rva, uint32_t index) {
  std::vector<InstructionText> found = printLoop(code, rva, nullptr, index);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::vector<InstructionText> McDecoder::disassembleSymbolic(ArrayRef<uint8_t> code, uint64_t rva,
                                                            const RelocationIndex &relocations,
                                                            const AddressNamer &namer) {
  // The references by instruction offset: the first one names the instruction's operand (an
  // ADRP that several consumers share is named after the first).
  std::map<uint32_t, CodeReference> byOffset;
  for (const CodeReference &r : decode(code, rva, relocations, false).references) byOffset.emplace(r.offset, r);
  return printLoop(code, rva, [&](MCInst &inst, uint32_t offset) {
    auto reference = byOffset.find(offset);
    if (reference == byOffset.end()) return;
    int operand = addressOperand(inst, reference->second, relocations);
    std::optional<AddressName> name = namer(reference->second.target);
    if (operand < 0 || unsigned(operand) >= inst.getNumOperands() || !name) return;
    const MCExpr *expr = MCSymbolRefExpr::create(mc_.context->getOrCreateSymbol(name->symbol), *mc_.context);
    if (name->offset)
      expr = MCBinaryExpr::createAdd(expr, MCConstantExpr::create(int64_t(name->offset), *mc_.context, true),
                                     *mc_.context);
    inst.getOperand(unsigned(operand)) = MCOperand::createExpr(expr);
  });
}

std::vector<InstructionText> McDecoder::printLoop(ArrayRef<uint8_t> code, uint64_t rva,
                                                  const std::function<void(MCInst &, uint32_t)> &rename,
                                                  std::optional<uint32_t> only) {
  std::vector<InstructionText> out;
  uint32_t counted = 0;
  uint64_t offset = 0;
  MCInst inst;
  while (offset < code.size()) {
    uint64_t size = 0;
    bool ok = mc_.decode(inst, size, code.slice(offset), rva + offset);
    if (!ok) size = std::min<uint64_t>(undecodableStep(), code.size() - offset);
    if ((ok && isLayoutNoise(inst)) || (only && counted++ < *only)) {
      offset += size;
      continue;
    }
    InstructionText line;
    line.offset = uint32_t(offset);
    line.bytes = hexEncode(code.slice(offset, size));
    if (ok) {
      if (rename) rename(inst, uint32_t(offset));
      raw_string_ostream text(line.text);
      mc_.printer->printInst(&inst, printAddress(rva + offset, size), "", *mc_.subtarget, text);
      text.flush();
      line.text.erase(0, line.text.find_first_not_of(" \t"));
      std::replace(line.text.begin(), line.text.end(), '\t', ' ');
    } else {
      line.text = "(undecodable)";
    }
    out.push_back(std::move(line));
    offset += size;
    if (only) break;
  }
  return out;
}

}  // namespace hotforge::differ
