#include "hotforge/core/container_target.h"
#include "program.h"

#include <llvm/ADT/bit.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/xxhash.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cctype>
#include <thread>
#include <unordered_set>

namespace hotforge::differ {

namespace {

bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// GNU ld's Cortex-A53 erratum veneers (e843419@..., e835769@...): one instruction of a function
// moved out of line, read in its place (InstructionDecoder::outOfLineInstruction), not a function.
bool isErratumVeneer(const Function &f) {
  return f.name && (f.name->rfind("e843419@", 0) == 0 || f.name->rfind("e835769@", 0) == 0);
}

// Unnamed, and no table saw its start: function discovery found it in the code.
bool foundOnlyInCode(const Function &f) {
  return !f.name && f.sourceMask == 1u << unsigned(FunctionSource::Code);
}

bool isStubSection(std::string_view name) {
  return name == ".plt" || name == ".plt.sec" || name == ".plt.got" || name == ".iplt";
}

constexpr uint64_t kStringScanLimit = 4096;
constexpr uint64_t kConstantExtentLimit = 64;
constexpr uint64_t kPointerSlotSize = 8;  // both machines are 64-bit

}  // namespace

std::string_view normalizeFunctionName(std::string_view name, bool &coldPart) {
  static constexpr std::string_view kNumberedSuffixes[] = {"isra", "constprop", "part", "lto_priv", "llvm", "cold"};
  std::string_view s = name;
  coldPart = false;
  while (true) {
    size_t dot = s.rfind('.');
    if (dot == std::string::npos || dot == 0) break;
    std::string_view last = s.substr(dot + 1);
    if (last == "cold") {
      coldPart = true;
      s = s.substr(0, dot);
      continue;
    }
    if (!allDigits(last)) break;
    size_t previous = s.rfind('.', dot - 1);
    if (previous == std::string::npos) break;
    std::string_view word = s.substr(previous + 1, dot - previous - 1);
    if (std::find(std::begin(kNumberedSuffixes), std::end(kNumberedSuffixes), word) == std::end(kNumberedSuffixes))
      break;
    coldPart |= word == "cold";
    s = s.substr(0, previous);
  }
  return s;
}

std::string_view normalizeDataName(std::string_view name) {
  bool cold = false;
  std::string_view s = normalizeFunctionName(name, cold);
  size_t dot = s.rfind('.');
  if (dot != std::string::npos && dot > 0 && allDigits(s.substr(dot + 1))) s = s.substr(0, dot);
  return s;
}

StartIndex::StartIndex(std::vector<uint64_t> sortedStarts) : starts_(std::move(sortedStarts)) {
  if (starts_.empty()) return;
  first_ = starts_.front();
  // About one start per bucket.
  while (((starts_.back() - first_) >> shift_) >= starts_.size()) ++shift_;
  size_t buckets = size_t((starts_.back() - first_) >> shift_) + 1;
  bucketBegin_.resize(buckets + 1);
  size_t position = 0;
  for (size_t bucket = 0; bucket <= buckets; ++bucket) {
    while (position < starts_.size() && ((starts_[position] - first_) >> shift_) < bucket) ++position;
    bucketBegin_[bucket] = uint32_t(position);
  }
}

size_t StartIndex::countAtOrBefore(uint64_t rva) const {
  if (starts_.empty() || rva < first_) return 0;
  uint64_t bucket = (rva - first_) >> shift_;
  if (bucket + 1 >= bucketBegin_.size()) return starts_.size();
  auto begin = starts_.begin() + bucketBegin_[bucket], end = starts_.begin() + bucketBegin_[bucket + 1];
  return size_t(std::upper_bound(begin, end, rva) - starts_.begin());
}

PointerSlots::PointerSlots(std::vector<Slot> slots) {
  std::stable_sort(slots.begin(), slots.end(), [](const Slot &a, const Slot &b) { return a.rva < b.rva; });
  std::vector<uint64_t> rvas;
  rvas.reserve(slots.size());
  pointers_.reserve(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    if (i + 1 < slots.size() && slots[i + 1].rva == slots[i].rva) continue;  // the later one counts
    rvas.push_back(slots[i].rva);
    pointers_.push_back(slots[i].pointer);
  }
  index_ = StartIndex(std::move(rvas));
}

const PointerTarget *PointerSlots::find(uint64_t rva) const {
  size_t count = index_.countAtOrBefore(rva);
  return count && index_.starts()[count - 1] == rva ? &pointers_[count - 1] : nullptr;
}

const PointerTarget &PointerSlots::at(uint64_t rva) const {
  const PointerTarget *pointer = find(rva);
  assert(pointer && "PointerSlots::at: no slot there");
  return *pointer;
}

std::pair<size_t, size_t> PointerSlots::within(uint64_t begin, uint64_t end) const {
  return {begin ? index_.countAtOrBefore(begin - 1) : 0, end ? index_.countAtOrBefore(end - 1) : 0};
}

AddressMemo::AddressMemo(size_t capacity) {
  if (!capacity) return;
  size_t entries = llvm::bit_ceil(capacity);
  entries_ = std::make_unique<Entry[]>(entries);
  mask_ = entries - 1;
}

std::optional<uint64_t> AddressMemo::find(uint64_t address) const {
  if (!entries_ || address + 1 == kClaimed) return std::nullopt;
  uint64_t key = address + 1;
  for (size_t i = 0, at = mixHash(address, 0) & mask_; i < kProbes; ++i, at = (at + 1) & mask_) {
    uint64_t seen = entries_[at].key.load(std::memory_order_acquire);
    if (seen == key) return entries_[at].value;
    if (seen == kFree) return std::nullopt;
  }
  return std::nullopt;
}

void AddressMemo::insert(uint64_t address, uint64_t value) {
  if (!entries_ || address + 1 == kClaimed) return;
  uint64_t key = address + 1;
  for (size_t i = 0, at = mixHash(address, 0) & mask_; i < kProbes; ++i, at = (at + 1) & mask_) {
    uint64_t expected = kFree;
    if (entries_[at].key.compare_exchange_strong(expected, kClaimed, std::memory_order_acquire)) {
      entries_[at].value = value;
      entries_[at].key.store(key, std::memory_order_release);
      return;
    }
    if (expected == key) return;  // another worker got there first, with the same value
  }
}

void AddressSet::add(uint64_t address) {
  auto [entry, added] = blockIndex_.try_emplace(address >> kBlockShift, uint32_t(blocks_.size()));
  if (added) blocks_.emplace_back();
  uint64_t bit = address & ((uint64_t(1) << kBlockShift) - 1);
  blocks_[entry->second][bit / 64] |= uint64_t(1) << (bit % 64);
}

bool AddressSet::contains(uint64_t address) const {
  auto entry = blockIndex_.find(address >> kBlockShift);
  uint64_t bit = address & ((uint64_t(1) << kBlockShift) - 1);
  return entry != blockIndex_.end() && (blocks_[entry->second][bit / 64] >> (bit % 64) & 1);
}

std::optional<uint64_t> AddressSet::firstBetween(uint64_t after, uint64_t before) const {
  for (uint64_t address = after + 1; address < before;) {
    auto entry = blockIndex_.find(address >> kBlockShift);
    if (entry == blockIndex_.end()) {
      address = ((address >> kBlockShift) + 1) << kBlockShift;
      continue;
    }
    uint64_t bit = address & ((uint64_t(1) << kBlockShift) - 1);
    if (uint64_t word = blocks_[entry->second][bit / 64] >> (bit % 64)) {
      uint64_t found = address + uint64_t(llvm::countr_zero(word));
      return found < before ? std::optional<uint64_t>(found) : std::nullopt;
    }
    address = (address | 63) + 1;
  }
  return std::nullopt;
}

void releaseFilePagesEvery(size_t steps, size_t step, const Image &image, const Image *other) {
  if (step % steps != steps - 1) return;
  image.releaseFilePages();
  if (other) other->releaseFilePages();
}

void parallelFor(size_t count, unsigned threads, const std::function<void(unsigned, size_t)> &fn, size_t grain) {
  if (threads <= 1 || count < 2 * grain) {
    for (size_t i = 0; i < count; ++i) fn(0, i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (unsigned worker = 0; worker < threads; ++worker)
    workers.emplace_back([&, worker] {
      for (size_t begin; (begin = next.fetch_add(grain)) < count;)
        for (size_t i = begin; i < std::min(count, begin + grain); ++i) fn(worker, i);
    });
  for (std::thread &t : workers) t.join();
}

Program::Program(const Image &img) : image(img) {
  for (const Section &s : image.sections)
    if (s.loaded && isStubSection(s.name)) stubRanges_.push_back({s.rva, s.rva + s.size});

  size_t n = image.functions.size();
  diffable.assign(n, false);
  nameKeys.resize(n);
  coldPart.assign(n, false);
  nameDigests.assign(n, 0);
  std::vector<uint64_t> functionStarts(n);
  for (size_t i = 0; i < n; ++i) {
    const Function &f = image.functions[i];
    functionStarts[i] = f.range.rva;
    const Section *section = image.sectionAt(f.range.rva);
    diffable[i] = f.range.size && section && section->permissions.execute && !isStubSection(section->name) &&
                  !isErratumVeneer(f);
    if (f.name) {
      bool cold = false;
      nameKeys[i] = normalizeFunctionName(*f.name, cold);
      coldPart[i] = cold;
      nameDigests[i] = llvm::xxh3_64bits(nameKeys[i]);
    }
  }
  functionStarts_ = StartIndex(std::move(functionStarts));

  for (const Segment &s : image.segments)
    if (s.type == "GNU_RELRO") relro_.push_back({s.rva, s.memorySize});
  relocations = relocationIndex(image);
  std::vector<PointerSlots::Slot> slots;
  slots.reserve(image.relocations.size());
  for (const Relocation &r : image.relocations) {
    if (r.symbol) {
      slots.push_back({r.rva, {r.symbol, 0}});
    } else if (containerTarget(image.format).relocationsCarryAddends()) {
      if (llvm::StringRef(r.typeName).ends_with("RELATIVE") && uint64_t(r.addend) >= image.imageBase)
        slots.push_back({r.rva, {nullptr, uint64_t(r.addend) - image.imageBase}});
    } else if (llvm::ArrayRef<uint8_t> bytes = image.bytesAt(r.rva, 8); bytes.size() == 8) {
      uint64_t value = llvm::support::endian::read64le(bytes.data());
      if (value >= image.imageBase) slots.push_back({r.rva, {nullptr, value - image.imageBase}});
    }
  }
  pointers = PointerSlots(std::move(slots));
  for (const Import &i : image.imports) importSlots[i.slotRva] = &i;
  dataSlots_.assign(image.dataObjects.size(), 0);
  std::vector<uint64_t> dataStarts;
  for (const DataObject &d : image.dataObjects)
    if (!d.threadLocal) {
      dataSlots_[size_t(&d - image.dataObjects.data())] = data.size();
      data.push_back(&d);
      dataStarts.push_back(d.range.rva);
      dataKeys.push_back(normalizeDataName(d.name));
    }
  dataStartsInside_.assign(n, false);
  for (size_t i = 0, next = 0; i < n; ++i) {
    const AddressRange &range = image.functions[i].range;
    while (next < dataStarts.size() && dataStarts[next] <= range.rva) ++next;
    dataStartsInside_[i] = next < dataStarts.size() && range.contains(dataStarts[next]);
  }
  dataStarts_ = StartIndex(std::move(dataStarts));
}

void Program::decode(std::vector<std::unique_ptr<InstructionDecoder>> &decoders, const Program *other,
                     const std::vector<std::optional<size_t>> &movedFrom) {
  size_t n = image.functions.size();
  code.assign(n, {});
  entryThunkSlots_.assign(n, 0);
  copiedFrom_ = other;
  chunks_.assign((n + kFunctionsPerChunk - 1) / kFunctionsPerChunk, {});
  // Each worker fills its own scratch chunk, then the chunk gets an exact copy: vectors that grew
  // in small steps on two threads would leave the heap fragmented.
  std::vector<CodeChunk> scratch(decoders.size());
  std::vector<std::vector<CodeReference>> decoded(decoders.size());
  parallelFor(chunks_.size(), unsigned(decoders.size()), [&](unsigned worker, size_t c) {
    CodeChunk &work = scratch[worker];
    work.references.clear();
    work.targets.clear();
    work.starts.clear();
    work.startsBefore.clear();
    size_t begin = c * kFunctionsPerChunk, end = std::min(n, begin + kFunctionsPerChunk);
    for (size_t i = begin; i < end; ++i) {
      if (!diffable[i]) continue;
      entryThunkSlots_[i] = importThunkSlot(image.functions[i].range.rva, *decoders[worker]).value_or(0);
      if (other && movedFrom[i] && copyMovedCode(i, *movedFrom[i], work)) continue;
      const Function &function = image.functions[i];
      llvm::ArrayRef<uint8_t> bytes = image.bytesAt(function.range.rva, function.range.size);
      FunctionCode &f = code[i];
      f.firstReference = uint32_t(work.references.size());
      f.firstStartWord = uint32_t(work.starts.size());
      work.starts.resize(work.starts.size() + (bytes.size() + 63) / 64);
      decoded[worker].clear();
      static_cast<CodeSummary &>(f) =
          decoders[worker]->decodeInto(bytes, function.range.rva, relocations, decoded[worker],
                                       llvm::MutableArrayRef<uint64_t>(work.starts).drop_front(f.firstStartWord));
      for (const CodeReference &r : decoded[worker]) work.references.emplace_back(r);
      f.referenceCount = uint32_t(work.references.size() - f.firstReference);
      uint32_t before = 0;
      for (size_t w = f.firstStartWord; w < work.starts.size(); ++w) {
        work.startsBefore.push_back(before);
        before += uint32_t(llvm::popcount(work.starts[w]));
      }
    }
    chunks_[c] = work;
    // Decoding walks the code once, in order: the file pages behind it need not stay resident.
    releaseFilePagesEvery(kChunksBetweenReleases, c, image, other ? &other->image : nullptr);
  }, 1);
}

void Program::indexReferences() {
  // naturalExtent looks for targets within a section only: the rest need not be kept.
  uint64_t sectionsEnd = 0;
  for (const Section &s : image.sections)
    if (s.loaded) sectionsEnd = std::max(sectionsEnd, s.rva + s.size);
  // An indexed access's target is where index 0 lands, no start of anything.
  for (const CodeChunk &chunk : chunks_)
    for (const PackedReference &r : chunk.references)
      if (r.target() < sectionsEnd && !r.indexed()) referenced.add(r.target());
  for (size_t i = 0; i < code.size(); ++i)
    if (code[i].copiedFrom != FunctionCode::kOwnCode)
      for (const CodeReference &r : references(i))
        if (r.target < sectionsEnd && !r.indexed) referenced.add(r.target);
  dropUnreachedDiscoveries();
  findSplitParts();
}

std::optional<uint64_t> Program::importThunkSlot(uint64_t rva, const InstructionDecoder &decoder) const {
  constexpr uint64_t kThunkBytes = 12;
  const Section *s = image.sectionAt(rva);
  if (!s || !s->permissions.execute) return std::nullopt;
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, std::min(kThunkBytes, s->rva + s->size - rva));
  std::optional<uint64_t> slot = decoder.importThunkSlot(bytes, rva);
  if (!slot) return std::nullopt;
  if (const PointerTarget *pointer = pointers.find(*slot); importSlots.count(*slot) || (pointer && pointer->symbol))
    return slot;
  return std::nullopt;
}

void Program::takeDiscoveredThunksForImports(const InstructionDecoder &decoder) {
  for (size_t i = 0; i < image.functions.size(); ++i) {
    const Function &f = image.functions[i];
    if (!diffable[i] || !foundOnlyInCode(f)) continue;
    if (std::optional<uint64_t> slot = importThunkSlot(f.range.rva, decoder)) {
      importThunks_[f.range.rva] = *slot;
      diffable[i] = false;
    }
  }
}

void Program::dropUnreachedDiscoveries() {
  std::vector<size_t> unreached;  // by address: found only in code, and no code refers to them
  for (size_t i = 0; i < image.functions.size(); ++i) {
    const Function &f = image.functions[i];
    if (diffable[i] && foundOnlyInCode(f) && f.range.rva != image.entryRva && !referenced.contains(f.range.rva))
      unreached.push_back(i);
  }
  if (unreached.empty()) return;
  std::vector<bool> pointedAt(unreached.size(), false);  // ... unless data points at them
  auto byAddress = [&](size_t i, uint64_t rva) { return image.functions[i].range.rva < rva; };
  for (size_t k = 0; k < pointers.size(); ++k) {
    if (pointers.pointer(k).symbol) continue;
    uint64_t rva = pointers.pointer(k).rva;
    auto at = std::lower_bound(unreached.begin(), unreached.end(), rva, byAddress);
    if (at != unreached.end() && image.functions[*at].range.rva == rva) pointedAt[size_t(at - unreached.begin())] = true;
  }
  for (size_t k = 0; k < unreached.size(); ++k)
    if (!pointedAt[k]) diffable[unreached[k]] = false;
}

void Program::findStubs(InstructionDecoder &decoder) {
  std::unordered_set<uint64_t> seen;  // targets that start no decoded function, read once
  for (size_t i = 0; i < code.size(); ++i) {
    if (!diffable[i]) continue;
    for (const CodeReference &r : references(i)) {
      if ((r.kind != ReferenceKind::Call && r.kind != ReferenceKind::Branch) || landsInItself(i, r.target)) continue;
      if (inStubSection(r.target)) {
        if (!stubSlots_.count(r.target)) stubSlots_[r.target] = decodeStubSlot(r.target, decoder);
        continue;
      }
      std::optional<uint64_t> slot;
      const Function *f = functionAt(r.target);
      if (f && f->range.rva == r.target && diffable[functionIndex(f)]) {
        if (uint64_t entrySlot = entryThunkSlots_[functionIndex(f)]) slot = entrySlot;
      } else if (seen.insert(r.target).second) {
        slot = importThunkSlot(r.target, decoder);
      }
      if (slot) importThunks_[r.target] = *slot;
    }
  }
  entryThunkSlots_ = {};
}

bool Program::copyMovedCode(size_t p, size_t b, CodeChunk &chunk) {
  const FunctionCode &from = copiedFrom_->code[b];
  const Function &fb = copiedFrom_->image.functions[b], &fp = image.functions[p];
  llvm::ArrayRef<uint8_t> baseBytes = copiedFrom_->image.bytesAt(fb.range.rva, fb.range.size);
  llvm::ArrayRef<uint8_t> patchedBytes = image.bytesAt(fp.range.rva, fp.range.size);
  if (baseBytes.size() != patchedBytes.size() || baseBytes.empty() || !from.complete) return false;
  // A function that neither moved nor changed (most of a security update) decodes as the other
  // does, whatever its references are (an Arm64 ADRP pair too): it refers where the other does.
  auto relocatedWithin = [&](const RelocationIndex &index) {
    auto first = std::lower_bound(index.rvas.begin(), index.rvas.end(), fp.range.rva);
    auto last = std::lower_bound(first, index.rvas.end(), fp.range.end());
    return llvm::ArrayRef<uint64_t>(index.rvas).slice(size_t(first - index.rvas.begin()), size_t(last - first));
  };
  bool inPlace = fb.range.rva == fp.range.rva && std::equal(baseBytes.begin(), baseBytes.end(), patchedBytes.begin()) &&
                 relocatedWithin(relocations) == relocatedWithin(copiedFrom_->relocations);
  ReferenceList fromReferences = copiedFrom_->references(b);
  if (!inPlace) {
    uint32_t compared = 0;
    for (const CodeReference &r : fromReferences) {
      std::optional<FieldSpan> span = fieldSpan(machineTarget(image.machine), r);
      if (!span || span->begin < compared || span->end > baseBytes.size()) return false;
      if (!std::equal(baseBytes.begin() + compared, baseBytes.begin() + span->begin, patchedBytes.begin() + compared))
        return false;
      if (span->mask) {
        uint32_t wb = llvm::support::endian::read32le(&baseBytes[span->begin]);
        uint32_t wp = llvm::support::endian::read32le(&patchedBytes[span->begin]);
        if ((wb & ~span->mask) != (wp & ~span->mask)) return false;
      }
      compared = span->end;
    }
    if (!std::equal(baseBytes.begin() + compared, baseBytes.end(), patchedBytes.begin() + compared)) return false;
  }
  FunctionCode &f = code[p];
  static_cast<CodeSummary &>(f) = from;
  f.copiedFrom = uint32_t(b);
  f.referenceCount = from.referenceCount;
  if (inPlace) {
    f.firstReference = FunctionCode::kSameTargets;
    return true;
  }
  f.firstReference = uint32_t(chunk.targets.size());
  for (const CodeReference &r : fromReferences)
    chunk.targets.push_back(retarget(machineTarget(image.machine), r, patchedBytes, fp.range.rva, relocations.imageBase));
  return true;
}

ReferenceList Program::references(size_t function) const {
  const FunctionCode &f = code[function];
  const CodeChunk &chunk = chunks_[function / kFunctionsPerChunk];
  if (f.copiedFrom == FunctionCode::kOwnCode)
    return {chunk.references.data() + f.firstReference, nullptr, f.referenceCount};
  const FunctionCode &source = copiedFrom_->code[f.copiedFrom];
  const CodeChunk &sourceChunk = copiedFrom_->chunks_[f.copiedFrom / kFunctionsPerChunk];
  return {sourceChunk.references.data() + source.firstReference,
          f.firstReference == FunctionCode::kSameTargets ? nullptr : chunk.targets.data() + f.firstReference,
          f.referenceCount};
}

std::optional<uint32_t> Program::instructionAt(size_t function, uint64_t offset) const {
  // No counted instructions: no starts, and no words at all when the file lacks its bytes.
  const FunctionCode &f = code[function];
  if (!diffable[function] || !f.instructions || offset >= image.functions[function].range.size) return std::nullopt;
  // A copied function has the instruction starts of the function it was copied from.
  const Program &owner = f.copiedFrom == FunctionCode::kOwnCode ? *this : *copiedFrom_;
  size_t index = f.copiedFrom == FunctionCode::kOwnCode ? function : f.copiedFrom;
  const CodeChunk &chunk = owner.chunks_[index / kFunctionsPerChunk];
  size_t word = owner.code[index].firstStartWord + offset / 64;
  uint64_t bit = 1ull << (offset % 64);
  if (!(chunk.starts[word] & bit)) return std::nullopt;
  return chunk.startsBefore[word] + uint32_t(llvm::popcount(chunk.starts[word] & (bit - 1)));
}

// An unnamed function that no code calls and that exactly one other function branches into.
void Program::findSplitParts() {
  partOf.assign(code.size(), std::nullopt);
  // Only unnamed functions can be such parts: without one there is nothing to look for.
  auto unnamed = [&](size_t t) { return diffable[t] && nameKeys[t].empty(); };
  bool any = false;
  for (size_t t = 0; t < code.size() && !any; ++t) any = unnamed(t);
  if (!any) return;
  constexpr uint32_t kNone = ~0u, kSeveral = ~0u - 1;
  std::vector<uint32_t> enteredFrom(code.size(), kNone);
  std::vector<bool> called(code.size(), false);
  for (size_t f = 0; f < code.size(); ++f) {
    for (const CodeReference &r : references(f)) {
      if (r.kind != ReferenceKind::Call && r.kind != ReferenceKind::Branch) continue;
      size_t count = functionStarts_.countAtOrBefore(r.target);
      if (!count || image.functions[count - 1].range.rva != r.target || !unnamed(count - 1)) continue;
      size_t t = count - 1;
      if (r.kind == ReferenceKind::Call) called[t] = true;
      else if (t != f && enteredFrom[t] != uint32_t(f)) enteredFrom[t] = enteredFrom[t] == kNone ? uint32_t(f) : kSeveral;
    }
  }
  for (size_t t = 0; t < code.size(); ++t)
    if (unnamed(t) && !called[t] && enteredFrom[t] != kNone && enteredFrom[t] != kSeveral) partOf[t] = enteredFrom[t];
}

bool Program::landsInItself(size_t function, uint64_t rva) const {
  const Function &f = image.functions[function];
  if (!diffable[function] || !f.range.contains(rva) || dataStartsInside_[function]) return false;
  if (function + 1 < image.functions.size() && image.functions[function + 1].range.rva <= rva) return false;
  return !inStubSection(rva);
}

bool Program::inStubSection(uint64_t rva) const {
  for (auto [begin, end] : stubRanges_)
    if (rva >= begin && rva < end) return true;
  return false;
}

const Function *Program::functionAt(uint64_t rva) const {
  size_t count = functionStarts_.countAtOrBefore(rva);
  if (count == 0) return nullptr;
  const Function &f = image.functions[count - 1];
  return f.range.contains(rva) ? &f : nullptr;
}

std::vector<const DataObject *>::const_iterator Program::dataAfter(uint64_t rva) const {
  return data.begin() + ptrdiff_t(dataStarts_.countAtOrBefore(rva));
}

bool Program::isReadOnly(uint64_t rva) const { return isReadOnly(rva, sectionOf(rva)); }

bool Program::isReadOnly(uint64_t rva, const Section *section) const {
  for (const AddressRange &r : relro_)
    if (r.contains(rva)) return true;
  return section && !section->permissions.write;
}

const DataObject *Program::containingObject(uint64_t rva) const {
  auto it = dataAfter(rva);
  if (it == data.begin()) return nullptr;
  const DataObject *d = *std::prev(it);
  return d->range.contains(rva) || d->range.rva == rva ? d : nullptr;
}

TargetClass Program::classify(uint64_t rva, const Function **function, const DataObject **object) const {
  if (inStubSection(rva)) return TargetClass::Stub;
  if (!importThunks_.empty() && importThunks_.count(rva)) return TargetClass::Stub;
  const Function *f = functionAt(rva);
  bool inFunction = f && diffable[functionIndex(f)];
  if (inFunction && f->range.rva == rva) {  // a call: no object can take it
    *function = f;
    return TargetClass::Function;
  }
  auto it = dataAfter(rva);
  const DataObject *containing = it != data.begin() ? *std::prev(it) : nullptr;
  if (inFunction && (!containing || containing->range.rva != rva)) {
    *function = f;
    return TargetClass::Function;
  }
  if (importSlots.count(rva)) return TargetClass::ImportSlot;
  // An object whose size nobody gave is only known to start where its symbol is: read-only bytes
  // after it are as likely unnamed constants (string literals) as part of it.
  if (containing && (containing->range.rva == rva ||
                     (containing->range.contains(rva) && (containing->sizeKnown || !isReadOnly(rva))))) {
    *object = containing;
    return TargetClass::DataObject;
  }
  if (isPointerSlot(rva)) return TargetClass::PointerSlot;
  const Section *section = sectionOf(rva);
  if (!section) return TargetClass::Unknown;
  return isReadOnly(rva, section) ? TargetClass::ReadOnly : TargetClass::Writable;
}

std::optional<Program::SectionEnd> Program::pastSectionEnd(uint64_t rva) const {
  constexpr uint64_t kAlignment = 16;
  for (const Section &s : image.sections)
    if (s.loaded && s.size && rva >= s.rva + s.size && rva - (s.rva + s.size) < kAlignment)
      return SectionEnd{&s, rva - (s.rva + s.size)};
  return std::nullopt;
}

const Section *Program::sectionOf(uint64_t rva) const {
  if (const Section *s = image.sectionAt(rva)) return s;
  std::optional<SectionEnd> end = pastSectionEnd(rva);
  return end ? end->section : nullptr;
}

std::optional<uint64_t> Program::stubSlot(uint64_t rva, InstructionDecoder &decoder) const {
  if (auto thunk = importThunks_.find(rva); thunk != importThunks_.end()) return thunk->second;
  if (auto stub = stubSlots_.find(rva); stub != stubSlots_.end()) return stub->second;
  return decodeStubSlot(rva, decoder);
}

std::optional<uint64_t> Program::decodeStubSlot(uint64_t rva, InstructionDecoder &decoder) const {
  constexpr uint64_t kStubBytes = 16;
  const Section *section = image.sectionAt(rva);
  if (!section) return std::nullopt;
  uint64_t size = std::min(kStubBytes, section->rva + section->size - rva);
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, size);
  if (bytes.empty()) return std::nullopt;
  DecodedFunction stub = decoder.decode(bytes, rva, relocations);
  for (const CodeReference &r : stub.references)
    if (r.kind == ReferenceKind::Memory) return r.target;
  return std::nullopt;
}

bool Program::isTableSlot(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  return isPointerSlot(rva) && section && isReadOnly(rva, section) && !llvm::StringRef(section->name).starts_with(".got") &&
         tableExtent(rva) > kPointerSlotSize;
}

uint64_t Program::tableExtent(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  if (!section) return 0;
  uint64_t end = section->rva + section->size;
  if (std::optional<uint64_t> next = referenced.firstBetween(rva, end)) end = *next;
  auto object = dataAfter(rva);
  if (object != data.end() && (*object)->range.rva < end) end = (*object)->range.rva;
  return end - rva;
}

uint64_t Program::tableContentExtent(uint64_t rva) const {
  uint64_t size = tableExtent(rva), word = kPointerSlotSize;
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, size);
  while (size >= word && size <= bytes.size() && !isPointerSlot(rva + size - word) &&
         std::all_of(bytes.begin() + ptrdiff_t(size - word), bytes.begin() + ptrdiff_t(size), [](uint8_t b) { return b == 0; }))
    size -= word;
  return size;
}

std::optional<uint64_t> Program::cStringSize(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  if (!section) return std::nullopt;
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, std::min(kStringScanLimit, section->rva + section->fileSize > rva
                                                                                    ? section->rva + section->fileSize - rva
                                                                                    : 0));
  // Text: printable ASCII, white space, or UTF-8 bytes (0xf8 and above never occur in UTF-8).
  auto isText = [](uint8_t c) { return (c >= 0x20 && c != 0x7f && c < 0xf8) || c == '\n' || c == '\t' || c == '\r'; };
  size_t length = 0;
  while (length < bytes.size() && isText(bytes[length])) ++length;
  if (length > 0 && length < bytes.size() && bytes[length] == 0) return length + 1;
  return std::nullopt;
}

std::optional<Program::RelativeStringTable> Program::relativeStringTable(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  if (!section || section->permissions.write) return std::nullopt;
  RelativeStringTable table{0, rva, rva};
  std::vector<std::pair<uint64_t, uint64_t>> strings;  // start, size
  for (;; ++table.entries) {
    llvm::ArrayRef<uint8_t> word = image.bytesAt(rva + table.entries * 4, 4);
    if (word.size() != 4) break;
    uint64_t target = rva + int64_t(int32_t(llvm::support::endian::read32le(word.data())));
    // A string of its own (after a NUL, as a string section lays them out), outside the table.
    if (target <= section->rva || target - section->rva >= section->size ||
        (target >= rva && target < rva + (table.entries + 1) * 4))
      break;
    llvm::ArrayRef<uint8_t> before = image.bytesAt(target - 1, 1);
    if (before.size() != 1 || before[0] != 0) break;
    std::optional<uint64_t> size = cStringSize(target);
    if (!size) break;
    strings.push_back({target, *size});
  }
  while (!strings.empty() && strings.back().first >= rva && strings.back().first < rva + strings.size() * 4) {
    strings.pop_back();  // an entry aimed inside the table, once its extent is known
    --table.entries;
  }
  if (table.entries < 2) return std::nullopt;
  table.end = rva + table.entries * 4;
  for (auto [start, size] : strings) {
    table.begin = std::min(table.begin, start);
    table.end = std::max(table.end, start + size);
  }
  return table;
}

uint64_t Program::naturalExtent(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  if (!section) return 0;
  uint64_t sectionEnd = section->rva + section->size;
  if (isPointerSlot(rva)) return 8;
  // A C string ends at its NUL.
  if (std::optional<uint64_t> string = cStringSize(rva)) return *string;
  uint64_t end = std::min(sectionEnd, rva + kConstantExtentLimit);
  if (std::optional<uint64_t> next = referenced.firstBetween(rva, end)) end = *next;
  auto object = dataAfter(rva);
  if (object != data.end() && (*object)->range.rva < end) end = (*object)->range.rva;
  // Zeros right before an aligned next item are alignment padding, which differs between builds
  // as the items around it move: leave them out (keeping at least one byte, and every relocated
  // pointer whole: the high bytes of a pointer are zeros too).
  if (end % 16 == 0) {
    uint64_t keep = rva + 1;
    auto relocated = std::lower_bound(relocations.rvas.begin(), relocations.rvas.end(), end);
    if (relocated != relocations.rvas.begin() && *std::prev(relocated) >= rva && pointers.contains(*std::prev(relocated)))
      keep = std::min(end, *std::prev(relocated) + 8);
    llvm::ArrayRef<uint8_t> content = image.bytesAt(rva, end - rva);
    while (content.size() > 1 && content.back() == 0 && end - 1 >= keep) content = content.drop_back(), --end;
  }
  return end - rva;
}

uint64_t Program::relativeTableEntries(uint64_t rva, const Function &within) const {
  uint64_t entries = 0;
  for (;; ++entries) {
    llvm::ArrayRef<uint8_t> word = image.bytesAt(rva + entries * 4, 4);
    if (word.size() != 4 || !within.range.contains(rva + int64_t(int32_t(llvm::support::endian::read32le(word.data())))))
      return entries;
  }
}

std::optional<uint64_t> Program::switchTableHash(uint64_t rva, const Function &within) const {
  size_t function = functionIndex(&within);
  uint64_t hash = 0x7ab1e5, entries = 0;
  for (uint64_t offset = 0;; offset += 4) {
    llvm::ArrayRef<uint8_t> word = image.bytesAt(rva + offset, 4);
    if (word.size() != 4) break;
    uint64_t target = rva + int64_t(int32_t(llvm::support::endian::read32le(word.data())));
    if (!within.range.contains(target)) break;
    std::optional<uint32_t> instruction = instructionAt(function, target - within.range.rva);
    hash = mixHash(hash, instruction ? uint64_t(*instruction) : (1ull << 40) + target - within.range.rva);
    ++entries;
  }
  if (entries >= 2) return hash;  // the table's extent is where its entries end
  return std::nullopt;
}

uint64_t Program::contentHash(uint64_t rva, uint64_t size, const std::function<uint64_t(uint64_t)> &pointerClass) const {
  // clang's lookup table of a switch that returns strings, in position-independent code: 32-bit
  // offsets from its start to the strings. The strings move as the build changes; compare them.
  if (std::optional<RelativeStringTable> table = relativeStringTable(rva)) {
    uint64_t hash = mixHash(0x5e1a7ab1, table->entries);
    for (uint64_t i = 0; i < table->entries; ++i) {
      uint64_t target = rva + int64_t(int32_t(llvm::support::endian::read32le(image.bytesAt(rva + i * 4, 4).data())));
      hash = mixHash(hash, llvm::xxh3_64bits(image.bytesAt(target, *cStringSize(target))));
    }
    return hash;
  }
  uint64_t hash = mixHash(0xc0457a47, size);
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, size);
  if (bytes.size() != size) return 0x2e80f111;  // zero-fill (.bss): sizes are compared on their own
  // Pointers start at relocations (and, on PE, at aligned words): walk the sorted relocations
  // alongside, and hash the plain bytes between pointers as runs.
  const std::vector<uint64_t> &relocated = relocations.rvas;
  const ContainerTarget &container = containerTarget(image.format);
  auto nextRelocation = std::lower_bound(relocated.begin(), relocated.end(), rva);
  uint64_t runBegin = 0;
  auto endRun = [&](uint64_t end) {
    if (end > runBegin) hash = mixHash(hash, llvm::xxh3_64bits(bytes.slice(runBegin, end - runBegin)));
  };
  for (uint64_t offset = 0; offset < size;) {
    while (nextRelocation != relocated.end() && *nextRelocation < rva + offset) ++nextRelocation;
    std::optional<uint64_t> pointer;
    if (offset + 8 <= size) {
      if (nextRelocation != relocated.end() && *nextRelocation == rva + offset)
        if (const PointerTarget *slot = pointers.find(rva + offset))
          pointer = slot->symbol ? llvm::xxh3_64bits(*slot->symbol) : pointerClass(slot->rva);
      // Images linked without base relocations still hold absolute pointers: on PE, an aligned
      // word that points into the image is taken for one.
      if (!pointer && !container.relocationsCarryAddends() && (rva + offset) % 8 == 0) {
        uint64_t value = llvm::support::endian::read64le(bytes.data() + offset);
        if (value >= image.imageBase && value - image.imageBase < image.identity.sizeOfImage)
          pointer = pointerClass(value - image.imageBase);
      }
    }
    if (pointer) {
      endRun(offset);
      hash = mixHash(hash, *pointer);
      offset += 8;
      runBegin = offset;
      continue;
    }
    // On to the next place a pointer can start.
    auto later = nextRelocation;
    while (later != relocated.end() && *later <= rva + offset) ++later;
    uint64_t next = later == relocated.end() ? size : std::min(size, *later - rva);
    if (!container.relocationsCarryAddends()) next = std::min(next, (rva + offset) / 8 * 8 + 8 - rva);
    offset = next;
  }
  endRun(size);
  return hash;
}

}  // namespace hotforge::differ
