// A new .eh_frame (and .gcc_except_table) for the carried functions, so stack walks and C++
// exceptions work through patch code. Entries are copied from the patched build: FDE addresses
// and LSDA pointers are rewritten for the image; the personality routine and the type table keep
// pointing at the base's (through fixups), like the rest of the patch's references.
#include "emitter_internal.h"

#include <llvm/Support/Endian.h>

#include <map>

namespace hotforge::emitter {
namespace {

using llvm::support::endian::read16le;
using llvm::support::endian::read32le;
using llvm::support::endian::read64le;

constexpr uint8_t kOmit = 0xff, kPcRel = 0x10, kSData4 = 0x0b, kSData8 = 0x0c;

class Reader {
public:
  Reader(llvm::ArrayRef<uint8_t> bytes, uint64_t rva) : bytes_(bytes), rva_(rva) {}
  bool ok() const { return ok_; }
  uint64_t position() const { return position_; }
  uint64_t rvaHere() const { return rva_ + position_; }
  void seek(uint64_t p) { position_ = p, ok_ = ok_ && p <= bytes_.size(); }
  uint8_t u8() { return need(1) ? bytes_[position_++] : 0; }
  uint64_t uleb() {
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      uint8_t b = u8();
      value |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return value;
    }
    ok_ = false;
    return 0;
  }
  int64_t sleb() {
    int64_t value = 0;
    unsigned shift = 0;
    uint8_t b = 0;
    do {
      b = u8();
      value |= int64_t(b & 0x7f) << shift;
      shift += 7;
    } while ((b & 0x80) && shift < 64 && ok_);
    if (shift < 64 && (b & 0x40)) value |= -(int64_t(1) << shift);
    return value;
  }
  std::string cstring() {
    std::string s;
    while (ok_ && position_ < bytes_.size() && bytes_[position_]) s.push_back(char(bytes_[position_++]));
    u8();
    return s;
  }
  // A DW_EH_PE-encoded pointer; pc-relative values are resolved to RVAs.
  uint64_t pointer(uint8_t encoding) {
    uint64_t at = rvaHere();
    uint64_t value = 0;
    switch (encoding & 0x0f) {
    case 0x00: value = need(8) ? read64le(&bytes_[advance(8)]) : 0; break;
    case 0x01: value = uleb(); break;
    case 0x02: value = need(2) ? read16le(&bytes_[advance(2)]) : 0; break;
    case 0x03: value = need(4) ? read32le(&bytes_[advance(4)]) : 0; break;
    case 0x04: value = need(8) ? read64le(&bytes_[advance(8)]) : 0; break;
    case 0x09: value = uint64_t(sleb()); break;
    case 0x0a: value = need(2) ? uint64_t(int64_t(int16_t(read16le(&bytes_[advance(2)])))) : 0; break;
    case 0x0b: value = need(4) ? uint64_t(int64_t(int32_t(read32le(&bytes_[advance(4)])))) : 0; break;
    case 0x0c: value = need(8) ? read64le(&bytes_[advance(8)]) : 0; break;
    default: ok_ = false;
    }
    if ((encoding & 0x70) == kPcRel) value += at;
    return value;
  }

private:
  bool need(uint64_t n) {
    ok_ = ok_ && position_ + n <= bytes_.size();
    return ok_;
  }
  uint64_t advance(uint64_t n) {
    uint64_t at = position_;
    position_ += n;
    return at;
  }
  llvm::ArrayRef<uint8_t> bytes_;
  uint64_t rva_;
  uint64_t position_ = 0;
  bool ok_ = true;
};

struct Cie {
  uint64_t offset = 0, length = 0;  // whole entry, including the length field
  uint8_t fdeEncoding = 0, lsdaEncoding = kOmit, personalityEncoding = kOmit;
  uint64_t personalityField = 0;  // offset of the personality pointer within the entry
  uint64_t personality = 0;       // RVA it points at
  bool augmented = false;
};

struct Fde {
  uint64_t offset = 0, length = 0;
  uint64_t cie = 0;
  uint64_t pcBegin = 0;
  uint64_t pcBeginField = 0, lsdaField = 0;  // offsets within the entry
  uint64_t lsda = 0;
  bool hasLsda = false;
};

class EhFrameBuilder {
public:
  EhFrameBuilder(const EhFrameRequest &request, uint32_t sectionRva, uint32_t lsdaRva, std::vector<uint8_t> &lsda,
                 std::vector<PatchFixup> &fixups)
      : request_(request), sectionRva_(sectionRva), lsdaRva_(lsdaRva), lsda_(lsda), fixups_(fixups) {}

  llvm::Expected<std::vector<uint8_t>> run() {
    const Section *source = nullptr;
    for (const Section &s : request_.patched->sections)
      if (s.name == ".eh_frame" && s.loaded) source = &s;
    if (!source) return std::vector<uint8_t>();
    section_ = request_.patched->bytesAt(source->rva, source->fileSize);
    sourceRva_ = source->rva;
    if (llvm::Error e = parse()) return e;
    for (auto [patchedRva, imageRva] : request_.functions) {
      auto fde = fdes_.find(patchedRva);
      if (fde == fdes_.end()) continue;  // leaf code without unwind information
      if (llvm::Error e = emit(fde->second, imageRva)) return e;
    }
    if (out_.size()) out_.u32(0);  // terminator
    return out_.bytes;
  }

private:
  llvm::Error parse() {
    Reader r(section_, sourceRva_);
    while (r.position() + 4 <= section_.size()) {
      uint64_t start = r.position();
      uint32_t length = uint32_t(r.pointer(0x03));
      if (length == 0) break;
      if (length == 0xffffffff) return refuse(rule::kUnwindNotCarried,
                                              ".eh_frame uses 64-bit entries, which patches do not carry yet");
      uint64_t end = start + 4 + length;
      if (end > section_.size()) return refuse(rule::kUnwindNotCarried,
                                               ".eh_frame entry at {:#x} runs past the section", start);
      uint64_t idField = r.position();
      uint32_t id = uint32_t(r.pointer(0x03));
      if (id == 0) {
        Cie cie;
        cie.offset = start;
        cie.length = end - start;
        r.u8();  // version
        std::string augmentation = r.cstring();
        r.uleb();
        r.sleb();
        r.uleb();  // return register (a byte in version 1, which never exceeds 127)
        if (!augmentation.empty() && augmentation[0] == 'z') {
          cie.augmented = true;
          r.uleb();
          for (char c : augmentation.substr(1)) {
            if (c == 'R') cie.fdeEncoding = r.u8();
            else if (c == 'L') cie.lsdaEncoding = r.u8();
            else if (c == 'P') {
              cie.personalityEncoding = r.u8();
              cie.personalityField = r.position() - start;
              cie.personality = r.pointer(cie.personalityEncoding);
            }
          }
        }
        if (!r.ok()) return refuse(rule::kUnwindNotCarried, ".eh_frame CIE at {:#x} is malformed", start);
        cies_[start] = cie;
      } else {
        Fde fde;
        fde.offset = start;
        fde.length = end - start;
        fde.cie = idField - id;
        auto cie = cies_.find(fde.cie);
        if (cie == cies_.end()) return refuse(rule::kUnwindNotCarried, ".eh_frame FDE at {:#x} names no CIE", start);
        fde.pcBeginField = r.position() - start;
        fde.pcBegin = r.pointer(cie->second.fdeEncoding);
        r.pointer(cie->second.fdeEncoding & 0x0f);
        if (cie->second.augmented) {
          r.uleb();
          if (cie->second.lsdaEncoding != kOmit) {
            fde.lsdaField = r.position() - start;
            fde.lsda = r.pointer(cie->second.lsdaEncoding);
            fde.hasLsda = fde.lsda != 0;
          }
        }
        if (!r.ok()) return refuse(rule::kUnwindNotCarried, ".eh_frame FDE at {:#x} is malformed", start);
        fdes_[fde.pcBegin] = fde;
      }
      r.seek(end);
    }
    return llvm::Error::success();
  }

  // Pc-relative 4- or 8-byte pointers: what compilers emit for position-independent code.
  static bool isPcRelData(uint8_t encoding) {
    return (encoding & 0x70) == kPcRel && ((encoding & 0x0f) == kSData4 || (encoding & 0x0f) == kSData8);
  }
  static bool isWide(uint8_t encoding) { return (encoding & 0x0f) == kSData8; }

  void putPcRel(size_t at, uint64_t targetRva, uint8_t encoding) {
    int64_t value = int64_t(targetRva) - int64_t(sectionRva_ + at);
    if (isWide(encoding))
      for (int i = 0; i < 8; ++i) out_.bytes[at + i] = uint8_t(uint64_t(value) >> (8 * i));
    else
      out_.patch32(at, uint32_t(int32_t(value)));
  }

  // A pointer into the patched build's data that must point at the base's copy.
  llvm::Error bindToBase(uint32_t fieldRva, uint64_t patchedTarget, const char *what, bool wide = false) {
    std::optional<uint64_t> base = request_.baseCounterpart(patchedTarget);
    if (!base) return refuse(rule::kHandlerNotInBase,
                             "the {} at patched rva {:#x} has no counterpart in the base", what, patchedTarget);
    PatchFixup f;
    f.site = fieldRva;
    f.kind = wide ? FixupKind::Data64PcRel : FixupKind::Data32PcRel;
    f.space = FixupSpace::Base;
    f.target = *base;
    fixups_.push_back(f);
    return llvm::Error::success();
  }

  llvm::Expected<uint64_t> emitCie(const Cie &cie) {
    if (auto it = emittedCies_.find(cie.offset); it != emittedCies_.end()) return it->second;
    if (!isPcRelData(cie.fdeEncoding))
      return refuse(rule::kUnwindNotCarried,
                    ".eh_frame CIE at {:#x} encodes addresses as {:#x}; patches carry pc-relative ones",
                         cie.offset, cie.fdeEncoding);
    uint64_t at = out_.size();
    out_.raw(section_.slice(cie.offset, cie.length));
    if (cie.personalityEncoding != kOmit) {
      if (!isPcRelData(cie.personalityEncoding))
        return refuse(rule::kUnwindNotCarried, "a personality routine that is not pc-relative is not carried yet");
      for (unsigned i = 0; i < (isWide(cie.personalityEncoding) ? 8u : 4u); ++i) out_.bytes[at + cie.personalityField + i] = 0;
      // Indirect: the CIE points at a slot holding the routine's address (DW.ref.*), which the
      // base has too. Direct: it points at the routine itself, also in the base.
      if (llvm::Error e = bindToBase(uint32_t(sectionRva_ + at + cie.personalityField), cie.personality,
                                     "personality routine", isWide(cie.personalityEncoding)))
        return e;
    }
    emittedCies_[cie.offset] = at;
    return at;
  }

  llvm::Error emit(const Fde &fde, uint64_t imageRva) {
    const Cie &cie = cies_.at(fde.cie);
    llvm::Expected<uint64_t> cieAt = emitCie(cie);
    if (!cieAt) return cieAt.takeError();
    uint64_t at = out_.size();
    out_.raw(section_.slice(fde.offset, fde.length));
    out_.patch32(at + 4, uint32_t(at + 4 - *cieAt));
    putPcRel(at + fde.pcBeginField, imageRva, cie.fdeEncoding);
    if (fde.hasLsda) {
      if (!isPcRelData(cie.lsdaEncoding)) return refuse(rule::kUnwindNotCarried,
                                                        "an LSDA pointer that is not pc-relative is not carried yet");
      llvm::Expected<uint64_t> lsdaAt = copyLsda(fde.lsda);
      if (!lsdaAt) return lsdaAt.takeError();
      putPcRel(at + fde.lsdaField, lsdaRva_ + *lsdaAt, cie.lsdaEncoding);
    }
    return llvm::Error::success();
  }

  // Copies a GCC LSDA. Its call-site table is relative to the function start, so only the type
  // table (pointers to type_info, usually through DW.ref slots) needs fixups.
  llvm::Expected<uint64_t> copyLsda(uint64_t rva) {
    const Section *s = request_.patched->sectionAt(rva);
    if (!s) return refuse(rule::kUnwindNotCarried, "LSDA at patched rva {:#x} is outside every section", rva);
    llvm::ArrayRef<uint8_t> bytes = request_.patched->bytesAt(rva, s->rva + s->fileSize - rva);
    Reader r(bytes, rva);
    uint8_t lpStartEncoding = r.u8();
    if (lpStartEncoding != kOmit) return refuse(rule::kUnwindNotCarried,
                                                "an LSDA with its own landing-pad base is not carried yet");
    uint8_t typeEncoding = r.u8();
    uint64_t typeBase = 0;
    if (typeEncoding != kOmit) {
      uint64_t offset = r.uleb();
      typeBase = r.position() + offset;
    }
    uint8_t callSiteEncoding = r.u8();
    uint64_t callSiteLength = r.uleb();
    uint64_t actionsStart = r.position() + callSiteLength;
    int64_t maxFilter = 0;
    uint64_t actionsEnd = actionsStart;
    while (r.ok() && r.position() < actionsStart) {
      r.pointer(callSiteEncoding & 0x0f);
      r.pointer(callSiteEncoding & 0x0f);
      r.pointer(callSiteEncoding & 0x0f);
      uint64_t action = r.uleb();
      // Follow the action chain to learn the action table's extent and the type filters used.
      for (uint64_t next = action; next && r.ok();) {
        Reader a(bytes, rva);
        a.seek(actionsStart + next - 1);
        int64_t filter = a.sleb();
        uint64_t displacementAt = a.position();
        int64_t displacement = a.sleb();
        actionsEnd = std::max(actionsEnd, a.position());
        if (filter < 0) return refuse(rule::kUnwindNotCarried,
                                      "an LSDA with exception specifications is not carried yet");
        maxFilter = std::max(maxFilter, filter);
        if (!a.ok()) return refuse(rule::kUnwindNotCarried, "malformed LSDA action table");
        next = displacement ? uint64_t(int64_t(displacementAt) + displacement - int64_t(actionsStart) + 1) : 0;
      }
    }
    if (!r.ok()) return refuse(rule::kUnwindNotCarried, "malformed LSDA at patched rva {:#x}", rva);
    uint64_t end = typeBase ? typeBase : actionsEnd;
    if (end > bytes.size()) return refuse(rule::kUnwindNotCarried,
                                          "LSDA at patched rva {:#x} runs past its section", rva);
    while (lsda_.size() % 4) lsda_.push_back(0);
    uint64_t at = lsda_.size();
    lsda_.insert(lsda_.end(), bytes.begin(), bytes.begin() + end);
    if (typeBase && maxFilter) {
      if (!isPcRelData(typeEncoding))
        return refuse(rule::kUnwindNotCarried, "LSDA type table encoding {:#x} is not carried yet", typeEncoding);
      uint64_t width = isWide(typeEncoding) ? 8 : 4;
      for (int64_t i = 1; i <= maxFilter; ++i) {
        uint64_t entry = typeBase - width * uint64_t(i);
        Reader t(bytes, rva);
        t.seek(entry);
        uint64_t raw = width == 8 ? read64le(&bytes[entry]) : read32le(&bytes[entry]);
        uint64_t target = t.pointer(typeEncoding);
        if (raw == 0) continue;  // catch (...)
        for (uint64_t k = 0; k < width; ++k) lsda_[at + entry + k] = 0;
        PatchFixup f;
        f.site = uint32_t(lsdaRva_ + at + entry);
        f.kind = width == 8 ? FixupKind::Data64PcRel : FixupKind::Data32PcRel;
        f.space = FixupSpace::Base;
        std::optional<uint64_t> base = request_.baseCounterpart(target);
        if (!base) return refuse(rule::kHandlerNotInBase,
                                 "a type caught by patched code (at patched rva {:#x}) is not in the base", target);
        f.target = *base;
        fixups_.push_back(f);
      }
    }
    return at;
  }

  const EhFrameRequest &request_;
  uint32_t sectionRva_, lsdaRva_;
  std::vector<uint8_t> &lsda_;
  std::vector<PatchFixup> &fixups_;
  llvm::ArrayRef<uint8_t> section_;
  uint64_t sourceRva_ = 0;
  std::map<uint64_t, Cie> cies_;
  std::map<uint64_t, Fde> fdes_;  // by pc_begin
  std::map<uint64_t, uint64_t> emittedCies_;
  ByteWriter out_;
};

}  // namespace

llvm::Expected<std::vector<uint8_t>> buildEhFrame(const EhFrameRequest &request, uint32_t sectionRva,
                                                  uint32_t lsdaSectionRva, std::vector<uint8_t> &lsdaBytes,
                                                  std::vector<PatchFixup> &fixups) {
  return EhFrameBuilder(request, sectionRva, lsdaSectionRva, lsdaBytes, fixups).run();
}

}  // namespace hotforge::emitter
