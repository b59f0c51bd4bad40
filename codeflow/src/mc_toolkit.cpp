#include "hotforge/codeflow/mc_toolkit.h"

#include <llvm/MC/MCTargetOptions.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>

#include <mutex>

namespace hotforge {

using namespace llvm;

Expected<McToolkit> McToolkit::create(const std::string &tripleName, const std::string &features) {
  static std::once_flag initialized;
  std::call_once(initialized, [] {
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86Disassembler();
    LLVMInitializeAArch64TargetInfo();
    LLVMInitializeAArch64TargetMC();
    LLVMInitializeAArch64Disassembler();
  });
  McToolkit mc;
  mc.triple = Triple(tripleName);
  std::string error;
  const Target *target = TargetRegistry::lookupTarget(tripleName, error);
  if (!target) return createStringError(inconvertibleErrorCode(), "no LLVM target for " + tripleName + ": " + error);
  mc.target = target;
  mc.registers.reset(target->createMCRegInfo(tripleName));
  MCTargetOptions options;
  if (mc.registers) mc.asmInfo.reset(target->createMCAsmInfo(*mc.registers, tripleName, options));
  mc.subtarget.reset(target->createMCSubtargetInfo(tripleName, "", features));
  mc.instructions.reset(target->createMCInstrInfo());
  if (!mc.registers || !mc.asmInfo || !mc.subtarget || !mc.instructions)
    return createStringError(inconvertibleErrorCode(), "LLVM MC could not be set up for " + tripleName);
  mc.analysis.reset(target->createMCInstrAnalysis(mc.instructions.get()));
  mc.context = std::make_unique<MCContext>(mc.triple, mc.asmInfo.get(), mc.registers.get(), mc.subtarget.get());
  mc.disassembler.reset(target->createMCDisassembler(*mc.subtarget, *mc.context));
  unsigned dialect = mc.triple.isX86() ? 1 /* Intel */ : mc.asmInfo->getAssemblerDialect();
  mc.printer.reset(target->createMCInstPrinter(mc.triple, dialect, *mc.asmInfo, *mc.instructions, *mc.registers));
  if (!mc.analysis || !mc.disassembler || !mc.printer)
    return createStringError(inconvertibleErrorCode(), "LLVM MC disassembler could not be set up for " + tripleName);
  mc.printer->setPrintImmHex(true);
  mc.printer->setPrintBranchImmAsAddress(true);
  return mc;
}

StringMap<unsigned> McToolkit::opcodesNamed(function_ref<bool(StringRef)> wanted) const {
  StringMap<unsigned> found;
  for (unsigned op = 0; op < instructions->getNumOpcodes(); ++op)
    if (StringRef name = instructions->getName(op); wanted(name)) found[name] = op;
  return found;
}

bool McToolkit::decode(MCInst &inst, uint64_t &size, ArrayRef<uint8_t> bytes, uint64_t pc) const {
  inst = MCInst();
  size = 0;
  return disassembler->getInstruction(inst, size, bytes, pc, nulls()) == MCDisassembler::Success && size > 0;
}

}  // namespace hotforge
