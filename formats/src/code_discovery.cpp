// Runs codeflow's function discovery on an Image the format reader has filled: the container
// gives the regions (FormatReader::holdsFunctions) and the pointer targets, the tables give the
// known starts; the result completes image.functions and image.coverage.
#include "format_reader.h"

#include "hotforge/codeflow/discovery.h"

#include <map>
#include <algorithm>

namespace hotforge::detail {

using namespace llvm;

namespace {

// One flow decoder per machine and thread: setting up LLVM MC costs more than a small image.
Expected<codeflow::FlowDecoder *> flowDecoder(Machine machine) {
  thread_local std::map<Machine, std::unique_ptr<codeflow::FlowDecoder>> decoders;
  std::unique_ptr<codeflow::FlowDecoder> &decoder = decoders[machine];
  if (!decoder) {
    Expected<std::unique_ptr<codeflow::FlowDecoder>> created = codeflow::createFlowDecoder(machine);
    if (!created) return created.takeError();
    decoder = std::move(*created);
  }
  return decoder.get();
}

// Function ranges and parts merged into disjoint sorted intervals.
std::vector<std::pair<uint64_t, uint64_t>> coveredIntervals(const std::vector<Function> &functions) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(functions.size());
  for (const Function &f : functions) {
    if (f.range.size) ranges.push_back({f.range.rva, f.range.end()});
    for (const AddressRange &part : f.parts) ranges.push_back({part.rva, part.end()});
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto &r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) merged.back().second = std::max(merged.back().second, r.second);
    else merged.push_back(r);
  }
  return merged;
}

uint64_t bytesWithin(const std::vector<std::pair<uint64_t, uint64_t>> &intervals,
                     const std::vector<codeflow::CodeRegion> &regions) {
  uint64_t total = 0;
  for (const codeflow::CodeRegion &region : regions) {
    auto it = std::lower_bound(intervals.begin(), intervals.end(), std::make_pair(region.rva, uint64_t(0)));
    if (it != intervals.begin()) --it;
    for (; it != intervals.end() && it->first < region.end(); ++it) {
      uint64_t begin = std::max(it->first, region.rva), end = std::min(it->second, region.end());
      if (end > begin) total += end - begin;
    }
  }
  return total;
}

void mergeDiscovered(const codeflow::DiscoveryResult &result, std::vector<Function> &functions) {
  constexpr uint32_t kCodeBit = 1u << unsigned(FunctionSource::Code);
  size_t known = functions.size();
  functions.reserve(known + result.functions.size());  // no doubling: a large binary has 10^5 functions
  for (const codeflow::DiscoveredFunction &d : result.functions) {
    auto it = std::lower_bound(functions.begin(), functions.begin() + ptrdiff_t(known), d.rva,
                               [](const Function &f, uint64_t rva) { return f.range.rva < rva; });
    if (it != functions.begin() + ptrdiff_t(known) && it->range.rva == d.rva) {
      // A start the tables gave without an extent: its size now comes from its code.
      it->range.size = d.size;
      it->source = FunctionSource::Code;
      it->sourceMask |= kCodeBit;
      it->sizeInferred = false;
      continue;
    }
    Function f;
    f.range = {d.rva, d.size};
    f.source = FunctionSource::Code;
    f.nameSource = FunctionSource::Code;
    f.sourceMask = kCodeBit;
    functions.push_back(std::move(f));
  }
  std::sort(functions.begin(), functions.end(),
            [](const Function &a, const Function &b) { return a.range.rva < b.range.rva; });
  // Inferred sizes stop at the starts that discovery added.
  for (size_t i = 0; i + 1 < functions.size(); ++i)
    if (functions[i].sizeInferred && functions[i].range.end() > functions[i + 1].range.rva)
      functions[i].range.size = functions[i + 1].range.rva - functions[i].range.rva;
}

}  // namespace

Error discoverFunctionsFromCode(const FormatReader &reader, Image &image) {
  codeflow::DiscoveryInput input;
  for (const Section &s : image.sections) {
    if (!s.loaded || !s.permissions.execute) continue;
    input.executable.push_back({s.rva, s.rva + s.size});
    if (!reader.holdsFunctions(s)) continue;
    ArrayRef<uint8_t> bytes = image.bytesAt(s.rva, std::min(s.size, s.fileSize));
    if (!bytes.empty()) input.regions.push_back({s.rva, bytes});
  }
  if (input.regions.empty()) return Error::success();
  Expected<codeflow::FlowDecoder *> decoder = flowDecoder(image.machine);
  if (!decoder) return decoder.takeError();
  input.known.reserve(image.functions.size());
  for (const Function &f : image.functions) {
    input.known.push_back({f.range.rva, f.sizeInferred ? 0 : f.range.size});
    for (const AddressRange &part : f.parts) input.known.push_back({part.rva, part.size});
  }
  if (codeflow::hasUncoveredCode(**decoder, input)) {
    if (image.entryRva) input.entries.push_back(image.entryRva);
    input.pointers = reader.pointerTargets(image);
    input.readBytes = [&image](uint64_t rva, uint64_t size) { return image.bytesAt(rva, size); };
    mergeDiscovered(codeflow::discoverFunctions(**decoder, input), image.functions);
    image.coverage.discoveryRan = true;
  }
  std::vector<std::pair<uint64_t, uint64_t>> covered = coveredIntervals(image.functions);
  for (const codeflow::CodeRegion &region : input.regions) image.coverage.codeBytes += region.bytes.size();
  image.coverage.functionBytes = bytesWithin(covered, input.regions);
  image.coverage.fillBytes = codeflow::fillBetween(**decoder, input.regions, covered);
  return Error::success();
}

}  // namespace hotforge::detail
