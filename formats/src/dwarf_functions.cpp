// Function boundaries from DWARF subprograms (ELF, and PE images built by mingw).
#include "format_reader.h"

#include <llvm/DebugInfo/DWARF/DWARFContext.h>
#include <llvm/DebugInfo/DWARF/DWARFDebugAbbrev.h>
#include <llvm/DebugInfo/DWARF/DWARFDie.h>
#include <llvm/DebugInfo/DWARF/DWARFUnit.h>
#include <llvm/ADT/SmallSet.h>
#include <llvm/Support/LEB128.h>

namespace hotforge::detail {

using namespace llvm;

namespace {

// LLVM 19 walks DIEs without bounds checks: DWARFFormValue::skipValue adds block lengths and fixed
// sizes to the offset unchecked, and the next LEB128 read then runs off the section (a SEGV found by
// fuzzing). This reader walks a unit's DIEs first, exactly as DWARFUnit::extractDIEsToVector will,
// with the abbreviations LLVM parsed, but every read bounded by the unit's end.
class DieWalk {
public:
  explicit DieWalk(DWARFUnit &unit)
      : unit_(unit), data_(unit.getDebugInfoExtractor()), bytes_(data_.getData().bytes_begin()),
        end_(std::min<uint64_t>(unit.getNextUnitOffset(), data_.getData().size())),
        offset_(unit.getOffset() + unit.getHeaderSize()) {}

  Error check() {
    const DWARFAbbreviationDeclarationSet *abbreviations = unit_.getAbbreviations();
    if (!abbreviations) return makeError(unitName() + "its abbreviation table is unreadable");
    size_t depth = 0;  // open DIEs with children, the unit DIE included
    for (bool unitDie = true;; unitDie = false) {
      // Where LLVM stops (unit end, unknown abbreviation) it warns by itself and reads no further.
      if (offset_ >= end_) return Error::success();
      uint64_t dieOffset = offset_;
      std::optional<uint64_t> code = uleb();
      if (!code) return fail(dieOffset, "abbreviation code is unreadable");
      if (*code == 0) {
        if (unitDie || --depth == 0) return Error::success();
        continue;
      }
      // Truncated to 32 bits, as DWARFDebugInfoEntry::extractFast looks it up.
      const DWARFAbbreviationDeclaration *decl = abbreviations->getAbbreviationDeclaration(uint32_t(*code));
      if (!decl) return Error::success();
      // Attribute lookups start at the DIE offset plus the length the code has in the abbreviation
      // table, not the length read here: they must agree.
      if (offset_ - dieOffset != decl->getCodeByteSize())
        return fail(dieOffset, "abbreviation code is not encoded as in its table");
      for (const DWARFAbbreviationDeclaration::AttributeSpec &spec : decl->attributes())
        if (!skipValue(spec.Form))
          return fail(dieOffset, "value of form " + hexOffset(spec.Form) + " is unsupported or runs past the unit");
      if (decl->hasChildren()) ++depth;
      else if (unitDie) return Error::success();
    }
  }

private:
  std::string unitName() const { return "unit at offset " + hexOffset(unit_.getOffset()) + ": "; }
  Error fail(uint64_t dieOffset, const std::string &what) const {
    return makeError(unitName() + "DIE at " + hexOffset(dieOffset) + ": " + what);
  }

  bool skip(uint64_t size) {
    if (end_ - offset_ < size) return false;
    offset_ += size;
    return true;
  }

  // LLVM reads a malformed LEB128 as 0 without moving on; such bytes are refused here.
  std::optional<uint64_t> uleb() {
    unsigned length = 0;
    const char *error = nullptr;
    uint64_t value = decodeULEB128(bytes_ + offset_, &length, bytes_ + end_, &error);
    if (error) return std::nullopt;
    offset_ += length;
    return value;
  }
  bool sleb() {
    unsigned length = 0;
    const char *error = nullptr;
    decodeSLEB128(bytes_ + offset_, &length, bytes_ + end_, &error);
    offset_ += error ? 0 : length;
    return !error;
  }
  std::optional<uint64_t> fixed(unsigned size) {
    if (end_ - offset_ < size) return std::nullopt;
    return data_.getUnsigned(&offset_, size);
  }

  bool skipValue(dwarf::Form form) {
    using namespace dwarf;
    while (true) {
      switch (form) {
      case DW_FORM_block:
      case DW_FORM_exprloc: {
        std::optional<uint64_t> size = uleb();
        return size && skip(*size);
      }
      case DW_FORM_block1:
      case DW_FORM_block2:
      case DW_FORM_block4: {
        std::optional<uint64_t> size = fixed(form == DW_FORM_block1 ? 1 : form == DW_FORM_block2 ? 2 : 4);
        return size && skip(*size);
      }
      case DW_FORM_string: {
        size_t nul = data_.getData().find('\0', offset_);
        return nul < end_ && skip(nul + 1 - offset_);
      }
      case DW_FORM_sdata:
        return sleb();
      case DW_FORM_udata:
      case DW_FORM_ref_udata:
      case DW_FORM_strx:
      case DW_FORM_addrx:
      case DW_FORM_loclistx:
      case DW_FORM_rnglistx:
      case DW_FORM_GNU_addr_index:
      case DW_FORM_GNU_str_index:
        return uleb().has_value();
      case DW_FORM_LLVM_addrx_offset:
        return uleb() && skip(4);
      case DW_FORM_indirect: {
        std::optional<uint64_t> actual = uleb();
        if (!actual) return false;
        form = Form(*actual);
        continue;
      }
      // The fixed-size forms whose value DWARFFormValue::extractValue can read; it has no case for
      // DW_FORM_addrx3 (nor for unknown forms) and would reach llvm_unreachable.
      case DW_FORM_addr:
      case DW_FORM_ref_addr:
      case DW_FORM_flag_present:
      case DW_FORM_implicit_const:
      case DW_FORM_flag:
      case DW_FORM_data1:
      case DW_FORM_data2:
      case DW_FORM_data4:
      case DW_FORM_data8:
      case DW_FORM_data16:
      case DW_FORM_ref1:
      case DW_FORM_ref2:
      case DW_FORM_ref4:
      case DW_FORM_ref8:
      case DW_FORM_ref_sig8:
      case DW_FORM_ref_sup4:
      case DW_FORM_ref_sup8:
      case DW_FORM_strx1:
      case DW_FORM_strx2:
      case DW_FORM_strx3:
      case DW_FORM_strx4:
      case DW_FORM_addrx1:
      case DW_FORM_addrx2:
      case DW_FORM_addrx4:
      case DW_FORM_strp:
      case DW_FORM_strp_sup:
      case DW_FORM_line_strp:
      case DW_FORM_sec_offset:
      case DW_FORM_GNU_ref_alt:
      case DW_FORM_GNU_strp_alt: {
        std::optional<uint8_t> size = getFixedFormByteSize(form, unit_.getFormParams());
        return size && skip(*size);
      }
      default:
        return false;
      }
    }
  }

  DWARFUnit &unit_;
  DWARFDataExtractor data_;
  const uint8_t *bytes_;
  uint64_t end_;
  uint64_t offset_;
};

// DWARFDie::findRecursively, but following only DW_AT_abstract_origin and DW_AT_specification
// into the checked units: DW_AT_signature and DW_FORM_ref_sig8 references can lead through a
// .debug_tu_index to split units that nobody checked.
std::optional<DWARFFormValue> findRecursively(DWARFDie die, ArrayRef<dwarf::Attribute> attributes) {
  SmallVector<DWARFDie, 3> worklist{die};
  SmallSet<DWARFDie, 3> seen;
  seen.insert(die);
  while (!worklist.empty()) {
    DWARFDie next = worklist.pop_back_val();
    if (std::optional<DWARFFormValue> value = next.find(attributes)) return value;
    for (dwarf::Attribute reference : {dwarf::DW_AT_abstract_origin, dwarf::DW_AT_specification}) {
      std::optional<DWARFFormValue> value = next.find(reference);
      if (!value || value->getAsSignatureReference()) continue;
      DWARFDie target = next.getAttributeValueAsReferencedDie(*value);
      if (target && seen.insert(target).second) worklist.push_back(target);
    }
  }
  return std::nullopt;
}

}  // namespace

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
  // Every unit (type units too) is checked before LLVM extracts any DIE: a reference can lead from
  // one unit into another. One damaged unit leaves the whole DWARF unread.
  for (const std::unique_ptr<DWARFUnit> &unit : context->normal_units())
    if (Error e = DieWalk(*unit).check()) {
      warnings.push_back("DWARF: " + errorText(std::move(e)) + "; the DWARF is not read");
      return;
    }
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
      const char *name =
          dwarf::toString(findRecursively(die, {dwarf::DW_AT_MIPS_linkage_name, dwarf::DW_AT_linkage_name}), nullptr);
      if (!name) name = dwarf::toString(findRecursively(die, {dwarf::DW_AT_name}), nullptr);
      functions.add(main->LowPC - imageBase, main->HighPC - main->LowPC,
                    name ? std::optional<std::string>(name) : std::nullopt, source);
    }
  }
}

}  // namespace hotforge::detail
