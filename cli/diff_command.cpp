// hotforge diff: which functions and data changed, and whether each change can be hotpatched.
#include "commands.h"
#include "output.h"

#include "hotforge/diff.h"
#include "hotforge/report.h"

#include <fmt/core.h>

namespace hotforge::cli {
namespace {

struct DiffCommandOptions {
  BuildPair pair;
  std::string output, html;
  bool json = false;
  unsigned threads = 0;
};

std::string rangeText(const std::optional<AddressRange> &range) {
  return range ? fmt::format("{:#x}+{}", range->rva, range->size) : std::string("-");
}

std::string renderText(const Diff &diff, const Image &base, const Image &patched) {
  const DiffSummary &s = diff.summary;
  std::string verdict = diff.changes.empty() ? "no change" : diff.needsRestart() ? "NEEDS RESTART" : "hotpatchable";
  std::string out = fmt::format("{} -> {}: {} matched, {} changed, {} added, {} removed, {} need a restart: {}\n",
                                base.path, patched.path, s.matched, s.changed, s.added, s.removed, s.needsRestart,
                                verdict);
  for (const Change &c : diff.changes) {
    out += fmt::format("  {:<8} {:<13} {} {:<28} base {:<16} patched {:<16}", changeKindName(c.kind),
                       verdictName(c.verdict), c.rule, c.name ? *c.name : "(unnamed)", rangeText(c.base),
                       rangeText(c.patched));
    if (c.match) out += fmt::format(" [{} {:.2f}]", matchStageName(c.match->stage), c.match->confidence);
    out += "\n           " + c.reason + "\n";
  }
  return out;
}

}  // namespace

void addDiffCommand(CLI::App &app, int &exitCode) {
  auto options = std::make_shared<DiffCommandOptions>();
  CLI::App *command = app.add_subcommand(
      "diff",
      "Compare a baseline and a patched build of one binary function by function. Code that only moved is "
      "not a change: calls, branches, RIP-relative and ADRP-paired operands are compared by what they point "
      "at. Every change gets a verdict (hotpatchable or needs-restart), a rule id and a reason.\n"
      "Exit codes: 0 no change or all hotpatchable, 3 some change needs a restart, 1 error, 2 usage.\n"
      "Example: hotforge diff app.base app.patched\n"
      "         hotforge diff lib.dll lib.new.dll --pdb-base lib.pdb --pdb-patched lib.new.pdb --json -o diff.json\n"
      "         hotforge diff libpng16.so.16.base libpng16.so.16 --html review.html");
  addBuildPairOptions(*command, options->pair);
  command->add_flag("--json", options->json, "machine-readable output (schema in docs/diff-json.md)");
  command->add_option("-o,--output", options->output, "write the report to this file instead of stdout");
  command->add_option("--html", options->html,
                      "also write a review page to this file: every change, each changed function's base and "
                      "patched instructions side by side with addresses shown by name, changed data as hex "
                      "(one self-contained HTML file)");
  command->add_option("-j,--jobs", options->threads, "worker threads (default: one per core)");
  command->callback([options, &exitCode] {
    PhaseTrace trace(options->pair.timeTrace);
    auto [base, patched] = readBoth(options->pair);
    if (!base) {
      exitCode = reportError(llvm::toString(base.takeError()));
      llvm::consumeError(patched.takeError());
      return;
    }
    if (!patched) {
      exitCode = reportError(llvm::toString(patched.takeError()));
      return;
    }
    DiffOptions diffOptions;
    diffOptions.threads = options->threads;
    diffOptions.carryLineChanges = options->pair.carryLineChanges;
    llvm::Expected<Diff> diff = diffImages(*base, *patched, diffOptions);
    if (!diff) {
      exitCode = reportError(llvm::toString(diff.takeError()));
      return;
    }
    if (llvm::Error e = trace.write()) return void(exitCode = reportError(llvm::toString(std::move(e))));
    std::string report =
        options->json ? jsonText(toJson(*diff, *base, *patched)) : renderText(*diff, *base, *patched);
    if (!options->html.empty()) {
      llvm::Expected<std::string> page = diffPageHtml(*diff, *base, *patched);
      if (!page) {
        exitCode = reportError(llvm::toString(page.takeError()));
        return;
      }
      if (llvm::Error e = writeOutput(options->html, *page)) {
        exitCode = reportError(llvm::toString(std::move(e)));
        return;
      }
    }
    if (llvm::Error e = writeOutput(options->output, report)) {
      exitCode = reportError(llvm::toString(std::move(e)));
      return;
    }
    exitCode = diff->needsRestart() ? kExitNeedsRestart : kExitOk;
  });
}

}  // namespace hotforge::cli
