#include "commands.h"
#include "output.h"

#include <fmt/core.h>
#include <llvm/ADT/SmallString.h>
#include <llvm/Support/Signals.h>
#include <llvm/Support/TimeProfiler.h>
#include <llvm/Support/raw_ostream.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <system_error>
#include <thread>

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

namespace hotforge::cli {

void addBuildPairOptions(CLI::App &command, BuildPair &pair) {
  command.add_option("base", pair.base, "baseline build (ELF64 or PE32+, x64 or Arm64)")->required();
  command.add_option("patched", pair.patched, "patched build of the same binary")->required();
  command.add_option("--pdb-base", pair.baseRead.pdbPath, "PDB of the baseline (default: from its CodeView record)");
  command.add_option("--pdb-patched", pair.patchedRead.pdbPath, "PDB of the patched build");
  command.add_option("--debug-dir", pair.baseRead.debugDir,
                     "ELF: directory with separate debug files (.build-id/xx/yyyy.debug or .gnu_debuglink names)");
  command.add_flag("--carry-line-changes", pair.carryLineChanges,
                   "patch functions whose only change is a line number passed to an error reporter (HF103) too");
  command.add_option("--time-trace", pair.timeTrace,
                     "write how long each phase took (reading, decoding, matching, comparing, building) to this "
                     "file as a Chrome trace: open it in chrome://tracing or ui.perfetto.dev");
}

PhaseTrace::PhaseTrace(std::string path) : path_(std::move(path)) {
  if (!path_.empty()) llvm::timeTraceProfilerInitialize(/*TimeTraceGranularity=*/0, "hotforge");
}

PhaseTrace::~PhaseTrace() {
  if (!path_.empty()) llvm::timeTraceProfilerCleanup();
}

llvm::Error PhaseTrace::write() {
  if (path_.empty()) return llvm::Error::success();
  llvm::SmallString<0> text;
  llvm::raw_svector_ostream stream(text);
  llvm::timeTraceProfilerWrite(stream);
  return writeOutput(path_, std::string(text.str()));
}

namespace {

// Up to this size of the two inputs the memory budget (twice the inputs plus 100 MiB) has room for
// a heap of 2 MiB pages that keeps what it freed (the libraries of bench/real-updates.list, 4 MiB
// at most, peak at 20-60 MiB); larger pairs come near their budget (the generated 100,000-function
// program: 177 of 202 MiB) and keep giving pages back as they go.
constexpr uintmax_t kHugePageHeapInputs = 16ull << 20;
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHeapReserve = size_t(64) << 20;

// A diff touches about 25 times its inputs in heap, most of it once, and on a virtual machine a
// page fault costs 10-20 us: a fifth of the CPU time of a diff of a 2 MB library went into
// faulting 4 KiB pages. One heap (the decode threads share the main arena) grown in one step and
// advised as transparent huge pages takes a fault per 2 MiB instead (docs/differ.md, "Speed").
void useHugePageHeap(const BuildPair &pair) {
  std::error_code error;
  uintmax_t inputs = std::filesystem::file_size(pair.base, error);
  if (error) return;
  inputs += std::filesystem::file_size(pair.patched, error);
  if (error || inputs > kHugePageHeapInputs) return;
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, int(kHeapReserve / 2));  // large vectors come from the advised heap too
  mallopt(M_TRIM_THRESHOLD, int(2 * kHeapReserve));
  mallopt(M_TOP_PAD, int(kHeapReserve));
  auto begin = reinterpret_cast<uintptr_t>(sbrk(0));
  void *volatile grown = malloc(kHugePage);  // grows the heap by the pad (volatile: not elided)
  free(grown);                               // and the trim threshold keeps it
  auto end = reinterpret_cast<uintptr_t>(sbrk(0));
  uintptr_t first = (begin + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
  if (end > first) madvise(reinterpret_cast<void *>(first), end - first, MADV_HUGEPAGE);
}

}  // namespace

std::pair<llvm::Expected<Image>, llvm::Expected<Image>> readBoth(const BuildPair &pair) {
  useHugePageHeap(pair);
  ImageReadOptions patchedRead = pair.patchedRead;
  patchedRead.debugDir = pair.baseRead.debugDir;
  std::optional<llvm::Expected<Image>> other;
  bool traced = llvm::timeTraceProfilerEnabled();  // --time-trace: the reader's phases too
  std::thread reader([&] {
    if (traced) llvm::timeTraceProfilerInitialize(/*TimeTraceGranularity=*/0, "hotforge");
    other.emplace(readImage(pair.patched, patchedRead));
    if (traced) llvm::timeTraceProfilerFinishThread();
  });
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
