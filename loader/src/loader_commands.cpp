// apply / revert / status: the reference loader on a running Linux process, as `hotforge` and
// `hotforge-target` offer it.
#include "hotforge/loader_commands.h"

#include "hotforge/loader.h"
#include "hotforge/runtime/bytes.h"
#include "hotforge/runtime/unit_reader.h"

#include <algorithm>
#include <cstdio>

namespace hotforge::loader {
namespace {

std::string programName = "hotforge";

void print(const std::string &text) { std::fwrite(text.data(), 1, text.size(), stdout); }

struct ApplyCommandOptions {
  int pid = 0;
  std::string unit, publicKey, consistency = "entry";
  bool json = false;
};

// Writes the jumps of an earlier apply again (after its replacement failed).
Status reapply(int pid, std::vector<AppliedRedirect> redirects) {
  for (AppliedRedirect &r : redirects) std::swap(r.original, r.written);
  return revertRedirects(pid, redirects);
}

// The applied units of a process, with the entry that is being replaced by a later sequence.
int applyUnit(const ApplyCommandOptions &options) {
  Outcome<std::vector<uint8_t>> bytes = readFileBytes(options.unit);
  if (!bytes) return reportError(bytes.error());
  Outcome<PublicKey> key = readPublicKeyFile(options.publicKey);
  if (!key) return reportError(key.error());
  Outcome<VerifiedUnit> unit = verifyUnit(*bytes, *key);
  if (!unit) return reportError(options.unit + ": " + unit.error());
  Outcome<nlohmann::json> state = readState(options.pid);
  if (!state) return reportError(state.error());
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  size_t count = 0;
  for (const UnitEntry &entry : unit->entries) {
    Outcome<PatchImage> image = readPatchImage(entry.bytes);
    if (!image) return reportError(options.unit + ": " + entry.name + ": " + image.error());
    // A release unit also carries images for other formats and machines: they fit other hosts.
    if (unit->entries.size() > 1 && (image->format != Format::Elf || image->machine != Machine::X64)) continue;
    std::string baseline = hexEncode(image->baseline.sha256);
    // A later sequence for the same baseline replaces the earlier one; an earlier one is refused.
    auto previous = std::find_if(applied.begin(), applied.end(),
                                 [&](const nlohmann::json &a) { return a.value("baseline_sha256", "") == baseline; });
    if (previous != applied.end() && (*previous)["sequence"].get<uint32_t>() >= image->sequence)
      return reportError(concatenate(entry.name, ": sequence ", image->sequence, " is not newer than sequence ",
                                     (*previous)["sequence"].get<uint32_t>(), " already applied to process ",
                                     options.pid));
    // The earlier sequence comes out first: the new image expects the baseline's own bytes.
    if (previous != applied.end())
      if (Status out = revertRedirects(options.pid, redirectsFromJson(*previous)); !out)
        return reportError(concatenate(entry.name, ": cannot take out sequence ",
                                       (*previous)["sequence"].get<uint32_t>(), ": ", out.error()));
    ApplyOptions applyOptions;
    applyOptions.unitName = options.unit;
    applyOptions.strict = options.consistency == "strict";
    Outcome<ApplyReport> report = applyImage(options.pid, *image, applyOptions);
    if (!report) {
      std::string reason = report.error();
      if (previous != applied.end())
        if (Status back = reapply(options.pid, redirectsFromJson(*previous)); !back)
          reason += concatenate("; and sequence ", (*previous)["sequence"].get<uint32_t>(),
                                " could not be put back: ", back.error());
      // Images of other binaries in a release unit are not an error: they fit other processes.
      if (unit->entries.size() > 1 && reason.find("does not run the baseline") != std::string::npos) continue;
      return reportError(entry.name + ": " + reason);
    }
    if (previous != applied.end()) applied.erase(previous);
    nlohmann::json record = toJson(*report, options.unit);
    record["baseline_sha256"] = baseline;
    record["entry"] = entry.name;
    applied.push_back(record);
    ++count;
    if (options.json)
      print(jsonText(record));
    else
      print(concatenate("applied ", entry.name, " (sequence ", report->sequence, ") to process ", options.pid, ": ",
                        report->redirects.size(), " functions redirected, image at ", hexAddress(report->imageAddress),
                        ", threads paused ", report->pause.count(), " us\n"));
  }
  if (!count)
    return reportError(concatenate("no image of ", options.unit, " fits a binary that process ", options.pid, " runs"));
  (*state)["applied"] = applied;
  if (Status written = writeState(options.pid, *state); !written) return reportError(written.error());
  return kExitOk;
}

int revertAll(int pid) {
  Outcome<nlohmann::json> state = readState(pid);
  if (!state) return reportError(state.error());
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  if (applied.empty()) return reportError(concatenate("nothing is applied to process ", pid));
  for (auto it = applied.rbegin(); it != applied.rend(); ++it)
    if (Status reverted = revertRedirects(pid, redirectsFromJson(*it)); !reverted) return reportError(reverted.error());
  (*state)["applied"] = nlohmann::json::array();
  if (Status written = writeState(pid, *state); !written) return reportError(written.error());
  print(concatenate("reverted ", applied.size(), " patch(es) in process ", pid, "\n"));
  return kExitOk;
}

int status(int pid, bool json) {
  Outcome<nlohmann::json> state = readState(pid);
  if (!state) return reportError(state.error());
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  if (json) {
    print(jsonText(nlohmann::json{{"pid", pid}, {"applied", applied}}));
    return kExitOk;
  }
  if (applied.empty()) print(concatenate("process ", pid, ": no hotpatch applied\n"));
  for (const auto &a : applied) {
    print(concatenate("process ", pid, ": ", a.value("entry", ""), " sequence ", a.value("sequence", 0), " from ",
                      a.value("unit", ""), " (", a.value("baseline", ""), ")\n"));
    for (const auto &r : a["redirects"])
      print(concatenate("  ", r.value("name", "?"), " at ", hexAddress(r.value("address", uint64_t(0))), "\n"));
  }
  return kExitOk;
}

}  // namespace

int reportError(const std::string &message) {
  std::fprintf(stderr, "%s: error: %s\n", programName.c_str(), message.c_str());
  return kExitError;
}

std::string jsonText(const nlohmann::json &doc) {
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
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
                    "entry: no thread may be inside the bytes being overwritten (default); strict: nor may any "
                    "thread have a changed function on its stack (a conservative scan of every stack word); "
                    "both retry for 2 s, then refuse naming the threads")
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
