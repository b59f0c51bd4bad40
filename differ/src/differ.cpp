// diffImages: decode both builds, pair their functions, compare every pair symbolically, look at
// the data, and turn the result into verdicts.
#include "hotforge/diff.h"
#include "constant_changes.h"
#include "hotforge/core/error.h"
#include "matcher.h"

#include <fmt/core.h>
#include <fmt/format.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/TimeProfiler.h>
#include <llvm/Support/xxhash.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <malloc.h>
#include <unordered_map>

namespace hotforge {

std::string_view changeKindName(ChangeKind kind) {
  switch (kind) {
  case ChangeKind::Changed: return "changed";
  case ChangeKind::Added: return "added";
  case ChangeKind::Removed: return "removed";
  case ChangeKind::Data: return "data";
  case ChangeKind::LineOnly: return "line-only";
  }
  return "unknown";
}

std::string_view verdictName(Verdict verdict) {
  return verdict == Verdict::Hotpatchable ? "hotpatchable" : "needs-restart";
}

std::string_view bindingKindName(Binding::Kind kind) {
  switch (kind) {
  case Binding::Kind::Local: return "local";
  case Binding::Kind::Function: return "function";
  case Binding::Kind::Base: return "base";
  case Binding::Kind::Constant: return "constant";
  case Binding::Kind::JumpTable: return "jump-table";
  case Binding::Kind::NewData: return "new-data";
  case Binding::Kind::Unbound: return "unbound";
  case Binding::Kind::Import: return "import";
  }
  return "unknown";
}

std::string_view matchStageName(MatchStage stage) {
  switch (stage) {
  case MatchStage::Name: return "name";
  case MatchStage::DebugIdentity: return "debug-identity";
  case MatchStage::Hash: return "hash";
  case MatchStage::Structure: return "structure";
  case MatchStage::CallGraph: return "call-graph";
  case MatchStage::DataPointers: return "data-pointers";
  }
  return "unknown";
}

namespace differ {
namespace {

constexpr uint64_t kUnmatched = 1ull << 62;
// A relative string table is copied with its strings in one piece, up to this size.
constexpr uint64_t kRelativeStringSpanLimit = 1 << 20;

// A symbol the loader binds, by its DLL (PE; empty on ELF) and name.
uint64_t symbolDigest(std::string_view library, std::string_view name) {
  return mixHash(llvm::xxh3_64bits(library), llvm::xxh3_64bits(name));
}

// Sections the linker fills (GOT, dynamic table, init arrays, unwind tables): their bytes follow
// the layout, never the program's state.
bool isLinkerManaged(std::string_view section) {
  for (std::string_view prefix : {".got", ".dynamic", ".init_array", ".fini_array", ".eh_frame", ".tm_clone_table",
                                  ".note", ".interp", ".dyn", ".rela", ".gnu", ".plt", ".idata", ".pdata", ".xdata",
                                  ".reloc", ".edata", ".CRT", ".tls"})
    if (section.substr(0, prefix.size()) == prefix) return true;
  return false;
}

std::string describeAddress(const Image &image, uint64_t rva) {
  if (const Section *s = image.sectionAt(rva)) return fmt::format("{}+{:#x}", s->name, rva - s->rva);
  return fmt::format("rva {:#x}", rva);
}

std::string preview(const Image &image, uint64_t rva, uint64_t size) {
  llvm::ArrayRef<uint8_t> bytes = image.bytesAt(rva, size);
  if (bytes.empty()) return fmt::format("{} zero bytes", size);
  bool text = bytes.back() == 0 && std::all_of(bytes.begin(), bytes.end() - 1, [](uint8_t c) { return c >= 0x20 && c < 0x7f; });
  if (text) {
    std::string s(bytes.begin(), bytes.end() - 1);
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return "\"" + s + "\"";
  }
  return hexEncode(bytes.take_front(16)) + (bytes.size() > 16 ? "..." : "");
}

constexpr uint64_t kTrimAboveInputs = 16ull << 20;  // the CLI's huge-page heap stops there too

uint64_t loadedBytes(const Image &image) {
  uint64_t bytes = 0;
  for (const Section &s : image.sections)
    if (s.loaded) bytes += s.fileSize;
  return bytes;
}

unsigned workerCount(const DiffOptions &options) {
  return options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
}

// Both sides' Programs at once: each indexes a whole image.
std::pair<Program, Program> buildPrograms(const Image &base, const Image &patched, unsigned threads) {
  llvm::TimeTraceScope scope("index both programs");
  if (threads < 2) return {Program(base), Program(patched)};
  std::optional<Program> other;
  std::thread builder([&] { other.emplace(patched); });
  Program first(base);
  builder.join();
  return {std::move(first), std::move(*other)};
}

class Differ {
public:
  Differ(const Image &base, const Image &patched, const DiffOptions &options)
      : Differ(buildPrograms(base, patched, workerCount(options)), options) {}

  llvm::Expected<Diff> run() {
    if (base_.image.format != patched_.image.format || base_.image.machine != patched_.image.machine)
      return formatError("{} is {} {} but {} is {} {}: a patch needs two builds of the same binary", base_.image.path,
                         formatName(base_.image.format), machineName(base_.image.machine), patched_.image.path,
                         formatName(patched_.image.format), machineName(patched_.image.machine));
    if (llvm::Error e = createDecoders()) return e;
    phase("decode", [&] { decodeAll(); });
    phase("match functions", [&] { matching_ = matchFunctions(base_, patched_); });
    size_t baseCount = std::count(base_.diffable.begin(), base_.diffable.end(), true);
    size_t patchedCount = std::count(patched_.diffable.begin(), patched_.diffable.end(), true);
    size_t larger = std::max(baseCount, patchedCount);
    if (larger && double(matching_.pairs) < options_.minimumMatchedShare * double(larger))
      return formatError("{} and {} look like unrelated programs: only {} of {} functions match", base_.image.path,
                         patched_.image.path, matching_.pairs, larger);
    phase("match data", [&] { matchData(); });
    phase("hash constants", [&] { hashConstants(); });
    phase("vote anonymous data", [&] { voteAnonymousData(); });
    base_.image.releaseFilePages();  // the constants were read; what follows reads changed code
    patched_.image.releaseFilePages();
    // and the voting's maps are gone: give their pages back before the comparison, when the inputs
    // are large against the memory budget's 100 MiB (else they would only be faulted in again).
    if (loadedBytes(base_.image) + loadedBytes(patched_.image) > kTrimAboveInputs) malloc_trim(0);
    Diff diff;
    diff.log = matching_.log;
    // What pointers in constants point at is settled from here on (matching, data pairs, votes).
    for (const Program *p : {&base_, &patched_})
      naturalContent_[p == &patched_] = AddressMemo(std::min(kMaxMemoEntries, 4 * p->code.size()));
    phase("compare functions", [&] { compareFunctions(diff); });
    phase("collect data", [&] { collectData(diff); });
    phase("bind patch code", [&] { bindPatchCode(diff); });
    phase("finish", [&] { finish(diff); });
    return diff;
  }

private:
  // One step of run(), timed when the caller asked for a time trace (hotforge --time-trace).
  template <class Step> static void phase(llvm::StringLiteral name, Step &&step) {
    llvm::TimeTraceScope scope(name);
    step();
  }

  Differ(std::pair<Program, Program> programs, const DiffOptions &options)
      : base_(std::move(programs.first)), patched_(std::move(programs.second)), options_(options),
        threads_(workerCount(options)) {}

  llvm::Error createDecoders() {
    for (unsigned i = 0; i < threads_; ++i) {
      llvm::Expected<std::unique_ptr<InstructionDecoder>> d = createInstructionDecoder(base_.image.machine);
      if (!d) return d.takeError();
      decoders_.push_back(std::move(*d));
    }
    return llvm::Error::success();
  }

  // Decodes every function. A patched function that is probably a base function moved (below) is
  // tried first as that function's code at another address: Program::decode reads its references
  // from its fields when every other byte is the same.
  void decodeAll() {
    base_.takeDiscoveredThunksForImports(*decoders_[0]);
    patched_.takeDiscoveredThunksForImports(*decoders_[0]);
    std::vector<std::optional<size_t>> movedFrom = likelyMoves();
    phase("decode base", [&] { base_.decode(decoders_); });
    phase("decode patched", [&] { patched_.decode(decoders_, &base_, movedFrom); });
    llvm::TimeTraceScope scope("index references and find stubs");
    parallelFor(2, threads_, [&](unsigned worker, size_t side) {
      Program &p = side ? patched_ : base_;
      p.indexReferences();
      p.findStubs(*decoders_[worker]);
      p.image.releaseFilePages();  // later stages read only the changed code and some data
    }, 1);
  }

  // For each patched function, the base function it probably is, moved: the one base function of
  // its name and size; else, among functions no name pairs (a stripped build's), the one at the
  // same place in the order of the two function tables, which a rebuild keeps. A guess costs only
  // a comparison of bytes: the copy checks that all but the reference fields are the same.
  std::vector<std::optional<size_t>> likelyMoves() const {
    const std::vector<Function> &baseFunctions = base_.image.functions, &patchedFunctions = patched_.image.functions;
    // Base functions by the digest of their name key: a digest held by one function names it (two
    // names of one digest only cost the shortcut).
    std::vector<std::pair<uint64_t, size_t>> baseNames;
    for (size_t i = 0; i < baseFunctions.size(); ++i)
      if (base_.diffable[i] && !base_.nameKeys[i].empty()) baseNames.push_back({base_.nameDigests[i], i});
    std::sort(baseNames.begin(), baseNames.end());
    std::vector<std::optional<size_t>> movedFrom(patchedFunctions.size());
    std::vector<bool> claimed(baseFunctions.size(), false);
    for (size_t i = 0; i < movedFrom.size(); ++i) {
      if (!patched_.diffable[i] || patched_.nameKeys[i].empty()) continue;
      auto byDigest = [](const auto &a, const auto &b) { return a.first < b.first; };
      auto [first, last] = std::equal_range(baseNames.begin(), baseNames.end(),
                                            std::pair(patched_.nameDigests[i], size_t(0)), byDigest);
      if (last - first == 1 && baseFunctions[first->second].range.size == patchedFunctions[i].range.size) {
        movedFrom[i] = first->second;
        claimed[first->second] = true;
      }
    }
    std::vector<size_t> bs, ps;  // the rest, in address order
    for (size_t i = 0; i < baseFunctions.size(); ++i)
      if (base_.diffable[i] && !claimed[i]) bs.push_back(i);
    for (size_t i = 0; i < patchedFunctions.size(); ++i)
      if (patched_.diffable[i] && !movedFrom[i]) ps.push_back(i);
    auto sameSize = [&](size_t b, size_t p) {
      return baseFunctions[bs[b]].range.size == patchedFunctions[ps[p]].range.size;
    };
    // Where the two orders agree again after a change: two functions of equal sizes in a row.
    auto agree = [&](size_t b, size_t p) {
      return b + 1 < bs.size() && p + 1 < ps.size() && sameSize(b, p) && sameSize(b + 1, p + 1);
    };
    constexpr size_t kResyncWindow = 64;
    for (size_t b = 0, p = 0; b < bs.size() && p < ps.size();) {
      if (sameSize(b, p)) {
        movedFrom[ps[p++]] = bs[b++];
        continue;
      }
      size_t skip = 1;
      while (skip <= kResyncWindow && !agree(b + skip, p) && !agree(b, p + skip)) ++skip;
      if (skip > kResyncWindow) ++b, ++p;  // a function that changed size in place
      else if (agree(b + skip, p)) b += skip;  // functions only the base has
      else p += skip;                          // functions only the patched build has
    }
    return movedFrom;
  }

  // Named objects pair by their normalised name when it is unique on both sides.
  void matchData() {
    std::map<std::string_view, std::pair<size_t, size_t>> baseNames, patchedNames;
    for (size_t i = 0; i < base_.dataKeys.size(); ++i) {
      auto &slot = baseNames[base_.dataKeys[i]];
      ++slot.first;
      slot.second = i;
    }
    for (size_t i = 0; i < patched_.dataKeys.size(); ++i) {
      auto &slot = patchedNames[patched_.dataKeys[i]];
      ++slot.first;
      slot.second = i;
    }
    patchedDataToBase_.assign(patched_.data.size(), std::nullopt);
    baseDataToPatched_.assign(base_.data.size(), std::nullopt);
    for (auto &[name, b] : baseNames) {
      auto p = patchedNames.find(name);
      if (p == patchedNames.end() || b.first != p->second.first) continue;
      if (b.first == 1) {
        baseDataToPatched_[b.second] = p->second.second;
        patchedDataToBase_[p->second.second] = b.second;
        continue;
      }
      // Statics of one name in several units: a rebuild keeps their order.
      std::vector<size_t> bs, ps;
      for (size_t i = 0; i < base_.dataKeys.size(); ++i)
        if (base_.dataKeys[i] == name) bs.push_back(i);
      for (size_t i = 0; i < patched_.dataKeys.size(); ++i)
        if (patched_.dataKeys[i] == name) ps.push_back(i);
      for (size_t k = 0; k < bs.size(); ++k) {
        baseDataToPatched_[bs[k]] = ps[k];
        patchedDataToBase_[ps[k]] = bs[k];
      }
    }
  }

  uint64_t functionClass(bool patchedSide, size_t index) const {
    if (!patchedSide) return index;
    std::optional<size_t> b = matching_.patchedToBase[index];
    return b ? *b : kUnmatched + index;
  }

  uint64_t dataClass(bool patchedSide, const DataObject *d) const {
    const Program &p = patchedSide ? patched_ : base_;
    size_t index = p.dataIndex(d);
    if (!patchedSide) return index;
    return patchedDataToBase_[index] ? *patchedDataToBase_[index] : kUnmatched + index;
  }

  // Content of every named read-only object, which a reference to it compares: a constant that
  // changed makes the code that reads it change too.
  void hashConstants() {
    for (bool patchedSide : {false, true}) {
      const Program &p = patchedSide ? patched_ : base_;
      std::vector<uint64_t> &out = patchedSide ? patchedDataContent_ : baseDataContent_;
      out.assign(p.data.size(), 0);
      parallelFor(p.data.size(), threads_, [&](unsigned, size_t i) {
        if (p.isReadOnly(p.data[i]->range.rva)) out[i] = objectContent(patchedSide, p.data[i]);
      });
    }
  }

  uint64_t objectContent(bool patchedSide, const DataObject *d) const {
    const Program &p = patchedSide ? patched_ : base_;
    uint64_t size = d->sizeKnown || !p.isReadOnly(d->range.rva) ? d->range.size : p.naturalExtent(d->range.rva);
    return contentHashOf(patchedSide, d->range.rva, size);
  }

  // Data without a name (stripped builds) pairs through the code that uses it, as kpatch pairs
  // static locals: what two paired functions reach at the same place is a pair, by majority over
  // every such place. Places are aligned whole in pairs of one shape, and in the others up to
  // their first and from their last difference. Writable data, read-only data (.data.rel.ro) and
  // GOT slots of local objects (whose pointees are a pair too) are voted on apart.
  void voteAnonymousData() {
    Votes writable, readOnly, slots;
    // A function whose code kept its shape reaches its data at the same places; one whose code
    // changed may reach other data there (scenario 5 on Arm64: the fix's add_sample reaches the
    // new g_rejected where the base's reached g_total). Its votes count only where no unchanged
    // function's do.
    constexpr size_t kSameShapeWeight = size_t(1) << 20;
    size_t weight = 1;
    auto vote = [&](uint64_t tb, uint64_t tp) {
      const Function *f = nullptr;
      const DataObject *o = nullptr;
      TargetClass cb = base_.classify(tb, &f, &o), cp = patched_.classify(tp, &f, &o);
      if (cb == TargetClass::PointerSlot && cp == TargetClass::PointerSlot) {
        const PointerTarget &sb = base_.pointers.at(tb), &sp = patched_.pointers.at(tp);
        if (sb.symbol || sp.symbol) return;
        slots[tb][tp] += weight;
        tb = sb.rva, tp = sp.rva;
        cb = base_.classify(tb, &f, &o), cp = patched_.classify(tp, &f, &o);
      }
      if (cb != cp) return;
      // The ends of one section pair through SymbolKey::alias, whatever else is at that address.
      if (cb == TargetClass::Writable && baseSectionEnd(true, tp) == tb) return;
      if (cb == TargetClass::Writable) writable[tb][tp] += weight;
      else if (cb == TargetClass::ReadOnly) readOnly[tb][tp] += weight;
    };
    for (size_t b = 0; b < base_.code.size(); ++b) {
      if (!matching_.baseToPatched[b]) continue;
      size_t p = *matching_.baseToPatched[b];
      ReferenceList rb = base_.references(b), rp = patched_.references(p);
      bool sameShape = base_.code[b].shape == patched_.code[p].shape && rb.size() == rp.size();
      weight = sameShape ? kSameShapeWeight : 1;
      auto samePlace = [&](const CodeReference &x, const CodeReference &y, uint64_t fromX, uint64_t fromY) {
        return x.kind == y.kind && x.encoding == y.encoding && (sameShape || fromX == fromY);
      };
      size_t n = std::min(rb.size(), rp.size()), front = 0;
      for (; front < n && samePlace(rb[front], rp[front], rb[front].instruction, rp[front].instruction); ++front)
        if (rb[front].kind == ReferenceKind::Memory) vote(rb[front].target, rp[front].target);
      uint32_t countB = base_.code[b].instructions, countP = patched_.code[p].instructions;
      for (size_t back = 1; front + back <= n; ++back) {
        const CodeReference x = rb[rb.size() - back], y = rp[rp.size() - back];
        if (!samePlace(x, y, countB - x.instruction, countP - y.instruction)) break;
        if (x.kind == ReferenceKind::Memory) vote(x.target, y.target);
      }
    }
    anonymousToBase_ = elect(writable);
    readOnlyToBase_ = elect(readOnly);
    slotToBase_ = elect(slots);
    for (auto &[to, from] : anonymousToBase_) anonymousToPatched_[from] = to;
  }

  // When `target` is also a place just past the end of a section (pastSectionEnd): the base
  // address that is as far past the end of the base's section of that name.
  std::optional<uint64_t> baseSectionEnd(bool patchedSide, uint64_t target) const {
    std::optional<Program::SectionEnd> end = (patchedSide ? patched_ : base_).pastSectionEnd(target);
    if (!end) return std::nullopt;
    if (!patchedSide) return target;
    for (const Section &s : base_.image.sections)
      if (s.loaded && s.name == end->section->name) return s.rva + s.size + end->distance;
    return std::nullopt;
  }

  // base -> patched -> votes
  using Votes = std::map<uint64_t, std::map<uint64_t, size_t>>;

  // Patched -> base: each base address takes the patched one most of its places agree on, and
  // a patched address taken twice goes to the stronger majority.
  static std::map<uint64_t, uint64_t> elect(const Votes &votes) {
    std::map<uint64_t, uint64_t> toBase;
    std::map<uint64_t, size_t> strength;
    for (auto &[from, candidates] : votes) {
      auto best = std::max_element(candidates.begin(), candidates.end(),
                                   [](auto &a, auto &b) { return a.second < b.second; });
      auto [it, inserted] = strength.try_emplace(best->first, best->second);
      if (inserted || best->second > it->second) {
        it->second = best->second;
        toBase[best->first] = from;
      }
    }
    return toBase;
  }

  SymbolKey resolve(bool patchedSide, size_t function, uint64_t target, InstructionDecoder &decoder, int depth = 0) {
    const Program &p = patchedSide ? patched_ : base_;
    // Inside the function itself: by instruction index, as alignment NOPs inside a function change
    // with its placement.
    auto intra = [&](uint64_t offset) -> SymbolKey {
      std::optional<uint32_t> instruction = p.instructionAt(function, offset);
      return {SymbolKey::Intra, instruction ? uint64_t(*instruction) : kUnmatched + offset, 0, 0};
    };
    if (p.landsInItself(function, target)) return intra(target - p.image.functions[function].range.rva);
    const Function *f = nullptr;
    const DataObject *o = nullptr;
    switch (p.classify(target, &f, &o)) {
    case TargetClass::Function: {
      size_t index = p.functionIndex(f);
      uint64_t offset = target - f->range.rva;
      if (index == function) return intra(offset);
      return {SymbolKey::Function, functionClass(patchedSide, index), offset, 0};
    }
    case TargetClass::Stub: {
      std::optional<uint64_t> slot = p.stubSlot(target, decoder);
      if (slot && depth == 0) return resolve(patchedSide, function, *slot, decoder, depth + 1);
      return {SymbolKey::Unknown, patchedSide ? kUnmatched + target : target, 0, 0};
    }
    case TargetClass::ImportSlot: {
      const Import *i = p.importSlots.at(target);
      return {SymbolKey::Import, symbolDigest(i->library, i->name), 0, 0};
    }
    case TargetClass::DataObject: {
      uint64_t content = (patchedSide ? patchedDataContent_ : baseDataContent_)[p.dataIndex(o)];
      SymbolKey key{SymbolKey::Data, dataClass(patchedSide, o), target - o->range.rva, content};
      key.alias = key.a;
      size_t index = p.dataIndex(o);
      for (size_t i : {index - 1, index + 1})
        if (i < p.data.size() && p.data[i]->range.rva == o->range.rva) key.alias = dataClass(patchedSide, p.data[i]);
      return key;
    }
    case TargetClass::PointerSlot: {
      if (p.isTableSlot(target))
        return {SymbolKey::Content, contentHashOf(patchedSide, target, p.tableContentExtent(target)), 0, 0};
      const PointerTarget &pointer = p.pointers.at(target);
      // The same symbol whichever slot kind holds it (JUMP_SLOT, GLOB_DAT of an import or of the
      // library's own export): the loader fills both with the same address.
      if (pointer.symbol) return {SymbolKey::Import, symbolDigest({}, *pointer.symbol), 0, 0};
      if (depth > 0) return {SymbolKey::Unknown, 0x5107, 0, 0};  // a slot pointing at a slot (__dso_handle)
      SymbolKey inner = resolve(patchedSide, function, pointer.rva, decoder, depth + 1);
      inner.c = mixHash(inner.c, 0x51077);  // the address of it, not it
      return inner;
    }
    case TargetClass::ReadOnly: {
      if (std::optional<uint64_t> table = p.switchTableHash(target, p.image.functions[function]))
        return {SymbolKey::Content, *table, 0, 0};
      return {SymbolKey::Content, naturalContent(patchedSide, target), 0, 0};
    }
    case TargetClass::Writable: {
      SymbolKey key{SymbolKey::Anonymous, target, 0, 0};
      key.alias = baseSectionEnd(patchedSide, target).value_or(0);
      if (!patchedSide) return key;
      auto it = anonymousToBase_.find(target);
      key.a = it != anonymousToBase_.end() ? it->second : kUnmatched + target;
      return key;
    }
    case TargetClass::Unknown: break;
    }
    // Outside every section (the image headers, __ImageBase): such addresses do not move.
    return {SymbolKey::Unknown, target, 0, 0};
  }

  uint64_t contentHashOf(bool patchedSide, uint64_t rva, uint64_t size, int depth = 0) const {
    const Program &p = patchedSide ? patched_ : base_;
    return p.contentHash(rva, size, [&](uint64_t target) { return pointerClass(patchedSide, target, depth + 1); });
  }

  // The content of the unnamed constant at rva, as read from code (depth 0) or from a pointer in
  // another constant (depth 1), which many may read: kept once known.
  uint64_t naturalContent(bool patchedSide, uint64_t rva, int depth = 0) const {
    AddressMemo &memo = naturalContent_[patchedSide];
    uint64_t key = rva << 1 | uint64_t(depth);  // addresses past 2^63 (a crafted file) are never kept
    bool kept = rva >> 63 == 0;
    if (std::optional<uint64_t> known = kept ? memo.find(key) : std::nullopt) return *known;
    const Program &p = patchedSide ? patched_ : base_;
    uint64_t content = contentHashOf(patchedSide, rva, p.naturalExtent(rva), depth);
    if (kept) memo.insert(key, content);
    return content;
  }

  // What a pointer stored in data points at. Unnamed constants are compared by content, whose
  // own pointers are followed two levels deep at most, so cycles end.
  uint64_t pointerClass(bool patchedSide, uint64_t target, int depth) const {
    const Program &p = patchedSide ? patched_ : base_;
    const Function *f = nullptr;
    const DataObject *o = nullptr;
    switch (p.classify(target, &f, &o)) {
    case TargetClass::Function: return mixHash(functionClass(patchedSide, p.functionIndex(f)), target - f->range.rva);
    case TargetClass::DataObject: return mixHash(dataClass(patchedSide, o) ^ 0xda7a, target - o->range.rva);
    case TargetClass::ImportSlot: return llvm::xxh3_64bits(p.importSlots.at(target)->name);
    case TargetClass::ReadOnly:
      // Pointers in data point into objects (a vtable + 16) more often than code does.
      if (const DataObject *inside = p.containingObject(target))
        return mixHash(dataClass(patchedSide, inside) ^ 0xda7a, target - inside->range.rva);
      if (depth < 2) return naturalContent(patchedSide, target, depth);
      return llvm::xxh3_64bits(p.image.bytesAt(target, p.naturalExtent(target)));
    case TargetClass::Writable:
      if (patchedSide)
        if (auto it = anonymousToBase_.find(target); it != anonymousToBase_.end()) return it->second;
      if (!patchedSide && anonymousToPatched_.count(target)) return target;
      // Unpaired: what it holds (its pointers by what they point at), as for read-only data.
      if (depth < 2) return mixHash(0x3a7ab1e, naturalContent(patchedSide, target, depth));
      break;
    case TargetClass::PointerSlot:
      if (const PointerTarget &slot = p.pointers.at(target); slot.symbol) return llvm::xxh3_64bits(*slot.symbol);
      break;
    case TargetClass::Unknown: return target;  // outside every section (headers): does not move
    case TargetClass::Stub: break;
    }
    // Nothing pairs this address: assume its section kept its layout.
    const Section *s = p.sectionOf(target);
    return mixHash(llvm::xxh3_64bits(s->name), target - s->rva);
  }

  // Both functions of a pair decoded instruction by instruction.
  struct DecodedPair {
    DecodedFunction base, patched;
  };

  // Compares one pair; on a difference, returns the index of the first differing instruction and
  // leaves the pair decoded in `decoded` (findConstantChanges reads it).
  std::optional<uint32_t> firstDifference(size_t b, size_t p, InstructionDecoder &decoder, DecodedPair &decoded) {
    ReferenceList referencesB = base_.references(b), referencesP = patched_.references(p);
    bool sameShape = base_.code[b].shape == patched_.code[p].shape && referencesB.size() == referencesP.size();
    if (sameShape) {
      bool same = true;
      for (size_t i = 0; i < referencesB.size() && same; ++i) {
        const CodeReference &rb = referencesB[i], &rp = referencesP[i];
        same = rb.instruction == rp.instruction && rb.kind == rp.kind &&
               resolve(false, b, rb.target, decoder) == resolve(true, p, rp.target, decoder);
      }
      if (same) return std::nullopt;
    }
    // Locate the first instruction that differs, decoding both again instruction by instruction.
    const Function &fb = base_.image.functions[b], &fp = patched_.image.functions[p];
    decoded.base = decoder.decode(base_.image.bytesAt(fb.range.rva, fb.range.size), fb.range.rva, base_.relocations, true);
    decoded.patched =
        decoder.decode(patched_.image.bytesAt(fp.range.rva, fp.range.size), fp.range.rva, patched_.relocations, true);
    const DecodedFunction &xb = decoded.base, &xp = decoded.patched;
    size_t n = std::min(xb.instructionShapes.size(), xp.instructionShapes.size());
    size_t rb = 0, rp = 0;
    for (uint32_t i = 0; i < n; ++i) {
      if (xb.instructionShapes[i] != xp.instructionShapes[i]) return i;
      while (rb < xb.references.size() && rp < xp.references.size() && xb.references[rb].instruction == i &&
             xp.references[rp].instruction == i) {
        if (resolve(false, b, xb.references[rb].target, decoder) != resolve(true, p, xp.references[rp].target, decoder))
          return i;
        ++rb;
        ++rp;
      }
      bool moreBase = rb < xb.references.size() && xb.references[rb].instruction == i;
      bool morePatched = rp < xp.references.size() && xp.references[rp].instruction == i;
      if (moreBase != morePatched) return i;
    }
    return uint32_t(n);
  }

  void compareFunctions(Diff &diff) {
    diff.pairs.reserve(matching_.pairs);
    for (size_t b = 0; b < base_.code.size(); ++b)
      if (matching_.baseToPatched[b]) diff.pairs.push_back({b, *matching_.baseToPatched[b], matching_.info[b], false});
    std::vector<std::optional<uint32_t>> differences(diff.pairs.size());
    // Only pairs that differ have findings: most of a large library's pairs do not.
    std::vector<std::unique_ptr<ConstantFindings>> findings(diff.pairs.size());
    parallelFor(diff.pairs.size(), threads_, [&](unsigned worker, size_t i) {
      DecodedPair decoded;
      differences[i] = firstDifference(diff.pairs[i].base, diff.pairs[i].patched, *decoders_[worker], decoded);
      if (differences[i])
        findings[i] = std::make_unique<ConstantFindings>(
            findConstantChanges(diff.pairs[i].base, diff.pairs[i].patched, decoded, *decoders_[worker]));
    });
    std::vector<size_t> lineOnly;
    for (size_t i = 0; i < diff.pairs.size(); ++i)
      if (findings[i] && findings[i]->lineNumbersOnly && !options_.carryLineChanges) {
        differences[i].reset();
        lineOnly.push_back(i);
      }
    // A function and its split-off parts (.cold) change together: pairs whose base functions
    // share a normalised name, or are a part and the function it was split from, form a family.
    std::vector<size_t> familyOf = familyHeads(diff.pairs);
    std::vector<bool> familyChanged(base_.code.size(), false);
    for (size_t i = 0; i < diff.pairs.size(); ++i)
      if (differences[i]) familyChanged[familyOf[i]] = true;
    for (size_t i = 0; i < diff.pairs.size(); ++i) diff.pairs[i].changed = familyChanged[familyOf[i]];
    for (size_t i = 0; i < diff.pairs.size(); ++i) {
      if (!diff.pairs[i].changed) continue;
      const FunctionPair &pair = diff.pairs[i];
      Change c = functionChange(ChangeKind::Changed, &pair.base, &pair.patched);
      c.match = pair.match;
      if (differences[i]) {
        c.firstDifference = describeDifference(pair.base, pair.patched, *differences[i]);
        c.reason = fmt::format("code of {} changed; first difference at +{:#x}: `{}` became `{}`", displayName(c.name),
                               c.firstDifference->baseOffset, c.firstDifference->baseInstruction,
                               c.firstDifference->patchedInstruction);
      } else {
        c.reason = fmt::format("{} is a split-off part of a function that changed: the parts travel together",
                               displayName(c.name));
      }
      diff.changes.push_back(std::move(c));
      noteChangedConstants(pair.base, pair.patched, diff);
    }
    for (size_t i : lineOnly) {
      if (diff.pairs[i].changed) continue;  // it travels with a part that really changed
      Change c = functionChange(ChangeKind::LineOnly, &diff.pairs[i].base, &diff.pairs[i].patched);
      c.rule = rules::kLineNumbersOnly;
      c.match = diff.pairs[i].match;
      c.reason = fmt::format("{} differs only in the line numbers it passes to an error reporter ({}): left out "
                             "of the patch (--carry-line-changes carries it)",
                             displayName(c.name), findings[i]->lineNumbers);
      diff.changes.push_back(std::move(c));
    }
    noteLayoutChanges(diff, findings);
    for (size_t p = 0; p < patched_.code.size(); ++p)
      if (patched_.diffable[p] && !matching_.patchedToBase[p]) {
        diff.addedFunctions.push_back(p);
        Change c = functionChange(ChangeKind::Added, nullptr, &p);
        c.reason = fmt::format("new function {}: it goes into the patch", displayName(c.name));
        diff.changes.push_back(std::move(c));
      }
    for (size_t b = 0; b < base_.code.size(); ++b)
      if (base_.diffable[b] && !matching_.baseToPatched[b]) {
        diff.removedFunctions.push_back(b);
        Change c = functionChange(ChangeKind::Removed, &b, nullptr);
        c.reason = fmt::format("{} is gone from the patched build; its base copy stays, no longer called by "
                               "patched code", displayName(c.name));
        diff.changes.push_back(std::move(c));
      }
  }

  // What the constants of a changed pair say, when the pair differs in constants.
  struct ConstantFindings {
    bool lineNumbersOnly = false;
    std::string lineNumbers;  // "185 -> 4002, ..." when lineNumbersOnly
    std::vector<ConstantChange> displacements;  // moved field offsets, when only constants differ
    // Sizes handed to allocators that changed: callee and the constants set up for the call.
    struct Allocation {
      std::string callee;
      std::vector<int64_t> base, patched;
    };
    std::vector<Allocation> allocations;
  };

  ConstantFindings findConstantChanges(size_t b, size_t p, const DecodedPair &decoded, InstructionDecoder &decoder) {
    ConstantFindings out;
    const DecodedFunction &xb = decoded.base, &xp = decoded.patched;
    std::vector<CallSite> callsB = callSites(false, xb, decoder), callsP = callSites(true, xp, decoder);
    // The constants set up for each allocator call (its arguments), in call order.
    std::vector<const CallSite *> allocB, allocP;
    for (const CallSite &c : callsB)
      if (c.callee && looksLikeAllocator(*c.callee)) allocB.push_back(&c);
    for (const CallSite &c : callsP)
      if (c.callee && looksLikeAllocator(*c.callee)) allocP.push_back(&c);
    if (allocB.size() == allocP.size())
      for (size_t k = 0; k < allocB.size(); ++k) {
        std::vector<int64_t> sb = argumentConstants(xb, *allocB[k]), sp = argumentConstants(xp, *allocP[k]);
        if (sb != sp && !sb.empty() && !sp.empty() && allocB[k]->callee == allocP[k]->callee)
          out.allocations.push_back({*allocP[k]->callee, std::move(sb), std::move(sp)});
      }
    std::optional<std::vector<ConstantChange>> changes =
        constantChanges(xb, xp, [&](const CodeReference &rb, const CodeReference &rp) {
          return resolve(false, b, rb.target, decoder) == resolve(true, p, rp.target, decoder);
        });
    if (!changes) return out;
    for (const ConstantChange &c : *changes)
      if (c.displacement) out.displacements.push_back(c);
    out.lineNumbersOnly = onlyLineNumbers(*changes, [&](uint32_t instruction) -> std::optional<CallContext> {
      auto call = std::find_if(callsP.begin(), callsP.end(), [&](const CallSite &c) { return c.instruction > instruction; });
      if (call == callsP.end()) return std::nullopt;
      return CallContext{call->callee, call->passesSourceFile};
    });
    for (const ConstantChange &c : *changes)
      out.lineNumbers += fmt::format("{}{} -> {}", out.lineNumbers.empty() ? "" : ", ", c.base, c.patched);
    return out;
  }

  // A call in a decoded function: a direct call, or a load of an import's IAT slot (call [rip+IAT],
  // adrp/ldr/blr), with what is known about its callee and the instructions since the call before.
  struct CallSite {
    uint32_t instruction = 0, after = 0;  // its index; the first instruction after the call before
    std::optional<std::string> callee;
    bool passesSourceFile = false;  // a string naming a source file is loaded for it (__FILE__)
  };

  std::vector<CallSite> callSites(bool patchedSide, const DecodedFunction &code, InstructionDecoder &decoder) const {
    const Program &p = patchedSide ? patched_ : base_;
    std::vector<CallSite> out;
    uint32_t after = 0;
    bool sourceFile = false;
    for (const CodeReference &r : code.references) {
      if (machineTarget(p.image.machine).meaning(r.encoding) == FieldMeaning::Page) continue;  // its use has the same target
      const Function *f = nullptr;
      const DataObject *o = nullptr;
      TargetClass kind = p.classify(r.target, &f, &o);
      bool importLoad = r.kind == ReferenceKind::Memory && kind == TargetClass::ImportSlot;
      if (r.kind == ReferenceKind::Call || importLoad) {
        out.push_back({r.instruction, after, calleeName(p, kind, r.target, f, decoder), sourceFile});
        after = r.instruction + 1;
        sourceFile = false;
      } else if (r.kind == ReferenceKind::Memory && (kind == TargetClass::ReadOnly || kind == TargetClass::DataObject)) {
        llvm::ArrayRef<uint8_t> bytes = p.image.bytesAt(r.target, p.naturalExtent(r.target));
        auto nul = std::find(bytes.begin(), bytes.end(), 0);
        sourceFile |= nul != bytes.end() && isSourceFileName(std::string_view((const char *)bytes.data(), nul - bytes.begin()));
      }
    }
    return out;
  }

  static std::optional<std::string> calleeName(const Program &p, TargetClass kind, uint64_t target, const Function *f,
                                               InstructionDecoder &decoder) {
    if (kind == TargetClass::Stub)
      if (std::optional<uint64_t> slot = p.stubSlot(target, decoder)) {
        target = *slot;
        const DataObject *o = nullptr;
        kind = p.classify(target, &f, &o);
      }
    switch (kind) {
    case TargetClass::Function: return f->name;
    case TargetClass::ImportSlot: return p.importSlots.at(target)->name;
    case TargetClass::PointerSlot:
      if (const PointerTarget &slot = p.pointers.at(target); slot.symbol) return *slot.symbol;
      return std::nullopt;
    default: return std::nullopt;
    }
  }

  // The plain constants of the instructions that set up a call's arguments: the last few before it.
  static std::vector<int64_t> argumentConstants(const DecodedFunction &code, const CallSite &call) {
    std::vector<int64_t> out;
    constexpr uint32_t kArgumentSetup = 4;  // arguments are set up right before the call
    for (const InstructionConstant &c : code.constants)
      if (c.instruction >= call.after && c.instruction < call.instruction && c.instruction + kArgumentSetup >= call.instruction &&
          !c.displacement)
        out.push_back(c.value);
    std::sort(out.begin(), out.end());
    return out;
  }

  // The footprint of a structure whose layout changed, without types: field offsets (memory
  // displacements from the same register) moved by the same delta in several functions that
  // otherwise did not change. Sizes handed to allocators that changed with them are named too.
  void noteLayoutChanges(Diff &diff, const std::vector<std::unique_ptr<ConstantFindings>> &findings) {
    static const std::vector<ConstantChange> kNoDisplacements;
    static const std::vector<ConstantFindings::Allocation> kNoAllocations;
    std::map<int64_t, std::map<size_t, std::set<int64_t>>> byDelta;  // delta -> pair -> base offsets
    for (size_t i = 0; i < findings.size(); ++i)
      for (const ConstantChange &c : findings[i] ? findings[i]->displacements : kNoDisplacements)
        if (c.base >= 0 && c.patched >= 0) byDelta[c.patched - c.base][i].insert(c.base);
    constexpr size_t kSeveralFunctions = 2;
    std::set<int64_t> deltas;  // of the footprints found
    for (auto &[delta, pairs] : byDelta) {
      if (pairs.size() < kSeveralFunctions) continue;
      deltas.insert(delta);
      std::set<int64_t> offsets;
      std::string functions;
      for (auto &[i, those] : pairs) {
        offsets.insert(those.begin(), those.end());
        Change named = functionChange(ChangeKind::Changed, &diff.pairs[i].base, &diff.pairs[i].patched);
        functions += (functions.empty() ? "" : ", ") + displayName(named.name);
      }
      std::string list;
      for (int64_t o : offsets) list += fmt::format("{}{:#x}", list.empty() ? "" : ", ", o);
      Change c;
      c.kind = ChangeKind::Data;
      c.rule = rules::kLayoutChanged;
      c.verdict = Verdict::NeedsRestart;
      c.reason = fmt::format("a structure's layout changed: field offsets {} moved by {:+d} bytes in {} functions "
                             "({}); objects that exist already have the old layout, so only a restart applies it",
                             list, delta, pairs.size(), functions);
      diff.changes.push_back(std::move(c));
    }
    // A size alone may be a buffer a fix enlarged: only one that grew by a footprint's delta counts.
    for (size_t i = 0; i < findings.size(); ++i)
      for (const ConstantFindings::Allocation &a : findings[i] ? findings[i]->allocations : kNoAllocations) {
        int64_t change = 0;
        for (size_t k = 0; k < a.base.size() && k < a.patched.size(); ++k) change += a.patched[k] - a.base[k];
        if (a.base.size() != a.patched.size() || !deltas.count(change)) continue;
        Change c = functionChange(ChangeKind::Changed, &diff.pairs[i].base, &diff.pairs[i].patched);
        c.kind = ChangeKind::Data;
        c.rule = rules::kLayoutChanged;
        c.verdict = Verdict::NeedsRestart;
        c.reason = fmt::format("{} allocates another size with `{}` ({} -> {}), by as much as the fields of a "
                               "structure moved: only a restart applies it",
                               displayName(c.name), a.callee, fmt::join(a.base, ", "), fmt::join(a.patched, ", "));
        diff.changes.push_back(std::move(c));
      }
  }

  // Per pair: a base function that stands for its family. Names are grouped by their digests,
  // then compared, so that no map of every name is built.
  std::vector<size_t> familyHeads(const std::vector<FunctionPair> &pairs) const {
    std::vector<size_t> familyOf(pairs.size());
    std::vector<std::pair<uint64_t, size_t>> named;  // (digest of the head's name, pair)
    named.reserve(pairs.size());
    for (size_t i = 0; i < pairs.size(); ++i) {
      familyOf[i] = base_.partOf[pairs[i].base].value_or(pairs[i].base);
      if (!base_.nameKeys[familyOf[i]].empty()) named.push_back({base_.nameDigests[familyOf[i]], i});
    }
    std::sort(named.begin(), named.end());
    for (size_t begin = 0, end; begin < named.size(); begin = end) {
      for (end = begin + 1; end < named.size() && named[end].first == named[begin].first; ++end) {
        size_t i = named[end].second;
        for (size_t earlier = begin; earlier < end; ++earlier)
          if (base_.nameKeys[familyOf[named[earlier].second]] == base_.nameKeys[familyOf[i]]) {
            familyOf[i] = familyOf[named[earlier].second];
            break;
          }
      }
    }
    return familyOf;
  }

  static std::string displayName(const std::optional<std::string> &name) {
    return name ? "`" + *name + "`" : "an unnamed function";
  }

  Change functionChange(ChangeKind kind, const size_t *b, const size_t *p) const {
    Change c;
    c.kind = kind;
    c.rule = kind == ChangeKind::Changed ? rules::kFunctionChanged
             : kind == ChangeKind::Added ? rules::kFunctionAdded
                                         : rules::kFunctionRemoved;
    if (b) c.base = base_.image.functions[*b].range;
    if (p) c.patched = patched_.image.functions[*p].range;
    if (p && patched_.image.functions[*p].name) c.name = patched_.image.functions[*p].name;
    else if (b && base_.image.functions[*b].name) c.name = base_.image.functions[*b].name;
    return c;
  }

  FirstDifference describeDifference(size_t b, size_t p, uint32_t index) {
    InstructionDecoder &decoder = *decoders_[0];
    const Function &fb = base_.image.functions[b], &fp = patched_.image.functions[p];
    std::optional<InstructionText> tb =
        decoder.instructionAt(base_.image.bytesAt(fb.range.rva, fb.range.size), fb.range.rva, index);
    std::optional<InstructionText> tp =
        decoder.instructionAt(patched_.image.bytesAt(fp.range.rva, fp.range.size), fp.range.rva, index);
    FirstDifference d;
    d.baseOffset = tb ? tb->offset : uint32_t(fb.range.size);
    d.patchedOffset = tp ? tp->offset : uint32_t(fp.range.size);
    d.baseInstruction = tb ? tb->text : "(end of function)";
    d.patchedInstruction = tp ? tp->text : "(end of function)";
    return d;
  }

  // Constants without a name that a changed function reads and that changed too (a string
  // literal, a table): they travel with the function.
  void noteChangedConstants(size_t b, size_t p, Diff &diff) {
    ReferenceList referencesB = base_.references(b), referencesP = patched_.references(p);
    if (referencesB.size() != referencesP.size()) return;
    InstructionDecoder &decoder = *decoders_[0];
    // An unnamed constant, or a table of pointers (with what follows it up to the next address
    // code refers to): its extent.
    auto constantExtent = [](const Program &program, uint64_t rva) -> std::optional<uint64_t> {
      const Function *f = nullptr;
      const DataObject *o = nullptr;
      TargetClass target = program.classify(rva, &f, &o);
      if (target == TargetClass::ReadOnly) return program.naturalExtent(rva);
      if (target == TargetClass::PointerSlot && program.isTableSlot(rva)) return program.tableExtent(rva);
      return std::nullopt;
    };
    for (size_t i = 0; i < referencesB.size(); ++i) {
      uint64_t tb = referencesB[i].target, tp = referencesP[i].target;
      std::optional<uint64_t> sb = constantExtent(base_, tb), sp = constantExtent(patched_, tp);
      if (!sb || !sp) continue;
      if (resolve(false, b, tb, decoder) == resolve(true, p, tp, decoder) || !reportedConstants_.insert(tp).second)
        continue;
      Change c;
      c.kind = ChangeKind::Data;
      c.rule = rules::kReadOnlyDataChanged;
      c.base = AddressRange{tb, *sb};
      c.patched = AddressRange{tp, *sp};
      c.reason = fmt::format("read-only constant at {} used by changed code changed ({} -> {}); it travels with the "
                             "patch", describeAddress(patched_.image, tp), preview(base_.image, tb, *sb),
                             preview(patched_.image, tp, *sp));
      diff.changes.push_back(std::move(c));
    }
  }

  void collectData(Diff &diff) {
    auto relevant = [](const Program &p, const DataObject *d) {
      const Section *s = p.image.sectionAt(d->range.rva);
      return s && !isLinkerManaged(s->name) && d->name.rfind("_GLOBAL_OFFSET_TABLE_", 0) != 0 &&
             d->name.rfind("_DYNAMIC", 0) != 0;
    };
    // Each comparison hashes two objects: all of them first, in parallel.
    std::vector<uint8_t> contentChanged(base_.data.size(), false);
    parallelFor(base_.data.size(), threads_, [&](unsigned, size_t i) {
      if (std::optional<size_t> p = baseDataToPatched_[i])
        contentChanged[i] = objectContent(false, base_.data[i]) != objectContent(true, patched_.data[*p]);
    });
    for (size_t i = 0; i < base_.data.size(); ++i) {
      const DataObject *db = base_.data[i];
      if (!relevant(base_, db)) continue;
      if (!baseDataToPatched_[i]) {
        diff.changes.push_back(dataChange(db, nullptr, rules::kDataRemoved, Verdict::Hotpatchable,
                                          fmt::format("`{}` is gone from the patched build; its base copy stays", db->name)));
        continue;
      }
      const DataObject *dp = patched_.data[*baseDataToPatched_[i]];
      bool writable = !base_.isReadOnly(db->range.rva);
      if (db->range.size != dp->range.size && db->sizeKnown && dp->sizeKnown) {
        diff.changes.push_back(dataChange(
            db, dp, writable ? rules::kDataSizeChanged : rules::kReadOnlyDataChanged,
            writable ? Verdict::NeedsRestart : Verdict::Hotpatchable,
            writable ? fmt::format("`{}` changed size from {} to {} bytes: running code and state use the old layout",
                                   db->name, db->range.size, dp->range.size)
                     : fmt::format("read-only `{}` changed size from {} to {} bytes; it travels with the patch", db->name,
                                   db->range.size, dp->range.size)));
        continue;
      }
      if (!contentChanged[i]) continue;
      diff.changes.push_back(dataChange(
          db, dp, writable ? rules::kWritableDataChanged : rules::kReadOnlyDataChanged,
          writable ? Verdict::NeedsRestart : Verdict::Hotpatchable,
          writable ? fmt::format("initial value of writable `{}` changed ({} -> {}): the running process keeps the old "
                                 "value, so only a restart applies it",
                                 db->name, preview(base_.image, db->range.rva, db->range.size),
                                 preview(patched_.image, dp->range.rva, dp->range.size))
                   : fmt::format("read-only `{}` changed; it travels with the patch", db->name)));
    }
    for (size_t i = 0; i < patched_.data.size(); ++i) {
      const DataObject *dp = patched_.data[i];
      if (patchedDataToBase_[i] || !relevant(patched_, dp)) continue;
      diff.changes.push_back(dataChange(nullptr, dp, rules::kDataAdded, Verdict::Hotpatchable,
                                        fmt::format("new {} `{}` ({} bytes): the patch brings it", 
                                                    patched_.isReadOnly(dp->range.rva) ? "constant" : "variable",
                                                    dp->name, dp->range.size)));
    }
    collectAnonymousData(diff);
    collectThreadLocals(diff);
  }

  // Stripped builds: writable data reached only through code, paired by the vote.
  void collectAnonymousData(Diff &diff) {
    auto linkerManaged = [](const Program &p, uint64_t rva) {
      const Section *s = p.image.sectionAt(rva);
      return !s || isLinkerManaged(s->name);
    };
    for (auto &[from, to] : anonymousToPatched_) {
      uint64_t size = std::min(base_.naturalExtent(from), patched_.naturalExtent(to));
      if (!size || linkerManaged(base_, from) ||
          contentHashOf(false, from, size) == contentHashOf(true, to, size))
        continue;
      Change c;
      c.kind = ChangeKind::Data;
      c.rule = rules::kWritableDataChanged;
      c.verdict = Verdict::NeedsRestart;
      c.writable = true;
      c.base = AddressRange{from, size};
      c.patched = AddressRange{to, size};
      c.reason = fmt::format("initial value of writable data at {} changed ({} -> {}): only a restart applies it",
                             describeAddress(base_.image, from), preview(base_.image, from, size),
                             preview(patched_.image, to, size));
      diff.changes.push_back(std::move(c));
    }
    std::vector<bool> newCode(patched_.code.size(), false);
    for (size_t p : diff.addedFunctions) newCode[p] = true;
    for (const FunctionPair &pair : diff.pairs) newCode[pair.patched] = pair.changed;
    std::set<uint64_t> added;
    for (size_t p = 0; p < patched_.code.size(); ++p) {
      if (!newCode[p]) continue;
      for (const CodeReference &r : patched_.references(p)) {
        const Function *f = nullptr;
        const DataObject *o = nullptr;
        if (patched_.classify(r.target, &f, &o) != TargetClass::Writable || anonymousToBase_.count(r.target) ||
            linkerManaged(patched_, r.target) || !added.insert(r.target).second)
          continue;
        Change c;
        c.kind = ChangeKind::Data;
        c.rule = rules::kDataAdded;
        c.writable = true;
        c.patched = AddressRange{r.target, patched_.naturalExtent(r.target)};
        c.reason = fmt::format("writable data at {} has no counterpart in the base: the patch brings it",
                               describeAddress(patched_.image, r.target));
        diff.changes.push_back(std::move(c));
      }
    }
  }

  void collectThreadLocals(Diff &diff) {
    std::map<std::string_view, const DataObject *> baseTls, patchedTls;
    for (const DataObject &d : base_.image.dataObjects)
      if (d.threadLocal) baseTls[normalizeDataName(d.name)] = &d;
    for (const DataObject &d : patched_.image.dataObjects)
      if (d.threadLocal) patchedTls[normalizeDataName(d.name)] = &d;
    for (auto &[name, d] : patchedTls) {
      auto it = baseTls.find(name);
      if (it != baseTls.end() && it->second->range.rva == d->range.rva && it->second->range.size == d->range.size)
        continue;
      Change c;
      c.kind = ChangeKind::Data;
      c.rule = rules::kTlsLayoutChanged;
      c.verdict = Verdict::NeedsRestart;
      c.name = d->name;
      c.writable = true;
      c.patched = d->range;
      if (it != baseTls.end()) c.base = it->second->range;
      c.reason = it == baseTls.end()
                     ? fmt::format("new thread-local `{}`: existing threads have no room for it", d->name)
                     : fmt::format("thread-local `{}` moved or resized in the TLS block: existing threads keep the "
                                   "old layout", d->name);
      diff.changes.push_back(std::move(c));
    }
  }

  // Where every reference of the code the patch carries must point once loaded.
  void bindPatchCode(Diff &diff) {
    carried_.assign(patched_.code.size(), false);
    for (size_t p : diff.addedFunctions) carried_[p] = true;
    for (const FunctionPair &pair : diff.pairs) carried_[pair.patched] = pair.changed;
    indexBaseSlots();
    for (size_t i = 0; i < patched_.data.size(); ++i)
      if (patchedDataToBase_[i])
        diff.dataPairs.push_back({patched_.data[i]->range, base_.data[*patchedDataToBase_[i]]->range.rva});
    for (auto &[to, from] : anonymousToBase_) diff.dataPairs.push_back({{to, 1}, from});
    std::sort(diff.dataPairs.begin(), diff.dataPairs.end(),
              [](const Diff::DataPair &a, const Diff::DataPair &b) { return a.patched.rva < b.patched.rva; });
    for (const Diff::DataPair &pair : diff.dataPairs) anchors_.try_emplace(pair.patched.rva, pair.baseRva);
    for (const auto *voted : {&readOnlyToBase_, &slotToBase_}) anchors_.insert(voted->begin(), voted->end());
    InstructionDecoder &decoder = *decoders_[0];
    for (size_t p = 0; p < patched_.code.size(); ++p) {
      if (!carried_[p]) continue;
      FunctionBindings fb;
      fb.patched = p;
      fb.base = matching_.patchedToBase[p];
      fb.splitPart = patched_.coldPart[p] || patched_.partOf[p].has_value();
      for (const CodeReference &r : patched_.references(p)) {
        Binding b = bind(p, r, decoder);
        if (b.kind == Binding::Kind::Import && reportedImports_.insert(symbolKey(b.library, b.symbol)).second) {
          Change c = functionChange(fb.base ? ChangeKind::Changed : ChangeKind::Added, fb.base ? &*fb.base : nullptr, &p);
          c.kind = ChangeKind::Data;
          c.rule = rules::kNewImport;
          c.reason = fmt::format("{} at +{:#x} uses `{}`, which the base does not import: the patch binds it when it "
                                 "loads", displayName(c.name), r.offset, importName(b));
          diff.changes.push_back(std::move(c));
        }
        if (b.kind == Binding::Kind::Unbound) {
          Change c = functionChange(fb.base ? ChangeKind::Changed : ChangeKind::Added, fb.base ? &*fb.base : nullptr, &p);
          c.kind = ChangeKind::Data;
          c.rule = rules::kUnboundReference;
          c.verdict = Verdict::NeedsRestart;
          c.reason = fmt::format("{} at +{:#x} refers to {}: {}", displayName(c.name), r.offset,
                                 describeAddress(patched_.image, r.target), b.note);
          diff.changes.push_back(std::move(c));
        }
        fb.references.push_back({r.offset, {r.encoding, r.fieldOffset, r.size, r.scale}, r.target, r.offsetFrom,
                                 r.indexed, std::move(b)});
      }
      bindWhatAnchorsReach(fb.references);
      fb.outOfLine = outOfLineInstructions(p, decoder);
      if (fb.base && !fb.splitPart) {
        fb.baseBranchFloor = internalBranchFloor(*fb.base);
        fb.baseFill = fillNear(base_.image.functions[*fb.base], decoder);
      }
      diff.bindings.push_back(std::move(fb));
    }
    bindCarriedData(diff);
  }

  // The instructions of patched function p that the linker moved out of line, as its decoding
  // read them.
  std::vector<OutOfLineInstruction> outOfLineInstructions(size_t p, const InstructionDecoder &decoder) const {
    std::vector<OutOfLineInstruction> moved;
    const Function &f = patched_.image.functions[p];
    llvm::ArrayRef<uint8_t> code = patched_.image.bytesAt(f.range.rva, f.range.size);
    for (uint32_t offset = 0; offset + 4 <= code.size(); ++offset)
      if (patched_.instructionAt(p, offset))
        if (std::optional<uint32_t> word = decoder.outOfLineInstruction(
                f.range.rva + offset, llvm::support::endian::read32le(&code[offset]), patched_.image))
          moved.push_back({offset, *word});
    return moved;
  }

  // The lowest offset inside base function b that its own branches (and addresses it takes) reach.
  uint64_t internalBranchFloor(size_t b) const {
    const AddressRange &range = base_.image.functions[b].range;
    uint64_t floor = UINT64_MAX;
    for (const CodeReference &r : base_.references(b))
      if ((r.kind == ReferenceKind::Branch || r.kind == ReferenceKind::Memory) && range.contains(r.target))
        floor = std::min(floor, r.target - range.rva);
    return floor;
  }

  // The gaps between functions near base function f that decode to padding only (the decoder's
  // layout noise): see FunctionBindings::baseFill.
  std::vector<AddressRange> fillNear(const Function &f, InstructionDecoder &decoder) const {
    constexpr uint64_t kReach = 256;
    std::vector<AddressRange> fill;
    const Image &image = base_.image;
    const Section *section = image.sectionAt(f.range.rva);
    if (!section || !section->permissions.execute) return fill;
    uint64_t sectionEnd = section->rva + section->size;
    uint64_t from = std::max(section->rva, f.range.rva - std::min(f.range.rva, kReach));
    uint64_t to = std::min(sectionEnd, f.range.end() + kReach);
    uint64_t lowest = std::max(section->rva, from - std::min(from, kReach)), highest = std::min(sectionEnd, to + kReach);
    RelocationIndex none;
    for (uint64_t at = from; at < to;) {
      if (const Function *owner = image.functionAt(at)) {
        at = owner->range.end();
        continue;
      }
      uint64_t begin = at, end = at;
      while (begin > lowest && !image.functionAt(begin - 1)) --begin;
      while (end < highest && !image.functionAt(end)) ++end;
      llvm::ArrayRef<uint8_t> gap = image.bytesAt(begin, end - begin);
      DecodedFunction decoded = decoder.decode(gap, begin, none);
      if (gap.size() == end - begin && decoded.complete && decoded.instructions == 0)
        fill.push_back({begin, end - begin});
      at = end;
    }
    return fill;
  }

  // What code reaches at an offset from an address it formed (gcc Arm64 section anchors: the
  // block's first object, then others at offsets, often after an index) lands wherever that
  // address is. From an anchor the base keeps, data with the same content at the same distance in
  // the base is the base's (an index's element 0 is no object start that data pairing knows).
  // Copied constants reached from a constant the base keeps (a new table behind it) would be read
  // from the base's bytes: that anchor is copied too, as far as the code reaches from it, so the
  // offsets land in the copy as in the patched build.
  void bindWhatAnchorsReach(std::vector<BoundReference> &references) const {
    using Kind = Binding::Kind;
    std::map<uint64_t, uint64_t> anchorInBase;  // anchor (patched RVA) -> its base RVA
    for (const BoundReference &r : references)
      if (r.field.kind != FixupKind::None && r.binding.kind == Kind::Base) anchorInBase.try_emplace(r.target, r.binding.address);
    std::map<uint64_t, uint64_t> reachFromAnchor;  // anchor (patched RVA) -> end of what is reached
    for (BoundReference &r : references) {
      Binding &reached = r.binding;
      if (!r.offsetFrom || (reached.kind != Kind::Constant && reached.kind != Kind::NewData)) continue;
      if (auto anchor = anchorInBase.find(r.offsetFrom); anchor != anchorInBase.end() && reached.address >= r.offsetFrom) {
        uint64_t inBase = anchor->second + (reached.address - r.offsetFrom);
        if (contentHashOf(false, inBase, reached.size) == contentHashOf(true, reached.address, reached.size)) {
          reached = {Kind::Base, inBase + (r.target - reached.address), 0, {}};
          continue;
        }
      }
      if (reached.kind == Kind::Constant && reached.address >= r.offsetFrom && patched_.isReadOnly(r.offsetFrom)) {
        uint64_t &end = reachFromAnchor[r.offsetFrom];
        end = std::max(end, reached.address + reached.size);
      }
    }
    for (const auto &[anchor, end] : reachFromAnchor)
      for (BoundReference &r : references)
        if (r.field.kind != FixupKind::None && r.target == anchor && r.binding.kind == Kind::Base)
          r.binding = {Kind::Constant, anchor, std::max(end, anchor + patched_.naturalExtent(anchor)) - anchor, {}};
  }

  // Every relocated pointer in the data the patch copies, and in the data those pointers make it
  // copy in turn: bound like an address the code takes.
  void bindCarriedData(Diff &diff) {
    using Kind = Binding::Kind;
    std::vector<std::pair<uint64_t, uint64_t>> work;  // patched RVA and size of a copy
    std::set<std::pair<uint64_t, uint64_t>> seen;
    auto copies = [&](const Binding &b) {
      if ((b.kind == Kind::Constant || b.kind == Kind::NewData) && seen.insert({b.address, b.size}).second)
        work.push_back({b.address, b.size});
    };
    for (const FunctionBindings &fb : diff.bindings)
      for (const BoundReference &r : fb.references) copies(r.binding);
    if (work.empty()) return;
    std::map<uint64_t, const Relocation *> symbolic;  // symbol + addend pointers, by slot
    for (const Relocation &r : patched_.image.relocations)
      if (r.symbol) symbolic.emplace(r.rva, &r);
    // What the patched build defines itself, by name: the functions, then the data objects.
    std::unordered_map<std::string_view, uint64_t> defined;
    for (const Function &f : patched_.image.functions)
      if (f.name) defined.try_emplace(*f.name, f.range.rva);
    for (const DataObject &d : patched_.image.dataObjects)
      if (!d.threadLocal) defined.try_emplace(d.name, d.range.rva);
    const std::vector<uint64_t> &slots = patched_.relocations.rvas;
    while (!work.empty()) {
      auto [rva, size] = work.back();
      work.pop_back();
      for (auto slot = std::lower_bound(slots.begin(), slots.end(), rva); slot != slots.end() && *slot < rva + size;
           ++slot) {
        if (diff.dataPointers.count(*slot)) continue;
        Diff::DataPointer pointer = bindPointer(*slot, symbolic, defined);
        copies(pointer.binding);
        const Binding &b = pointer.binding;
        if (b.kind == Kind::Import && !baseSymbolSlots_.count(std::string_view(b.symbol)) &&
            reportedImports_.insert(symbolKey(b.library, b.symbol)).second) {
          Change c;
          c.kind = ChangeKind::Data;
          c.rule = rules::kNewImport;
          c.name = b.symbol;
          c.patched = AddressRange{*slot, 8};
          c.reason = fmt::format("the data copied at patched rva {:#x} holds a pointer to `{}`, which the base does not "
                                 "import: the patch binds it when it loads", rva, importName(b));
          diff.changes.push_back(std::move(c));
        }
        diff.dataPointers.emplace(*slot, std::move(pointer));
      }
    }
  }

  Diff::DataPointer bindPointer(uint64_t slot, const std::map<uint64_t, const Relocation *> &symbolic,
                                const std::unordered_map<std::string_view, uint64_t> &defined) {
    using Kind = Binding::Kind;
    const PointerTarget *pointer = patched_.pointers.find(slot);
    if (!pointer) return {0, {Kind::Unbound, slot, 0, "a relocated field that is no pointer"}};
    uint64_t target = pointer->rva;
    if (const std::string *symbol = pointer->symbol) {
      // A symbol the build defines itself is bound where the patched build has it; one it imports
      // is resolved by name when the patch loads, as the dynamic loader fills this pointer.
      auto r = symbolic.find(slot);
      if (r == symbolic.end()) return {0, {Kind::Unbound, slot, 0, "a symbolic pointer whose relocation could not be read"}};
      auto definition = defined.find(*symbol);
      if (definition == defined.end()) {
        if (r->second->addend != 0)
          return {0, {Kind::Unbound, slot, 0, fmt::format("a pointer into imported `{}` (+{:#x})", *symbol, r->second->addend)}};
        Binding b{Kind::Import, slot, 0, {}};
        b.symbol = *symbol;
        b.version = std::string(r->second->version);
        return {0, std::move(b)};
      }
      target = definition->second + uint64_t(r->second->addend);
    }
    return {target, bindAddress(nullptr, target, false, *decoders_[0])};
  }

  // One key per symbol the loader binds, for stubs, thunks and slots alike: its DLL (PE; empty on
  // ELF) and its name.
  static std::string symbolKey(std::string_view library, std::string_view name) {
    return fmt::format("{}!{}", library, name);
  }

  void indexBaseSlots() {
    // Stubs are decoded whole, not stepped through at a fixed size: x64 .plt.got entries are 8
    // bytes, .plt ones 16. The first instruction that reads a slot starts its stub (x64 `jmp
    // [slot]`, Arm64 the ADRP of ADRP/LDR/BR).
    for (auto &[begin, end] : base_.stubRanges()) {
      DecodedFunction stubs = decoders_[0]->decode(base_.image.bytesAt(begin, end - begin), begin, base_.relocations);
      for (const CodeReference &r : stubs.references)
        if (r.kind == ReferenceKind::Memory)
          if (const PointerTarget *pointer = base_.pointers.find(r.target); pointer && pointer->symbol)
            baseStubs_.try_emplace(symbolKey({}, *pointer->symbol), begin + r.offset);
    }
    for (auto &[thunk, slot] : base_.importThunks())
      if (auto it = base_.importSlots.find(slot); it != base_.importSlots.end())
        baseStubs_.try_emplace(symbolKey(it->second->library, it->second->name), thunk);
    for (size_t i = 0; i < base_.pointers.size(); ++i)  // the first slot by address of each
      if (const std::string *symbol = base_.pointers.pointer(i).symbol)
        baseSymbolSlots_.try_emplace(*symbol, base_.pointers.rva(i));
    for (auto &[slot, import] : base_.importSlots) baseImportSlots_.try_emplace(symbolKey(import->library, import->name), slot);
    for (size_t b = 0; b < base_.image.functions.size(); ++b)
      if (base_.diffable[b] && base_.image.functions[b].name)
        baseFunctionNames_.try_emplace(*base_.image.functions[b].name, base_.image.functions[b].range.rva);
  }

  // A pointer slot in data that no name or vote pairs (an entry of a table only changed code
  // uses), placed by the nearest paired data before or after it: the base address at the same
  // distance, in the section of the same name, taken only when it holds the same content
  // (pointers compared by what they point at).
  std::optional<uint64_t> nearbyCounterpart(uint64_t target) const {
    const Section *section = patched_.image.sectionAt(target);
    if (!section) return std::nullopt;
    uint64_t size = patched_.naturalExtent(target), content = contentHashOf(true, target, size);
    auto after = anchors_.upper_bound(target);
    for (auto anchor : {after == anchors_.begin() ? anchors_.end() : std::prev(after), after}) {
      if (anchor == anchors_.end() || patched_.image.sectionAt(anchor->first) != section) continue;
      uint64_t candidate = anchor->second + (target - anchor->first);
      const Section *baseSection = base_.image.sectionAt(candidate);
      if (baseSection && baseSection->name == section->name && base_.naturalExtent(candidate) == size &&
          contentHashOf(false, candidate, size) == content)
        return candidate;
    }
    return std::nullopt;
  }

  // The first base slot, by address, that points at `pointee` (no symbol). The index is made at
  // the first question: most patches never ask.
  std::optional<uint64_t> baseSlotPointingAt(uint64_t pointee) {
    if (!basePointeeSlotsMade_) {
      basePointeeSlotsMade_ = true;
      for (size_t i = 0; i < base_.pointers.size(); ++i)
        if (!base_.pointers.pointer(i).symbol)
          basePointeeSlots_.push_back({base_.pointers.pointer(i).rva, base_.pointers.rva(i)});
      std::sort(basePointeeSlots_.begin(), basePointeeSlots_.end());
    }
    auto it = std::lower_bound(basePointeeSlots_.begin(), basePointeeSlots_.end(), pointee,
                               [](const auto &entry, uint64_t key) { return entry.first < key; });
    if (it == basePointeeSlots_.end() || it->first != pointee) return std::nullopt;
    return it->second;
  }

  // A slot the dynamic loader fills with no pointer (an Arm64 TLS descriptor, libssh's
  // R_AARCH64_TLSDESC): the base's only slot with the same relocation (type, symbol, addend).
  std::optional<uint64_t> baseRelocatedSlot(uint64_t target) const {
    const std::vector<uint64_t> &relocated = patched_.relocations.rvas;
    if (patched_.pointers.contains(target) || !std::binary_search(relocated.begin(), relocated.end(), target))
      return std::nullopt;
    auto mine = std::find_if(patched_.image.relocations.begin(), patched_.image.relocations.end(),
                             [&](const Relocation &r) { return r.rva == target; });
    if (mine == patched_.image.relocations.end()) return std::nullopt;
    std::optional<uint64_t> found;
    for (const Relocation &r : base_.image.relocations)
      if (r.type == mine->type && sameSymbol(r, *mine) && r.addend == mine->addend) {
        if (found) return std::nullopt;  // ambiguous
        found = r.rva;
      }
    return found;
  }

  static std::string importName(const Binding &b) {
    return b.symbol + (b.version.empty() ? "" : "@" + b.version) + (b.library.empty() ? "" : " from " + b.library);
  }

  // A reference to a symbol the loader binds (an import, or the library's own export reached
  // through its GOT/PLT): to the base's stub (a call) or slot (a load) of that symbol, whatever
  // kind of stub or slot either build uses, so patched code binds exactly as the base does. A
  // call to a symbol the base defines but calls directly goes to its base function. Anything else
  // is a new import, resolved by name when the patch loads.
  Binding bindSymbol(uint64_t target, bool call, const std::string &name, const Import *import) {
    using Kind = Binding::Kind;
    std::string library = import ? import->library : std::string();
    if (call) {
      if (auto it = baseStubs_.find(symbolKey(library, name)); it != baseStubs_.end()) return {Kind::Base, it->second, 0, {}};
      if (auto it = baseFunctionNames_.find(name); it != baseFunctionNames_.end()) return {Kind::Base, it->second, 0, {}};
    } else {
      if (auto it = baseImportSlots_.find(symbolKey(library, name)); it != baseImportSlots_.end())
        return {Kind::Base, it->second, 0, {}};
      if (auto it = baseSymbolSlots_.find(name); it != baseSymbolSlots_.end()) return {Kind::Base, it->second, 0, {}};
    }
    Binding b{Kind::Import, target, 0, {}};
    b.symbol = name;
    b.library = library;
    if (import) b.version = import->version;
    return b;
  }

  // The base address that holds what `target` (a patched address) holds, if any.
  std::optional<uint64_t> baseCounterpart(uint64_t target) const {
    const Function *f = nullptr;
    const DataObject *o = nullptr;
    switch (patched_.classify(target, &f, &o)) {
    case TargetClass::Function:
      if (auto b = matching_.patchedToBase[patched_.functionIndex(f)])
        return base_.image.functions[*b].range.rva + (target - f->range.rva);
      return std::nullopt;
    case TargetClass::DataObject:
      if (auto b = patchedDataToBase_[patched_.dataIndex(o)]) return base_.data[*b]->range.rva + (target - o->range.rva);
      return std::nullopt;
    case TargetClass::Writable:
      if (auto it = anonymousToBase_.find(target); it != anonymousToBase_.end()) return it->second;
      return std::nullopt;
    case TargetClass::ReadOnly:
      if (auto it = readOnlyToBase_.find(target); it != readOnlyToBase_.end()) return it->second;
      return std::nullopt;
    default: return std::nullopt;
    }
  }

  Binding bind(size_t p, const CodeReference &r, InstructionDecoder &decoder) {
    if (r.kind == ReferenceKind::Page)
      return {Binding::Kind::Unbound, r.target, 0, "an ADRP whose use could not be followed"};
    return bindAddress(&p, r.target, r.kind == ReferenceKind::Call || r.kind == ReferenceKind::Branch, decoder);
  }

  // Where `target` (a patched RVA) must point once the patch is loaded. `from`: the carried
  // function whose code refers to it; null for a pointer in carried data, which takes an address
  // (never a call or branch).
  Binding bindAddress(const size_t *from, uint64_t target, bool direct, InstructionDecoder &decoder) {
    using Kind = Binding::Kind;
    const Function *f = nullptr;
    const DataObject *o = nullptr;
    switch (patched_.classify(target, &f, &o)) {
    case TargetClass::Function: {
      size_t index = patched_.functionIndex(f);
      if (from && index == *from) return {Kind::Local, target, 0, {}};
      // Calls go straight to carried code; a taken address stays the base's, whose entry is
      // redirected, so function pointers compare equal across old and new code.
      if (carried_[index] && (direct || !matching_.patchedToBase[index])) return {Kind::Function, target, 0, {}};
      if (std::optional<uint64_t> b = baseCounterpart(target)) return {Kind::Base, *b, 0, {}};
      return {Kind::Unbound, target, 0, "a function with no counterpart in the base"};
    }
    case TargetClass::Stub: {
      std::optional<uint64_t> slot = patched_.stubSlot(target, decoder);
      if (auto import = slot ? patched_.importSlots.find(*slot) : patched_.importSlots.end();
          patched_.importThunks().count(target) && import != patched_.importSlots.end()) {
        // An import thunk (PE): the base's thunk of the same import, or a new import.
        return bindSymbol(target, true, import->second->name, import->second);
      }
      const PointerTarget *pointer = slot ? patched_.pointers.find(*slot) : nullptr;
      if (!pointer || !pointer->symbol)
        return {Kind::Unbound, target, 0, "a stub whose import could not be read"};
      auto import = patched_.importSlots.find(*slot);
      return bindSymbol(target, true, *pointer->symbol,
                        import != patched_.importSlots.end() ? import->second : nullptr);
    }
    case TargetClass::ImportSlot: {
      const Import *i = patched_.importSlots.at(target);
      return bindSymbol(target, false, i->name, i);
    }
    case TargetClass::DataObject: {
      size_t index = patched_.dataIndex(o);
      std::optional<size_t> b = patchedDataToBase_[index];
      bool readOnly = patched_.isReadOnly(o->range.rva);
      // Existing variables stay the base's (their running values are the state); constants that
      // changed travel with the code.
      if (b && (!readOnly || patchedDataContent_[index] == baseDataContent_[*b]))
        return {Kind::Base, base_.data[*b]->range.rva + (target - o->range.rva), 0, {}};
      uint64_t size = o->sizeKnown || !readOnly ? o->range.size : patched_.naturalExtent(o->range.rva);
      return {readOnly ? Kind::Constant : Kind::NewData, o->range.rva, size, {}};
    }
    case TargetClass::PointerSlot: {
      if (patched_.isTableSlot(target)) {
        // The base's table when it holds the same (pointers compared by what they point at) and
        // reaches at least as far (zeros after the content), else a copy whose pointers are bound
        // one by one.
        uint64_t size = patched_.tableExtent(target), content = patched_.tableContentExtent(target);
        std::optional<uint64_t> b;
        if (auto it = slotToBase_.find(target); it != slotToBase_.end()) b = it->second;
        if (!b) b = nearbyCounterpart(target);
        if (b && base_.isTableSlot(*b) && base_.tableExtent(*b) >= size && base_.tableContentExtent(*b) == content &&
            contentHashOf(false, *b, content) == contentHashOf(true, target, content))
          return {Kind::Base, *b, 0, {}};
        return {Kind::Constant, target, size, {}};
      }
      const PointerTarget &pointer = patched_.pointers.at(target);
      if (pointer.symbol) return bindSymbol(target, false, *pointer.symbol, nullptr);
      if (auto it = slotToBase_.find(target); it != slotToBase_.end()) return {Kind::Base, it->second, 0, {}};
      if (std::optional<uint64_t> b = nearbyCounterpart(target)) return {Kind::Base, *b, 0, {}};
      if (std::optional<uint64_t> pointee = baseCounterpart(pointer.rva))
        if (std::optional<uint64_t> slot = baseSlotPointingAt(*pointee)) return {Kind::Base, *slot, 0, {}};
      // A new read-only table that starts with a pointer (its symbol stripped): copied whole.
      if (patched_.isReadOnly(target)) return {Kind::Constant, target, patched_.tableExtent(target), {}};
      return {Kind::Unbound, target, 0, "a pointer slot with no counterpart in the base"};
    }
    case TargetClass::ReadOnly: {
      if (std::optional<uint64_t> b = baseRelocatedSlot(target)) return {Kind::Base, *b, 0, {}};  // in RELRO
      uint64_t entries = from ? patched_.relativeTableEntries(target, patched_.image.functions[*from]) : 0;
      if (entries >= 2) return {Kind::JumpTable, target, entries * 4, {}};
      if (std::optional<Program::RelativeStringTable> strings = patched_.relativeStringTable(target)) {
        if (strings->end - strings->begin > kRelativeStringSpanLimit)
          return {Kind::Unbound, target, 0, "a table of offsets to strings spread too widely to copy together"};
        return {Kind::Constant, strings->begin, strings->end - strings->begin, {}};
      }
      // Read-only data with relocated pointers (.data.rel.ro), which a copy could not carry: the
      // base's when it has the same content (pointers compared by what they point at).
      uint64_t size = patched_.naturalExtent(target);
      const std::vector<uint64_t> &relocated = patched_.relocations.rvas;
      auto pointer = std::lower_bound(relocated.begin(), relocated.end(), target);
      bool table = pointer != relocated.end() && *pointer < target + size;
      if (auto it = readOnlyToBase_.find(target); it != readOnlyToBase_.end() && table &&
          size == base_.naturalExtent(it->second) &&
          contentHashOf(false, it->second, size) == contentHashOf(true, target, size))
        return {Kind::Base, it->second, 0, {}};
      // A copy of a table must hold all of it, however far the code indexes.
      return {Kind::Constant, target, table ? patched_.tableExtent(target) : size, {}};
    }
    case TargetClass::Writable:
      if (std::optional<uint64_t> b = baseCounterpart(target)) return {Kind::Base, *b, 0, {}};
      if (std::optional<uint64_t> b = baseRelocatedSlot(target)) return {Kind::Base, *b, 0, {}};
      return {Kind::NewData, target, patched_.naturalExtent(target), {}};
    case TargetClass::Unknown: break;
    }
    return {Kind::Unbound, target, 0, "an address outside every section"};
  }

  Change dataChange(const DataObject *b, const DataObject *p, const char *rule, Verdict verdict, std::string reason) {
    Change c;
    c.kind = ChangeKind::Data;
    c.rule = rule;
    c.verdict = verdict;
    c.reason = std::move(reason);
    c.name = (p ? p : b)->name;
    if (b) c.base = b->range;
    if (p) c.patched = p->range;
    c.writable = !(p ? patched_ : base_).isReadOnly((p ? p : b)->range.rva);
    return c;
  }

  void finish(Diff &diff) {
    auto order = [](const Change &c) {
      return std::make_tuple(int(c.kind), c.base ? c.base->rva : ~0ull, c.patched ? c.patched->rva : ~0ull, c.rule);
    };
    std::stable_sort(diff.changes.begin(), diff.changes.end(),
                     [&](const Change &a, const Change &b) { return order(a) < order(b); });
    diff.summary.matched = diff.pairs.size();
    for (const FunctionPair &p : diff.pairs) diff.summary.changed += p.changed;
    diff.summary.added = diff.addedFunctions.size();
    diff.summary.removed = diff.removedFunctions.size();
    for (const Change &c : diff.changes) diff.summary.needsRestart += c.verdict == Verdict::NeedsRestart;
  }

  Program base_, patched_;
  DiffOptions options_;
  unsigned threads_ = 1;
  std::vector<std::unique_ptr<InstructionDecoder>> decoders_;
  Matching matching_;
  std::vector<std::optional<size_t>> baseDataToPatched_, patchedDataToBase_;
  std::vector<uint64_t> baseDataContent_, patchedDataContent_;
  std::map<uint64_t, uint64_t> anonymousToBase_, anonymousToPatched_;
  static constexpr size_t kMaxMemoEntries = size_t(1) << 20;
  mutable std::array<AddressMemo, 2> naturalContent_;  // base, patched: naturalContent by address and depth
  std::map<uint64_t, uint64_t> readOnlyToBase_, slotToBase_;  // patched -> base, paired by voteAnonymousData
  std::set<uint64_t> reportedConstants_;
  std::set<std::string> reportedImports_;  // symbolKey of each new import listed as HF301
  std::vector<bool> carried_;  // per patched function: the patch carries it
  std::map<std::string, uint64_t> baseStubs_, baseImportSlots_;
  // Names the base Image holds (its relocations' symbols, its functions' names): tens of
  // thousands in a C++ library, not copied.
  std::unordered_map<std::string_view, uint64_t> baseSymbolSlots_, baseFunctionNames_;
  std::vector<std::pair<uint64_t, uint64_t>> basePointeeSlots_;  // (pointee, slot), by pointee, then slot
  bool basePointeeSlotsMade_ = false;
  std::map<uint64_t, uint64_t> anchors_;  // patched -> base of every data pair: where nearbyCounterpart measures from
};

}  // namespace
}  // namespace differ

llvm::Expected<Diff> diffImages(const Image &base, const Image &patched, const DiffOptions &options) {
  return differ::Differ(base, patched, options).run();
}

}  // namespace hotforge
