// Pieces shared by the packager's sources, and the unsigned content check the fuzz target uses.
// Not installed; nothing outside packager/ and tests/fuzz/ includes this.
#pragma once

#include "hotforge/image.h"  // sha256, hexEncode

#include "hotforge/unit.h"

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace hotforge::unit_detail {

bool isLowerHex(const std::string &text, size_t length);

// A string quoted for messages: JSON escapes, invalid UTF-8 replaced.
std::string jsonQuoted(const std::string &text);

// Entry names are plain file names: see FORMAT.md ("Entry names").
llvm::Error checkEntryName(const std::string &name);
std::string foldCase(const std::string &name);  // ASCII lower case, for the duplicate check

// What the manifest records from an entry's info: "baseline" (when info.baseline is an object),
// "sequence" and "supersedes" (when info.sequence is a positive integer; needs a baseline).
llvm::Expected<nlohmann::json> recordedFromInfo(const nlohmann::json &info);

// Deepest nesting of arrays and objects in JSON text (strings skipped); stops counting past `limit`.
size_t jsonDepth(llvm::StringRef text, size_t limit);

// Header byte offsets (FORMAT.md).
inline constexpr size_t kOffVersion = 6, kOffFlags = 8, kOffHeaderSize = 10, kOffReserved = 12,
                        kOffManifestOffset = 16, kOffManifestSize = 24, kOffPayloadOffset = 32,
                        kOffPayloadSize = 40, kOffSignatureOffset = 48, kOffSignatureSize = 56;

struct ManifestEntry {
  std::string name;
  uint64_t offset = 0, size = 0, compressedSize = 0;
  std::array<uint8_t, 32> sha256{}, compressedSha256{};
  nlohmann::json info;
};

struct Manifest {
  nlohmann::json json;
  std::string signerFingerprint;
  std::vector<ManifestEntry> entries;
};

// Magic, version, flags, and every offset and size against the file size. Reads nothing else.
llvm::Expected<UnitHeader> parseHeader(llvm::ArrayRef<uint8_t> unit);
// Same, reading the header from `unit` (at least its first 64 bytes) for a file of `fileSize` bytes.
llvm::Expected<UnitHeader> parseHeader(llvm::ArrayRef<uint8_t> unit, uint64_t fileSize);
bool sameHeader(const UnitHeader &a, const UnitHeader &b);
// The manifest text: canonical JSON, schema, every field's type, names, limits, and that the
// entries' payloads tile the payload area of `payloadSize` bytes exactly.
llvm::Expected<Manifest> parseManifest(llvm::StringRef text, uint64_t payloadSize);
// Hashes, bounded decompression, hashes again.
llvm::Expected<std::vector<UnitEntry>> checkPayloads(const Manifest &manifest, llvm::ArrayRef<uint8_t> payload);

// Everything verifyUnit checks except the signature. Only for fuzzing: never trust its result.
llvm::Expected<std::vector<UnitEntry>> checkUnitContentsWithoutSignature(llvm::ArrayRef<uint8_t> unit);

}  // namespace hotforge::unit_detail
