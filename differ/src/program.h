// One side of a diff: an Image with every function decoded, and the indexes that turn an address
// into something that can be compared across builds (a matched function and offset, an import,
// a named object, the content of a constant).
#pragma once

#include "hotforge/arch.h"

#include <llvm/ADT/DenseMap.h>

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

namespace hotforge::differ {

// What a reference points at, in terms that survive relinking.
struct SymbolKey {
  enum Kind : uint8_t { Intra, Function, Import, Data, Content, Anonymous, Unknown } kind = Unknown;
  uint64_t a = 0, b = 0, c = 0;
  // Data: the class of a second object at the same address (a linker label such as __TMC_END__
  // that shares its address with a variable). Anonymous: the end of a section the address also
  // is (stripped, __TMC_END__ after .data may be where .bss starts). Either may be the one meant.
  uint64_t alias = 0;
  bool operator==(const SymbolKey &o) const {
    if (kind != o.kind || b != o.b || c != o.c) return false;
    return a == o.a || ((kind == Data || kind == Anonymous) &&
                        (a == o.alias || alias == o.a || (alias == o.alias && alias != 0)));
  }
  bool operator!=(const SymbolKey &o) const { return !(*this == o); }
};

// A pointer-sized slot the loader fills: a GOT/IAT entry or a relocated pointer in data.
struct PointerTarget {
  const std::string *symbol = nullptr;  // imported or preemptible symbol (the relocation's)
  uint64_t rva = 0;                     // otherwise the local address it points at
};

enum class TargetClass : uint8_t { Stub, Function, ImportSlot, DataObject, PointerSlot, ReadOnly, Writable, Unknown };

// Sorted start addresses with a coarse table over them: finding the last start at or before an
// address then touches a few cache lines instead of a whole binary search (lookups of call and
// data targets are a large share of a diff).
class StartIndex {
public:
  StartIndex() = default;
  explicit StartIndex(std::vector<uint64_t> sortedStarts);
  // How many starts are at or before rva (the position std::upper_bound gives).
  size_t countAtOrBefore(uint64_t rva) const;
  const std::vector<uint64_t> &starts() const { return starts_; }

private:
  std::vector<uint64_t> starts_;
  std::vector<uint32_t> bucketBegin_;  // per bucket of 2^shift_ bytes from first_: starts before it
  uint64_t first_ = 0;
  unsigned shift_ = 0;
};

// The pointer slots of an image by address (a large library has a million): sorted arrays with
// a coarse index, a third of the memory of a hash map, and visited in address order.
class PointerSlots {
public:
  struct Slot {
    uint64_t rva;
    PointerTarget pointer;
  };
  PointerSlots() = default;
  // Slots in any order; of two at one address the later one counts, as relocations apply in order.
  explicit PointerSlots(std::vector<Slot> slots);
  const PointerTarget *find(uint64_t rva) const;
  bool contains(uint64_t rva) const { return find(rva) != nullptr; }
  const PointerTarget &at(uint64_t rva) const;  // a slot that is there
  size_t size() const { return pointers_.size(); }
  uint64_t rva(size_t i) const { return index_.starts()[i]; }
  const PointerTarget &pointer(size_t i) const { return pointers_[i]; }
  // The positions of the slots in [begin, end).
  std::pair<size_t, size_t> within(uint64_t begin, uint64_t end) const;

private:
  StartIndex index_;                     // the slots' addresses
  std::vector<PointerTarget> pointers_;  // parallel to them
};

// Values of a pure function of an address, shared by worker threads without a lock: open
// addressing over atomics. An entry is claimed, written, then published; a reader that finds it
// unpublished, or a writer that finds no free entry near, computes the value itself. The address
// ~0 is never kept (its key would read as claimed).
class AddressMemo {
public:
  explicit AddressMemo(size_t capacity = 0);
  std::optional<uint64_t> find(uint64_t address) const;
  void insert(uint64_t address, uint64_t value);

private:
  static constexpr uint64_t kFree = 0, kClaimed = ~uint64_t(0);
  static constexpr size_t kProbes = 16;
  struct Entry {
    std::atomic<uint64_t> key{kFree};  // address + 1 once published
    uint64_t value = 0;
  };
  std::unique_ptr<Entry[]> entries_;
  size_t mask_ = 0;
};

// A set of addresses, as one bit per byte in blocks of 1 KiB of addresses that exist only where
// addresses fall: built without sorting, asked without searching, and at most about 150 bytes per
// address when they are spread thinly.
class AddressSet {
public:
  void add(uint64_t address);
  bool contains(uint64_t address) const;
  // The lowest address of the set in (after, before).
  std::optional<uint64_t> firstBetween(uint64_t after, uint64_t before) const;

private:
  static constexpr unsigned kBlockShift = 10;
  using Block = std::array<uint64_t, (size_t(1) << kBlockShift) / 64>;
  llvm::DenseMap<uint64_t, uint32_t> blockIndex_;  // address >> kBlockShift -> index into blocks_
  std::vector<Block> blocks_;
};

// What the differ keeps of one decoded function. Its references and instruction starts live in
// the Program's chunk of consecutive functions, not in allocations of their own. A function that is
// the other build's function moved shares that one's references and keeps only its own targets.
struct FunctionCode : CodeSummary {
  static constexpr uint32_t kOwnCode = ~0u;
  // firstReference of a copy at the same address with the same bytes: its targets are the other's.
  static constexpr uint32_t kSameTargets = ~0u;
  uint32_t firstReference = 0, referenceCount = 0;  // in the chunk's references, or its targets when copied
  uint32_t firstStartWord = 0;                      // in the chunk's instruction-start words
  uint32_t copiedFrom = kOwnCode;                   // the other build's function whose code this is
};

// A CodeReference as a Program keeps it: 24 bytes instead of 40 (a large library has millions).
// Instructions are at most 15 bytes; offsetFrom is kept as its distance below the target, which
// is the immediate offset of an Arm64 load, store or ADD from the address an ADD formed.
class PackedReference {
public:
  explicit PackedReference(const CodeReference &r)
      : target_(r.target), offset_(r.offset), instruction_(r.instruction),
        offsetFromDistance_(r.offsetFrom ? int32_t(r.target - r.offsetFrom) : 0), kind_(uint32_t(r.kind)),
        encoding_(uint32_t(r.encoding)), size_(r.size), fieldOffset_(r.fieldOffset), scale_(r.scale),
        hasOffsetFrom_(r.offsetFrom != 0), indexed_(r.indexed) {}
  uint64_t target() const { return target_; }
  bool indexed() const { return indexed_; }
  CodeReference unpacked() const {
    return {.instruction = instruction_, .kind = ReferenceKind(kind_), .size = uint8_t(size_),
            .fieldOffset = uint8_t(fieldOffset_), .scale = uint8_t(scale_), .target = target_, .offset = offset_,
            .encoding = FixupKind(encoding_),
            .offsetFrom = hasOffsetFrom_ ? target_ - uint64_t(int64_t(offsetFromDistance_)) : 0, .indexed = indexed_ != 0};
  }

private:
  uint64_t target_;
  uint32_t offset_, instruction_;
  int32_t offsetFromDistance_;
  uint32_t kind_ : 3, encoding_ : 4, size_ : 5, fieldOffset_ : 5, scale_ : 3, hasOffsetFrom_ : 1, indexed_ : 1;
  static_assert(uint32_t(FixupKind::X64Rel8) < 16, "encoding_ holds every FixupKind in 4 bits");
};

// A function's references: a view that puts a moved function's own targets into the references it
// shares with the other build.
class ReferenceList {
public:
  ReferenceList(const PackedReference *references, const uint64_t *targets, size_t size)
      : references_(references), targets_(targets), size_(size) {}
  size_t size() const { return size_; }
  CodeReference operator[](size_t i) const {
    CodeReference r = references_[i].unpacked();
    if (targets_) r.target = targets_[i];
    return r;
  }
  struct Iterator {
    const ReferenceList *list;
    size_t index;
    CodeReference operator*() const { return (*list)[index]; }
    Iterator &operator++() { return ++index, *this; }
    bool operator!=(const Iterator &other) const { return index != other.index; }
  };
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, size_}; }

private:
  const PackedReference *references_;
  const uint64_t *targets_;  // null: the references' own targets
  size_t size_;
};

struct Program {
  explicit Program(const Image &image);

  const Image &image;
  std::vector<bool> diffable;             // per function: code Hotforge compares (not PLT stubs)
  std::vector<FunctionCode> code;         // per function, filled by decode()
  std::vector<std::string_view> nameKeys; // per function: normalised name, empty when unnamed
  std::vector<uint64_t> nameDigests;      // per function: digest of its name key
  std::vector<bool> coldPart;             // per function: a split-off part (.cold)
  // Per function: the function it was split off from, for unnamed parts that only that function
  // branches into (stripped .cold parts). Named parts are told by their names.
  std::vector<std::optional<uint32_t>> partOf;
  RelocationIndex relocations;
  PointerSlots pointers;
  std::unordered_map<uint64_t, const Import *> importSlots;
  std::vector<const DataObject *> data;   // non-TLS objects by rva
  std::vector<std::string_view> dataKeys; // parallel to data: normalised name
  AddressSet referenced;                  // targets inside the sections (where constants end)

  // Decodes every diffable function on one decoder per worker. A function whose `movedFrom` entry
  // names a function of `other` is first tried as that function's code moved: when its bytes equal
  // the other's everywhere but in the address fields of the other's references, it shares the
  // other's decoded code and only its targets are read from its own fields (ADRP pairs need their
  // neighbours and are always decoded).
  void decode(std::vector<std::unique_ptr<InstructionDecoder>> &decoders, const Program *other = nullptr,
              const std::vector<std::optional<size_t>> &movedFrom = {});
  // After decode: fills `referenced` and `partOf`; an unnamed function found only from code that
  // no code or data refers to cannot run, and is not diffed (GNU ld's branch over a stub group,
  // erratum veneers that its ADR fix left unused).
  void indexReferences();
  // After decode: finds the stubs that calls and branches land on, with the slot each jumps
  // through: those of .plt-like sections, and the import thunks in .text (jmp [IAT]), which
  // classify() then takes for stubs too.
  void findStubs(InstructionDecoder &decoder);
  // Before decode: an unnamed function found only from code that is an import thunk is the
  // import, as a thunk findStubs finds is (lld-link emits one per import, called or not).
  void takeDiscoveredThunksForImports(const InstructionDecoder &decoder);
  ReferenceList references(size_t function) const;
  // The index of the counted instruction that starts `offset` bytes into the function, if one does.
  std::optional<uint32_t> instructionAt(size_t function, uint64_t offset) const;

  TargetClass classify(uint64_t rva, const Function **function, const DataObject **object) const;
  // Whether classify(rva) gives the function itself, answered without lookups: most branches of a
  // function stay inside it.
  bool landsInItself(size_t function, uint64_t rva) const;
  bool isPointerSlot(uint64_t rva) const { return pointers.contains(rva); }
  // A relocated pointer that starts a read-only table code indexes (a switch's table of string
  // pointers, which clang-cl and gcc put in .rdata and .data.rel.ro without a name), rather than
  // a lone slot code loads an address from (a .got entry, mingw's .refptr): more than one slot's
  // bytes before the next address code refers to. Such a table compares by its whole content.
  bool isTableSlot(uint64_t rva) const;
  // The function whose range holds rva (as Image::functionAt, over a compact index).
  const Function *functionAt(uint64_t rva) const;
  // The named object whose range holds rva, whether or not its size was given.
  const DataObject *containingObject(uint64_t rva) const;
  bool isReadOnly(uint64_t rva) const;
  // The section holding rva, else the one that ends at rva or just before it (its alignment
  // padding): code takes the end of its data (crtstuff's __TMC_END__ after .data, a loop's bound).
  const Section *sectionOf(uint64_t rva) const;
  // The section that ends at rva or at most 15 bytes before it, whether or not the next section
  // starts there, and how far past its end rva is.
  struct SectionEnd {
    const Section *section;
    uint64_t distance;
  };
  std::optional<SectionEnd> pastSectionEnd(uint64_t rva) const;
  // The slot the stub at rva jumps through; found by findStubs, or decoded here.
  std::optional<uint64_t> stubSlot(uint64_t rva, InstructionDecoder &decoder) const;
  size_t functionIndex(const Function *f) const { return size_t(f - image.functions.data()); }
  size_t dataIndex(const DataObject *d) const { return dataSlots_[size_t(d - image.dataObjects.data())]; }

  // Content of `size` bytes at `rva`, with relocated pointers replaced by pointerClass(what they
  // point at).
  uint64_t contentHash(uint64_t rva, uint64_t size, const std::function<uint64_t(uint64_t)> &pointerClass) const;
  // A table at rva of 32-bit offsets from its own start into `within` (an x64 switch table moves
  // with its function): the instruction each entry selects; nothing when fewer than two entries
  // land in the function.
  std::optional<uint64_t> switchTableHash(uint64_t rva, const Function &within) const;
  uint64_t naturalExtent(uint64_t rva) const;
  // Read-only data that holds relocated pointers (a table whose length the code alone knows):
  // up to the next address code refers to, the next data object or the end of its section.
  uint64_t tableExtent(uint64_t rva) const;
  // The part of that extent its content decides: without the trailing pointer-size words that are
  // zero and hold no pointer (alignment padding, which another build may lay out otherwise).
  uint64_t tableContentExtent(uint64_t rva) const;
  // How many 32-bit entries from `rva` on, read as offsets from `rva`, land inside `within` (an
  // x64 switch table): 0 or 1 means it is no such table.
  uint64_t relativeTableEntries(uint64_t rva, const Function &within) const;
  // A table of 32-bit offsets from its start to C strings (clang's relative lookup table of a
  // switch returning string literals): at least two entries. [begin, end) spans the table and
  // its strings, which a copy must hold together to keep the offsets.
  struct RelativeStringTable {
    uint64_t entries, begin, end;
  };
  std::optional<RelativeStringTable> relativeStringTable(uint64_t rva) const;
  // The size with its NUL of the C string of text at rva, if one is there.
  std::optional<uint64_t> cStringSize(uint64_t rva) const;
  const std::vector<std::pair<uint64_t, uint64_t>> &stubRanges() const { return stubRanges_; }
  const std::map<uint64_t, uint64_t> &importThunks() const { return importThunks_; }

private:
  // The decoded code of consecutive functions, decoded by one worker.
  struct CodeChunk {
    std::vector<PackedReference> references;
    std::vector<uint64_t> targets;       // of the references of copied functions
    std::vector<uint64_t> starts;        // one bit per code byte: a counted instruction starts there
    std::vector<uint32_t> startsBefore;  // per word of `starts`: instructions in the function's earlier words
  };
  static constexpr size_t kFunctionsPerChunk = 256;
  static constexpr size_t kChunksBetweenReleases = 16;  // Image::releaseFilePages while decoding

  bool copyMovedCode(size_t function, size_t from, CodeChunk &chunk);
  void dropUnreachedDiscoveries();
  void findSplitParts();
  bool inStubSection(uint64_t rva) const;
  // The import slot that an import thunk at rva jumps through.
  std::optional<uint64_t> importThunkSlot(uint64_t rva, const InstructionDecoder &decoder) const;
  std::optional<uint64_t> decodeStubSlot(uint64_t rva, InstructionDecoder &decoder) const;
  bool isReadOnly(uint64_t rva, const Section *section) const;  // section: the one holding rva
  // Iterator over `data` of the first object that starts after rva.
  std::vector<const DataObject *>::const_iterator dataAfter(uint64_t rva) const;

  std::vector<CodeChunk> chunks_;
  const Program *copiedFrom_ = nullptr;  // whose functions copied functions share code with
  StartIndex functionStarts_;  // of image.functions
  StartIndex dataStarts_;      // of data
  std::vector<bool> dataStartsInside_;  // per function: a data object starts inside it, after its entry
  std::vector<std::pair<uint64_t, uint64_t>> stubRanges_;  // .plt-like sections
  std::map<uint64_t, uint64_t> importThunks_;  // thunk -> the import slot it jumps through
  // Per function, from decode to findStubs: the import slot it jumps through when it is a thunk
  // (0 when not), so that findStubs need not read the code at every call target again.
  std::vector<uint64_t> entryThunkSlots_;
  std::unordered_map<uint64_t, std::optional<uint64_t>> stubSlots_;  // .plt-like stub -> its slot
  std::vector<size_t> dataSlots_;  // per image data object: its index in `data`
  std::vector<AddressRange> relro_;  // read-only after relocation (ELF PT_GNU_RELRO)
};

// Strips compiler suffixes (.isra.N, .constprop.N, .part.N, .lto_priv.N, .llvm.N, .cold[.N]).
// Normalised names are prefixes of the name.
std::string_view normalizeFunctionName(std::string_view name, bool &coldPart);
// Static locals get numbered (counter.0, counter.3) by position: strip that number.
std::string_view normalizeDataName(std::string_view name);

// Image::releaseFilePages of one or two images at every `steps`-th step of a pass over the code.
void releaseFilePagesEvery(size_t steps, size_t step, const Image &image, const Image *other);

// Runs fn(worker, index) for index in [0, count) on `threads` workers, which take `grain`
// consecutive indexes at a time; fewer than two grains run on the calling thread.
void parallelFor(size_t count, unsigned threads, const std::function<void(unsigned, size_t)> &fn, size_t grain = 32);

}  // namespace hotforge::differ
