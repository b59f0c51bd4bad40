// buildPatchImage: lays out the carried code and data, turns every binding into a fixup, chooses
// each redirection, and hands the result to the container writer of the base's format.
#include "emitter_internal.h"

#include "hotforge/core/machine_target.h"

#include <fmt/core.h>
#include <llvm/ADT/StringExtras.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/Path.h>
#include <llvm/Support/TimeProfiler.h>

#include <algorithm>
#include <map>
#include <set>

namespace hotforge {

namespace emitter {
namespace {

class Planner final : public PlannedImage {
public:
  Planner(const Image &base, const Image &patched, const Diff &diff, const BuildOptions &options)
      : base_(base), patched_(patched), diff_(diff), options_(options) {}

  llvm::Expected<PatchImage> run() {
    if (llvm::Error e = refuseRestarts()) return e;
    if (base_.format != patched_.format || base_.machine != patched_.machine)
      return makeError("the base and the patched build differ in format or machine");
    target_ = &machineTarget(base_.machine);
    for (const Relocation &r : patched_.relocations) relocated_.push_back(r.rva);
    std::sort(relocated_.begin(), relocated_.end());

    image_.format = base_.format;
    image_.machine = base_.machine;
    image_.sequence = options_.sequence;
    identify();
    layOutCode();
    bindReferences();
    if (llvm::Error e = chooseRedirects()) return e;
    writer_ = containerWriter(image_.format);
    writer_->addUnwindCode(*this);
    if (!problems_.empty()) {
      BuildRefusal refusal;
      std::set<std::pair<std::string, std::string>> listed;
      for (Refusal &r : problems_)
        if (listed.insert({r.rule, r.reason}).second) refusal.refusals.push_back(std::move(r));
      return llvm::make_error<RefusalError>(std::move(refusal));
    }
    if (llvm::Error e = finishSections()) return e;
    if (llvm::Error written = writer_->write(*this)) return written;
    return std::move(image_);  // a member: not moved implicitly
  }

  // What the container writer asks.
  const Image &base() const override { return base_; }
  const Image &patched() const override { return patched_; }
  PatchImage &image() override { return image_; }
  std::vector<std::pair<uint64_t, uint64_t>> carriedFunctions() const override {
    std::vector<std::pair<uint64_t, uint64_t>> carried;
    for (auto &[patchedRva, placed] : functionRva_) carried.push_back({patchedRva, placed.first});
    return carried;
  }
  std::optional<uint64_t> baseCounterpart(uint64_t patchedRva) override { return baseCounterpart(patchedRva, 0); }

private:
  llvm::Error refuseRestarts() {
    BuildRefusal refusal{true, {}};
    for (const Change &c : diff_.changes)
      if (c.verdict == Verdict::NeedsRestart) refusal.refusals.push_back({c.rule, c.name, c.reason});
    if (refusal.refusals.empty()) return llvm::Error::success();
    return llvm::make_error<RefusalError>(std::move(refusal));
  }

  void refuse(const char *rule, std::string reason, std::optional<std::string> name = std::nullopt) override {
    problems_.push_back({rule, std::move(name), std::move(reason)});
  }
  // The refusals of a part that reports them as errors (unwind data).
  void refuse(llvm::Error error) override {
    if (std::optional<BuildRefusal> refusal = takeRefusal(error))
      problems_.insert(problems_.end(), refusal->refusals.begin(), refusal->refusals.end());
    else refuse(rule::kUnwindNotCarried, errorText(std::move(error)));
  }

  void identify() {
    PatchBaseline &b = image_.baseline;
    b.fileName = llvm::sys::path::filename(base_.path).str();
    b.sha256 = base_.identity.sha256;
    b.buildId = base_.identity.buildId;
    b.timeDateStamp = base_.identity.timeDateStamp;
    b.checkSum = base_.identity.checkSum;
    b.sizeOfImage = base_.identity.sizeOfImage;
  }

  // Carried functions first, 16-aligned, in patched-address order.
  void layOutCode() {
    text_.name = ".text";
    text_.rva = kPageSize;
    text_.permissions = {true, false, true};
    for (const FunctionBindings &fb : diff_.bindings) {
      const Function &f = patched_.functions[fb.patched];
      llvm::ArrayRef<uint8_t> code = patched_.bytesAt(f.range.rva, f.range.size);
      align(text_, 16);
      placeSafely(code, 16);
      uint32_t rva = text_.rva + uint32_t(text_.bytes.size());
      text_.bytes.insert(text_.bytes.end(), code.begin(), code.end());
      functionRva_[f.range.rva] = {rva, f.range.size};
      image_.functions.push_back({f.name, rva, uint32_t(f.range.size), f.range.rva, !fb.base});
      addBranchIslands(f, rva, fb.references);
    }
  }

  // A short branch out of a carried function (gcc's jmp rel8 tail call to a neighbour) cannot
  // reach its target from the image: it is re-aimed at an island right after the function, a
  // jmp rel32 that a fixup aims at the target (as lld's range-extension thunks). bindOne fills it.
  void addBranchIslands(const Function &f, uint32_t functionRva, const std::vector<BoundReference> &references) {
    for (const BoundReference &r : references) {
      std::optional<BranchIsland> island = target_->islandFor(r.field.kind);
      if (!island || f.range.contains(r.target)) continue;
      uint32_t at = text_.rva + uint32_t(text_.bytes.size());
      if (at - (functionRva + r.offset + r.field.instructionSize) > uint32_t(INT8_MAX)) continue;  // bindOne refuses it
      text_.bytes.insert(text_.bytes.end(), island->bytes.begin(), island->bytes.end());
      islands_[functionRva + r.offset] = at;
    }
  }

  // Moves the end of .text on by `step`-byte fill until `code` placed there is safe to run
  // (hazardousPlacement); a page holds 4096 / step places, of which a function's few hazards
  // rule out few.
  void placeSafely(llvm::ArrayRef<uint8_t> code, size_t step) {
    for (size_t tries = 0; tries < kPageSize / step; ++tries) {
      if (!target_->hazardousPlacement(code, text_.rva + text_.bytes.size())) return;
      text_.bytes.resize(text_.bytes.size() + step, fillByte());
    }
  }

  static void align(PatchSection &s, size_t alignment) {
    s.bytes.resize(alignTo(s.bytes.size(), alignment), s.permissions.execute ? fillByte() : 0);
  }
  static uint8_t fillByte() { return 0; }

  // The image RVA of a patched address inside a carried function.
  std::optional<uint32_t> carriedRva(uint64_t patchedRva) const {
    auto it = functionRva_.upper_bound(patchedRva);
    if (it == functionRva_.begin()) return std::nullopt;
    --it;
    if (patchedRva - it->first >= it->second.second && patchedRva != it->first) return std::nullopt;
    return uint32_t(it->second.first + (patchedRva - it->first));
  }

  // Copies patched bytes [rva, rva+size) into the image once, with a fixup for every pointer in
  // them; returns the copy's RVA.
  uint32_t copyBlob(uint64_t rva, uint64_t size, bool writable) {
    auto key = std::make_pair(rva, writable);
    if (auto it = blobs_.find(key); it != blobs_.end()) return it->second;
    if (auto reach = copyReach_.find(rva); reach != copyReach_.end()) size = std::max(size, reach->second - rva);
    llvm::ArrayRef<uint8_t> bytes = patched_.bytesAt(rva, size);
    if (!writable && bytes.size() != size) bytes = {};
    uint32_t at = 0;
    if (!writable) {
      rodata_.bytes.resize(alignTo(rodata_.bytes.size(), 16));
      at = uint32_t(rodata_.bytes.size());
      rodata_.bytes.insert(rodata_.bytes.end(), bytes.begin(), bytes.end());
      rodata_.bytes.resize(at + size);
    } else if (!bytes.empty()) {
      data_.bytes.resize(alignTo(data_.bytes.size(), 16));
      at = uint32_t(data_.bytes.size());
      data_.bytes.insert(data_.bytes.end(), bytes.begin(), bytes.end());
    } else {
      bssSize_ = alignTo(bssSize_, 16);
      at = uint32_t(bssSize_);
      bssSize_ += size;
    }
    uint32_t placeholder = (!writable ? 1u : !bytes.empty() ? 2u : 3u) << 28 | at;  // section tag until laid out
    blobs_[key] = placeholder;  // before the pointers: they may point back into this copy
    for (auto slot = diff_.dataPointers.lower_bound(rva); slot != diff_.dataPointers.end() && slot->first < rva + size;
         ++slot)
      bindPointer(placeholder + uint32_t(slot->first - rva), rva, slot->second);
    return placeholder;
  }

  // A Data64 fixup for a pointer at `site` (a placeholder RVA) in the copy of the patched data at
  // `copied`. A refusal names the data, once however many of its pointers it concerns.
  void bindPointer(uint32_t site, uint64_t copied, const Diff::DataPointer &pointer) {
    const Binding &b = pointer.binding;
    PatchFixup fixup;
    fixup.site = site;
    fixup.kind = FixupKind::Data64;
    switch (b.kind) {
    case Binding::Kind::Function:
      if (std::optional<uint32_t> rva = carriedRva(pointer.target)) {
        fixup.space = FixupSpace::Image;
        fixup.target = *rva;
        break;
      }
      refuse(rule::kDataPointsAtFunction,
             fmt::format("the data at patched rva {:#x} points at a function that is not in the patch", copied));
      return;
    case Binding::Kind::Base:
      fixup.space = FixupSpace::Base;
      fixup.target = b.address;
      break;
    case Binding::Kind::Constant:
    case Binding::Kind::NewData:
      fixup.space = FixupSpace::Image;
      fixup.target = copyBlob(b.address, b.size, b.kind == Binding::Kind::NewData) + (pointer.target - b.address);
      break;
    case Binding::Kind::Import:  // the symbol's own address, as the dynamic loader would write it
      fixup.space = FixupSpace::Import;
      fixup.target = importIndex(b);
      break;
    default:
      refuse(rule::kDataPointerUnbound,
             fmt::format("the data at patched rva {:#x} holds a pointer that cannot be bound: {}", copied,
                         b.note.empty() ? std::string(bindingKindName(b.kind)) : b.note));
      return;
    }
    pending_.push_back(fixup);
  }

  void bindReferences() {
    rodata_.name = ".rodata";
    rodata_.permissions = {true, false, false};
    data_.name = ".data";
    data_.permissions = {true, true, false};
    for (const FunctionBindings &fb : diff_.bindings) keepOffsetsApart(patched_.functions[fb.patched], fb.references);
    for (const FunctionBindings &fb : diff_.bindings) {
      const Function &f = patched_.functions[fb.patched];
      uint32_t functionRva = functionRva_[f.range.rva].first;
      for (const OutOfLineInstruction &moved : fb.outOfLine)
        llvm::support::endian::write32le(&text_.bytes[functionRva - text_.rva + moved.offset], moved.word);
      for (const BoundReference &r : fb.references) bindOne(f, functionRva, r);
    }
    for (const IslandReach &reach : islandReaches_) {
      if (reachThroughIsland(*reach.function, *reach.reference)) continue;
      bool toBase = reach.reference->binding.kind == Binding::Kind::Base;
      refuse(rule::kOffsetNotRewritable,
             fmt::format("{} +{:#x}: an offset from an address of {} reaches {}, through an instruction that cannot "
                         "be rewritten to reach it",
                         reach.function->name.value_or("function"), reach.reference->offset,
                         toBase ? "carried data" : "the base", toBase ? "data of the base" : "data the patch carries"),
             reach.function->name);
    }
  }

  // Code that adds an offset to an address it formed (Arm64 section anchors: ADRP+ADD of the
  // anchor, then ADD #off) reaches the object at that offset with no fixup of its own: it lands
  // wherever the anchor was placed. So a copied anchor is copied together with every object
  // reached from it (copyReach_); an anchor left in the base whose reached object the base holds
  // at another distance gets that distance in the instruction (reaimOffset). An access from a
  // copied anchor to data of the base, or from an anchor of the base to copied data, goes through
  // an island that forms the reached address itself (the differ copies read-only anchors with
  // what they reach, so this is for variables); after an index in a register it cannot, and is
  // refused.
  void keepOffsetsApart(const Function &f, const std::vector<BoundReference> &references) {
    for (const BoundReference &r : references) {
      if (r.field.kind != FixupKind::None || !r.offsetFrom) continue;
      for (const BoundReference &former : references) {
        if (former.field.kind == FixupKind::None || former.target != r.offsetFrom) continue;
        const Binding &anchor = former.binding, &reached = r.binding;
        using Kind = Binding::Kind;
        bool copied = anchor.kind == Kind::Constant || anchor.kind == Kind::NewData;
        if ((anchor.kind == reached.kind && anchor.address == reached.address) || anchor.kind == Kind::Unbound ||
            anchor.kind == Kind::Import || reached.kind == Kind::Unbound || reached.kind == Kind::Import)
          continue;  // one object (a field of a struct), or refused anyway
        std::string where = fmt::format("{} +{:#x}", f.name.value_or(fmt::format("function at {:#x}", f.range.rva)),
                                        r.offset);
        if (copied && reached.kind == anchor.kind && r.target >= anchor.address) {
          uint64_t &reach = copyReach_[anchor.address];
          reach = std::max({reach, anchor.address + anchor.size, reached.address + reached.size});
        } else if (anchor.kind == Kind::Base && reached.kind == Kind::Base &&
                   reached.address != anchor.address + (r.target - r.offsetFrom) &&
                   !reaimOffset(f, r, reached.address - anchor.address)) {
          refuse(rule::kOffsetBeyondEncoding,
                 where + ": an offset from an address in the base reaches data the base holds elsewhere, beyond what "
                         "the instruction can encode",
                 f.name);
        } else if ((copied && reached.kind == Kind::Base) ||
                   (anchor.kind == Kind::Base && (reached.kind == Kind::Constant || reached.kind == Kind::NewData))) {
          // gcc's add_sample of scenario 5 on Arm64 reaches the base's g_total at the new
          // g_rejected + 4: in the image that offset would read the bytes after the copy.
          if (r.indexed)
            refuse(rule::kIndexedOffsetSplits,
                   where + ": an access at an offset from an address plus an index lands on data kept apart from that "
                           "address (one in the base, the other in the patch)",
                   f.name);
          else
            islandReaches_.push_back({&f, &r});
        }
        // Else the anchor and what it reaches stay in the base: code reads the base's bytes at the
        // offset, as the base's own code does.
        break;  // every reference to the anchor (its ADRP and its ADD) is bound alike
      }
    }
  }

  // An access at an offset from an anchor that lands on data kept elsewhere (the base's, or a
  // copy in the image) becomes a jump to an island that forms that address itself, does the
  // access and jumps back.
  bool reachThroughIsland(const Function &f, const BoundReference &r) {
    const Binding &reached = r.binding;
    uint32_t site = functionRva_[f.range.rva].first + r.offset;
    std::optional<AccessIsland> island = target_->accessIsland(textAt(site));
    if (!island) return false;
    BranchIsland jump = target_->directJump();
    align(text_, jump.bytes.size());
    placeSafely(island->code, jump.bytes.size());
    uint32_t at = text_.rva + uint32_t(text_.bytes.size()), back = at + uint32_t(island->code.size());
    text_.bytes.insert(text_.bytes.end(), island->code.begin(), island->code.end());
    text_.bytes.insert(text_.bytes.end(), jump.bytes.begin(), jump.bytes.end());
    if (!target_->writeField(jump.field, textAt(back), back, site + island->resume)) return false;
    std::copy(jump.bytes.begin(), jump.bytes.end(), textAt(site).begin());
    if (!target_->writeField(jump.field, textAt(site), site, at)) return false;
    for (const auto &[offset, field] : island->fields) {
      PatchFixup fixup;
      fixup.site = at + offset;
      fixup.kind = field.kind;
      fixup.scale = field.scale;
      if (reached.kind == Binding::Kind::Base) {
        fixup.target = reached.address;
        fixup.space = FixupSpace::Base;
      } else {
        fixup.target = copyBlob(reached.address, reached.size, reached.kind == Binding::Kind::NewData) +
                       uint32_t(r.target - reached.address);
        fixup.space = FixupSpace::Image;
      }
      pending_.push_back(fixup);
    }
    return true;
  }

  // Both in the base, at another distance there (the base laid its variables out differently):
  // the copied instruction gets the base's distance.
  bool reaimOffset(const Function &f, const BoundReference &r, uint64_t distance) {
    return target_->reaimOffset(textAt(functionRva_[f.range.rva].first + r.offset), r.target - r.offsetFrom, distance);
  }

  void bindOne(const Function &f, uint32_t functionRva, const BoundReference &r) {
    std::string where = fmt::format("{} +{:#x}", f.name.value_or(fmt::format("function at {:#x}", f.range.rva)), r.offset);
    const InstructionField &field = r.field;
    if (field.kind == FixupKind::None) return;  // follows from another reference
    const Binding &b = r.binding;
    PatchFixup fixup;
    fixup.site = functionRva + r.offset;
    fixup.fieldOffset = field.fieldOffset;
    fixup.instructionSize = field.instructionSize;
    fixup.scale = field.scale;
    switch (b.kind) {
    case Binding::Kind::Local:
      if (target_->meaning(field.kind) == FieldMeaning::Distance) return;  // the function moved whole
      fixup.space = FixupSpace::Image;
      fixup.target = functionRva + (r.target - f.range.rva);
      break;
    case Binding::Kind::Function: {
      std::optional<uint32_t> rva = carriedRva(b.address);
      if (!rva) {
        refuse(rule::kFunctionNotCarried, where + ": its target function is not in the patch", f.name);
        return;
      }
      fixup.space = FixupSpace::Image;
      fixup.target = *rva;
      break;
    }
    case Binding::Kind::Base:
      if (!target_->reachesBase(field.kind)) {
        // Too short a reach to find the base from a mapped image. Plain read-only data travels as
        // a copy (it cannot differ from the base's); otherwise the machine may widen the reference.
        if (const DataObject *o = copyableObjectAt(r.target)) {
          fixup.space = FixupSpace::Image;
          fixup.target = copyBlob(o->range.rva, o->range.size, false) + (r.target - o->range.rva);
          break;
        }
        if (widenToBase(functionRva, r, b.address)) return;
        refuse(rule::kOutOfReach, where + ": an ADR or literal load of base data out of its reach", f.name);
        return;
      }
      fixup.space = FixupSpace::Base;
      fixup.target = b.address;
      break;
    case Binding::Kind::Constant:
    case Binding::Kind::NewData: {
      bool writable = b.kind == Binding::Kind::NewData;
      fixup.space = FixupSpace::Image;
      fixup.target = copyBlob(b.address, b.size, writable) + (r.target - b.address);
      break;
    }
    case Binding::Kind::JumpTable: {
      fixup.space = FixupSpace::Image;
      fixup.target = copyJumpTable(b.address, b.size, f, functionRva) + (r.target - b.address);
      break;
    }
    case Binding::Kind::Import: {
      // A call or jump reaches the symbol through a stub in the image; a load of its slot (GOT,
      // IAT) reads the stub's slot, which holds the symbol's address.
      const Section *s = patched_.sectionAt(b.address);
      uint32_t stub = importStub(b);
      fixup.space = FixupSpace::Image;
      fixup.target = s && s->permissions.execute ? stub : stub + absoluteJumpSlotOffset();
      break;
    }
    case Binding::Kind::Unbound:
      refuse(rule::kUnboundReference, where + ": " + b.note, f.name);
      return;
    }
    fixup.kind = field.kind;
    if (std::optional<BranchIsland> island = target_->islandFor(field.kind)) {
      auto at = islands_.find(fixup.site);
      if (at == islands_.end()) {
        refuse(rule::kShortBranchNoIsland,
               where + ": a short branch out of the function is too far from the function's end for a branch island",
               f.name);
        return;
      }
      if (Status aimed = target_->writeField(field, textAt(fixup.site), fixup.site, at->second); !aimed)
        return refuse(rule::kShortBranchNotReaimed, where + ": a short branch " + aimed.error(), f.name);
      fixup.site = at->second;
      fixup.kind = island->field.kind;
      fixup.fieldOffset = island->field.fieldOffset;
      fixup.instructionSize = island->field.instructionSize;
    }
    target_->adoptField(field, textAt(fixup.site));
    pending_.push_back(fixup);
  }

  bool widenToBase(uint32_t functionRva, const BoundReference &r, uint64_t baseTarget) {
    auto fields = target_->widen(textAt(functionRva), r.offset, r.field);
    for (const auto &[offset, field] : fields) {
      PatchFixup f;
      f.site = functionRva + offset;
      f.kind = field.kind;
      f.target = baseTarget;
      pending_.push_back(f);
    }
    return !fields.empty();
  }

  // A read-only object without relocated pointers: a copy of it is as good as the base's.
  const DataObject *copyableObjectAt(uint64_t rva) const {
    const Section *s = patched_.sectionAt(rva);
    if (!s || s->permissions.write) return nullptr;
    for (const DataObject &d : patched_.dataObjects)
      if (!d.threadLocal && d.sizeKnown && d.range.contains(rva)) {
        auto r = std::lower_bound(relocated_.begin(), relocated_.end(), d.range.rva);
        return r != relocated_.end() && *r < d.range.end() ? nullptr : &d;
      }
    return nullptr;
  }

  // x64 switch tables hold 32-bit offsets from the table to the cases: recompute them for where
  // the function and the table land in the image.
  uint32_t copyJumpTable(uint64_t rva, uint64_t size, const Function &f, uint32_t functionRva) {
    auto key = std::make_pair(rva, false);
    if (auto it = blobs_.find(key); it != blobs_.end()) return it->second;
    rodata_.bytes.resize(alignTo(rodata_.bytes.size(), 16));
    uint32_t at = uint32_t(rodata_.bytes.size());
    llvm::ArrayRef<uint8_t> entries = patched_.bytesAt(rva, size);
    for (uint64_t i = 0; i + 4 <= entries.size(); i += 4) {
      int32_t entry = int32_t(llvm::support::endian::read32le(entries.data() + i));
      jumpTableEntries_.push_back({at + uint32_t(i), functionRva + uint32_t(rva + entry - f.range.rva), at});
    }
    rodata_.bytes.resize(at + size);
    uint32_t placeholder = 1u << 28 | at;
    blobs_[key] = placeholder;
    return placeholder;
  }

  // What the loader writes at each changed function's entry, checked for safety.
  llvm::Error chooseRedirects() {
    for (const FunctionBindings &fb : diff_.bindings) {
      if (!fb.base || fb.splitPart) continue;  // parts are reached only through their (redirected) function
      const Function &bf = base_.functions[*fb.base];
      const Function &pf = patched_.functions[fb.patched];
      PatchRedirect r;
      r.name = bf.name ? bf.name : pf.name;
      r.baseRva = uint32_t(bf.range.rva);
      r.baseSize = uint32_t(bf.range.size);
      r.patchRva = functionRva_[pf.range.rva].first;
      llvm::ArrayRef<uint8_t> code = base_.bytesAt(bf.range.rva, bf.range.size);
      std::string name = r.name.value_or(fmt::format("the function at base rva {:#x}", bf.range.rva));
      RedirectSite site{code, bf.range.rva, bf.range.size, fb.baseBranchFloor,
                        [&fb](uint64_t rva, uint32_t bytes) { return isFill(fb.baseFill, rva, bytes); }, name};
      if (Status chosen = target_->chooseRedirect(site, r); !chosen) {
        refuse(rule::kRedirectDoesNotFit, chosen.error(), r.name);
        continue;
      }
      // Its own branches into the overwritten bytes would run the jump mid-way: sound only while
      // no thread is inside the function, which the loader then waits for.
      r.quiescent = site.branchFloor < r.entryOffset + redirectSize(r.kind);
      // `expected` covers the overwritten bytes and the function's first 16 (to tell builds apart).
      int64_t from = std::min<int64_t>(0, r.overwrittenOffset);
      int64_t to = std::max<int64_t>(r.overwrittenOffset + int64_t(r.overwrittenSize),
                                     std::min<int64_t>(code.size(), std::max<int64_t>(16, r.overwrittenSize)));
      to = std::min<int64_t>(to, from + int64_t(kMaxExpectedBytes));
      r.paddingBefore = uint8_t(-from);
      llvm::ArrayRef<uint8_t> expected = base_.bytesAt(bf.range.rva + from, uint64_t(to - from));
      r.expected.assign(expected.begin(), expected.end());
      r.stubRva = addAbsoluteJump(r.patchRva, FixupSpace::Image);
      image_.redirects.push_back(std::move(r));
    }
    return llvm::Error::success();
  }

  // Whether the `bytes` bytes at base rva `rva` lie in the fill the diff found near a function.
  static bool isFill(const std::vector<AddressRange> &fill, uint64_t rva, uint32_t bytes) {
    return std::any_of(fill.begin(), fill.end(),
                       [&](const AddressRange &run) { return rva >= run.rva && rva + bytes <= run.end(); });
  }

  // The index of a new import in the image's import table (in order of first use).
  uint32_t importIndex(const Binding &b) {
    PatchImport import{b.symbol, b.version, b.library};
    auto it = std::find(image_.imports.begin(), image_.imports.end(), import);
    if (it != image_.imports.end()) return uint32_t(it - image_.imports.begin());
    image_.imports.push_back(std::move(import));
    return uint32_t(image_.imports.size() - 1);
  }

  // The stub in .text that jumps to a new import, through a slot the loader fills with its address.
  uint32_t importStub(const Binding &b) {
    uint32_t index = importIndex(b);
    auto [it, added] = importStubs_.try_emplace(index, 0);
    if (added) it->second = addAbsoluteJump(index, FixupSpace::Import);
    return it->second;
  }

  uint32_t absoluteJumpSlotOffset() const { return uint32_t(target_->absoluteJump().size()); }

  // An absolute jump in .text to `target` (an image or base RVA, or an import), through an 8-byte
  // slot the loader fills: the stub of a redirect or an import, or a veneer for a branch that
  // cannot reach.
  uint32_t addAbsoluteJump(uint64_t target, FixupSpace space) override {
    align(text_, 16);
    uint32_t at = text_.rva + uint32_t(text_.bytes.size());
    text_.bytes.insert(text_.bytes.end(), target_->absoluteJump().begin(), target_->absoluteJump().end());
    uint32_t slot = text_.rva + uint32_t(text_.bytes.size());
    text_.bytes.resize(text_.bytes.size() + 8);
    PatchFixup f;
    f.site = slot;
    f.kind = FixupKind::Data64;
    f.space = space;
    f.target = target;
    image_.fixups.push_back(f);
    return at;
  }

  llvm::Error finishSections() {
    // Veneers for branches into the base that may be out of reach once the image is mapped.
    std::map<uint64_t, uint32_t> veneers;
    for (PatchFixup &f : pending_) {
      InstructionField field{f.kind, f.fieldOffset, f.instructionSize, f.scale};
      if (f.space != FixupSpace::Base || !target_->fieldBits(field) || !target_->wantsVeneer(field, textAt(f.site)))
        continue;
      auto [it, added] = veneers.try_emplace(f.target, 0);
      if (added) it->second = addAbsoluteJump(f.target, FixupSpace::Base);
      f.veneer = it->second;
    }
    // Place .rodata, .data and .bss after the code, each on its own pages.
    uint32_t next = uint32_t(alignTo(text_.rva + text_.bytes.size(), kPageSize));
    rodata_.rva = next;
    next = uint32_t(alignTo(next + std::max<size_t>(rodata_.bytes.size(), 1), kPageSize));
    data_.rva = next;
    data_.memorySize = uint32_t(data_.bytes.size());
    next = uint32_t(alignTo(next + std::max<size_t>(data_.bytes.size(), 1), kPageSize));
    PatchSection bss{".bss", next, {}, uint32_t(bssSize_), {true, true, false}};
    next = uint32_t(alignTo(next + std::max<uint64_t>(bssSize_, 1), kPageSize));
    auto place = [&](uint64_t placeholder) -> uint64_t {
      uint32_t tag = uint32_t(placeholder >> 28), offset = uint32_t(placeholder & 0x0fffffff);
      if (tag == 1) return rodata_.rva + offset;
      if (tag == 2) return data_.rva + offset;
      if (tag == 3) return bss.rva + offset;
      return placeholder;
    };
    for (PatchFixup &f : pending_) {
      if (f.space == FixupSpace::Image && f.target >= (1u << 28)) f.target = place(f.target);
      if (f.site >= (1u << 28)) f.site = uint32_t(place(f.site));  // pointers in copied data
      image_.fixups.push_back(f);
    }
    for (const JumpTableEntry &e : jumpTableEntries_) {
      int32_t value = int32_t(int64_t(e.caseRva) - int64_t(rodata_.rva + e.tableOffset));
      for (int i = 0; i < 4; ++i) rodata_.bytes[e.entryOffset + i] = uint8_t(uint32_t(value) >> (8 * i));
    }
    if (llvm::Error e = checkSharedPages()) return e;
    text_.memorySize = uint32_t(text_.bytes.size());
    rodata_.memorySize = uint32_t(rodata_.bytes.size());
    image_.sections.push_back(text_);
    if (!rodata_.bytes.empty()) image_.sections.push_back(rodata_);
    if (!data_.bytes.empty()) image_.sections.push_back(data_);
    if (bss.memorySize) image_.sections.push_back(bss);
    if (llvm::Error e = writer_->addUnwindSections(*this, next)) return e;
    image_.imageSize = 0;
    for (const PatchSection &s : image_.sections)
      image_.imageSize = std::max<uint32_t>(image_.imageSize, uint32_t(alignTo(s.rva + s.memorySize, kPageSize)));
    std::sort(image_.fixups.begin(), image_.fixups.end(), [](const PatchFixup &a, const PatchFixup &b) {
      return std::tie(a.site, a.kind, a.target) < std::tie(b.site, b.kind, b.target);
    });
    image_.fixups.erase(std::unique(image_.fixups.begin(), image_.fixups.end(),
                                    [](const PatchFixup &a, const PatchFixup &b) {
                                      return a.site == b.site && a.kind == b.kind && a.target == b.target &&
                                             a.space == b.space;
                                    }),
                        image_.fixups.end());
    image_.sizes.code = text_.bytes.size();
    image_.sizes.data = rodata_.bytes.size() + data_.bytes.size() + bssSize_;
    return llvm::Error::success();
  }

  // The carried code from image rva `rva` to the end of .text.
  std::span<uint8_t> textAt(uint32_t rva) { return std::span<uint8_t>(text_.bytes).subspan(rva - text_.rva); }

  // One ADRP serving several accesses must point at one page for all of them.
  llvm::Error checkSharedPages() {
    std::map<uint32_t, std::set<std::pair<FixupSpace, uint64_t>>> pages;
    for (const PatchFixup &f : image_.fixups)
      if (target_->meaning(f.kind) == FieldMeaning::Page) pages[f.site].insert({f.space, f.target & ~uint64_t(kPageSize - 1)});
    for (auto &[site, targets] : pages)
      if (targets.size() > 1)
        return emitter::refuse(rule::kSharedPageSplits,
                               "the ADRP at image rva {:#x} serves accesses that land on different pages once patched "
                               "(needs restart)",
                               site);
    return llvm::Error::success();
  }

  // Where the base holds what the patched build holds at `patchedRva`: a shared object, a matched
  // function, or a pointer slot (GOT entry) that points at such a thing.
  std::optional<uint64_t> baseCounterpart(uint64_t patchedRva, int depth) {
    auto it = std::upper_bound(diff_.dataPairs.begin(), diff_.dataPairs.end(), patchedRva,
                               [](uint64_t a, const Diff::DataPair &p) { return a < p.patched.rva; });
    if (it != diff_.dataPairs.begin()) {
      --it;
      if (patchedRva - it->patched.rva < std::max<uint64_t>(it->patched.size, 1))
        return it->baseRva + (patchedRva - it->patched.rva);
    }
    if (const Function *f = patched_.functionAt(patchedRva))
      for (const FunctionPair &pair : diff_.pairs)
        if (&patched_.functions[pair.patched] == f) return base_.functions[pair.base].range.rva + (patchedRva - f->range.rva);
    if (depth > 0) return std::nullopt;
    for (const Relocation &r : patched_.relocations) {
      if (r.rva != patchedRva) continue;
      std::optional<uint64_t> pointee;
      if (!r.symbol) pointee = baseCounterpart(uint64_t(r.addend) - patched_.imageBase, depth + 1);
      for (const Relocation &b : base_.relocations) {
        if (r.symbol ? sameSymbol(b, r) && b.type == r.type
                     : pointee && !b.symbol && uint64_t(b.addend) - base_.imageBase == *pointee)
          return b.rva;
      }
    }
    return std::nullopt;
  }

  struct JumpTableEntry {
    uint32_t entryOffset;  // in .rodata
    uint32_t caseRva;      // image RVA of the case label
    uint32_t tableOffset;  // of the table start, in .rodata
  };

  const Image &base_, &patched_;
  const Diff &diff_;
  BuildOptions options_;
  const MachineTarget *target_ = nullptr;
  std::vector<uint64_t> relocated_;  // RVAs of the patched build's relocations, sorted
  PatchImage image_;
  PatchSection text_, rodata_, data_;
  uint64_t bssSize_ = 0;
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> functionRva_;  // patched rva -> (image rva, size)
  std::map<std::pair<uint64_t, bool>, uint32_t> blobs_;
  struct IslandReach {
    const Function *function;
    const BoundReference *reference;  // its binding: what it reaches
  };
  std::vector<IslandReach> islandReaches_;  // accesses from anchors to data kept apart, rewritten after binding
  std::map<uint64_t, uint64_t> copyReach_;  // patched rva of a copied anchor -> end of what code reaches from it
  std::vector<JumpTableEntry> jumpTableEntries_;
  std::vector<PatchFixup> pending_;
  std::vector<Refusal> problems_;
  std::unique_ptr<ContainerWriter> writer_;
  std::map<uint32_t, uint32_t> islands_;                    // image rva of a short branch out -> its island
  std::map<uint32_t, uint32_t> importStubs_;                // import index -> its stub's image rva
};

}  // namespace
}  // namespace emitter

llvm::Expected<PatchImage> buildPatchImage(const Image &base, const Image &patched, const Diff &diff,
                                           const BuildOptions &options) {
  llvm::TimeTraceScope scope("build patch image");
  return emitter::Planner(base, patched, diff, options).run();
}

}  // namespace hotforge
