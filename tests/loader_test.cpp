// End to end on a running process: the `live` sample (scenario 14: threads calling live_score in
// a loop) is started from its baseline, a unit built from its patched build is applied while it
// runs, and its output must switch to exactly the patched values, then back after revert, with
// no wrong value in between. Refusals must leave the process running unchanged.
#include "test_support.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <regex>
#include <sys/wait.h>
#include <algorithm>
#include <thread>
#include <unistd.h>

namespace hotforge::test {
namespace {

using namespace std::chrono_literals;

// A started sample writing to a file; killed when the object goes.
class Running {
public:
  Running(const std::string &program, const std::vector<std::string> &args, const std::string &output) : output_(output) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char *> argv{const_cast<char *>(program.c_str())};
      for (const std::string &a : args) argv.push_back(const_cast<char *>(a.c_str()));
      argv.push_back(nullptr);
      execv(program.c_str(), argv.data());
      _exit(127);
    }
  }
  ~Running() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int pid() const { return pid_; }
  bool alive() const { return waitpid(pid_, nullptr, WNOHANG) == 0; }

  // Per output line: 'B' baseline value, 'P' patched (+1000), 'X' anything else.
  std::string verdicts() const {
    std::string out;
    std::regex line(R"(live t=\d+ i=\d+ live_score\((\d+)\)=(-?\d+))");
    std::string text = readFile(output_);
    for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) {
      long i = std::stol((*it)[1]), v = std::stol((*it)[2]), k = i & 7;
      long base = 3 * k * (k + 1) / 2 + (k + 1) * i;
      out += v == base ? 'B' : v == base + 1000 ? 'P' : 'X';
    }
    return out;
  }
  // Waits until `count` more lines were printed.
  void waitForLines(size_t count) const {
    auto lines = [&] {
      std::string text = readFile(output_);
      return size_t(std::count(text.begin(), text.end(), '\n'));
    };
    size_t start = lines();
    for (int i = 0; i < 400 && lines() < start + count; ++i) std::this_thread::sleep_for(10ms);
  }

private:
  pid_t pid_ = -1;
  std::string output_;
};

struct Unit {
  std::string path, publicKey;
};

Unit makeUnit(const std::string &base, const std::string &patched, const std::string &name) {
  std::string dir = tempDir();
  Unit unit{dir + "/" + name + ".hfu", dir + "/" + name + "-key.pub.pem"};
  std::string image = dir + "/" + name + ".hfpatch";
  CommandResult r = run({hotforgeBinary(), "build", base, patched, "-o", image});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  if (readFile(dir + "/" + name + "-key.pem").empty()) {
    r = run({hotforgeBinary(), "keygen", "-o", dir + "/" + name + "-key"});
    EXPECT_EQ(r.exitCode, 0) << r.err;
  }
  r = run({hotforgeBinary(), "pack", image, "-o", unit.path, "--key", dir + "/" + name + "-key.pem"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  return unit;
}

std::string sample(const std::string &target, const std::string &variant) {
  for (const Sample &s : samples(target))
    if (s.program == "live" && s.variant == variant) return s.path;
  ADD_FAILURE() << "no live sample for " << target;
  return "";
}

CommandResult hotforge(std::vector<std::string> args) {
  args.insert(args.begin(), hotforgeBinary());
  return run(args);
}

TEST(Loader, LiveProcessSwitchesToThePatchAndBack) {
  for (const char *target : {"elf-x64-gcc", "elf-x64-clang"}) {
    SCOPED_TRACE(target);
    Unit unit = makeUnit(sample(target, "base"), sample(target, "fix14"), std::string("live-") + target);
    setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state").c_str(), 1);
    Running live(sample(target, "base"), {"100000", "2", "3"}, tempDir() + "/live-" + target + ".out");
    live.waitForLines(30);
    CommandResult applied = hotforge({"apply", "--pid", std::to_string(live.pid()), unit.path, "--pubkey", unit.publicKey});
    ASSERT_EQ(applied.exitCode, 0) << applied.err;
    live.waitForLines(60);
    CommandResult status = hotforge({"status", "--pid", std::to_string(live.pid()), "--json"});
    EXPECT_NE(status.out.find("live_score"), std::string::npos) << status.out;
    CommandResult reverted = hotforge({"revert", "--pid", std::to_string(live.pid())});
    ASSERT_EQ(reverted.exitCode, 0) << reverted.err;
    live.waitForLines(60);
    ASSERT_TRUE(live.alive());
    std::string seen = live.verdicts();
    EXPECT_EQ(seen.find('X'), std::string::npos) << seen;
    // Baseline, then the patch, then the baseline again: each switch happens once.
    std::string runs;
    for (char c : seen)
      if (runs.empty() || runs.back() != c) runs += c;
    EXPECT_EQ(runs, "BPB") << seen;
  }
}

TEST(Loader, HundredApplyRevertCyclesUnderLoad) {
  Unit unit = makeUnit(sample("elf-x64-gcc", "base"), sample("elf-x64-gcc", "fix14"), "cycles");
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-cycles").c_str(), 1);
  Running live(sample("elf-x64-gcc", "base"), {"100000000", "1", "4"}, tempDir() + "/cycles.out");
  live.waitForLines(100);
  std::string pid = std::to_string(live.pid());
  for (int cycle = 0; cycle < 100; ++cycle) {
    CommandResult applied = hotforge({"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey});
    ASSERT_EQ(applied.exitCode, 0) << "cycle " << cycle << ": " << applied.err;
    CommandResult reverted = hotforge({"revert", "--pid", pid});
    ASSERT_EQ(reverted.exitCode, 0) << "cycle " << cycle << ": " << reverted.err;
  }
  live.waitForLines(100);
  ASSERT_TRUE(live.alive());
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find('X'), std::string::npos);
  EXPECT_NE(seen.find('P'), std::string::npos) << "the patched function never ran";
}

TEST(Loader, RefusalsLeaveTheProcessRunningUnchanged) {
  const std::string base = sample("elf-x64-gcc", "base");
  Unit unit = makeUnit(base, sample("elf-x64-gcc", "fix14"), "refusals");
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-refusals").c_str(), 1);
  Running live(base, {"100000", "2", "2"}, tempDir() + "/refusals.out");
  live.waitForLines(20);
  std::string pid = std::to_string(live.pid());
  // A unit for another build: the clang build of the same program.
  Unit other = makeUnit(sample("elf-x64-clang", "base"), sample("elf-x64-clang", "fix14"), "other-build");
  CommandResult r = hotforge({"apply", "--pid", pid, other.path, "--pubkey", other.publicKey});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("does not run the baseline"), std::string::npos) << r.err;
  // A tampered unit and a wrong key.
  std::string tampered = tempDir() + "/tampered.hfu";
  std::string bytes = readFile(unit.path);
  bytes[bytes.size() / 2] ^= 0x40;
  writeFile(tampered, bytes);
  r = hotforge({"apply", "--pid", pid, tampered, "--pubkey", unit.publicKey});
  EXPECT_EQ(r.exitCode, 1) << r.err;
  r = hotforge({"apply", "--pid", pid, unit.path, "--pubkey", other.publicKey});
  EXPECT_EQ(r.exitCode, 1) << r.err;
  // A process that is gone.
  r = hotforge({"apply", "--pid", "999999", unit.path, "--pubkey", unit.publicKey});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("999999"), std::string::npos) << r.err;
  live.waitForLines(20);
  ASSERT_TRUE(live.alive());
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find_first_not_of('B'), std::string::npos) << seen;
}

}  // namespace
}  // namespace hotforge::test
