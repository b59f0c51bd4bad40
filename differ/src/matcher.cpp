#include "matcher.h"

#include <fmt/core.h>
#include <llvm/Support/TimeProfiler.h>

#include <algorithm>
#include <map>
#include <span>
#include <set>

namespace hotforge::differ {

void Matching::pair(size_t base, size_t patched, MatchInfo how) {
  baseToPatched[base] = patched;
  patchedToBase[patched] = base;
  info[base] = how;
  ++pairs;
}

std::optional<size_t> callTarget(const Program &program, const CodeReference &reference) {
  if (reference.kind != ReferenceKind::Call && reference.kind != ReferenceKind::Branch) return std::nullopt;
  const Function *f = program.functionAt(reference.target);
  if (!f || f->range.rva != reference.target) return std::nullopt;
  size_t index = program.functionIndex(f);
  return program.diffable[index] ? std::optional<size_t>(index) : std::nullopt;
}

namespace {

bool nameFromDebugInfo(const Function &f) {
  return f.nameSource == FunctionSource::Pdb || f.nameSource == FunctionSource::Dwarf ||
         f.nameSource == FunctionSource::DebugFile;
}

// Pairs the unmatched functions whose key is unique on both sides. With `inOrder`, a key held by
// the same number of functions on both sides pairs them in address order too (static functions
// of one name in several units, identical copies): a rebuild keeps their order. Keys are 64-bit
// digests; sorted (key, function) lists put each key's functions side by side in address order.
// Functions the patched build names that the base does not (`newNames`) take part only where
// the key is unambiguous evidence (`unambiguous`).
template <typename KeyOf>
size_t matchKeys(const Program &base, const Program &patched, Matching &m, KeyOf keyOf, MatchInfo unique,
                 std::optional<MatchInfo> inOrder = std::nullopt, const std::vector<bool> *newNames = nullptr) {
  auto collect = [&](const Program &p, const std::vector<std::optional<size_t>> &matched) {
    std::vector<std::pair<uint64_t, size_t>> keys;
    bool skipNew = &p == &patched && newNames;
    for (size_t i = 0; i < p.code.size(); ++i)
      if (p.diffable[i] && !matched[i] && !(skipNew && (*newNames)[i]))
        if (std::optional<uint64_t> key = keyOf(p, i)) keys.push_back({*key, i});
    std::sort(keys.begin(), keys.end());
    return keys;
  };
  std::vector<std::pair<uint64_t, size_t>> baseKeys = collect(base, m.baseToPatched);
  std::vector<std::pair<uint64_t, size_t>> patchedKeys = collect(patched, m.patchedToBase);
  auto groupEnd = [](const std::vector<std::pair<uint64_t, size_t>> &keys, size_t begin, uint64_t key) {
    while (begin < keys.size() && keys[begin].first == key) ++begin;
    return begin;
  };
  size_t found = 0;
  for (size_t b = 0, p = 0; b < baseKeys.size();) {
    uint64_t key = baseKeys[b].first;
    size_t bEnd = groupEnd(baseKeys, b, key);
    while (p < patchedKeys.size() && patchedKeys[p].first < key) ++p;
    size_t pEnd = groupEnd(patchedKeys, p, key);
    size_t count = bEnd - b;
    if (count == pEnd - p && (count == 1 || inOrder)) {
      for (size_t k = 0; k < count; ++k)
        m.pair(baseKeys[b + k].second, patchedKeys[p + k].second, count == 1 ? unique : *inOrder);
      found += count;
    }
    b = bEnd;
    p = pEnd;
  }
  return found;
}

// Unmatched functions sitting alone between the same two matched neighbours, in address order:
// rebuilt code keeps its function order, so these are one function that changed. A function with
// a new name is no candidate: it is more likely new than the gap's old function changed.
size_t matchLayoutGaps(const Program &base, const Program &patched, Matching &m, const std::vector<bool> &newNames) {
  size_t found = 0;
  std::optional<size_t> previousBase;
  for (size_t b = 0; b <= base.code.size(); ++b) {
    bool boundary = b == base.code.size() || (base.diffable[b] && m.baseToPatched[b]);
    if (!boundary) continue;
    size_t patchedBegin = previousBase ? *m.baseToPatched[*previousBase] + 1 : 0;
    size_t patchedEnd = b == base.code.size() ? patched.code.size() : *m.baseToPatched[b];
    size_t baseBegin = previousBase ? *previousBase + 1 : 0;
    previousBase = b == base.code.size() ? previousBase : std::optional<size_t>(b);
    if (patchedEnd < patchedBegin) continue;  // the neighbours swapped order
    std::vector<size_t> baseGap, patchedGap;
    for (size_t i = baseBegin; i < b; ++i)
      if (base.diffable[i] && !m.baseToPatched[i]) baseGap.push_back(i);
    for (size_t i = patchedBegin; i < patchedEnd; ++i)
      if (patched.diffable[i] && !m.patchedToBase[i] && !newNames[i]) patchedGap.push_back(i);
    if (baseGap.size() != 1 || patchedGap.size() != 1) continue;
    // Names, when both have one, must agree: a renamed function is a removal and an addition.
    std::string_view bn = base.nameKeys[baseGap[0]], pn = patched.nameKeys[patchedGap[0]];
    if (!bn.empty() && !pn.empty() && bn != pn) continue;
    m.pair(baseGap[0], patchedGap[0], {MatchStage::Structure, 0.6});
    ++found;
  }
  return found;
}

// The functions each function calls, in call order (none where a call lands elsewhere), read
// once: the propagation below goes over them in rounds.
class CallLists {
public:
  explicit CallLists(const Program &p) {
    begin_.reserve(p.code.size() + 1);
    for (size_t f = 0; f < p.code.size(); ++f) {
      begin_.push_back(uint32_t(callees_.size()));
      for (const CodeReference &r : p.references(f))
        if (r.kind == ReferenceKind::Call) {
          std::optional<size_t> callee = callTarget(p, r);
          callees_.push_back(callee ? uint32_t(*callee) : kNone);
        }
    }
    begin_.push_back(uint32_t(callees_.size()));
  }
  std::span<const uint32_t> of(size_t f) const { return {callees_.data() + begin_[f], callees_.data() + begin_[f + 1]}; }
  static constexpr uint32_t kNone = ~uint32_t(0);

private:
  std::vector<uint32_t> begin_;
  std::vector<uint32_t> callees_;  // function indexes, or kNone
};

// The n-th call of a matched pair lands in an unmatched function on both sides: those match. A
// function with a new name only through a pair whose bodies are the same but for addresses (the
// caller did not change, so its n-th call is the same call).
class CallPropagation {
public:
  CallPropagation(const Program &base, const Program &patched, const std::vector<bool> &newNames)
      : base_(base), patched_(patched), newNames_(newNames), baseCalls_(base), patchedCalls_(patched),
        spent_(base.code.size(), false) {}

  size_t run(Matching &m) {
    llvm::TimeTraceScope scope("propagate through calls");
    size_t total = 0;
    for (int round = 0; round < 16; ++round) {
      size_t found = 0;
      for (size_t b = 0; b < base_.code.size(); ++b)
        if (m.baseToPatched[b] && !spent_[b]) found += pairCallees(m, b, *m.baseToPatched[b]);
      total += found;
      if (!found) break;
    }
    return total;
  }

private:
  // Pairs what the calls of one pair can pair. Afterwards each of its calls is paired or cannot
  // pair (paired callees stay paired, the other conditions do not change): the pair is spent.
  size_t pairCallees(Matching &m, size_t b, size_t p) {
    spent_[b] = true;
    std::span<const uint32_t> bt = baseCalls_.of(b), pt = patchedCalls_.of(p);
    if (bt.size() != pt.size()) return 0;
    bool unchangedCaller = base_.code[b].shape == patched_.code[p].shape;
    size_t found = 0;
    for (size_t i = 0; i < bt.size(); ++i) {
      if (bt[i] == CallLists::kNone || pt[i] == CallLists::kNone || m.baseToPatched[bt[i]] || m.patchedToBase[pt[i]])
        continue;
      if (newNames_[pt[i]] && !unchangedCaller) continue;
      std::string_view bn = base_.nameKeys[bt[i]], pn = patched_.nameKeys[pt[i]];
      if (!bn.empty() && !pn.empty() && bn != pn) continue;
      m.pair(bt[i], pt[i], {MatchStage::CallGraph, 0.8});
      ++found;
    }
    return found;
  }

  const Program &base_, &patched_;
  const std::vector<bool> &newNames_;
  CallLists baseCalls_, patchedCalls_;
  std::vector<bool> spent_;  // per base function
};

// Function pointers at the same place of data laid out alike on both sides (a writable or RELRO
// section of the same name and size, as most security updates leave them; it may have moved as a
// whole, as lld places data right after the code that grew): the unmatched functions they point
// at pair when each is pointed at only with the other (a rebuilt static callback of a vtable,
// which nothing calls directly). A new name is no candidate.
size_t matchThroughDataPointers(const Program &base, const Program &patched, Matching &m,
                                const std::vector<bool> &newNames) {
  auto unmatchedEntry = [](const Program &p, const std::vector<std::optional<size_t>> &matched,
                           uint64_t rva) -> std::optional<size_t> {
    const Function *f = p.functionAt(rva);
    if (!f || f->range.rva != rva) return std::nullopt;
    size_t i = p.functionIndex(f);
    if (!p.diffable[i] || matched[i]) return std::nullopt;
    return i;
  };
  std::map<size_t, std::set<size_t>> toPatched, toBase;
  for (const Section &bs : base.image.sections) {
    if (!bs.loaded || !bs.permissions.write) continue;
    auto same = std::find_if(patched.image.sections.begin(), patched.image.sections.end(), [&](const Section &ps) {
      return ps.name == bs.name && ps.size == bs.size && ps.permissions.write;
    });
    if (same == patched.image.sections.end()) continue;
    auto [first, last] = base.pointers.within(bs.rva, bs.rva + bs.size);
    for (size_t k = first; k < last; ++k) {
      const PointerTarget &pointer = base.pointers.pointer(k);
      const PointerTarget *other = patched.pointers.find(base.pointers.rva(k) - bs.rva + same->rva);
      if (pointer.symbol || !other || other->symbol) continue;
      std::optional<size_t> b = unmatchedEntry(base, m.baseToPatched, pointer.rva);
      std::optional<size_t> p = unmatchedEntry(patched, m.patchedToBase, other->rva);
      if (!b || !p || newNames[*p]) continue;
      std::string_view bn = base.nameKeys[*b], pn = patched.nameKeys[*p];
      if (!bn.empty() && !pn.empty() && bn != pn) continue;
      toPatched[*b].insert(*p);
      toBase[*p].insert(*b);
    }
  }
  size_t found = 0;
  for (const auto &[b, candidates] : toPatched) {
    size_t p = *candidates.begin();
    if (candidates.size() != 1 || toBase[p].size() != 1 || base.coldPart[b] != patched.coldPart[p]) continue;
    m.pair(b, p, {MatchStage::DataPointers, 0.8});
    ++found;
  }
  return found;
}

// Per patched function: it has a name the base has for no function, while the base names functions
// from that same source (a build without such names at all, e.g. stripped, makes no name new).
std::vector<bool> newNames(const Program &base, const Program &patched) {
  std::vector<std::string_view> baseNames;
  uint32_t baseSources = 0;
  for (size_t i = 0; i < base.code.size(); ++i)
    if (!base.nameKeys[i].empty()) {
      baseNames.push_back(base.nameKeys[i]);
      baseSources |= 1u << unsigned(base.image.functions[i].nameSource);
    }
  std::sort(baseNames.begin(), baseNames.end());
  std::vector<bool> out(patched.code.size(), false);
  for (size_t i = 0; i < patched.code.size(); ++i)
    out[i] = !patched.nameKeys[i].empty() && (baseSources >> unsigned(patched.image.functions[i].nameSource) & 1) &&
             !std::binary_search(baseNames.begin(), baseNames.end(), patched.nameKeys[i]);
  return out;
}

}  // namespace

Matching matchFunctions(const Program &base, const Program &patched) {
  Matching m;
  m.baseToPatched.resize(base.code.size());
  m.patchedToBase.resize(patched.code.size());
  m.info.resize(base.code.size());

  // A part (.cold) pairs only with a part.
  auto nameDigest = [](const Program &p, size_t i) { return mixHash(p.nameDigests[i], p.coldPart[i]); };
  auto nameKey = [&](bool debug) {
    return [debug, nameDigest](const Program &p, size_t i) -> std::optional<uint64_t> {
      if (p.nameKeys[i].empty() || nameFromDebugInfo(p.image.functions[i]) != debug) return std::nullopt;
      return nameDigest(p, i);
    };
  };
  size_t byName = matchKeys(base, patched, m, nameKey(false), {MatchStage::Name, 1.0}, MatchInfo{MatchStage::Name, 0.9});
  // Debug-info names may pair with a symbol name on the other side (one build stripped).
  auto anyName = [&](const Program &p, size_t i) -> std::optional<uint64_t> {
    if (p.nameKeys[i].empty()) return std::nullopt;
    return nameDigest(p, i);
  };
  size_t byDebug = matchKeys(base, patched, m, anyName, {MatchStage::DebugIdentity, 1.0},
                             MatchInfo{MatchStage::DebugIdentity, 0.9});
  // Later stages pair what names left over; with nothing left on one side they have nothing to do.
  auto leftOver = [&](const Program &p, const std::vector<std::optional<size_t>> &matched) {
    for (size_t i = 0; i < p.code.size(); ++i)
      if (p.diffable[i] && !matched[i]) return true;
    return false;
  };
  if (!leftOver(base, m.baseToPatched) || !leftOver(patched, m.patchedToBase)) {
    m.log.push_back(fmt::format("name: {} pairs", byName));
    m.log.push_back(fmt::format("debug-identity: {} pairs", byDebug));
    return m;
  }
  auto shapeKey = [](const Program &p, size_t i) -> std::optional<uint64_t> {
    return p.code[i].instructions ? std::optional<uint64_t>(p.code[i].shape) : std::nullopt;
  };
  // A wrong pair is worse than none: a function the base does not name pairs only on an identical
  // body (unique on both sides) or as the same call of an unchanged caller (docs/differ.md).
  std::vector<bool> fresh = newNames(base, patched);
  auto substantialShapeKey = [&](const Program &p, size_t i) -> std::optional<uint64_t> {
    if (&p == &patched && fresh[i] && p.code[i].instructions < 4) return std::nullopt;  // every getter looks alike
    return shapeKey(p, i);
  };
  size_t byHash = matchKeys(base, patched, m, substantialShapeKey, {MatchStage::Hash, 0.95});
  CallPropagation calls(base, patched, fresh);
  size_t byCalls = calls.run(m);
  size_t byData = matchThroughDataPointers(base, patched, m, fresh);
  if (byData) byCalls += calls.run(m);
  auto signature = [](const Program &p, size_t i) -> std::optional<uint64_t> {
    const FunctionCode &d = p.code[i];
    if (d.instructions < 4) return std::nullopt;  // too little to tell functions apart
    return mixHash(mixHash(mixHash(d.instructions, d.calls), d.branches), d.referenceCount);
  };
  size_t byStructure = matchKeys(base, patched, m, signature, {MatchStage::Structure, 0.7}, std::nullopt, &fresh);
  // Identical bodies left over (copies of one helper): in address order.
  byHash += matchKeys(base, patched, m, shapeKey, {MatchStage::Hash, 0.95}, MatchInfo{MatchStage::Hash, 0.8}, &fresh);
  byStructure += matchLayoutGaps(base, patched, m, fresh);
  byCalls += calls.run(m);

  m.log.push_back(fmt::format("name: {} pairs", byName));
  m.log.push_back(fmt::format("debug-identity: {} pairs", byDebug));
  m.log.push_back(fmt::format("hash: {} pairs", byHash));
  m.log.push_back(fmt::format("call-graph: {} pairs", byCalls));
  m.log.push_back(fmt::format("structure: {} pairs", byStructure));
  m.log.push_back(fmt::format("data-pointers: {} pairs", byData));
  return m;
}

}  // namespace hotforge::differ
