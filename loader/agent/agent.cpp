// libhotforge-agent.so: applies hotpatch units from inside the process it is preloaded into
// (LD_PRELOAD). It reads every unit in $HOTFORGE_UNIT_DIR, verifies it with the Ed25519 public key
// in $HOTFORGE_PUBKEY, and applies the images whose baseline this process runs: at start, and
// again on SIGUSR2. Then a unit that left the directory is reverted, and a higher sequence for
// the same baseline replaces a lower one (a lower one than any applied before is refused).
//
// It is how programs are patched where ptrace is not available, such as Arm64 programs under
// qemu-user. It links only the runtime (no LLVM), so it cross-compiles for Arm64.
//
// The work runs in a thread of the agent, woken by SIGUSR2, with every other thread parked while
// entries are written. HOTFORGE_AGENT_IN_SIGNAL=1 is for single-threaded programs where threads
// cannot be created (qemu-user on some kernels hangs in clone; its own helper threads also show
// in /proc/self/task, so no thread is parked): the work runs in the SIGUSR2 handler, which is
// only safe when the signal interrupts a system call, as in a program that waits for input.
#include "hotforge/linux_backend.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/files.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/patch_format.h"
#include "hotforge/core/process_maps.h"
#include "hotforge/core/unit_reader.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <ucontext.h>
#include <unistd.h>

namespace hotforge::agent {
namespace {

using Clock = std::chrono::steady_clock;

void say(const std::string &message) {
  std::string line = "hotforge-agent[" + std::to_string(getpid()) + "]: " + message + "\n";
  [[maybe_unused]] ssize_t written = write(STDERR_FILENO, line.data(), line.size());
}

// Where a thread was interrupted: its next instruction, its stack pointer, its id.
struct ThreadSpot {
  uint64_t pc = 0, sp = 0;
  int tid = 0;
};

ThreadSpot interruptedAt(const void *context) {
  const auto *uc = static_cast<const ucontext_t *>(context);
  int tid = int(syscall(SYS_gettid));
#if defined(__x86_64__)
  return {uint64_t(uc->uc_mcontext.gregs[REG_RIP]), uint64_t(uc->uc_mcontext.gregs[REG_RSP]), tid};
#elif defined(__aarch64__)
  return {uint64_t(uc->uc_mcontext.pc), uint64_t(uc->uc_mcontext.sp), tid};
#else
#error "the agent knows the program counter of x86-64 and AArch64 only"
#endif
}

int parkSignal() { return SIGRTMIN + 4; }

bool singleThreaded = false;  // HOTFORGE_AGENT_IN_SIGNAL=1: park no thread

// ---- stopping the other threads ----
// Every other thread is parked in a signal handler that records where it was interrupted, so the
// entries are checked and written while no thread runs in them: the ptrace loader's stop, done
// from inside. The handler only touches atomics and yields.
constexpr int kMaxThreads = 1024;
struct ParkingLot {
  std::array<std::atomic<uint64_t>, kMaxThreads> pcs{}, sps{};
  std::array<std::atomic<int>, kMaxThreads> tids{};
  std::atomic<int> taken{0}, arrived{0}, left{0};
  std::atomic<bool> released{false};
} lot;

void park(int, siginfo_t *, void *context) {
  int savedErrno = errno;
  int slot = lot.taken.fetch_add(1);
  if (slot < kMaxThreads) {
    ThreadSpot spot = interruptedAt(context);
    lot.pcs[slot].store(spot.pc);
    lot.sps[slot].store(spot.sp);
    lot.tids[slot].store(spot.tid);
  }
  lot.arrived.fetch_add(1);
  while (!lot.released.load()) syscall(SYS_sched_yield);
  lot.left.fetch_add(1);
  errno = savedErrno;
}

std::vector<int> otherThreads() {
  std::vector<int> tids;
  int self = int(syscall(SYS_gettid));
  if (DIR *dir = opendir("/proc/self/task")) {
    while (dirent *e = readdir(dir))
      if (e->d_name[0] != '.' && atoi(e->d_name) != self) tids.push_back(atoi(e->d_name));
    closedir(dir);
  }
  return tids;
}

// The applier core's backend for this process: memory read and written in place, threads parked
// in the lot, the image mapped with mmap, and libgcc's frame functions and imports found with
// dlsym as the dynamic loader finds them. `interrupted`: where the calling thread was interrupted
// in in-signal mode (pc 0 otherwise); it counts as a stopped thread.
class InProcessBackend final : public LinuxBackend {
public:
  explicit InProcessBackend(const ThreadSpot &interrupted) : interrupted_(interrupted), maps_(readMaps("/proc/self/maps")) {
    spots_.reserve(kMaxThreads + 1);  // no allocation once threads are parked (one may hold malloc's lock)
  }
  ~InProcessBackend() override { resumeAll(); }

  std::string processName() const override { return "this process"; }
  bool read(uint64_t address, std::span<uint8_t> out) override {
    std::memcpy(out.data(), reinterpret_cast<const void *>(address), out.size());
    return true;
  }
  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override {
    uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
    uint64_t begin = address & ~(page - 1), end = alignTo(address + bytes.size(), page);
    if (mprotect(reinterpret_cast<void *>(begin), end - begin, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
      return fail("cannot make the code at ", hexAddress(address), " writable: ", strerror(errno));
    std::memcpy(reinterpret_cast<void *>(address), bytes.data(), bytes.size());
    __builtin___clear_cache(reinterpret_cast<char *>(address), reinterpret_cast<char *>(address + bytes.size()));
    mprotect(reinterpret_cast<void *>(begin), end - begin, PROT_READ | PROT_EXEC);
    return success();
  }

  std::vector<int> threads() override { return singleThreaded ? std::vector<int>{} : otherThreads(); }
  Outcome<bool> requestStop(int tid) override {
    startStopping();
    if (syscall(SYS_tgkill, getpid(), tid, parkSignal()) != 0) return false;
    ++requested_;
    return true;
  }
  Status awaitStops() override {
    startStopping();
    auto deadline = Clock::now() + std::chrono::seconds(1);
    while (lot.arrived.load() < requested_)
      if (Clock::now() > deadline) return fail(requested_ - lot.arrived.load(), " thread(s) did not stop");
      else std::this_thread::yield();
    spots_.clear();
    if (interrupted_.pc) spots_.push_back({interrupted_.tid, interrupted_.pc, interrupted_.sp});
    for (int i = 0; i < std::min(lot.arrived.load(), kMaxThreads); ++i)
      spots_.push_back({lot.tids[i].load(), lot.pcs[i].load(), lot.sps[i].load()});
    return success();
  }
  std::span<const StoppedThread> stoppedThreads() override { return spots_; }
  // A parked thread's stack in place, up to the end of the stack's mapping (at most 1 MiB).
  std::span<const uint64_t> stackWords(const StoppedThread &thread) override {
    auto m = std::find_if(maps_.begin(), maps_.end(), [&](const Mapping &m) { return thread.sp >= m.start && thread.sp < m.end; });
    if (m == maps_.end() || m->permissions.find('r') == std::string::npos) return {};
    uint64_t begin = thread.sp & ~uint64_t(7), end = std::min(m->end, begin + (uint64_t(1) << 20));
    return {reinterpret_cast<const uint64_t *>(begin), size_t((end - begin) / 8)};
  }
  void resumeAll() override {
    lot.released.store(true);
    auto deadline = Clock::now() + std::chrono::seconds(1);
    while (lot.left.load() < lot.arrived.load() && Clock::now() < deadline) std::this_thread::yield();
    resumed_ = true;
  }

  // A new import of the image, found as the dynamic loader finds symbols for this process: in the
  // global scope, with the version the patched build binds.
  Outcome<uint64_t> resolveImport(const PatchImport &import) override {
    void *address = import.version.empty() ? dlsym(RTLD_DEFAULT, import.symbol.c_str())
                                           : dlvsym(RTLD_DEFAULT, import.symbol.c_str(), import.version.c_str());
    if (!address) return fail("the dynamic loader does not find it");
    return uint64_t(address);
  }

protected:
  std::vector<Mapping> maps() override { return readMaps("/proc/self/maps"); }
  Outcome<bool> mapAt(uint64_t address, uint64_t size) override {
    void *at = mmap(reinterpret_cast<void *>(address), size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (at == MAP_FAILED) return false;
    if (uint64_t(at) != address) munmap(at, size);  // a kernel that ignores MAP_FIXED_NOREPLACE put it elsewhere
    return uint64_t(at) == address;
  }
  Outcome<int> protect(uint64_t address, uint64_t size, Permissions permissions) override {
    int access = PROT_READ | (permissions.write ? PROT_WRITE : 0) | (permissions.execute ? PROT_EXEC : 0);
    if (mprotect(reinterpret_cast<void *>(address), size, access) != 0) return errno;
    if (permissions.execute)
      __builtin___clear_cache(reinterpret_cast<char *>(address), reinterpret_cast<char *>(address + size));
    return 0;
  }
  void unmap(uint64_t address, uint64_t size) override { munmap(reinterpret_cast<void *>(address), size); }
  Status writeMemory(uint64_t address, std::span<const uint8_t> bytes) override {
    std::memcpy(reinterpret_cast<void *>(address), bytes.data(), bytes.size());
    return success();
  }
  Outcome<uint64_t> frameFunction(const char *name) override { return uint64_t(dlsym(RTLD_DEFAULT, name)); }
  Status callFrameFunction(uint64_t function, uint64_t frame) override {
    reinterpret_cast<void (*)(const void *)>(function)(reinterpret_cast<const void *>(frame));
    return success();
  }

private:
  // The lot is reset when a stop begins, not when the threads are released: one that has not left
  // it yet would stay parked.
  void startStopping() {
    if (!resumed_) return;
    lot.taken = lot.arrived = lot.left = 0;
    lot.released = false;
    requested_ = 0;
    resumed_ = false;
  }

  ThreadSpot interrupted_;
  std::vector<Mapping> maps_;
  std::vector<StoppedThread> spots_;
  int requested_ = 0;
  bool resumed_ = true;
};

struct Applied {
  std::string unit, entry;
  std::array<uint8_t, 32> baseline{};
  uint32_t sequence = 0;
  std::vector<EntryChange> changes;
};

Outcome<Applied> apply(const std::string &unit, const std::string &entryName, const PatchImage &image,
                       const MappedBaseline &baseline, const ThreadSpot &interrupted) {
  InProcessBackend backend(interrupted);
  Outcome<PreparedImage> prepared = stageImage(backend, image, baseline.address, /*checkEntries=*/true);
  if (!prepared) return std::move(prepared).failure();
  StopReport report;
  if (Status written = writeEntries(backend, prepared->changes, EntryDirection::In, {}, report); !written) {
    backend.release(image, prepared->address, /*installed=*/true);
    return std::move(written).failure();
  }
  say("applied " + entryName + " of " + unit + " (sequence " + std::to_string(image.sequence) + "): " +
      std::to_string(prepared->changes.size()) + " functions redirected, image at " + hexAddress(prepared->address) +
      ", threads paused " + std::to_string(report.pause.count()) + " us");
  return Applied{unit, entryName, image.baseline.sha256, image.sequence, std::move(prepared->changes)};
}

// The image stays mapped after a revert: a thread may still be running in it.
Status revert(const Applied &a, const ThreadSpot &interrupted) {
  InProcessBackend backend(interrupted);
  StopReport report;
  if (Status done = writeEntries(backend, a.changes, EntryDirection::Out, {}, report); !done) return done;
  say("reverted " + a.entry + " of " + a.unit + " (sequence " + std::to_string(a.sequence) + "), threads paused " +
      std::to_string(report.pause.count()) + " us");
  return success();
}

// ---- units ----
struct Candidate {
  std::string unit, entry;
  PatchImage image;
  MappedBaseline baseline;
};

struct AgentState {
  std::mutex updating;
  std::vector<Applied> applied;
  std::map<std::array<uint8_t, 32>, uint32_t> highestApplied;  // per baseline, ever
};
// Built on first use: the agent's constructor may run before this file's static initializers.
AgentState &agentState() {
  static AgentState state;
  return state;
}

// Names in the unit directory; a file is opened only as RegularFile does (never a FIFO or device).
std::vector<std::string> unitFiles(const std::string &directory) {
  std::vector<std::string> files;
  if (DIR *dir = opendir(directory.c_str())) {
    while (dirent *e = readdir(dir))
      if (e->d_name[0] != '.') files.push_back(directory + "/" + e->d_name);
    closedir(dir);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The highest sequence per baseline this process runs, over every verified unit in the directory.
std::map<std::array<uint8_t, 32>, Candidate> wantedImages(const std::string &directory, const PublicKey &key) {
  std::map<std::array<uint8_t, 32>, Candidate> wanted;
  std::vector<Mapping> maps = readMaps("/proc/self/maps");
  for (const std::string &path : unitFiles(directory)) {
    // Only what starts like a unit is read whole; anything that is not a regular file, or larger
    // than a unit may be, is refused without reading it.
    Outcome<RegularFile> file = RegularFile::open(path, kMaxUnitFileSize);
    if (!file) {
      say("refused " + file.error());
      continue;
    }
    Outcome<std::vector<uint8_t>> head = file->read(sizeof(kUnitMagic));
    if (!head || !looksLikeUnit(*head)) continue;
    Outcome<std::vector<uint8_t>> bytes = file->read(file->size());
    if (!bytes) {
      say("refused " + bytes.error());
      continue;
    }
    Outcome<VerifiedUnit> unit = verifyUnit(*bytes, key);
    if (!unit) {
      say("refused " + path + ": " + unit.error());
      continue;
    }
    for (UnitEntry &entry : unit->entries) {
      Outcome<PatchImage> image = readPatchImage(entry.bytes);
      if (!image) {
        say("refused " + path + ": " + entry.name + ": " + image.error());
        continue;
      }
      if (image->format != hostFormat() || image->machine != hostMachine()) continue;
      Outcome<MappedBaseline> baseline = findBaseline(maps, *image, "this process");
      if (!baseline) continue;  // an image for another program of the release
      auto known = wanted.find(image->baseline.sha256);
      if (known == wanted.end() || known->second.image.sequence < image->sequence)
        wanted[image->baseline.sha256] = Candidate{path, entry.name, std::move(*image), *baseline};
    }
  }
  return wanted;
}

void update(const ThreadSpot &interrupted) {
  auto &[updating, applied, highestApplied] = agentState();
  std::lock_guard<std::mutex> hold(updating);
  const char *directory = getenv("HOTFORGE_UNIT_DIR"), *keyFile = getenv("HOTFORGE_PUBKEY");
  if (!keyFile) return say("HOTFORGE_PUBKEY is not set: no unit can be verified, none is applied");
  Outcome<PublicKey> key = readPublicKeyFile(keyFile);
  if (!key) return say(key.error());
  std::map<std::array<uint8_t, 32>, Candidate> wanted = wantedImages(directory, *key);
  // Reverts first: units that left the directory, and images a higher sequence replaces.
  for (auto it = applied.begin(); it != applied.end();) {
    auto w = wanted.find(it->baseline);
    bool keep = w != wanted.end() && w->second.unit == it->unit && w->second.entry == it->entry &&
                w->second.image.sequence == it->sequence;
    if (keep) {
      ++it;
      continue;
    }
    if (Status reverted = revert(*it, interrupted); !reverted) {
      say("cannot revert " + it->entry + ": " + reverted.error());
      ++it;
      continue;
    }
    it = applied.erase(it);
  }
  for (auto &[baseline, c] : wanted) {
    bool present = std::any_of(applied.begin(), applied.end(), [&](const Applied &a) { return a.baseline == baseline; });
    if (present) continue;
    auto highest = highestApplied.find(baseline);
    std::optional<uint32_t> before;
    if (highest != highestApplied.end()) before = highest->second;
    if (sequenceStep(std::nullopt, before, c.image.sequence) == SequenceStep::LowerThanBefore) {
      say("refused " + c.entry + " of " + c.unit + ": sequence " + std::to_string(c.image.sequence) +
          " is lower than sequence " + std::to_string(highest->second) + " applied before");
      continue;
    }
    Outcome<Applied> done = apply(c.unit, c.entry, c.image, c.baseline, interrupted);
    if (!done) {
      say("cannot apply " + c.entry + " of " + c.unit + ": " + done.error());
      continue;
    }
    highestApplied[baseline] = std::max(highestApplied[baseline], c.image.sequence);
    applied.push_back(std::move(*done));
  }
}

int wakeUp[2] = {-1, -1};  // SIGUSR2 -> the agent's thread

// In-signal mode: a SIGUSR2 that comes while an update runs (the one at start, or another
// signal's) asks for one more round instead of starting a second update on the same stack.
std::atomic<bool> updating{false}, requested{false};

void updateInSignal(const ThreadSpot &interrupted) {
  requested = true;
  while (requested && !updating.exchange(true)) {
    while (requested.exchange(false)) update(interrupted);
    updating = false;
  }
}

void onUpdateSignal(int, siginfo_t *, void *context) {
  int savedErrno = errno;
  if (singleThreaded) {
    updateInSignal(interruptedAt(context));
  } else if (wakeUp[1] >= 0) {
    [[maybe_unused]] ssize_t written = write(wakeUp[1], "u", 1);
  }
  errno = savedErrno;
}

void installHandler(int signal, void (*handler)(int, siginfo_t *, void *)) {
  struct sigaction action {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(signal, &action, nullptr);
}

__attribute__((constructor)) void start() {
  if (!getenv("HOTFORGE_UNIT_DIR")) return;
  // The signals first: a SIGUSR2 at any moment from here on asks for an update, never kills.
  const char *inSignal = getenv("HOTFORGE_AGENT_IN_SIGNAL");
  singleThreaded = inSignal && std::string(inSignal) == "1";
  if (!singleThreaded && pipe2(wakeUp, O_CLOEXEC | O_NONBLOCK) != 0) wakeUp[0] = wakeUp[1] = -1;
  if (!singleThreaded) installHandler(parkSignal(), park);
  installHandler(SIGUSR2, onUpdateSignal);
  if (singleThreaded) return updateInSignal({});
  update({});
  if (wakeUp[0] < 0) return say("cannot make the agent's pipe: SIGUSR2 is ignored");
  std::thread([] {
    for (char bytes[64];;) {
      pollfd wait{wakeUp[0], POLLIN, 0};
      if (poll(&wait, 1, -1) < 0 && errno != EINTR) return;
      ssize_t got = read(wakeUp[0], bytes, sizeof bytes);  // signals that came together: one update
      if (got > 0) update({});
      else if (got < 0 && errno != EINTR && errno != EAGAIN) return;
    }
  }).detach();
}

}  // namespace
}  // namespace hotforge::agent
