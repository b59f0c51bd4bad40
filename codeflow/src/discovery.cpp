// The generic discovery walk. Phase 1 is recursive descent: every start is walked (a table
// extent is scanned whole, any other start is followed by its control flow up to the next start)
// and what it calls, jumps to outside itself or points at becomes a start. Phase 2 sweeps each
// region in address order: it fixes every extent against the final starts, accepts a pointer
// target only where no function's control flow runs, and makes the first non-fill byte of any
// gap that is left a start of its own (code that nothing known references).
#include "hotforge/codeflow/discovery.h"

#include <algorithm>
#include <map>

namespace hotforge::codeflow {
namespace {

struct Start {
  uint64_t tableSize = 0;  // extent from a table: scanned, never walked
  FoundBy foundBy = FoundBy::Table;
  bool weak = false;       // a pointer target not accepted yet
  bool walked = false;
  uint64_t limit = 0;      // the limit of the last walk
  uint64_t end = 0;        // end of its last reachable instruction
  bool endsCleanly = false;  // in a return, jump, trap, padding or at the next start: not in bytes that do not decode
};

struct Target {
  uint64_t rva;
  FoundBy foundBy;
  bool weak;
};

class Discovery {
public:
  Discovery(FlowDecoder &decoder, const DiscoveryInput &input)
      : decoder_(decoder), regions_(input.regions), executable_(input.executable), readBytes_(input.readBytes) {
    std::sort(regions_.begin(), regions_.end(), [](const CodeRegion &a, const CodeRegion &b) { return a.rva < b.rva; });
    // Sections of a damaged file may overlap: each byte belongs to the first region that holds it.
    for (size_t i = 1; i < regions_.size(); ++i)
      if (uint64_t covered = regions_[i - 1].end(); regions_[i].rva < covered)
        regions_[i] = {covered, regions_[i].bytes.drop_front(std::min<uint64_t>(covered - regions_[i].rva, regions_[i].bytes.size()))};
    std::erase_if(regions_, [](const CodeRegion &r) { return r.bytes.empty(); });
    for (const KnownStart &k : input.known)
      if (k.size) sized_.push_back({k.rva, k.rva + k.size});
    std::sort(sized_.begin(), sized_.end());
    sizedMaxEnd_.resize(sized_.size());
    for (size_t i = 0; i < sized_.size(); ++i)
      sizedMaxEnd_[i] = std::max(sized_[i].second, i ? sizedMaxEnd_[i - 1] : 0);
    for (const KnownStart &k : input.known) {
      if (!regionOf(k.rva)) continue;
      Start &s = starts_[k.rva];
      s.tableSize = std::max(s.tableSize, k.size);
    }
    for (uint64_t e : input.entries) note({e, FoundBy::Entry, false});
    for (uint64_t p : input.pointers) note({p, FoundBy::Pointer, true});
  }

  DiscoveryResult run() {
    // Decoding the table extents finds the calls into the gaps between them. When the tables
    // already cover most of the code that costs a decode of nearly all of it for little: the
    // sweep still walks every gap from its first instruction and follows what it finds there.
    uint64_t codeBytes = 0, tableBytes = 0;
    for (const CodeRegion &region : regions_) codeBytes += region.bytes.size();
    for (const auto &[begin, end] : sized_) tableBytes += end - begin;
    bool scanTables = tableBytes < codeBytes / 2;
    worklist_.clear();
    // Pointer targets are walked too (a `main` that only `_start` points at calls everything
    // else), but what they jump to stays weak: a pointer may name a label inside a function.
    for (auto &[rva, start] : starts_)
      if (scanTables || !start.tableSize) worklist_.push_back(rva);
    // Phase 1: recursive descent until no new start appears.
    while (!worklist_.empty()) {
      uint64_t rva = worklist_.back();
      worklist_.pop_back();
      auto it = starts_.find(rva);
      if (it == starts_.end()) continue;
      if (it->second.tableSize) scanTableExtent(rva, rva + it->second.tableSize);
      else walk(it);
      for (const Target &t : found_) note(t);
      found_.clear();
    }
    // Phase 2: final extents, region by region, in address order.
    for (const CodeRegion &region : regions_) sweep(region);
    DiscoveryResult result;
    for (const auto &[rva, start] : starts_)
      if (!start.tableSize && start.end > rva) result.functions.push_back({rva, start.end - rva, start.foundBy});
    return result;
  }

  // The first byte in [from, to) that is not fill, or `to`.
  uint64_t skipFill(uint64_t from, uint64_t to) {
    const CodeRegion *region = regionOf(from);
    uint64_t pos = from;
    while (region && pos < to) {
      FlowStep step = decoder_.step(bytesBetween(*region, pos, to), pos);
      bool fill = step.kind == FlowKind::Fill || step.kind == FlowKind::Pad || step.kind == FlowKind::Trap;
      if (!fill) return pos;
      pos += step.size;
    }
    return std::min(pos, to);
  }

  // The first fill byte in [from, to), else the next 16-byte boundary, capped at `to`.
  uint64_t skipData(uint64_t from, uint64_t to) {
    const CodeRegion *region = regionOf(from);
    uint64_t aligned = std::min(to, (from + 15) & ~uint64_t(15));
    for (uint64_t pos = from; region && pos < aligned;) {
      FlowStep step = decoder_.step(bytesBetween(*region, pos, aligned), pos);
      if (step.kind == FlowKind::Fill || step.kind == FlowKind::Pad) return pos;
      pos += step.size;
    }
    return aligned;
  }

  const CodeRegion *regionOf(uint64_t rva) const {
    auto it = std::upper_bound(regions_.begin(), regions_.end(), rva,
                               [](uint64_t a, const CodeRegion &r) { return a < r.rva; });
    if (it == regions_.begin()) return nullptr;
    --it;
    return rva < it->end() ? &*it : nullptr;
  }

  const std::vector<CodeRegion> &regions() const { return regions_; }

private:
  static llvm::ArrayRef<uint8_t> bytesBetween(const CodeRegion &region, uint64_t from, uint64_t to) {
    return region.bytes.slice(from - region.rva, std::min(to, region.end()) - from);
  }

  bool executable(uint64_t rva) const {
    if (executable_.empty()) return true;
    for (const auto &[begin, end] : executable_)
      if (rva >= begin && rva < end) return true;
    return false;
  }

  // Strictly inside a table extent (not at its start): not a function start of its own.
  bool insideTableExtent(uint64_t rva) const {
    auto it = std::lower_bound(sized_.begin(), sized_.end(), std::make_pair(rva, uint64_t(0)));
    if (it == sized_.begin()) return false;
    return sizedMaxEnd_[size_t(it - sized_.begin()) - 1] > rva;
  }

  void note(const Target &t) {
    if (!regionOf(t.rva) || insideTableExtent(t.rva)) return;
    auto [it, inserted] = starts_.try_emplace(t.rva, Start{.foundBy = t.foundBy, .weak = t.weak});
    if (!inserted) {
      if (t.weak || !it->second.weak) return;
      it->second.weak = false;
      it->second.foundBy = t.foundBy;
      it->second.walked = false;  // what it jumps to is no longer weak either
    }
    worklist_.push_back(t.rva);
  }

  // The next start after `rva` that bounds a walk, capped at the region's end; `anyStart` also
  // counts pointer targets not accepted yet.
  uint64_t nextStart(uint64_t rva, uint64_t regionEnd, bool anyStart) const {
    for (auto it = starts_.upper_bound(rva); it != starts_.end() && it->first < regionEnd; ++it)
      if (anyStart || !it->second.weak) return it->first;
    return regionEnd;
  }

  void scanTableExtent(uint64_t begin, uint64_t end) {
    const CodeRegion *region = regionOf(begin);
    decoder_.beginFunction();
    for (uint64_t pos = begin; region && pos < std::min(end, region->end());) {
      FlowStep step = decoder_.step(bytesBetween(*region, pos, end), pos);
      pos += step.size;
      if (step.codeAddress) found_.push_back({step.codeAddress, FoundBy::Pointer, true});
      if (!step.hasTarget) continue;
      if (step.kind == FlowKind::Call) found_.push_back({step.target, FoundBy::Call, false});
      else if (step.target < begin || step.target >= end) found_.push_back({step.target, FoundBy::Jump, false});
    }
  }

  // Follows the control flow of the start at `it` up to the next start; sets its end.
  void walk(std::map<uint64_t, Start>::iterator it) {
    uint64_t start = it->first;
    const CodeRegion *region = regionOf(start);
    uint64_t limit = nextStart(start, region->end(), false);
    uint64_t anyLimit = nextStart(start, region->end(), true);
    Start &s = it->second;
    if (s.walked && s.limit == limit) return;
    s.walked = true;
    s.limit = limit;
    decoder_.beginFunction();
    uint64_t pos = start, end = start, pendingTarget = 0;  // the furthest forward branch target inside
    bool dispatch = false, afterCall = false;
    bool clean = false;
    while (pos < limit) {
      // A jump table's cases are not followed: such a function runs to the next start of any kind.
      if (dispatch && pos >= anyLimit && pendingTarget < pos) break;
      FlowStep step = decoder_.step(bytesBetween(*region, pos, limit), pos);
      if (step.kind == FlowKind::Invalid || (step.hasTarget && !executable(step.target))) break;
      if (step.kind == FlowKind::Pad || step.kind == FlowKind::Fill) {
        // nop fill also aligns loop heads, after a call too (that may not return): only padding
        // that is never executed (int3, udf #0) ends a function.
        if (step.kind == FlowKind::Pad && pendingTarget <= pos && !dispatch) {
        clean = afterCall;  // int3 after a call that does not return; after anything else: data
        break;
      }
        pos += step.size;
        continue;
      }
      pos += step.size;
      end = pos;
      afterCall = step.kind == FlowKind::Call;
      if (step.codeAddress) found_.push_back({step.codeAddress, FoundBy::Pointer, true});
      if (step.hasTarget) {
        if (step.kind == FlowKind::Call) found_.push_back({step.target, FoundBy::Call, false});
        else if (step.target >= start && step.target < limit) pendingTarget = std::max(pendingTarget, step.target);
        else found_.push_back({step.target, FoundBy::Jump, s.weak});  // a tail call
      }
      if (step.kind == FlowKind::Dispatch) {
        // A table the decoder recognised bounds the function by its cases; any other dispatch
        // lets it run to the next start.
        uint64_t furthest = step.table.entrySize ? furthestCase(step.table, start, limit) : 0;
        if (furthest) pendingTarget = std::max(pendingTarget, furthest);
        else dispatch = true;
      }
      bool fallsThrough = step.kind != FlowKind::Jump && step.kind != FlowKind::Return && step.kind != FlowKind::Trap;
      if (!fallsThrough && !dispatch && pendingTarget < pos) {
        clean = true;
        break;
      }
    }
    s.end = end;
    s.endsCleanly = clean || (pos >= limit && limit < region->end());
  }

  // The furthest case of a jump table whose entries lead into [start, limit): its entries, or
  // when the bounds check was not seen, entries until one leads elsewhere. 0 when none does.
  uint64_t furthestCase(const JumpTable &table, uint64_t start, uint64_t limit) const {
    constexpr unsigned kMaxEntries = 1 << 16;
    uint64_t furthest = 0;
    unsigned entries = table.entries ? std::min<unsigned>(table.entries, kMaxEntries) : kMaxEntries;
    for (unsigned i = 0; i < entries && readBytes_; ++i) {
      llvm::ArrayRef<uint8_t> bytes = readBytes_(table.rva + uint64_t(i) * table.entrySize, table.entrySize);
      if (bytes.size() != table.entrySize) break;
      uint64_t entry = 0;
      for (unsigned b = 0; b < table.entrySize; ++b) entry |= uint64_t(bytes[b]) << (8 * b);
      unsigned bits = 8 * table.entrySize;
      if (table.isSigned && bits < 64 && (entry >> (bits - 1)) & 1) entry |= ~uint64_t(0) << bits;
      uint64_t target = table.base + (entry << table.shift);
      if (target < start || target >= limit) break;
      furthest = std::max(furthest, target);
    }
    return furthest;
  }

  void sweep(const CodeRegion &region) {
    uint64_t pos = region.rva;
    while (pos < region.end()) {
      auto it = starts_.lower_bound(pos);
      uint64_t next = it != starts_.end() && it->first < region.end() ? it->first : region.end();
      uint64_t code = skipFill(pos, next);
      if (code < next) {
        // Code before the next start that no known function reaches.
        if (insideTableExtent(code)) {
          pos = code + 1;
          continue;
        }
        it = starts_.try_emplace(code, Start{.foundBy = FoundBy::Gap}).first;
      } else if (next == region.end()) {
        break;
      }
      uint64_t start = it->first;
      Start &s = it->second;
      if (s.tableSize) {
        pos = std::max(pos, start + s.tableSize);
        continue;
      }
      s.weak = false;  // a pointer target where no control flow runs: accepted
      walk(it);
      // Code in a gap that runs into bytes that do not decode, or branches out of the code, is
      // data in the code section (mingw's constructor lists, literal pools, Arm64 asm tables).
      if (s.end <= start || (s.foundBy == FoundBy::Gap && !s.endsCleanly)) {
        found_.clear();
        // The rest of that data is data too (a -1 that opens a constructor list, then the
        // pointers after it, decodes as a call or jump from its last byte on): code resumes
        // after fill, or at the next aligned address.
        pos = s.foundBy == FoundBy::Gap ? skipData(start + 1, next) : std::max(s.end, start + 1);
        starts_.erase(it);
        continue;
      }
      for (const Target &t : found_)
        if (t.rva >= s.end && !t.weak) note(t);  // behind the sweep or inside itself: not a start
      found_.clear();
      worklist_.clear();
      pos = s.end;
      // Pointer targets that its control flow ran over are labels inside it.
      for (auto inner = starts_.upper_bound(start); inner != starts_.end() && inner->first < s.end;)
        inner = inner->second.weak ? starts_.erase(inner) : std::next(inner);
    }
  }

  FlowDecoder &decoder_;
  std::vector<CodeRegion> regions_;
  std::vector<std::pair<uint64_t, uint64_t>> executable_;
  std::function<llvm::ArrayRef<uint8_t>(uint64_t, uint64_t)> readBytes_;
  std::vector<std::pair<uint64_t, uint64_t>> sized_;  // table extents [begin, end), sorted
  std::vector<uint64_t> sizedMaxEnd_;                 // the furthest end among sized_[0..i]
  std::map<uint64_t, Start> starts_;
  std::vector<uint64_t> worklist_;
  std::vector<Target> found_;
};

}  // namespace

namespace {

// Calls visit(begin, end) for each gap the sorted ranges leave in the regions, in address order,
// until it returns false.
template <typename Visit>
void forEachGap(const std::vector<CodeRegion> &regions, const std::vector<std::pair<uint64_t, uint64_t>> &sortedRanges,
                Visit visit) {
  for (const CodeRegion &region : regions) {
    uint64_t pos = region.rva;
    auto it = std::lower_bound(sortedRanges.begin(), sortedRanges.end(), std::make_pair(region.rva, uint64_t(0)));
    for (;; ++it) {
      uint64_t gapEnd = it != sortedRanges.end() && it->first < region.end() ? it->first : region.end();
      if (gapEnd > pos && !visit(pos, gapEnd)) return;
      if (gapEnd == region.end()) break;
      pos = std::max(pos, it->second);
    }
  }
}

DiscoveryInput regionsOnly(const std::vector<CodeRegion> &regions) {
  DiscoveryInput input;
  input.regions = regions;
  return input;
}

}  // namespace

bool hasUncoveredCode(FlowDecoder &decoder, const DiscoveryInput &input) {
  Discovery discovery(decoder, regionsOnly(input.regions));
  std::vector<std::pair<uint64_t, uint64_t>> sized;
  for (const KnownStart &k : input.known)
    if (k.size) sized.push_back({k.rva, k.rva + k.size});
  std::sort(sized.begin(), sized.end());
  bool uncovered = false;
  forEachGap(discovery.regions(), sized, [&](uint64_t begin, uint64_t end) {
    uncovered = discovery.skipFill(begin, end) < end;
    return !uncovered;
  });
  return uncovered;
}

DiscoveryResult discoverFunctions(FlowDecoder &decoder, const DiscoveryInput &input) {
  return Discovery(decoder, input).run();
}

uint64_t fillBetween(FlowDecoder &decoder, const std::vector<CodeRegion> &regions,
                     const std::vector<std::pair<uint64_t, uint64_t>> &sortedRanges) {
  Discovery discovery(decoder, regionsOnly(regions));
  uint64_t fill = 0;
  forEachGap(discovery.regions(), sortedRanges, [&](uint64_t begin, uint64_t end) {
    fill += discovery.skipFill(begin, end) - begin;
    return true;
  });
  return fill;
}

}  // namespace hotforge::codeflow
