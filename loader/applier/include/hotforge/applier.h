// The applier core: the steps every loader takes to put an image into running code and take it
// out again, written once against a narrow backend. The ptrace loader (another process), the
// agent (its own process) and the PE appliers (a DLL they run) are backends of it: they read and
// write the target's memory, stop and list its threads, reserve memory and install an image, and
// resolve imports; the core checks the expected bytes, lays the image out with its fixups, works
// out each entry's jump, stops every thread until the set is stable, waits while a thread is in
// the way, writes or restores the jumps, and decides the sequence rule. Standard library and the
// runtime only (docs/loader.md, "The applier core").
#pragma once

#include "hotforge/core/outcome.h"
#include "hotforge/core/patch_format.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hotforge {

// A thread stopped by a backend: where it is, for the check of who is in the way.
struct StoppedThread {
  int tid = 0;
  uint64_t pc = 0, sp = 0;
};

class ApplierBackend {
public:
  virtual ~ApplierBackend() = default;

  // "process 4242", "this process": for messages.
  virtual std::string processName() const = 0;
  // The target's memory; a read that fails leaves `out` as it was and returns false.
  virtual bool read(uint64_t address, std::span<uint8_t> out) = 0;
  // Writes over code (one write; the instruction cache is the backend's).
  virtual Status writeCode(uint64_t address, std::span<const uint8_t> bytes) = 0;

  // Threads. The applier's own thread is never listed. requestStop asks a thread to stop and
  // returns false when it is gone; awaitStops waits until every requested thread has stopped.
  // stoppedThreads is valid until resumeAll (which lets them all run again).
  virtual std::vector<int> threads() = 0;
  virtual Outcome<bool> requestStop(int tid) = 0;
  virtual Status awaitStops() = 0;
  virtual std::span<const StoppedThread> stoppedThreads() = 0;
  // A stopped thread's stack words, from its stack pointer to the end of its mapping (at most 1
  // MiB); asked only for strict consistency and quiescent redirects.
  virtual std::span<const uint64_t> stackWords(const StoppedThread &thread) = 0;
  virtual void resumeAll() = 0;
  // Lets every thread go for good once the entries are written or refused (default: resumeAll).
  virtual void letGo() { resumeAll(); }
  // A request to stop retrying (a held SIGINT): the apply gives up while threads are in the way.
  virtual bool interrupted() const { return false; }

  // The image's memory: `size` bytes within `reach` of `baseAddress`; the laid-out image
  // (fixups applied) copied there, each section given its access and its unwind entries
  // registered; and all of it undone (best effort).
  virtual Outcome<uint64_t> reserveNear(uint64_t baseAddress, uint64_t size, uint64_t reach) = 0;
  virtual Status install(const PatchImage &image, uint64_t address, std::span<const uint8_t> laidOut) = 0;
  virtual void release(const PatchImage &image, uint64_t address, bool installed) = 0;
  // Where a new import of the image is, as the target resolves its own.
  virtual Outcome<uint64_t> resolveImport(const PatchImport &import) = 0;
};

// One entry's jump: the bytes at `address` before (`original`, the base's) and after (`written`).
// `redirect` is the image's record of it when the applier has the image (not when it reverts from
// a record): it says which threads are in the way (threadInTheWay); without it, a thread inside the
// jump's bytes is.
struct EntryChange {
  std::string name;
  uint64_t address = 0;
  std::vector<uint8_t> original, written;
  std::optional<PatchRedirect> redirect;
  uint64_t baseAddress = 0;
};

// An image mapped into the target, not yet reachable: its address and the jumps to write.
struct PreparedImage {
  uint64_t address = 0, size = 0;
  std::vector<EntryChange> changes;
};

// The memory an image takes in the target (its size rounded up to 64 KiB).
uint64_t mappedImageSize(const PatchImage &image);

// Whether every redirect's expected bytes (padding included) are at `baseAddress` in the target.
Status checkExpectedBytes(ApplierBackend &backend, const PatchImage &image, uint64_t baseAddress);

// Checks the expected bytes (unless `checkEntries` is false: the entries may hold an earlier
// patch now, taken out before the jumps are written), resolves the image's imports, reserves
// memory near the base, lays the image out with its fixups, works out every jump and installs
// it. Nothing is left mapped on failure; no code of the target changes.
Outcome<PreparedImage> stageImage(ApplierBackend &backend, const PatchImage &image, uint64_t baseAddress,
                                    bool checkEntries);

// Which way writeEntries goes: the jumps in, or the original bytes back.
enum class EntryDirection { In, Out };

struct StopPolicy {
  std::chrono::milliseconds patience{2000};  // how long to retry while a thread is in the way
  bool strict = false;                       // no thread may have a changed function on its stack
};

struct StopReport {
  unsigned attempts = 0;                 // stops until no thread was in the way
  std::chrono::microseconds pause{0};    // how long every thread was stopped the last time
  std::chrono::microseconds stopping{0};  // of which: until the last thread had stopped
};

// Stops every thread until the set is stable (threads that start meanwhile are stopped too).
Status stopAllThreads(ApplierBackend &backend);

// Stops every thread, checks each entry holds the bytes it should (`original` going in,
// `written` going out; one already at its destination is left), waits while a thread is in the
// way (resuming them for 5 ms between attempts, for policy.patience or until interrupted), then
// writes. A failed write puts back what was written. The threads are let go (letGo) on return.
Status writeEntries(ApplierBackend &backend, std::span<const EntryChange> changes, EntryDirection direction,
                    const StopPolicy &policy, StopReport &report);

// Whether each entry holds its written bytes now: all (true), none (false), or some (nullopt).
std::optional<bool> entriesWritten(ApplierBackend &backend, std::span<const EntryChange> changes);

// The sequence rule, per baseline: a higher sequence replaces the applied one; one not higher
// than the applied one, or lower than one applied before (the agent remembers), is refused.
enum class SequenceStep { Apply, Replace, NotNewer, LowerThanBefore };
SequenceStep sequenceStep(std::optional<uint32_t> applied, std::optional<uint32_t> highestBefore, uint32_t offered);

}  // namespace hotforge
