// Arm64 PE unwind data: 8-byte .pdata entries {begin, UnwindData}, packed when UnwindData's flag
// (its low 2 bits) is 1 or 2, else the RVA of an .xdata record whose header gives the function's
// length, the epilog scopes and unwind code words, and the exception handler RVA (X bit).
#include "pe_unwind.h"

#include "emitter_internal.h"

#include <llvm/Support/Endian.h>

namespace hotforge::emitter {
namespace {

using llvm::support::endian::read32le;

class Arm64UnwindDialect final : public PeUnwindDialect {
public:
  size_t entrySize() const override { return 8; }
  bool entryHoldsEnd() const override { return false; }

  llvm::Expected<uint32_t> entryEnd(llvm::ArrayRef<uint8_t> entry, const PeUnwindSource &source,
                                    const std::string &who) const override {
    uint32_t begin = read32le(&entry[0]), unwind = read32le(&entry[4]);
    switch (unwind & 3) {
    case 1:
    case 2: return begin + ((unwind >> 2) & 0x7ff) * 4;
    case 0: {
      llvm::ArrayRef<uint8_t> header = source.bytesAt(unwind, 4);
      if (header.size() != 4) return refuse(rule::kUnwindNotCarried,
                                            "{}: its .xdata record at {:#x} is outside the file", who, unwind);
      return begin + (read32le(header.data()) & 0x3ffff) * 4;
    }
    default: return refuse(rule::kUnwindNotCarried, "{}: its .pdata entry uses the reserved unwind flag 3", who);
    }
  }

  Unwind unwindOf(uint32_t unwindData) const override { return unwindData & 3 ? Unwind::Packed : Unwind::Record; }

  // An extended header (no epilog count and no code words in the first word) takes a second word.
  size_t headerSize(llvm::ArrayRef<uint8_t> first) const override { return (read32le(first.data()) >> 22) == 0 ? 8 : 4; }

  llvm::Expected<size_t> recordSize(llvm::ArrayRef<uint8_t> record, bool checkLength) const override {
    if (record.size() < 4) return makeError(".xdata record is truncated (needs a 4-byte header)");
    uint32_t w0 = read32le(record.data());
    if ((w0 >> 18) & 3) return formatError(".xdata record version {} is not 0", (w0 >> 18) & 3);
    bool exception = (w0 >> 20) & 1, singleEpilog = (w0 >> 21) & 1;
    size_t epilogs = (w0 >> 22) & 0x1f, codeWords = (w0 >> 27) & 0x1f;
    size_t size = 4;
    if (epilogs == 0 && codeWords == 0) {  // extended header: a second word holds both counts
      if (record.size() < 8) return makeError(".xdata record is truncated (needs an 8-byte extended header)");
      uint32_t w1 = read32le(record.data() + 4);
      epilogs = w1 & 0xffff;
      codeWords = (w1 >> 16) & 0xff;
      size = 8;
    }
    if (!singleEpilog) size += epilogs * 4;  // E: the count field is a code index and no scopes follow
    size += codeWords * 4;
    if (exception) size += 4;  // the exception handler RVA
    if (checkLength && record.size() < size)
      return formatError(".xdata record is truncated ({} of {} bytes)", record.size(), size);
    return size;
  }

  bool chained(llvm::ArrayRef<uint8_t>) const override { return false; }
  bool hasHandler(llvm::ArrayRef<uint8_t> record) const override { return (read32le(record.data()) >> 20) & 1; }
};

}  // namespace

const PeUnwindDialect &arm64UnwindDialect() {
  static const Arm64UnwindDialect dialect;
  return dialect;
}

}  // namespace hotforge::emitter
