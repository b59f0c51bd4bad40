#include "program.h"

#include <llvm/Support/Endian.h>
#include <llvm/Support/xxhash.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <set>
#include <thread>

namespace hotforge::differ {

namespace {

bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool isStubSection(std::string_view name) {
  return name == ".plt" || name == ".plt.sec" || name == ".plt.got" || name == ".iplt";
}

constexpr uint64_t kStringScanLimit = 4096;
constexpr uint64_t kConstantExtentLimit = 64;

}  // namespace

std::string normalizeFunctionName(std::string_view name, bool &coldPart) {
  static constexpr std::string_view kNumberedSuffixes[] = {"isra", "constprop", "part", "lto_priv", "llvm", "cold"};
  std::string s(name);
  coldPart = false;
  while (true) {
    size_t dot = s.rfind('.');
    if (dot == std::string::npos || dot == 0) break;
    std::string_view last = std::string_view(s).substr(dot + 1);
    if (last == "cold") {
      coldPart = true;
      s.resize(dot);
      continue;
    }
    if (!allDigits(last)) break;
    size_t previous = s.rfind('.', dot - 1);
    if (previous == std::string::npos) break;
    std::string_view word = std::string_view(s).substr(previous + 1, dot - previous - 1);
    if (std::find(std::begin(kNumberedSuffixes), std::end(kNumberedSuffixes), word) == std::end(kNumberedSuffixes))
      break;
    coldPart |= word == "cold";
    s.resize(previous);
  }
  return s;
}

std::string normalizeDataName(std::string_view name) {
  bool cold = false;
  std::string s = normalizeFunctionName(name, cold);
  size_t dot = s.rfind('.');
  if (dot != std::string::npos && dot > 0 && allDigits(std::string_view(s).substr(dot + 1))) s.resize(dot);
  return s;
}

void parallelFor(size_t count, unsigned threads, const std::function<void(unsigned, size_t)> &fn) {
  if (threads <= 1 || count < 64) {
    for (size_t i = 0; i < count; ++i) fn(0, i);
    return;
  }
  std::atomic<size_t> next{0};
  constexpr size_t kChunk = 32;
  std::vector<std::thread> workers;
  for (unsigned worker = 0; worker < threads; ++worker)
    workers.emplace_back([&, worker] {
      for (size_t begin; (begin = next.fetch_add(kChunk)) < count;)
        for (size_t i = begin; i < std::min(count, begin + kChunk); ++i) fn(worker, i);
    });
  for (std::thread &t : workers) t.join();
}

Program::Program(const Image &img) : image(img) {
  for (const Section &s : image.sections)
    if (s.loaded && isStubSection(s.name)) stubRanges_.push_back({s.rva, s.rva + s.size});

  size_t n = image.functions.size();
  diffable.assign(n, false);
  decoded.resize(n);
  nameKeys.resize(n);
  coldPart.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    const Function &f = image.functions[i];
    const Section *section = image.sectionAt(f.range.rva);
    diffable[i] = f.range.size && section && section->permissions.execute && !isStubSection(section->name);
    if (f.name) {
      bool cold = false;
      nameKeys[i] = normalizeFunctionName(*f.name, cold);
      coldPart[i] = cold;
    }
  }

  for (const Segment &s : image.segments)
    if (s.type == "GNU_RELRO") relro_.push_back({s.rva, s.memorySize});
  relocations.imageBase = image.imageBase;
  for (const Relocation &r : image.relocations) {
    relocations.rvas.push_back(r.rva);
    if (r.symbol) {
      pointers[r.rva] = {r.symbol, 0};
    } else if (image.format == Format::Elf) {
      if (llvm::StringRef(r.typeName).ends_with("RELATIVE") && uint64_t(r.addend) >= image.imageBase)
        pointers[r.rva] = {std::nullopt, uint64_t(r.addend) - image.imageBase};
    } else if (llvm::ArrayRef<uint8_t> bytes = image.bytesAt(r.rva, 8); bytes.size() == 8) {
      uint64_t value = llvm::support::endian::read64le(bytes.data());
      if (value >= image.imageBase) pointers[r.rva] = {std::nullopt, value - image.imageBase};
    }
  }
  std::sort(relocations.rvas.begin(), relocations.rvas.end());
  for (const Import &i : image.imports) importSlots[i.slotRva] = &i;
  dataSlots_.assign(image.dataObjects.size(), 0);
  for (const DataObject &d : image.dataObjects)
    if (!d.threadLocal) {
      dataSlots_[size_t(&d - image.dataObjects.data())] = data.size();
      data.push_back(&d);
      dataKeys.push_back(normalizeDataName(d.name));
    }
}

void Program::findSplitParts() {
  std::vector<std::set<size_t>> enteredFrom(decoded.size());
  std::vector<bool> called(decoded.size(), false);
  for (size_t f = 0; f < decoded.size(); ++f) {
    for (const CodeReference &r : decoded[f].references) {
      const Function *target = image.functionAt(r.target);
      if (!target || target->range.rva != r.target) continue;
      size_t t = functionIndex(target);
      if (r.kind == ReferenceKind::Call) called[t] = true;
      else if (r.kind == ReferenceKind::Branch && t != f) enteredFrom[t].insert(f);
    }
  }
  partOf.assign(decoded.size(), std::nullopt);
  for (size_t t = 0; t < decoded.size(); ++t)
    if (diffable[t] && nameKeys[t].empty() && !called[t] && enteredFrom[t].size() == 1)
      partOf[t] = *enteredFrom[t].begin();
}

bool Program::isReadOnly(uint64_t rva) const {
  for (const AddressRange &r : relro_)
    if (r.contains(rva)) return true;
  const Section *section = image.sectionAt(rva);
  return section && !section->permissions.write;
}

const DataObject *Program::containingObject(uint64_t rva) const {
  auto it = std::upper_bound(data.begin(), data.end(), rva,
                             [](uint64_t a, const DataObject *d) { return a < d->range.rva; });
  if (it == data.begin()) return nullptr;
  const DataObject *d = *std::prev(it);
  return d->range.contains(rva) || d->range.rva == rva ? d : nullptr;
}

TargetClass Program::classify(uint64_t rva, const Function **function, const DataObject **object) const {
  for (auto [begin, end] : stubRanges_)
    if (rva >= begin && rva < end) return TargetClass::Stub;
  auto it = std::upper_bound(data.begin(), data.end(), rva,
                             [](uint64_t a, const DataObject *d) { return a < d->range.rva; });
  const DataObject *containing = it != data.begin() ? *std::prev(it) : nullptr;
  const Function *f = image.functionAt(rva);
  if (f && diffable[functionIndex(f)] && (f->range.rva == rva || !containing || containing->range.rva != rva)) {
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
  if (pointers.count(rva)) return TargetClass::PointerSlot;
  if (!image.sectionAt(rva)) return TargetClass::Unknown;
  return isReadOnly(rva) ? TargetClass::ReadOnly : TargetClass::Writable;
}

std::optional<uint64_t> Program::stubSlot(uint64_t rva, InstructionDecoder &decoder) const {
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

uint64_t Program::naturalExtent(uint64_t rva) const {
  const Section *section = image.sectionAt(rva);
  if (!section) return 0;
  uint64_t sectionEnd = section->rva + section->size;
  if (pointers.count(rva)) return 8;
  // A C string ends at its NUL.
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, std::min(kStringScanLimit, section->rva + section->fileSize > rva
                                                                                    ? section->rva + section->fileSize - rva
                                                                                    : 0));
  // Text: printable ASCII, white space, or UTF-8 bytes (0xf8 and above never occur in UTF-8).
  auto isText = [](uint8_t c) { return (c >= 0x20 && c != 0x7f && c < 0xf8) || c == '\n' || c == '\t' || c == '\r'; };
  size_t length = 0;
  while (length < bytes.size() && isText(bytes[length])) ++length;
  if (length > 0 && length < bytes.size() && bytes[length] == 0) return length + 1;
  uint64_t end = std::min(sectionEnd, rva + kConstantExtentLimit);
  auto next = std::upper_bound(referenced.begin(), referenced.end(), rva);
  if (next != referenced.end() && *next < end) end = *next;
  auto object = std::upper_bound(data.begin(), data.end(), rva,
                                 [](uint64_t a, const DataObject *d) { return a < d->range.rva; });
  if (object != data.end() && (*object)->range.rva < end) end = (*object)->range.rva;
  // Zeros right before an aligned next item are alignment padding, which differs between builds
  // as the items around it move: leave them out (keeping at least one byte).
  if (end % 16 == 0) {
    llvm::ArrayRef<uint8_t> content = image.bytesAt(rva, end - rva);
    while (content.size() > 1 && content.back() == 0 && end - 1 > rva) content = content.drop_back(), --end;
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

uint64_t Program::contentHash(uint64_t rva, uint64_t size, const Function *within,
                              const std::function<uint64_t(uint64_t)> &pointerClass) const {
  // A table of 32-bit offsets from its own start into the function that uses it (x64 switch
  // tables) moves with the function: compare the instruction each entry selects.
  if (within) {
    const DecodedFunction &code = decoded[functionIndex(within)];
    uint64_t hash = 0x7ab1e5, entries = 0;
    for (uint64_t offset = 0;; offset += 4) {
      llvm::ArrayRef<uint8_t> word = image.bytesAt(rva + offset, 4);
      if (word.size() != 4) break;
      uint64_t target = rva + int64_t(int32_t(llvm::support::endian::read32le(word.data())));
      if (!within->range.contains(target)) break;
      auto at = std::lower_bound(code.instructionOffsets.begin(), code.instructionOffsets.end(),
                                 uint32_t(target - within->range.rva));
      hash = mixHash(hash, at != code.instructionOffsets.end() && *at == target - within->range.rva
                               ? uint64_t(at - code.instructionOffsets.begin())
                               : (1ull << 40) + target - within->range.rva);
      ++entries;
    }
    if (entries >= 2) return hash;  // the table's extent is where its entries end, not `size`
  }
  uint64_t hash = mixHash(0xc0457a47, size);
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, size);
  if (bytes.size() != size) return 0x2e80f111;  // zero-fill (.bss): sizes are compared on their own
  for (uint64_t offset = 0; offset < size;) {
    auto pointer = pointers.find(rva + offset);
    if (pointer != pointers.end() && offset + 8 <= size) {
      const PointerTarget &p = pointer->second;
      hash = mixHash(hash, p.symbol ? llvm::xxh3_64bits(*p.symbol) : pointerClass(p.rva));
      offset += 8;
      continue;
    }
    // Images linked without base relocations still hold absolute pointers: on PE, an aligned
    // word that points into the image is taken for one.
    if (image.format == Format::Pe && (rva + offset) % 8 == 0 && offset + 8 <= size) {
      uint64_t value = llvm::support::endian::read64le(bytes.data() + offset);
      if (value >= image.imageBase && value - image.imageBase < image.identity.sizeOfImage) {
        hash = mixHash(hash, pointerClass(value - image.imageBase));
        offset += 8;
        continue;
      }
    }
    hash = mixHash(hash, bytes[offset]);
    ++offset;
  }
  return hash;
}

}  // namespace hotforge::differ
