// PE images proved by running them (loader/pe/): for every hotpatchable scenario built for pe-x64
// and pe-a64, an image is built with the CLI and applied to the base DLL, natively under wine64
// (hotforge-pe-apply.exe) or in Unicorn (hotforge-pe-emulate). The calls must return the base
// DLL's own results before, exactly the patched DLL's own results while the patch is in place,
// and the base's again after revert; applied to another DLL, the image is refused. The oracles
// are the DLLs themselves, run by the same tool without an image; only the calls are written here.
// Bad input (missing, truncated, crafted files, the other machine) gives one error and exit 1.
#include "test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

namespace hotforge::test {
namespace {

constexpr char kWine[] = "/usr/lib/wine/wine64";
constexpr char kWineServer[] = "/usr/lib/wine/wineserver64";

// The calls that show a scenario's change (samples/README.md, samples/src/core_main.c). Most
// functions keep no state; two keep it in the base's globals, which the patched code shares:
// setup calls bring each oracle DLL to the state the process is in when that phase starts.
struct ScenarioCalls {
  std::vector<std::string> calls;
  std::vector<std::string> patchedSetup;   // on the patched DLL: the state the "before" calls left
  std::vector<std::string> revertedSetup;  // on the base after `calls`: the state the patched code left
};

ScenarioCalls stateless(std::vector<std::string> calls) { return {std::move(calls), {}, {}}; }
std::vector<std::string> repeated(const std::string &call, size_t times) { return std::vector<std::string>(times, call); }

const std::map<int, ScenarioCalls> &scenarioCalls() {
  static const std::map<int, ScenarioCalls> calls{
      {1, stateless({"table_get:0", "table_get:15", "table_get:16", "table_get:17", "table_get:-1"})},
      {2, stateless({"volume_set:-3", "volume_set:5", "volume_set:12", "volume_step:5,-9", "volume_step:5,2"})},
      {3, stateless({"checksum_text:\"abc\"", "checksum_text:\"a\\tb\\n\""})},
      {4, stateless({"status_text:0:str", "status_text:1:str", "status_text:2:str", "status_text:5:str"})},
      // g_total: 2 after the base's calls; the patch adds 5 and counts -3 in its own g_rejected: 7.
      {5, {{"add_sample:5", "add_sample:-3"}, {"add_sample:2"}, {"add_sample:5"}}},
      {7, stateless({"mask_flags:0x1f3", "mask_flags:0x42"})},
      // The counter: 109 after the base's nine calls; the patch skips 110 and leaves it at 119.
      {8, {repeated("next_ticket", 9), repeated("next_ticket", 9), repeated("next_ticket", 10)}},
      {9, stateless({"op_apply:6,-10", "op_apply:6,20", "op_apply:-1,-10", "op_apply:0,-10", "op_apply:15,-10", "op_apply:16,-10"})},
      {10, stateless({"parse_num:\"42\"", "parse_num:\"0x1f\"", "parse_num:\"017\""})},
      // Thread-local: every phase runs on a new thread, so each starts from tls_sum = 5.
      {12, stateless({"tls_accumulate:3", "tls_accumulate:-4", "tls_accumulate:10"})},
      {13, stateless({"digit_count:7", "digit_count:12345", "mix_hash:1", "mix_hash:4242"})},
      {14, stateless({"live_score:0", "live_score:5", "live_score:13"})},
      // A new import (hfplat_strspn), resolved by the applier as the process resolves the DLL's own.
      {20, stateless({"digit_span:\"1234567x\"", "digit_span:\"12\"", "digit_span:\"x1\""})},
      {30, stateless({"upd_scale:-2", "upd_scale:5", "upd_percent:1,4"})},
      {32, stateless({"upd_mode:4"})},
      {33, stateless({"upd_digits:\"12_345\"", "upd_parse_dec:\"41\"", "upd_parse_hex:\"ff\""})},
      {40, stateless({"entry_triple:0x60000000", "entry_triple:7"})},
      {41, stateless({"entry_root:\"aabcdefghijk\",3", "entry_root:\"aabcdefghijk\",11"})},
      {42, stateless({"entry_level:5", "entry_level:200"})},
      // Tables of pointers the image copies: to strings, to base functions and to a new one.
      {50, stateless({"upd_level_name:0:str", "upd_level_name:2:str", "upd_level_name:3:str", "upd_level_name:7:str",
                      "upd_apply_op:0,4", "upd_apply_op:1,5", "upd_apply_op:2,3"})},
      // A handler that only a table points at: the redirect at its entry catches the indirect call.
      {51, stateless({"upd_dispatch:0,4", "upd_dispatch:2,0", "upd_dispatch:2,7", "upd_on_close:-5"})},
      // A new read-only table: the image copies it (with the base's neighbour on gcc Arm64 ELF).
      {52, stateless({"upd_band_limit:0", "upd_band_limit:1", "upd_band_limit:2", "upd_band_limit:3", "upd_weight:2"})},
  };
  return calls;
}

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string> &b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<std::string> lastN(const std::vector<std::string> &all, size_t n) {
  return {all.end() - std::min(n, all.size()), all.end()};
}

std::vector<std::string> prefixed(const std::string &prefix, const std::vector<std::string> &results) {
  std::vector<std::string> out;
  for (const std::string &r : results) out.push_back(prefix + r);
  return out;
}

class PeApply {
public:
  explicit PeApply(std::vector<std::string> command) : command_(std::move(command)) {}

  // The tool's output lines for BASE IMAGE|- CALLS; a failed run fails the test.
  std::vector<std::string> run(const std::string &base, const std::string &image, const std::vector<std::string> &calls) const {
    CommandResult r = invoke(concat(concat(command_, {base, image}), calls));
    EXPECT_EQ(r.exitCode, 0) << base << " " << image << "\n" << r.err;
    return lines(r.out);
  }

  // Every hotpatchable scenario of `target`: build the image, apply it, compare with the oracles.
  void checkTarget(const std::string &target) const {
    const nlohmann::json &manifest = samplesManifest();
    std::map<int, std::string> verdicts;
    for (const nlohmann::json &s : manifest["scenarios"]) verdicts[s["scenario"]] = s["expected"]["verdict"];
    std::string dir = tempDir();
    int checked = 0;
    for (const nlohmann::json &sample : manifest["samples"]) {
      if (sample["target"] != target || sample["scenario"].is_null()) continue;
      int scenario = sample["scenario"];
      if (verdicts[scenario] != "hotpatchable") continue;  // scenario 6 needs a restart
      SCOPED_TRACE(target + " scenario " + std::to_string(scenario));
      auto found = scenarioCalls().find(scenario);
      if (found == scenarioCalls().end()) {
        ADD_FAILURE() << "no calls for scenario " << scenario << ": add them to scenarioCalls()";
        continue;
      }
      const ScenarioCalls &c = found->second;
      std::string program = sample["program"], variant = sample["variant"];
      std::string base = samplesDir() + "/" + target + "/" + program + ".base.dll";
      std::string patched = samplesDir() + "/" + std::string(sample["path"]);
      std::string image = dir + "/" + target + "." + variant + ".hfpatch.dll";
      CommandResult built = test::run({hotforgeBinary(), "build", base, patched, "-o", image});
      ASSERT_EQ(built.exitCode, 0) << built.err;

      size_t n = c.calls.size();
      std::vector<std::string> before = run(base, "-", c.calls);
      std::vector<std::string> whilePatched = lastN(run(patched, "-", concat(c.patchedSetup, c.calls)), n);
      std::vector<std::string> reverted =
          c.revertedSetup.empty() ? before : lastN(run(base, "-", concat(concat(c.calls, c.revertedSetup), c.calls)), n);
      ASSERT_EQ(before.size(), n);
      if (scenario != 13) EXPECT_NE(before, whilePatched) << "the calls do not show the change";  // 13: same output by design

      std::vector<std::string> expected =
          concat(concat(prefixed("before ", before), prefixed("patched ", whilePatched)), prefixed("reverted ", reverted));
      EXPECT_EQ(run(base, image, c.calls), expected);
      // Any other DLL than the image's baseline is refused before anything is called or written.
      CommandResult refused = invoke(concat(concat(command_, {patched, image}), c.calls));
      EXPECT_EQ(refused.exitCode, 1);
      EXPECT_NE(refused.err.find("is not the image's baseline"), std::string::npos) << refused.err;
      EXPECT_EQ(refused.out, "");
      ++checked;
    }
    EXPECT_GE(checked, 12) << "fewer scenarios than samples/README.md lists for " << target;
  }

  // Bad input, each refused with one error line, exit 1, nothing called: a missing file, a
  // directory, an image for the other machine, truncated files, and an ELF file as the base.
  void checkRefusals(const std::string &target, const std::string &otherTarget) const {
    std::string dir = tempDir() + "/refusals-" + target;
    std::filesystem::create_directories(dir);
    std::string base = samplesDir() + "/" + target + "/core.base.dll";
    std::string image = dir + "/fix1.dll", otherImage = dir + "/other.dll";
    for (auto [from, to] : {std::pair{target, image}, {otherTarget, otherImage}}) {
      std::string prefix = samplesDir() + "/" + from + "/core.";
      CommandResult built = test::run({hotforgeBinary(), "build", prefix + "base.dll", prefix + "fix1.dll", "-o", to});
      ASSERT_EQ(built.exitCode, 0) << built.err;
    }
    std::string truncatedImage = dir + "/truncated.dll", truncatedBase = dir + "/truncated-base.dll";
    writeFile(truncatedImage, readFile(image).substr(0, 0x300));  // headers and part of .text only
    writeFile(truncatedBase, readFile(base).substr(0, 0x300));
    struct Refusal {
      std::string base, image, says;
    };
    for (const Refusal &r : std::vector<Refusal>{{dir + "/missing.dll", image, "missing.dll"},
                                                 {base, dir + "/missing.dll", "missing.dll"},
                                                 {base, dir, "cannot"},
                                                 {base, otherImage, "the image is for pe"},
                                                 {base, truncatedImage, "truncated.dll"},
                                                 {base, base, "not a Hotforge patch image"},
                                                 {truncatedBase, image, "truncated-base.dll"},
                                                 {samplesDir() + "/elf-x64-gcc/core.base", "-", "core.base"}}) {
      SCOPED_TRACE(r.base + " " + r.image);
      CommandResult refused = invoke(concat(command_, {r.base, r.image, "table_get:16"}));
      EXPECT_EQ(refused.exitCode, 1);
      EXPECT_EQ(refused.out, "");
      EXPECT_EQ(lines(refused.err).size(), 1u) << refused.err;
      EXPECT_EQ(refused.err.rfind("error: ", 0), 0u) << refused.err;
      EXPECT_NE(refused.err.find(r.says), std::string::npos) << refused.err;
    }
  }

private:
  // Runs the tool once more when wine's own client lost its server ("wine client error: recvmsg:
  // Connection reset by peer" under load): that run never reached the tool, so it says nothing of it.
  CommandResult invoke(const std::vector<std::string> &argv) const {
    CommandResult r = test::run(argv);
    if (r.err.find("wine client error") != std::string::npos) r = test::run(argv);
    return r;
  }

  std::vector<std::string> command_;
};

// Keeps one wineserver for the prefix up for the whole test: started per run, it exits 3 s after
// the last client, and a client that connects while it exits fails before running anything.
class PersistentWineServer {
public:
  PersistentWineServer() { test::run({kWineServer, "-p"}); }
  ~PersistentWineServer() { test::run({kWineServer, "-k"}); }
};

TEST(PeApply, X64ImagesUnderWine) {
  std::string tool = HOTFORGE_PE_APPLY_X64;
  if (tool.empty() || !std::filesystem::exists(tool)) GTEST_SKIP() << "hotforge-pe-apply.exe not built (no x86_64-w64-mingw32-g++)";
  if (!std::filesystem::exists(kWine)) GTEST_SKIP() << "no " << kWine;
  // One prefix for every run, the one samples/run-wine.sh uses (made on first use, ~10 s).
  setenv("WINEPREFIX", (samplesDir() + "/wineprefix").c_str(), 0);
  setenv("WINEDEBUG", "-all", 0);
  PersistentWineServer server;
  PeApply({kWine, tool}).checkTarget("pe-x64");
  PeApply({kWine, tool}).checkRefusals("pe-x64", "pe-a64");
}

TEST(PeApply, Arm64ImagesInUnicorn) {
  std::string tool = HOTFORGE_PE_EMULATE;
  if (tool.empty()) GTEST_SKIP() << "hotforge-pe-emulate not built (no libunicorn-dev)";
  PeApply({tool}).checkTarget("pe-a64");
  PeApply({tool}).checkRefusals("pe-a64", "pe-x64");
}

// A DLL the emulator maps by hand must not crash it: one whose imports lead back to itself (the
// base copied as the hfplat.dll it imports) is refused.
TEST(PeApply, EmulatorRefusesADllThatImportsItself) {
  std::string tool = HOTFORGE_PE_EMULATE;
  if (tool.empty()) GTEST_SKIP() << "hotforge-pe-emulate not built (no libunicorn-dev)";
  std::string dll = tempDir() + "/hfplat.dll";
  writeFile(dll, readFile(samplesDir() + "/pe-a64/core.base.dll"));
  CommandResult refused = test::run({tool, dll, "-", "table_get:16"});
  EXPECT_EQ(refused.exitCode, 1);
  EXPECT_EQ(refused.out, "");
  EXPECT_NE(refused.err.find("error: hfplat.dll imports itself"), std::string::npos) << refused.err;
}

}  // namespace
}  // namespace hotforge::test
