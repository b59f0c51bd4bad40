// PE unwind data for the functions a patch image carries: x64 RUNTIME_FUNCTION + UNWIND_INFO and
// Arm64 .pdata + .xdata, copied from the patched build and re-aimed at the image's RVAs
// (docs/format.md, "PE container").
#pragma once

#include "hotforge/image.h"

#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotforge::emitter {

// A function the image carries: where the patched build has it and where the image has it.
struct CarriedCode {
  uint64_t patchedRva = 0, size = 0;
  uint32_t imageRva = 0;
  std::optional<std::string> name;
};

// The patched build, as the unwind copier reads it.
struct PeUnwindSource {
  Machine machine{};
  llvm::ArrayRef<uint8_t> exceptionDirectory;  // the patched build's .pdata entries
  uint64_t exceptionDirectoryRva = 0;          // where they are (x64 indirect entries point into them)
  // The patched build's bytes at [rva, rva+size), empty when they are not all in the file.
  std::function<llvm::ArrayRef<uint8_t>(uint64_t rva, uint64_t size)> bytesAt;
  // The name of the routine at `rva` (a function starting there, or the import an import thunk
  // there jumps to), for recognising exception handlers.
  std::function<std::optional<std::string>(uint64_t rva)> nameAt;
};

// Reads the exception directory, names and bytes from a patched PE image.
llvm::Expected<PeUnwindSource> peUnwindSourceFor(const Image &patched);

struct PeUnwindTables {
  std::vector<uint8_t> pdata;  // sorted by begin address; placed at pdataRva
  std::vector<uint8_t> xdata;  // UNWIND_INFO (x64) / .xdata records (Arm64); placed at xdataRva
  size_t entries = 0;          // RUNTIME_FUNCTION entries in pdata
};

// The unwind entries and records of the carried functions, read once from the patched build.
class PeUnwindCopy {
public:
  virtual ~PeUnwindCopy() = default;
  // The exception handlers (patched RVAs) that the unwind data names and that lie outside the
  // carried code: each needs a stub in the image that jumps to the base's handler.
  virtual std::vector<uint64_t> handlersOutside() const = 0;
  // The tables for the image; `handlerStubs` maps each handler of handlersOutside() to the image
  // RVA of its stub.
  virtual llvm::Expected<PeUnwindTables> emit(uint32_t pdataRva, uint32_t xdataRva,
                                              const std::map<uint64_t, uint32_t> &handlerStubs) = 0;
};

// Reads the unwind data of every carried function. Fails, with the function and the reason, for
// unwind data the copier cannot re-aim.
llvm::Expected<std::unique_ptr<PeUnwindCopy>> readPeUnwind(PeUnwindSource source, std::vector<CarriedCode> carried);

// How one machine lays out PE unwind data: its .pdata entries and its unwind records (x64
// RUNTIME_FUNCTION + UNWIND_INFO, Arm64 .pdata + .xdata). One per machine, from
// peUnwindDialect(), the one switch over Machine here.
class PeUnwindDialect {
public:
  virtual ~PeUnwindDialect() = default;
  virtual size_t entrySize() const = 0;
  virtual bool entryHoldsEnd() const = 0;
  // The end of the code a .pdata entry covers (its record gives the length when the entry does not).
  virtual llvm::Expected<uint32_t> entryEnd(llvm::ArrayRef<uint8_t> entry, const PeUnwindSource &source,
                                            const std::string &who) const = 0;
  // What an entry's UnwindData field names: a record, another entry (x64: UnwindData | 1), or
  // nothing, the unwinding being packed into the entry (Arm64: flag 1 or 2).
  enum class Unwind { Record, Indirect, Packed };
  virtual Unwind unwindOf(uint32_t unwindData) const = 0;
  // How many bytes at a record's start tell its size, from its first 4.
  virtual size_t headerSize(llvm::ArrayRef<uint8_t> first) const = 0;
  // The record size its header gives, up to and including the exception handler RVA or the
  // chained entry; `checkLength`: the buffer must hold all of it. Fails on truncated headers and
  // unknown versions.
  virtual llvm::Expected<size_t> recordSize(llvm::ArrayRef<uint8_t> record, bool checkLength) const = 0;
  // The record ends in its parent's .pdata entry (x64 UNW_FLAG_CHAININFO).
  virtual bool chained(llvm::ArrayRef<uint8_t> record) const = 0;
  // The record ends in an exception handler RVA, followed by the handler's data.
  virtual bool hasHandler(llvm::ArrayRef<uint8_t> record) const = 0;
};
const PeUnwindDialect &peUnwindDialect(Machine machine);
const PeUnwindDialect &x64UnwindDialect();
const PeUnwindDialect &arm64UnwindDialect();

}  // namespace hotforge::emitter
