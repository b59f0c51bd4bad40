// The reference loader: applies hotpatch images to a running Linux process with ptrace, and
// takes them back out. It proves that what the emitter writes works on live code. Like the
// runtime it builds on, it links neither LLVM nor fmt: the target-host tool (hotforge-target)
// is this loader and its commands alone.
#pragma once

#include "hotforge/runtime/outcome.h"
#include "hotforge/runtime/patch_format.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace hotforge {

// Text from pieces, joined as fail() joins a message's (numbers in decimal; hexAddress() for addresses).
template <typename... Pieces> std::string concatenate(const Pieces &...pieces) { return fail(pieces...).message; }

struct ApplyOptions {
  std::string unitName;  // for the state record and messages
  std::chrono::milliseconds patience{2000};  // how long to retry while a thread is in the way
  // Strict consistency: no thread may have a changed function on its stack either (its program
  // counter in one, or a return address into one anywhere in the stack's words), so no old code
  // runs after the switch. The stack scan is conservative: a stale word can make it wait.
  bool strict = false;
};

struct AppliedRedirect {
  std::string name;
  uint64_t address = 0;  // where the jump was written
  std::vector<uint8_t> original, written;
};

struct ApplyReport {
  int pid = 0;
  std::string baselinePath;  // the mapped file the image fits
  uint64_t baseAddress = 0, imageAddress = 0, imageSize = 0;
  uint32_t sequence = 0;
  std::vector<AppliedRedirect> redirects;
  std::chrono::microseconds pause{0};  // how long the process's threads were stopped
  unsigned attempts = 0;               // stop-the-world attempts until no thread was in the way
};

// Finds the image's baseline among the files mapped into `pid` (by SHA-256), stops every thread,
// maps the image near the base, applies its fixups, checks the expected bytes, writes the
// redirections, and resumes. Refuses, leaving the process unchanged, when anything does not fit.
Outcome<ApplyReport> applyImage(int pid, const PatchImage &image, const ApplyOptions &options);

// Writes the original bytes back (the image stays mapped: a thread may still run in it).
Status revertRedirects(int pid, const std::vector<AppliedRedirect> &redirects);

// What is applied to a process, kept in a state file so that revert and status work later.
std::string stateFilePath(int pid);
Outcome<nlohmann::json> readState(int pid);  // an empty object when nothing is applied
Status writeState(int pid, const nlohmann::json &state);
nlohmann::json toJson(const ApplyReport &report, const std::string &unitName);
std::vector<AppliedRedirect> redirectsFromJson(const nlohmann::json &applied);

}  // namespace hotforge
