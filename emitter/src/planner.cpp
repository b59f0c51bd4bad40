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
    if (llvm::Error e = refuseNewImports()) return e;
    if (base_.format != patched_.format || base_.machine != patched_.machine)
      return makeError("the base and the patched build differ in format or machine");
    llvm::Expected<std::unique_ptr<differ::InstructionDecoder>> decoder = differ::createInstructionDecoder(base_.machine);
    if (!decoder) return decoder.takeError();
    decoder_ = std::move(*decoder);
    relocations_.imageBase = patched_.imageBase;
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
      std::string all;
      std::set<std::string> listed;
      for (const std::string &p : problems_)
        if (listed.insert(p).second) all += (all.empty() ? "" : "; ") + p;
      return formatError("cannot build a safe patch: {}", all);
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
    std::string reasons;
    for (const Change &c : diff_.changes)
      if (c.verdict == Verdict::NeedsRestart) reasons += fmt::format("\n  {} {}", c.rule, c.reason);
    if (reasons.empty()) return llvm::Error::success();
    return formatError("the changes need a restart, so no patch is built:{}", reasons);
  }

  // Binding symbols the base does not import needs the loaders' help, which they do not give yet.
  llvm::Error refuseNewImports() {
    std::set<std::string> symbols;
    for (const FunctionBindings &fb : diff_.bindings)
      for (const Binding &b : fb.references)
        if (b.kind == Binding::Kind::Import) symbols.insert("`" + b.symbol + "`");
    if (symbols.empty()) return llvm::Error::success();
    return formatError("{}: the patch uses symbols the base does not import ({}); images cannot bind new imports yet",
                       rules::kNewImport, llvm::join(symbols, ", "));
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
      align(text_, 16);
      uint32_t rva = text_.rva + uint32_t(text_.bytes.size());
      llvm::ArrayRef<uint8_t> code = patched_.bytesAt(f.range.rva, f.range.size);
      text_.bytes.insert(text_.bytes.end(), code.begin(), code.end());
      functionRva_[f.range.rva] = {rva, f.range.size};
      image_.functions.push_back({f.name, rva, uint32_t(f.range.size), f.range.rva, !fb.base});
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
        fixup.toBase = false;
        fixup.target = *rva;
        break;
      }
      problems_.push_back(fmt::format("the data at patched rva {:#x} points at a function that is not in the patch",
                                      copied));
      return;
    case Binding::Kind::Base:
      fixup.toBase = true;
      fixup.target = b.address;
      break;
    case Binding::Kind::Constant:
    case Binding::Kind::NewData:
      fixup.toBase = false;
      fixup.target = copyBlob(b.address, b.size, b.kind == Binding::Kind::NewData) + (pointer.target - b.address);
      break;
    default:
      problems_.push_back(fmt::format("the data at patched rva {:#x} holds a pointer that cannot be bound: {}", copied,
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
    for (const FunctionBindings &fb : diff_.bindings) {
      const Function &f = patched_.functions[fb.patched];
      differ::DecodedFunction decoded =
          decoder_->decode(patched_.bytesAt(f.range.rva, f.range.size), f.range.rva, relocations_, true);
      if (decoded.references.size() != fb.references.size())
        return formatError("internal: {} decodes to {} references, the diff bound {}", f.name.value_or("function"),
                           decoded.references.size(), fb.references.size());
      uint32_t functionRva = functionRva_[f.range.rva].first;
      for (size_t i = 0; i < decoded.references.size(); ++i)
        bindOne(f, functionRva, decoded.references[i], fb.references[i]);
    }
    return llvm::Error::success();
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
      fixup.toBase = false;
      fixup.target = functionRva + (r.target - f.range.rva);
      break;
    case Binding::Kind::Function: {
      std::optional<uint32_t> rva = carriedRva(b.address);
      if (!rva) {
        problems_.push_back(where + ": its target function is not in the patch");
        return;
      }
      fixup.toBase = false;
      fixup.target = *rva;
      break;
    }
    case Binding::Kind::Base:
      if (r.encoding == FieldEncoding::A64Adr21 || r.encoding == FieldEncoding::A64Literal19) {
        // These reach only +-1 MiB, too little to find the base from a mapped image. Plain
        // read-only data travels as a copy (it cannot differ from the base's); otherwise a
        // linker-relaxed NOP+ADR becomes ADRP+ADD again.
        if (const DataObject *o = copyableObjectAt(r.target)) {
          fixup.toBase = false;
          fixup.target = copyBlob(o->range.rva, o->range.size, false) + (r.target - o->range.rva);
          break;
        }
        if (r.encoding == FieldEncoding::A64Adr21 && widenAdr(functionRva, r, b.address)) return;
        problems_.push_back(where + ": an ADR or literal load of base data out of its reach");
        return;
      }
      fixup.toBase = true;
      fixup.target = b.address;
      break;
    case Binding::Kind::Constant:
    case Binding::Kind::NewData: {
      bool writable = b.kind == Binding::Kind::NewData;
      fixup.toBase = false;
      fixup.target = copyBlob(b.address, b.size, writable) + (r.target - b.address);
      break;
    }
    case Binding::Kind::JumpTable: {
      fixup.toBase = false;
      fixup.target = copyJumpTable(b.address, b.size, f, functionRva) + (r.target - b.address);
      break;
    }
    case Binding::Kind::Unbound:
    case Binding::Kind::Import:  // refused before binding
      problems_.push_back(where + ": " + b.note);
      return;
    }
    if (!kind) {
      problems_.push_back(where + ": a short branch out of the function cannot be re-aimed");
      return;
    }
    fixup.kind = *kind;
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
      uint64_t firstInternalTarget = internalBranchFloor(bf, code);
      std::string name = r.name.value_or(fmt::format("the function at base rva {:#x}", bf.range.rva));
      if (base_.machine == Machine::X64) {
        r.entryOffset = code.size() >= 4 && std::equal(std::begin(kEndbr64), std::end(kEndbr64), code.begin()) ? 4 : 0;
        if (code.size() >= r.entryOffset + 5u && firstInternalTarget >= r.entryOffset + 5u) {
          r.kind = RedirectKind::X64Jump32;
        } else if (code.size() >= r.entryOffset + 2u && firstInternalTarget >= r.entryOffset + 2u &&
                   paddingBefore(bf, 5)) {
          r.kind = RedirectKind::X64ShortJump;
          r.paddingBefore = 5;
        } else {
          problems_.push_back(fmt::format(
              "{} is {} bytes{}: too short for a 5-byte jump and no 5 bytes of padding before it, so it cannot be "
              "redirected without overwriting the next function (needs restart)",
              name, code.size(), firstInternalTarget < 5 ? " and branches back into its first bytes" : ""));
          continue;
        }
      } else {
        uint32_t first = code.size() >= 4 ? llvm::support::endian::read32le(code.data()) : 0;
        r.entryOffset = isBti(first) ? 4 : 0;
        if (code.size() < r.entryOffset + 4u || firstInternalTarget < r.entryOffset + 4u) {
          problems_.push_back(fmt::format("{} cannot take a branch at its entry: {}", name,
                                          code.size() < r.entryOffset + 4u ? "it is too short"
                                                                           : "its own code branches to its first instruction"));
          continue;
        }
        r.kind = RedirectKind::A64Branch;
      }
      uint32_t expectedSize = std::min<uint32_t>(uint32_t(code.size()), std::max<uint32_t>(16, r.entryOffset + redirectSize(r.kind)));
      llvm::ArrayRef<uint8_t> before = base_.bytesAt(bf.range.rva - r.paddingBefore, r.paddingBefore);
      r.expected.assign(before.begin(), before.end());
      r.expected.insert(r.expected.end(), code.begin(), code.begin() + expectedSize);
      r.stubRva = addAbsoluteJump(r.patchRva, false);
      image_.redirects.push_back(std::move(r));
    }
    return llvm::Error::success();
  }

  // PE: an exception handler that the carried unwind data names and that stays in the base is
  // reached through a stub in .text (UNWIND_INFO holds an RVA of this image).
  void addHandlerStubs() {
    llvm::Expected<PeUnwindSource> source = peUnwindSourceFor(patched_);
    if (!source) return problems_.push_back(errorText(source.takeError()));
    std::vector<CarriedCode> carried;
    for (const PatchFunction &f : image_.functions) carried.push_back({f.patchedRva, f.size, f.rva, f.name});
    llvm::Expected<std::vector<uint64_t>> handlers = peUnwindHandlers(*source, carried);
    if (!handlers) return problems_.push_back(errorText(handlers.takeError()));
    for (uint64_t handler : *handlers) {
      std::optional<uint64_t> inBase = baseCounterpart(handler, 0);
      if (!inBase)
        problems_.push_back(fmt::format("the exception handler at patched rva {:#x} has no counterpart in the base", handler));
      else handlerStubs_[handler] = addAbsoluteJump(*inBase, true);
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

  // Whether `bytes` bytes before the function are int3/nop fill that no function owns.
  bool paddingBefore(const Function &f, unsigned bytes) const {
    if (f.range.rva < bytes) return false;
    llvm::ArrayRef<uint8_t> fill = base_.bytesAt(f.range.rva - bytes, bytes);
    if (fill.size() != bytes) return false;
    for (unsigned i = 0; i < bytes; ++i)
      if (base_.functionAt(f.range.rva - bytes + i)) return false;
    return std::all_of(fill.begin(), fill.end(), [](uint8_t b) { return b == 0xcc || b == 0x90; });
  }

  // An absolute jump in .text to `target` (an image or base RVA), through an 8-byte slot the
  // loader fills: the stub of a redirect, or a veneer for a branch that cannot reach.
  uint32_t addAbsoluteJump(uint64_t target, bool toBase) {
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
    f.toBase = toBase;
    f.target = target;
    image_.fixups.push_back(f);
    return at;
  }

  llvm::Error finishSections() {
    // Veneers for branches into the base that may be out of reach once the image is mapped.
    std::map<uint64_t, uint32_t> veneers;
    for (PatchFixup &f : pending_) {
      bool farBranch = f.toBase && (f.kind == FixupKind::A64Branch26 ||
                                    (f.kind == FixupKind::X64Rel32 && isBranchSite(f)));
      if (!farBranch) continue;
      auto [it, added] = veneers.try_emplace(f.target, 0);
      if (added) it->second = addAbsoluteJump(f.target, true);
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
      if (!f.toBase && f.target >= (1u << 28)) f.target = place(f.target);
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
                                             a.toBase == b.toBase;
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
    std::map<uint32_t, std::set<std::pair<bool, uint64_t>>> pages;
    for (const PatchFixup &f : image_.fixups)
      if (f.kind == FixupKind::A64AdrPage21) pages[f.site].insert({f.toBase, f.target & ~uint64_t(kPageSize - 1)});
    for (auto &[site, targets] : pages)
      if (targets.size() > 1)
        return formatError("the ADRP at image rva {:#x} serves accesses that land on different pages once patched "
                           "(needs restart)", site);
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
  std::vector<JumpTableEntry> jumpTableEntries_;
  std::vector<PatchFixup> pending_, scratchFixups_;
  std::vector<std::string> problems_;
  std::map<uint64_t, uint32_t> handlerStubs_;  // PE: patched handler rva -> stub image rva
};

}  // namespace
}  // namespace emitter

llvm::Expected<PatchImage> buildPatchImage(const Image &base, const Image &patched, const Diff &diff,
                                           const BuildOptions &options) {
  return emitter::Planner(base, patched, diff, options).run();
}

}  // namespace hotforge
