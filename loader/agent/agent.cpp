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

class StoppedWorld {
public:
  ~StoppedWorld() {
    lot.released.store(true);
    auto deadline = Clock::now() + std::chrono::seconds(1);
    while (lot.left.load() < lot.arrived.load() && Clock::now() < deadline) std::this_thread::yield();
  }

  // `interrupted`: where the calling thread was interrupted in in-signal mode, or pc 0.
  Status stop(const ThreadSpot &interrupted) {
    lot.taken = lot.arrived = lot.left = 0;
    lot.released = false;
    spots_.clear();
    spots_.reserve(kMaxThreads + 1);  // no allocation once threads are parked (one may hold malloc's lock)
    if (interrupted.pc) spots_.push_back(interrupted);
    if (singleThreaded) return success();
    std::vector<int> signalled;
    // Threads may start meanwhile: signal until the set is stable.
    for (int round = 0; round < 16; ++round) {
      bool added = false;
      for (int tid : otherThreads()) {
        if (std::count(signalled.begin(), signalled.end(), tid)) continue;
        if (syscall(SYS_tgkill, getpid(), tid, parkSignal()) == 0) signalled.push_back(tid), added = true;
      }
      if (!added) break;
    }
    auto deadline = Clock::now() + std::chrono::seconds(1);
    while (lot.arrived.load() < int(signalled.size()))
      if (Clock::now() > deadline) return fail(signalled.size() - lot.arrived.load(), " thread(s) did not stop");
      else std::this_thread::yield();
    for (int i = 0; i < std::min(lot.arrived.load(), kMaxThreads); ++i)
      spots_.push_back({lot.pcs[i].load(), lot.sps[i].load(), lot.tids[i].load()});
    return success();
  }

  const std::vector<ThreadSpot> &interruptedAt() const { return spots_; }

private:
  std::vector<ThreadSpot> spots_;
};

// ---- writing code ----
Status writeCode(uint64_t address, const std::vector<uint8_t> &bytes) {
  uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  uint64_t begin = address & ~(page - 1), end = alignTo(address + bytes.size(), page);
  if (mprotect(reinterpret_cast<void *>(begin), end - begin, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
    return fail("cannot make the code at ", hexAddress(address), " writable: ", strerror(errno));
  std::memcpy(reinterpret_cast<void *>(address), bytes.data(), bytes.size());
  __builtin___clear_cache(reinterpret_cast<char *>(address), reinterpret_cast<char *>(address + bytes.size()));
  mprotect(reinterpret_cast<void *>(begin), end - begin, PROT_READ | PROT_EXEC);
  return success();
}

struct Written {
  uint64_t address = 0;
  std::vector<uint8_t> original, patched;
  PatchRedirect redirect;   // where no thread may be when the bytes change
  uint64_t baseAddress = 0;
};

struct Applied {
  std::string unit, entry;
  std::array<uint8_t, 32> baseline{};
  uint32_t sequence = 0;
  std::vector<Written> writes;
};

// Patched code that throws needs its unwind entries known to the unwinder, and the image is not
// an object dl_iterate_phdr reports: its .eh_frame is registered with libgcc's __register_frame,
// as JIT compilers do, and deregistered if the image is unmapped again. Without libgcc_s (plain
// C) nothing can throw through it.
void announceUnwindEntries(const PatchImage &image, uint64_t at, const char *libgccFunction) {
  using FrameFunction = void (*)(const void *);
  auto function = reinterpret_cast<FrameFunction>(dlsym(RTLD_DEFAULT, libgccFunction));
  for (const PatchSection &s : image.sections)
    if (s.name == ".eh_frame" && function) function(reinterpret_cast<const void *>(at + s.rva));
}

// A new import of the image, found as the dynamic loader finds symbols for this process: in the
// global scope, with the version the patched build binds.
Outcome<uint64_t> dynamicSymbol(const PatchImport &import) {
  void *address = import.version.empty() ? dlsym(RTLD_DEFAULT, import.symbol.c_str())
                                         : dlvsym(RTLD_DEFAULT, import.symbol.c_str(), import.version.c_str());
  if (!address) return fail("the dynamic loader does not find it");
  return uint64_t(address);
}

// Maps the image near the base with its fixups applied and each section's access set.
Outcome<uint64_t> mapImage(const PatchImage &image, uint64_t base, std::span<const uint64_t> imports) {
  uint64_t size = alignTo(image.imageSize, 0x10000);
  for (uint64_t hint : freeAddressesNear(readMaps("/proc/self/maps"), base, size, machineTarget(image.machine).patchReach())) {
    void *at = mmap(reinterpret_cast<void *>(hint), size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (at == MAP_FAILED) continue;
    if (uint64_t(at) != hint) {  // a kernel that ignores MAP_FIXED_NOREPLACE put it elsewhere
      munmap(at, size);
      continue;
    }
    std::vector<uint8_t> memory = layOut(image);
    if (Status fixed = applyFixups(image, base, hint, imports, memory); !fixed) {
      munmap(at, size);
      return std::move(fixed).failure();
    }
    std::memcpy(at, memory.data(), memory.size());
    mprotect(at, size, PROT_READ);
    for (const PatchSection &s : image.sections) {
      uint64_t begin = hint + (s.rva & ~uint64_t(0xfff)), end = hint + alignTo(uint64_t(s.rva) + s.memorySize, 0x1000);
      int access = PROT_READ | (s.permissions.write ? PROT_WRITE : 0) | (s.permissions.execute ? PROT_EXEC : 0);
      if (end > begin) mprotect(reinterpret_cast<void *>(begin), end - begin, access);
      if (s.permissions.execute) __builtin___clear_cache(reinterpret_cast<char *>(begin), reinterpret_cast<char *>(end));
    }
    return hint;
  }
  return fail("found no free memory within reach of the base for the patch");
}

// A parked thread's stack in place, from its stack pointer to the end of the stack's mapping (at
// most 1 MiB): where return addresses are, for quiescent redirects. `maps` is empty when none is.
std::span<const uint64_t> stackOf(const std::vector<Mapping> &maps, uint64_t stackPointer) {
  auto m = std::find_if(maps.begin(), maps.end(), [&](const Mapping &m) { return stackPointer >= m.start && stackPointer < m.end; });
  if (m == maps.end() || m->permissions.find('r') == std::string::npos) return {};
  uint64_t begin = stackPointer & ~uint64_t(7), end = std::min(m->end, begin + (uint64_t(1) << 20));
  return {reinterpret_cast<const uint64_t *>(begin), size_t((end - begin) / 8)};
}

constexpr auto kPatience = std::chrono::seconds(2);

// Writes `writes` (each over bytes that must be `expected` now) with every other thread parked
// outside them; retries while a thread is in the way.
Status writeWhileStopped(const std::vector<Written> &writes, const ThreadSpot &interrupted, bool restoring,
                         std::chrono::microseconds &pause) {
  auto deadline = Clock::now() + kPatience;
  bool stacksMatter = std::any_of(writes.begin(), writes.end(), [](const Written &w) { return w.redirect.quiescent; });
  std::vector<Mapping> maps = stacksMatter ? readMaps("/proc/self/maps") : std::vector<Mapping>{};
  for (unsigned attempt = 1;; ++attempt) {
    std::string busy;
    {
      auto stoppedAt = Clock::now();
      StoppedWorld world;
      if (Status stopped = world.stop(interrupted); !stopped) return stopped;
      for (const Written &w : writes) {
        const std::vector<uint8_t> &now = restoring ? w.patched : w.original;
        if (std::memcmp(reinterpret_cast<const void *>(w.address), now.data(), now.size()) != 0)
          return fail("the bytes at ", hexAddress(w.address), " are not what this patch expects: another patch or build");
        for (const ThreadSpot &t : world.interruptedAt())
          if (busy.empty())
            if (std::string why = threadInTheWay(w.redirect, w.baseAddress, t.pc, stackOf(maps, t.sp), false); !why.empty())
              busy = "thread " + std::to_string(t.tid) + " " + why;
      }
      if (busy.empty()) {
        for (const Written &w : writes)
          if (Status written = writeCode(w.address, restoring ? w.original : w.patched); !written) return written;
        pause = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - stoppedAt);
        return success();
      }
    }
    if (Clock::now() > deadline) return fail("gave up after ", attempt, " attempts: ", busy);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Outcome<Applied> apply(const std::string &unit, const std::string &entryName, const PatchImage &image,
                       const MappedBaseline &baseline, const ThreadSpot &interrupted) {
  for (const PatchRedirect &r : image.redirects)
    if (std::memcmp(reinterpret_cast<const void *>(baseline.address + r.baseRva - r.paddingBefore), r.expected.data(),
                    r.expected.size()) != 0)
      return fail(r.name.value_or("a function"), " does not hold the bytes this patch expects: another patch or build");
  Outcome<std::vector<uint64_t>> imports = resolveImports(image, dynamicSymbol);
  if (!imports) return std::move(imports).failure();
  Outcome<uint64_t> at = mapImage(image, baseline.address, *imports);
  if (!at) return std::move(at).failure();
  std::vector<Written> writes;
  Status ready = success();
  for (const PatchRedirect &r : image.redirects) {
    Outcome<EntryWrite> w = entryWrite(r, image.machine, baseline.address, *at);
    if (!w) {
      ready = std::move(w).failure();
      break;
    }
    const auto *from = reinterpret_cast<const uint8_t *>(w->address);
    writes.push_back({w->address, std::vector<uint8_t>(from, from + w->bytes.size()), w->bytes, r, baseline.address});
  }
  // Registered before the jumps go in: a thread may throw through the new code at once.
  if (ready) announceUnwindEntries(image, *at, "__register_frame");
  std::chrono::microseconds pause{0};
  if (ready) ready = writeWhileStopped(writes, interrupted, false, pause);
  if (!ready) {
    announceUnwindEntries(image, *at, "__deregister_frame");
    munmap(reinterpret_cast<void *>(*at), alignTo(image.imageSize, 0x10000));
    return std::move(ready).failure();
  }
  say("applied " + entryName + " of " + unit + " (sequence " + std::to_string(image.sequence) + "): " +
      std::to_string(writes.size()) + " functions redirected, image at " + hexAddress(*at) + ", threads paused " +
      std::to_string(pause.count()) + " us");
  return Applied{unit, entryName, image.baseline.sha256, image.sequence, std::move(writes)};
}

// The image stays mapped after a revert: a thread may still be running in it.
Status revert(const Applied &a, const ThreadSpot &interrupted) {
  std::chrono::microseconds pause{0};
  if (Status done = writeWhileStopped(a.writes, interrupted, true, pause); !done) return done;
  say("reverted " + a.entry + " of " + a.unit + " (sequence " + std::to_string(a.sequence) + "), threads paused " +
      std::to_string(pause.count()) + " us");
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
    if (highest != highestApplied.end() && c.image.sequence < highest->second) {
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
