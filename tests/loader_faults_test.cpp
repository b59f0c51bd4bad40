// The ptrace loader under faults and hostile environments (issue 17): an apply interrupted at any
// point never kills the target and leaves a record revert can use; signals for the target are not
// lost; the state directory and its records are trusted only when they are the caller's own;
// stale and malformed records are recognised. Faults are injected with strace where nothing else
// can place them: `-e inject=SYSCALL:signal=SIG:when=N` delivers SIG to the CLI at its Nth call.
#include "live_process.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sys/stat.h>

namespace hotforge::test {
namespace {

namespace fs = std::filesystem;

std::string stateDir(const std::string &name) {
  std::string dir = tempDir() + "/state-" + name;
  setenv("HOTFORGE_STATE_DIR", dir.c_str(), 1);
  return dir;
}

// `hotforge ARGS` under strace with `faults` (strace options); strace's own output is dropped.
CommandResult hotforgeUnderStrace(const std::vector<std::string> &faults, const std::vector<std::string> &args) {
  std::vector<std::string> argv{"strace", "-f", "-o", "/dev/null"};
  argv.insert(argv.end(), faults.begin(), faults.end());
  argv.push_back(hotforgeBinary());
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

nlohmann::json statusOf(int pid) {
  CommandResult r = hotforge({"status", "--pid", std::to_string(pid), "--json"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json status = nlohmann::json::parse(r.out, nullptr, false);
  return status.is_discarded() ? nlohmann::json{{"applied", nlohmann::json::array()}} : status;
}

// Whether the live sample's newest lines are all `verdict` ('B' baseline, 'P' patched).
bool settlesOn(const Running &live, char verdict) {
  live.waitForLines(40);
  std::string seen = live.verdicts();
  return seen.size() > 20 && seen.substr(seen.size() - 20).find_first_not_of(verdict) == std::string::npos;
}

std::string liveBase() { return sample("elf-x64-gcc", "base"); }
std::string livePatched() { return sample("elf-x64-gcc", "fix14"); }

// SIGINT, SIGTERM or SIGHUP at every fourth ptrace call of an apply: the CLI holds it until the
// apply finished or was rolled back, so the target never dies, and the record says what runs.
TEST(ApplyFaults, InterruptedAtAnyPtraceCallTheTargetLivesAndTheRecordIsTrue) {
  Unit unit = makeUnit(liveBase(), livePatched(), "interrupt");
  std::string dir = stateDir("interrupt");
  Running live(liveBase(), {"100000000", "1", "3"}, tempDir() + "/interrupt.out");
  live.waitForLines(30);
  std::string pid = std::to_string(live.pid());
  unsigned applied = 0;
  const char *signals[] = {"SIGINT", "SIGTERM", "SIGHUP"};
  for (int n = 10; n <= 46; n += 4) {
    std::string signal = signals[(n / 4) % 3];
    SCOPED_TRACE(signal + " at ptrace call " + std::to_string(n));
    hotforgeUnderStrace({"-e", "trace=ptrace", "-e", "inject=ptrace:signal=" + signal + ":when=" + std::to_string(n)},
                        {"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey});
    ASSERT_TRUE(live.alive());
    nlohmann::json status = statusOf(live.pid());
    ASSERT_LE(status["applied"].size(), 1u) << status.dump();
    if (status["applied"].empty()) {
      EXPECT_TRUE(settlesOn(live, 'B'));
      continue;
    }
    EXPECT_EQ(status["applied"][0]["state"], "applied") << status.dump();
    EXPECT_TRUE(settlesOn(live, 'P'));
    ++applied;
    CommandResult reverted = hotforge({"revert", "--pid", pid});
    ASSERT_EQ(reverted.exitCode, 0) << reverted.err;
    EXPECT_TRUE(settlesOn(live, 'B'));
  }
  EXPECT_GT(applied, 0u) << "a signal held until the apply is done lets it finish";
  ASSERT_TRUE(live.alive());
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find('X'), std::string::npos) << seen;
  for (const fs::directory_entry &e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().extension(), ".json") << "left behind: " << e.path();
}

// SIGKILL cannot be held. Killed at the first jump write or before the record is completed, the
// CLI leaves an "applying" record; status says so, and revert takes out whatever is in.
TEST(ApplyFaults, KilledCliLeavesARecordThatRevertCompletes) {
  Unit unit = makeUnit(liveBase(), livePatched(), "killed");
  std::string dir = stateDir("killed");
  Running live(liveBase(), {"100000000", "1", "3"}, tempDir() + "/killed.out");
  live.waitForLines(30);
  std::string pid = std::to_string(live.pid());
  // pwrite64: 1 the image, 2 the jump (killed as it is written: in or not). renameat: 1 the
  // "applying" record, 2 its completion (the jump is in).
  for (auto [call, n, patched] : {std::tuple{"pwrite64", 2, '?'}, {"rename,renameat,renameat2", 2, 'P'}}) {
    SCOPED_TRACE(std::string(call) + " " + std::to_string(n));
    hotforgeUnderStrace({"-e", std::string("trace=") + call, "-e",
                         std::string("inject=") + call + ":signal=SIGKILL:when=" + std::to_string(n)},
                        {"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey});
    ASSERT_TRUE(live.alive());
    if (patched != '?') EXPECT_TRUE(settlesOn(live, patched));
    nlohmann::json status = statusOf(live.pid());
    ASSERT_EQ(status["applied"].size(), 1u) << status.dump();
    EXPECT_EQ(status["applied"][0]["state"], "applying") << status.dump();
    CommandResult text = hotforge({"status", "--pid", pid});
    EXPECT_NE(text.out.find("interrupted while applying"), std::string::npos) << text.out;
    CommandResult reverted = hotforge({"revert", "--pid", pid});
    ASSERT_EQ(reverted.exitCode, 0) << reverted.err;
    EXPECT_TRUE(settlesOn(live, 'B'));
    EXPECT_TRUE(statusOf(live.pid())["applied"].empty());
  }
  // The completed record cannot be written (rename fails): the jumps come out again, exit 1.
  CommandResult failed = hotforgeUnderStrace({"-e", "trace=rename,renameat,renameat2", "-e",
                                              "inject=rename,renameat,renameat2:error=EIO:when=2"},
                                             {"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey});
  EXPECT_NE(failed.err.find("Input/output error"), std::string::npos) << failed.err;
  EXPECT_TRUE(settlesOn(live, 'B'));
  // And a new apply after all that works, and removes the temporary record the kill left.
  CommandResult r = hotforge({"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(settlesOn(live, 'P'));
  for (const fs::directory_entry &e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename(), pid + ".json") << "left behind: " << e.path();
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find('X'), std::string::npos) << seen;
}

// The state cannot be written: nothing is applied (the record comes before the first change).
TEST(ApplyFaults, UnwritableStateRefusesBeforeTheProcessChanges) {
  Unit unit = makeUnit(liveBase(), livePatched(), "unwritable");
  std::string file = tempDir() + "/not-a-directory";
  writeFile(file, "x");
  setenv("HOTFORGE_STATE_DIR", (file + "/state").c_str(), 1);
  Running live(liveBase(), {"100000", "2", "2"}, tempDir() + "/unwritable.out");
  live.waitForLines(20);
  CommandResult r = hotforge({"apply", "--pid", std::to_string(live.pid()), unit.path, "--pubkey", unit.publicKey});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("state directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(settlesOn(live, 'B'));
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find_first_not_of('B'), std::string::npos) << seen;
}

bool mainThreadTraceStopped(int pid) {
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 't';
}

// A signal sent to the target while the CLI holds its threads is delivered when they go: the
// live sample has no handler, so SIGTERM or SIGUSR1 must end it. The CLI is held at ptrace call N
// for a second (strace's delay_exit) while the signal is sent.
TEST(ApplyFaults, SignalsArrivingWhileThreadsAreHeldAreDelivered) {
  Unit unit = makeUnit(liveBase(), livePatched(), "signals");
  stateDir("signals");
  // Where the calls are: the first PTRACE_SETREGS of an apply sets up the injected mmap (a signal
  // pending then meets the injected step), the last PTRACE_GETREGS is the check in the
  // all-threads stop. Counted on this binary's own trace, so the points hold for any version.
  int firstSetregs = 0, lastGetregs = 0;
  {
    Running probe(liveBase(), {"100000", "5", "2"}, tempDir() + "/signals-probe.out");
    probe.waitForLines(10);
    std::string log = tempDir() + "/signals.strace";
    hotforgeUnderStrace({"-o", log, "-e", "trace=ptrace"},
                        {"apply", "--pid", std::to_string(probe.pid()), unit.path, "--pubkey", unit.publicKey});
    std::istringstream lines(readFile(log));
    int n = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.find("ptrace(") == std::string::npos) continue;
      ++n;
      if (line.find("PTRACE_GETREGS") != std::string::npos) lastGetregs = n;
      if (line.find("PTRACE_SETREGS") != std::string::npos && !firstSetregs) firstSetregs = n;
    }
  }
  ASSERT_GT(firstSetregs, 0);
  ASSERT_GT(lastGetregs, 10);
  for (auto [n, signal] : {std::pair{firstSetregs, SIGTERM}, {lastGetregs, SIGUSR1}}) {
    SCOPED_TRACE("signal " + std::to_string(signal) + " at ptrace call " + std::to_string(n));
    Running live(liveBase(), {"100000", "5", "2"}, tempDir() + "/signals.out");
    live.waitForLines(10);
    std::thread apply([&] {
      hotforgeUnderStrace({"-e", "trace=ptrace", "-e", "inject=ptrace:delay_exit=1500000:when=" + std::to_string(n)},
                          {"apply", "--pid", std::to_string(live.pid()), unit.path, "--pubkey", unit.publicKey});
    });
    // Sent once the main thread is in a ptrace stop: the CLI holds it at call N.
    for (int i = 0; i < 500 && !mainThreadTraceStopped(live.pid()); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(mainThreadTraceStopped(live.pid()));
    kill(live.pid(), signal);
    apply.join();
    EXPECT_EQ(live.killedBy(10s), signal);
  }
}

// Records bound to pid and start time: a dead process's record is removed and never listed; a
// record of an earlier process with the same pid is not applied to the new one.
TEST(StateRecords, StaleRecordsOfDeadOrReusedPidsAreRemoved) {
  Unit unit = makeUnit(liveBase(), livePatched(), "stale");
  std::string dir = stateDir("stale");
  std::string record;
  int deadPid = 0;
  {
    Running live(liveBase(), {"100000", "2", "2"}, tempDir() + "/stale.out");
    live.waitForLines(10);
    deadPid = live.pid();
    ASSERT_EQ(hotforge({"apply", "--pid", std::to_string(deadPid), unit.path, "--pubkey", unit.publicKey}).exitCode, 0);
    EXPECT_EQ(fs::status(dir).permissions(), fs::perms::owner_all) << "created 0700";
    record = readFile(dir + "/" + std::to_string(deadPid) + ".json");
    ASSERT_NE(record.find("\"start_time\""), std::string::npos) << record;
  }
  CommandResult r = hotforge({"status", "--pid", std::to_string(deadPid)});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("is not running"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("live_score"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/" + std::to_string(deadPid) + ".json"));

  // The same record under the pid of a running process (another start time): not its patch.
  Running other(liveBase(), {"100000", "2", "2"}, tempDir() + "/stale-other.out");
  other.waitForLines(10);
  nlohmann::json reused = nlohmann::json::parse(record);
  reused["pid"] = other.pid();
  writeFile(dir + "/" + std::to_string(other.pid()) + ".json", reused.dump());
  chmod((dir + "/" + std::to_string(other.pid()) + ".json").c_str(), 0600);
  r = hotforge({"status", "--pid", std::to_string(other.pid())});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("no hotpatch applied"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("earlier process"), std::string::npos) << r.err;
  r = hotforge({"revert", "--pid", std::to_string(other.pid())});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("nothing is applied"), std::string::npos) << r.err;

  // An apply sweeps the records of processes that are gone.
  writeFile(dir + "/" + std::to_string(deadPid) + ".json", record);
  ASSERT_EQ(hotforge({"apply", "--pid", std::to_string(other.pid()), unit.path, "--pubkey", unit.publicKey}).exitCode, 0);
  EXPECT_FALSE(fs::exists(dir + "/" + std::to_string(deadPid) + ".json"));
  EXPECT_TRUE(settlesOn(other, 'P'));
}

// Malformed records are refused with one line by status and revert (they aborted, exit 134).
TEST(StateRecords, MalformedRecordsAreRefusedWithOneLine) {
  std::string dir = stateDir("malformed");
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  Running live(liveBase(), {"100000", "5", "1"}, tempDir() + "/malformed.out");
  live.waitForLines(5);
  std::string pid = std::to_string(live.pid()), path = dir + "/" + pid + ".json";
  auto record = [&](const std::string &written) {
    return nlohmann::json{{"schema", "hotforge.state/1"}, {"pid", live.pid()}, {"start_time", 1},
                          {"applied", {{{"state", "applied"}, {"unit", "u"}, {"entry", "e"}, {"baseline", "/b"},
                                        {"baseline_sha256", "00"}, {"sequence", 1}, {"base_address", 4096},
                                        {"image_address", 8192}, {"image_size", 4096},
                                        {"redirects", {{{"name", "f"}, {"address", 4096}, {"original", "9090909090"},
                                                        {"written", written}}}}}}}}.dump();
  };
  for (const std::string &bad : {std::string(R"({"applied":[{"sequence":"x","redirects":5}]})"), std::string("[1,2]"),
                                  record("zz90909090"), record("90"), std::string("{\"schema\": \"hotforge.state/1\""),
                                  std::string("null")}) {
    SCOPED_TRACE(bad);
    writeFile(path, bad);
    chmod(path.c_str(), 0600);
    for (const char *command : {"status", "revert"}) {
      CommandResult r = hotforge({command, "--pid", pid});
      EXPECT_EQ(r.exitCode, 1) << command << ": " << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
    }
  }
  fs::remove(path);
  fs::create_directory(path);
  CommandResult r = hotforge({"status", "--pid", pid});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
  fs::remove(path);
  fs::create_symlink("/etc/passwd", path);
  r = hotforge({"revert", "--pid", pid});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;
  EXPECT_TRUE(live.alive());
}

// The state directory is trusted only when it is the caller's own; records are 0600; a record
// whose bytes to restore are not the baseline's is refused before revert writes anything.
TEST(StateRecords, HostileStateDirectoriesAndTamperedRecordsAreRefused) {
  Unit unit = makeUnit(liveBase(), livePatched(), "hostile");
  Running live(liveBase(), {"100000", "2", "2"}, tempDir() + "/hostile.out");
  live.waitForLines(10);
  std::string pid = std::to_string(live.pid());
  auto apply = [&] { return hotforge({"apply", "--pid", pid, unit.path, "--pubkey", unit.publicKey}); };

  std::string open = stateDir("world-writable");
  fs::create_directories(open);
  fs::permissions(open, fs::perms::all, fs::perm_options::replace);
  CommandResult r = apply();
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("writable by group or others"), std::string::npos) << r.err;

  std::string link = stateDir("link");
  fs::create_directory_symlink(open, link);
  r = apply();
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;

  if (geteuid() == 0) {
    std::string foreign = stateDir("foreign");
    fs::create_directories(foreign);
    fs::permissions(foreign, fs::perms::owner_all, fs::perm_options::replace);
    ASSERT_EQ(chown(foreign.c_str(), 65534, 65534), 0);
    r = apply();
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_NE(r.err.find("not by you"), std::string::npos) << r.err;
  }
  EXPECT_TRUE(settlesOn(live, 'B'));

  // The temporary name is not PID.json.tmp (which another user could have made a link).
  std::string own = stateDir("own");
  fs::create_directories(own);
  fs::permissions(own, fs::perms::owner_all, fs::perm_options::replace);
  std::string victim = tempDir() + "/victim";
  writeFile(victim, "root's file");
  fs::create_symlink(victim, own + "/" + pid + ".json.tmp");
  r = apply();
  EXPECT_EQ(readFile(victim), "root's file");
  fs::remove(own + "/" + pid + ".json.tmp");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(fs::status(own).permissions(), fs::perms::owner_all);
  std::string path = own + "/" + pid + ".json";
  EXPECT_EQ(fs::status(path).permissions(), fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(std::distance(fs::directory_iterator(own), fs::directory_iterator()), 1) << "no temporary file is left";
  EXPECT_TRUE(settlesOn(live, 'P'));

  // Someone edits `original`: revert must not write those bytes into the process.
  nlohmann::json record = nlohmann::json::parse(readFile(path));
  std::string saved = record.dump();
  std::string &original = record["applied"][0]["redirects"][0]["original"].get_ref<std::string &>();
  original = std::string(original.size(), 'c');  // int3s
  writeFile(path, record.dump());
  r = hotforge({"revert", "--pid", pid});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("the record was changed"), std::string::npos) << r.err;
  EXPECT_TRUE(settlesOn(live, 'P'));
  writeFile(path, saved);
  r = hotforge({"revert", "--pid", pid});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(settlesOn(live, 'B'));
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find('X'), std::string::npos) << seen;
}


// The agent reads only regular files of its unit directory and never blocks on one: a FIFO and a
// link to /dev/zero are refused at start (the program starting at all is the point), and a FIFO
// added later does not keep the next update from applying a unit.
TEST(AgentFaults, FifosAndDevicesInTheUnitDirectoryAreRefusedWithoutBlocking) {
  const std::string base = samplePath("elf-x64-gcc", "core", "base");
  Unit unit = makeUnit(base, samplePath("elf-x64-gcc", "core", "fix1"), "agent-fifo");
  std::string units = tempDir() + "/units-agent-fifo";
  fs::create_directories(units);
  ASSERT_EQ(mkfifo((units + "/0-fifo.hfu").c_str(), 0600), 0);
  fs::create_symlink("/dev/zero", units + "/1-zero.hfu");
  Serving serving({base, "serve"},
                  {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey, "LD_PRELOAD=" HOTFORGE_AGENT},
                  tempDir() + "/agent-fifo.err");
  EXPECT_EQ(serving.round(), expectedOutput("core", "base"));
  std::vector<std::string> said = serving.agentSaid(2);
  ASSERT_EQ(said.size(), 2u);
  EXPECT_NE(said[0].find("0-fifo.hfu: is a FIFO"), std::string::npos) << said[0];
  EXPECT_NE(said[1].find("1-zero.hfu: is a character device"), std::string::npos) << said[1];
  ASSERT_EQ(mkfifo((units + "/2-later.hfu").c_str(), 0600), 0);
  fs::copy_file(unit.path, units + "/3-unit.hfu");
  kill(serving.pid(), SIGUSR2);
  said = serving.agentSaid(6);
  ASSERT_EQ(said.size(), 6u);
  EXPECT_NE(said[4].find("2-later.hfu: is a FIFO"), std::string::npos) << said[4];
  EXPECT_NE(said[5].find("applied"), std::string::npos) << said[5];
  EXPECT_EQ(serving.round(), expectedOutput("core", "fix1"));
}

// SIGUSR2 while the agent's first scan runs (its handler used to come after it) asks for one
// more update instead of killing the program. The scan is made long by units for another build
// (each verified, then every mapped file hashed), after a tampered one that says it started.
TEST(AgentFaults, SigusrTwoDuringTheFirstScanIsAnUpdateNotTheEnd) {
  const std::string base = samplePath("elf-x64-gcc", "core", "base");
  Unit unit = makeUnit(base, samplePath("elf-x64-gcc", "core", "fix1"), "agent-early");
  std::string otherBuild = otherBuildUnit("agent-early");
  std::string units = tempDir() + "/units-agent-early";
  fs::create_directories(units);
  std::string tampered = readFile(unit.path);
  tampered[tampered.size() / 2] ^= 0x40;
  writeFile(units + "/0-tampered.hfu", tampered);
  for (int i = 1; i <= 40; ++i) fs::copy_file(otherBuild, units + "/" + std::to_string(100 + i) + "-other.hfu");
  Serving serving({base, "serve"},
                  {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey, "LD_PRELOAD=" HOTFORGE_AGENT},
                  tempDir() + "/agent-early.err");
  ASSERT_EQ(serving.agentSaid(1).size(), 1u);
  for (int i = 0; i < 5; ++i) kill(serving.pid(), SIGUSR2);
  EXPECT_EQ(serving.round(), expectedOutput("core", "base"));
  std::vector<std::string> said = serving.agentSaid(2);
  ASSERT_EQ(said.size(), 2u) << "the signals asked for another scan";
  EXPECT_NE(said[1].find("refused " + units + "/0-tampered.hfu"), std::string::npos) << said[1];
}

}  // namespace
}  // namespace hotforge::test
