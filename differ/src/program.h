// One side of a diff: an Image with every function decoded, and the indexes that turn an address
// into something that can be compared across builds (a matched function and offset, an import,
// a named object, the content of a constant).
#pragma once

#include "hotforge/arch.h"

#include <functional>
#include <unordered_map>

namespace hotforge::differ {

// What a reference points at, in terms that survive relinking.
struct SymbolKey {
  enum Kind : uint8_t { Intra, Function, Import, Data, Content, Anonymous, Unknown } kind = Unknown;
  uint64_t a = 0, b = 0, c = 0;
  // Data only: the class of a second object at the same address (a linker label such as
  // __TMC_END__ that shares its address with a variable). Either name may be the one meant.
  uint64_t alias = 0;
  bool operator==(const SymbolKey &o) const {
    if (kind != o.kind || b != o.b || c != o.c) return false;
    return a == o.a || (kind == Data && (a == o.alias || alias == o.a || (alias == o.alias && alias != 0)));
  }
  bool operator!=(const SymbolKey &o) const { return !(*this == o); }
};

// A pointer-sized slot the loader fills: a GOT/IAT entry or a relocated pointer in data.
struct PointerTarget {
  std::optional<std::string> symbol;  // imported or preemptible symbol
  uint64_t rva = 0;                   // otherwise the local address it points at
};

enum class TargetClass : uint8_t { Stub, Function, ImportSlot, DataObject, PointerSlot, ReadOnly, Writable, Unknown };

struct Program {
  explicit Program(const Image &image);

  const Image &image;
  std::vector<bool> diffable;             // per function: code Hotforge compares (not PLT stubs)
  std::vector<DecodedFunction> decoded;   // per function
  std::vector<std::string> nameKeys;      // per function: normalised name, empty when unnamed
  std::vector<bool> coldPart;             // per function: a split-off part (.cold)
  // Per function: the function it was split off from, for unnamed parts that only that function
  // branches into (stripped .cold parts). Named parts are told by their names.
  std::vector<std::optional<size_t>> partOf;
  RelocationIndex relocations;
  std::unordered_map<uint64_t, PointerTarget> pointers;
  std::unordered_map<uint64_t, const Import *> importSlots;
  std::vector<const DataObject *> data;   // non-TLS objects by rva
  std::vector<std::string> dataKeys;      // parallel to data: normalised name
  std::vector<uint64_t> referenced;       // sorted unique targets of every reference (extents of constants)

  TargetClass classify(uint64_t rva, const Function **function, const DataObject **object) const;
  // The named object whose range holds rva, whether or not its size was given.
  const DataObject *containingObject(uint64_t rva) const;
  bool isReadOnly(uint64_t rva) const;
  std::optional<uint64_t> stubSlot(uint64_t rva, InstructionDecoder &decoder) const;
  size_t functionIndex(const Function *f) const { return size_t(f - image.functions.data()); }
  size_t dataIndex(const DataObject *d) const { return dataSlots_[size_t(d - image.dataObjects.data())]; }

  // Content of `size` bytes at `rva`, with relocated pointers replaced by pointerClass(what they
  // point at) and relative jump-table entries into `within` replaced by instruction indexes.
  uint64_t contentHash(uint64_t rva, uint64_t size, const Function *within,
                       const std::function<uint64_t(uint64_t)> &pointerClass) const;
  uint64_t naturalExtent(uint64_t rva) const;
  // How many 32-bit entries from `rva` on, read as offsets from `rva`, land inside `within` (an
  // x64 switch table): 0 or 1 means it is no such table.
  uint64_t relativeTableEntries(uint64_t rva, const Function &within) const;
  void findSplitParts();  // after decoding
  const std::vector<std::pair<uint64_t, uint64_t>> &stubRanges() const { return stubRanges_; }

private:
  std::vector<std::pair<uint64_t, uint64_t>> stubRanges_;
  std::vector<size_t> dataSlots_;  // per image data object: its index in `data`
  std::vector<AddressRange> relro_;  // read-only after relocation (ELF PT_GNU_RELRO)  // .plt-like sections
};

// Strips compiler suffixes (.isra.N, .constprop.N, .part.N, .lto_priv.N, .llvm.N, .cold[.N]).
std::string normalizeFunctionName(std::string_view name, bool &coldPart);
// Static locals get numbered (counter.0, counter.3) by position: strip that number.
std::string normalizeDataName(std::string_view name);

// Runs fn(worker, index) for index in [0, count) on `threads` workers.
void parallelFor(size_t count, unsigned threads, const std::function<void(unsigned, size_t)> &fn);

}  // namespace hotforge::differ
