// Applying a hotpatch image to a running x86-64 Linux process from the outside, with ptrace:
// every thread is stopped, an mmap is run inside the target to get memory near the base, the
// image is written there with its fixups applied for that address, and each changed function's
// entry gets a jump. /proc/PID/mem writes reach read-only code pages of a traced process.
#include "hotforge/loader.h"

#include "hotforge/runtime/bytes.h"
#include "hotforge/runtime/process_maps.h"
#include "hotforge/runtime/unit_reader.h"

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

  Status stop() {
    // Threads may start while we attach: repeat until the set is stable.
    for (int round = 0; round < 16; ++round) {
      bool added = false;
      for (int tid : threadsOf(pid_)) {
        if (std::count(stopped_.begin(), stopped_.end(), tid)) continue;
        if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
          if (errno == ESRCH) continue;  // exited meanwhile
          return fail("cannot trace thread ", tid, " of process ", pid_, ": ", strerror(errno));
        }
        ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
        int status = 0;
        if (waitpid(tid, &status, __WALL) != tid)
          return fail("thread ", tid, " of process ", pid_, " did not stop: ", strerror(errno));
        stopped_.push_back(tid);
        added = true;
      }
      if (!added) break;
    }
    if (stopped_.empty()) return fail("process ", pid_, " has vanished");
    return success();
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
Outcome<int64_t> injectSyscall(int tid, const ProcessMemory &memory, const std::vector<Mapping> &maps,
                                      long number, std::array<uint64_t, 6> args) {
  user_regs_struct saved{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) != 0)
    return fail("cannot read the registers of thread ", tid, ": ", strerror(errno));
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
  if (!site) return fail("found no syscall instruction to run mmap in the target");
  user_regs_struct regs = saved;
  regs.rax = uint64_t(number);
  regs.orig_rax = uint64_t(-1);  // not a syscall to restart
  regs.rdi = args[0], regs.rsi = args[1], regs.rdx = args[2], regs.r10 = args[3], regs.r8 = args[4], regs.r9 = args[5];
  regs.rip = site;
  int status = 0;
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0 || ptrace(PTRACE_SINGLESTEP, tid, nullptr, nullptr) != 0 ||
      waitpid(tid, &status, __WALL) != tid || ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) {
    ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
    return fail("running a system call in thread ", tid, " failed: ", strerror(errno));
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
Status injectCall(int tid, const ProcessMemory &memory, uint64_t function, uint64_t argument) {
  user_regs_struct saved{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) != 0)
    return fail("cannot read the registers of thread ", tid, ": ", strerror(errno));
  user_regs_struct regs = saved;
  regs.rsp = ((saved.rsp - 512) & ~uint64_t(15)) - 8;  // below the red zone; aligned as after a call
  uint64_t returnAddress = 0;
  if (!memory.write(regs.rsp, &returnAddress, 8)) return fail("cannot write the stack of thread ", tid);
  regs.rip = function;
  regs.rdi = argument;
  regs.rax = 0;
  regs.orig_rax = uint64_t(-1);  // not a system call to restart
  int status = 0;
  bool returned = ptrace(PTRACE_SETREGS, tid, nullptr, &regs) == 0 && ptrace(PTRACE_CONT, tid, nullptr, nullptr) == 0 &&
                  waitpid(tid, &status, __WALL) == tid && WIFSTOPPED(status) && WSTOPSIG(status) == SIGSEGV &&
                  ptrace(PTRACE_GETREGS, tid, nullptr, &regs) == 0 && regs.rip == 0;
  ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
  if (!returned) return fail("a call injected into thread ", tid, " did not return (status ", hexAddress(uint32_t(status)), ")");
  return success();
}

// Patched code that throws needs its unwind entries known to the unwinder, and the image is not
// an object dl_iterate_phdr reports: its .eh_frame is registered with libgcc's __register_frame,
// as JIT compilers do. Programs without libgcc_s (plain C) cannot throw, so there is nothing to do.
Status registerUnwindEntries(int tid, const ProcessMemory &memory, const std::vector<Mapping> &maps,
                                  const PatchImage &image, uint64_t imageAddress) {
  auto ehFrame = std::find_if(image.sections.begin(), image.sections.end(),
                              [](const PatchSection &s) { return s.name == ".eh_frame"; });
  auto libgcc = std::find_if(maps.begin(), maps.end(), [](const Mapping &m) {
    return m.offset == 0 && m.path.find("/libgcc_s.so") != std::string::npos;
  });
  if (ehFrame == image.sections.end() || libgcc == maps.end()) return success();
  Outcome<std::vector<uint8_t>> library = readFileBytes(libgcc->path);
  if (!library) return std::move(library).failure();
  Outcome<uint64_t> function = elfDynamicSymbolRva(*library, "__register_frame");
  if (!function)
    return fail(libgcc->path, ": ", function.error(), ": the patch's unwind entries cannot be registered");
  return injectCall(tid, memory, libgcc->start + *function, imageAddress + ehFrame->rva);
}

#endif  // __x86_64__

}  // namespace

Outcome<ApplyReport> applyImage(int pid, const PatchImage &image, const ApplyOptions &options) {
#if !defined(__x86_64__)
  return fail("the ptrace loader runs on x86-64 Linux; on other machines use the in-process agent");
#else
  if (image.format != Format::Elf || image.machine != Machine::X64)
    return fail("this loader applies ELF x64 images; the image is ", formatName(image.format), " ",
                machineName(image.machine));
  if (kill(pid, 0) != 0) return fail("process ", pid, " does not exist");
  const std::string mapsFile = "/proc/" + std::to_string(pid) + "/maps";
  std::vector<Mapping> maps = readMaps(mapsFile);
  Outcome<MappedBaseline> baseline = findBaseline(maps, image, "process " + std::to_string(pid));
  if (!baseline) return std::move(baseline).failure();
  ApplyReport report;
  report.pid = pid;
  report.baselinePath = baseline->path;
  report.baseAddress = baseline->address;
  report.imageSize = image.imageSize;
  report.sequence = image.sequence;
  ProcessMemory memory(pid);
  if (!memory.ok()) return fail("cannot open the memory of process ", pid, ": ", strerror(errno));

  auto deadline = std::chrono::steady_clock::now() + options.patience;
  while (true) {
    ++report.attempts;
    auto stoppedAt = std::chrono::steady_clock::now();
    StoppedProcess process(pid);
    if (Status stopped = process.stop(); !stopped) return std::move(stopped).failure();
    // Check every entry first: expected bytes, and no thread in the bytes to overwrite.
    std::vector<std::string> busy;
    for (const PatchRedirect &r : image.redirects) {
      uint64_t from = report.baseAddress + r.baseRva - r.paddingBefore;
      std::vector<uint8_t> found(r.expected.size());
      if (!memory.read(from, found.data(), found.size()) || found != r.expected)
        return fail(r.name.value_or("a function"), " at ", hexAddress(from), " does not hold the bytes this patch "
                    "expects (", hexEncode(found), " instead of ", hexEncode(r.expected), "): another patch or another build");
    }
    std::vector<Mapping> stacks = options.strict ? readMaps(mapsFile) : std::vector<Mapping>{};
    for (int tid : process.threads()) {
      user_regs_struct regs{};
      if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) continue;
      std::vector<uint64_t> stack = options.strict ? stackWords(memory, stacks, regs.rsp) : std::vector<uint64_t>{};
      for (const PatchRedirect &r : image.redirects) {
        std::string name = r.name.value_or("a function");
        if (overwrittenSpan(r, report.baseAddress).strictlyContains(regs.rip))
          busy.push_back(concatenate("thread ", tid, " is at ", hexAddress(regs.rip), " inside ", name));
        uint64_t begin = report.baseAddress + r.baseRva, end = begin + r.baseSize;
        if (!options.strict) continue;
        if (regs.rip >= begin && regs.rip < end)
          busy.push_back(concatenate("thread ", tid, " runs in ", name, " (at ", hexAddress(regs.rip), ")"));
        for (uint64_t word : stack)
          if (word > begin && word < end) {  // a return address points after a call, never at the entry
            busy.push_back(concatenate("thread ", tid, " has ", name, " on its stack (return address ", hexAddress(word), ")"));
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
      return fail("gave up after ", report.attempts, " attempts: ", all);
    }
    // Memory near the base, so rel32 fixups and jumps reach.
    uint64_t size = alignTo(image.imageSize, 0x10000);
    std::vector<uint64_t> hints = freeAddressesNear(readMaps(mapsFile), report.baseAddress,
                                                    size, patchReach(image.machine));
    int64_t mapped = -1;
    for (size_t attempt = 0; attempt < hints.size() && attempt < 16 && mapped < 0; ++attempt) {
      Outcome<int64_t> r = injectSyscall(pid, memory, maps, 9 /* mmap */,
                                                {hints[attempt], size, PROT_READ | PROT_WRITE | PROT_EXEC,
                                                 MAP_PRIVATE | MAP_ANONYMOUS | 0x100000 /* MAP_FIXED_NOREPLACE */,
                                                 uint64_t(-1), 0});
      if (!r) return std::move(r).failure();
      if (*r > 0 && uint64_t(*r) == hints[attempt]) mapped = *r;
    }
    if (mapped < 0) return fail("found no free memory within reach of the base for the patch");
    report.imageAddress = uint64_t(mapped);
    // Until the unwind entries are registered a failure unmaps the image again: the process is
    // left as it was.
    auto unmapped = [&](Failure failure) -> Failure {
      [[maybe_unused]] Outcome<int64_t> r =
          injectSyscall(pid, memory, maps, 11 /* munmap */, {report.imageAddress, size, 0, 0, 0, 0});
      return failure;
    };
    std::vector<uint8_t> laidOut = layOut(image);
    if (Status fixed = applyFixups(image, report.baseAddress, report.imageAddress, laidOut); !fixed)
      return unmapped(std::move(fixed).failure());
    if (!memory.write(report.imageAddress, laidOut.data(), laidOut.size()))
      return unmapped(fail("cannot write the patch into process ", pid, ": ", strerror(errno)));
    // Written: the whole mapping becomes read-only, then each section gets only the access it
    // needs (code is never writable).
    Outcome<int64_t> sealed =
        injectSyscall(pid, memory, maps, 10 /* mprotect */, {report.imageAddress, size, PROT_READ, 0, 0, 0});
    if (!sealed) return unmapped(std::move(sealed).failure());
    for (const PatchSection &section : image.sections) {
      uint64_t begin = report.imageAddress + (section.rva & ~uint64_t(0xfff));
      uint64_t end = report.imageAddress + alignTo(uint64_t(section.rva) + section.memorySize, 0x1000);
      if (end <= begin) continue;
      int protection = PROT_READ | (section.permissions.write ? PROT_WRITE : 0) | (section.permissions.execute ? PROT_EXEC : 0);
      Outcome<int64_t> r =
          injectSyscall(pid, memory, maps, 10 /* mprotect */, {begin, end - begin, uint64_t(protection), 0, 0, 0});
      if (!r) return unmapped(std::move(r).failure());
      if (*r != 0)
        return unmapped(fail("cannot protect the patch's ", section.name, " in process ", pid, " (error ", -*r, ")"));
    }
    for (const PatchRedirect &r : image.redirects) {
      Outcome<EntryWrite> w = entryWrite(r, image.machine, report.baseAddress, report.imageAddress);
      if (!w) return unmapped(std::move(w).failure());
      AppliedRedirect applied;
      applied.name = r.name.value_or("");
      applied.address = w->address;
      applied.original.resize(w->bytes.size());
      memory.read(w->address, applied.original.data(), w->bytes.size());
      applied.written = std::move(w->bytes);
      report.redirects.push_back(std::move(applied));
    }
    // Registered before the jumps go in: a thread may throw through the new code at once.
    if (Status registered = registerUnwindEntries(pid, memory, maps, image, report.imageAddress); !registered)
      return unmapped(std::move(registered).failure());
    // The jumps go in last, each one write; x86 keeps instruction fetch coherent with stores.
    for (const AppliedRedirect &r : report.redirects)
      if (!memory.write(r.address, r.written.data(), r.written.size()))
        return fail("cannot write the jump at ", hexAddress(r.address), ": ", strerror(errno));
    report.pause = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - stoppedAt);
    return report;
  }
#endif
}

Status revertRedirects(int pid, const std::vector<AppliedRedirect> &redirects) {
#if !defined(__x86_64__)
  return fail("the ptrace loader runs on x86-64 Linux");
#else
  if (kill(pid, 0) != 0) return fail("process ", pid, " does not exist");
  StoppedProcess process(pid);
  if (Status stopped = process.stop(); !stopped) return stopped;
  ProcessMemory memory(pid);
  for (const AppliedRedirect &r : redirects) {
    std::vector<uint8_t> now(r.written.size());
    if (!memory.read(r.address, now.data(), now.size()) || now != r.written)
      return fail("the jump at ", hexAddress(r.address), " (", r.name, ") was changed by someone else; nothing reverted");
  }
  for (const AppliedRedirect &r : redirects)
    if (!memory.write(r.address, r.original.data(), r.original.size()))
      return fail("cannot restore ", hexAddress(r.address), ": ", strerror(errno));
  return success();
#endif
}

std::string stateFilePath(int pid) {
  const char *dir = getenv("HOTFORGE_STATE_DIR");
  return std::string(dir ? dir : "/tmp/hotforge-state") + "/" + std::to_string(pid) + ".json";
}

Outcome<nlohmann::json> readState(int pid) {
  std::ifstream in(stateFilePath(pid));
  if (!in) return nlohmann::json::object();
  nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  if (state.is_discarded()) return fail(stateFilePath(pid), " is damaged");
  return state;
}

Status writeState(int pid, const nlohmann::json &state) {
  std::string path = stateFilePath(pid);
  mkdir(path.substr(0, path.rfind('/')).c_str(), 0700);
  std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << state.dump(2);
    if (!out) return fail("cannot write ", temp);
  }
  if (rename(temp.c_str(), path.c_str()) != 0) return fail("cannot write ", path, ": ", strerror(errno));
  return success();
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
