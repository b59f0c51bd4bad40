// apply / revert / status: the reference loader on a running Linux process, as `hotforge` and
// `hotforge-target` offer it.
#include "hotforge/loader_commands.h"

#include "hotforge/loader.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/files.h"
#include "hotforge/core/json_text.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/unit_reader.h"

#include <algorithm>
#include <cstdio>
#include <optional>

namespace hotforge::loader {
namespace {

std::string programName = "hotforge";

void print(const std::string &text) { std::fwrite(text.data(), 1, text.size(), stdout); }

struct ApplyCommandOptions {
  int pid = 0;
  std::string unit, publicKey, consistency = "entry";
  bool json = false;
};

// One line for two failures.
Failure both(Failure first, const Status &second) {
  if (second) return first;
  return Failure{first.message + "; " + second.error()};
}

// The record of a running process, from the state directory: a record of a process that is gone,
// or of an earlier process with the same pid (another start time), is removed.
Outcome<ProcessRecord> currentRecord(const StateDirectory &state, int pid) {
  Outcome<uint64_t> started = processStartTime(pid);
  if (!started) {
    static_cast<void>(state.remove(pid));  // the process's failure is the one to report
    return std::move(started).failure();
  }
  Outcome<std::optional<ProcessRecord>> recorded = state.read(pid);
  if (!recorded) return std::move(recorded).failure();
  if (*recorded && (*recorded)->startTime == *started) return std::move(**recorded);
  if (*recorded) {
    std::fprintf(stderr, "%s\n",
                 concatenate(programName, ": note: removed the record of an earlier process ", pid, " (started at tick ",
                             (*recorded)->startTime, ", this one at ", *started, ")").c_str());
    if (Status removed = state.remove(pid); !removed) return std::move(removed).failure();
  }
  return ProcessRecord{pid, *started, {}};
}

// Records of processes that are gone, or whose pid another process has now, are removed.
void removeStaleRecords(const StateDirectory &state) {
  for (int pid : state.recordedPids()) {
    Outcome<uint64_t> started = processStartTime(pid);
    std::optional<uint64_t> startTime;
    if (started) startTime = *started;
    Outcome<std::optional<ProcessRecord>> recorded = state.read(pid);
    if (!recorded) continue;  // an unreadable record is left for a person to look at
    if (*recorded && (*recorded)->startTime != startTime) static_cast<void>(state.remove(pid));
  }
}

// What an interrupted apply left ("applying"), and a record whose jumps someone took out, is
// settled against the process: jumps all in, the record is complete; all out, it goes.
Status settle(const StateDirectory &state, ProcessRecord &record) {
  bool changed = false;
  for (auto it = record.applied.begin(); it != record.applied.end();) {
    Outcome<std::optional<bool>> written = entriesWritten(record.pid, it->redirects);
    if (!written) return std::move(written).failure();
    if (!*written)
      return fail(it->entry, " is half applied to process ", record.pid, " (an apply was interrupted): run `",
                  programName, " revert --pid ", record.pid, "`");
    if (**written) {
      changed |= !it->complete;
      it->complete = true;
      ++it;
    } else {
      it = record.applied.erase(it);
      changed = true;
    }
  }
  return changed ? state.write(record) : success();
}

// Applies one image to the process: the record says what will change before it changes, and is
// completed after; every failure leaves the process and its record agreeing. `replaced` is the
// applied entry a later sequence takes out first (put back when the new one fails).
Status applyImageTransaction(const StateDirectory &state, ProcessRecord &record, const PatchImage &image,
                             AppliedImage fresh, std::optional<size_t> replaced, const ApplyOptions &options) {
  int pid = record.pid;
  std::optional<AppliedImage> previous;
  if (replaced) {
    previous = record.applied[*replaced];
    if (Status out = rewriteEntries(pid, previous->redirects, /*toOriginal=*/true); !out)
      return fail("cannot take out sequence ", previous->sequence, ": ", out.error());
    record.applied.erase(record.applied.begin() + std::ptrdiff_t(*replaced));
    if (Status saved = state.write(record); !saved)
      return both(std::move(saved).failure(), rewriteEntries(pid, previous->redirects, false));
  }
  // The earlier sequence goes back in, under a record that says so first.
  auto putBack = [&](Failure failure) -> Failure {
    if (!previous) return failure;
    previous->complete = false;
    record.applied.push_back(*previous);
    Status back = state.write(record);
    if (back) back = rewriteEntries(pid, previous->redirects, false);
    if (back) {
      record.applied.back().complete = true;
      back = state.write(record);
    }
    if (!back)
      return both(std::move(failure),
                  fail("and sequence ", previous->sequence, " could not be put back: ", back.error()));
    return failure;
  };
  record.applied.push_back(std::move(fresh));
  if (Status saved = state.write(record); !saved) {
    AppliedImage prepared = record.applied.back();
    record.applied.pop_back();
    discardImage(pid, image, prepared);
    return putBack(std::move(saved).failure());
  }
  AppliedImage &applied = record.applied.back();
  if (Status committed = commitImage(pid, image, applied, options); !committed) {
    discardImage(pid, image, applied);
    record.applied.pop_back();
    static_cast<void>(state.write(record));  // an "applying" record left behind settles to nothing
    return putBack(std::move(committed).failure());
  }
  applied.complete = true;
  if (Status saved = state.write(record); !saved) {
    // The jumps are in but the record cannot say so: take them out again, so that an "applying"
    // record and an unpatched process agree. (The image stays mapped: a thread may run in it.)
    if (Status back = rewriteEntries(pid, applied.redirects, true); !back)
      return both(std::move(saved).failure(), back);
    record.applied.pop_back();
    return putBack(std::move(saved).failure());
  }
  return success();
}

int applyUnit(const ApplyCommandOptions &options) {
  Outcome<std::vector<uint8_t>> bytes = readFileBytes(options.unit, kMaxUnitFileSize);
  if (!bytes) return reportError(bytes.error());
  Outcome<PublicKey> key = readPublicKeyFile(options.publicKey);
  if (!key) return reportError(key.error());
  Outcome<VerifiedUnit> unit = verifyUnit(*bytes, *key);
  if (!unit) return reportError(options.unit + ": " + unit.error());
  // From here until the record agrees with the process, SIGINT and the like wait.
  DeferredSignals deferred;
  Outcome<StateDirectory> state = StateDirectory::open(/*create=*/true);
  if (!state) return reportError(state.error());
  removeStaleRecords(*state);
  Outcome<ProcessRecord> record = currentRecord(*state, options.pid);
  if (!record) return reportError(record.error());
  if (Status settled = settle(*state, *record); !settled) return reportError(settled.error());
  ApplyOptions applyOptions;
  applyOptions.strict = options.consistency == "strict";
  applyOptions.signals = &deferred;
  size_t count = 0;
  for (const UnitEntry &entry : unit->entries) {
    Outcome<PatchImage> image = readPatchImage(entry.bytes);
    if (!image) return reportError(options.unit + ": " + entry.name + ": " + image.error());
    // A release unit also carries images for other formats and machines: they fit other hosts.
    if (unit->entries.size() > 1 && (image->format != hostFormat() || image->machine != hostMachine())) continue;
    std::string baseline = hexEncode(image->baseline.sha256);
    // A later sequence for the same baseline replaces the earlier one; an earlier one is refused.
    auto previous = std::find_if(record->applied.begin(), record->applied.end(),
                                 [&](const AppliedImage &a) { return a.baselineSha256 == baseline; });
    std::optional<size_t> replaced;
    std::optional<uint32_t> appliedSequence;
    if (previous != record->applied.end()) appliedSequence = previous->sequence;
    SequenceStep step = sequenceStep(appliedSequence, std::nullopt, image->sequence);
    if (step == SequenceStep::NotNewer)
      return reportError(concatenate(entry.name, ": sequence ", image->sequence, " is not newer than sequence ",
                                     *appliedSequence, " already applied to process ", options.pid));
    if (step == SequenceStep::Replace) replaced = size_t(previous - record->applied.begin());
    // Prepared (mapped) while an earlier sequence still runs; its entries are checked once it is out.
    Preparation preparation = prepareImage(options.pid, *image, /*checkEntries=*/!replaced);
    Outcome<AppliedImage> &prepared = preparation.applied;
    if (!prepared) {
      // Images of other binaries in a release unit are not an error: they fit other processes.
      if (unit->entries.size() > 1 && preparation.failure == PrepareFailure::BaselineNotMapped) continue;
      return reportError(entry.name + ": " + prepared.error());
    }
    prepared->unit = options.unit;
    prepared->entry = entry.name;
    if (Status applied = applyImageTransaction(*state, *record, *image, std::move(*prepared), replaced, applyOptions);
        !applied)
      return reportError(entry.name + ": " + applied.error());
    const AppliedImage &applied = record->applied.back();
    ++count;
    if (options.json)
      print(jsonText(toJson(applied)));
    else
      print(concatenate("applied ", entry.name, " (sequence ", applied.sequence, ") to process ", options.pid, ": ",
                        applied.redirects.size(), " functions redirected, image at ", hexAddress(applied.imageAddress),
                        ", threads paused ", applied.pause.count(), " us\n"));
  }
  if (!count)
    return reportError(concatenate("no image of ", options.unit, " fits a binary that process ", options.pid, " runs"));
  return kExitOk;
}

int revertAll(int pid) {
  DeferredSignals deferred;
  Outcome<StateDirectory> state = StateDirectory::open(/*create=*/false);
  if (!state) return reportError(state.error());
  Outcome<ProcessRecord> record = currentRecord(*state, pid);
  if (!record) return reportError(record.error());
  if (record->applied.empty()) return reportError(concatenate("nothing is applied to process ", pid));
  // Every record is checked before anything is written: the bytes to restore are the baseline's.
  for (const AppliedImage &a : record->applied)
    if (Status checked = checkRecord(pid, a); !checked) return reportError(checked.error());
  size_t count = record->applied.size();
  while (!record->applied.empty()) {
    if (Status out = rewriteEntries(pid, record->applied.back().redirects, /*toOriginal=*/true); !out)
      return reportError(out.error());
    record->applied.pop_back();
    if (Status saved = state->write(*record); !saved) return reportError(saved.error());
  }
  print(concatenate("reverted ", count, " patch(es) in process ", pid, "\n"));
  return kExitOk;
}

int status(int pid, bool json) {
  Outcome<StateDirectory> state = StateDirectory::open(/*create=*/false);
  if (!state) return reportError(state.error());
  Outcome<ProcessRecord> record = currentRecord(*state, pid);
  if (!record) return reportError(record.error());
  if (json) {
    nlohmann::json applied = nlohmann::json::array();
    for (const AppliedImage &a : record->applied) applied.push_back(toJson(a));
    print(jsonText(nlohmann::json{{"pid", pid}, {"start_time", record->startTime}, {"applied", applied}}));
    return kExitOk;
  }
  if (record->applied.empty()) print(concatenate("process ", pid, ": no hotpatch applied\n"));
  for (const AppliedImage &a : record->applied) {
    print(concatenate("process ", pid, ": ", a.entry, " sequence ", a.sequence, " from ", a.unit, " (", a.baselinePath,
                      ")", a.complete ? "" : concatenate(" - interrupted while applying: `", programName,
                                                          " revert` takes it out"),
                      "\n"));
    for (const AppliedRedirect &r : a.redirects)
      print(concatenate("  ", r.name.empty() ? "?" : r.name, " at ", hexAddress(r.address), "\n"));
  }
  return kExitOk;
}

}  // namespace

int reportError(const std::string &message) {
  std::fprintf(stderr, "%s: error: %s\n", programName.c_str(), message.c_str());
  return kExitError;
}

int runCommandLine(CLI::App &app, int argc, char **argv, const int &exitCode) {
  programName = app.get_name();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    app.exit(e);
    return kExitUsage;
  }
  return exitCode;
}

void addLoaderCommands(CLI::App &app, int &exitCode) {
  auto options = std::make_shared<ApplyCommandOptions>();
  CLI::App *apply = app.add_subcommand(
      "apply",
      "Verify a delivery unit and apply its hotpatch images to a running process (Linux x64, with ptrace): the "
      "baseline is found among the process's mapped files by SHA-256, every thread is stopped, each image is "
      "mapped near its base with its fixups applied, each changed function's entry gets a jump, and the threads "
      "resume. A later sequence for the same baseline replaces the applied one; an earlier one is refused.\n"
      "Example: " + app.get_name() + " apply --pid 4242 2026-11.hfu --pubkey release.pub.pem");
  apply->add_option("--pid", options->pid, "the process to patch")->required();
  apply->add_option("unit", options->unit, "the delivery unit")->required();
  apply->add_option("--pubkey", options->publicKey, "public key that must have signed the unit")->required();
  apply->add_flag("--json", options->json, "print what was applied as JSON");
  apply->add_option("--consistency", options->consistency,
                    "entry: no thread may be inside the bytes being overwritten (default), nor inside or on the "
                    "stack of a function the image marks quiescent (its loop returns to its entry); strict: nor "
                    "may any thread have a changed function on its stack (a conservative scan of every stack "
                    "word); both retry for 2 s, then refuse naming the threads")
      ->check(CLI::IsMember({"entry", "strict"}));
  apply->callback([options, &exitCode] { exitCode = applyUnit(*options); });

  auto pid = std::make_shared<int>(0);
  CLI::App *revert = app.add_subcommand(
      "revert", "Write back the original entry bytes of every hotpatch applied to a process.\n"
                "Example: " + app.get_name() + " revert --pid 4242");
  revert->add_option("--pid", *pid, "the patched process")->required();
  revert->callback([pid, &exitCode] { exitCode = revertAll(*pid); });

  auto statusPid = std::make_shared<int>(0);
  auto statusJson = std::make_shared<bool>(false);
  CLI::App *statusCommand = app.add_subcommand(
      "status", "List the hotpatches applied to a process (unit, sequence, functions).\nExample: " + app.get_name() + " status --pid 4242");
  statusCommand->add_option("--pid", *statusPid, "the process")->required();
  statusCommand->add_flag("--json", *statusJson, "machine-readable output");
  statusCommand->callback([statusPid, statusJson, &exitCode] { exitCode = status(*statusPid, *statusJson); });
}

}  // namespace hotforge::loader
