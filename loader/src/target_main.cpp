// hotforge-target: what a target host needs to patch running processes (apply, revert, status),
// without the authoring side and its LLVM. The commands are the ones `hotforge` offers.
#include "hotforge/loader_commands.h"

int main(int argc, char **argv) {
  using namespace hotforge::loader;
  CLI::App app{"hotforge-target applies signed Hotforge delivery units to running x64 Linux processes "
               "(ptrace), takes them out again and lists what is applied.\n\n"
               "Exit codes: 0 ok, 1 error, 2 usage.",
               "hotforge-target"};
  app.set_version_flag("--version", std::string("hotforge-target ") + HOTFORGE_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  int exitCode = kExitOk;
  addLoaderCommands(app, exitCode);
  return runCommandLine(app, argc, argv, exitCode);
}
