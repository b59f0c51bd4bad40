#include "constant_changes.h"

#include "hotforge/core/ascii.h"


namespace hotforge::differ {

std::optional<std::vector<ConstantChange>> constantChanges(
    const DecodedFunction &base, const DecodedFunction &patched,
    const std::function<bool(const CodeReference &, const CodeReference &)> &sameTarget) {
  if (base.instructionFrames != patched.instructionFrames || base.references.size() != patched.references.size() ||
      base.constants.size() != patched.constants.size())
    return std::nullopt;
  std::vector<bool> referencing(base.instructionFrames.size(), false);
  for (size_t i = 0; i < base.references.size(); ++i) {
    const CodeReference &rb = base.references[i], &rp = patched.references[i];
    if (rb.instruction != rp.instruction || rb.kind != rp.kind || !sameTarget(rb, rp)) return std::nullopt;
    referencing[rb.instruction] = true;
  }
  std::vector<ConstantChange> out;
  size_t c = 0;
  for (uint32_t i = 0; i < base.instructionShapes.size(); ++i) {
    size_t begin = c;
    while (c < base.constants.size() && base.constants[c].instruction == i) ++c;
    if (base.instructionShapes[i] == patched.instructionShapes[i]) continue;
    // Its address operands are compared as references; a difference beside them is no constant's.
    if (referencing[i]) return std::nullopt;
    size_t found = out.size();
    for (size_t k = begin; k < c; ++k)
      if (base.constants[k].value != patched.constants[k].value)
        out.push_back({i, base.constants[k].value, patched.constants[k].value, base.constants[k].displacement});
    if (out.size() == found) return std::nullopt;  // something else differs (a floating-point immediate)
  }
  return out;
}

namespace {

}  // namespace

bool isLineReporter(std::string_view name) {
  for (std::string_view known : {"__assert_fail", "__assert_perror_fail", "__assert_rtn", "__assert", "__assert2",
                                 "_assert", "_wassert", "g_assertion_message", "g_assertion_message_expr",
                                 "g_assertion_message_cmpnum", "g_assertion_message_cmpstr",
                                 "g_assertion_message_cmpint", "g_assertion_message_error", "warn_slowpath_fmt"})
    if (name == known) return true;
  return false;
}

bool looksLikeAllocator(std::string_view name) {
  std::string l = asciiLower(name);
  for (std::string_view prefix : {"g_", "x", "xm", "_"})
    if (l.size() > prefix.size() && l.compare(0, prefix.size(), prefix) == 0 &&
        looksLikeAllocator(std::string_view(l).substr(prefix.size())))
      return true;
  for (std::string_view exact : {"malloc", "calloc", "realloc", "reallocarray", "malloc0", "new", "znwm", "znam",
                                 "znwmrkst9nothrow_t", "znamrkst9nothrow_t", "heapalloc", "heaprealloc", "localalloc",
                                 "globalalloc", "??2@yapeax_k@z", "??_u@yapeax_k@z"})
    if (l == exact) return true;
  return false;
}

bool isSourceFileName(std::string_view text) {
  size_t dot = text.rfind('.');
  if (dot == std::string_view::npos) return false;
  std::string suffix = asciiLower(text.substr(dot + 1));
  for (std::string_view s : {"c", "h", "cc", "cpp", "cxx", "hpp", "hh", "hxx", "inc", "m", "mm"})
    if (suffix == s) return true;
  return false;
}

bool onlyLineNumbers(const std::vector<ConstantChange> &changes,
                     const std::function<std::optional<CallContext>(uint32_t instruction)> &contextOf) {
  if (changes.empty()) return false;
  for (const ConstantChange &c : changes) {
    constexpr int64_t kLastLine = 1000000;
    if (c.displacement || c.base < 1 || c.patched < 1 || c.base > kLastLine || c.patched > kLastLine) return false;
    std::optional<CallContext> call = contextOf(c.instruction);
    if (!call || !(call->passesSourceFile || (call->callee && isLineReporter(*call->callee)))) return false;
  }
  return true;
}

}  // namespace hotforge::differ
