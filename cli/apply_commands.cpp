// hotforge apply / revert / status: the reference loader on a running Linux process.
#include "commands.h"
#include "output.h"

#include "hotforge/error.h"
#include "hotforge/loader.h"
#include "hotforge/patch_image.h"
#include "hotforge/unit.h"

#include <fmt/core.h>
#include <llvm/Support/MemoryBuffer.h>

namespace hotforge::cli {
namespace {

struct ApplyCommandOptions {
  int pid = 0;
  std::string unit, publicKey, consistency = "entry";
  bool json = false;
};

// Writes the jumps of an earlier apply again (after its replacement failed).
llvm::Error reapply(int pid, std::vector<AppliedRedirect> redirects) {
  for (AppliedRedirect &r : redirects) std::swap(r.original, r.written);
  return revertRedirects(pid, redirects);
}

// The applied units of a process, with the entry that is being replaced by a later sequence.
int applyUnit(const ApplyCommandOptions &options) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file = llvm::MemoryBuffer::getFile(options.unit, false, false);
  if (!file) return reportError(options.unit + ": " + file.getError().message());
  llvm::Expected<PublicKey> key = lift(readPublicKeyFile(options.publicKey));
  if (!key) return reportError(llvm::toString(key.takeError()));
  llvm::ArrayRef<uint8_t> bytes(reinterpret_cast<const uint8_t *>((*file)->getBufferStart()), (*file)->getBufferSize());
  llvm::Expected<VerifiedUnit> unit = lift(verifyUnit(bytes, *key));
  if (!unit) return reportError(options.unit + ": " + llvm::toString(unit.takeError()));
  llvm::Expected<nlohmann::json> state = readState(options.pid);
  if (!state) return reportError(llvm::toString(state.takeError()));
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  size_t count = 0;
  for (const UnitEntry &entry : unit->entries) {
    llvm::Expected<PatchImage> image = lift(readPatchImage(entry.bytes));
    if (!image) return reportError(options.unit + ": " + entry.name + ": " + llvm::toString(image.takeError()));
    // A release unit also carries images for other formats and machines: they fit other hosts.
    if (unit->entries.size() > 1 && (image->format != Format::Elf || image->machine != Machine::X64)) continue;
    std::string baseline = hexEncode(image->baseline.sha256);
    // A later sequence for the same baseline replaces the earlier one; an earlier one is refused.
    auto previous = std::find_if(applied.begin(), applied.end(),
                                 [&](const nlohmann::json &a) { return a.value("baseline_sha256", "") == baseline; });
    if (previous != applied.end() && (*previous)["sequence"].get<uint32_t>() >= image->sequence)
      return reportError(fmt::format("{}: sequence {} is not newer than sequence {} already applied to process {}",
                                     entry.name, image->sequence, (*previous)["sequence"].get<uint32_t>(), options.pid));
    // The earlier sequence comes out first: the new image expects the baseline's own bytes.
    if (previous != applied.end())
      if (llvm::Error e = revertRedirects(options.pid, redirectsFromJson(*previous)))
        return reportError(entry.name + ": cannot take out sequence " +
                           std::to_string((*previous)["sequence"].get<uint32_t>()) + ": " + llvm::toString(std::move(e)));
    ApplyOptions applyOptions;
    applyOptions.unitName = options.unit;
    applyOptions.strict = options.consistency == "strict";
    llvm::Expected<ApplyReport> report = applyImage(options.pid, *image, applyOptions);
    if (llvm::Error e = report.takeError()) {
      std::string reason = llvm::toString(std::move(e));
      if (previous != applied.end())
        if (llvm::Error back = reapply(options.pid, redirectsFromJson(*previous)))
          reason += "; and sequence " + std::to_string((*previous)["sequence"].get<uint32_t>()) +
                    " could not be put back: " + llvm::toString(std::move(back));
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
      fmt::print("{}", jsonText(record));
    else
      fmt::print("applied {} (sequence {}) to process {}: {} functions redirected, image at {:#x}, threads paused "
                 "{} us\n", entry.name, report->sequence, options.pid, report->redirects.size(), report->imageAddress,
                 report->pause.count());
  }
  if (!count) return reportError(fmt::format("no image of {} fits a binary that process {} runs", options.unit, options.pid));
  (*state)["applied"] = applied;
  if (llvm::Error e = writeState(options.pid, *state)) return reportError(llvm::toString(std::move(e)));
  return kExitOk;
}

int revertAll(int pid) {
  llvm::Expected<nlohmann::json> state = readState(pid);
  if (!state) return reportError(llvm::toString(state.takeError()));
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  if (applied.empty()) return reportError(fmt::format("nothing is applied to process {}", pid));
  for (auto it = applied.rbegin(); it != applied.rend(); ++it)
    if (llvm::Error e = revertRedirects(pid, redirectsFromJson(*it))) return reportError(llvm::toString(std::move(e)));
  (*state)["applied"] = nlohmann::json::array();
  if (llvm::Error e = writeState(pid, *state)) return reportError(llvm::toString(std::move(e)));
  fmt::print("reverted {} patch(es) in process {}\n", applied.size(), pid);
  return kExitOk;
}

int status(int pid, bool json) {
  llvm::Expected<nlohmann::json> state = readState(pid);
  if (!state) return reportError(llvm::toString(state.takeError()));
  nlohmann::json applied = state->value("applied", nlohmann::json::array());
  if (json) {
    fmt::print("{}", jsonText(nlohmann::json{{"pid", pid}, {"applied", applied}}));
    return kExitOk;
  }
  if (applied.empty()) fmt::print("process {}: no hotpatch applied\n", pid);
  for (const auto &a : applied) {
    fmt::print("process {}: {} sequence {} from {} ({})\n", pid, a.value("entry", ""), a.value("sequence", 0),
               a.value("unit", ""), a.value("baseline", ""));
    for (const auto &r : a["redirects"]) fmt::print("  {} at {:#x}\n", r.value("name", "?"), r.value("address", uint64_t(0)));
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
