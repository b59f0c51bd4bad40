// Applying a hotpatch image to a running x86-64 Linux process from the outside, with ptrace. An
// mmap is run inside one stopped thread to get memory near the base, the image is written there
// with its fixups applied for that address; then every thread is stopped only to check the entries
// and write the jumps. /proc/PID/mem writes reach read-only code pages of a traced process. The
// steps themselves are the applier core's (hotforge/applier.h); this file is its ptrace backend.
//
// Nothing the target should see is lost: a signal that arrives while we hold a thread is kept and
// sent again when we let go, and a thread whose registers we change gets them back on every path.
#include "hotforge/loader.h"

#include "hotforge/linux_backend.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/files.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/process_maps.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <map>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace hotforge {
namespace {

using Clock = std::chrono::steady_clock;

#if defined(__x86_64__)

std::vector<int> threadsOf(int pid) {
  std::vector<int> tids;
  if (DIR *dir = opendir(("/proc/" + std::to_string(pid) + "/task").c_str())) {
    while (dirent *e = readdir(dir))
      if (e->d_name[0] != '.') tids.push_back(atoi(e->d_name));
    closedir(dir);
  }
  std::sort(tids.begin(), tids.end());
  return tids;
}

// A fault the thread caused itself: it happens again when the thread runs on, so it is not sent.
bool selfInflicted(const siginfo_t &info) {
  return info.si_code > 0 && (info.si_signo == SIGSEGV || info.si_signo == SIGBUS || info.si_signo == SIGILL ||
                              info.si_signo == SIGFPE || info.si_signo == SIGTRAP);
}

// Threads of a process we trace (PTRACE_SEIZE: they run until interrupted). Signals that reach a
// traced thread stop it for us first (signal-delivery-stop); those are held and sent again after
// the threads are detached, so none is lost.
class TracedProcess {
public:
  explicit TracedProcess(int pid) : pid_(pid) {}
  TracedProcess(const TracedProcess &) = delete;
  ~TracedProcess() { release(); }

  // Seizes `tid` (the process keeps running). False when the thread is gone.
  Outcome<bool> seize(int tid) {
    if (find(tid)) return true;
    if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
      if (errno == ESRCH) return false;  // exited meanwhile
      return fail("cannot trace thread ", tid, " of process ", pid_, ": ", strerror(errno));
    }
    threads_.push_back(Thread{tid, false, false, {}});
    return true;
  }
  // Asks a thread to stop (seized first when new); false when it is gone.
  Outcome<bool> interrupt(int tid) {
    Outcome<bool> seized = seize(tid);
    if (!seized || !*seized) return seized;
    Thread *t = find(tid);
    if (!t->stopped && !t->gone) ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    return !t->gone;
  }
  // Waits for every interrupted thread's stop.
  Status awaitStops() {
    for (Thread &t : threads_)
      if (!t.stopped && !t.gone)
        if (Status s = waitForStop(t); !s) return std::move(s).failure();
    if (std::none_of(threads_.begin(), threads_.end(), [](const Thread &t) { return !t.gone; }))
      return fail("process ", pid_, " has vanished");
    return success();
  }
  Status stop(int tid) {
    Thread *t = find(tid);
    if (!t) return fail("thread ", tid, " is not traced");
    if (!t->stopped) ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    if (Status s = waitForStop(*t); !s) return std::move(s).failure();
    if (t->gone) return fail("thread ", tid, " of process ", pid_, " has exited");
    return success();
  }
  void resumeAll() {
    for (Thread &t : threads_)
      if (t.stopped && !t.gone && ptrace(PTRACE_CONT, t.tid, nullptr, nullptr) == 0) t.stopped = false;
  }

  // Lets every thread go (only a stopped tracee can be detached), then sends the held signals.
  void release() {
    for (Thread &t : threads_) {
      if (t.gone) continue;
      if (!t.stopped) {
        ptrace(PTRACE_INTERRUPT, t.tid, nullptr, nullptr);
        static_cast<void>(waitForStop(t));  // a thread that is gone needs no detach
      }
      if (!t.gone) ptrace(PTRACE_DETACH, t.tid, nullptr, nullptr);
    }
    for (Thread &t : threads_)
      for (const siginfo_t &info : t.held)
        if (info.si_code == SI_TKILL) syscall(SYS_tgkill, pid_, t.tid, info.si_signo);
        else kill(pid_, info.si_signo);
    threads_.clear();
  }

  // The stopped threads' ids.
  std::vector<int> stopped() const {
    std::vector<int> out;
    for (const Thread &t : threads_)
      if (t.stopped && !t.gone) out.push_back(t.tid);
    return out;
  }

  // Resumes a stopped thread with `request` (PTRACE_SINGLESTEP, PTRACE_CONT) until it stops with
  // a signal `ours` accepts; other signals are held and the request repeated. A fault the thread
  // causes itself that `ours` refuses is an error.
  template <typename Ours> Outcome<siginfo_t> runUntil(int tid, __ptrace_request request, Ours ours) {
    Thread *t = find(tid);
    for (int round = 0; round < 1000; ++round) {
      if (ptrace(request, tid, nullptr, nullptr) != 0)
        return fail("cannot resume thread ", tid, ": ", strerror(errno));
      t->stopped = false;
      int status = 0;
      if (Status s = waitOnce(*t, status); !s) return std::move(s).failure();
      if (t->gone) return fail("thread ", tid, " of process ", pid_, " exited");
      if (status >> 16) continue;  // an event stop (the process was stopped by a signal and continued)
      siginfo_t info{};
      if (ptrace(PTRACE_GETSIGINFO, tid, nullptr, &info) != 0) info.si_signo = WSTOPSIG(status);
      if (ours(info)) return info;
      if (selfInflicted(info))
        return fail("thread ", tid, " faulted (signal ", info.si_signo, ") while running injected code");
      t->held.push_back(info);
    }
    return fail("thread ", tid, " of process ", pid_, " keeps receiving signals");
  }

private:
  struct Thread {
    int tid = 0;
    bool stopped = false, gone = false;
    std::vector<siginfo_t> held;  // signals to send again when we let go
  };

  Thread *find(int tid) {
    auto it = std::find_if(threads_.begin(), threads_.end(), [&](const Thread &t) { return t.tid == tid; });
    return it == threads_.end() ? nullptr : &*it;
  }

  Status waitOnce(Thread &t, int &status) {
    while (waitpid(t.tid, &status, __WALL) != t.tid)
      if (errno != EINTR) return fail("waiting for thread ", t.tid, " of process ", pid_, ": ", strerror(errno));
    if (WIFEXITED(status) || WIFSIGNALED(status)) t.gone = true;
    else if (WIFSTOPPED(status)) t.stopped = true;
    return success();
  }

  // After PTRACE_INTERRUPT: waits for the interrupt's stop. A signal for the program that stops the
  // thread first is held, and the thread resumed so that the interrupt stop comes.
  Status waitForStop(Thread &t) {
    for (;;) {
      int status = 0;
      if (Status s = waitOnce(t, status); !s) return std::move(s).failure();
      if (t.gone || !WIFSTOPPED(status) || (status >> 16) == PTRACE_EVENT_STOP) return success();
      siginfo_t info{};
      if (ptrace(PTRACE_GETSIGINFO, t.tid, nullptr, &info) != 0) info.si_signo = WSTOPSIG(status);
      if (!selfInflicted(info)) t.held.push_back(info);
      if (ptrace(PTRACE_CONT, t.tid, nullptr, nullptr) == 0) t.stopped = false;
    }
  }

  int pid_;
  std::vector<Thread> threads_;
};

class ProcessMemory {
public:
  explicit ProcessMemory(int pid) : fd_(open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDWR | O_CLOEXEC)) {}
  ProcessMemory(ProcessMemory &&other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ProcessMemory(const ProcessMemory &) = delete;
  ~ProcessMemory() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool read(uint64_t address, void *out, size_t size) const {
    return pread(fd_, out, size, off_t(address)) == ssize_t(size);
  }
  std::vector<uint8_t> read(uint64_t address, size_t size) const {
    std::vector<uint8_t> bytes(size);
    if (!read(address, bytes.data(), size)) bytes.clear();
    return bytes;
  }
  bool write(uint64_t address, const void *data, size_t size) const {
    return pwrite(fd_, data, size, off_t(address)) == ssize_t(size);
  }

private:
  int fd_;
};

Outcome<ProcessMemory> openMemory(int pid) {
  ProcessMemory memory(pid);
  if (!memory.ok()) return fail("cannot open the memory of process ", pid, ": ", strerror(errno));
  return memory;
}

// The registers of a stopped thread, put back when this object goes, on every path.
class SavedRegisters {
public:
  explicit SavedRegisters(int tid) : tid_(tid) { ok_ = ptrace(PTRACE_GETREGS, tid, nullptr, &saved_) == 0; }
  ~SavedRegisters() {
    if (ok_) ptrace(PTRACE_SETREGS, tid_, nullptr, &saved_);
  }
  bool ok() const { return ok_; }
  const user_regs_struct &saved() const { return saved_; }

private:
  int tid_;
  bool ok_ = false;
  user_regs_struct saved_{};
};

// A `syscall` instruction to execute: where the thread sleeps in one, or one in libc's code.
uint64_t syscallSite(const ProcessMemory &memory, const std::vector<Mapping> &maps, uint64_t pc) {
  uint8_t pair[2] = {};
  if (memory.read(pc - 2, pair, 2) && pair[0] == 0x0f && pair[1] == 0x05) return pc - 2;
  for (const Mapping &m : maps) {
    if (m.permissions.find('x') == std::string::npos || m.path.find("libc") == std::string::npos) continue;
    std::vector<uint8_t> code = memory.read(m.start, std::min<uint64_t>(m.end - m.start, 1 << 20));
    for (size_t i = 0; i + 1 < code.size(); ++i)
      if (code[i] == 0x0f && code[i + 1] == 0x05) return m.start + i;
  }
  return 0;
}

// Work inside one stopped thread of the target: system calls and calls of its functions.
class Injector {
public:
  Injector(TracedProcess &process, int tid, const ProcessMemory &memory, const std::vector<Mapping> &maps)
      : process_(process), tid_(tid), memory_(memory), maps_(maps) {}

  Outcome<int64_t> syscall(long number, std::array<uint64_t, 6> args) {
    SavedRegisters saved(tid_);
    if (!saved.ok()) return fail("cannot read the registers of thread ", tid_, ": ", strerror(errno));
    uint64_t site = syscallSite(memory_, maps_, saved.saved().rip);
    if (!site) return fail("found no syscall instruction to run mmap in the target");
    user_regs_struct regs = saved.saved();
    regs.rax = uint64_t(number);
    regs.orig_rax = uint64_t(-1);  // not a system call to restart
    regs.rdi = args[0], regs.rsi = args[1], regs.rdx = args[2], regs.r10 = args[3], regs.r8 = args[4], regs.r9 = args[5];
    regs.rip = site;
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &regs) != 0)
      return fail("cannot set the registers of thread ", tid_, ": ", strerror(errno));
    Outcome<siginfo_t> stopped = process_.runUntil(tid_, PTRACE_SINGLESTEP, [&](const siginfo_t &info) {
      return info.si_signo == SIGTRAP && ptrace(PTRACE_GETREGS, tid_, nullptr, &regs) == 0 && regs.rip == site + 2;
    });
    if (!stopped) return std::move(stopped).failure();
    return int64_t(regs.rax);
  }

  // Calls `function(argument)` and returns its result. The call returns to address 0, and the
  // fault that follows hands the thread back to us.
  Outcome<uint64_t> call(uint64_t function, uint64_t argument) {
    SavedRegisters saved(tid_);
    if (!saved.ok()) return fail("cannot read the registers of thread ", tid_, ": ", strerror(errno));
    user_regs_struct regs = saved.saved();
    regs.rsp = ((regs.rsp - 512) & ~uint64_t(15)) - 8;  // below the red zone; aligned as after a call
    uint64_t returnAddress = 0;
    if (!memory_.write(regs.rsp, &returnAddress, 8)) return fail("cannot write the stack of thread ", tid_);
    regs.rip = function;
    regs.rdi = argument;
    regs.rax = 0;
    regs.orig_rax = uint64_t(-1);  // not a system call to restart
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &regs) != 0)
      return fail("cannot set the registers of thread ", tid_, ": ", strerror(errno));
    bool returned = false;
    Outcome<siginfo_t> stopped = process_.runUntil(tid_, PTRACE_CONT, [&](const siginfo_t &info) {
      if (info.si_signo != SIGSEGV || info.si_code <= 0) return false;
      returned = ptrace(PTRACE_GETREGS, tid_, nullptr, &regs) == 0 && regs.rip == 0;
      return true;
    });
    if (!stopped) return std::move(stopped).failure();
    if (!returned) return fail("a call injected into thread ", tid_, " faulted at ", hexAddress(regs.rip));
    return uint64_t(regs.rax);
  }

private:
  TracedProcess &process_;
  int tid_;
  const ProcessMemory &memory_;
  const std::vector<Mapping> &maps_;
};

// libgcc's __register_frame or __deregister_frame (linux_backend.h), found in libgcc's .dynsym
// before any thread stops: reading libgcc is the slow part. 0 without libgcc_s.
Outcome<uint64_t> libgccFunction(const std::vector<Mapping> &maps, const std::string &name) {
  auto libgcc = std::find_if(maps.begin(), maps.end(), [](const Mapping &m) {
    return m.offset == 0 && m.path.find("/libgcc_s.so") != std::string::npos;
  });
  if (libgcc == maps.end()) return uint64_t(0);
  Outcome<std::vector<uint8_t>> library = readFileBytes(libgcc->path);
  if (!library) return std::move(library).failure();
  Outcome<ElfDynamicSymbol> function = elfDynamicSymbol(*library, name);
  if (!function)
    return fail(libgcc->path, ": ", function.error(), ": the patch's unwind entries cannot be registered");
  return libgcc->start + function->rva;
}

// An object in the target's dynamic loader link map: its file and its load bias.
struct LinkedObject {
  std::string path;
  uint64_t bias = 0;
};

// The objects of the target's global scope in the dynamic loader's search order: its link map
// (r_debug, found through the program's DT_DEBUG: the auxiliary vector gives the program
// headers), the program first.
Outcome<std::vector<LinkedObject>> linkMap(int pid, const ProcessMemory &memory) {
  constexpr uint64_t kProgramHeaders = 3, kProgramHeaderCount = 5;  // AT_PHDR, AT_PHNUM
  constexpr uint32_t kDynamic = 2, kSelf = 6;                        // PT_DYNAMIC, PT_PHDR
  constexpr uint64_t kDebug = 21;                                    // DT_DEBUG
  std::ifstream in(concatenate("/proc/", pid, "/auxv"), std::ios::binary);  // procfs: no size to read by
  std::vector<uint8_t> auxv{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  uint64_t headers = 0, headerCount = 0;
  for (size_t at = 0; at + 16 <= auxv.size(); at += 16) {
    uint64_t type = readLe64(&auxv[at]), value = readLe64(&auxv[at + 8]);
    if (type == kProgramHeaders) headers = value;
    if (type == kProgramHeaderCount) headerCount = value;
  }
  std::vector<uint8_t> phdrs = memory.read(headers, headerCount * 56);
  if (!headers || phdrs.empty()) return fail("cannot read the program headers of process ", pid);
  uint64_t bias = 0, dynamic = 0;
  for (size_t at = 0; at + 56 <= phdrs.size(); at += 56) {
    uint32_t type = readLe32(&phdrs[at]);
    if (type == kSelf) bias = headers - readLe64(&phdrs[at + 16]);
    if (type == kDynamic) dynamic = readLe64(&phdrs[at + 16]);
  }
  uint64_t debug = 0;
  for (uint64_t at = bias + dynamic, n = 0; dynamic && n < 4096; at += 16, ++n) {
    uint64_t entry[2] = {};
    if (!memory.read(at, entry, sizeof entry) || entry[0] == 0) break;
    if (entry[0] == kDebug) debug = entry[1];
  }
  uint64_t object = 0;
  if (!debug || !memory.read(debug + 8, &object, 8) || !object)
    return fail("process ", pid, " has no dynamic loader link map (a static program?)");
  std::vector<LinkedObject> objects;
  for (size_t n = 0; object && n < 4096; ++n) {
    uint64_t fields[4] = {};  // l_addr, l_name, l_ld, l_next
    if (!memory.read(object, fields, sizeof fields)) return fail("cannot read the link map of process ", pid);
    std::vector<uint8_t> name = memory.read(fields[1], 4096);
    std::string path(name.begin(), std::find(name.begin(), name.end(), uint8_t(0)));
    objects.push_back({objects.empty() && path.empty() ? concatenate("/proc/", pid, "/exe") : path, fields[0]});
    object = fields[3];
  }
  return objects;
}

// The words of a stopped thread's stack, from its stack pointer to the end of the stack's mapping
// (at most 1 MiB): where return addresses are, for the strict consistency check.
std::vector<uint64_t> stackWords(const ProcessMemory &memory, const std::vector<Mapping> &maps, uint64_t stackPointer) {
  auto mapping = std::find_if(maps.begin(), maps.end(),
                              [&](const Mapping &m) { return stackPointer >= m.start && stackPointer < m.end; });
  if (mapping == maps.end()) return {};
  uint64_t begin = stackPointer & ~uint64_t(7), end = std::min(mapping->end, begin + (uint64_t(1) << 20));
  std::vector<uint64_t> words((end - begin) / 8);
  if (!memory.read(begin, words.data(), words.size() * 8)) return {};
  return words;
}

// The applier core's backend for another process. Threads are seized and stopped with
// PTRACE_INTERRUPT; system calls and calls run injected into one stopped thread (the main thread,
// or any other if it has exited), stopped the first time one is needed; the held signals are sent
// again and every thread is let go when the backend goes.
class PtraceBackend final : public LinuxBackend {
public:
  PtraceBackend(int pid, ProcessMemory memory, std::vector<Mapping> maps, const DeferredSignals *signals = nullptr)
      : pid_(pid), memory_(std::move(memory)), maps_(std::move(maps)), signals_(signals), process_(pid) {}

  // libgcc's frame functions are looked up before any thread stops.
  Status findFrameFunctions(const PatchImage &image, bool deregister) {
    if (!ehFrameSection(image)) return success();
    Outcome<uint64_t> found = libgccFunction(maps_, deregister ? "__deregister_frame" : "__register_frame");
    if (!found) return std::move(found).failure();
    frameFunctions_[deregister] = *found;
    return success();
  }

  std::string processName() const override { return concatenate("process ", pid_); }
  bool read(uint64_t address, std::span<uint8_t> out) override { return memory_.read(address, out.data(), out.size()); }
  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override {
    // Each jump is one write; x86 keeps instruction fetch coherent with stores.
    if (!memory_.write(address, bytes.data(), bytes.size()))
      return fail("cannot write the jump at ", hexAddress(address), ": ", strerror(errno));
    return success();
  }

  std::vector<int> threads() override { return threadsOf(pid_); }
  Outcome<bool> requestStop(int tid) override { return process_.interrupt(tid); }
  Status awaitStops() override { return process_.awaitStops(); }
  std::span<const StoppedThread> stoppedThreads() override {
    stopped_.clear();
    for (int tid : process_.stopped()) {
      user_regs_struct regs{};
      if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) == 0) stopped_.push_back({tid, regs.rip, regs.rsp});
    }
    return stopped_;
  }
  std::span<const uint64_t> stackWords(const StoppedThread &thread) override {
    stack_ = hotforge::stackWords(memory_, maps_, thread.sp);
    return stack_;
  }
  void resumeAll() override { process_.resumeAll(); }
  void letGo() override { process_.release(); }
  bool interrupted() const override { return signals_ && signals_->interrupted(); }

  // Finds the patch's new imports in the target as its dynamic loader would: the first object of
  // the link map whose .dynsym defines the symbol (of the version the patch binds). An indirect
  // function (IFUNC, such as glibc's strspn) is resolved by calling its resolver in the target.
  Outcome<uint64_t> resolveImport(const PatchImport &import) override {
    if (!linked_) {
      Outcome<std::vector<LinkedObject>> objects = linkMap(pid_, memory_);
      if (!objects) return std::move(objects).failure();
      linked_ = std::move(*objects);
    }
    for (const LinkedObject &object : *linked_) {
      auto [file, added] = files_.try_emplace(object.path);
      if (Outcome<std::vector<uint8_t>> bytes = added ? readFileBytes(object.path) : fail(""); bytes)
        file->second = std::move(*bytes);  // the vDSO has no file: it stays empty
      Outcome<ElfDynamicSymbol> symbol = elfDynamicSymbol(file->second, import.symbol, import.version);
      if (!symbol) continue;
      if (!symbol->indirect) return object.bias + symbol->rva;
      Outcome<Injector *> inject = injector();
      if (!inject) return std::move(inject).failure();
      return (*inject)->call(object.bias + symbol->rva, 0);
    }
    return fail("no object of process ", pid_, "'s link map defines it");
  }

protected:
  std::vector<Mapping> maps() override { return maps_; }
  Outcome<bool> mapAt(uint64_t address, uint64_t size) override {
    Outcome<int64_t> r = syscall(SYS_mmap, {address, size, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, uint64_t(-1), 0});
    if (!r) return std::move(r).failure();
    if (*r > 0 && uint64_t(*r) != address) unmap(uint64_t(*r), size);
    return *r > 0 && uint64_t(*r) == address;
  }
  Outcome<int> protect(uint64_t address, uint64_t size, Permissions permissions) override {
    int protection = PROT_READ | (permissions.write ? PROT_WRITE : 0) | (permissions.execute ? PROT_EXEC : 0);
    Outcome<int64_t> r = syscall(SYS_mprotect, {address, size, uint64_t(protection), 0, 0, 0});
    if (!r) return std::move(r).failure();
    return int(-*r);
  }
  void unmap(uint64_t address, uint64_t size) override {
    static_cast<void>(syscall(SYS_munmap, {address, size, 0, 0, 0, 0}));
  }
  Status writeMemory(uint64_t address, std::span<const uint8_t> bytes) override {
    if (!memory_.write(address, bytes.data(), bytes.size()))
      return fail("cannot write the patch into process ", pid_, ": ", strerror(errno));
    return success();
  }
  Outcome<uint64_t> frameFunction(const char *name) override {
    return frameFunctions_[std::string_view(name) == "__deregister_frame"];
  }
  Status callFrameFunction(uint64_t function, uint64_t frame) override {
    Outcome<Injector *> inject = injector();
    if (!inject) return std::move(inject).failure();
    if (Outcome<uint64_t> called = (*inject)->call(function, frame); !called) return std::move(called).failure();
    return success();
  }

private:
  Outcome<Injector *> injector() {
    if (injector_) return &*injector_;
    std::vector<int> tids = threadsOf(pid_);
    std::stable_partition(tids.begin(), tids.end(), [&](int tid) { return tid == pid_; });
    for (int tid : tids) {
      Outcome<bool> seized = process_.seize(tid);
      if (!seized) return std::move(seized).failure();
      if (!*seized) continue;
      if (Status stopped = process_.stop(tid); !stopped) continue;
      return &injector_.emplace(process_, tid, memory_, maps_);
    }
    return fail("process ", pid_, " has vanished");
  }
  Outcome<int64_t> syscall(long number, std::array<uint64_t, 6> args) {
    Outcome<Injector *> inject = injector();
    if (!inject) return std::move(inject).failure();
    return (*inject)->syscall(number, args);
  }

  int pid_;
  ProcessMemory memory_;
  std::vector<Mapping> maps_;
  const DeferredSignals *signals_;
  TracedProcess process_;
  std::optional<Injector> injector_;
  uint64_t frameFunctions_[2] = {0, 0};  // __register_frame, __deregister_frame
  std::optional<std::vector<LinkedObject>> linked_;
  std::map<std::string, std::vector<uint8_t>> files_;
  std::vector<StoppedThread> stopped_;
  std::vector<uint64_t> stack_;
};

std::vector<Mapping> mapsOf(int pid) { return readMaps(concatenate("/proc/", pid, "/maps")); }

// A backend for process `pid`, its memory open; `maps` when it maps or reads stacks.
Outcome<std::unique_ptr<PtraceBackend>> backendFor(int pid, std::vector<Mapping> maps = {},
                                                   const DeferredSignals *signals = nullptr) {
  Outcome<ProcessMemory> memory = openMemory(pid);
  if (!memory) return std::move(memory).failure();
  return std::make_unique<PtraceBackend>(pid, std::move(*memory), std::move(maps), signals);
}

// Maps the image into process `pid`, whose baseline is at `baseline` (prepareImage).
Outcome<AppliedImage> prepareOn(int pid, std::vector<Mapping> maps, const MappedBaseline &baseline,
                                const PatchImage &image, bool checkEntries) {
  Outcome<std::unique_ptr<PtraceBackend>> backend = backendFor(pid, std::move(maps));
  if (!backend) return std::move(backend).failure();
  if (checkEntries)
    if (Status s = checkExpectedBytes(**backend, image, baseline.address); !s) return std::move(s).failure();
  if (Status found = (*backend)->findFrameFunctions(image, /*deregister=*/false); !found) return std::move(found).failure();
  Outcome<PreparedImage> prepared = stageImage(**backend, image, baseline.address, /*checkEntries=*/false);
  if (!prepared) return std::move(prepared).failure();
  AppliedImage applied;
  applied.baselinePath = baseline.path;
  applied.baseAddress = baseline.address;
  applied.imageSize = image.imageSize;
  applied.sequence = image.sequence;
  applied.baselineSha256 = hexEncode(image.baseline.sha256);
  applied.imageAddress = prepared->address;
  applied.redirects = std::move(prepared->changes);
  return applied;
}

#else

Status notHere() {
  return fail("the ptrace loader runs on x86-64 Linux; on other machines use the in-process agent");
}

#endif  // __x86_64__

}  // namespace

Preparation prepareImage(int pid, const PatchImage &image, bool checkEntries) {
#if !defined(__x86_64__)
  return {notHere(), PrepareFailure::Error};
#else
  if (image.format != hostFormat() || image.machine != hostMachine())
    return {fail("this loader applies ", formatName(hostFormat()), " ", machineName(hostMachine()), " images; the image is ",
                 formatName(image.format), " ", machineName(image.machine)),
            PrepareFailure::Error};
  if (kill(pid, 0) != 0) return {fail("process ", pid, " does not exist"), PrepareFailure::Error};
  std::vector<Mapping> maps = mapsOf(pid);
  Outcome<MappedBaseline> baseline = findBaseline(maps, image, concatenate("process ", pid));
  if (!baseline) return {std::move(baseline).failure(), PrepareFailure::BaselineNotMapped};
  Outcome<AppliedImage> applied = prepareOn(pid, std::move(maps), *baseline, image, checkEntries);
  PrepareFailure failure = applied ? PrepareFailure::None : PrepareFailure::Error;
  return {std::move(applied), failure};
#endif
}

Status commitImage(int pid, const PatchImage &image, AppliedImage &applied, const ApplyOptions &options) {
#if !defined(__x86_64__)
  return notHere();
#else
  // Everything that can be is done before the threads stop: the stop is check and write only.
  // Quiescent redirects (their loops return to the entry) need the stacks as strict does.
  bool stacksMatter = options.strict || std::any_of(image.redirects.begin(), image.redirects.end(),
                                                    [](const PatchRedirect &r) { return r.quiescent; });
  Outcome<std::unique_ptr<PtraceBackend>> backend =
      backendFor(pid, stacksMatter ? mapsOf(pid) : std::vector<Mapping>{}, options.signals);
  if (!backend) return std::move(backend).failure();
  StopReport report;
  Status written = writeEntries(**backend, applied.redirects, EntryDirection::In, {options.patience, options.strict}, report);
  applied.attempts = report.attempts;
  applied.stopping = report.stopping;
  applied.pause = report.pause;
  return written;
#endif
}

void discardImage(int pid, const PatchImage &image, const AppliedImage &applied) {
#if defined(__x86_64__)
  Outcome<std::unique_ptr<PtraceBackend>> backend = backendFor(pid, mapsOf(pid));
  if (!backend || !(*backend)->findFrameFunctions(image, /*deregister=*/true)) return;  // registered: it stays mapped
  (*backend)->release(image, applied.imageAddress, /*installed=*/true);
#else
  (void)pid, (void)image, (void)applied;
#endif
}

Outcome<std::optional<bool>> entriesWritten(int pid, const std::vector<AppliedRedirect> &redirects) {
#if !defined(__x86_64__)
  return notHere();
#else
  Outcome<std::unique_ptr<PtraceBackend>> backend = backendFor(pid);
  if (!backend) return std::move(backend).failure();
  return entriesWritten(**backend, redirects);
#endif
}

Status checkRecord(int pid, const AppliedImage &applied) {
  std::vector<Mapping> maps = readMaps(concatenate("/proc/", pid, "/maps"));
  for (const AppliedRedirect &r : applied.redirects) {
    auto m = std::find_if(maps.begin(), maps.end(), [&](const Mapping &m) {
      return r.address >= m.start && r.address + r.original.size() <= m.end;
    });
    if (m == maps.end() || m->path != applied.baselinePath || m->permissions.find('x') == std::string::npos)
      return fail("the record puts ", r.name, " at ", hexAddress(r.address), ", which is not code of ",
                  applied.baselinePath, " in process ", pid, ": refused");
    Outcome<RegularFile> file = RegularFile::open(m->path, kMaxBinaryFileSize);
    if (!file) return fail("cannot check the record against ", m->path, ": ", file.error());
    std::vector<uint8_t> there(r.original.size());
    if (pread(file->fd(), there.data(), there.size(), off_t(m->offset + (r.address - m->start))) != ssize_t(there.size()) ||
        there != r.original)
      return fail("the record would restore ", r.name, " at ", hexAddress(r.address), " with ", hexEncode(r.original),
                  ", but ", m->path, " holds ", hexEncode(there), " there: the record was changed; nothing reverted");
  }
  return success();
}

Status rewriteEntries(int pid, const std::vector<AppliedRedirect> &redirects, bool toOriginal) {
#if !defined(__x86_64__)
  return notHere();
#else
  if (kill(pid, 0) != 0) return fail("process ", pid, " does not exist");
  Outcome<std::unique_ptr<PtraceBackend>> backend = backendFor(pid);
  if (!backend) return std::move(backend).failure();
  StopReport report;
  return writeEntries(**backend, redirects, toOriginal ? EntryDirection::Out : EntryDirection::In, {}, report);
#endif
}

// ---- signals of the command line tool ----

namespace {
sigset_t deferredSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGPIPE}) sigaddset(&set, s);
  return set;
}
}  // namespace

DeferredSignals::DeferredSignals() {
  sigset_t set = deferredSet();
  pthread_sigmask(SIG_BLOCK, &set, &previous_);
}

DeferredSignals::~DeferredSignals() {
  std::fflush(stdout);  // what was printed is not lost when a held signal ends the process now
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

bool DeferredSignals::interrupted() const {
  sigset_t pending;
  sigpending(&pending);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT})
    if (sigismember(&pending, s)) return true;
  return false;
}

}  // namespace hotforge
