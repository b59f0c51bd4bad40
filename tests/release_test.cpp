// hotforge release on the real samples: a whole release over every target gives one verified unit
// per machine and a summary that names what is hotpatched and what needs a restart; shards + merge
// equal a single run byte for byte; failing pairs do not stop the others; reruns use the cache.
#include "hotforge/release.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>

namespace hotforge::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

CommandResult hotforge(std::vector<std::string> args) {
  args.insert(args.begin(), hotforgeBinary());
  return run(args);
}

// A fresh directory under the test process's temporary directory.
std::string freshDir(const std::string &name) {
  std::string dir = tempDir() + "/release-" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// One key pair for every test of this process.
const std::string &keyName() {
  static std::string name = [] {
    std::string n = freshDir("key") + "/release";
    CommandResult r = hotforge({"keygen", "-o", n});
    EXPECT_EQ(r.exitCode, 0) << r.err;
    return n;
  }();
  return name;
}
std::string privateKey() { return keyName() + ".pem"; }
std::string publicKey() { return keyName() + ".pub.pem"; }

const Sample *findSample(const std::string &target, const std::string &program, const std::string &variant) {
  static std::vector<Sample> all = samples();
  for (const Sample &s : all)
    if (s.target == target && s.program == program && s.variant == variant) return &s;
  return nullptr;
}

json scenario(const std::string &program, const std::string &variant) {
  for (const json &s : samplesManifest()["scenarios"])
    if (s["program"] == program && s["variant"] == variant) return s;
  ADD_FAILURE() << "no scenario " << program << "." << variant;
  return json::object();
}

struct PlannedPair {
  std::string name, target, program, variant;
};

// Every target of the four format/machine combinations, each core.base with another fix so
// that many scenarios are covered, plus initval (needs a restart), exc (ELF only) and live.
std::vector<PlannedPair> releasePairs() {
  const std::vector<std::pair<std::string, std::string>> coreFix = {
      {"elf-x64-gcc", "fix1"},   {"elf-x64-clang", "fix3"}, {"elf-a64-gcc", "fix9"},
      {"elf-a64-clang", "fix4"}, {"pe-x64", "fix5"},        {"pe-a64", "fix12"}};
  std::vector<PlannedPair> out;
  for (const auto &[target, fix] : coreFix) {
    for (const auto &[program, variant] : std::vector<std::pair<std::string, std::string>>{
             {"core", fix}, {"initval", "fix6"}, {"exc", "fix11"}, {"live", "fix14"}}) {
      if (!findSample(target, program, variant)) continue;  // exc is not built for pe-*
      out.push_back({target + "/" + program, target, program, variant});
    }
  }
  return out;
}

// The manifest of releasePairs(): elf-a64-gcc from its stripped builds with the debug directory,
// pe-x64 with explicit PDBs, the rest plain.
json releaseManifest(const std::string &release) {
  json entries = json::array();
  for (const PlannedPair &p : releasePairs()) {
    const Sample *base = findSample(p.target, p.program, "base");
    const Sample *patched = findSample(p.target, p.program, p.variant);
    EXPECT_TRUE(base && patched) << p.name;
    if (!base || !patched) continue;
    json e = {{"name", p.name}, {"baseline", base->path}, {"patched", patched->path}};
    if (p.target == "elf-a64-gcc") {
      e["baseline"] = base->strippedPath;
      e["patched"] = patched->strippedPath;
      e["debug_dir"] = fs::path(base->debugPath).parent_path().string();
    }
    if (p.target == "pe-x64") {
      e["pdb_base"] = base->pdbPath;
      e["pdb_patched"] = patched->pdbPath;
    }
    entries.push_back(e);
  }
  return {{"release", release}, {"baseline", "2026-10"}, {"sequence", 2}, {"entries", entries}};
}

std::string writeManifest(const std::string &dir, const json &manifest, const std::string &name = "release.json") {
  std::string path = dir + "/" + name;
  writeFile(path, manifest.dump(2));
  return path;
}

json readSummary(const std::string &outDir) {
  std::string text = readFile(outDir + "/summary.json");
  EXPECT_FALSE(text.empty()) << "no " << outDir << "/summary.json";
  return text.empty() ? json::object() : json::parse(text);
}

// OUTDIR/summary.html and every OUTDIR/pages/*.html by name.
std::map<std::string, std::string> reviewPages(const std::string &outDir) {
  std::map<std::string, std::string> out = {{"summary.html", readFile(outDir + "/summary.html")}};
  if (fs::exists(outDir + "/pages"))
    for (const fs::directory_entry &e : fs::directory_iterator(outDir + "/pages"))
      out["pages/" + e.path().filename().string()] = readFile(e.path().string());
  return out;
}

std::set<std::string> unitFiles(const std::string &outDir) {
  std::set<std::string> out;
  for (const fs::directory_entry &e : fs::directory_iterator(outDir))
    if (e.path().extension() == ".hfu") out.insert(e.path().filename().string());
  return out;
}

const json *pairOf(const json &summary, const std::string &name) {
  for (const json &p : summary["pairs"])
    if (p["name"] == name) return &p;
  return nullptr;
}

std::set<std::string> stringSet(const json &array) {
  std::set<std::string> out;
  for (const json &s : array) out.insert(s.get<std::string>());
  return out;
}

// Split parts travel with their function, as in differ_test: `f.cold` counts as `f`.
std::set<std::string> functionSet(const json &array) {
  std::set<std::string> out;
  for (std::string name : stringSet(array)) {
    if (size_t at = name.find(".cold"); at != std::string::npos) name.resize(at);
    out.insert(name);
  }
  return out;
}

// What tests/check_html.py found on a page; fails the test when the page is not well-formed.
json checkPage(const std::string &path) {
  CommandResult r = run({"/usr/bin/python3", std::string(HOTFORGE_SOURCE_DIR) + "/tests/check_html.py", path});
  EXPECT_EQ(r.exitCode, 0) << path << ": " << r.err;
  return r.exitCode == 0 ? json::parse(r.out)[path] : json::object();
}

// A JUnit file read by Python's XML parser: the suite's counts and each test case.
json readJunit(const std::string &path) {
  const char *script = R"(
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root.find("testsuite")
cases = [{"name": c.get("name"), "failure": c.find("failure") is not None and c.find("failure").text or None,
          "error": c.find("error") is not None} for c in suite.findall("testcase")]
print(json.dumps({"tests": int(suite.get("tests")), "failures": int(suite.get("failures")),
                  "errors": int(suite.get("errors")), "cases": cases}))
)";
  CommandResult r = run({"/usr/bin/python3", "-c", script, path});
  EXPECT_EQ(r.exitCode, 0) << path << ": " << r.err;
  return r.exitCode == 0 ? json::parse(r.out) : json::object();
}

TEST(Release, WholeReleaseOnEveryTarget) {
  std::string dir = freshDir("whole");
  std::string manifest = writeManifest(dir, releaseManifest("2026-11"));
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", manifest, "-o", out, "--key", privateKey(), "--progress", "lines"});
  // initval fix6 needs a restart on every target; nothing fails.
  ASSERT_EQ(r.exitCode, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("[1/"), std::string::npos) << r.err;  // plain progress lines (stderr is no terminal)
  EXPECT_NE(r.out.find("restart required:"), std::string::npos) << r.out;

  EXPECT_EQ(unitFiles(out), (std::set<std::string>{"2026-11-arm64.hfu", "2026-11-x64.hfu"}));
  for (const std::string &unit : unitFiles(out)) {
    CommandResult v = hotforge({"verify", out + "/" + unit, "--pubkey", publicKey()});
    EXPECT_EQ(v.exitCode, 0) << unit << ": " << v.out << v.err;
  }
  // The baseline identity in the unit matches the real base.
  CommandResult v = hotforge({"verify", out + "/2026-11-x64.hfu", "--pubkey", publicKey(), "--base",
                              findSample("elf-x64-gcc", "core", "base")->path});
  EXPECT_EQ(v.exitCode, 0) << v.out << v.err;

  json summary = readSummary(out);
  // Each entry's info names its pair and carries what `hotforge pack` records for an image.
  v = hotforge({"verify", out + "/2026-11-x64.hfu", "--pubkey", publicKey(), "--json"});
  ASSERT_EQ(v.exitCode, 0) << v.err;
  json verified = json::parse(v.out);
  ASSERT_FALSE(verified["entries"].empty());
  for (const json &e : verified["entries"]) {
    const json &info = e["info"];
    EXPECT_EQ(info["file"], e["name"]);
    EXPECT_EQ(info["size"], e["size"]);
    EXPECT_EQ(info["kind"], "hotpatch-image");
    const json *pair = pairOf(summary, info["pair"].get<std::string>());
    ASSERT_NE(pair, nullptr) << info;
    EXPECT_EQ((*pair)["entry"], e["name"]);
    EXPECT_EQ((*pair)["image"]["size"], e["size"]);
  }
  EXPECT_EQ(summary["schema"], "hotforge.release/1");
  EXPECT_EQ(summary["release"], "2026-11");
  EXPECT_EQ(summary["exit_code"], 3);
  std::vector<PlannedPair> pairs = releasePairs();
  EXPECT_EQ(summary["totals"]["pairs"].get<size_t>(), pairs.size());
  EXPECT_EQ(summary["totals"]["failed"], 0);
  std::set<std::string> restartNames;
  for (const json &entry : summary["restart_required"]) restartNames.insert(entry["name"].get<std::string>());

  std::map<std::string, std::set<std::string>> unitEntries;  // unit -> entries
  for (const json &u : summary["units"]) unitEntries[u["file"]] = stringSet(u["entries"]);
  for (const PlannedPair &p : pairs) {
    const json *result = pairOf(summary, p.name);
    ASSERT_NE(result, nullptr) << p.name;
    EXPECT_FALSE((*result)["cached"].get<bool>()) << p.name;
    if (p.program == "initval") {
      EXPECT_EQ((*result)["status"], "restart-required") << p.name;
      EXPECT_TRUE(restartNames.count(p.name)) << p.name;
      bool hf210 = false;
      for (const json &why : (*result)["restart"])
        hf210 = hf210 || (why["rule"] == "HF210" && why["name"] == "g_limit");
      EXPECT_TRUE(hf210) << p.name << ": " << (*result)["restart"].dump();
      EXPECT_TRUE((*result)["unit"].is_null());
      continue;
    }
    json expected = scenario(p.program, p.variant)["expected"];
    EXPECT_EQ((*result)["status"], "hotpatched") << p.name << ": " << result->dump();
    EXPECT_FALSE(restartNames.count(p.name)) << p.name;
    EXPECT_EQ(functionSet((*result)["changed_functions"]), stringSet(expected["changed"])) << p.name;
    EXPECT_EQ(functionSet((*result)["added_functions"]), stringSet(expected["added"])) << p.name;
    std::string machine = p.target.find("a64") != std::string::npos ? "arm64" : "x64";
    EXPECT_EQ((*result)["machine"], machine) << p.name;
    EXPECT_EQ((*result)["unit"], "2026-11-" + machine + ".hfu") << p.name;
    EXPECT_TRUE(unitEntries[(*result)["unit"]].count((*result)["entry"])) << p.name;
    EXPECT_GT((*result)["image"]["code"].get<uint64_t>(), 0u) << p.name;
    EXPECT_EQ((*result)["sequence"], 2);
  }
  EXPECT_EQ(restartNames.size(), 6u);  // initval on each of the six targets

  // summary.html links the review page of every pair with changes; each page shows every change.
  json overview = checkPage(out + "/summary.html");
  std::set<std::string> links;
  for (const json &l : overview["links"]) links.insert(l.get<std::string>());
  size_t pages = 0;
  for (const json &pair : summary["pairs"]) {
    bool changed = !pair.value("changes", json::array()).empty();
    ASSERT_EQ(pair["page"].is_string(), changed) << pair.dump();
    if (!changed) continue;
    ++pages;
    EXPECT_EQ(pair["page"], "pages/" + pair["entry"].get<std::string>() + ".html");
    EXPECT_TRUE(links.count(pair["page"].get<std::string>())) << pair["page"];
    json page = checkPage(out + "/" + pair["page"].get<std::string>());
    std::set<std::string> headings;
    for (const json &h : page["headings"]) headings.insert(h.get<std::string>());
    for (const json &c : pair["changes"])
      if (c["name"].get<std::string>().rfind("(unnamed", 0) != 0)
        EXPECT_TRUE(headings.count(c["name"].get<std::string>())) << pair["name"] << ": " << c["name"];
    EXPECT_NE(std::find(page["links"].begin(), page["links"].end(), json("../summary.html")), page["links"].end());
  }
  EXPECT_EQ(pages, pairs.size());  // every pair of this release changes something

  // --json prints summary.json plus the times; --junit writes one test case per pair.
  std::string junit = dir + "/junit.xml";
  CommandResult again = hotforge({"release", manifest, "-o", out, "--key", privateKey(), "--json", "--progress", "none",
                                  "--junit", junit});
  EXPECT_EQ(again.exitCode, 3) << again.err;
  json cases = readJunit(junit);
  EXPECT_EQ(cases["tests"], pairs.size());
  EXPECT_EQ(cases["failures"], 6);
  EXPECT_EQ(cases["errors"], 0);
  ASSERT_EQ(cases["cases"].size(), pairs.size());
  for (const json &c : cases["cases"]) {
    const json *pair = pairOf(summary, c["name"].get<std::string>());
    ASSERT_NE(pair, nullptr) << c;
    EXPECT_EQ(c["failure"].is_string(), (*pair)["status"] == "restart-required") << c;
    if (c["failure"].is_string()) EXPECT_NE(c["failure"].get<std::string>().find("HF210 g_limit: "), std::string::npos) << c;
  }
  json printed = json::parse(again.out);
  EXPECT_TRUE(printed.contains("times"));
  EXPECT_TRUE(printed["times"]["wall"].is_number());
  printed.erase("times");
  json stored = readSummary(out);
  EXPECT_EQ(printed, stored);
  EXPECT_TRUE(fs::exists(out + "/times.json"));
}

TEST(Release, ShardsAndMergeEqualASingleRun) {
  std::string dir = freshDir("shards");
  std::string manifest = writeManifest(dir, releaseManifest("2026-12"));
  std::string single = dir + "/single", s1 = dir + "/s1", s2 = dir + "/s2", merged = dir + "/merged";
  ASSERT_EQ(hotforge({"release", manifest, "-o", single, "--key", privateKey(), "-j", "2"}).exitCode, 3);
  CommandResult r1 = hotforge({"release", manifest, "-o", s1, "--shard", "1/2", "-j", "1"});
  CommandResult r2 = hotforge({"release", manifest, "-o", s2, "--shard", "2/2", "-j", "3"});
  EXPECT_TRUE(r1.exitCode == 0 || r1.exitCode == 3) << r1.err;
  EXPECT_TRUE(r2.exitCode == 0 || r2.exitCode == 3) << r2.err;
  EXPECT_TRUE(fs::exists(s1 + "/shard-1-of-2.json"));
  EXPECT_TRUE(fs::exists(s2 + "/shard-2-of-2.json"));
  EXPECT_TRUE(unitFiles(s1).empty());  // a shard makes no unit
  CommandResult m = hotforge({"release", "--merge", s1, s2, "-o", merged, "--key", privateKey()});
  ASSERT_EQ(m.exitCode, 3) << m.out << m.err;
  ASSERT_EQ(unitFiles(single), (std::set<std::string>{"2026-12-arm64.hfu", "2026-12-x64.hfu"}));
  EXPECT_EQ(unitFiles(merged), unitFiles(single));
  for (const std::string &file : unitFiles(single)) EXPECT_EQ(readFile(single + "/" + file), readFile(merged + "/" + file)) << file;
  EXPECT_EQ(readFile(single + "/summary.json"), readFile(merged + "/summary.json"));
  EXPECT_GT(reviewPages(single).size(), 1u);
  EXPECT_EQ(reviewPages(single), reviewPages(merged));

  // Both shards into one shared directory, merged from there: the same again.
  std::string shared = dir + "/shared", merged2 = dir + "/merged2";
  for (const char *slice : {"2/2", "1/2"}) {
    int code = hotforge({"release", manifest, "-o", shared, "--shard", slice}).exitCode;
    EXPECT_TRUE(code == 0 || code == 3) << slice << ": exit " << code;
  }
  ASSERT_EQ(hotforge({"release", "--merge", shared, "-o", merged2, "--key", privateKey()}).exitCode, 3);
  for (const std::string &file : unitFiles(single)) EXPECT_EQ(readFile(single + "/" + file), readFile(merged2 + "/" + file)) << file;
  EXPECT_EQ(readFile(single + "/summary.json"), readFile(merged2 + "/summary.json"));

  // A merge without every shard, or with shards of another plan, is refused.
  CommandResult partial = hotforge({"release", "--merge", s1, "-o", dir + "/partial", "--key", privateKey()});
  EXPECT_EQ(partial.exitCode, 1);
  EXPECT_NE(partial.err.find("shard(s) 2/2 missing"), std::string::npos) << partial.err;
  json other = releaseManifest("2026-12");
  other["sequence"] = 3;
  std::string otherDir = dir + "/other";
  int otherCode = hotforge({"release", writeManifest(dir, other, "other.json"), "-o", otherDir, "--shard", "2/2"}).exitCode;
  ASSERT_TRUE(otherCode == 0 || otherCode == 3) << otherCode;
  CommandResult mixed = hotforge({"release", "--merge", s1, otherDir, "-o", dir + "/mixed", "--key", privateKey()});
  EXPECT_EQ(mixed.exitCode, 1);
  EXPECT_NE(mixed.err.find("another release plan"), std::string::npos) << mixed.err;
}

// A release that cannot be signed writes no unit, no summary and no temporary file; a bad key is
// found before any work, so OUTDIR is not even created.
TEST(Release, AFailedReleaseLeavesNothingHalfWritten) {
  std::string dir = freshDir("unsigned");
  const Sample *base = findSample("elf-x64-gcc", "core", "base");
  const Sample *fix = findSample("elf-x64-gcc", "core", "fix1");
  ASSERT_TRUE(base && fix);
  std::string manifest =
      writeManifest(dir, {{"release", "r"}, {"entries", {{{"baseline", base->path}, {"patched", fix->path}}}}});
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", manifest, "-o", out, "--key", publicKey()});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.err, "hotforge: error: " + publicKey() +
                       ": this is a public key; signing needs the private key (NAME.pem, not NAME.pub.pem)\n");
  EXPECT_FALSE(fs::exists(out));
  r = hotforge({"release", manifest, "-o", out, "--sign-cmd", "false", "--pubkey", publicKey(), "--progress", "none"});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.err, "hotforge: error: r-x64.hfu: --sign-cmd failed with exit code 1\n");
  EXPECT_TRUE(r.out.empty()) << r.out;
  std::set<std::string> left;
  for (const fs::directory_entry &e : fs::directory_iterator(out)) left.insert(e.path().filename().string());
  EXPECT_EQ(left, std::set<std::string>{".cache"});  // the finished work stays reusable
}

TEST(Release, AFailingPairDoesNotStopTheOthers) {
  std::string dir = freshDir("failing");
  const Sample *base = findSample("elf-x64-clang", "core", "base");
  const Sample *fix = findSample("elf-x64-clang", "core", "fix1");
  const Sample *live = findSample("elf-x64-clang", "live", "fix14");
  ASSERT_TRUE(base && fix && live);
  json manifest = {{"release", "r-fail"},
                   {"entries",
                    {{{"name", "good"}, {"baseline", base->path}, {"patched", fix->path}},
                     {{"name", "missing"}, {"baseline", dir + "/no-such-file"}, {"patched", fix->path}},
                     {{"name", "unrelated"}, {"baseline", base->path}, {"patched", live->path}},
                     {{"name", "same"}, {"baseline", base->path}, {"patched", base->path}}}}};
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", writeManifest(dir, manifest), "-o", out, "--key", privateKey(), "-j", "2",
                              "--junit", dir + "/junit.xml"});
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("failed:"), std::string::npos) << r.out;
  // Failed pairs are JUnit errors; the others pass.
  json cases = readJunit(dir + "/junit.xml");
  EXPECT_EQ(cases["tests"], 4);
  EXPECT_EQ(cases["errors"], 2);
  EXPECT_EQ(cases["failures"], 0);
  std::set<std::string> errors;
  for (const json &c : cases["cases"])
    if (c["error"].get<bool>()) errors.insert(c["name"].get<std::string>());
  EXPECT_EQ(errors, (std::set<std::string>{"missing", "unrelated"}));
  checkPage(out + "/summary.html");
  json summary = readSummary(out);
  EXPECT_EQ(summary["exit_code"], 1);
  EXPECT_EQ(summary["totals"]["failed"], 2);
  EXPECT_EQ((*pairOf(summary, "good"))["status"], "hotpatched");
  EXPECT_EQ((*pairOf(summary, "same"))["status"], "unchanged");
  const json &missing = *pairOf(summary, "missing");
  EXPECT_EQ(missing["status"], "failed");
  EXPECT_NE(missing["error"].get<std::string>().find("no-such-file: cannot read"), std::string::npos) << missing;
  EXPECT_NE((*pairOf(summary, "unrelated"))["error"].get<std::string>().find("unrelated programs"), std::string::npos);
  EXPECT_EQ(unitFiles(out), std::set<std::string>{"r-fail-x64.hfu"});
  EXPECT_EQ(hotforge({"verify", out + "/r-fail-x64.hfu", "--pubkey", publicKey()}).exitCode, 0);
}

// Pair names are the manifest's: control characters in them are printed escaped (\x1b), never
// raw, so a name cannot rewrite the terminal; the JSON keeps them as they are.
TEST(Release, ControlCharactersInPairNamesAreEscaped) {
  std::string dir = freshDir("control");
  const Sample *base = findSample("elf-x64-clang", "core", "base");
  const Sample *fix = findSample("elf-x64-clang", "core", "fix1");
  ASSERT_TRUE(base && fix);
  const std::string evil = "evil\x1b[2J\rname\x07";
  json manifest = {{"release", "r-control"},
                   {"entries", {{{"name", evil}, {"baseline", dir + "/no-such-file"}, {"patched", fix->path}},
                                {{"name", "good"}, {"baseline", base->path}, {"patched", fix->path}}}}};
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", writeManifest(dir, manifest), "-o", out, "--key", privateKey(), "--progress", "lines"});
  for (const std::string &text : {r.out, r.err}) {
    EXPECT_EQ(text.find_first_of("\x1b\r\x07"), std::string::npos) << text;
  }
  EXPECT_NE(r.out.find("evil\\x1b[2J\\x0dname\\x07"), std::string::npos) << r.out;
  EXPECT_NE(pairOf(readSummary(out), evil), nullptr);
}

TEST(Release, RerunUsesTheCache) {
  std::string dir = freshDir("cache");
  // The pair that will change is a copy, so that its content can change under the same path.
  std::string changing = dir + "/changing.patched";
  fs::copy_file(findSample("elf-a64-clang", "core", "fix1")->path, changing);
  json manifest = releaseManifest("r-cache");
  manifest["entries"].push_back(
      {{"name", "changing"}, {"baseline", findSample("elf-a64-clang", "core", "base")->path}, {"patched", changing}});
  std::string path = writeManifest(dir, manifest), out = dir + "/out";
  ASSERT_EQ(hotforge({"release", path, "-o", out, "--key", privateKey()}).exitCode, 3);
  std::map<std::string, std::string> first;
  for (const std::string &f : unitFiles(out)) first[f] = readFile(out + "/" + f);
  ASSERT_EQ(first.size(), 2u);  // r-cache-arm64.hfu and r-cache-x64.hfu
  std::map<std::string, std::string> firstPages = reviewPages(out);
  EXPECT_EQ(readSummary(out)["totals"]["cached"], 0);

  CommandResult again = hotforge({"release", path, "-o", out, "--key", privateKey(), "--progress", "lines"});
  ASSERT_EQ(again.exitCode, 3) << again.err;
  EXPECT_NE(again.err.find("(cached)"), std::string::npos) << again.err;
  json summary = readSummary(out);
  ASSERT_EQ(summary["pairs"].size(), manifest["entries"].size());
  for (const json &p : summary["pairs"]) EXPECT_TRUE(p["cached"].get<bool>()) << p["name"];
  EXPECT_EQ(summary["totals"]["cached"], summary["totals"]["pairs"]);
  for (const auto &[file, bytes] : first) EXPECT_EQ(readFile(out + "/" + file), bytes) << file;
  EXPECT_EQ(reviewPages(out), firstPages);  // the pages come from the cache too

  // One pair changes: only it is rebuilt.
  fs::copy_file(findSample("elf-a64-clang", "core", "fix10")->path, changing, fs::copy_options::overwrite_existing);
  ASSERT_EQ(hotforge({"release", path, "-o", out, "--key", privateKey()}).exitCode, 3);
  summary = readSummary(out);
  for (const json &p : summary["pairs"]) EXPECT_EQ(p["cached"].get<bool>(), p["name"] != "changing") << p["name"];
  EXPECT_EQ(stringSet((*pairOf(summary, "changing"))["changed_functions"]), std::set<std::string>{"parse_num"});
  EXPECT_EQ(readFile(out + "/r-cache-x64.hfu"), first["r-cache-x64.hfu"]);  // no x64 pair changed
  EXPECT_NE(readFile(out + "/r-cache-arm64.hfu"), first["r-cache-arm64.hfu"]);

  // --no-cache neither reads nor writes it.
  std::string fresh = dir + "/fresh";
  ASSERT_EQ(hotforge({"release", path, "-o", fresh, "--key", privateKey(), "--no-cache"}).exitCode, 3);
  EXPECT_FALSE(fs::exists(fresh + "/.cache"));
  EXPECT_EQ(readSummary(fresh)["totals"]["cached"], 0);
}

TEST(Release, BuildRefusalNeedsARestart) {
  const Sample *base = findSample("mingw-x64", "exc", "base");
  const Sample *fix = findSample("mingw-x64", "exc", "fix11");
  if (!base || !fix) GTEST_SKIP() << "no mingw-x64 exc samples";
  std::string dir = freshDir("refused");
  json manifest = {{"release", "r-refused"},
                   {"entries", {{{"name", "exc.exe"}, {"baseline", base->path}, {"patched", fix->path}}}}};
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", writeManifest(dir, manifest), "-o", out, "--key", privateKey()});
  EXPECT_EQ(r.exitCode, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("HF412 : _Z14checked_lookupi has an exception handler"), std::string::npos) << r.out;
  json summary = readSummary(out);
  ASSERT_EQ(summary["restart_required"].size(), 1u);
  const json &why = summary["restart_required"][0]["reasons"][0];
  EXPECT_EQ(why["stage"], "build");
  EXPECT_EQ(why["rule"], "HF412");  // the emitter's rule id, as data
  EXPECT_TRUE(why["name"].is_null());
  EXPECT_EQ(why["reason"].get<std::string>().find("_Z14checked_lookupi has an exception handler"), 0u) << why;
  EXPECT_TRUE(unitFiles(out).empty());
}

TEST(Release, DirectoryPairing) {
  std::string dir = freshDir("dirs");
  std::string a = dir + "/v1", b = dir + "/v2";
  auto put = [](const std::string &from, const std::string &to) {
    fs::create_directories(fs::path(to).parent_path());
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  };
  put(findSample("elf-x64-gcc", "core", "base")->path, a + "/usr/lib/libcore.so");
  put(findSample("elf-x64-gcc", "core", "fix8")->path, b + "/usr/lib/libcore.so");
  put(findSample("pe-a64", "core", "base")->path, a + "/bin/core.dll");
  put(findSample("pe-a64", "core", "base")->pdbPath, a + "/bin/core.base.pdb");
  put(findSample("pe-a64", "core", "fix7")->path, b + "/bin/core.dll");
  put(findSample("pe-a64", "core", "fix7")->pdbPath, b + "/bin/core.fix7.pdb");
  put(findSample("elf-a64-gcc", "live", "base")->path, a + "/opt/__live_");
  put(findSample("elf-a64-gcc", "live", "fix14")->path, b + "/opt/__live_");
  put(findSample("elf-x64-gcc", "initval", "base")->path, a + "/usr/lib/gone.so");
  put(findSample("elf-x64-gcc", "initval", "base")->path, b + "/usr/lib/new.so");
  put(findSample("elf-x64-gcc", "initval", "base")->path, a + "/usr/lib/skipme.so");
  put(findSample("elf-x64-gcc", "initval", "fix6")->path, b + "/usr/lib/skipme.so");
  fs::create_directories(a + "/etc");
  fs::create_directories(b + "/etc");
  writeFile(a + "/etc/app.conf", "limit=10\n");
  writeFile(b + "/etc/app.conf", "limit=20\n");
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", "--baseline-dir", a, "--patched-dir", b, "--release", "r-dirs", "--sequence",
                              "4", "--exclude", "*skipme*", "-o", out, "--key", privateKey()});
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  json summary = readSummary(out);
  EXPECT_EQ(stringSet(summary["hotpatched"]), (std::set<std::string>{"bin/core.dll", "opt/__live_", "usr/lib/libcore.so"}));
  EXPECT_EQ((*pairOf(summary, "opt/__live_"))["entry"], "opt__%5F%5Flive%5F.hfpatch");
  EXPECT_EQ((*pairOf(summary, "usr/lib/libcore.so"))["entry"], "usr__lib__libcore.so.hfpatch");
  EXPECT_EQ((*pairOf(summary, "bin/core.dll"))["sequence"], 4);
  std::map<std::string, std::string> ignored;
  for (const json &i : summary["ignored"]) ignored[i["path"]] = i["reason"];
  EXPECT_EQ(ignored.size(), 3u) << summary["ignored"].dump();
  EXPECT_NE(ignored["etc/app.conf"].find("not an ELF or PE image"), std::string::npos);
  EXPECT_NE(ignored["usr/lib/gone.so"].find("only in the baseline"), std::string::npos);
  EXPECT_NE(ignored["usr/lib/new.so"].find("only in the patched"), std::string::npos);
  EXPECT_EQ(unitFiles(out), (std::set<std::string>{"r-dirs-arm64.hfu", "r-dirs-x64.hfu"}));
  EXPECT_EQ(hotforge({"verify", out + "/r-dirs-arm64.hfu", "--pubkey", publicKey()}).exitCode, 0);

  // A later run that makes no arm64 unit removes the one from before.
  fs::remove_all(a + "/bin");
  fs::remove_all(b + "/bin");
  fs::remove_all(a + "/opt");
  fs::remove_all(b + "/opt");
  ASSERT_EQ(hotforge({"release", "--baseline-dir", a, "--patched-dir", b, "--release", "r-dirs", "-o", out, "--key",
                      privateKey(), "--exclude", "*skipme*"})
                .exitCode,
            0);
  EXPECT_EQ(unitFiles(out), std::set<std::string>{"r-dirs-x64.hfu"});
}

TEST(Release, TomlManifestAndGrouping) {
  std::string dir = freshDir("toml");
  const Sample *base = findSample("elf-x64-gcc", "core", "base");
  const Sample *fix = findSample("elf-x64-gcc", "core", "fix2");
  const Sample *abase = findSample("pe-a64", "live", "base");
  const Sample *afix = findSample("pe-a64", "live", "fix14");
  ASSERT_TRUE(base && fix && abase && afix);
  std::string toml = "release = \"r-toml\"\nbaseline = \"ga\"\nsequence = 5\ngrouping = \"single\"\n\n"
                     "[[entries]]\nname = \"lib/core\"\nbaseline = \"" + base->path + "\"\npatched = \"" + fix->path +
                     "\"\n\n[[entries]]\nname = \"bin/live.dll\"\nbaseline = \"" + abase->path + "\"\npatched = \"" +
                     afix->path + "\"\n";
  std::string path = dir + "/release.toml";
  writeFile(path, toml);
  std::string out = dir + "/out";
  CommandResult r = hotforge({"release", path, "-o", out, "--key", privateKey()});
  if (r.err.find("without TOML support") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_EQ(unitFiles(out), std::set<std::string>{"r-toml.hfu"});  // grouping "single": x64 and arm64 together
  json summary = readSummary(out);
  EXPECT_EQ(summary["sequence"], 5);
  EXPECT_EQ(summary["baseline"], "ga");
  EXPECT_EQ(summary["units"][0]["entries"].size(), 2u);

  writeFile(path, "release = \"r-toml\"\nentries = [ { baseline = 3 } ]\n");
  r = hotforge({"release", path, "-o", out, "--key", privateKey()});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("entries[0]: \"baseline\" must be a string"), std::string::npos) << r.err;
  writeFile(path, "release = \n");
  r = hotforge({"release", path, "-o", out, "--key", privateKey()});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find("not valid TOML: line 1"), std::string::npos) << r.err;
}

TEST(Release, BadManifestsAndUsage) {
  std::string dir = freshDir("usage");
  const Sample *base = findSample("elf-x64-gcc", "core", "base");
  ASSERT_TRUE(base);
  auto runWith = [&](const json &manifest) {
    return hotforge({"release", writeManifest(dir, manifest), "-o", dir + "/out", "--key", privateKey()});
  };
  json entry = {{"baseline", base->path}, {"patched", base->path}};
  struct Case {
    json manifest;
    std::string message;
  } cases[] = {
      {{{"entries", {entry}}}, "\"release\" is missing"},
      {{{"release", "a/b"}, {"entries", {entry}}}, "may only hold letters"},
      {{{"release", "r"}, {"entries", {entry}}, {"patched_dir", "x"}}, "give either"},
      {{{"release", "r"}, {"entries", {entry}}, {"sequence", 0}}, "\"sequence\" must be an integer"},
      {{{"release", "r"}, {"entries", {entry}}, {"grouping", "arch"}}, "\"grouping\" is \"arch\""},
      {{{"release", "r"}, {"entries", {{{"baseline", "x"}, {"patched", "y"}, {"patced", "z"}}}}}, "unknown field \"patced\""},
      {{{"release", "r"}, {"entries", {entry, entry}}}, "a second pair named"},
      {{{"release", "r"}, {"entries", {{{"name", "../x"}, {"baseline", "x"}, {"patched", "y"}}}}}, "\"..\" component"},
  };
  for (const Case &c : cases) {
    CommandResult r = runWith(c.manifest);
    EXPECT_EQ(r.exitCode, 1) << c.manifest.dump();
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.manifest.dump() << ": " << r.err;
    EXPECT_EQ(r.err.rfind("hotforge: error: ", 0), 0u) << r.err;
  }
  writeFile(dir + "/broken.json", "{\"release\": ");
  CommandResult broken = hotforge({"release", dir + "/broken.json", "-o", dir + "/out", "--key", privateKey()});
  EXPECT_EQ(broken.exitCode, 1);
  EXPECT_NE(broken.err.find("not valid JSON"), std::string::npos) << broken.err;

  std::string manifest = writeManifest(dir, {{"release", "r"}, {"entries", {entry}}});
  std::vector<std::vector<std::string>> usage = {
      {"release", "-o", dir + "/out", "--key", privateKey()},                                  // no input
      {"release", manifest, "-o", dir + "/out"},                                               // no key
      {"release", manifest, "--merge", dir, "-o", dir + "/out", "--key", privateKey()},        // two inputs
      {"release", "--merge", dir, "--shard", "1/2", "-o", dir + "/out", "--key", privateKey()},
      {"release", manifest, "--release", "x", "-o", dir + "/out", "--key", privateKey()},
      {"release", "--baseline-dir", dir, "-o", dir + "/out", "--key", privateKey()},
      {"release", manifest, "-o", dir + "/out", "--key", privateKey(), "--sign-cmd", "cat"},
  };
  for (const std::vector<std::string> &args : usage) EXPECT_EQ(hotforge(args).exitCode, 2) << args.size();
  CommandResult shard = hotforge({"release", manifest, "-o", dir + "/out", "--shard", "3/2"});
  EXPECT_EQ(shard.exitCode, 1);
  EXPECT_NE(shard.err.find("1 <= I <= N"), std::string::npos) << shard.err;
}

// samples/release-example.json and .toml are the same release.
TEST(Release, ExampleManifests) {
  llvm::Expected<ReleasePlan> fromJson = loadReleaseManifest(HOTFORGE_SOURCE_DIR "/samples/release-example.json");
  ASSERT_TRUE(static_cast<bool>(fromJson)) << llvm::toString(fromJson.takeError());
  EXPECT_EQ(fromJson->release, "2026-11");
  EXPECT_EQ(fromJson->baseline, "2026-10-ga");
  EXPECT_EQ(fromJson->sequence, 2u);
  ASSERT_EQ(fromJson->pairs.size(), 5u);
  EXPECT_EQ(fromJson->pairs[0].name, "Program Files/Core/core.dll");  // sorted by name
  EXPECT_EQ(fromJson->pairs[0].entry, "Program%20Files__Core__core.dll.hfpatch");
  EXPECT_EQ(fromJson->pairs[0].pdbBase, HOTFORGE_SOURCE_DIR "/samples/../build/samples/pe-x64/core.base.pdb");
  llvm::Expected<ReleasePlan> fromToml = loadReleaseManifest(HOTFORGE_SOURCE_DIR "/samples/release-example.toml");
  if (!fromToml) {
    std::string error = llvm::toString(fromToml.takeError());
    if (error.find("without TOML support") != std::string::npos) GTEST_SKIP() << error;
    FAIL() << error;
  }
  ASSERT_EQ(fromToml->pairs.size(), fromJson->pairs.size());
  for (size_t i = 0; i < fromJson->pairs.size(); ++i) {
    const ReleasePair &a = fromJson->pairs[i], &b = fromToml->pairs[i];
    EXPECT_EQ(std::tie(a.name, a.entry, a.base, a.patched, a.pdbBase, a.pdbPatched, a.debugDir, a.sequence),
              std::tie(b.name, b.entry, b.base, b.patched, b.pdbBase, b.pdbPatched, b.debugDir, b.sequence));
  }
  EXPECT_EQ(fromToml->release, fromJson->release);
  EXPECT_EQ(fromToml->baseline, fromJson->baseline);
  EXPECT_EQ(fromToml->sequence, fromJson->sequence);
}

TEST(Release, EntryNamesAndShards) {
  EXPECT_EQ(releaseEntryName("lib/foo.so"), "lib__foo.so.hfpatch");
  EXPECT_EQ(releaseEntryName("./lib//foo.so"), "lib__foo.so.hfpatch");
  EXPECT_EQ(releaseEntryName("libc_nonshared.a"), "libc_nonshared.a.hfpatch");
  EXPECT_EQ(releaseEntryName("a__b"), "a%5F%5Fb.hfpatch");  // never confused with "a/b"
  EXPECT_NE(releaseEntryName("a__b"), releaseEntryName("a/b"));
  EXPECT_NE(releaseEntryName("a_/b"), releaseEntryName("a/_b"));
  EXPECT_EQ(releaseEntryName("Program Files/x:y.dll"), "Program%20Files__x%3Ay.dll.hfpatch");
  EXPECT_TRUE(static_cast<bool>(parseShardSpec("2/4")));
  for (const char *bad : {"0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2"}) {
    llvm::Expected<ShardSpec> s = parseShardSpec(bad);
    EXPECT_FALSE(static_cast<bool>(s)) << bad;
    if (!s) llvm::consumeError(s.takeError());
  }
  // Deterministic and spread out.
  std::map<unsigned, int> counts;
  for (int i = 0; i < 400; ++i) {
    std::string name = "lib/pair" + std::to_string(i) + ".so";
    unsigned shard = shardOfPair(name, 4);
    EXPECT_EQ(shard, shardOfPair(name, 4));
    ++counts[shard];
  }
  ASSERT_EQ(counts.size(), 4u);
  for (const auto &[shard, n] : counts) EXPECT_GT(n, 60) << shard;
  EXPECT_EQ(shardOfPair("anything", 1), 1u);
}

}  // namespace
}  // namespace hotforge::test
