// hotforge apply / revert / status: the reference loader on a running Linux process.
#include "commands.h"
#include "output.h"

#include "hotforge/error.h"
#include "hotforge/loader.h"
#include "hotforge/patch_image.h"
#include "hotforge/unit.h"

#include <fmt/core.h>

namespace hotforge::cli {
namespace {

struct ApplyCommandOptions {
  int pid = 0;
  std::string unit, publicKey, consistency = "entry";
  bool json = false;
};

// One line for two failures (llvm::joinErrors would print two).
llvm::Error both(llvm::Error first, llvm::Error second) {
  if (!second) return first;
  if (!first) return second;
  return makeError(llvm::toString(std::move(first)) + "; " + llvm::toString(std::move(second)));
}

// The record of a running process, from the state directory: a record of a process that is gone,
// or of an earlier process with the same pid (another start time), is removed.
llvm::Expected<ProcessRecord> currentRecord(const StateDirectory &state, int pid) {
  llvm::Expected<uint64_t> started = processStartTime(pid);
  if (!started) {
    llvm::Error removed = state.remove(pid);
    llvm::consumeError(std::move(removed));
    return started.takeError();
  }
  llvm::Expected<std::optional<ProcessRecord>> recorded = state.read(pid);
  if (!recorded) return recorded.takeError();
  if (*recorded && (*recorded)->startTime == *started) return std::move(**recorded);
  if (*recorded) {
    fmt::print(stderr, "hotforge: note: removed the record of an earlier process {} (started at tick {}, this one at "
                       "{})\n", pid, (*recorded)->startTime, *started);
    if (llvm::Error e = state.remove(pid)) return e;
  }
  return ProcessRecord{pid, *started, {}};
}

// Records of processes that are gone, or whose pid another process has now, are removed.
void removeStaleRecords(const StateDirectory &state) {
  for (int pid : state.recordedPids()) {
    llvm::Expected<uint64_t> started = processStartTime(pid);
    std::optional<uint64_t> startTime;
    if (started) startTime = *started;
    else llvm::consumeError(started.takeError());
    llvm::Expected<std::optional<ProcessRecord>> recorded = state.read(pid);
    if (!recorded) {  // an unreadable record is left for a person to look at
      llvm::consumeError(recorded.takeError());
      continue;
    }
    if (*recorded && (*recorded)->startTime != startTime) llvm::consumeError(state.remove(pid));
  }
}

// What an interrupted apply left ("applying"), and a record whose jumps someone took out, is
// settled against the process: jumps all in, the record is complete; all out, it goes.
llvm::Error settle(const StateDirectory &state, ProcessRecord &record) {
  bool changed = false;
  for (auto it = record.applied.begin(); it != record.applied.end();) {
    llvm::Expected<std::optional<bool>> written = entriesWritten(record.pid, it->redirects);
    if (!written) return written.takeError();
    if (!*written)
      return formatError("{} is half applied to process {} (an apply was interrupted): run `hotforge revert --pid {}`",
                         it->entry, record.pid, record.pid);
    if (**written) {
      changed |= !it->complete;
      it->complete = true;
      ++it;
    } else {
      it = record.applied.erase(it);
      changed = true;
    }
  }
  return changed ? state.write(record) : llvm::Error::success();
}

// Applies one image to the process: the record says what will change before it changes, and is
// completed after; every failure leaves the process and its record agreeing. `replaced` is the
// applied entry a later sequence takes out first (put back when the new one fails).
llvm::Error applyImageTransaction(const StateDirectory &state, ProcessRecord &record, const PatchImage &image,
                                  AppliedImage fresh, std::optional<size_t> replaced, const ApplyOptions &options) {
  int pid = record.pid;
  std::optional<AppliedImage> previous;
  if (replaced) {
    previous = record.applied[*replaced];
    if (llvm::Error e = rewriteEntries(pid, previous->redirects, /*toOriginal=*/true))
      return makeError(fmt::format("cannot take out sequence {}: {}", previous->sequence, llvm::toString(std::move(e))));
    record.applied.erase(record.applied.begin() + std::ptrdiff_t(*replaced));
    if (llvm::Error e = state.write(record)) {
      llvm::Error back = rewriteEntries(pid, previous->redirects, false);
      return both(std::move(e), std::move(back));
    }
  }
  // The earlier sequence goes back in, under a record that says so first.
  auto putBack = [&](llvm::Error failure) -> llvm::Error {
    if (!previous) return failure;
    previous->complete = false;
    record.applied.push_back(*previous);
    llvm::Error back = state.write(record);
    if (!back) back = rewriteEntries(pid, previous->redirects, false);
    if (!back) {
      record.applied.back().complete = true;
      back = state.write(record);
    }
    if (back)
      return both(std::move(failure), makeError(fmt::format("and sequence {} could not be put back: {}",
                                                                  previous->sequence, llvm::toString(std::move(back)))));
    return failure;
  };
  record.applied.push_back(std::move(fresh));
  if (llvm::Error e = state.write(record)) {
    AppliedImage prepared = record.applied.back();
    record.applied.pop_back();
    discardImage(pid, image, prepared);
    return putBack(std::move(e));
  }
  AppliedImage &applied = record.applied.back();
  if (llvm::Error e = commitImage(pid, image, applied, options)) {
    discardImage(pid, image, applied);
    record.applied.pop_back();
    if (llvm::Error saved = state.write(record)) llvm::consumeError(std::move(saved));  // "applying" settles to nothing
    return putBack(std::move(e));
  }
  applied.complete = true;
  if (llvm::Error e = state.write(record)) {
    // The jumps are in but the record cannot say so: take them out again, so that an "applying"
    // record and an unpatched process agree. (The image stays mapped: a thread may run in it.)
    if (llvm::Error back = rewriteEntries(pid, applied.redirects, true)) return both(std::move(e), std::move(back));
    record.applied.pop_back();
    return putBack(std::move(e));
  }
  return llvm::Error::success();
}

int applyUnit(const ApplyCommandOptions &options) {
  llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(options.unit, kMaxUnitFileSize));
  if (!bytes) return reportError(llvm::toString(bytes.takeError()));
  llvm::Expected<PublicKey> key = lift(readPublicKeyFile(options.publicKey));
  if (!key) return reportError(llvm::toString(key.takeError()));
  llvm::Expected<VerifiedUnit> unit = lift(verifyUnit(*bytes, *key));
  if (!unit) return reportError(options.unit + ": " + llvm::toString(unit.takeError()));
  // From here until the record agrees with the process, SIGINT and the like wait.
  DeferredSignals deferred;
  llvm::Expected<StateDirectory> state = StateDirectory::open(/*create=*/true);
  if (!state) return reportError(llvm::toString(state.takeError()));
  removeStaleRecords(*state);
  llvm::Expected<ProcessRecord> record = currentRecord(*state, options.pid);
  if (!record) return reportError(llvm::toString(record.takeError()));
  if (llvm::Error e = settle(*state, *record)) return reportError(llvm::toString(std::move(e)));
  ApplyOptions applyOptions;
  applyOptions.strict = options.consistency == "strict";
  applyOptions.signals = &deferred;
  size_t count = 0;
  for (const UnitEntry &entry : unit->entries) {
    llvm::Expected<PatchImage> image = lift(readPatchImage(entry.bytes));
    if (!image) return reportError(options.unit + ": " + entry.name + ": " + llvm::toString(image.takeError()));
    // A release unit also carries images for other formats and machines: they fit other hosts.
    if (unit->entries.size() > 1 && (image->format != Format::Elf || image->machine != Machine::X64)) continue;
    std::string baseline = hexEncode(image->baseline.sha256);
    // A later sequence for the same baseline replaces the earlier one; an earlier one is refused.
    auto previous = std::find_if(record->applied.begin(), record->applied.end(),
                                 [&](const AppliedImage &a) { return a.baselineSha256 == baseline; });
    std::optional<size_t> replaced;
    if (previous != record->applied.end()) {
      if (previous->sequence >= image->sequence)
        return reportError(fmt::format("{}: sequence {} is not newer than sequence {} already applied to process {}",
                                       entry.name, image->sequence, previous->sequence, options.pid));
      replaced = size_t(previous - record->applied.begin());
    }
    // Prepared (mapped) while an earlier sequence still runs; its entries are checked once it is out.
    llvm::Expected<AppliedImage> prepared = prepareImage(options.pid, *image, /*checkEntries=*/!replaced);
    if (!prepared) {
      std::string reason = llvm::toString(prepared.takeError());
      // Images of other binaries in a release unit are not an error: they fit other processes.
      if (unit->entries.size() > 1 && reason.find("does not run the baseline") != std::string::npos) continue;
      return reportError(entry.name + ": " + reason);
    }
    prepared->unit = options.unit;
    prepared->entry = entry.name;
    if (llvm::Error e = applyImageTransaction(*state, *record, *image, std::move(*prepared), replaced, applyOptions))
      return reportError(entry.name + ": " + llvm::toString(std::move(e)));
    const AppliedImage &applied = record->applied.back();
    ++count;
    if (options.json)
      fmt::print("{}", jsonText(toJson(applied)));
    else
      fmt::print("applied {} (sequence {}) to process {}: {} functions redirected, image at {:#x}, threads paused "
                 "{} us\n", entry.name, applied.sequence, options.pid, applied.redirects.size(), applied.imageAddress,
                 applied.pause.count());
  }
  if (!count) return reportError(fmt::format("no image of {} fits a binary that process {} runs", options.unit, options.pid));
  return kExitOk;
}

int revertAll(int pid) {
  DeferredSignals deferred;
  llvm::Expected<StateDirectory> state = StateDirectory::open(/*create=*/false);
  if (!state) return reportError(llvm::toString(state.takeError()));
  llvm::Expected<ProcessRecord> record = currentRecord(*state, pid);
  if (!record) return reportError(llvm::toString(record.takeError()));
  if (record->applied.empty()) return reportError(fmt::format("nothing is applied to process {}", pid));
  // Every record is checked before anything is written: the bytes to restore are the baseline's.
  for (const AppliedImage &a : record->applied)
    if (llvm::Error e = checkRecord(pid, a)) return reportError(llvm::toString(std::move(e)));
  size_t count = record->applied.size();
  while (!record->applied.empty()) {
    if (llvm::Error e = rewriteEntries(pid, record->applied.back().redirects, /*toOriginal=*/true))
      return reportError(llvm::toString(std::move(e)));
    record->applied.pop_back();
    if (llvm::Error e = state->write(*record)) return reportError(llvm::toString(std::move(e)));
  }
  fmt::print("reverted {} patch(es) in process {}\n", count, pid);
  return kExitOk;
}

int status(int pid, bool json) {
  llvm::Expected<StateDirectory> state = StateDirectory::open(/*create=*/false);
  if (!state) return reportError(llvm::toString(state.takeError()));
  llvm::Expected<ProcessRecord> record = currentRecord(*state, pid);
  if (!record) return reportError(llvm::toString(record.takeError()));
  if (json) {
    nlohmann::json applied = nlohmann::json::array();
    for (const AppliedImage &a : record->applied) applied.push_back(toJson(a));
    fmt::print("{}", jsonText(nlohmann::json{{"pid", pid}, {"start_time", record->startTime}, {"applied", applied}}));
    return kExitOk;
  }
  if (record->applied.empty()) fmt::print("process {}: no hotpatch applied\n", pid);
  for (const AppliedImage &a : record->applied) {
    fmt::print("process {}: {} sequence {} from {} ({}){}\n", pid, a.entry, a.sequence, a.unit, a.baselinePath,
               a.complete ? "" : " - interrupted while applying: `hotforge revert` takes it out");
    for (const AppliedRedirect &r : a.redirects) fmt::print("  {} at {:#x}\n", r.name.empty() ? "?" : r.name, r.address);
  }
  return kExitOk;
}

}  // namespace

void addLoaderCommands(CLI::App &app, int &exitCode) {
  auto options = std::make_shared<ApplyCommandOptions>();
  CLI::App *apply = app.add_subcommand(
      "apply",
      "Verify a delivery unit and apply its hotpatch images to a running process (Linux x64, with ptrace): the "
      "baseline is found among the process's mapped files by SHA-256, every thread is stopped, each image is "
      "mapped near its base with its fixups applied, each changed function's entry gets a jump, and the threads "
      "resume. A later sequence for the same baseline replaces the applied one; an earlier one is refused.\n"
      "Example: hotforge apply --pid 4242 2026-11.hfu --pubkey release.pub.pem");
  apply->add_option("--pid", options->pid, "the process to patch")->required();
  apply->add_option("unit", options->unit, "the delivery unit")->required();
  apply->add_option("--pubkey", options->publicKey, "public key that must have signed the unit")->required();
  apply->add_flag("--json", options->json, "print what was applied as JSON");
  apply->add_option("--consistency", options->consistency,
                    "entry: no thread may be inside the bytes being overwritten (default); strict: nor may any "
                    "thread have a changed function on its stack (a conservative scan of every stack word); "
                    "both retry for 2 s, then refuse naming the threads")
      ->check(CLI::IsMember({"entry", "strict"}));
  apply->callback([options, &exitCode] { exitCode = applyUnit(*options); });

  auto pid = std::make_shared<int>(0);
  CLI::App *revert = app.add_subcommand(
      "revert", "Write back the original entry bytes of every hotpatch applied to a process.\n"
                "Example: hotforge revert --pid 4242");
  revert->add_option("--pid", *pid, "the patched process")->required();
  revert->callback([pid, &exitCode] { exitCode = revertAll(*pid); });

  auto statusPid = std::make_shared<int>(0);
  auto statusJson = std::make_shared<bool>(false);
  CLI::App *statusCommand = app.add_subcommand(
      "status", "List the hotpatches applied to a process (unit, sequence, functions).\nExample: hotforge status --pid 4242");
  statusCommand->add_option("--pid", *statusPid, "the process")->required();
  statusCommand->add_flag("--json", *statusJson, "machine-readable output");
  statusCommand->callback([statusPid, statusJson, &exitCode] { exitCode = status(*statusPid, *statusJson); });
}

}  // namespace hotforge::cli
