// PE unwind data for a patch image. Every .pdata entry of the patched build that starts inside a
// carried function is copied with its begin (and x64 end) moved to the image RVA; its unwind
// record is copied into the image's .xdata. What holds RVAs is re-aimed:
//   x64 chained UNWIND_INFO: the trailing RUNTIME_FUNCTION becomes the parent's new entry;
//   x64 indirect entries (UnwindData | 1): the RVA of the parent's new entry;
//   exception handler RVAs (x64 EHANDLER/UHANDLER, Arm64 X bit): the handler's image RVA when the
//     image carries it, else a stub in .text that jumps to the base's handler;
//   the handler's own data, for the handlers whose data format is public (__C_specific_handler
//     scope tables, __GSHandlerCheck, __GSHandlerCheck_SEH); any other handler is refused.
// Arm64 packed entries need no .xdata and are copied with the new begin only.
#include "pe_unwind.h"

#include "emitter_internal.h"
#include "hotforge/core/machine_target.h"

#include <fmt/core.h>
#include <llvm/Object/COFF.h>
#include <llvm/Support/Endian.h>

#include <algorithm>
#include <set>

namespace hotforge::emitter {

using llvm::support::endian::read32le;
using llvm::support::endian::write32le;

namespace {

constexpr uint32_t kMaxScopes = 0x10000;

std::string describe(const CarriedCode &c) {
  return c.name ? *c.name : fmt::format("the function at patched rva {:#x}", c.patchedRva);
}

// Where patched RVAs inside carried code land in the image.
class Locator {
public:
  explicit Locator(llvm::ArrayRef<CarriedCode> carried) : carried_(carried.begin(), carried.end()) {
    std::sort(carried_.begin(), carried_.end(),
              [](const CarriedCode &a, const CarriedCode &b) { return a.patchedRva < b.patchedRva; });
  }
  const CarriedCode *owner(uint64_t rva) const {
    auto it = std::upper_bound(carried_.begin(), carried_.end(), rva,
                               [](uint64_t r, const CarriedCode &c) { return r < c.patchedRva; });
    if (it == carried_.begin()) return nullptr;
    --it;
    return rva - it->patchedRva < it->size ? &*it : nullptr;
  }
  std::optional<uint32_t> map(uint64_t rva) const {
    const CarriedCode *c = owner(rva);
    if (!c) return std::nullopt;
    return uint32_t(c->imageRva + (rva - c->patchedRva));
  }

private:
  std::vector<CarriedCode> carried_;
};

// Handlers whose data (after the handler RVA) has a public format.
enum class HandlerData { ScopeTable, GsCheck, GsCheckSeh };

std::optional<HandlerData> handlerDataFor(std::string name) {
  if (name.rfind("__imp_", 0) == 0) name.erase(0, 6);
  name.erase(0, name.find_first_not_of('_'));
  if (name == "C_specific_handler") return HandlerData::ScopeTable;
  if (name == "GSHandlerCheck") return HandlerData::GsCheck;
  if (name == "GSHandlerCheck_SEH") return HandlerData::GsCheckSeh;
  return std::nullopt;
}

// One unwind record (an x64 UNWIND_INFO or an Arm64 .xdata record) to copy.
struct UnwindRecord {
  uint64_t patchedRva = 0;
  size_t fixedSize = 0;  // through the handler RVA or the chained RUNTIME_FUNCTION
  std::vector<uint8_t> bytes;  // the whole record, with the handler's data
  bool chained = false;  // a .pdata entry (the parent's) follows the codes
  std::optional<uint64_t> handler;  // patched RVA of the exception handler
  std::optional<HandlerData> handlerData;
  uint32_t offset = 0;  // in the new .xdata
  const CarriedCode *function = nullptr;
};

// One .pdata entry to copy.
struct Entry {
  uint32_t begin = 0, end = 0, unwind = 0;  // patched build
  uint32_t newBegin = 0, newEnd = 0;
  const CarriedCode *function = nullptr;
};

class Copier final : public PeUnwindCopy {
public:
  Copier(PeUnwindSource source, llvm::ArrayRef<CarriedCode> carried)
      : source_(std::move(source)), dialect_(peUnwindDialect(source_.machine)), locator_(carried) {}

  llvm::Error collect() {
    size_t entrySize = dialect_.entrySize();
    llvm::ArrayRef<uint8_t> table = source_.exceptionDirectory;
    for (size_t at = 0; at + entrySize <= table.size(); at += entrySize) {
      Entry e;
      e.begin = read32le(&table[at]);
      e.unwind = read32le(&table[at + entrySize - 4]);
      e.function = locator_.owner(e.begin);
      if (!e.function) continue;
      std::string who = describe(*e.function);
      llvm::Expected<uint32_t> end = dialect_.entryEnd(table.slice(at, entrySize), source_, who);
      if (!end) return refuse(rule::kUnwindNotCarried, "{}", errorText(end.takeError()));
      e.end = *end;
      if (e.end <= e.begin || e.end - e.function->patchedRva > e.function->size)
        return refuse(rule::kUnwindNotCarried,
                      "{}: its unwind entry [{:#x}, {:#x}) does not lie inside the function [{:#x}, {:#x})", who,
                           e.begin, e.end, e.function->patchedRva, e.function->patchedRva + e.function->size);
      e.newBegin = *locator_.map(e.begin);
      e.newEnd = e.newBegin + (e.end - e.begin);
      entries_.push_back(e);
      if (dialect_.unwindOf(e.unwind) != PeUnwindDialect::Unwind::Record) continue;
      if (llvm::Error err = addRecord(e.unwind, *e.function)) return err;
    }
    std::sort(entries_.begin(), entries_.end(), [](const Entry &a, const Entry &b) { return a.newBegin < b.newBegin; });
    for (size_t i = 1; i < entries_.size(); ++i)
      if (entries_[i].newBegin < entries_[i - 1].newEnd)
        return refuse(rule::kUnwindNotCarried,
                      "{}: unwind entries at patched rva {:#x} and {:#x} overlap", describe(*entries_[i].function),
                           entries_[i - 1].begin, entries_[i].begin);
    // A chain must end at an entry the image has, so refusals come before the layout.
    std::set<uint32_t> begins;
    for (const Entry &e : entries_) begins.insert(e.begin);
    for (const Entry &e : entries_) {
      if (dialect_.unwindOf(e.unwind) != PeUnwindDialect::Unwind::Indirect) continue;
      llvm::Expected<uint32_t> parent = indirectParent(e);
      if (!parent) return parent.takeError();
      if (!begins.count(*parent)) return notCarried(*e.function, *parent);
    }
    for (const auto &[rva, record] : records_)
      if (record.chained) {
        uint32_t parent = read32le(&record.bytes[record.fixedSize - dialect_.entrySize()]);
        if (!begins.count(parent)) return notCarried(*record.function, parent);
      }
    return llvm::Error::success();
  }

  std::vector<uint64_t> handlersOutside() const override {
    std::set<uint64_t> out;
    for (const auto &[rva, record] : records_)
      if (record.handler && !locator_.map(*record.handler)) out.insert(*record.handler);
    return {out.begin(), out.end()};
  }

  llvm::Expected<PeUnwindTables> emit(uint32_t pdataRva, uint32_t xdataRva,
                                      const std::map<uint64_t, uint32_t> &stubs) override {
    PeUnwindTables out;
    // .xdata: every record once, 4-aligned, in patched-address order.
    for (auto &[rva, record] : records_) {
      out.xdata.resize((out.xdata.size() + 3) & ~size_t(3));
      record.offset = uint32_t(out.xdata.size());
      out.xdata.insert(out.xdata.end(), record.bytes.begin(), record.bytes.end());
    }
    out.xdata.resize((out.xdata.size() + 3) & ~size_t(3));
    std::map<uint32_t, size_t> entryAt;  // patched begin -> index in entries_
    for (size_t i = 0; i < entries_.size(); ++i) entryAt[entries_[i].begin] = i;
    auto newUnwind = [&](const Entry &e) -> llvm::Expected<uint32_t> {
      PeUnwindDialect::Unwind unwind = dialect_.unwindOf(e.unwind);
      if (unwind == PeUnwindDialect::Unwind::Packed) return e.unwind;
      if (unwind == PeUnwindDialect::Unwind::Indirect) {
        llvm::Expected<uint32_t> parentBegin = indirectParent(e);
        if (!parentBegin) return parentBegin.takeError();
        auto parent = entryAt.find(*parentBegin);
        if (parent == entryAt.end()) return notCarried(*e.function, *parentBegin);
        return uint32_t(pdataRva + parent->second * dialect_.entrySize()) | 1u;
      }
      return xdataRva + records_.at(e.unwind).offset;
    };
    std::vector<uint32_t> unwinds;
    for (const Entry &e : entries_) {
      llvm::Expected<uint32_t> u = newUnwind(e);
      if (!u) return u.takeError();
      unwinds.push_back(*u);
    }
    // Re-aim what the records hold.
    for (auto &[rva, record] : records_) {
      uint8_t *p = &out.xdata[record.offset];
      std::string who = describe(*record.function);
      if (record.chained) {
        uint8_t *chain = p + record.fixedSize - dialect_.entrySize();
        uint32_t parentBegin = read32le(chain);
        auto parent = entryAt.find(parentBegin);
        if (parent == entryAt.end()) return notCarried(*record.function, parentBegin);
        write32le(chain, entries_[parent->second].newBegin);
        write32le(chain + 4, entries_[parent->second].newEnd);
        write32le(chain + 8, unwinds[parent->second]);
      }
      if (record.handler) {
        std::optional<uint32_t> handler = locator_.map(*record.handler);
        if (!handler) {
          auto stub = stubs.find(*record.handler);
          if (stub == stubs.end())
            return refuse(rule::kUnwindNotCarried,
                          "{}: no stub for its exception handler at patched rva {:#x}", who, *record.handler);
          handler = stub->second;
        }
        write32le(p + record.fixedSize - 4, *handler);
        llvm::MutableArrayRef<uint8_t> data(p + record.fixedSize, record.bytes.size() - record.fixedSize);
        if (llvm::Error err = rewriteHandlerData(*record.handlerData, data, who)) return err;
      }
    }
    for (size_t i = 0; i < entries_.size(); ++i) {
      uint8_t word[4];
      auto put = [&](uint32_t v) {
        write32le(word, v);
        out.pdata.insert(out.pdata.end(), word, word + 4);
      };
      put(entries_[i].newBegin);
      if (dialect_.entryHoldsEnd()) put(entries_[i].newEnd);
      put(unwinds[i]);
    }
    out.entries = entries_.size();
    return out;
  }

private:
  // The begin address of the entry an indirect entry (UnwindData | 1) names, found by its
  // position in the patched build's .pdata.
  llvm::Expected<uint32_t> indirectParent(const Entry &e) const {
    uint32_t at = e.unwind & ~1u;
    uint64_t offset = uint64_t(at) - source_.exceptionDirectoryRva;
    if (at < source_.exceptionDirectoryRva || offset % dialect_.entrySize() ||
        offset + dialect_.entrySize() > source_.exceptionDirectory.size())
      return refuse(rule::kUnwindNotCarried, "{}: its indirect unwind entry points at {:#x}, not at an entry of .pdata",
                         describe(*e.function), at);
    return read32le(&source_.exceptionDirectory[offset]);
  }

  static llvm::Error notCarried(const CarriedCode &function, uint32_t parent) {
    return refuse(rule::kUnwindNotCarried,
                  "{}: its unwind data chains to the function at patched rva {:#x}, which the patch does not "
                       "carry (needs restart)", describe(function), parent);
  }

  llvm::Error addRecord(uint32_t rva, const CarriedCode &function) {
    if (records_.count(rva)) return llvm::Error::success();
    std::string who = describe(function);
    UnwindRecord record;
    record.patchedRva = rva;
    record.function = &function;  // owned by locator_
    // The header says how long the record is; it may take a second word.
    llvm::ArrayRef<uint8_t> head = source_.bytesAt(rva, 4);
    if (head.size() == 4) head = source_.bytesAt(rva, dialect_.headerSize(head));
    if (head.size() < 4) return refuse(rule::kUnwindNotCarried,
                                       "{}: its unwind record at patched rva {:#x} is outside the file", who, rva);
    llvm::Expected<size_t> fixed = dialect_.recordSize(head, false);
    if (!fixed) return refuse(rule::kUnwindNotCarried,
                              "{}: its unwind record at patched rva {:#x}: {}", who, rva, errorText(fixed.takeError()));
    record.fixedSize = *fixed;
    llvm::ArrayRef<uint8_t> bytes = source_.bytesAt(rva, record.fixedSize);
    if (bytes.size() != record.fixedSize)
      return refuse(rule::kUnwindNotCarried,
                    "{}: its unwind record at patched rva {:#x} is outside the file", who, rva);
    record.chained = dialect_.chained(bytes);
    bool hasHandler = dialect_.hasHandler(bytes);
    record.bytes.assign(bytes.begin(), bytes.end());
    if (hasHandler) {
      uint32_t handler = read32le(&bytes[record.fixedSize - 4]);
      record.handler = handler;
      std::optional<std::string> name = source_.nameAt ? source_.nameAt(handler) : std::nullopt;
      std::optional<HandlerData> kind = name ? handlerDataFor(*name) : std::nullopt;
      if (!kind)
        return refuse(rule::kHandlerDataNotReaimed,
                      "{} has an exception handler ({} at patched rva {:#x}) whose data Hotforge cannot re-aim: "
                           "only __C_specific_handler scope tables and __GSHandlerCheck data are understood (needs "
                           "restart)", who, name.value_or("unnamed"), handler);
      record.handlerData = *kind;
      llvm::Expected<size_t> dataSize = handlerDataSize(*kind, rva + record.fixedSize, who);
      if (!dataSize) return dataSize.takeError();
      llvm::ArrayRef<uint8_t> data = source_.bytesAt(rva + record.fixedSize, *dataSize);
      if (data.size() != *dataSize)
        return refuse(rule::kUnwindNotCarried, "{}: the data of its exception handler is outside the file", who);
      record.bytes.insert(record.bytes.end(), data.begin(), data.end());
      // Check now that every RVA in it can be re-aimed, so a refusal comes before the layout.
      std::vector<uint8_t> scratch(data.begin(), data.end());
      if (llvm::Error err = rewriteHandlerData(*kind, scratch, who)) return err;
    }
    records_.emplace(rva, std::move(record));
    return llvm::Error::success();
  }

  llvm::Expected<size_t> handlerDataSize(HandlerData kind, uint64_t at, const std::string &who) {
    size_t size = 0;
    if (kind == HandlerData::ScopeTable || kind == HandlerData::GsCheckSeh) {
      llvm::ArrayRef<uint8_t> count = source_.bytesAt(at, 4);
      if (count.size() != 4) return refuse(rule::kUnwindNotCarried, "{}: its scope table is outside the file", who);
      uint32_t scopes = read32le(count.data());
      if (scopes > kMaxScopes) return refuse(rule::kUnwindNotCarried,
                                             "{}: its scope table claims {} scopes", who, scopes);
      size = 4 + size_t(scopes) * 16;
    }
    if (kind == HandlerData::GsCheck || kind == HandlerData::GsCheckSeh) {
      llvm::ArrayRef<uint8_t> gs = source_.bytesAt(at + size, 4);
      if (gs.size() != 4) return refuse(rule::kUnwindNotCarried, "{}: its /GS handler data is outside the file", who);
      size += (read32le(gs.data()) & 4) ? 12 : 4;  // HasAlignment adds AlignedBaseOffset and Alignment
    }
    return size;
  }

  // Scope tables hold RVAs of the try range, the filter (or 1: EXCEPTION_EXECUTE_HANDLER) and the
  // target (0 for a __finally, whose handler field is the termination handler).
  llvm::Error rewriteHandlerData(HandlerData kind, llvm::MutableArrayRef<uint8_t> data, const std::string &who) {
    if (kind == HandlerData::GsCheck) return llvm::Error::success();  // frame offsets only
    uint32_t scopes = read32le(data.data());
    for (uint32_t i = 0; i < scopes; ++i) {
      uint8_t *scope = &data[4 + size_t(i) * 16];
      uint32_t begin = read32le(scope), end = read32le(scope + 4), filter = read32le(scope + 8),
               target = read32le(scope + 12);
      auto inside = [&](uint32_t rva, bool isEnd) -> std::optional<uint32_t> {
        std::optional<uint32_t> mapped = locator_.map(isEnd ? rva - 1 : rva);
        return mapped ? std::optional<uint32_t>(*mapped + (isEnd ? 1 : 0)) : std::nullopt;
      };
      std::optional<uint32_t> newBegin = inside(begin, false), newEnd = end ? inside(end, true) : std::nullopt;
      std::optional<uint32_t> newFilter = filter <= 1 || filter == 0xffffffff ? std::optional<uint32_t>(filter)
                                                                              : inside(filter, false);
      std::optional<uint32_t> newTarget = target == 0 ? std::optional<uint32_t>(0) : inside(target, false);
      if (!newBegin || !newEnd || !newFilter || !newTarget)
        return refuse(rule::kHandlerDataNotReaimed,
                      "{}: scope {} of its exception handler names code outside the patch (try [{:#x}, {:#x}), "
                           "handler {:#x}, target {:#x}) (needs restart)", who, i, begin, end, filter, target);
      write32le(scope, *newBegin);
      write32le(scope + 4, *newEnd);
      write32le(scope + 8, *newFilter);
      write32le(scope + 12, *newTarget);
    }
    return llvm::Error::success();
  }

  PeUnwindSource source_;
  const PeUnwindDialect &dialect_;
  Locator locator_;
  std::vector<Entry> entries_;
  std::map<uint64_t, UnwindRecord> records_;  // by patched RVA
};

}  // namespace

const PeUnwindDialect &peUnwindDialect(Machine machine) {
  switch (machine) {
  case Machine::X64: return x64UnwindDialect();
  case Machine::Arm64: return arm64UnwindDialect();
  }
  return x64UnwindDialect();  // not reached: the switch names every machine
}

llvm::Expected<PeUnwindSource> peUnwindSourceFor(const Image &patched) {
  PeUnwindSource source;
  source.machine = patched.machine;
  llvm::ArrayRef<uint8_t> file = patched.fileBytes();
  llvm::MemoryBufferRef buffer(llvm::StringRef(reinterpret_cast<const char *>(file.data()), file.size()), patched.path);
  llvm::Expected<std::unique_ptr<llvm::object::COFFObjectFile>> coff = llvm::object::COFFObjectFile::create(buffer);
  if (!coff) return refuse(rule::kUnwindNotCarried, "{}: {}", patched.path, errorText(coff.takeError()));
  if (const llvm::object::data_directory *d = (*coff)->getDataDirectory(llvm::COFF::EXCEPTION_TABLE); d && d->Size) {
    source.exceptionDirectoryRva = d->RelativeVirtualAddress;
    source.exceptionDirectory = patched.bytesAt(d->RelativeVirtualAddress, d->Size);
    if (source.exceptionDirectory.empty())
      return refuse(rule::kUnwindNotCarried,
                    "{}: the exception directory at rva {:#x} is outside the file", patched.path,
                         uint32_t(d->RelativeVirtualAddress));
  }
  const Image *image = &patched;
  source.bytesAt = [image](uint64_t rva, uint64_t size) { return image->bytesAt(rva, size); };
  const MachineTarget *target = &machineTarget(patched.machine);
  source.nameAt = [image, target](uint64_t rva) -> std::optional<std::string> {
    if (const Function *f = image->functionAt(rva); f && f->range.rva == rva && f->name) return f->name;
    constexpr uint64_t kThunkBytes = 12;
    if (std::optional<uint64_t> slot = target->importThunkSlot(image->bytesAt(rva, kThunkBytes), rva))
      for (const Import &i : image->imports)
        if (i.slotRva == *slot) return i.name;
    return std::nullopt;
  };
  return source;
}

llvm::Expected<std::unique_ptr<PeUnwindCopy>> readPeUnwind(PeUnwindSource source, std::vector<CarriedCode> carried) {
  auto copier = std::make_unique<Copier>(std::move(source), carried);
  if (llvm::Error e = copier->collect()) return e;
  return copier;
}

}  // namespace hotforge::emitter
