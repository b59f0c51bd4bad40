// hotforge release: a whole release in one command (docs/release.md).
#include "commands.h"
#include "output.h"

#include "hotforge/core/error.h"
#include "hotforge/release.h"
#include "hotforge/report.h"
#include "hotforge/unit.h"

#include <fmt/core.h>
#include <llvm/ADT/SmallString.h>
#include <llvm/Support/Path.h>

#include <chrono>
#include <cstdio>
#include <sys/ioctl.h>
#include <unistd.h>

namespace hotforge::cli {

namespace {

struct ReleaseCommandOptions {
  std::string manifest;
  std::string baselineDir, patchedDir, debugDir, releaseId, baselineId, grouping;
  std::vector<std::string> exclude;
  uint32_t sequence = 1;
  std::vector<std::string> merge;
  std::string output, shard, cacheDir, progress = "auto", junit;
  bool carryLineChanges = false;
  SigningOptions signing;
  bool noCache = false, json = false;
  unsigned jobs = 0;
  int level = kUnitDefaultLevel;
};

// Progress on stderr: a bar that redraws itself on a terminal, one line per pair otherwise. On a
// terminal, pairs that fail or need a restart also get their line, above the bar.
class ProgressPrinter {
public:
  explicit ProgressPrinter(const std::string &mode) {
    bool terminal = isatty(STDERR_FILENO) != 0;
    bar_ = mode == "bar" || (mode == "auto" && terminal);
    silent_ = mode == "none";
  }
  void operator()(const ReleaseProgress &p) {
    if (silent_) return;
    std::string counter = fmt::format("[{}/{}]", p.done, p.total);
    if (!bar_) {
      fmt::print(stderr, "{} {}\n", counter, printableText(p.line));
      std::fflush(stderr);
      return;
    }
    if (p.notable) fmt::print(stderr, "\r\033[K{} {}\n", counter, printableText(p.line));
    unsigned width = 80;
    struct winsize ws {};
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width = ws.ws_col;
    const size_t barWidth = 30;
    size_t filled = p.total ? p.done * barWidth / p.total : barWidth;
    std::string bar = "[" + std::string(filled, '#') + std::string(barWidth - filled, '.') + "] " + counter + " ";
    std::string name = printableText(p.name);
    size_t room = width > bar.size() + 1 ? width - bar.size() - 1 : 0;
    if (name.size() > room) name = room > 3 ? "..." + name.substr(name.size() - (room - 3)) : "";
    fmt::print(stderr, "\r\033[K{}{}", bar, name);
    if (p.done == p.total) fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
  }

private:
  bool bar_ = false, silent_ = false;
};

void checkUsage(const ReleaseCommandOptions &o, bool shardMode, const CLI::App &command) {
  int modes = !o.manifest.empty() + !o.baselineDir.empty() + !o.merge.empty();
  if (modes != 1)
    throw CLI::ValidationError("release", "give exactly one of MANIFEST, --baseline-dir/--patched-dir or --merge");
  bool dirMode = !o.baselineDir.empty();
  if (dirMode && (o.patchedDir.empty() || o.releaseId.empty()))
    throw CLI::ValidationError("--baseline-dir", "needs --patched-dir and --release");
  if (!dirMode) {
    if (!o.patchedDir.empty()) throw CLI::ValidationError("--patched-dir", "needs --baseline-dir");
    for (const char *name : {"--release", "--baseline-id", "--sequence", "--grouping", "--exclude", "--debug-dir"})
      if (command.count(name))
        throw CLI::ValidationError(name, "only applies with --baseline-dir (a manifest says it itself)");
  }
  if (!o.merge.empty() && shardMode) throw CLI::ValidationError("--shard", "a merge takes every shard; drop --shard");
  if (!shardMode) {
    if (o.signing.key.empty() == o.signing.signCommand.empty())
      throw CLI::ValidationError("signing", "give exactly one of --key and --sign-cmd (a --shard run needs neither)");
    if (o.signing.signCommand.empty() != o.signing.publicKey.empty())
      throw CLI::ValidationError("--sign-cmd", "--sign-cmd and --pubkey go together");
  }
}

int runRelease(const ReleaseCommandOptions &o, bool shardMode) {
  auto start = std::chrono::steady_clock::now();
  ShardSpec shard;
  if (shardMode) {
    llvm::Expected<ShardSpec> spec = parseShardSpec(o.shard);
    if (!spec) return reportError(llvm::toString(spec.takeError()));
    shard = *spec;
  }
  std::unique_ptr<Signer> signer;
  ReleasePackOptions pack;
  if (!shardMode) {  // before any work: a bad key should not cost a whole run
    llvm::Expected<std::unique_ptr<Signer>> s = makeSigner(o.signing);
    if (!s) return reportError(llvm::toString(s.takeError()));
    signer = std::move(*s);
    llvm::Expected<std::optional<int64_t>> created = sourceDateEpoch();
    if (!created) return reportError(llvm::toString(created.takeError()));
    pack.signer = signer.get();
    pack.level = o.level;
    pack.created = *created;
    pack.threads = o.jobs;
  }

  ReleaseResult result;
  if (!o.merge.empty()) {
    llvm::Expected<std::vector<ReleaseShard>> shards = readReleaseShards(o.merge);
    if (!shards) return reportError(llvm::toString(shards.takeError()));
    llvm::Expected<ReleaseResult> merged = mergeReleaseShards(*shards, pack);
    if (!merged) return reportError(llvm::toString(merged.takeError()));
    result = std::move(*merged);
  } else {
    llvm::Expected<ReleasePlan> plan = [&]() -> llvm::Expected<ReleasePlan> {
      if (!o.manifest.empty()) return loadReleaseManifest(o.manifest);
      ReleasePlan settings;
      settings.release = o.releaseId;
      settings.baseline = o.baselineId;
      settings.sequence = o.sequence;
      if (o.grouping == "format-machine") settings.grouping = ReleaseGrouping::FormatMachine;
      else if (o.grouping == "single") settings.grouping = ReleaseGrouping::Single;
      ReleaseDirectories dirs{o.baselineDir, o.patchedDir, o.debugDir, o.exclude};
      return planFromDirectories(std::move(settings), dirs);
    }();
    if (!plan) return reportError(llvm::toString(plan.takeError()));
    ReleaseRunOptions run;
    run.jobs = o.jobs;
    run.shard = shard;
    if (!o.noCache) {
      llvm::SmallString<256> cache(o.output);
      llvm::sys::path::append(cache, ".cache");
      run.cacheDir = o.cacheDir.empty() ? std::string(cache) : o.cacheDir;
    }
    run.toolIdentity = releaseToolIdentity(HOTFORGE_VERSION);
    run.carryLineChanges = o.carryLineChanges;
    ProgressPrinter printer(o.progress);
    run.progress = [&printer](const ReleaseProgress &p) { printer(p); };
    llvm::Expected<ReleaseShard> done = runReleaseShard(*plan, run);
    if (!done) return reportError(llvm::toString(done.takeError()));
    if (shardMode) {
      if (llvm::Error e = writeReleaseShard(*done, o.output)) return reportError(llvm::toString(std::move(e)));
      result = summarizeReleaseShard(*done);
    } else {
      llvm::Expected<ReleaseResult> merged = mergeReleaseShards({std::move(*done)}, pack);
      if (!merged) return reportError(llvm::toString(merged.takeError()));
      result = std::move(*merged);
    }
  }
  result.times["wall"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!shardMode)
    if (llvm::Error e = writeReleaseOutput(result, o.output)) return reportError(llvm::toString(std::move(e)));
  if (!o.junit.empty())
    if (llvm::Error e = writeOutput(o.junit, releaseJunitXml(result.summary)))
      return reportError(llvm::toString(std::move(e)));
  if (o.json)
    fmt::print("{}", jsonText(releaseSummaryJson(result)));
  else
    fmt::print("{}", printableText(releaseSummaryText(result)));
  return result.exitCode;
}

}  // namespace

void addReleaseCommand(CLI::App &app, int &exitCode) {
  auto o = std::make_shared<ReleaseCommandOptions>();
  CLI::App *command = app.add_subcommand(
      "release",
      "Package a whole release: diff and build every baseline/patched pair in parallel, pack the hotpatch images "
      "into signed units (one per machine: RELEASE-x64.hfu, RELEASE-arm64.hfu), and write OUTDIR/summary.json: what "
      "is hotpatched, what needs a restart and why, what failed; OUTDIR/summary.html links one review page per changed pair (OUTDIR/pages/). Results are cached in OUTDIR/.cache, so a rerun "
      "only redoes what changed. --shard I/N does one slice and --merge joins the slices into exactly the units and "
      "summary of a single run. docs/release.md has the manifest format and worked examples.\n"
      "Exit codes: 0 every pair hotpatched or unchanged, 3 some pair needs a restart, 1 some pair failed or the "
      "release could not be made (1 wins over 3), 2 usage.\n"
      "Example: hotforge release release.json -o out/2026-11 --key release.pem\n"
      "         hotforge release --baseline-dir v1/ --patched-dir v2/ --release 2026-11 -o out --key release.pem\n"
      "         hotforge release release.json -o shard1 --shard 1/2; ... ; hotforge release --merge shard1 shard2 "
      "-o out --key release.pem");
  command->add_option("manifest", o->manifest, "release manifest: JSON, or TOML when the name ends in .toml");
  command->add_option("--baseline-dir", o->baselineDir, "instead of a manifest: the baseline tree");
  command->add_option("--patched-dir", o->patchedDir, "the patched tree, paired with --baseline-dir by relative path");
  command->add_option("--release", o->releaseId, "with --baseline-dir: release id (names the units)");
  command->add_option("--baseline-id", o->baselineId, "with --baseline-dir: id of the baseline release");
  command->add_option("--sequence", o->sequence, "with --baseline-dir: patch sequence number (default 1)")
      ->check(CLI::Range(1u, 0xffffffffu));
  command->add_option("--grouping", o->grouping, "with --baseline-dir: machine (default), format-machine or single")
      ->check(CLI::IsMember({"machine", "format-machine", "single"}));
  command->add_option("--exclude", o->exclude, "with --baseline-dir: glob of relative paths to skip (repeatable)")
      ->allow_extra_args(false);
  command->add_option("--debug-dir", o->debugDir, "with --baseline-dir: ELF separate debug files for both trees");
  command->add_option("--merge", o->merge, "join the outputs of every --shard run (directories)")->expected(1, -1);
  command->add_option("-o,--output", o->output, "output directory")->required();
  command->add_option("--key", o->signing.key, "Ed25519 private key, PKCS#8 PEM");
  command->add_option("--sign-cmd", o->signing.signCommand, "shell command: bytes to sign on stdin, raw signature on stdout");
  command->add_option("--pubkey", o->signing.publicKey, "public key that --sign-cmd signs for");
  command->add_option("--level", o->level, fmt::format("zstd level 1..22 (default {})", kUnitDefaultLevel))
      ->check(CLI::Range(1, 22));
  command->add_option("-j,--jobs", o->jobs, "pairs worked on at once (default: one per core)");
  command->add_option("--shard", o->shard, "I/N: do slice I of N and write images and a shard record to OUTDIR");
  command->add_option("--cache-dir", o->cacheDir, "cache directory (default OUTDIR/.cache)");
  command->add_flag("--no-cache", o->noCache, "neither read nor write the cache");
  command->add_flag("--carry-line-changes", o->carryLineChanges,
                    "patch functions whose only change is a line number passed to an error reporter (HF103) too");
  command->add_option("--progress", o->progress, "auto (a bar on a terminal, lines otherwise), bar, lines or none")
      ->check(CLI::IsMember({"auto", "bar", "lines", "none"}));
  command->add_flag("--json", o->json, "print the summary as JSON (summary.json plus \"times\")");
  command->add_option("--junit", o->junit,
                      "also write JUnit XML to this file: one test case per pair, failed pairs as errors, pairs "
                      "that need a restart as failures with the reasons");
  command->callback([o, command, &exitCode] {
    bool shardMode = !o->shard.empty();
    checkUsage(*o, shardMode, *command);
    exitCode = runRelease(*o, shardMode);
  });
}

}  // namespace hotforge::cli
