// End to end on running processes.
// - The `live` sample (scenario 14: threads calling live_score in a loop) is started from its
//   baseline, a unit built from its patched build is applied while it runs, and its output must
//   switch to exactly the patched values, then back after revert, with no wrong value in between.
//   Refusals must leave the process running unchanged.
// - Every other hotpatchable scenario, on every ELF target: the baseline runs in `serve` mode
//   (samples/src/hf_serve.h), and each round must print exactly the baseline's expected output,
//   then after apply exactly the patched build's, then after revert the baseline's again. x64 is
//   patched from outside (hotforge apply/revert, ptrace) and from inside (the agent); Arm64, under
//   qemu-user, by the agent.
#include "live_process.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <iostream>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace hotforge::test {
namespace {

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

// A unit with images for several programs (as `release` packs them): apply takes the image whose
// baseline the process runs and skips the others, by the kind of the refusal, not its text.
TEST(Loader, AReleaseUnitAppliesTheImageThatFitsAndSkipsTheOthers) {
  const std::string base = sample("elf-x64-gcc", "base");
  Unit fits = makeUnit(base, sample("elf-x64-gcc", "fix14"), "release-unit");
  Unit clang = makeUnit(sample("elf-x64-clang", "base"), sample("elf-x64-clang", "fix14"), "release-unit-clang");
  std::string dir = tempDir(), key = dir + "/release-unit-key.pem";
  std::string both = dir + "/release-unit-both.hfu", neither = dir + "/release-unit-neither.hfu";
  std::string coreClang = dir + "/release-unit-core-clang.hfpatch";
  ASSERT_EQ(hotforge({"build", samplePath("elf-x64-clang", "core", "base"), samplePath("elf-x64-clang", "core", "fix1"),
                      "-o", coreClang}).exitCode, 0);
  ASSERT_EQ(hotforge({"pack", dir + "/release-unit-clang.hfpatch", dir + "/release-unit.hfpatch", "-o", both, "--key", key})
                .exitCode, 0);
  ASSERT_EQ(hotforge({"pack", dir + "/release-unit-clang.hfpatch", coreClang, "-o", neither, "--key", key}).exitCode, 0);
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-release-unit").c_str(), 1);
  Running live(base, {"100000", "1", "2"}, tempDir() + "/release-unit.out");
  live.waitForLines(20);
  std::string pid = std::to_string(live.pid());

  CommandResult r = hotforge({"apply", "--pid", pid, neither, "--pubkey", fits.publicKey});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.err, "hotforge: error: no image of " + neither + " fits a binary that process " + pid + " runs\n");
  r = hotforge({"apply", "--pid", pid, both, "--pubkey", fits.publicKey});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("applied release-unit.hfpatch (sequence 1) to process " + pid), std::string::npos) << r.out;
  nlohmann::json status = nlohmann::json::parse(hotforge({"status", "--pid", pid, "--json"}).out);
  ASSERT_EQ(status["applied"].size(), 1u) << status.dump();
  EXPECT_EQ(status["applied"][0]["entry"], "release-unit.hfpatch");
  live.waitForLines(40);
  EXPECT_NE(live.verdicts().find('P'), std::string::npos) << "the patched function never ran";
  ASSERT_EQ(hotforge({"revert", "--pid", pid}).exitCode, 0);
  ASSERT_TRUE(live.alive());
}

TEST(Loader, LaterSequenceReplacesTheEarlierOneAndAnEarlierOneIsRefused) {
  const std::string base = sample("elf-x64-gcc", "base"), patched = sample("elf-x64-gcc", "fix14");
  Unit first = makeUnit(base, patched, "sequence-1");
  std::string second = tempDir() + "/sequence-2.hfu", image = tempDir() + "/sequence-2.hfpatch";
  ASSERT_EQ(hotforge({"build", base, patched, "-o", image, "--sequence", "2"}).exitCode, 0);
  ASSERT_EQ(hotforge({"pack", image, "-o", second, "--key", tempDir() + "/sequence-1-key.pem"}).exitCode, 0);
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-sequence").c_str(), 1);
  Running live(base, {"100000", "1", "2"}, tempDir() + "/sequence.out");
  live.waitForLines(20);
  std::string pid = std::to_string(live.pid());
  CommandResult r = hotforge({"apply", "--pid", pid, first.path, "--pubkey", first.publicKey});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = hotforge({"apply", "--pid", pid, second, "--pubkey", first.publicKey, "--consistency", "strict"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = hotforge({"apply", "--pid", pid, first.path, "--pubkey", first.publicKey});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("sequence 1 is not newer than sequence 2"), std::string::npos) << r.err;
  nlohmann::json status = nlohmann::json::parse(hotforge({"status", "--pid", pid, "--json"}).out);
  ASSERT_EQ(status["applied"].size(), 1u) << status.dump();
  EXPECT_EQ(status["applied"][0]["sequence"], 2);
  live.waitForLines(40);
  ASSERT_TRUE(live.alive());
  std::string seen = live.verdicts();
  EXPECT_EQ(seen.find('X'), std::string::npos) << seen;
  EXPECT_EQ(seen.back(), 'P') << seen;
}

// Every hotpatchable scenario of `target` except the live one: baseline, patched, baseline.
void everyScenarioSwitchesAndBack(const std::string &target, Applier applier) {
  bool arm64 = target.find("a64") != std::string::npos;
  std::string agent = arm64 ? HOTFORGE_AGENT_AARCH64 : HOTFORGE_AGENT;
  ASSERT_TRUE(std::filesystem::exists(agent) || applier == Applier::Ptrace) << agent;
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-" + target).c_str(), 1);
  unsigned checked = 0;
  for (const nlohmann::json &scenario : samplesManifest()["scenarios"]) {
    std::string program = scenario["program"], variant = scenario["variant"];
    if (program == "live") continue;  // threads: the Loader tests above
    std::string base = samplePath(target, program, "base"), patched = samplePath(target, program, variant);
    ASSERT_FALSE(base.empty() || patched.empty()) << "every ELF target builds " << program << "." << variant;
    SCOPED_TRACE(target + " scenario " + std::to_string(scenario["scenario"].get<int>()));
    std::string name = target + "-" + variant + (applier == Applier::Agent ? "-agent" : "");
    std::string image = tempDir() + "/" + name + ".hfpatch";
    CommandResult built = hotforge({"build", base, patched, "-o", image});
    if (scenario["expected"]["verdict"] != "hotpatchable") {
      EXPECT_EQ(built.exitCode, 3) << "a needs-restart change must be refused: " << built.out;
      continue;
    }
    ASSERT_EQ(built.exitCode, 0) << built.err;
    Unit unit = makeUnit(base, patched, name);
    std::string units = tempDir() + "/units-" + name;
    std::filesystem::create_directories(units);
    std::vector<std::string> argv{base, "serve"}, environment;
    if (applier == Applier::Agent)
      environment = {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey};
    if (arm64) {
      // qemu-user hangs in clone on these machines: the agent works in its signal handler.
      argv.insert(argv.begin(), {"qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-E", "LD_PRELOAD=" + agent});
      environment.push_back("HOTFORGE_AGENT_IN_SIGNAL=1");
    } else if (applier == Applier::Agent) {
      environment.push_back("LD_PRELOAD=" + agent);
    }
    Serving serving(argv, environment, tempDir() + "/" + name + ".err");
    const std::string baseOutput = expectedOutput(program, "base"), patchedOutput = expectedOutput(program, variant);
    ASSERT_EQ(serving.round(), baseOutput);

    auto started = std::chrono::steady_clock::now();
    if (applier == Applier::Ptrace) {
      CommandResult applied = hotforge({"apply", "--pid", std::to_string(serving.pid()), unit.path, "--pubkey", unit.publicKey});
      ASSERT_EQ(applied.exitCode, 0) << applied.err;
      std::cout << "[ applied  ] " << name << ": " << applied.out;
    } else {
      std::filesystem::copy_file(unit.path, units + "/unit.hfu");
      kill(serving.pid(), SIGUSR2);
      std::vector<std::string> said = serving.agentSaid(1);
      ASSERT_EQ(said.size(), 1u);
      ASSERT_NE(said[0].find("applied"), std::string::npos) << said[0];
      std::cout << "[ applied  ] " << name << ": " << said[0] << "\n";
    }
    std::cout << "[ time     ] " << name << ": apply took "
              << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count()
              << " ms\n";
    EXPECT_EQ(serving.round(), patchedOutput);

    if (applier == Applier::Ptrace) {
      CommandResult reverted = hotforge({"revert", "--pid", std::to_string(serving.pid())});
      ASSERT_EQ(reverted.exitCode, 0) << reverted.err;
    } else {
      std::filesystem::remove(units + "/unit.hfu");
      kill(serving.pid(), SIGUSR2);
      std::vector<std::string> said = serving.agentSaid(2);
      ASSERT_EQ(said.size(), 2u);
      ASSERT_NE(said[1].find("reverted"), std::string::npos) << said[1];
    }
    EXPECT_EQ(serving.round(), baseOutput);
    ++checked;
  }
  EXPECT_EQ(checked, 22u) << "scenarios 1-5, 7-13, 20, 30, 32, 33, 40-42 and 50-52 switch to the patch and back";
}

TEST(LiveEndToEnd, TheAgentRefusesTamperedAndForeignUnitsAndLeavesTheProcessAlone) {
  const std::string base = samplePath("elf-x64-gcc", "core", "base");
  Unit unit = makeUnit(base, samplePath("elf-x64-gcc", "core", "fix1"), "agent-refusals");
  Unit otherKey = makeUnit(base, samplePath("elf-x64-gcc", "core", "fix1"), "agent-refusals-other-key");
  // Another build's unit, signed with the right key: not for this process, so skipped in silence.
  std::string otherBuild = otherBuildUnit("agent-refusals");
  std::string units = tempDir() + "/units-agent-refusals";
  std::filesystem::create_directories(units);
  std::string tampered = readFile(unit.path);
  tampered[tampered.size() / 2] ^= 0x40;
  writeFile(units + "/1-tampered.hfu", tampered);
  std::filesystem::copy_file(otherKey.path, units + "/2-other-key.hfu");
  std::filesystem::copy_file(otherBuild, units + "/3-other-build.hfu");
  Serving serving({base, "serve"},
                  {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey, "LD_PRELOAD=" HOTFORGE_AGENT},
                  tempDir() + "/agent-refusals.err");
  std::vector<std::string> said = serving.agentSaid(2);
  ASSERT_EQ(said.size(), 2u);
  EXPECT_NE(said[0].find("refused " + units + "/1-tampered.hfu"), std::string::npos) << said[0];
  EXPECT_NE(said[1].find("refused " + units + "/2-other-key.hfu"), std::string::npos) << said[1];
  EXPECT_NE(said[1].find("wrong key"), std::string::npos) << said[1];
  EXPECT_EQ(serving.round(), expectedOutput("core", "base"));
  EXPECT_EQ(serving.agentSaid(0).size(), 2u) << "nothing applied, nothing else refused";
}

// Scenario 41 on clang: entry_root's loop returns to its entry, so its redirect is quiescent. With
// the base looping inside it forever (`entry spin`: a cycle), each loader retries, then refuses
// naming the thread, and the process runs on as it was. x64 with ptrace, Arm64 with the agent under
// qemu-user (in its signal handler, which interrupts the loop; the agent's x64 thread mode shares
// the check, threadInTheWay).
TEST(LiveEndToEnd, AQuiescentRedirectIsRefusedWhileAThreadIsInsideTheFunction) {
  for (const char *target : {"elf-x64-clang", "elf-a64-clang"}) {
    SCOPED_TRACE(target);
    bool arm64 = std::string(target) == "elf-a64-clang";
    std::string base = samplePath(target, "entry", "base"), name = std::string("quiescent-") + target;
    Unit unit = makeUnit(base, samplePath(target, "entry", "fix41"), name);
    std::string units = tempDir() + "/units-" + name;
    std::filesystem::create_directories(units);
    for (Applier applier : {arm64 ? Applier::Agent : Applier::Ptrace}) {
      std::filesystem::remove(units + "/unit.hfu");
      std::vector<std::string> environment;
      if (applier == Applier::Agent) {
        environment = {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey};
        environment.push_back(arm64 ? "HOTFORGE_AGENT_IN_SIGNAL=1" : "LD_PRELOAD=" HOTFORGE_AGENT);
      }
      std::vector<std::string> command = environment;  // through env(1): VAR=VALUE... PROGRAM ARGS
      if (arm64)
        command.insert(command.end(), {"qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-E", "LD_PRELOAD=" HOTFORGE_AGENT_AARCH64});
      command.insert(command.end(), {base, "spin"});
      std::string output = tempDir() + "/" + name + ".out";
      Running spinning("/usr/bin/env", command, output);
      for (int i = 0; i < 1000 && readFile(output).find("s41 spin start") == std::string::npos; ++i)
        std::this_thread::sleep_for(10ms);
      ASSERT_NE(readFile(output).find("s41 spin start"), std::string::npos) << readFile(output);
      std::string refusal;
      if (applier == Applier::Ptrace) {
        CommandResult applied = hotforge({"apply", "--pid", std::to_string(spinning.pid()), unit.path, "--pubkey", unit.publicKey});
        EXPECT_NE(applied.exitCode, 0);
        refusal = applied.err;
      } else {
        std::filesystem::copy_file(unit.path, units + "/unit.hfu");
        kill(spinning.pid(), SIGUSR2);
        for (int i = 0; i < 1000 && readFile(output).find("cannot apply") == std::string::npos; ++i)
          std::this_thread::sleep_for(10ms);
        refusal = readFile(output);
      }
      EXPECT_NE(refusal.find("gave up after"), std::string::npos) << refusal;
      // The thread that loops, the process itself (qemu-user runs the guest on its main thread):
      // "runs in entry_root", or "is at ... inside entry_root" when it was stopped in the jump's bytes.
      std::smatch named;
      EXPECT_TRUE(std::regex_search(refusal, named, std::regex("thread " + std::to_string(spinning.pid()) +
                                                               " (runs in|is at 0x[0-9a-f]+ inside) entry_root")))
          << refusal;
      EXPECT_TRUE(spinning.alive());
      EXPECT_EQ(readFile(output).find("spin done"), std::string::npos) << "the base is still looping";
    }
  }
}

// Scenario 20's image with its new import renamed to a symbol no object defines (`strspq`, the
// same length, in the records' string table): ptrace and the agent both refuse it naming the
// symbol before they map or write anything, and the process runs on as the baseline.
TEST(LiveEndToEnd, AnUnresolvableImportIsRefusedBeforeAnythingIsWritten) {
  const std::string base = samplePath("elf-x64-gcc", "core", "base"), dir = tempDir();
  std::string image = dir + "/no-such-import.hfpatch", unit = dir + "/no-such-import.hfu", key = dir + "/no-such-import-key";
  ASSERT_EQ(hotforge({"build", base, samplePath("elf-x64-gcc", "core", "fix20"), "-o", image}).exitCode, 0);
  ASSERT_EQ(hotforge({"keygen", "-o", key}).exitCode, 0);
  std::string bytes = readFile(image);
  const std::string symbol("strspn\0", 7), missing("strspq\0", 7);
  size_t renamed = 0;
  for (size_t at = bytes.find(symbol); at != std::string::npos; at = bytes.find(symbol, at + 1), ++renamed)
    bytes.replace(at, symbol.size(), missing);
  ASSERT_EQ(renamed, 1u) << "the records name the import once";
  writeFile(image, bytes);
  ASSERT_EQ(hotforge({"pack", image, "-o", unit, "--key", key + ".pem"}).exitCode, 0);
  setenv("HOTFORGE_STATE_DIR", (dir + "/state-no-such-import").c_str(), 1);
  for (Applier applier : {Applier::Ptrace, Applier::Agent}) {
    std::string units = dir + "/units-no-such-import-" + std::to_string(int(applier));
    std::filesystem::create_directories(units);
    std::vector<std::string> environment;
    if (applier == Applier::Agent)
      environment = {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + key + ".pub.pem", "LD_PRELOAD=" + std::string(HOTFORGE_AGENT)};
    Serving serving({base, "serve"}, environment, units + ".err");
    ASSERT_EQ(serving.round(), expectedOutput("core", "base"));
    std::string maps = readFile("/proc/" + std::to_string(serving.pid()) + "/maps");
    std::string refusal;
    if (applier == Applier::Ptrace) {
      CommandResult r = hotforge({"apply", "--pid", std::to_string(serving.pid()), unit, "--pubkey", key + ".pub.pem"});
      EXPECT_EQ(r.exitCode, 1);
      refusal = r.err;
    } else {
      std::filesystem::copy_file(unit, units + "/unit.hfu");
      kill(serving.pid(), SIGUSR2);
      std::vector<std::string> said = serving.agentSaid(1);
      ASSERT_EQ(said.size(), 1u);
      refusal = said[0];
    }
    EXPECT_NE(refusal.find("`strspq@GLIBC_2.2.5`"), std::string::npos) << refusal;
    EXPECT_NE(refusal.find("nothing was written"), std::string::npos) << refusal;
    // Nothing mapped: no new mapping at all from outside; inside, the agent's own thread may take a
    // malloc arena, but no image (its code would be executable).
    std::istringstream after(readFile("/proc/" + std::to_string(serving.pid()) + "/maps"));
    for (std::string line; std::getline(after, line);)
      if (applier == Applier::Ptrace || line.find("r-xp") != std::string::npos)
        EXPECT_NE(maps.find(line + "\n"), std::string::npos) << "mapped since the apply began: " << line;
    EXPECT_EQ(serving.round(), expectedOutput("core", "base"));
  }
}

TEST(LiveEndToEnd, EveryScenarioOnX64ThroughPtrace) {
  for (const char *target : {"elf-x64-gcc", "elf-x64-clang"}) everyScenarioSwitchesAndBack(target, Applier::Ptrace);
}

TEST(LiveEndToEnd, EveryScenarioOnX64ThroughTheAgent) {
  for (const char *target : {"elf-x64-gcc", "elf-x64-clang"}) everyScenarioSwitchesAndBack(target, Applier::Agent);
}

TEST(LiveEndToEnd, EveryScenarioOnArm64UnderQemuThroughTheAgent) {
  for (const char *target : {"elf-a64-gcc", "elf-a64-clang"}) everyScenarioSwitchesAndBack(target, Applier::Agent);
}

}  // namespace
}  // namespace hotforge::test
