// The LLVM MC objects for one target triple: disassembler, instruction info and analysis,
// printer. Shared by function discovery (codeflow) and the differ's decoders.
#pragma once

#include <llvm/ADT/STLFunctionalExtras.h>
#include <llvm/ADT/StringMap.h>
#include <llvm/MC/MCAsmInfo.h>
#include <llvm/MC/MCContext.h>
#include <llvm/MC/MCDisassembler/MCDisassembler.h>
#include <llvm/MC/MCInst.h>
#include <llvm/MC/MCInstPrinter.h>
#include <llvm/MC/MCInstrAnalysis.h>
#include <llvm/MC/MCInstrInfo.h>
#include <llvm/MC/MCRegisterInfo.h>
#include <llvm/MC/MCSubtargetInfo.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Support/Error.h>
#include <llvm/TargetParser/Triple.h>

#include <memory>
#include <string>

namespace hotforge {

struct McToolkit {
  llvm::Triple triple;
  const llvm::Target *target = nullptr;
  std::unique_ptr<llvm::MCRegisterInfo> registers;
  std::unique_ptr<llvm::MCAsmInfo> asmInfo;
  std::unique_ptr<llvm::MCSubtargetInfo> subtarget;
  std::unique_ptr<llvm::MCInstrInfo> instructions;
  std::unique_ptr<llvm::MCInstrAnalysis> analysis;
  std::unique_ptr<llvm::MCContext> context;
  std::unique_ptr<llvm::MCDisassembler> disassembler;
  std::unique_ptr<llvm::MCInstPrinter> printer;

  static llvm::Expected<McToolkit> create(const std::string &triple, const std::string &features);
  llvm::StringRef opcodeName(const llvm::MCInst &inst) const { return instructions->getName(inst.getOpcode()); }
  // One instruction at `pc` into `inst` (reset first: LLVM 19's AArch64 disassembler inserts the
  // implicit SME operands of whatever opcode `inst` still holds even when decoding fails, and
  // writes out of bounds when that was an SME instruction); false when the bytes do not decode.
  bool decode(llvm::MCInst &inst, uint64_t &size, llvm::ArrayRef<uint8_t> bytes, uint64_t pc) const;
  // The opcodes whose names `wanted` accepts, by name, in one pass over the opcode table (copying
  // all ~20,000 names into a map cost more than decoding a small library).
  llvm::StringMap<unsigned> opcodesNamed(llvm::function_ref<bool(llvm::StringRef)> wanted) const;
};

}  // namespace hotforge
