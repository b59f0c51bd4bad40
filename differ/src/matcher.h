// Pairs the functions of two builds in logged stages (see MatchStage).
#pragma once

#include "hotforge/diff.h"
#include "program.h"

namespace hotforge::differ {

struct Matching {
  std::vector<std::optional<size_t>> baseToPatched;  // per base function
  std::vector<std::optional<size_t>> patchedToBase;  // per patched function
  std::vector<MatchInfo> info;                       // per base function, valid where matched
  std::vector<std::string> log;
  size_t pairs = 0;

  void pair(size_t base, size_t patched, MatchInfo how);
};

Matching matchFunctions(const Program &base, const Program &patched);

// The function a reference lands in, when it lands at a diffable function of the same program.
std::optional<size_t> callTarget(const Program &program, const CodeReference &reference);

}  // namespace hotforge::differ
