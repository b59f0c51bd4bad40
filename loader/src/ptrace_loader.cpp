// Applying a hotpatch image to a running x86-64 Linux process from the outside, with ptrace:
// every thread is stopped, an mmap is run inside the target to get memory near the base, the
// image is written there with its fixups applied for that address, and each changed function's
// entry gets a jump. /proc/PID/mem writes reach read-only code pages of a traced process.
#include "hotforge/loader.h"

#include "hotforge/error.h"
#include "hotforge/runtime/bytes.h"
#include "hotforge/runtime/process_maps.h"

#include <fmt/core.h>
#include <llvm/Support/Path.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace hotforge {
namespace {

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

// Every thread of a process, stopped while this object lives.
class StoppedProcess {
public:
  explicit StoppedProcess(int pid) : pid_(pid) {}
  ~StoppedProcess() {
    for (int tid : stopped_) ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
  }

  llvm::Error stop() {
    // Threads may start while we attach: repeat until the set is stable.
    for (int round = 0; round < 16; ++round) {
      bool added = false;
      for (int tid : threadsOf(pid_)) {
        if (std::count(stopped_.begin(), stopped_.end(), tid)) continue;
        if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
          if (errno == ESRCH) continue;  // exited meanwhile
          return formatError("cannot trace thread {} of process {}: {}", tid, pid_, strerror(errno));
        }
        ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
        int status = 0;
        if (waitpid(tid, &status, __WALL) != tid)
          return formatError("thread {} of process {} did not stop: {}", tid, pid_, strerror(errno));
        stopped_.push_back(tid);
        added = true;
      }
      if (!added) break;
    }
    if (stopped_.empty()) return formatError("process {} has vanished", pid_);
    return llvm::Error::success();
  }

  const std::vector<int> &threads() const { return stopped_; }

private:
  int pid_;
  std::vector<int> stopped_;
};

class ProcessMemory {
public:
  explicit ProcessMemory(int pid) : fd_(open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDWR)) {}
  ~ProcessMemory() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool read(uint64_t address, void *out, size_t size) const {
    return pread(fd_, out, size, off_t(address)) == ssize_t(size);
  }
  bool write(uint64_t address, const void *data, size_t size) const {
    return pwrite(fd_, data, size, off_t(address)) == ssize_t(size);
  }

private:
  int fd_;
};

// Runs one system call in a stopped thread and puts the thread back as it was.
llvm::Expected<int64_t> injectSyscall(int tid, const ProcessMemory &memory, const std::vector<Mapping> &maps,
                                      long number, std::array<uint64_t, 6> args) {
  user_regs_struct saved{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) != 0)
    return formatError("cannot read the registers of thread {}: {}", tid, strerror(errno));
  // A `syscall` instruction to execute: where the thread sleeps in one, or one in libc.
  uint64_t site = 0;
  uint8_t pair[2] = {};
  if (memory.read(saved.rip - 2, pair, 2) && pair[0] == 0x0f && pair[1] == 0x05) site = saved.rip - 2;
  for (const Mapping &m : maps) {
    if (site || m.permissions.find('x') == std::string::npos || m.path.find("libc") == std::string::npos) continue;
    std::vector<uint8_t> code(std::min<uint64_t>(m.end - m.start, 1 << 20));
    if (!memory.read(m.start, code.data(), code.size())) continue;
    for (size_t i = 0; i + 1 < code.size() && !site; ++i)
      if (code[i] == 0x0f && code[i + 1] == 0x05) site = m.start + i;
  }
  if (!site) return makeError("found no syscall instruction to run mmap in the target");
  user_regs_struct regs = saved;
  regs.rax = uint64_t(number);
  regs.orig_rax = uint64_t(-1);  // not a syscall to restart
  regs.rdi = args[0], regs.rsi = args[1], regs.rdx = args[2], regs.r10 = args[3], regs.r8 = args[4], regs.r9 = args[5];
  regs.rip = site;
  int status = 0;
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0 || ptrace(PTRACE_SINGLESTEP, tid, nullptr, nullptr) != 0 ||
      waitpid(tid, &status, __WALL) != tid || ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) {
    ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
    return formatError("running a system call in thread {} failed: {}", tid, strerror(errno));
  }
  ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
  return int64_t(regs.rax);
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

// Calls `function(argument)` in a stopped thread and puts the thread back as it was. The call
// returns to address 0, and the fault that follows hands the thread back to us.
llvm::Error injectCall(int tid, const ProcessMemory &memory, uint64_t function, uint64_t argument) {
  user_regs_struct saved{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) != 0)
    return formatError("cannot read the registers of thread {}: {}", tid, strerror(errno));
  user_regs_struct regs = saved;
  regs.rsp = ((saved.rsp - 512) & ~uint64_t(15)) - 8;  // below the red zone; aligned as after a call
  uint64_t returnAddress = 0;
  if (!memory.write(regs.rsp, &returnAddress, 8)) return formatError("cannot write the stack of thread {}", tid);
  regs.rip = function;
  regs.rdi = argument;
  regs.rax = 0;
  regs.orig_rax = uint64_t(-1);  // not a system call to restart
  int status = 0;
  bool returned = ptrace(PTRACE_SETREGS, tid, nullptr, &regs) == 0 && ptrace(PTRACE_CONT, tid, nullptr, nullptr) == 0 &&
                  waitpid(tid, &status, __WALL) == tid && WIFSTOPPED(status) && WSTOPSIG(status) == SIGSEGV &&
                  ptrace(PTRACE_GETREGS, tid, nullptr, &regs) == 0 && regs.rip == 0;
  ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
  if (!returned) return formatError("a call injected into thread {} did not return (status {:#x})", tid, status);
  return llvm::Error::success();
}

// Patched code that throws needs its unwind entries known to the unwinder, and the image is not
// an object dl_iterate_phdr reports: its .eh_frame is registered with libgcc's __register_frame,
// as JIT compilers do. Programs without libgcc_s (plain C) cannot throw, so there is nothing to do.
llvm::Error registerUnwindEntries(int tid, const ProcessMemory &memory, const std::vector<Mapping> &maps,
                                  const PatchImage &image, uint64_t imageAddress) {
  auto ehFrame = std::find_if(image.sections.begin(), image.sections.end(),
                              [](const PatchSection &s) { return s.name == ".eh_frame"; });
  auto libgcc = std::find_if(maps.begin(), maps.end(), [](const Mapping &m) {
    return m.offset == 0 && m.path.find("/libgcc_s.so") != std::string::npos;
  });
  if (ehFrame == image.sections.end() || libgcc == maps.end()) return llvm::Error::success();
  llvm::Expected<Image> library = readImage(libgcc->path);
  if (!library) return library.takeError();
  for (const Function &f : library->functions)
    if (f.name && (*f.name == "__register_frame" || f.name->rfind("__register_frame@", 0) == 0))
      return injectCall(tid, memory, libgcc->start + f.range.rva, imageAddress + ehFrame->rva);
  return formatError("{} has no __register_frame: the patch's unwind entries cannot be registered", libgcc->path);
}

#endif  // __x86_64__

}  // namespace

llvm::Expected<ApplyReport> applyImage(int pid, const PatchImage &image, const ApplyOptions &options) {
#if !defined(__x86_64__)
  return makeError("the ptrace loader runs on x86-64 Linux; on other machines use the in-process agent");
#else
  if (image.format != Format::Elf || image.machine != Machine::X64)
    return formatError("this loader applies ELF x64 images; the image is {} {}", formatName(image.format),
                       machineName(image.machine));
  if (kill(pid, 0) != 0) return formatError("process {} does not exist", pid);
  std::vector<Mapping> maps = readMaps(fmt::format("/proc/{}/maps", pid));
  llvm::Expected<MappedBaseline> baseline = lift(findBaseline(maps, image, fmt::format("process {}", pid)));
  if (!baseline) return baseline.takeError();
  ApplyReport report;
  report.pid = pid;
  report.baselinePath = baseline->path;
  report.baseAddress = baseline->address;
  report.imageSize = image.imageSize;
  report.sequence = image.sequence;
  ProcessMemory memory(pid);
  if (!memory.ok()) return formatError("cannot open the memory of process {}: {}", pid, strerror(errno));

  auto deadline = std::chrono::steady_clock::now() + options.patience;
  while (true) {
    ++report.attempts;
    auto stoppedAt = std::chrono::steady_clock::now();
    StoppedProcess process(pid);
    if (llvm::Error e = process.stop()) return e;
    // Check every entry first: expected bytes, and no thread in the bytes to overwrite.
    std::vector<std::string> busy;
    for (const PatchRedirect &r : image.redirects) {
      uint64_t from = report.baseAddress + r.baseRva - r.paddingBefore;
      std::vector<uint8_t> found(r.expected.size());
      if (!memory.read(from, found.data(), found.size()) || found != r.expected)
        return formatError("{} at {:#x} does not hold the bytes this patch expects ({} instead of {}): another patch "
                           "or another build", r.name.value_or("a function"), from, hexEncode(found),
                           hexEncode(r.expected));
    }
    std::vector<Mapping> stacks = options.strict ? readMaps(fmt::format("/proc/{}/maps", pid)) : std::vector<Mapping>{};
    for (int tid : process.threads()) {
      user_regs_struct regs{};
      if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) continue;
      std::vector<uint64_t> stack = options.strict ? stackWords(memory, stacks, regs.rsp) : std::vector<uint64_t>{};
      for (const PatchRedirect &r : image.redirects) {
        std::string name = r.name.value_or("a function");
        if (overwrittenSpan(r, report.baseAddress).strictlyContains(regs.rip))
          busy.push_back(fmt::format("thread {} is at {:#x} inside {}", tid, regs.rip, name));
        uint64_t begin = report.baseAddress + r.baseRva, end = begin + r.baseSize;
        if (!options.strict) continue;
        if (regs.rip >= begin && regs.rip < end)
          busy.push_back(fmt::format("thread {} runs in {} (at {:#x})", tid, name, regs.rip));
        for (uint64_t word : stack)
          if (word > begin && word < end) {  // a return address points after a call, never at the entry
            busy.push_back(fmt::format("thread {} has {} on its stack (return address {:#x})", tid, name, word));
            break;
          }
      }
    }
    if (!busy.empty()) {
      if (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // resume the threads and try again
        continue;
      }
      std::string all;
      for (const std::string &b : busy) all += (all.empty() ? "" : "; ") + b;
      return formatError("gave up after {} attempts: {}", report.attempts, all);
    }
    // Memory near the base, so rel32 fixups and jumps reach.
    uint64_t size = alignTo(image.imageSize, 0x10000);
    std::vector<uint64_t> hints = freeAddressesNear(readMaps(fmt::format("/proc/{}/maps", pid)), report.baseAddress,
                                                    size, patchReach(image.machine));
    int64_t mapped = -1;
    for (size_t attempt = 0; attempt < hints.size() && attempt < 16 && mapped < 0; ++attempt) {
      llvm::Expected<int64_t> r = injectSyscall(pid, memory, maps, 9 /* mmap */,
                                                {hints[attempt], size, PROT_READ | PROT_WRITE | PROT_EXEC,
                                                 MAP_PRIVATE | MAP_ANONYMOUS | 0x100000 /* MAP_FIXED_NOREPLACE */,
                                                 uint64_t(-1), 0});
      if (!r) return r.takeError();
      if (*r > 0 && uint64_t(*r) == hints[attempt]) mapped = *r;
    }
    if (mapped < 0) return makeError("found no free memory within reach of the base for the patch");
    report.imageAddress = uint64_t(mapped);
    // Until the unwind entries are registered a failure unmaps the image again: the process is
    // left as it was.
    auto unmapped = [&](llvm::Error failure) -> llvm::Error {
      llvm::Expected<int64_t> r = injectSyscall(pid, memory, maps, 11 /* munmap */, {report.imageAddress, size, 0, 0, 0, 0});
      if (!r) llvm::consumeError(r.takeError());
      return failure;
    };
    std::vector<uint8_t> laidOut = layOut(image);
    if (llvm::Error e = lift(applyFixups(image, report.baseAddress, report.imageAddress, laidOut)))
      return unmapped(std::move(e));
    if (!memory.write(report.imageAddress, laidOut.data(), laidOut.size()))
      return unmapped(formatError("cannot write the patch into process {}: {}", pid, strerror(errno)));
    // Written: the whole mapping becomes read-only, then each section gets only the access it
    // needs (code is never writable).
    llvm::Expected<int64_t> sealed = injectSyscall(pid, memory, maps, 10 /* mprotect */,
                                                   {report.imageAddress, size, PROT_READ, 0, 0, 0});
    if (!sealed) return unmapped(sealed.takeError());
    for (const PatchSection &section : image.sections) {
      uint64_t begin = report.imageAddress + (section.rva & ~uint64_t(0xfff));
      uint64_t end = report.imageAddress + alignTo(uint64_t(section.rva) + section.memorySize, 0x1000);
      if (end <= begin) continue;
      int protection = PROT_READ | (section.permissions.write ? PROT_WRITE : 0) | (section.permissions.execute ? PROT_EXEC : 0);
      llvm::Expected<int64_t> r = injectSyscall(pid, memory, maps, 10 /* mprotect */,
                                                {begin, end - begin, uint64_t(protection), 0, 0, 0});
      if (!r) return unmapped(r.takeError());
      if (*r != 0)
        return unmapped(formatError("cannot protect the patch's {} in process {} (error {})", section.name, pid, -*r));
    }
    for (const PatchRedirect &r : image.redirects) {
      llvm::Expected<EntryWrite> w = lift(entryWrite(r, image.machine, report.baseAddress, report.imageAddress));
      if (!w) return unmapped(w.takeError());
      AppliedRedirect applied;
      applied.name = r.name.value_or("");
      applied.address = w->address;
      applied.original.resize(w->bytes.size());
      memory.read(w->address, applied.original.data(), w->bytes.size());
      applied.written = std::move(w->bytes);
      report.redirects.push_back(std::move(applied));
    }
    // Registered before the jumps go in: a thread may throw through the new code at once.
    if (llvm::Error e = registerUnwindEntries(pid, memory, maps, image, report.imageAddress))
      return unmapped(std::move(e));
    // The jumps go in last, each one write; x86 keeps instruction fetch coherent with stores.
    for (const AppliedRedirect &r : report.redirects)
      if (!memory.write(r.address, r.written.data(), r.written.size()))
        return formatError("cannot write the jump at {:#x}: {}", r.address, strerror(errno));
    report.pause = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - stoppedAt);
    return report;
  }
#endif
}

llvm::Error revertRedirects(int pid, const std::vector<AppliedRedirect> &redirects) {
#if !defined(__x86_64__)
  return makeError("the ptrace loader runs on x86-64 Linux");
#else
  if (kill(pid, 0) != 0) return formatError("process {} does not exist", pid);
  StoppedProcess process(pid);
  if (llvm::Error e = process.stop()) return e;
  ProcessMemory memory(pid);
  for (const AppliedRedirect &r : redirects) {
    std::vector<uint8_t> now(r.written.size());
    if (!memory.read(r.address, now.data(), now.size()) || now != r.written)
      return formatError("the jump at {:#x} ({}) was changed by someone else; nothing reverted", r.address, r.name);
  }
  for (const AppliedRedirect &r : redirects)
    if (!memory.write(r.address, r.original.data(), r.original.size()))
      return formatError("cannot restore {:#x}: {}", r.address, strerror(errno));
  return llvm::Error::success();
#endif
}

std::string stateFilePath(int pid) {
  const char *dir = getenv("HOTFORGE_STATE_DIR");
  return std::string(dir ? dir : "/tmp/hotforge-state") + "/" + std::to_string(pid) + ".json";
}

llvm::Expected<nlohmann::json> readState(int pid) {
  std::ifstream in(stateFilePath(pid));
  if (!in) return nlohmann::json::object();
  nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  if (state.is_discarded()) return formatError("{} is damaged", stateFilePath(pid));
  return state;
}

llvm::Error writeState(int pid, const nlohmann::json &state) {
  std::string path = stateFilePath(pid);
  mkdir(llvm::sys::path::parent_path(path).str().c_str(), 0700);
  std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << state.dump(2);
    if (!out) return formatError("cannot write {}", temp);
  }
  if (rename(temp.c_str(), path.c_str()) != 0) return formatError("cannot write {}: {}", path, strerror(errno));
  return llvm::Error::success();
}

nlohmann::json toJson(const ApplyReport &report, const std::string &unitName) {
  nlohmann::json redirects = nlohmann::json::array();
  for (const AppliedRedirect &r : report.redirects)
    redirects.push_back({{"name", r.name}, {"address", r.address}, {"original", hexEncode(r.original)},
                         {"written", hexEncode(r.written)}});
  return {{"unit", unitName},
          {"baseline", report.baselinePath},
          {"sequence", report.sequence},
          {"base_address", report.baseAddress},
          {"image_address", report.imageAddress},
          {"image_size", report.imageSize},
          {"pause_us", report.pause.count()},
          {"attempts", report.attempts},
          {"redirects", std::move(redirects)}};
}

std::vector<AppliedRedirect> redirectsFromJson(const nlohmann::json &applied) {
  auto bytes = [](const std::string &hex) {
    std::vector<uint8_t> out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(uint8_t(std::stoul(hex.substr(i, 2), nullptr, 16)));
    return out;
  };
  std::vector<AppliedRedirect> out;
  for (const auto &r : applied.value("redirects", nlohmann::json::array()))
    out.push_back({r.value("name", ""), r.value("address", uint64_t(0)), bytes(r.value("original", "")),
                   bytes(r.value("written", ""))});
  return out;
}

}  // namespace hotforge
