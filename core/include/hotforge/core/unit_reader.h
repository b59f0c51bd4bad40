// Reading delivery units: the format's constants, Ed25519 public keys, and verifyUnit(), which
// trusts nothing before the signature checks out and bounds every size it reads. The byte layout
// is in packager/FORMAT.md. Writing units (packing, signing, keygen) is the packager's part
// (hotforge/unit.h); this part runs in the agent too, so it needs only the C++ standard library,
// OpenSSL 3, zstd and nlohmann-json.
#pragma once

#include "hotforge/core/files.h"
#include "hotforge/core/outcome.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge {

// ---- format constants (FORMAT.md) ----
inline constexpr char kUnitMagic[6] = {'H', 'F', 'U', 'N', 'I', 'T'};
inline constexpr uint16_t kUnitFormatVersion = 1;
inline constexpr uint64_t kUnitHeaderSize = 64;
inline constexpr uint64_t kUnitSignatureSize = 64;
inline constexpr const char *kUnitSchema = "hotforge.unit/1";
// Limits a reader enforces before it allocates anything.
inline constexpr uint64_t kUnitMaxImageSize = uint64_t(2) << 30;       // one uncompressed image: 2 GiB
inline constexpr uint64_t kUnitMaxTotalImageSize = uint64_t(8) << 30;  // all images of one unit: 8 GiB
inline constexpr uint64_t kUnitMaxManifestSize = uint64_t(64) << 20;   // 64 MiB
inline constexpr size_t kUnitMaxEntries = 4096;
inline constexpr size_t kUnitMaxJsonDepth = 64;

// ---- public keys ----
struct PublicKey {
  std::array<uint8_t, 32> raw{};            // the raw Ed25519 public key
  std::string fingerprint() const;          // hex SHA-256 of `raw`
  bool operator==(const PublicKey &) const = default;
};

// An Ed25519 public key from a PEM file or text: SubjectPublicKeyInfo ("BEGIN PUBLIC KEY", what
// `openssl pkey -pubout` and `hotforge keygen` write).
Outcome<PublicKey> readPublicKeyFile(const std::string &path);
Outcome<PublicKey> parsePublicKeyPem(std::string_view pem, const std::string &nameForMessages);

bool verifySignature(const PublicKey &key, std::span<const uint8_t> message, std::span<const uint8_t> signature);

// ---- reading ----
struct UnitHeader {
  uint16_t version = 0;
  uint16_t flags = 0;
  uint64_t manifestOffset = 0, manifestSize = 0;
  uint64_t payloadOffset = 0, payloadSize = 0;
  uint64_t signatureOffset = 0, signatureSize = 0;
};

struct UnitEntry {
  std::string name;            // plain file name: no path, no "..", unique (ASCII case-insensitively)
  std::vector<uint8_t> bytes;  // the image
  nlohmann::json info = nlohmann::json::object();  // embedded verbatim in the manifest
};

struct VerifiedUnit {
  UnitHeader header;
  nlohmann::json manifest;         // the signed manifest
  std::vector<UnitEntry> entries;  // decompressed images, every hash checked; info as packed
  std::string signerFingerprint;
};

// Checks, in this order: magic, version, flags and every offset and size against the file size;
// the signature over header and manifest; the manifest (schema, names, limits, layout of the
// payloads); each compressed payload's SHA-256; decompression bounded by the declared size; each
// image's SHA-256.
Outcome<VerifiedUnit> verifyUnit(std::span<const uint8_t> unit, const PublicKey &key);

bool looksLikeUnit(std::span<const uint8_t> bytes);  // starts with the magic

}  // namespace hotforge
