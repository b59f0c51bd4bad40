// Running samples for the live loader tests: a `live` sample printing values from busy threads,
// a sample in `serve` mode answering rounds, and units built and packed from sample pairs.
#pragma once

#include "test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace hotforge::test {

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
  // The signal that ended the process within `patience` (0: it exited or still runs).
  int killedBy(std::chrono::milliseconds patience) const {
    int status = 0;
    for (auto deadline = std::chrono::steady_clock::now() + patience; std::chrono::steady_clock::now() < deadline;) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      std::this_thread::sleep_for(10ms);
    }
    return 0;
  }

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

inline Unit makeUnit(const std::string &base, const std::string &patched, const std::string &name) {
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

// A unit of the clang build's core.fix1, signed with the key of makeUnit(..., keyName): right
// key, but for another build, so a gcc core process skips it (after verifying it).
inline std::string otherBuildUnit(const std::string &keyName) {
  std::string unit = tempDir() + "/" + keyName + "-other-build.hfu", image = tempDir() + "/" + keyName + "-other-build.hfpatch";
  std::string samples = samplesDir() + "/elf-x64-clang/";
  CommandResult r = run({hotforgeBinary(), "build", samples + "core.base", samples + "core.fix1", "-o", image});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  r = run({hotforgeBinary(), "pack", image, "-o", unit, "--key", tempDir() + "/" + keyName + "-key.pem"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  return unit;
}

inline std::string sample(const std::string &target, const std::string &variant) {
  for (const Sample &s : samples(target))
    if (s.program == "live" && s.variant == variant) return s.path;
  ADD_FAILURE() << "no live sample for " << target;
  return "";
}

inline CommandResult hotforge(std::vector<std::string> args) {
  args.insert(args.begin(), hotforgeBinary());
  return run(args);
}

// A sample in `serve` mode: round() runs every scenario once and returns what it printed.
// stderr (the agent's messages) goes to a file.
class Serving {
public:
  Serving(const std::vector<std::string> &argv, const std::vector<std::string> &environment, std::string errors)
      : errors_(std::move(errors)) {
    int toChild[2], fromChild[2];
    if (pipe(toChild) != 0 || pipe(fromChild) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(toChild[0], 0);
      dup2(fromChild[1], 1);
      int fd = open(errors_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 2);
      for (int f : {toChild[0], toChild[1], fromChild[0], fromChild[1], fd}) close(f);
      for (const std::string &e : environment) putenv(const_cast<char *>(e.c_str()));
      std::vector<char *> args;
      for (const std::string &a : argv) args.push_back(const_cast<char *>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
    close(toChild[0]);
    close(fromChild[1]);
    input_ = toChild[1];
    output_ = fromChild[0];
  }
  ~Serving() {
    close(input_);
    close(output_);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int pid() const { return pid_; }

  std::string round() { return request("r\n"); }

  // Sends `lines` and returns what the program printed until its next "hf-round-end" line.
  std::string request(const std::string &lines) {
    static const std::string kEnd = "hf-round-end\n";
    if (write(input_, lines.data(), lines.size()) != ssize_t(lines.size())) return "(the sample does not read its input)";
    std::string text;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (text.size() < kEnd.size() || text.compare(text.size() - kEnd.size(), kEnd.size(), kEnd) != 0) {
      pollfd p{output_, POLLIN, 0};
      if (std::chrono::steady_clock::now() > deadline || poll(&p, 1, 1000) < 0) return text + "(timed out)";
      char buffer[4096];
      ssize_t got = p.revents ? read(output_, buffer, sizeof buffer) : 0;
      if (p.revents && got <= 0) return text + "(the sample exited)";
      text.append(buffer, size_t(std::max<ssize_t>(got, 0)));
    }
    return text.substr(0, text.size() - kEnd.size());
  }

  // Waits until the agent has said `count` lines starting with one of `words`, then returns them.
  std::vector<std::string> agentSaid(size_t count) const {
    std::vector<std::string> lines;
    for (int i = 0; i == 0 || (i < 6000 && lines.size() < count); ++i) {
      if (i) std::this_thread::sleep_for(10ms);
      lines.clear();
      std::istringstream all(readFile(errors_));
      for (std::string line; std::getline(all, line);)
        if (line.rfind("hotforge-agent", 0) == 0) lines.push_back(line);
    }
    return lines;
  }

private:
  pid_t pid_ = -1;
  int input_ = -1, output_ = -1;
  std::string errors_;
};

enum class Applier { Ptrace, Agent };

inline std::string expectedOutput(const std::string &program, const std::string &variant) {
  return readFile(std::string(HOTFORGE_SOURCE_DIR) + "/samples/expected/" + program + "." + variant + ".txt");
}

inline std::string samplePath(const std::string &target, const std::string &program, const std::string &variant) {
  for (const Sample &s : samples(target))
    if (s.program == program && s.variant == variant) return s.path;
  return "";
}

}  // namespace hotforge::test
