// The hotforge command line: each subcommand registers itself on the app with a callback that runs
// once its arguments parsed and stores the exit code. Commands hold no logic a library should own.
#pragma once

#include "hotforge/image.h"
#include "hotforge/loader_commands.h"
#include "hotforge/unit.h"

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

namespace hotforge::cli {

// Exit codes (docs/cli.md), error lines and the command-line runner are the loader commands'
// (hotforge/loader_commands.h): hotforge-target shares them.
using loader::addLoaderCommands;
using loader::kExitError;
using loader::kExitNeedsRestart;
using loader::kExitOk;
using loader::kExitUsage;
using loader::reportError;

void addInspectCommand(CLI::App &app, int &exitCode);
void addDiffCommand(CLI::App &app, int &exitCode);
void addBuildCommand(CLI::App &app, int &exitCode);
void addPackagerCommands(CLI::App &app, int &exitCode);  // keygen, pack, verify
void addReleaseCommand(CLI::App &app, int &exitCode);

// The two builds a diff or a patch starts from, and where their debug information is.
struct BuildPair {
  std::string base, patched;
  ImageReadOptions baseRead, patchedRead;
  bool carryLineChanges = false;  // DiffOptions::carryLineChanges
  std::string timeTrace;           // --time-trace: where to write a Chrome trace of the phases
};
// Adds the positional BASE PATCHED and --pdb-base, --pdb-patched, --debug-dir, --carry-line-changes.
void addBuildPairOptions(CLI::App &command, BuildPair &pair);
// Records the phases of one command (reading, each differ step, building) from construction when
// --time-trace names a file, and writes them there as a Chrome trace on write().
class PhaseTrace {
public:
  explicit PhaseTrace(std::string path);
  ~PhaseTrace();
  PhaseTrace(const PhaseTrace &) = delete;
  PhaseTrace &operator=(const PhaseTrace &) = delete;
  llvm::Error write();

private:
  std::string path_;
};
// Reads both builds at the same time (one thread each).
std::pair<llvm::Expected<Image>, llvm::Expected<Image>> readBoth(const BuildPair &pair);

// How pack and release sign a unit: a private key file, or an external command and the public key
// it signs for (pack_commands.cpp).
struct SigningOptions {
  std::string key, signCommand, publicKey;
};
llvm::Expected<std::unique_ptr<Signer>> makeSigner(const SigningOptions &options);

}  // namespace hotforge::cli
