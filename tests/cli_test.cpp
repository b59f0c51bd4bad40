// The hotforge executable as a user meets it: help, version, usage errors, and hostile input. Every
// bad input must give exit code 1 and exactly one line naming the file; none may crash or hang.
#include "test_support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace hotforge::test {
namespace {

CommandResult hotforge(std::vector<std::string> args) {
  args.insert(args.begin(), {"timeout", "60", hotforgeBinary()});
  return run(args);
}

void expectOneLineError(const CommandResult &r, const std::string &path, const std::string &needle) {
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("hotforge: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

std::string firstSample(const std::string &target) {
  std::vector<Sample> all = samples(target);
  return all.empty() ? std::string("(no sample for " + target + ")") : all.front().path;
}
std::string anyElfSample() { return firstSample("elf-x64-gcc"); }
std::string anyPeSample() { return firstSample("pe-x64"); }

// Compiles a tiny C file for `target` and links it when `linker` is given.
std::string buildForeign(const std::string &name, const std::vector<std::string> &compile,
                         const std::vector<std::string> &link) {
  std::string dir = tempDir();
  writeFile(dir + "/foreign.c", "int answer(void) { return 42; }\n");
  std::vector<std::string> cc = {"clang-19", "-c", dir + "/foreign.c", "-o", dir + "/" + name + ".o"};
  cc.insert(cc.end(), compile.begin(), compile.end());
  CommandResult r = run(cc);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  if (link.empty()) return dir + "/" + name + ".o";
  std::vector<std::string> ld = link;
  ld.push_back(dir + "/" + name + ".o");
  ld.push_back("/out:" + dir + "/" + name);
  r = run(ld);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  return dir + "/" + name;
}

TEST(Cli, HelpAndVersion) {
  CommandResult r = hotforge({"--help"});
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("inspect"), std::string::npos);
  EXPECT_NE(r.out.find("Exit codes"), std::string::npos);
  r = hotforge({"inspect", "--help"});
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("--json"), std::string::npos);
  EXPECT_NE(r.out.find("Example"), std::string::npos);
  r = hotforge({"--version"});
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out.rfind("hotforge ", 0), 0u);
}

// The elf-x64-gcc build of the initval sample's `variant` (base, fix6, ...).
std::string initvalSample(const std::string &variant) {
  for (const Sample &s : samples("elf-x64-gcc"))
    if (s.program == "initval" && s.variant == variant) return s.path;
  return "(no initval." + variant + ")";
}

// diff --html: the review page next to the usual report, written atomically.
TEST(Cli, DiffWritesTheReviewPage) {
  auto path = initvalSample;
  std::string dir = tempDir(), page = dir + "/initval.html";
  CommandResult r = hotforge({"diff", path("base"), path("fix6"), "--html", page});
  EXPECT_EQ(r.exitCode, 3) << r.err;  // the exit code and the text report are as without --html
  EXPECT_NE(r.out.find("HF210 g_limit"), std::string::npos) << r.out;
  CommandResult found = run({"/usr/bin/python3", std::string(HOTFORGE_SOURCE_DIR) + "/tests/check_html.py", page});
  ASSERT_EQ(found.exitCode, 0) << found.err;
  EXPECT_NE(found.out.find("\"headings\": [\"g_limit\"]"), std::string::npos) << found.out;
  std::string html = readFile(page);
  // The data change as hex, 10 -> 20 marked on both sides.
  EXPECT_NE(html.find("<mark class=\"b\">0a</mark>"), std::string::npos);
  EXPECT_NE(html.find("<mark class=\"p\">14</mark>"), std::string::npos);
  EXPECT_NE(html.find("needs-restart"), std::string::npos);

  std::string missing = dir + "/no-such-dir/page.html";
  r = hotforge({"diff", path("base"), path("fix6"), "--html", missing});
  expectOneLineError(r, missing, "cannot create a temporary file");
  EXPECT_FALSE(std::filesystem::exists(dir + "/no-such-dir"));
}

// diff --time-trace: a Chrome trace with each phase of both threads that read, and of the differ;
// the report is as without it.
TEST(Cli, DiffWritesATimeTraceOfItsPhases) {
  auto path = initvalSample;
  std::string dir = tempDir(), trace = dir + "/trace.json";
  CommandResult plain = hotforge({"diff", path("base"), path("fix6")});
  CommandResult r = hotforge({"diff", path("base"), path("fix6"), "--time-trace", trace});
  EXPECT_EQ(r.exitCode, 3) << r.err;
  EXPECT_EQ(r.out, plain.out);
  nlohmann::json doc = nlohmann::json::parse(readFile(trace));
  std::map<std::string, int> phases;
  std::set<int64_t> readers;
  for (const nlohmann::json &event : doc["traceEvents"]) {
    if (event.value("ph", "") != "X") continue;
    EXPECT_GE(event["dur"].get<double>(), 0);
    ++phases[event["name"].get<std::string>()];
    if (event["name"] == "read image") readers.insert(event["tid"].get<int64_t>());
  }
  EXPECT_EQ(phases["read image"], 2);
  EXPECT_EQ(readers.size(), 2u);  // one per thread that read
  for (const char *phase : {"decode base", "decode patched", "match functions", "vote anonymous data",
                            "compare functions", "bind patch code"})
    EXPECT_EQ(phases[phase], 1) << phase;

  std::string missing = dir + "/no-such-dir/trace.json";
  r = hotforge({"diff", path("base"), path("fix6"), "--time-trace", missing});
  expectOneLineError(r, missing, "cannot create a temporary file");
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(hotforge({}).exitCode, 2);
  EXPECT_EQ(hotforge({"no-such-command"}).exitCode, 2);
  EXPECT_EQ(hotforge({"inspect"}).exitCode, 2);
  EXPECT_EQ(hotforge({"inspect", "a", "--no-such-flag"}).exitCode, 2);
}

TEST(Cli, InspectJsonHasTheDocumentedFields) {
  for (const std::string &path : {anyElfSample(), anyPeSample()}) {
    CommandResult r = hotforge({"inspect", path, "--json"});
    ASSERT_EQ(r.exitCode, 0) << r.err;
    nlohmann::json doc = nlohmann::json::parse(r.out);
    EXPECT_EQ(doc["schema"], "hotforge.inspect/1");
    for (const char *key : {"format", "machine", "identity", "sections", "functions", "data_objects", "imports"})
      EXPECT_TRUE(doc.contains(key)) << key;
    ASSERT_FALSE(doc["functions"].empty());
    for (const auto &f : doc["functions"]) {
      EXPECT_TRUE(f["name"].is_string() || f["name"].is_null());
      EXPECT_TRUE(f["rva"].is_number_unsigned());
      EXPECT_TRUE(f["size"].is_number_unsigned());
      EXPECT_TRUE(f["source"].is_string());
    }
    EXPECT_EQ(doc["identity"]["sha256"].get<std::string>().size(), 64u);
  }
}

TEST(Cli, InspectIsDeterministic) {
  std::string path = anyElfSample();
  EXPECT_EQ(hotforge({"inspect", path, "--json"}).out, hotforge({"inspect", path, "--json"}).out);
}

TEST(Cli, MissingEmptyDirectoryTextAndRandomInputs) {
  std::string dir = tempDir();
  expectOneLineError(hotforge({"inspect", dir + "/absent"}), dir + "/absent", "No such file");
  writeFile(dir + "/empty", "");
  expectOneLineError(hotforge({"inspect", dir + "/empty"}), dir + "/empty", "empty");
  expectOneLineError(hotforge({"inspect", dir}), dir, "directory");
  writeFile(dir + "/notes.txt", "release notes\nnothing binary here\n");
  expectOneLineError(hotforge({"inspect", dir + "/notes.txt"}), dir + "/notes.txt", "neither ELF");
  std::mt19937 random(7);
  std::string noise(4096, '\0');
  for (char &c : noise) c = static_cast<char>(random());
  writeFile(dir + "/random.bin", noise);
  expectOneLineError(hotforge({"inspect", dir + "/random.bin"}), dir + "/random.bin", "");
}

TEST(Cli, ForeignBinariesAreRefusedWithTheReason) {
  std::string elf32 = buildForeign("elf32.o", {"--target=i686-linux-gnu"}, {});
  expectOneLineError(hotforge({"inspect", elf32}), elf32, "ELF32");
  std::string bigEndian = buildForeign("be.o", {"--target=aarch64_be-linux-gnu"}, {});
  expectOneLineError(hotforge({"inspect", bigEndian}), bigEndian, "big-endian");
  std::string pe32 = buildForeign("pe32.dll", {"--target=i686-pc-windows-msvc", "-ffreestanding"},
                                  {"lld-link-19", "/dll", "/noentry", "/nodefaultlib", "/machine:x86", "/export:answer"});
  expectOneLineError(hotforge({"inspect", pe32}), pe32, "PE32 (32-bit)");
  std::string object = buildForeign("x64.o", {"--target=x86_64-linux-gnu"}, {});
  expectOneLineError(hotforge({"inspect", object}), object, "not an executable or shared object");
}

TEST(Cli, PdbOfAnotherImageIsRefused) {
  std::vector<Sample> pe = samples("pe-x64");
  ASSERT_FALSE(pe.empty());
  std::string otherPdb;
  for (const Sample &s : pe)
    if (s.program != pe.front().program && !s.pdbPath.empty()) otherPdb = s.pdbPath;
  ASSERT_FALSE(otherPdb.empty());
  expectOneLineError(hotforge({"inspect", pe.front().path, "--pdb", otherPdb}), otherPdb, "does not belong");
}

// Inputs that once crashed a parser (found by the fuzzers): each must now read or be refused.
TEST(Cli, InputsFoundByFuzzingAreHandled) {
  size_t checked = 0;
  for (const auto &entry : std::filesystem::directory_iterator(std::string(HOTFORGE_SOURCE_DIR) + "/tests/corpus")) {
    CommandResult r = hotforge({"inspect", entry.path().string(), "--json"});
    EXPECT_TRUE(r.exitCode == 0 || r.exitCode == 1) << entry.path() << ": exit " << r.exitCode << " " << r.err;
    // An exprloc length past .debug_info took LLVM's DIE extraction off the section (PE, and ELF
    // without .symtab): the DWARF check must leave these images' DWARF unread.
    if (entry.path().filename().string().find("debug-info-exprloc-past-section") != std::string::npos)
      EXPECT_NE(r.out.find("the DWARF is not read"), std::string::npos) << r.out;
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

// Truncations at many lengths, and random byte flips, of real ELF and PE samples: the reader may
// accept or refuse, but it must never crash or hang.
TEST(Cli, DamagedBinariesNeverCrash) {
  std::string dir = tempDir();
  std::mt19937 random(2024);
  for (const std::string &path : {anyElfSample(), anyPeSample()}) {
    std::string bytes = readFile(path);
    ASSERT_GT(bytes.size(), 1024u);
    std::string damaged = dir + "/damaged";
    for (size_t cut : {size_t(16), size_t(64), size_t(200), bytes.size() / 8, bytes.size() / 3, bytes.size() / 2,
                       bytes.size() - 1}) {
      writeFile(damaged, bytes.substr(0, cut));
      CommandResult r = hotforge({"inspect", damaged, "--json"});
      EXPECT_TRUE(r.exitCode == 0 || r.exitCode == 1) << "cut at " << cut << ": exit " << r.exitCode << " " << r.err;
      if (r.exitCode == 1) EXPECT_NE(r.err.find(damaged), std::string::npos);
    }
    for (int round = 0; round < 40; ++round) {
      std::string copy = bytes;
      for (int flips = 0; flips < 8; ++flips) copy[random() % std::min<size_t>(copy.size(), 4096)] ^= char(1 + random() % 255);
      writeFile(damaged, copy);
      CommandResult r = hotforge({"inspect", damaged, "--json"});
      EXPECT_TRUE(r.exitCode == 0 || r.exitCode == 1) << "round " << round << ": exit " << r.exitCode << " " << r.err;
    }
  }
}

// A dynamic relocation that names a symbol past the end of .dynsym (a crafted file): the reader
// caches what it read per symbol of the table, and one past it must still be refused with the
// file's name, by `inspect` and by `diff`, which then writes neither its report nor its trace.
TEST(Cli, ARelocationPastItsSymbolTableIsRefused) {
  std::string bytes = readFile(initvalSample("base"));
  auto at = [&](size_t offset, size_t size) {
    uint64_t value = 0;
    for (size_t i = 0; i < size; ++i) value |= uint64_t(uint8_t(bytes.at(offset + i))) << (8 * i);
    return value;
  };
  uint64_t sectionHeaders = at(0x28, 8), headerSize = at(0x3a, 2), headers = at(0x3c, 2);
  bool crafted = false;
  for (uint64_t i = 0; i < headers && !crafted; ++i) {
    size_t header = sectionHeaders + i * headerSize;
    if (at(header + 4, 4) != 4) continue;  // SHT_RELA
    for (uint64_t entry = at(header + 0x18, 8), end = entry + at(header + 0x20, 8); entry < end && !crafted; entry += 24) {
      if (!(at(entry + 8, 8) >> 32)) continue;  // no symbol
      uint64_t info = (uint64_t(0xfffff) << 32) | (at(entry + 8, 8) & 0xffffffff);
      for (size_t k = 0; k < 8; ++k) bytes[entry + 8 + k] = char(info >> (8 * k));
      crafted = true;
    }
  }
  ASSERT_TRUE(crafted);
  std::string dir = tempDir(), path = dir + "/crafted", report = dir + "/diff.json", trace = dir + "/trace.json";
  writeFile(path, bytes);
  expectOneLineError(hotforge({"inspect", path}), path, "past the end");
  expectOneLineError(hotforge({"diff", path, initvalSample("base"), "-o", report, "--time-trace", trace}), path,
                     "past the end");
  EXPECT_FALSE(std::filesystem::exists(report));
  EXPECT_FALSE(std::filesystem::exists(trace));
}

// Inputs that are not regular files are refused at once: a FIFO with no writer used to block
// every command forever, /dev/zero to be read until memory ran out.
TEST(Cli, FifosAndDevicesAreRefusedAtOnce) {
  std::string dir = tempDir() + "/not-files";
  std::filesystem::create_directories(dir);
  std::string fifo = dir + "/input.fifo", key = dir + "/key";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(hotforge({"keygen", "-o", key}).exitCode, 0);
  std::string elf = anyElfSample();
  for (const std::string &input : {fifo, std::string("/dev/zero")}) {
    SCOPED_TRACE(input);
    const char *kind = input == fifo ? "is a FIFO" : "is a character device";
    std::vector<std::vector<std::string>> commands = {
        {"inspect", input},
        {"diff", input, elf},
        {"diff", elf, input},
        {"build", elf, input, "-o", dir + "/out.hfpatch"},
        {"verify", input, "--pubkey", key + ".pub.pem"},
        {"verify", dir + "/none.hfu", "--pubkey", input},
        {"pack", input, "-o", dir + "/out.hfu", "--key", key + ".pem"},
        {"pack", elf, "-o", dir + "/out.hfu", "--key", input},
        {"apply", "--pid", std::to_string(getpid()), input, "--pubkey", key + ".pub.pem"}};
    for (std::vector<std::string> command : commands) {
      SCOPED_TRACE(command[0]);
      command.insert(command.begin(), {"timeout", "20", hotforgeBinary()});
      expectOneLineError(run(command), input, kind);
    }
  }
}

}  // namespace
}  // namespace hotforge::test
