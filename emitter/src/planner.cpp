// buildPatchImage: lays out the carried code and data, turns every binding into a fixup, chooses
// each redirection, and hands the result to the container writer of the base's format.
#include "emitter_internal.h"
#include "pe_unwind.h"

#include "hotforge/arch.h"

#include <fmt/core.h>
#include <llvm/ADT/StringExtras.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/Path.h>

#include <algorithm>
#include <map>
#include <set>

namespace hotforge {

namespace emitter {
namespace {

using differ::CodeReference;
using differ::FieldEncoding;

std::optional<FixupKind> fixupKindFor(FieldEncoding encoding) {
  switch (encoding) {
  case FieldEncoding::X64Rel32: return FixupKind::X64Rel32;
  case FieldEncoding::X64Abs64: return FixupKind::X64Abs64;
  case FieldEncoding::A64Branch26: return FixupKind::A64Branch26;
  case FieldEncoding::A64Branch19: return FixupKind::A64Branch19;
  case FieldEncoding::A64Branch14: return FixupKind::A64Branch14;
  case FieldEncoding::A64Literal19: return FixupKind::A64Literal19;
  case FieldEncoding::A64Adr21: return FixupKind::A64Adr21;
  case FieldEncoding::A64AdrPage21: return FixupKind::A64AdrPage21;
  case FieldEncoding::A64AddLo12: return FixupKind::A64AddLo12;
  case FieldEncoding::A64LdStLo12: return FixupKind::A64LdStLo12;
  case FieldEncoding::X64Rel8:
  case FieldEncoding::None: break;
  }
  return std::nullopt;
}

// Encodings whose value is a distance within the instruction stream: a reference inside the
// same function keeps its value when the function moves whole.
bool isPcRelative(FieldEncoding encoding) {
  switch (encoding) {
  case FieldEncoding::X64Rel8:
  case FieldEncoding::X64Rel32:
  case FieldEncoding::A64Branch26:
  case FieldEncoding::A64Branch19:
  case FieldEncoding::A64Branch14:
  case FieldEncoding::A64Literal19:
  case FieldEncoding::A64Adr21: return true;
  default: return false;
  }
}

constexpr uint8_t kEndbr64[] = {0xf3, 0x0f, 0x1e, 0xfa};

bool isBti(uint32_t instruction) { return (instruction & 0xffffff3f) == 0xd503241f; }

class Planner {
public:
  Planner(const Image &base, const Image &patched, const Diff &diff, const BuildOptions &options)
      : base_(base), patched_(patched), diff_(diff), options_(options) {}

  llvm::Expected<PatchImage> run() {
    if (llvm::Error e = refuseRestarts()) return e;
    if (base_.format != patched_.format || base_.machine != patched_.machine)
      return makeError("the base and the patched build differ in format or machine");
    llvm::Expected<std::unique_ptr<differ::InstructionDecoder>> decoder = differ::createInstructionDecoder(base_.machine);
    if (!decoder) return decoder.takeError();
    decoder_ = std::move(*decoder);
    relocations_.imageBase = patched_.imageBase;
    relocations_.image = &patched_;
    for (const Relocation &r : patched_.relocations) relocations_.rvas.push_back(r.rva);
    std::sort(relocations_.rvas.begin(), relocations_.rvas.end());

    image_.format = base_.format;
    image_.machine = base_.machine;
    image_.sequence = options_.sequence;
    identify();
    layOutCode();
    if (llvm::Error e = bindReferences()) return e;
    if (llvm::Error e = chooseRedirects()) return e;
    if (image_.format == Format::Pe) addHandlerStubs();
    if (!problems_.empty()) {
      BuildRefusal refusal;
      std::set<std::pair<std::string, std::string>> listed;
      for (Refusal &r : problems_)
        if (listed.insert({r.rule, r.reason}).second) refusal.refusals.push_back(std::move(r));
      return llvm::make_error<RefusalError>(std::move(refusal));
    }
    if (llvm::Error e = finishSections()) return e;
    llvm::Error written = image_.format == Format::Elf
                              ? writeElfContainer(image_)
                              : writePeContainer(image_, {&base_, &patched_, std::move(handlerStubs_)});
    if (written) return written;
    return std::move(image_);  // a member: not moved implicitly
  }

private:
  llvm::Error refuseRestarts() {
    BuildRefusal refusal{true, {}};
    for (const Change &c : diff_.changes)
      if (c.verdict == Verdict::NeedsRestart) refusal.refusals.push_back({c.rule, c.name, c.reason});
    if (refusal.refusals.empty()) return llvm::Error::success();
    return llvm::make_error<RefusalError>(std::move(refusal));
  }

  void refuse(const char *rule, std::string reason, std::optional<std::string> name = std::nullopt) {
    problems_.push_back({rule, std::move(name), std::move(reason)});
  }
  // The refusals of a part that reports them as errors (unwind data).
  void refuse(llvm::Error error) {
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
      addBranchIslands(f, rva, code);
    }
  }

  // A short branch out of a carried function (gcc's jmp rel8 tail call to a neighbour) cannot
  // reach its target from the image: it is re-aimed at an island right after the function, a
  // jmp rel32 that a fixup aims at the target (as lld's range-extension thunks). bindOne fills it.
  void addBranchIslands(const Function &f, uint32_t functionRva, llvm::ArrayRef<uint8_t> code) {
    differ::DecodedFunction decoded = decoder_->decode(code, f.range.rva, relocations_);
    for (const CodeReference &r : decoded.references) {
      if (r.encoding != FieldEncoding::X64Rel8 || f.range.contains(r.target)) continue;
      uint32_t island = text_.rva + uint32_t(text_.bytes.size());
      if (island - (functionRva + r.offset + r.size) > uint32_t(INT8_MAX)) continue;  // bindOne refuses it
      static const uint8_t jmp[] = {0xe9, 0, 0, 0, 0};
      text_.bytes.insert(text_.bytes.end(), std::begin(jmp), std::end(jmp));
      islands_[functionRva + r.offset] = island;
    }
  }

  // Moves the end of .text on by `step`-byte fill until `code` placed there is safe to run
  // (hazardousPlacement); a page holds 4096 / step places, of which a function's few hazards
  // rule out few.
  void placeSafely(llvm::ArrayRef<uint8_t> code, size_t step) {
    for (size_t tries = 0; tries < kPageSize / step; ++tries) {
      if (!decoder_->hazardousPlacement(code, text_.rva + text_.bytes.size())) return;
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

  llvm::Error bindReferences() {
    rodata_.name = ".rodata";
    rodata_.permissions = {true, false, false};
    data_.name = ".data";
    data_.permissions = {true, true, false};
    std::vector<differ::DecodedFunction> decoded;
    for (const FunctionBindings &fb : diff_.bindings) {
      const Function &f = patched_.functions[fb.patched];
      decoded.push_back(decoder_->decode(patched_.bytesAt(f.range.rva, f.range.size), f.range.rva, relocations_, true));
      if (decoded.back().references.size() != fb.references.size())
        return formatError("internal: {} decodes to {} references, the diff bound {}", f.name.value_or("function"),
                           decoded.back().references.size(), fb.references.size());
      keepOffsetsApart(f, decoded.back().references, fb.references);
    }
    for (size_t k = 0; k < diff_.bindings.size(); ++k) {
      const FunctionBindings &fb = diff_.bindings[k];
      const Function &f = patched_.functions[fb.patched];
      uint32_t functionRva = functionRva_[f.range.rva].first;
      // A branch to an instruction the linker moved out of line carries that instruction instead
      // (its veneer's way back would lead into the base); the differ decoded it so.
      for (uint32_t offset : decoded[k].instructionOffsets) {
        if (offset + 4 > f.range.size) break;
        uint8_t *word = &text_.bytes[functionRva - text_.rva + offset];
        if (std::optional<uint32_t> moved = decoder_->outOfLineInstruction(
                f.range.rva + offset, llvm::support::endian::read32le(word), patched_))
          llvm::support::endian::write32le(word, *moved);
      }
      for (size_t i = 0; i < decoded[k].references.size(); ++i)
        bindOne(f, functionRva, decoded[k].references[i], fb.references[i]);
    }
    for (const BaseReach &reach : baseReaches_)
      if (!reachBaseThroughIsland(*reach.function, reach.reference, reach.baseTarget))
        refuse(rule::kOffsetNotRewritable,
               fmt::format("{} +{:#x}: an offset from carried data reaches data of the base, through an instruction "
                           "that cannot be rewritten to reach it",
                           reach.function->name.value_or("function"), reach.reference.offset),
               reach.function->name);
    return llvm::Error::success();
  }

  // Code that adds an offset to an address it formed (Arm64 section anchors: ADRP+ADD of the
  // anchor, then ADD #off) reaches the object at that offset with no fixup of its own: it lands
  // wherever the anchor was placed. So a copied anchor is copied together with every object
  // reached from it (copyReach_); an anchor left in the base whose reached object the base holds
  // at another distance gets that distance in the instruction (reaimOffset); copied constants
  // from which code reaches data of the base are refused.
  void keepOffsetsApart(const Function &f, const std::vector<CodeReference> &references,
                        const std::vector<Binding> &bindings) {
    for (size_t i = 0; i < references.size(); ++i) {
      const CodeReference &r = references[i];
      if (r.encoding != FieldEncoding::None || !r.offsetFrom) continue;
      for (size_t j = 0; j < references.size(); ++j) {
        if (references[j].encoding == FieldEncoding::None || references[j].target != r.offsetFrom) continue;
        const Binding &anchor = bindings[j], &reached = bindings[i];
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
        } else if (copied && reached.kind == Kind::Base) {
          // gcc's add_sample of scenario 5 on Arm64 reaches the base's g_total at the new
          // g_rejected + 4: in the image that offset would read the bytes after the copy.
          baseReaches_.push_back({&f, r, reached.address});
        }
        // Else the anchor stays in the base and code reads the base's bytes at the offset, as the
        // base's own code does.
        break;  // every reference to the anchor (its ADRP and its ADD) is bound alike
      }
    }
  }

  // An access at an offset from a copied anchor that lands on data of the base (Arm64: ADD Xd, Xn,
  // #off or LDR/STR Rt, [Xn, #off]) becomes a branch to an island that forms the base address
  // itself: ADRP+ADD into Xd; ADRP into a loaded GPR, then the load from it; otherwise ADRP into
  // x16 (x17 when the access uses x16) saved on the stack around the access. The island returns
  // to the next instruction.
  bool reachBaseThroughIsland(const Function &f, const CodeReference &r, uint64_t baseTarget) {
    constexpr uint32_t kPushX16 = 0xf81f0ff0, kPopX16 = 0xf84107f0;  // str x16, [sp, #-16]! / ldr x16, [sp], #16
    uint32_t site = functionRva_[f.range.rva].first + r.offset;
    uint32_t instruction = llvm::support::endian::read32le(&text_.bytes[site - text_.rva]);
    uint32_t rt = instruction & 0x1f;
    bool isAdd = (instruction & 0xff800000u) == 0x91000000u;  // ADD Xd, Xn, #imm{, lsl #12}
    bool isLoadStore = (instruction & 0x3b000000u) == 0x39000000u;  // unsigned-offset LDR/STR/PRFM
    if ((!isAdd && !isLoadStore) || (isAdd && rt == 31)) return false;
    bool simd = instruction >> 26 & 1;
    uint32_t size = instruction >> 30, opc = instruction >> 22 & 3;
    bool gprLoad = isLoadStore && !simd && opc != 0 && !(size == 3 && opc == 2) && rt != 31;
    uint32_t scratch = isAdd || gprLoad ? rt : rt == 16 ? 17 : 16;
    std::vector<uint32_t> island;
    bool saves = !isAdd && !gprLoad;
    if (saves) island.push_back(kPushX16 - 16 + scratch);
    island.push_back(0x90000000u | scratch);  // adrp scratch, page of the base target
    size_t low = island.size();
    island.push_back(isAdd ? 0x91000000u | scratch << 5 | rt : (instruction & ~(0xfffu << 10) & ~(0x1fu << 5)) | scratch << 5);
    if (saves) island.push_back(kPopX16 - 16 + scratch);
    align(text_, 4);
    std::vector<uint8_t> bytes(island.size() * 4);
    for (size_t i = 0; i < island.size(); ++i) llvm::support::endian::write32le(&bytes[i * 4], island[i]);
    placeSafely(bytes, 4);
    uint32_t at = text_.rva + uint32_t(text_.bytes.size());
    uint32_t back = at + uint32_t(island.size()) * 4;
    island.push_back(branchTo(back, site + 4));
    for (uint32_t word : island) {
      text_.bytes.resize(text_.bytes.size() + 4);
      llvm::support::endian::write32le(&text_.bytes[text_.bytes.size() - 4], word);
    }
    llvm::support::endian::write32le(&text_.bytes[site - text_.rva], branchTo(site, at));
    PatchFixup page, offset;
    page.site = at + (saves ? 4 : 0);
    page.kind = FixupKind::A64AdrPage21;
    offset.site = at + uint32_t(low) * 4;
    offset.kind = isAdd ? FixupKind::A64AddLo12 : FixupKind::A64LdStLo12;
    offset.scale = isAdd ? 0 : uint8_t(simd ? size | (opc >> 1) << 2 : size);
    page.target = offset.target = baseTarget;
    page.space = offset.space = FixupSpace::Base;
    pending_.push_back(page);
    pending_.push_back(offset);
    return true;
  }

  static uint32_t branchTo(uint32_t from, uint32_t to) {
    return 0x14000000u | (uint32_t(int32_t(to - from) / 4) & 0x3ffffffu);
  }

  // Both in the base, at another distance there (the base laid its variables out differently):
  // the copied ADD or LDR/STR gets the base's distance in its unsigned 12-bit immediate, scaled as
  // the instruction scales it.
  bool reaimOffset(const Function &f, const CodeReference &r, uint64_t distance) {
    size_t at = functionRva_[f.range.rva].first - text_.rva + r.offset;
    uint32_t instruction = llvm::support::endian::read32le(&text_.bytes[at]);
    uint64_t immediate = (instruction >> 10) & 0xfff, patchedDistance = r.target - r.offsetFrom;
    if (immediate == 0 || patchedDistance % immediate != 0) return false;
    uint64_t scale = patchedDistance / immediate;
    if (distance % scale != 0 || distance / scale > 0xfff) return false;
    instruction = (instruction & ~(0xfffu << 10)) | uint32_t(distance / scale) << 10;
    llvm::support::endian::write32le(&text_.bytes[at], instruction);
    return true;
  }

  void bindOne(const Function &f, uint32_t functionRva, const CodeReference &r, const Binding &b) {
    std::string where = fmt::format("{} +{:#x}", f.name.value_or(fmt::format("function at {:#x}", f.range.rva)), r.offset);
    std::optional<FixupKind> kind = fixupKindFor(r.encoding);
    if (r.encoding == FieldEncoding::None) return;  // follows from another reference
    PatchFixup fixup;
    fixup.site = functionRva + r.offset;
    fixup.fieldOffset = r.fieldOffset;
    fixup.instructionSize = r.size;
    fixup.scale = r.scale;
    switch (b.kind) {
    case Binding::Kind::Local:
      if (isPcRelative(r.encoding)) return;  // the function moved whole
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
      if (r.encoding == FieldEncoding::A64Adr21 || r.encoding == FieldEncoding::A64Literal19) {
        // These reach only +-1 MiB, too little to find the base from a mapped image. Plain
        // read-only data travels as a copy (it cannot differ from the base's); otherwise a
        // linker-relaxed NOP+ADR becomes ADRP+ADD again.
        if (const DataObject *o = copyableObjectAt(r.target)) {
          fixup.space = FixupSpace::Image;
          fixup.target = copyBlob(o->range.rva, o->range.size, false) + (r.target - o->range.rva);
          break;
        }
        if (r.encoding == FieldEncoding::A64Adr21 && widenAdr(functionRva, r, b.address)) return;
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
    if (r.encoding == FieldEncoding::X64Rel8) {
      auto island = islands_.find(fixup.site);
      if (island == islands_.end()) {
        refuse(rule::kShortBranchNoIsland,
               where + ": a short branch out of the function is too far from the function's end for a branch island",
               f.name);
        return;
      }
      size_t field = fixup.site - text_.rva + r.fieldOffset;
      text_.bytes[field] = uint8_t(int8_t(island->second - (fixup.site + r.size)));
      fixup.site = island->second;
      fixup.fieldOffset = 1;
      fixup.instructionSize = 5;
      kind = FixupKind::X64Rel32;
    }
    if (!kind) {
      refuse(rule::kShortBranchNotReaimed, where + ": a short branch out of the function cannot be re-aimed", f.name);
      return;
    }
    fixup.kind = *kind;
    if (fixup.kind == FixupKind::A64AdrPage21) {
      // An ADR that GNU ld wrote for an ADRP (Cortex-A53 erratum 843419) is aimed at a page like
      // an ADRP: it becomes the ADRP again (bit 31), which reaches the base from anywhere.
      uint8_t *word = &text_.bytes[fixup.site - text_.rva];
      llvm::support::endian::write32le(word, llvm::support::endian::read32le(word) | 0x80000000u);
    }
    pending_.push_back(fixup);
  }

  // The linker relaxes ADRP+ADD into NOP+ADR when the target is near; the base is not near the
  // image, so turn the pair back into ADRP+ADD aimed at the base.
  bool widenAdr(uint32_t functionRva, const CodeReference &r, uint64_t baseTarget) {
    constexpr uint32_t kNop = 0xd503201f;
    if (r.offset < 4) return false;
    size_t at = functionRva - text_.rva + r.offset;
    uint32_t previous = llvm::support::endian::read32le(&text_.bytes[at - 4]);
    uint32_t adr = llvm::support::endian::read32le(&text_.bytes[at]);
    if (previous != kNop) return false;
    uint32_t rd = adr & 0x1f;
    llvm::support::endian::write32le(&text_.bytes[at - 4], 0x90000000u | rd);                // adrp xd, page
    llvm::support::endian::write32le(&text_.bytes[at], 0x91000000u | (rd << 5) | rd);       // add xd, xd, #lo12
    PatchFixup page, low;
    page.site = functionRva + r.offset - 4;
    page.kind = FixupKind::A64AdrPage21;
    page.target = baseTarget;
    low.site = functionRva + r.offset;
    low.kind = FixupKind::A64AddLo12;
    low.target = baseTarget;
    pending_.push_back(page);
    pending_.push_back(low);
    return true;
  }

  // A read-only object without relocated pointers: a copy of it is as good as the base's.
  const DataObject *copyableObjectAt(uint64_t rva) const {
    const Section *s = patched_.sectionAt(rva);
    if (!s || s->permissions.write) return nullptr;
    for (const DataObject &d : patched_.dataObjects)
      if (!d.threadLocal && d.sizeKnown && d.range.contains(rva)) {
        auto r = std::lower_bound(relocations_.rvas.begin(), relocations_.rvas.end(), d.range.rva);
        return r != relocations_.rvas.end() && *r < d.range.end() ? nullptr : &d;
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
      uint64_t branchFloor = internalBranchFloor(bf, code);
      if (base_.machine == Machine::X64) {
        r.entryOffset = code.size() >= 4 && std::equal(std::begin(kEndbr64), std::end(kEndbr64), code.begin()) ? 4 : 0;
        if (!chooseX64Entry(bf, branchFloor, r)) {
          refuse(rule::kRedirectDoesNotFit,
                 fmt::format("{} is {} bytes: too short for a 5-byte jump, with no 5 bytes of padding after it or "
                             "within a short jump's reach, so it cannot be redirected without overwriting the next "
                             "function (needs restart)",
                             name, code.size()),
                 r.name);
          continue;
        }
      } else {
        uint32_t first = code.size() >= 4 ? llvm::support::endian::read32le(code.data()) : 0;
        r.entryOffset = isBti(first) ? 4 : 0;
        if (code.size() < r.entryOffset + 4u) {
          refuse(rule::kRedirectDoesNotFit, fmt::format("{} cannot take a branch at its entry: it is too short", name),
                 r.name);
          continue;
        }
        r.kind = RedirectKind::A64Branch;
        r.overwrittenOffset = r.entryOffset;
        r.overwrittenSize = 4;
      }
      // Its own branches into the overwritten bytes would run the jump mid-way: sound only while
      // no thread is inside the function, which the loader then waits for.
      r.quiescent = branchFloor < r.entryOffset + redirectSize(r.kind);
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

  // x64: E9 rel32 at the entry when the function, with the fill after it, has 5 bytes; else EB
  // rel8 to an E9 in the nearest fill within its reach whose span with the entry `expected` can
  // hold. The short jump wins where the function's own branches land in the E9's bytes but not in
  // the EB's: it then needs no quiescence.
  bool chooseX64Entry(const Function &f, uint64_t branchFloor, PatchRedirect &r) {
    int64_t entry = r.entryOffset, size = int64_t(f.range.size);
    bool jumpFits = size >= entry + 5 || (size > entry && isFill(f.range.end(), uint32_t(entry + 5 - size)));
    std::optional<int64_t> shortJump;
    if (size >= entry + 2 && (!jumpFits || (branchFloor < uint64_t(entry + 5) && branchFloor >= uint64_t(entry + 2))))
      for (int64_t jump = entry + 2 - 128; jump <= entry + 2 + 127; ++jump) {
        int64_t from = std::min(jump, entry), to = std::max(jump + 5, entry + 2);
        bool apart = jump + 5 <= entry || jump >= entry + 2;
        if (!apart || to - std::min<int64_t>(from, 0) > int64_t(kMaxExpectedBytes) || int64_t(f.range.rva) + jump < 0) continue;
        if (shortJump && std::abs(jump - entry) >= std::abs(*shortJump - entry)) continue;
        if (isFill(f.range.rva + jump, 5)) shortJump = jump;
      }
    if (shortJump) {
      r.kind = RedirectKind::X64ShortJump;
      r.jumpOffset = int32_t(*shortJump);
      r.overwrittenOffset = int32_t(std::min(*shortJump, entry));
      r.overwrittenSize = uint32_t(std::max(*shortJump + 5, entry + 2) - r.overwrittenOffset);
      return true;
    }
    if (!jumpFits) return false;
    r.kind = RedirectKind::X64Jump32;
    r.overwrittenOffset = int32_t(entry);
    r.overwrittenSize = 5;
    return true;
  }

  // PE: an exception handler that the carried unwind data names and that stays in the base is
  // reached through a stub in .text (UNWIND_INFO holds an RVA of this image).
  void addHandlerStubs() {
    llvm::Expected<PeUnwindSource> source = peUnwindSourceFor(patched_);
    if (!source) return refuse(source.takeError());
    std::vector<CarriedCode> carried;
    for (const PatchFunction &f : image_.functions) carried.push_back({f.patchedRva, f.size, f.rva, f.name});
    llvm::Expected<std::vector<uint64_t>> handlers = peUnwindHandlers(*source, carried);
    if (!handlers) return refuse(handlers.takeError());
    for (uint64_t handler : *handlers) {
      std::optional<uint64_t> inBase = baseCounterpart(handler, 0);
      if (!inBase)
        refuse(rule::kHandlerNotInBase,
               fmt::format("the exception handler at patched rva {:#x} has no counterpart in the base", handler));
      else handlerStubs_[handler] = addAbsoluteJump(*inBase, FixupSpace::Base);
    }
  }

  // The lowest offset inside the function that its own branches jump to (after the entry).
  uint64_t internalBranchFloor(const Function &f, llvm::ArrayRef<uint8_t> code) {
    differ::RelocationIndex none;
    differ::DecodedFunction decoded = decoder_->decode(code, f.range.rva, none);
    uint64_t floor = UINT64_MAX;
    for (const CodeReference &r : decoded.references)
      if ((r.kind == differ::ReferenceKind::Branch || r.kind == differ::ReferenceKind::Memory) &&
          f.range.contains(r.target))
        floor = std::min(floor, r.target - f.range.rva);
    return floor;
  }

  // Whether the `bytes` bytes at `rva` are fill that no function owns: the whole gap between
  // functions that holds them decodes to padding only (int3, nops; the decoder's layout noise).
  bool isFill(uint64_t rva, uint32_t bytes) {
    constexpr uint64_t kMaxGap = 256;
    const Section *section = base_.sectionAt(rva);
    if (!section || !section->permissions.execute || rva + bytes > section->rva + section->size) return false;
    for (uint64_t at = rva; at < rva + bytes; ++at)
      if (base_.functionAt(at)) return false;
    uint64_t begin = rva, end = rva + bytes;
    while (begin > section->rva && rva - begin < kMaxGap && !base_.functionAt(begin - 1)) --begin;
    while (end < section->rva + section->size && end - rva < kMaxGap && !base_.functionAt(end)) ++end;
    auto [known, added] = fillGaps_.try_emplace({begin, end}, false);
    if (added) {
      differ::RelocationIndex none;
      llvm::ArrayRef<uint8_t> gap = base_.bytesAt(begin, end - begin);
      differ::DecodedFunction decoded = decoder_->decode(gap, begin, none);
      known->second = gap.size() == end - begin && decoded.complete && decoded.instructions == 0;
    }
    return known->second;
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

  uint32_t absoluteJumpSlotOffset() const { return image_.machine == Machine::X64 ? 6 : 8; }

  // An absolute jump in .text to `target` (an image or base RVA, or an import), through an 8-byte
  // slot the loader fills: the stub of a redirect or an import, or a veneer for a branch that
  // cannot reach.
  uint32_t addAbsoluteJump(uint64_t target, FixupSpace space) {
    align(text_, 16);
    uint32_t at = text_.rva + uint32_t(text_.bytes.size());
    if (image_.machine == Machine::X64) {
      static const uint8_t jmp[] = {0xff, 0x25, 0, 0, 0, 0};  // jmp [rip+0]
      text_.bytes.insert(text_.bytes.end(), std::begin(jmp), std::end(jmp));
    } else {
      static const uint8_t ldrBr[] = {0x50, 0x00, 0x00, 0x58, 0x00, 0x02, 0x1f, 0xd6};  // ldr x16, #8; br x16
      text_.bytes.insert(text_.bytes.end(), std::begin(ldrBr), std::end(ldrBr));
    }
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
      bool farBranch = f.space == FixupSpace::Base && (f.kind == FixupKind::A64Branch26 ||
                                    (f.kind == FixupKind::X64Rel32 && isBranchSite(f)));
      if (!farBranch) continue;
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
    if (image_.format == Format::Elf) {
      if (llvm::Error e = addEhFrame(next)) return e;
    }
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

  bool isBranchSite(const PatchFixup &f) const {
    // x64 rel32 branches and calls end in their field; RIP-relative operands may not, and are
    // data accesses, which a veneer cannot serve.
    if (f.fieldOffset + 4 != f.instructionSize) return false;
    uint32_t offset = f.site - text_.rva;
    uint8_t opcode = text_.bytes[offset + f.fieldOffset - 1];
    return opcode == 0xe8 || opcode == 0xe9 || (f.fieldOffset >= 2 && text_.bytes[offset + f.fieldOffset - 2] == 0x0f &&
                                                 (opcode & 0xf0) == 0x80);
  }

  // One ADRP serving several accesses must point at one page for all of them.
  llvm::Error checkSharedPages() {
    std::map<uint32_t, std::set<std::pair<FixupSpace, uint64_t>>> pages;
    for (const PatchFixup &f : image_.fixups)
      if (f.kind == FixupKind::A64AdrPage21) pages[f.site].insert({f.space, f.target & ~uint64_t(kPageSize - 1)});
    for (auto &[site, targets] : pages)
      if (targets.size() > 1)
        return emitter::refuse(rule::kSharedPageSplits,
                               "the ADRP at image rva {:#x} serves accesses that land on different pages once patched "
                               "(needs restart)",
                               site);
    return llvm::Error::success();
  }

  llvm::Error addEhFrame(uint32_t rva) {
    EhFrameRequest request;
    request.patched = &patched_;
    for (auto &[patchedRva, placed] : functionRva_) request.functions.push_back({patchedRva, placed.first});
    request.baseCounterpart = [this](uint64_t patchedRva) { return baseCounterpart(patchedRva, 0); };
    std::vector<uint8_t> lsda;
    uint32_t lsdaRva = rva + kPageSize * 16;  // provisional; fixed below once .eh_frame's size is known
    llvm::Expected<std::vector<uint8_t>> first = buildEhFrame(request, rva, lsdaRva, lsda, scratchFixups_);
    if (!first) return first.takeError();
    lsdaRva = uint32_t(alignTo(rva + first->size(), 16));
    scratchFixups_.clear();
    lsda.clear();
    llvm::Expected<std::vector<uint8_t>> frames = buildEhFrame(request, rva, lsdaRva, lsda, image_.fixups);
    if (!frames) return frames.takeError();
    if (frames->empty()) return llvm::Error::success();
    PatchSection eh{".eh_frame", rva, std::move(*frames), 0, {true, false, false}};
    eh.memorySize = uint32_t(eh.bytes.size());
    image_.sizes.metadata += eh.bytes.size() + lsda.size();
    image_.sections.push_back(std::move(eh));
    if (!lsda.empty()) {
      PatchSection table{".gcc_except_table", lsdaRva, std::move(lsda), 0, {true, false, false}};
      table.memorySize = uint32_t(table.bytes.size());
      image_.sections.push_back(std::move(table));
    }
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
        if (r.symbol ? b.symbol == r.symbol && b.type == r.type
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
  std::unique_ptr<differ::InstructionDecoder> decoder_;
  differ::RelocationIndex relocations_;
  PatchImage image_;
  PatchSection text_, rodata_, data_;
  uint64_t bssSize_ = 0;
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> functionRva_;  // patched rva -> (image rva, size)
  std::map<std::pair<uint64_t, bool>, uint32_t> blobs_;
  struct BaseReach {
    const Function *function;
    CodeReference reference;
    uint64_t baseTarget;
  };
  std::vector<BaseReach> baseReaches_;  // accesses from copied anchors to the base, rewritten after binding
  std::map<uint64_t, uint64_t> copyReach_;  // patched rva of a copied anchor -> end of what code reaches from it
  std::vector<JumpTableEntry> jumpTableEntries_;
  std::vector<PatchFixup> pending_, scratchFixups_;
  std::vector<Refusal> problems_;
  std::map<uint64_t, uint32_t> handlerStubs_;  // PE: patched handler rva -> stub image rva
  std::map<std::pair<uint64_t, uint64_t>, bool> fillGaps_;  // base gap [begin, end) -> all padding
  std::map<uint32_t, uint32_t> islands_;                    // image rva of a short branch out -> its island
  std::map<uint32_t, uint32_t> importStubs_;                // import index -> its stub's image rva
};

}  // namespace
}  // namespace emitter

llvm::Expected<PatchImage> buildPatchImage(const Image &base, const Image &patched, const Diff &diff,
                                           const BuildOptions &options) {
  return emitter::Planner(base, patched, diff, options).run();
}

}  // namespace hotforge
