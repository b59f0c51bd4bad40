#include "commands.h"

#include <fmt/core.h>
#include <llvm/Support/Signals.h>

#include <cstdio>
#include <optional>
#include <thread>

namespace hotforge::cli {

void addBuildPairOptions(CLI::App &command, BuildPair &pair) {
  command.add_option("base", pair.base, "baseline build (ELF64 or PE32+, x64 or Arm64)")->required();
  command.add_option("patched", pair.patched, "patched build of the same binary")->required();
  command.add_option("--pdb-base", pair.baseRead.pdbPath, "PDB of the baseline (default: from its CodeView record)");
  command.add_option("--pdb-patched", pair.patchedRead.pdbPath, "PDB of the patched build");
  command.add_option("--debug-dir", pair.baseRead.debugDir,
                     "ELF: directory with separate debug files (.build-id/xx/yyyy.debug or .gnu_debuglink names)");
}

std::pair<llvm::Expected<Image>, llvm::Expected<Image>> readBoth(const BuildPair &pair) {
  ImageReadOptions patchedRead = pair.patchedRead;
  patchedRead.debugDir = pair.baseRead.debugDir;
  std::optional<llvm::Expected<Image>> other;
  std::thread reader([&] { other.emplace(readImage(pair.patched, patchedRead)); });
  llvm::Expected<Image> first = readImage(pair.base, pair.baseRead);
  reader.join();
  return {std::move(first), std::move(*other)};
}

}  // namespace hotforge::cli

int main(int argc, char **argv) {
  using namespace hotforge::cli;
  CLI::App app{"Hotforge authors hotpatches: it reads a baseline and a patched build of a binary "
               "(ELF or PE, x64 or Arm64), finds the functions that changed, and emits hotpatch "
               "images and signed delivery units that redirect them in a running process.\n\n"
               "Exit codes: 0 ok, 1 error, 2 usage, 3 a change needs a restart.",
               "hotforge"};
  app.set_version_flag("--version", std::string("hotforge ") + HOTFORGE_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);

  int exitCode = kExitOk;
  addInspectCommand(app, exitCode);
  addDiffCommand(app, exitCode);
  addBuildCommand(app, exitCode);
  addLoaderCommands(app, exitCode);
  addPackagerCommands(app, exitCode);
  addReleaseCommand(app, exitCode);

  return hotforge::loader::runCommandLine(app, argc, argv, exitCode);
}
