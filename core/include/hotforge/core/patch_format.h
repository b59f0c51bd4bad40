// The hotpatch image format as a loader sees it: the records (docs/format.md), the container
// around them (an ELF shared object or a PE32+ DLL), the fixups and the entry redirections. This
// is the part of Hotforge that runs on target hosts and inside patched processes, so it needs
// nothing but the C++ standard library.
#pragma once

#include "hotforge/core/outcome.h"
#include "hotforge/core/target.h"

#include <array>
#include <compare>
#include <functional>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge {

// Never reused: a reader refuses versions it does not know.
constexpr uint32_t kPatchFormatVersion = 3;

// What the loader writes at the entry of a base function.
enum class RedirectKind : uint8_t {
  X64Jump32 = 1,    // E9 rel32 (5 bytes) to the new function, or to its stub when out of reach
  X64ShortJump = 2, // EB rel8 (2 bytes) into an E9 rel32 written in nearby padding (jumpOffset)
  X64Absolute = 3,  // FF 25 00000000 + 8-byte address (14 bytes)
  A64Branch = 4,    // B imm26 (4 bytes) to the new function, or to its stub when out of reach
  A64Absolute = 5,  // LDR x16, #8; BR x16; .quad address (16 bytes)
};
std::string_view redirectKindName(RedirectKind kind);
unsigned redirectSize(RedirectKind kind);

// How an address is encoded: the instruction fields the differ finds (each machine's codec reads
// and writes them, machine_target.h) and the data kinds, for pointers in copied data and unwind
// tables. Records hold every kind but None and X64Rel8.
enum class FixupKind : uint8_t {
  None = 0,          // nothing to rewrite: the address follows from another reference (an ADD's result)
  X64Rel32 = 1,      // instruction field: target - end of instruction
  X64Abs64 = 2,      // instruction field: absolute address
  A64Branch26 = 3,
  A64Branch19 = 4,
  A64Branch14 = 5,
  A64Literal19 = 6,
  A64Adr21 = 7,
  A64AdrPage21 = 8,
  A64AddLo12 = 9,
  A64LdStLo12 = 10,
  Data64 = 11,       // 8-byte absolute address in data
  Data32PcRel = 12,  // 4-byte target - site in data (.eh_frame, exception tables)
  Data64PcRel = 13,  // 8-byte target - site in data
  X64Rel8 = 14,      // jmp/jcc rel8: the emitter re-aims one that leaves its function through an island
};
std::string_view fixupKindName(FixupKind kind);

// What a fixup's target counts from.
enum class FixupSpace : uint8_t {
  Image = 0,   // an RVA in this image
  Base = 1,    // an RVA in the running base
  Import = 2,  // an index into PatchImage::imports: the address the symbol resolves to
};
std::string_view fixupSpaceName(FixupSpace space);  // "patch", "base", "import"

struct PatchFixup {
  uint32_t site = 0;             // image RVA of the instruction (instruction kinds) or of the field
  FixupKind kind = FixupKind::X64Rel32;
  uint8_t fieldOffset = 0;       // x64: the field's position within the instruction
  uint8_t instructionSize = 0;   // x64: so rel32 is measured from the instruction's end
  uint8_t scale = 0;             // A64LdStLo12: log2 of the access size
  FixupSpace space = FixupSpace::Base;
  uint64_t target = 0;
  uint32_t veneer = 0;           // image RVA of a veneer for a branch that cannot reach (0: none)
};

constexpr size_t kMaxExpectedBytes = 24;  // PatchRedirect::expected, as the records hold it

struct PatchRedirect {
  std::optional<std::string> name;
  uint32_t baseRva = 0, baseSize = 0;
  uint32_t patchRva = 0;       // the new function in this image
  uint32_t stubRva = 0;        // an absolute jump in this image to the new function
  uint8_t entryOffset = 0;     // bytes kept at the entry (endbr64, BTI landing pad)
  RedirectKind kind = RedirectKind::X64Jump32;
  std::vector<uint8_t> expected;  // base bytes from baseRva - paddingBefore, as the loader must find them
  uint8_t paddingBefore = 0;   // padding bytes before the entry that the redirect overwrites
  int32_t jumpOffset = 0;      // X64ShortJump: where the E9 rel32 goes, from baseRva (in padding)
  // Every byte the entry write covers, padding included: [baseRva + overwrittenOffset, + overwrittenSize).
  int32_t overwrittenOffset = 0;
  uint32_t overwrittenSize = 0;
  // The function's own code branches into the overwritten bytes: no thread may be inside the
  // function (at a pc in it or with a return address into it) when the jump is written.
  bool quiescent = false;
};

struct PatchSection {
  std::string name;
  uint32_t rva = 0;
  std::vector<uint8_t> bytes;
  uint32_t memorySize = 0;  // >= bytes.size(); the rest is zero-filled
  Permissions permissions;
};

struct PatchFunction {
  std::optional<std::string> name;
  uint32_t rva = 0, size = 0;  // in this image
  uint64_t patchedRva = 0;     // where the patched build has it
  bool added = false;
};

struct PatchBaseline {
  std::string fileName;
  std::array<uint8_t, 32> sha256{};
  std::vector<uint8_t> buildId;
  uint32_t timeDateStamp = 0, checkSum = 0, sizeOfImage = 0;
};

// A symbol the patch uses that the base does not import: each loader resolves it in the target
// before it writes anything, and refuses the patch naming it when it cannot.
struct PatchImport {
  std::string symbol;
  std::string version;  // ELF: the symbol version the patched build binds (empty: unversioned)
  std::string library;  // PE: the DLL that exports it (empty on ELF: the target's search order)
  bool operator==(const PatchImport &) const = default;
  auto operator<=>(const PatchImport &) const = default;
};
// "symbol@version from library", for messages.
std::string importDisplayName(const PatchImport &import);

struct PatchSizes {
  uint64_t code = 0, data = 0, metadata = 0, file = 0;
};

struct PatchImage {
  Format format{};
  Machine machine{};
  PatchBaseline baseline;
  uint32_t sequence = 1;
  uint32_t imageSize = 0;  // bytes to map, page aligned
  std::vector<PatchSection> sections;
  std::vector<PatchFunction> functions;
  std::vector<PatchRedirect> redirects;
  std::vector<PatchFixup> fixups;
  std::vector<PatchImport> imports;  // in order of first use; FixupSpace::Import fixups index it
  PatchSizes sizes;
  std::vector<uint8_t> file;  // the container, ready to write
};

// The .hotpatch record section: identity, redirects, fixups, functions, imports.
std::vector<uint8_t> encodeRecords(const PatchImage &image);
// Fills identity, redirects, fixups and functions of `image` from a record section.
Status decodeRecords(std::span<const uint8_t> records, PatchImage &image);

inline constexpr char kRecordSectionName[] = ".hotpatch";

// The records of a patch image file (either container), checked against the file's bounds.
bool looksLikePatchImage(std::span<const uint8_t> file);
Outcome<PatchImage> readPatchImage(std::span<const uint8_t> file);

// The address of every import of `image`, in order, from `resolve` (a loader's way to find a
// symbol in the target; a failure says why it is not there). Fails naming every symbol that does
// not resolve, so a loader calls it before it writes anything.
using ImportResolver = std::function<Outcome<uint64_t>(const PatchImport &)>;
Outcome<std::vector<uint64_t>> resolveImports(const PatchImage &image, const ImportResolver &resolve);

// Applies every fixup for a base loaded at `baseAddress` and this image at `imageAddress`, with
// `importAddresses` from resolveImports, into `memory` (the image's sections laid out at their
// RVAs, imageSize bytes). Fails when a field cannot hold its value and no veneer is given.
Status applyFixups(const PatchImage &image, uint64_t baseAddress, uint64_t imageAddress,
                   std::span<const uint64_t> importAddresses, std::span<uint8_t> memory);

// The image's sections laid out at their RVAs (imageSize bytes, zero-filled between).
std::vector<uint8_t> layOut(const PatchImage &image);

// The base bytes a redirect overwrites (as recorded, padding included), with the base at
// `baseAddress`. A thread whose next instruction starts strictly inside (begin, end) would
// execute half a jump, so a loader waits until none is there; `begin` itself stays an
// instruction boundary.
struct AddressSpan {
  uint64_t begin = 0, end = 0;
  bool strictlyContains(uint64_t address) const { return address > begin && address < end; }
  bool contains(uint64_t address) const { return address >= begin && address < end; }
};
AddressSpan overwrittenSpan(const PatchRedirect &redirect, uint64_t baseAddress);
// Why a thread at `pc` whose stack holds `stack` is in the way of writing `redirect` (empty: it is
// not): inside the overwritten bytes, or, for a quiescent redirect (or with `strict`), anywhere in
// the function or with a return address into it.
std::string threadInTheWay(const PatchRedirect &redirect, uint64_t baseAddress, uint64_t pc,
                           std::span<const uint64_t> stack, bool strict);

// What a loader writes for one redirect: `bytes` at `address`, once the memory at
// `expectedAddress` holds `redirect.expected`.
struct EntryWrite {
  uint64_t address = 0, expectedAddress = 0;
  std::vector<uint8_t> bytes;
};
// The write for `redirect` with the base at `baseAddress` and the image at `imageAddress`; fails
// when the jump cannot reach the new function or its stub.
Outcome<EntryWrite> entryWrite(const PatchRedirect &redirect, Machine machine, uint64_t baseAddress,
                               uint64_t imageAddress);

}  // namespace hotforge
