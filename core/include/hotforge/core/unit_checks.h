// The steps verifyUnit() is made of, for the packager (packing checks its own output with them,
// inspection runs them without a key) and the fuzz target. Not an API for the agent: it calls
// verifyUnit().
#pragma once

#include "hotforge/core/unit_reader.h"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge::unit_detail {

bool isLowerHex(const std::string &text, size_t length);

// A string quoted for messages: JSON escapes, invalid UTF-8 replaced.
std::string jsonQuoted(const std::string &text);

// Entry names are plain file names: see FORMAT.md ("Entry names").
Status checkEntryName(const std::string &name);

// What the manifest records from an entry's info: "baseline" (when info.baseline is an object),
// "sequence" and "supersedes" (when info.sequence is a positive integer; needs a baseline).
Outcome<nlohmann::json> recordedFromInfo(const nlohmann::json &info);

// Deepest nesting of arrays and objects in JSON text (strings skipped); stops counting past `limit`.
size_t jsonDepth(std::string_view text, size_t limit);

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
Outcome<UnitHeader> parseHeader(std::span<const uint8_t> unit);
// Same, reading the header from `unit` (at least its first 64 bytes) for a file of `fileSize` bytes.
Outcome<UnitHeader> parseHeader(std::span<const uint8_t> unit, uint64_t fileSize);
bool sameHeader(const UnitHeader &a, const UnitHeader &b);
// The manifest bytes of a unit whose header parseHeader accepted.
std::string_view manifestText(std::span<const uint8_t> unit, const UnitHeader &header);
// The manifest text: canonical JSON, schema, every field's type, names, limits, and that the
// entries' payloads tile the payload area of `payloadSize` bytes exactly.
Outcome<Manifest> parseManifest(std::string_view text, uint64_t payloadSize);
// Hashes, bounded decompression, hashes again.
Outcome<std::vector<UnitEntry>> checkPayloads(const Manifest &manifest, std::span<const uint8_t> payload);

// Everything verifyUnit checks except the signature. Only for fuzzing: never trust its result.
Outcome<std::vector<UnitEntry>> checkUnitContentsWithoutSignature(std::span<const uint8_t> unit);

}  // namespace hotforge::unit_detail
