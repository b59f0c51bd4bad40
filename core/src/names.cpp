// Names of the format's enumerations, as JSON and messages show them.
#include "hotforge/core/patch_format.h"

namespace hotforge {

std::string_view redirectKindName(RedirectKind kind) {
  switch (kind) {
  case RedirectKind::X64Jump32: return "x64-jmp-rel32";
  case RedirectKind::X64ShortJump: return "x64-short-jmp-via-padding";
  case RedirectKind::X64Absolute: return "x64-jmp-absolute";
  case RedirectKind::A64Branch: return "a64-b";
  case RedirectKind::A64Absolute: return "a64-ldr-br-absolute";
  }
  return "unknown";
}

unsigned redirectSize(RedirectKind kind) {
  switch (kind) {
  case RedirectKind::X64Jump32: return 5;
  case RedirectKind::X64ShortJump: return 2;
  case RedirectKind::X64Absolute: return 14;
  case RedirectKind::A64Branch: return 4;
  case RedirectKind::A64Absolute: return 16;
  }
  return 0;
}

std::string_view fixupKindName(FixupKind kind) {
  switch (kind) {
  case FixupKind::None: return "none";
  case FixupKind::X64Rel8: return "x64-rel8";
  case FixupKind::X64Rel32: return "x64-rel32";
  case FixupKind::X64Abs64: return "x64-abs64";
  case FixupKind::A64Branch26: return "a64-branch26";
  case FixupKind::A64Branch19: return "a64-branch19";
  case FixupKind::A64Branch14: return "a64-branch14";
  case FixupKind::A64Literal19: return "a64-literal19";
  case FixupKind::A64Adr21: return "a64-adr21";
  case FixupKind::A64AdrPage21: return "a64-adrp-page21";
  case FixupKind::A64AddLo12: return "a64-add-lo12";
  case FixupKind::A64LdStLo12: return "a64-ldst-lo12";
  case FixupKind::Data64: return "data64";
  case FixupKind::Data32PcRel: return "data32-pcrel";
  case FixupKind::Data64PcRel: return "data64-pcrel";
  }
  return "unknown";
}

std::string_view fixupSpaceName(FixupSpace space) {
  switch (space) {
  case FixupSpace::Image: return "patch";
  case FixupSpace::Base: return "base";
  case FixupSpace::Import: return "import";
  }
  return "unknown";
}

}  // namespace hotforge
