#include "hotforge/core/process_maps.h"

#include "hotforge/core/bytes.h"
#include "hotforge/core/files.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>

namespace hotforge {

std::vector<Mapping> readMaps(const std::string &mapsFile) {
  std::vector<Mapping> maps;
  std::ifstream in(mapsFile);
  for (std::string line; std::getline(in, line);) {
    unsigned long long start = 0, end = 0, offset = 0;
    char permissions[8] = {}, device[16] = {};
    unsigned long inode = 0;
    int consumed = 0;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %15s %lu %n", &start, &end, permissions, &offset, device, &inode,
               &consumed) < 6)
      continue;
    maps.push_back({start, end, offset, permissions, line.substr(std::min<size_t>(size_t(consumed), line.size()))});
  }
  return maps;
}

Outcome<MappedBaseline> findBaseline(const std::vector<Mapping> &maps, const PatchImage &image,
                                     const std::string &processName) {
  std::map<std::string, uint64_t> loadAddress;
  for (const Mapping &m : maps)
    if (!m.path.empty() && m.path[0] == '/' && m.offset == 0 && !loadAddress.count(m.path)) loadAddress[m.path] = m.start;
  auto fileName = [](const std::string &path) { return path.substr(path.find_last_of('/') + 1); };
  std::vector<std::string> candidates;
  for (const auto &[path, start] : loadAddress)
    if (fileName(path) == image.baseline.fileName) candidates.insert(candidates.begin(), path);
    else candidates.push_back(path);
  std::string sameName;
  for (const std::string &path : candidates) {
    Outcome<std::vector<uint8_t>> bytes = readFileBytes(path);
    if (!bytes) continue;
    std::array<uint8_t, 32> digest = sha256(*bytes);
    if (digest == image.baseline.sha256) return MappedBaseline{path, loadAddress[path]};
    if (sameName.empty() && fileName(path) == image.baseline.fileName)
      sameName = "mapped: " + path + " (sha256 " + hexEncode(digest) + ")";
  }
  return fail(processName, " does not run the baseline this patch fits (", image.baseline.fileName, " sha256 ",
              hexEncode(image.baseline.sha256), "); ", sameName.empty() ? "no file of that name is mapped" : sameName);
}

std::vector<uint64_t> freeAddressesNear(const std::vector<Mapping> &maps, uint64_t near, uint64_t size,
                                        uint64_t reach) {
  constexpr uint64_t kGranule = 0x10000;
  size = alignTo(size, kGranule);
  std::vector<uint64_t> addresses;
  for (size_t i = 0; i + 1 < maps.size(); ++i) {
    uint64_t gapStart = alignTo(maps[i].end, kGranule), gapEnd = maps[i + 1].start & ~(kGranule - 1);
    if (gapEnd < gapStart + size + 2 * kGranule) continue;
    addresses.push_back(gapEnd - size - kGranule);  // the top of a gap below, or
    addresses.push_back(gapStart + kGranule);       // the bottom of a gap above
  }
  auto distance = [&](uint64_t a) { return std::max(a + size, near) - std::min(a, near); };
  std::erase_if(addresses, [&](uint64_t a) { return distance(a) > reach; });
  std::sort(addresses.begin(), addresses.end(), [&](uint64_t a, uint64_t b) { return distance(a) < distance(b); });
  return addresses;
}

}  // namespace hotforge
