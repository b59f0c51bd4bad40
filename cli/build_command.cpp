// hotforge build: diff, then emit a hotpatch image.
#include "commands.h"
#include "output.h"

#include "hotforge/patch_image.h"

#include <fmt/core.h>

namespace hotforge::cli {
namespace {

struct BuildCommandOptions {
  BuildPair pair;
  std::string output;
  uint32_t sequence = 1;
  bool json = false;
};

}  // namespace

void addBuildCommand(CLI::App &app, int &exitCode) {
  auto options = std::make_shared<BuildCommandOptions>();
  CLI::App *command = app.add_subcommand(
      "build",
      "Diff a baseline and a patched build, then write a hotpatch image: only the changed and new code and "
      "data, fixups that bind it to the running baseline, the redirection of every changed function, unwind "
      "data, and the identity of the exact baseline (build-id or TimeDateStamp+CheckSum, SHA-256).\n"
      "Refuses, with every reason, when a change needs a restart (exit 3); never writes a partial image.\n"
      "Two builds with no change are no error: exit 0, and no image is written.\n"
      "Example: hotforge build app.base app.patched -o app.hfpatch --sequence 2");
  addBuildPairOptions(*command, options->pair);
  // writeOutput takes "-" and "" for stdout, where the binary image would run into the report.
  command->add_option("-o,--output", options->output, "the hotpatch image to write")
      ->required()
      ->check([](const std::string &path) {
        return path.empty() || path == "-" ? std::string("the image is binary: give a file name, not stdout")
                                           : std::string();
      });
  command->add_option("--sequence", options->sequence, "position of this patch in its baseline's series (default 1)")
      ->check(CLI::Range(1u, 0xffffffffu));
  command->add_flag("--json", options->json, "print the image's records as JSON (docs/format.md)");
  command->callback([options, &exitCode] {
    PhaseTrace trace(options->pair.timeTrace);
    auto [base, patched] = readBoth(options->pair);
    if (!base) {
      llvm::consumeError(patched.takeError());
      return void(exitCode = reportError(llvm::toString(base.takeError())));
    }
    if (!patched) return void(exitCode = reportError(llvm::toString(patched.takeError())));
    DiffOptions diffOptions;
    diffOptions.carryLineChanges = options->pair.carryLineChanges;
    llvm::Expected<Diff> diff = diffImages(*base, *patched, diffOptions);
    if (!diff) return void(exitCode = reportError(llvm::toString(diff.takeError())));
    if (diff->changes.empty()) {
      // Like `release`, which calls such a pair unchanged: a result, not an error. No image is
      // written, so a pipeline tells it from a built patch by the report (or the missing file).
      if (options->json) fmt::print("{}", jsonText(nlohmann::json{{"unchanged", true}}));
      else fmt::print("{}: not written: no change between the two builds, nothing to patch\n", options->output);
      return void(exitCode = kExitOk);
    }
    BuildOptions buildOptions;
    buildOptions.sequence = options->sequence;
    llvm::Expected<PatchImage> image = buildPatchImage(*base, *patched, *diff, buildOptions);
    if (!image) {
      llvm::Error error = image.takeError();
      std::optional<BuildRefusal> refusal = takeRefusal(error);
      if (!refusal) return void(exitCode = reportError(llvm::toString(std::move(error))));
      fmt::print(stderr, "hotforge: {}\n", refusal->message());
      if (options->json) fmt::print("{}", jsonText(nlohmann::json{{"refusals", toJson(refusal->refusals)}}));
      return void(exitCode = kExitNeedsRestart);
    }
    if (llvm::Error e = trace.write()) return void(exitCode = reportError(llvm::toString(std::move(e))));
    std::string bytes(image->file.begin(), image->file.end());
    if (llvm::Error e = writeOutput(options->output, bytes)) return void(exitCode = reportError(llvm::toString(std::move(e))));
    if (options->json) {
      fmt::print("{}", jsonText(toJson(*image)));
    } else {
      fmt::print("{}: {} functions ({} redirected), {} fixups; code {} bytes, data {} bytes, metadata {} bytes, "
                 "file {} bytes\n",
                 options->output, image->functions.size(), image->redirects.size(), image->fixups.size(),
                 image->sizes.code, image->sizes.data, image->sizes.metadata, image->sizes.file);
    }
    exitCode = kExitOk;
  });
}

}  // namespace hotforge::cli
