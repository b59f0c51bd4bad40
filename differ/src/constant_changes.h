// Changed pairs that differ only in plain constants, and what those constants tell: a line number
// passed to an error reporter (__LINE__ after an edit above), or a structure whose fields moved.
#pragma once

#include "hotforge/arch.h"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge::differ {

struct ConstantChange {
  uint32_t instruction = 0;
  int64_t base = 0, patched = 0;
  bool displacement = false;
};

// The constants in which two functions differ when they are the same instruction for instruction
// otherwise (opcodes, registers, and references for which `sameTarget` holds); nullopt when they
// differ in more. Both must be decoded per instruction.
std::optional<std::vector<ConstantChange>> constantChanges(
    const DecodedFunction &base, const DecodedFunction &patched,
    const std::function<bool(const CodeReference &, const CodeReference &)> &sameTarget);

// What is known about the call that follows an instruction: the callee's name, and whether the
// instructions that set up its arguments load a string naming a source file (__FILE__).
struct CallContext {
  std::optional<std::string> callee;
  bool passesSourceFile = false;
};

// Whether every change is a line number handed to an error or assert reporter: a value in the
// range of line numbers, set up for the next call, which also receives __FILE__ or goes to a
// known assert reporter. `contextOf` describes the call that follows an instruction (nullopt:
// none follows).
bool onlyLineNumbers(const std::vector<ConstantChange> &changes,
                     const std::function<std::optional<CallContext>(uint32_t instruction)> &contextOf);

// Whether a symbol is a C library, glib or kernel assert reporter that takes a line number
// (__assert_fail, _wassert, g_assertion_message_expr, ...): by exact name only, because a name
// that merely contains "log" or "fail" is no evidence, and a constant wrongly taken for a line
// number is a fix left out of the patch.
bool isLineReporter(std::string_view name);
// Whether a symbol names an allocator whose arguments give a size (malloc, calloc, realloc,
// operator new, HeapAlloc, and the g_/x/xm wrappers of them).
bool looksLikeAllocator(std::string_view name);
// Whether bytes are a C string that ends in a source file's suffix (.c, .h, .cc, .cpp, ...).
bool isSourceFileName(std::string_view text);

}  // namespace hotforge::differ
