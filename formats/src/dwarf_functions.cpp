// Function boundaries from DWARF subprograms (ELF, and PE images built by mingw).
#include "format_reader.h"

#include <llvm/DebugInfo/DWARF/DWARFContext.h>
#include <llvm/DebugInfo/DWARF/DWARFDie.h>
#include <llvm/DebugInfo/DWARF/DWARFUnit.h>

namespace hotforge::detail {

using namespace llvm;

void collectDwarfFunctions(const object::ObjectFile &object, uint64_t imageBase, FunctionSource source,
                           FunctionTableBuilder &functions, std::vector<std::string> &warnings) {
  bool hasDebugInfo = false;
  for (const object::SectionRef &s : object.sections()) {
    Expected<StringRef> name = s.getName();
    if (!name) {
      consumeError(name.takeError());
      continue;
    }
    if (*name == ".debug_info" || *name == ".zdebug_info") hasDebugInfo = true;
  }
  if (!hasDebugInfo) return;

  size_t problems = 0;
  auto onError = [&](Error e) {
    // One line per unreadable unit is enough; a thousand identical lines help nobody.
    if (problems++ < 4) warnings.push_back("DWARF: " + errorText(std::move(e)));
    else consumeError(std::move(e));
  };
  std::unique_ptr<DWARFContext> context =
      DWARFContext::create(object, DWARFContext::ProcessDebugRelocations::Process, nullptr, "", onError, onError);
  for (const std::unique_ptr<DWARFUnit> &unit : context->compile_units()) {
    for (const DWARFDebugInfoEntry &entry : unit->dies()) {
      DWARFDie die(unit.get(), &entry);
      if (die.getTag() != dwarf::DW_TAG_subprogram) continue;
      Expected<DWARFAddressRangesVector> ranges = die.getAddressRanges();
      if (!ranges) {
        onError(ranges.takeError());
        continue;
      }
      if (ranges->empty()) continue;
      // The entry is at DW_AT_low_pc or, for split functions, the lowest range; other ranges are
      // parts (e.g. .cold), which the symbol table names separately.
      std::optional<uint64_t> lowPc = dwarf::toAddress(die.find(dwarf::DW_AT_low_pc));
      const DWARFAddressRange *main = &ranges->front();
      for (const DWARFAddressRange &r : *ranges)
        if (lowPc ? r.LowPC == *lowPc : r.LowPC < main->LowPC) main = &r;
      if (main->LowPC < imageBase || main->HighPC <= main->LowPC) continue;
      const char *name = die.getLinkageName();
      if (!name) name = die.getName(DINameKind::ShortName);
      functions.add(main->LowPC - imageBase, main->HighPC - main->LowPC,
                    name ? std::optional<std::string>(name) : std::nullopt, source);
    }
  }
}

}  // namespace hotforge::detail
