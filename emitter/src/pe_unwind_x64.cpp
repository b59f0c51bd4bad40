// x64 PE unwind data: 12-byte RUNTIME_FUNCTION entries {begin, end, UnwindData}, UnwindData | 1
// naming another entry, and UNWIND_INFO records (header, unwind codes, then the chained
// RUNTIME_FUNCTION or the exception handler RVA).
#include "pe_unwind.h"

#include "hotforge/core/error.h"

#include <llvm/Support/Endian.h>

namespace hotforge::emitter {
namespace {

constexpr uint8_t kUnwEHandler = 1, kUnwUHandler = 2, kUnwChainInfo = 4;
constexpr size_t kEntrySize = 12;

class X64UnwindDialect final : public PeUnwindDialect {
public:
  size_t entrySize() const override { return kEntrySize; }
  bool entryHoldsEnd() const override { return true; }
  llvm::Expected<uint32_t> entryEnd(llvm::ArrayRef<uint8_t> entry, const PeUnwindSource &,
                                    const std::string &) const override {
    return llvm::support::endian::read32le(&entry[4]);
  }
  Unwind unwindOf(uint32_t unwindData) const override { return unwindData & 1 ? Unwind::Indirect : Unwind::Record; }
  size_t headerSize(llvm::ArrayRef<uint8_t>) const override { return 4; }

  llvm::Expected<size_t> recordSize(llvm::ArrayRef<uint8_t> record, bool checkLength) const override {
    if (record.size() < 4) return makeError("UNWIND_INFO is truncated (needs 4 header bytes)");
    unsigned version = record[0] & 7, flags = record[0] >> 3;
    if (version != 1 && version != 2) return formatError("UNWIND_INFO version {} is not 1 or 2", version);
    size_t size = 4 + 2 * ((size_t(record[2]) + 1) & ~size_t(1));  // codes, padded to an even count
    if (flags & kUnwChainInfo) size += kEntrySize;
    else if (flags & (kUnwEHandler | kUnwUHandler)) size += 4;
    if (checkLength && record.size() < size)
      return formatError("UNWIND_INFO is truncated ({} of {} bytes)", record.size(), size);
    return size;
  }

  bool chained(llvm::ArrayRef<uint8_t> record) const override { return (record[0] >> 3) & kUnwChainInfo; }
  bool hasHandler(llvm::ArrayRef<uint8_t> record) const override {
    return !chained(record) && ((record[0] >> 3) & (kUnwEHandler | kUnwUHandler));
  }
};

}  // namespace

const PeUnwindDialect &x64UnwindDialect() {
  static const X64UnwindDialect dialect;
  return dialect;
}

}  // namespace hotforge::emitter
