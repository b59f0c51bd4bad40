// The Image model: everything Hotforge knows about one executable or shared library, read from
// ELF64 or PE32+ for x64 and Arm64. Every later stage (differ, emitter, loader) works on this type
// and never on the raw format, so a new format only has to fill an Image.
#pragma once

#include "hotforge/core/bytes.h"   // hexEncode, sha256
#include "hotforge/core/files.h"   // size limits
#include "hotforge/core/target.h"  // Format, Machine, Permissions

#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/Error.h>
#include <llvm/Support/MemoryBuffer.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace hotforge {

// Where a function boundary or name came from. The enumerators are in precedence order: when two
// sources describe the same start address, the earlier one decides the size and the name (see
// docs/formats.md for why).
enum class FunctionSource : uint8_t {
  Symtab,     // ELF .symtab or COFF symbol table of the binary itself
  DebugFile,  // .symtab of a separate debug file (--debug-file, .gnu_debuglink, build-id)
  Pdb,        // S_GPROC32/S_LPROC32 records of the matching PDB
  Dwarf,      // DW_TAG_subprogram with an address range
  Dynsym,     // ELF .dynsym
  Pdata,      // PE exception directory (RUNTIME_FUNCTION)
  EhFrame,    // ELF .eh_frame FDE
  Exports,    // PE export directory (start only; size inferred)
  Code,       // discovered from code: a call, jump or pointer target, or code in a gap (docs/formats.md)
};
constexpr int kFunctionSourceCount = 9;
std::string_view functionSourceName(FunctionSource source);

struct AddressRange {
  uint64_t rva = 0;
  uint64_t size = 0;
  uint64_t end() const { return rva + size; }
  bool contains(uint64_t address) const { return address >= rva && address - rva < size; }
};

struct Section {
  std::string name;
  uint64_t rva = 0;   // relative to the image base; 0 for sections that are not loaded
  uint64_t size = 0;  // size in memory
  uint64_t fileOffset = 0;
  uint64_t fileSize = 0;  // 0 for .bss-like sections
  Permissions permissions;
  bool loaded = false;  // part of the running image (ELF SHF_ALLOC; every PE section)
};

// ELF program headers; PE images have none.
struct Segment {
  std::string type;  // "LOAD", "TLS", "DYNAMIC", "GNU_RELRO", ...
  uint64_t rva = 0;
  uint64_t memorySize = 0;
  uint64_t fileOffset = 0;
  uint64_t fileSize = 0;
  Permissions permissions;
};

struct CodeViewRecord {
  std::string pdbPath;
  std::array<uint8_t, 16> guid{};
  uint32_t age = 0;
};

struct Identity {
  std::array<uint8_t, 32> sha256{};  // of the whole file
  std::vector<uint8_t> buildId;      // ELF NT_GNU_BUILD_ID; empty when absent or for PE
  // PE only (zero for ELF).
  uint32_t timeDateStamp = 0;
  uint32_t checkSum = 0;
  uint32_t sizeOfImage = 0;
  std::optional<CodeViewRecord> codeView;
};

struct Function {
  AddressRange range;
  std::optional<std::string> name;  // nullopt when no source names it (stripped code)
  FunctionSource source = FunctionSource::Symtab;  // the source that decided the boundary
  FunctionSource nameSource = FunctionSource::Symtab;  // the source of `name`, when there is one
  uint32_t sourceMask = 0;  // every source that saw this start address (bit = FunctionSource)
  // Split parts that unwind as part of this function (PE chained .pdata entries).
  std::vector<AddressRange> parts;
  bool sizeInferred = false;  // no source gave a size: it reaches to the next start or section end

  bool seenBy(FunctionSource s) const { return sourceMask & (1u << static_cast<unsigned>(s)); }
};

enum class DataSource : uint8_t { Symtab, DebugFile, Pdb, Dynsym };
std::string_view dataSourceName(DataSource source);

struct DataObject {
  std::string name;
  AddressRange range;  // for thread-local objects: offset within the TLS template
  bool threadLocal = false;
  DataSource source = DataSource::Symtab;
  bool sizeKnown = true;  // false: the source gave no size; it reaches to the next object
};

enum class ImportKind : uint8_t { PltSlot, GotSlot, IatSlot };
std::string_view importKindName(ImportKind kind);

struct Import {
  std::string name;     // symbol name, or "#ordinal" for PE imports by ordinal
  std::string library;  // PE DLL name; empty on ELF
  uint64_t slotRva = 0; // the GOT/IAT slot the loader fills with the symbol's address
  ImportKind kind = ImportKind::GotSlot;
  std::string version{};  // ELF: the symbol's version (GLIBC_2.2.5), empty when it has none
};

// Images hold hundreds of thousands of relocations: 64 bytes each, their strings kept elsewhere.
struct Relocation {
  uint64_t rva = 0;
  uint32_t type = 0;
  std::string_view typeName;  // a static string
  const std::string *symbol = nullptr;  // the symbol's name, kept once by the Image; null: none
  int64_t addend = 0;
  std::string_view version{};  // ELF: the symbol's version, kept by the Image; empty when it has none
};

// Whether two relocations, of one build or of two, name the same symbol (or both none): their
// names are kept by their own Images, so it compares what they point at.
inline bool sameSymbol(const Relocation &a, const Relocation &b) {
  return a.symbol == b.symbol || (a.symbol && b.symbol && *a.symbol == *b.symbol);
}

// The PE load configuration fields Hotforge relies on.
struct LoadConfig {
  uint32_t size = 0;
  uint64_t securityCookie = 0;
  uint64_t guardFlags = 0;
  uint32_t hotPatchTableOffset = 0;
};

// How much of the executable sections that hold functions (ELF: all but the PLT) the function
// table covers.
struct CodeCoverage {
  uint64_t codeBytes = 0;      // executable bytes in the file
  uint64_t functionBytes = 0;  // in a function or one of its parts
  uint64_t fillBytes = 0;      // alignment fill (nop, int3, zero words) between functions
  bool discoveryRan = false;   // the tables left code uncovered, so functions were discovered from code
  double ratio() const { return codeBytes ? double(functionBytes + fillBytes) / double(codeBytes) : 1.0; }
};

struct ImageReadOptions {
  std::string pdbPath;    // PE: use this PDB instead of the one the CodeView record names
  std::string debugFile;  // ELF: separate debug file
  std::string debugDir;   // ELF: directory searched for .gnu_debuglink names and .build-id/xx/yyyy.debug
};

// An executable image with its file bytes. Move-only: the bytes are owned (memory-mapped).
class Image {
public:
  Image() = default;
  Image(Image &&) noexcept = default;
  Image &operator=(Image &&) noexcept = default;

  std::string path;
  Format format{};
  Machine machine{};
  uint64_t imageBase = 0;  // preferred load address; ELF: lowest PT_LOAD address
  uint64_t entryRva = 0;   // 0 when the image has no entry point
  Identity identity;
  std::vector<Section> sections;
  std::vector<Segment> segments;
  std::vector<Function> functions;  // sorted by rva, starts unique
  CodeCoverage coverage;
  std::vector<DataObject> dataObjects;  // sorted by (threadLocal, rva, name)
  std::vector<Import> imports;
  std::vector<Relocation> relocations;  // ELF dynamic relocations; PE base relocations
  std::optional<LoadConfig> loadConfig;
  std::string debugInfoPath;  // the PDB or separate debug file that was read, if any
  std::vector<std::string> warnings;  // optional information that could not be read

  // The file bytes that back [rva, rva+size), or an empty range when any part of it has no bytes
  // in the file (unmapped or zero-fill).
  llvm::ArrayRef<uint8_t> bytesAt(uint64_t rva, uint64_t size) const;
  const Section *sectionAt(uint64_t rva) const;
  const Function *functionAt(uint64_t rva) const;  // the function whose range holds rva
  llvm::ArrayRef<uint8_t> fileBytes() const;
  // Gives the pages of a memory-mapped file that were read back to the kernel: they are clean
  // copies of the file and are read again when touched. Called after passes over the whole file
  // (hashing, decoding), it keeps resident memory to what the diff still holds. No effect on
  // bytes that are not mapped from a file.
  void releaseFilePages() const;

  void adoptBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer) { buffer_ = std::move(buffer); }
  // Once the sections are read: sectionAt then searches a sorted table (a diff asks millions of
  // times) instead of walking every section; sections changed later need another call.
  void indexSections();
  // The one copy of a name that relocations refer to; it lives as long as the Image (moves too).
  const std::string *keepRelocationName(std::string_view name);

private:
  std::unique_ptr<llvm::MemoryBuffer> buffer_;
  struct SectionSpan {
    uint64_t begin, end;
    size_t index;  // in `sections`
  };
  // The loaded sections by address, when none overlap (else empty: sectionAt walks them in order).
  std::vector<SectionSpan> sectionIndex_;
  // Node-based, so the strings stay put; found by string_view without building a string.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view name) const { return std::hash<std::string_view>{}(name); }
  };
  std::unordered_set<std::string, NameHash, std::equal_to<>> relocationNames_;
};

// Reads an ELF64 or PE32+ image for x64 or Arm64. Errors name the file and, where the format
// tells it, the offending offset.
llvm::Expected<Image> readImage(const std::string &path, const ImageReadOptions &options = {});

// Same, from bytes already in memory (fuzzing, tests); `name` is used in messages.
llvm::Expected<Image> readImage(std::unique_ptr<llvm::MemoryBuffer> buffer,
                                const ImageReadOptions &options = {});

// A whole regular file of at most `maxSize` bytes, for LLVM's readers: a FIFO, a device or a
// directory is refused at once (hotforge/core/files.h).
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> readFileBuffer(const std::string &path,
                                                                   uint64_t maxSize = kMaxBinaryFileSize);

// A GUID as Windows tools print it: "9445CF05-3459-08BF-4C4C-44205044422E" (first three fields
// little-endian).
std::string guidString(const std::array<uint8_t, 16> &guid);

}  // namespace hotforge
