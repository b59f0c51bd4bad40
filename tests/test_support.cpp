#include "test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <regex>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace hotforge::test {

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string tempDir() {
  static std::string dir = [] {
    std::string pattern = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : std::string("/tmp")) + "/hftest.XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back(0);
    const char *made = mkdtemp(buffer.data());
    return std::string(made ? made : "/tmp");
  }();
  return dir;
}

CommandResult run(const std::vector<std::string> &argv) {
  static int counter = 0;
  std::string base = tempDir() + "/cmd" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  std::string outPath = base + ".out", errPath = base + ".err";
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char *> args;
    for (const std::string &a : argv) args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CommandResult result;
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = readFile(outPath);
  result.err = readFile(errPath);
  unlink(outPath.c_str());
  unlink(errPath.c_str());
  return result;
}

std::string samplesDir() {
  const char *dir = std::getenv("HOTFORGE_SAMPLES");
  if (!dir) {
    ADD_FAILURE() << "HOTFORGE_SAMPLES is not set: run the tests through ./hotforge.sh test";
    return "";
  }
  return dir;
}

const nlohmann::json &samplesManifest() {
  static nlohmann::json manifest = [] {
    std::string text = readFile(samplesDir() + "/samples.json");
    if (text.empty()) {
      ADD_FAILURE() << "no samples.json in " << samplesDir() << ": run samples/build.sh first";
      return nlohmann::json::object();
    }
    return nlohmann::json::parse(text);
  }();
  return manifest;
}

std::vector<Sample> samples(const std::string &targetPrefix) {
  std::vector<Sample> out;
  const nlohmann::json &manifest = samplesManifest();
  const nlohmann::json &list = manifest.is_array() ? manifest : manifest.value("samples", nlohmann::json::array());
  std::string dir = samplesDir();
  auto pathOf = [&](const nlohmann::json &entry, const char *key) {
    if (!entry.contains(key) || entry[key].is_null()) return std::string();
    return dir + "/" + entry[key].get<std::string>();
  };
  for (const nlohmann::json &entry : list) {
    Sample s;
    s.target = entry.value("target", "");
    if (s.target.rfind(targetPrefix, 0) != 0) continue;
    s.program = entry.value("program", "");
    s.variant = entry.value("variant", "");
    s.path = pathOf(entry, "path");
    s.strippedPath = pathOf(entry, "stripped_path");
    s.debugPath = pathOf(entry, "debug_path");
    s.pdbPath = pathOf(entry, "pdb_path");
    out.push_back(std::move(s));
  }
  if (out.empty()) ADD_FAILURE() << "no samples for target prefix '" << targetPrefix << "'";
  return out;
}

Image loadImage(const std::string &path, const ImageReadOptions &options) {
  llvm::Expected<Image> image = readImage(path, options);
  if (!image) {
    ADD_FAILURE() << llvm::toString(image.takeError());
    return Image();
  }
  return std::move(*image);
}

std::string hotforgeBinary() {
  const char *bin = std::getenv("HOTFORGE_BIN");
  return bin ? bin : "hotforge";
}

std::vector<std::pair<uint64_t, uint64_t>> ehFrameRanges(const std::string &path) {
  CommandResult r = run({"llvm-dwarfdump-19", "--eh-frame", path});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  static const std::regex fde(R"( FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.\.([0-9a-f]+))");
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, fde))
      ranges.push_back({std::stoull(m[1], nullptr, 16), std::stoull(m[2], nullptr, 16)});
  }
  return ranges;
}

std::vector<ToolSymbol> readelfSymbols(const std::string &path, const std::string &table) {
  CommandResult r = run({"llvm-readelf-19", table == ".dynsym" ? "--dyn-syms" : "--syms", "--wide", path});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::vector<ToolSymbol> symbols;
  static const std::regex row(
      R"(^\s*\d+: ([0-9a-f]+)\s+(\d+|0x[0-9a-f]+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$)");
  std::istringstream lines(r.out);
  bool inTable = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Symbol table '", 0) == 0) {
      inTable = line.find("'" + table + "'") != std::string::npos;
      continue;
    }
    std::smatch m;
    if (!inTable || !std::regex_match(line, m, row)) continue;
    ToolSymbol s;
    s.value = std::stoull(m[1], nullptr, 16);
    s.size = std::stoull(m[2], nullptr, 0);
    s.type = m[3];
    s.defined = m[6] != "UND" && m[6] != "ABS";
    s.name = m[7];
    if (auto at = s.name.find('@'); at != std::string::npos) s.name.resize(at);
    symbols.push_back(std::move(s));
  }
  return symbols;
}

}  // namespace hotforge::test
