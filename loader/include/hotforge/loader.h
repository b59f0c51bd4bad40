// The reference loader: applies hotpatch images to a running Linux process with ptrace, and
// takes them back out. It proves that what the emitter writes works on live code. Like the
// runtime it builds on, it links neither LLVM nor fmt: the target-host tool (hotforge-target)
// is this loader and its commands alone.
//
// An apply is a transaction (docs/loader.md): prepareImage maps the image while only one thread
// is stopped, the caller writes a record of what will change (StateDirectory), commitImage stops
// every thread only to check and write the jumps, and the caller completes the record. A failure
// at any step leaves either the unpatched process or a patched one with a record revert can use.
// The steps are the applier core's (hotforge/applier.h); this loader is its ptrace backend.
#pragma once

#include "hotforge/applier.h"
#include "hotforge/core/outcome.h"
#include "hotforge/core/patch_format.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <vector>

namespace hotforge {

// Text from pieces, joined as fail() joins a message's (numbers in decimal; hexAddress() for addresses).
template <typename... Pieces> std::string concatenate(const Pieces &...pieces) { return fail(pieces...).message; }

class DeferredSignals;

struct ApplyOptions {
  std::chrono::milliseconds patience{2000};  // how long to retry while a thread is in the way
  // Strict consistency: no thread may have a changed function on its stack either (its program
  // counter in one, or a return address into one anywhere in the stack's words), so no old code
  // runs after the switch. The stack scan is conservative: a stale word can make it wait.
  bool strict = false;
  const DeferredSignals *signals = nullptr;  // a held SIGINT or SIGTERM ends the retries
};

// One jump of an applied image (the record keeps name, address, original and written bytes).
using AppliedRedirect = EntryChange;

// One image applied to a process: its record in the state directory.
struct AppliedImage {
  std::string unit, entry, baselinePath, baselineSha256;  // sha256 in hex
  uint32_t sequence = 0;
  uint64_t baseAddress = 0, imageAddress = 0, imageSize = 0;
  std::vector<AppliedRedirect> redirects;
  // False from before the first jump is written until every jump is in ("applying"): a record
  // left so was interrupted, and the jumps may be in, out, or some of each.
  bool complete = false;
  std::chrono::microseconds pause{0};  // how long every thread was stopped to check and write the jumps
  std::chrono::microseconds stopping{0};  // of which: until the last thread had stopped
  unsigned attempts = 0;               // stops until no thread was in the way
};

// Why prepareImage did not prepare an image. Callers decide on this, never on the message: an
// image whose baseline the process does not run fits another program of a release unit.
enum class PrepareFailure { None, BaselineNotMapped, Error };
struct Preparation {
  Outcome<AppliedImage> applied;
  PrepareFailure failure = PrepareFailure::None;
};

// Finds the image's baseline among the files mapped into `pid` (by SHA-256), checks the entries
// hold the bytes the image expects, and, with one thread stopped, maps the image near the base
// with its fixups applied, seals it and registers its unwind entries. The process's code is not
// changed; the result says what commitImage will write. Without `checkEntries` the entries may
// hold an earlier patch now (it is taken out before commitImage, which checks them).
Preparation prepareImage(int pid, const PatchImage &image, bool checkEntries = true);
// Stops every thread, checks the entries (expected bytes, no thread in the way, retrying for
// options.patience), writes the jumps and resumes. Fills pause and attempts.
Status commitImage(int pid, const PatchImage &image, AppliedImage &applied, const ApplyOptions &options);
// Takes a prepared image out again (unwind entries, mapping); for a failed apply, best effort.
void discardImage(int pid, const PatchImage &image, const AppliedImage &applied);

// Before a record is trusted to write into a process: every redirect lies in the mapped baseline,
// and the bytes it would restore are the mapped file's own bytes there.
Status checkRecord(int pid, const AppliedImage &applied);
// With every thread stopped, makes each redirect hold `original` (toOriginal) or `written`. An
// address that holds neither is refused before anything is written; one already there is left.
Status rewriteEntries(int pid, const std::vector<AppliedRedirect> &redirects, bool toOriginal);
// Whether each redirect's address holds its written bytes now: all, none, or some (nullopt).
Outcome<std::optional<bool>> entriesWritten(int pid, const std::vector<AppliedRedirect> &redirects);

// ---- the record of what is applied, per process ----
// When the process started (/proc/PID/stat field 22, clock ticks since boot): with the pid, it
// names one process, so a record is never applied to a later process that reuses the pid.
Outcome<uint64_t> processStartTime(int pid);

struct ProcessRecord {
  int pid = 0;
  uint64_t startTime = 0;
  std::vector<AppliedImage> applied;
};

// $HOTFORGE_STATE_DIR (default /tmp/hotforge-state), one PID.json per process. The directory is
// created 0700 when missing, and refused when it is a symbolic link, not a directory, not owned by
// the caller, or writable by group or others. Records are written 0600 through a unique temporary
// file (O_EXCL, O_NOFOLLOW), fsync and rename; read with O_NOFOLLOW as regular files of at most
// 16 MiB, and anything malformed is refused with one line. The directory is locked (flock) while
// the object lives, so commands on it run one at a time.
class StateDirectory {
public:
  static Outcome<StateDirectory> open(bool create);
  StateDirectory(StateDirectory &&other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }
  StateDirectory &operator=(StateDirectory &&) = delete;
  ~StateDirectory();

  const std::string &path() const { return path_; }
  std::string recordPath(int pid) const;
  Outcome<std::optional<ProcessRecord>> read(int pid) const;
  Status write(const ProcessRecord &record) const;  // a record with nothing applied is removed
  Status remove(int pid) const;
  std::vector<int> recordedPids() const;  // also removes temporary records killed commands left

private:
  StateDirectory(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

nlohmann::json toJson(const AppliedImage &applied);
Outcome<ProcessRecord> parseRecord(const nlohmann::json &json, const std::string &nameForMessages);

// The signals that end a command line tool (SIGINT, SIGTERM, SIGHUP, SIGQUIT), and SIGTSTP and
// SIGPIPE, held while this object lives: an apply or revert finishes or rolls back, then a held
// signal takes effect. interrupted() says whether one is waiting, so a retry loop can give up.
class DeferredSignals {
public:
  DeferredSignals();
  ~DeferredSignals();
  bool interrupted() const;

private:
  sigset_t previous_;
};

}  // namespace hotforge
