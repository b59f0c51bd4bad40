// Live proof on real libraries (issue 13, point 6): real Debian bookworm security updates, applied
// to a running process that uses the library.
//
// For each library: both .debs (from the cache, else `apt-get download`), extracted; `hotforge
// build` on the changed .so; tests/reallib/reallib_harness.c started on the baseline .so and fed
// inputs (the library's own test files from its source tarball, files made at test time, mutated
// copies, and one input that takes the path the update fixes); the image applied live; the same
// inputs again, whose output must equal line for line what the harness prints on the patched .so;
// after revert, the baseline's again. x64 through ptrace (`hotforge apply --pid`) and the
// LD_PRELOAD agent, Arm64 through the agent under qemu-user.
#include "live_process.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <tuple>

namespace hotforge::test {
namespace {

namespace fs = std::filesystem;

struct RealLibrary {
  std::string package, base, patched;
  std::string library;                   // inside the package; ARCH is the multiarch triplet's CPU
  std::string mode;                      // the harness's mode
  std::string source, sourceVersion, orig;  // source package, a version apt has, its orig tarball
};

const RealLibrary kLzma{"liblzma5", "5.4.1-1+deb12u1", "5.4.1-1+deb12u2", "lib/ARCH-linux-gnu/liblzma.so.5.4.1", "lzma",
                        "xz-utils", "5.4.1-1+deb12u1", "xz-utils_5.4.1.orig.tar.xz"};
const RealLibrary kTiff{"libtiff6", "4.5.0-6+deb12u4", "4.5.0-6+deb12u5", "usr/lib/ARCH-linux-gnu/libtiff.so.6.0.0",
                        "tiff", "tiff", "4.5.0-6+deb12u4", "tiff_4.5.0.orig.tar.bz2"};
const RealLibrary kArchive{"libarchive13", "3.6.2-1+deb12u4", "3.6.2-1+deb12u5",
                           "usr/lib/ARCH-linux-gnu/libarchive.so.13.6.2", "archive", "libarchive", "3.6.2-1+deb12u4",
                           "libarchive_3.6.2.orig.tar.xz"};

// The shared package cache: $HOTFORGE_DEBCACHE, else /work/debcache when it exists, else one in
// the build directory.
std::string cacheDir() {
  if (const char *dir = std::getenv("HOTFORGE_DEBCACHE")) return dir;
  if (fs::is_directory("/work/debcache")) return "/work/debcache";
  return std::string(HOTFORGE_BUILD_DIR) + "/debcache";
}

// apt's words when it cannot reach the archive at all (as opposed to a missing package).
bool offline(const std::string &aptErrors) {
  for (const char *word : {"Temporary failure resolving", "Could not resolve", "Could not connect", "Network is unreachable",
                           "Connection timed out", "No route to host"})
    if (aptErrors.find(word) != std::string::npos) return true;
  return false;
}

// Set when a download failed because apt has no network: the test is then skipped, saying so.
std::string offlineReason;

// Runs `apt-get ARGS` in a scratch folder and moves the file named `name` into `folder`; "" when it
// cannot, with a test failure naming the package, or with offlineReason set when apt has no network.
std::string aptFetch(const std::vector<std::string> &args, const std::string &folder, const std::string &name,
                     const std::string &what) {
  std::string target = folder + "/" + name;
  if (fs::exists(target)) return target;
  // Next to the cache entry, so the rename below stays on one file system.
  std::string scratch = folder + "/.apt-" + name + "-" + std::to_string(getpid());
  fs::create_directories(scratch);
  std::vector<std::string> argv{"sh", "-c", "cd \"$0\" && exec apt-get \"$@\"", scratch};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run(argv);
  if (!fs::exists(scratch + "/" + name)) {
    fs::remove_all(scratch);
    if (offline(r.err)) {
      offlineReason = "apt has no network, and the cache " + folder + " has no " + name + " (" + what + ")";
      return "";
    }
    ADD_FAILURE() << "cannot get " << what << " (" << name << "): not in " << folder << ", and apt-get " << args[0]
                  << " failed: " << r.err;
    return "";
  }
  fs::create_directories(folder);
  fs::rename(scratch + "/" + name, target);  // whole or not at all: other tests read the cache too
  fs::remove_all(scratch);
  return target;
}

std::string multiarch(const std::string &arch) { return arch == "arm64" ? "aarch64" : "x86_64"; }

// The library of `version` for `arch`, extracted into this test's scratch folder.
std::string libraryOf(const RealLibrary &lib, const std::string &version, const std::string &arch) {
  std::string deb = aptFetch({"download", "-q", lib.package + ":" + arch + "=" + version},
                             cacheDir() + "/" + lib.package + "/" + version,
                             lib.package + "_" + version + "_" + arch + ".deb", lib.package + "=" + version + " " + arch);
  if (deb.empty()) return "";
  std::string into = tempDir() + "/" + lib.package + "-" + version + "-" + arch;
  CommandResult r = run({"dpkg-deb", "-x", deb, into});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::string path = lib.library;
  path.replace(path.find("ARCH"), 4, multiarch(arch));
  EXPECT_TRUE(fs::exists(into + "/" + path)) << deb << " has no " << path;
  return into + "/" + path;
}

// The members of the library's upstream source matching `pattern`, extracted under `into`.
bool sourceFiles(const RealLibrary &lib, const std::string &pattern, const std::string &into) {
  std::string orig = aptFetch({"source", "--download-only", "-q", lib.source + "=" + lib.sourceVersion},
                              cacheDir() + "/src", lib.orig, "the source of " + lib.source);
  if (orig.empty() && !offlineReason.empty()) {  // the generated inputs still run
    std::cout << "[ note     ] without the library's own test files: " << offlineReason << "\n";
    offlineReason.clear();
  }
  if (orig.empty()) return false;
  fs::create_directories(into);
  CommandResult r = run({"tar", "-xf", orig, "-C", into, "--wildcards", pattern});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  return r.exitCode == 0;
}

std::vector<std::string> filesUnder(const std::string &dir) {
  std::vector<std::string> files;
  for (const auto &entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Mutated copies of `path`: one byte flipped in the middle, and the first half only.
std::vector<std::string> mutations(const std::string &path) {
  std::string bytes = readFile(path);
  std::string flipped = bytes, half = bytes.substr(0, bytes.size() / 2);
  if (!flipped.empty()) flipped[flipped.size() / 2] ^= 0x10;
  writeFile(path + ".flipped", flipped);
  writeFile(path + ".half", half);
  return {path + ".flipped", path + ".half"};
}

// Text to compress and archive: this project's documentation.
std::vector<std::string> projectTexts() {
  std::vector<std::string> texts{std::string(HOTFORGE_SOURCE_DIR) + "/README.md"};
  for (const std::string &f : filesUnder(std::string(HOTFORGE_SOURCE_DIR) + "/docs")) texts.push_back(f);
  return texts;
}

std::string harness(const std::string &arch) {
  return arch == "arm64" ? HOTFORGE_REALLIB_HARNESS_AARCH64 : HOTFORGE_REALLIB_HARNESS;
}

// The harness on `library`; on Arm64 under qemu-user, with the agent when `agent` is not empty.
std::vector<std::string> harnessCommand(const std::string &arch, const std::string &library, const std::string &mode,
                                        const std::string &agent) {
  std::vector<std::string> argv{harness(arch), library, mode};
  if (arch == "arm64") {
    std::vector<std::string> qemu{"qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"};
    if (!agent.empty()) qemu.insert(qemu.end(), {"-E", "LD_PRELOAD=" + agent});
    argv.insert(argv.begin(), qemu.begin(), qemu.end());
  }
  return argv;
}

// What a fresh harness on `library` prints for `inputs`.
std::string outputOf(const std::string &arch, const std::string &library, const std::string &mode,
                     const std::string &inputs, const std::string &name) {
  Serving fresh(harnessCommand(arch, library, mode, ""), {}, tempDir() + "/" + name + ".err");
  return fresh.request(inputs + "\n");
}

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> all;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) all.push_back(line);
  return all;
}

// Line by line, so a failure names the input.
void expectSameLines(const std::string &seen, const std::string &expected, const std::string &inputs,
                     const std::string &what) {
  std::vector<std::string> got = lines(seen), want = lines(expected), in = lines(inputs);
  ASSERT_EQ(got.size(), want.size()) << what << ":\n" << seen;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(got[i], want[i]) << what << ", input " << (i < in.size() ? in[i] : "?");
}

// What the update changes in the harness's output: a text only the baseline's output holds, or
// only the patched one's.
struct Fixed {
  std::string onlyInBaseline, onlyInPatched;
};

// Baseline, apply, patched, revert, baseline, on one running harness.
void liveProof(const RealLibrary &lib, const std::string &arch, Applier applier, const std::string &inputs,
               const Fixed &fixed) {
  std::string base = libraryOf(lib, lib.base, arch), patched = libraryOf(lib, lib.patched, arch);
  if (!offlineReason.empty()) GTEST_SKIP() << offlineReason;
  if (base.empty() || patched.empty()) return;
  std::string name = lib.package + "-" + arch + (applier == Applier::Agent ? "-agent" : "-ptrace");
  Unit unit = makeUnit(base, patched, name);

  std::string baseOutput = outputOf(arch, base, lib.mode, inputs, name + "-plain-base");
  std::string patchedOutput = outputOf(arch, patched, lib.mode, inputs, name + "-plain-patched");
  std::vector<std::string> b = lines(baseOutput), p = lines(patchedOutput), in = lines(inputs);
  size_t differing = 0;
  EXPECT_EQ(b.size(), in.size()) << "one line per input:\n" << baseOutput;
  EXPECT_EQ(p.size(), in.size()) << "one line per input:\n" << patchedOutput;
  for (size_t i = 0; i < std::min(b.size(), p.size()); ++i)
    if (b[i] != p[i]) {
      ++differing;
      std::cout << "[ differs  ] " << name << ": " << (i < in.size() ? in[i] : "?") << "\n    baseline: " << b[i]
                << "\n    patched:  " << p[i] << "\n";
    }
  for (const auto &[text, holder, other] : {std::tuple{fixed.onlyInBaseline, baseOutput, patchedOutput},
                                             std::tuple{fixed.onlyInPatched, patchedOutput, baseOutput}})
    if (!text.empty()) {
      EXPECT_NE(holder.find(text), std::string::npos) << "an input must take the path the update fixes:\n" << holder;
      EXPECT_EQ(other.find(text), std::string::npos) << other;
    }

  bool arm64 = arch == "arm64";
  std::string agent = arm64 ? HOTFORGE_AGENT_AARCH64 : HOTFORGE_AGENT;
  std::string units = tempDir() + "/units-" + name;
  fs::create_directories(units);
  setenv("HOTFORGE_STATE_DIR", (tempDir() + "/state-" + name).c_str(), 1);
  std::vector<std::string> environment;
  if (applier == Applier::Agent) {
    environment = {"HOTFORGE_UNIT_DIR=" + units, "HOTFORGE_PUBKEY=" + unit.publicKey};
    if (arm64)
      environment.push_back("HOTFORGE_AGENT_IN_SIGNAL=1");  // qemu-user hangs in clone here
    else
      environment.push_back("LD_PRELOAD=" + agent);
  }
  Serving serving(harnessCommand(arch, base, lib.mode, agent), environment, tempDir() + "/" + name + ".err");
  expectSameLines(serving.request(inputs + "\n"), baseOutput, inputs, name + " before the apply");

  auto started = std::chrono::steady_clock::now();
  std::string said;
  if (applier == Applier::Ptrace) {
    CommandResult applied = hotforge({"apply", "--pid", std::to_string(serving.pid()), unit.path, "--pubkey", unit.publicKey});
    EXPECT_EQ(applied.exitCode, 0) << applied.err;
    if (applied.exitCode != 0) return;
    said = applied.out;
  } else {
    fs::copy_file(unit.path, units + "/unit.hfu");
    kill(serving.pid(), SIGUSR2);
    std::vector<std::string> agentSaid = serving.agentSaid(1);
    EXPECT_EQ(agentSaid.size(), 1u);
    if (agentSaid.size() != 1 || agentSaid[0].find("applied") == std::string::npos) {
      ADD_FAILURE() << "the agent did not apply: " << (agentSaid.empty() ? "(nothing)" : agentSaid[0]);
      return;
    }
    said = agentSaid[0] + "\n";
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  std::cout << "[ applied  ] " << name << " in " << took << " ms: " << said;
  if (applier == Applier::Ptrace) {
    nlohmann::json status = nlohmann::json::parse(hotforge({"status", "--pid", std::to_string(serving.pid()), "--json"}).out,
                                                  nullptr, false);
    if (status.is_object() && !status["applied"].empty())
      std::cout << "[ pause    ] " << name << ": threads paused " << status["applied"][0]["pause_us"] << " us (stop "
                << status["applied"][0]["stop_us"] << " us), " << status["applied"][0]["redirects"].size()
                << " redirects\n";
  }
  expectSameLines(serving.request(inputs + "\n"), patchedOutput, inputs, name + " after the apply");

  if (applier == Applier::Ptrace) {
    CommandResult reverted = hotforge({"revert", "--pid", std::to_string(serving.pid())});
    EXPECT_EQ(reverted.exitCode, 0) << reverted.err;
  } else {
    fs::remove(units + "/unit.hfu");
    kill(serving.pid(), SIGUSR2);
    std::vector<std::string> agentSaid = serving.agentSaid(2);
    EXPECT_EQ(agentSaid.size(), 2u);
    if (agentSaid.size() == 2) EXPECT_NE(agentSaid[1].find("reverted"), std::string::npos) << agentSaid[1];
  }
  expectSameLines(serving.request(inputs + "\n"), baseOutput, inputs, name + " after the revert");
  std::cout << "[ compared ] " << name << ": " << b.size() << " lines three times, " << differing
            << " differ between baseline and patched\n";
}

// ------------------------------------------------------------------------------------ inputs --

// liblzma: the .xz/.lzma/.lz files of xz's own tests, this project's docs compressed by the
// system's xz, mutated copies, and one stream reused after an allocation failure (the update's
// GHSA-5qpq-xqfv-j9pg: the baseline's decoder keeps a freed dictionary and crashes).
std::string lzmaInputs() {
  std::string dir = tempDir() + "/lzma-inputs";
  fs::create_directories(dir);
  std::string in;
  if (sourceFiles(kLzma, "*/tests/files/*.*", dir + "/source"))
    for (const std::string &f : filesUnder(dir + "/source"))
      if (f.ends_with(".xz") || f.ends_with(".lzma") || f.ends_with(".lz")) in += f + "\n";
  std::string text;
  for (const std::string &f : projectTexts()) text += readFile(f);
  writeFile(dir + "/text", text);
  std::vector<std::pair<std::string, std::vector<std::string>>> made{
      {"text-0.xz", {"-0"}}, {"text-6e-sha256.xz", {"-6e", "--check=sha256"}}, {"text-1.lzma", {"--format=lzma", "-1"}}};
  for (const auto &[file, options] : made) {
    std::vector<std::string> argv{"sh", "-c", "exec xz \"$@\" -c < \"$0\" > \"$0.out\"", dir + "/text"};
    argv.insert(argv.end(), options.begin(), options.end());
    CommandResult r = run(argv);
    EXPECT_EQ(r.exitCode, 0) << r.err;
    fs::rename(dir + "/text.out", dir + "/" + file);
    in += dir + "/" + file + "\n";
    for (const std::string &m : mutations(dir + "/" + file)) in += m + "\n";
  }
  // The same .lzma with a 3 GiB dictionary: the harness's allocator refuses it.
  std::string huge = readFile(dir + "/text-1.lzma");
  huge.replace(1, 4, std::string("\x00\x00\x00\xc0", 4));
  writeFile(dir + "/huge.lzma", huge);
  std::string lzma = dir + "/text-1.lzma";
  in += lzma + " " + dir + "/huge.lzma " + lzma + "\n";
  in += lzma + "\n";
  return in;
}

// libtiff: the images of libtiff's own tests, PixarLog, LZW and Deflate images written by the
// baseline, mutated copies; each read plainly and asking PixarLog for 8-bit ABGR (the update's
// CVE-2026-12912: for 3-sample images the baseline writes a third past the caller's buffer).
std::string tiffInputs(const std::string &baseX64) {
  std::string dir = tempDir() + "/tiff-inputs";
  fs::create_directories(dir);
  std::vector<std::string> files;
  if (sourceFiles(kTiff, "*/test/images/*.tif*", dir + "/source")) files = filesUnder(dir + "/source");
  std::string writes;
  for (const char *made : {"pixarlog-rgb 64 40 3 32909", "pixarlog-rgba 64 40 4 32909", "pixarlog-gray 64 40 1 32909",
                           "pixarlog-odd 33 17 3 32909", "lzw-rgb 64 40 3 5", "deflate-rgb 48 24 3 8", "none-gray 16 16 1 1"}) {
    std::string spec = made, file = dir + "/" + spec.substr(0, spec.find(' ')) + ".tif";
    writes += "tiff-write " + file + spec.substr(spec.find(' ')) + "\n";
    files.push_back(file);
  }
  Serving writer({harness("amd64"), baseX64, "tiff"}, {}, tempDir() + "/tiff-write.err");
  std::string wrote = writer.request(writes + "\n");
  EXPECT_EQ(wrote.find("written -1"), std::string::npos) << wrote;
  for (const std::string &f : {dir + "/pixarlog-rgb.tif", dir + "/lzw-rgb.tif"})
    for (const std::string &m : mutations(f)) files.push_back(m);
  std::string in;
  for (const std::string &f : files) in += f + "\n" + f + " abgr\n";
  return in;
}

// Decodes one uuencoded file of libarchive's tests (`begin MODE NAME` ... `end`).
std::string uudecode(const std::string &text) {
  std::string out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line) && line.rfind("begin ", 0) != 0) {
  }
  while (std::getline(lines, line) && line != "end") {
    if (line.empty()) continue;
    size_t count = size_t((line[0] - ' ') & 63);
    std::string bytes;
    for (size_t i = 1; i + 3 < line.size() + 1 && bytes.size() < count; i += 4) {
      auto six = [&](size_t k) { return k < line.size() ? unsigned((line[k] - ' ') & 63) : 0u; };
      unsigned v = six(i) << 18 | six(i + 1) << 12 | six(i + 2) << 6 | six(i + 3);
      bytes += char(v >> 16), bytes += char(v >> 8), bytes += char(v);
    }
    out += bytes.substr(0, count);
  }
  return out;
}

// libarchive: archives of libarchive's own tests (rar5, zip, tar, 7-Zip, cpio), this project's
// docs archived by the system's tar with every filter it has, mutated copies, and zip entries
// written with zipcrypt encryption (the update's CVE-2026-16517: a size near INT64_MAX overflows
// with the encryption header; the update refuses it, the baseline writes the header).
std::string archiveInputs() {
  std::string dir = tempDir() + "/archive-inputs";
  fs::create_directories(dir);
  std::string in;
  if (sourceFiles(kArchive, "*/libarchive/test/test_read_format_*.uu", dir + "/source")) {
    unsigned taken = 0;
    for (const std::string &f : filesUnder(dir + "/source")) {
      std::string stem = fs::path(f).filename().string();
      bool wanted = false;
      for (const char *kind : {"rar5", "zip", "tar", "7zip", "cpio", "lha", "cab", "iso"})
        wanted |= stem.rfind(std::string("test_read_format_") + kind, 0) == 0;
      if (!wanted || fs::file_size(f) > 64 * 1024 || taken++ >= 80) continue;
      std::string decoded = f.substr(0, f.size() - 3);
      writeFile(decoded, uudecode(readFile(f)));
      in += "read " + decoded + "\n";
    }
  }
  fs::create_directories(dir + "/docs");
  for (const std::string &f : projectTexts()) fs::copy_file(f, dir + "/docs/" + fs::path(f).filename().string(), fs::copy_options::overwrite_existing);
  for (const char *filter : {"", "--gzip", "--xz", "--bzip2", "--zstd"}) {
    std::string archive = dir + "/docs" + (*filter ? std::string(".tar.") + (filter + 2) : ".tar");
    CommandResult r = *filter ? run({"tar", "-C", dir, filter, "-cf", archive, "docs"})
                              : run({"tar", "-C", dir, "-cf", archive, "docs"});
    if (r.exitCode != 0) continue;  // a filter this tar has no program for
    in += "read " + archive + "\n";
    for (const std::string &m : mutations(archive)) in += "read " + m + "\n";
  }
  for (const char *size : {"0", "100", "4294967283", "4294967284", "4294967296", "9223372036854775795",
                           "9223372036854775796", "9223372036854775807"})
    in += std::string("zipcrypt ") + size + "\n";
  return in;
}

// ------------------------------------------------------------------------------------- tests --

const Fixed kLzmaFix{"crashed signal 11", ""};
const Fixed kTiffFix{"", "Output buffer too small for PixarLog ABGR data"};
const Fixed kArchiveFix{"", "File size too large for encrypted ZIP entry"};

// libgio's update rebuilt most of the library on Arm64: its image carries about a thousand
// functions, enough for some ADRP to fall at page offset 0xff8 or 0xffc unless the emitter avoids
// it (10 did before it did). A Cortex-A53 may form the wrong address there (erratum 843419);
// qemu-user does not, so the placement itself is what is checked.
TEST(RealLibraries, LibgioArm64PairsCallbacksThroughDataAndPlacesNoAdrpWhereCortexA53Errs) {
  const RealLibrary gio{"libglib2.0-0", "2.74.6-2+deb12u2", "2.74.6-2+deb12u9",
                        "usr/lib/ARCH-linux-gnu/libgio-2.0.so.0.7400.6", "", "", "", ""};
  std::string base = libraryOf(gio, gio.base, "arm64"), patched = libraryOf(gio, gio.patched, "arm64");
  if (!offlineReason.empty()) GTEST_SKIP() << offlineReason;
  ASSERT_FALSE(base.empty() || patched.empty());
  // The rebuild left static callbacks that only a table in .data reaches unpaired by any other
  // stage; paired through that table, the diff has no restart (it had a false HF210).
  CommandResult diffed = hotforge({"diff", "--json", base, patched});
  nlohmann::json diff = nlohmann::json::parse(diffed.out, nullptr, false);
  ASSERT_FALSE(diff.is_discarded()) << diffed.err;
  EXPECT_EQ(diff["summary"]["needs_restart"], 0) << diffed.out.substr(0, 2000);
  std::vector<std::string> matching = diff["matching"];
  auto dataPointers = std::find_if(matching.begin(), matching.end(),
                                   [](const std::string &line) { return line.rfind("data-pointers: ", 0) == 0; });
  ASSERT_NE(dataPointers, matching.end());
  EXPECT_GT(std::stoul(dataPointers->substr(std::string("data-pointers: ").size())), 0u);
  std::string image = tempDir() + "/gio-arm64.hfpatch";
  CommandResult built = hotforge({"build", base, patched, "-o", image});
  ASSERT_EQ(built.exitCode, 0) << built.err;
  CommandResult code = run({"llvm-objdump-19", "-d", "--no-show-raw-insn", image});
  ASSERT_EQ(code.exitCode, 0) << code.err;
  size_t pageForming = 0;
  std::istringstream listing(code.out);
  for (std::string line; std::getline(listing, line);) {
    std::istringstream fields(line);
    std::string address, mnemonic;
    if (!(fields >> address >> mnemonic) || address.back() != ':' || (mnemonic != "adrp" && mnemonic != "adr")) continue;
    ++pageForming;
    uint64_t inPage = std::stoull(address, nullptr, 16) & 0xfff;
    EXPECT_TRUE(inPage < 0xff8) << line;
  }
  EXPECT_GT(pageForming, 1000u) << "the image carries libgio's rebuilt code";
}

TEST(RealLibraries, LiblzmaOnX64ThroughPtraceAndTheAgent) {
  std::string inputs = lzmaInputs();
  for (Applier applier : {Applier::Ptrace, Applier::Agent}) liveProof(kLzma, "amd64", applier, inputs, kLzmaFix);
}

TEST(RealLibraries, LiblzmaOnArm64UnderQemuThroughTheAgent) {
  liveProof(kLzma, "arm64", Applier::Agent, lzmaInputs(), kLzmaFix);
}

// The TIFFs the tests write are made by the x64 baseline.
std::string tiffWriter() { return libraryOf(kTiff, kTiff.base, "amd64"); }

TEST(RealLibraries, LibtiffOnX64ThroughPtraceAndTheAgent) {
  std::string writer = tiffWriter();
  if (!offlineReason.empty()) GTEST_SKIP() << offlineReason;
  ASSERT_FALSE(writer.empty());
  std::string inputs = tiffInputs(writer);
  for (Applier applier : {Applier::Ptrace, Applier::Agent}) liveProof(kTiff, "amd64", applier, inputs, kTiffFix);
}

TEST(RealLibraries, LibtiffOnArm64UnderQemuThroughTheAgent) {
  std::string writer = tiffWriter();
  if (!offlineReason.empty()) GTEST_SKIP() << offlineReason;
  ASSERT_FALSE(writer.empty());
  liveProof(kTiff, "arm64", Applier::Agent, tiffInputs(writer), kTiffFix);
}

TEST(RealLibraries, LibarchiveOnX64ThroughPtraceAndTheAgent) {
  std::string inputs = archiveInputs();
  for (Applier applier : {Applier::Ptrace, Applier::Agent}) liveProof(kArchive, "amd64", applier, inputs, kArchiveFix);
}

TEST(RealLibraries, LibarchiveOnArm64UnderQemuThroughTheAgent) {
  liveProof(kArchive, "arm64", Applier::Agent, archiveInputs(), kArchiveFix);
}

}  // namespace
}  // namespace hotforge::test
