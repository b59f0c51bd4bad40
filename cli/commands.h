// The hotforge command line: each subcommand registers itself on the app with a callback that runs
// once its arguments parsed and stores the exit code. Commands hold no logic a library should own.
#pragma once

#include "hotforge/image.h"

#include <CLI/CLI.hpp>

#include <string>

namespace hotforge::cli {

// Stable exit codes, documented in docs/cli.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,          // bad input, unreadable file, failed check
  kExitUsage = 2,          // wrong arguments
  kExitNeedsRestart = 3,   // some change cannot be hotpatched
};

void addInspectCommand(CLI::App &app, int &exitCode);
void addDiffCommand(CLI::App &app, int &exitCode);
void addBuildCommand(CLI::App &app, int &exitCode);
void addPackagerCommands(CLI::App &app, int &exitCode);  // keygen, pack, verify

// Reads a baseline and a patched build at the same time (one thread each).
std::pair<llvm::Expected<Image>, llvm::Expected<Image>> readBoth(const std::string &base, const ImageReadOptions &baseOptions,
                                                                 const std::string &patched,
                                                                 const ImageReadOptions &patchedOptions);

// Prints "hotforge: error: MESSAGE" to stderr and returns kExitError.
int reportError(const std::string &message);

}  // namespace hotforge::cli
