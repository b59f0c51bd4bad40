// The apply, revert and status commands, shared by `hotforge` (build hosts) and
// `hotforge-target` (target hosts): one implementation of option parsing, output and exit codes.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <string>

namespace hotforge::loader {

// Stable exit codes, documented in docs/cli.md; the same for both programs.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,         // bad input, unreadable file, failed check
  kExitUsage = 2,         // wrong arguments
  kExitNeedsRestart = 3,  // some change cannot be hotpatched
};

// Prints "PROGRAM: error: MESSAGE" to stderr (PROGRAM: the app's name) and returns kExitError.
int reportError(const std::string &message);

void addLoaderCommands(CLI::App &app, int &exitCode);  // apply, revert, status

// Parses the command line, runs the chosen subcommand's callback, and returns the exit code it
// stored in `exitCode` (help and --version: 0; usage errors: kExitUsage).
int runCommandLine(CLI::App &app, int argc, char **argv, const int &exitCode);

}  // namespace hotforge::loader
