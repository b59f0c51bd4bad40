// Reading units: the header layout, the manifest, the payloads, and the signature over them.
// Nothing is read before the offsets and sizes that lead to it are checked against the file size,
// and nothing is allocated from a declared size before that size is checked against a limit.
#include "hotforge/core/ascii.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/patch_format.h"
#include "hotforge/core/unit_checks.h"

#include <zstd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <set>

namespace hotforge {
namespace unit_detail {
namespace {

struct DctxFree {
  void operator()(ZSTD_DCtx *d) const { ZSTD_freeDCtx(d); }
};

// A manifest field read with its expected type, or a message naming it.
Outcome<uint64_t> unsignedField(const nlohmann::json &object, const char *key, const std::string &where) {
  auto it = object.find(key);
  if (it == object.end()) return fail(where, ": \"", key, "\" is missing");
  if (!it->is_number_unsigned()) return fail(where, ": \"", key, "\" must be a non-negative integer");
  return it->get<uint64_t>();
}

Outcome<std::string> stringField(const nlohmann::json &object, const char *key, const std::string &where) {
  auto it = object.find(key);
  if (it == object.end()) return fail(where, ": \"", key, "\" is missing");
  if (!it->is_string()) return fail(where, ": \"", key, "\" must be a string");
  return it->get<std::string>();
}

Outcome<std::array<uint8_t, 32>> hashField(const nlohmann::json &object, const char *key, const std::string &where) {
  Outcome<std::string> text = stringField(object, key, where);
  if (!text) return std::move(text).failure();
  std::optional<std::vector<uint8_t>> bytes = hexDecode(*text);
  if (!bytes || bytes->size() != 32) return fail(where, ": \"", key, "\" must be 64 lowercase hex digits");
  std::array<uint8_t, 32> out{};
  std::copy(bytes->begin(), bytes->end(), out.begin());
  return out;
}

Status onlyKeys(const nlohmann::json &object, const std::set<std::string> &allowed, const std::string &where) {
  for (auto it = object.begin(); it != object.end(); ++it)
    if (!allowed.count(it.key())) return fail(where, ": unknown field ", jsonQuoted(it.key()), " (schema ", kUnitSchema, ")");
  return success();
}

// "0x0001": header flags as the format table writes them.
std::string flagsText(uint16_t flags) {
  return "0x" + hexEncode(std::array<uint8_t, 2>{uint8_t(flags >> 8), uint8_t(flags)});
}

}  // namespace

Outcome<UnitHeader> parseHeader(std::span<const uint8_t> unit) { return parseHeader(unit, unit.size()); }

Outcome<UnitHeader> parseHeader(std::span<const uint8_t> unit, uint64_t fileSize) {
  size_t magicBytes = std::min<size_t>(unit.size(), sizeof(kUnitMagic));
  if (unit.empty() || std::memcmp(unit.data(), kUnitMagic, magicBytes) != 0)
    return fail("not a hotforge delivery unit (no HFUNIT magic)");
  if (unit.size() < kUnitHeaderSize || fileSize < kUnitHeaderSize)
    return fail("truncated: ", fileSize, " bytes, shorter than the ", kUnitHeaderSize, "-byte unit header");
  const uint8_t *h = unit.data();
  UnitHeader header;
  header.version = readLe16(h + kOffVersion);
  header.flags = readLe16(h + kOffFlags);
  header.manifestOffset = readLe64(h + kOffManifestOffset);
  header.manifestSize = readLe64(h + kOffManifestSize);
  header.payloadOffset = readLe64(h + kOffPayloadOffset);
  header.payloadSize = readLe64(h + kOffPayloadSize);
  header.signatureOffset = readLe64(h + kOffSignatureOffset);
  header.signatureSize = readLe64(h + kOffSignatureSize);
  if (header.version != kUnitFormatVersion)
    return fail("unit format version ", header.version, " is not supported (this hotforge reads version ",
                kUnitFormatVersion, ")");
  if (header.flags != 0) return fail("unknown header flags ", flagsText(header.flags));
  if (readLe16(h + kOffHeaderSize) != kUnitHeaderSize)
    return fail("header size ", readLe16(h + kOffHeaderSize), " is not ", kUnitHeaderSize);
  if (readLe32(h + kOffReserved) != 0) return fail("reserved header bytes are not zero");
  // The regions follow each other: header, manifest, payloads, signature, end of file. Each check
  // compares against what is left of the file, so no sum can overflow.
  if (header.manifestOffset != kUnitHeaderSize)
    return fail("manifest offset ", header.manifestOffset, " is not ", kUnitHeaderSize, " (right after the header)");
  if (header.manifestSize == 0 || header.manifestSize > kUnitMaxManifestSize)
    return fail("manifest size ", header.manifestSize, " is outside 1..", kUnitMaxManifestSize);
  if (header.manifestSize > fileSize - kUnitHeaderSize)
    return fail("truncated: the manifest (", header.manifestSize, " bytes at offset ", header.manifestOffset,
                ") runs past the end of the file (", fileSize, " bytes)");
  if (header.payloadOffset != header.manifestOffset + header.manifestSize)
    return fail("payload offset ", header.payloadOffset, " is not ", header.manifestOffset + header.manifestSize,
                " (right after the manifest)");
  if (header.payloadSize > fileSize - header.payloadOffset)
    return fail("truncated: the payloads (", header.payloadSize, " bytes at offset ", header.payloadOffset,
                ") run past the end of the file (", fileSize, " bytes)");
  if (header.signatureOffset != header.payloadOffset + header.payloadSize)
    return fail("signature offset ", header.signatureOffset, " is not ", header.payloadOffset + header.payloadSize,
                " (right after the payloads)");
  if (header.signatureSize != kUnitSignatureSize)
    return fail("signature size ", header.signatureSize, " is not ", kUnitSignatureSize);
  uint64_t left = fileSize - header.signatureOffset;
  if (left < kUnitSignatureSize)
    return fail("truncated: the file ends ", left, " bytes into the ", kUnitSignatureSize,
                "-byte signature (file size ", fileSize, ", expected ", header.signatureOffset + kUnitSignatureSize, ")");
  if (left > kUnitSignatureSize) return fail(left - kUnitSignatureSize, " unexpected bytes after the signature");
  return header;
}

bool sameHeader(const UnitHeader &a, const UnitHeader &b) {
  return a.version == b.version && a.flags == b.flags && a.manifestOffset == b.manifestOffset &&
         a.manifestSize == b.manifestSize && a.payloadOffset == b.payloadOffset && a.payloadSize == b.payloadSize &&
         a.signatureOffset == b.signatureOffset && a.signatureSize == b.signatureSize;
}

std::string_view manifestText(std::span<const uint8_t> unit, const UnitHeader &header) {
  return std::string_view(reinterpret_cast<const char *>(unit.data() + header.manifestOffset), header.manifestSize);
}

Outcome<Manifest> parseManifest(std::string_view text, uint64_t payloadSize) {
  if (jsonDepth(text, kUnitMaxJsonDepth) > kUnitMaxJsonDepth)
    return fail("manifest: JSON nested deeper than ", kUnitMaxJsonDepth, " levels");
  Manifest m;
  try {
    m.json = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception &e) {
    return fail("manifest: not valid JSON: ", e.what());
  }
  const nlohmann::json &j = m.json;
  if (!j.is_object()) return fail("manifest: not a JSON object");
  try {
    if (j.dump() != text) return fail("manifest: not in canonical form (sorted keys, no whitespace, no duplicates)");
  } catch (const nlohmann::json::exception &e) {
    return fail("manifest: ", e.what());
  }
  if (Status s = onlyKeys(j, {"compression", "created", "entries", "level", "release", "schema", "signer"}, "manifest");
      !s)
    return std::move(s).failure();
  Outcome<std::string> schema = stringField(j, "schema", "manifest");
  if (!schema) return std::move(schema).failure();
  if (*schema != kUnitSchema) return fail("manifest: schema ", jsonQuoted(*schema), " is not ", kUnitSchema);
  Outcome<std::string> compression = stringField(j, "compression", "manifest");
  if (!compression) return std::move(compression).failure();
  if (*compression != "zstd") return fail("manifest: compression ", jsonQuoted(*compression), " is not \"zstd\"");
  Outcome<uint64_t> level = unsignedField(j, "level", "manifest");
  if (!level) return std::move(level).failure();
  if (*level < 1 || *level > 22) return fail("manifest: zstd level ", *level, " is outside 1..22");
  if (Outcome<std::string> release = stringField(j, "release", "manifest"); !release)
    return std::move(release).failure();
  if (!j.contains("created")) return fail("manifest: \"created\" is missing");
  const nlohmann::json &created = j["created"];
  if (!created.is_null() && !(created.is_number_integer() && (!created.is_number_unsigned() ||
                                                              created.get<uint64_t>() <= uint64_t(INT64_MAX))))
    return fail("manifest: \"created\" must be null or an integer");
  if (!j.contains("signer") || !j["signer"].is_object()) return fail("manifest: \"signer\" must be an object");
  const nlohmann::json &signer = j["signer"];
  if (Status s = onlyKeys(signer, {"algorithm", "fingerprint"}, "manifest signer"); !s) return std::move(s).failure();
  Outcome<std::string> algorithm = stringField(signer, "algorithm", "manifest signer");
  if (!algorithm) return std::move(algorithm).failure();
  if (*algorithm != "ed25519")
    return fail("manifest: signer algorithm ", jsonQuoted(*algorithm), " is not \"ed25519\"");
  Outcome<std::string> fingerprint = stringField(signer, "fingerprint", "manifest signer");
  if (!fingerprint) return std::move(fingerprint).failure();
  if (!isLowerHex(*fingerprint, 64)) return fail("manifest: signer fingerprint must be 64 lowercase hex digits");
  m.signerFingerprint = *fingerprint;

  if (!j.contains("entries") || !j["entries"].is_array()) return fail("manifest: \"entries\" must be an array");
  const nlohmann::json &list = j["entries"];
  if (list.empty()) return fail("manifest: the unit holds no images");
  if (list.size() > kUnitMaxEntries)
    return fail("manifest: ", list.size(), " entries are more than a unit may hold (", kUnitMaxEntries, ")");
  std::set<std::string> folded, baselines;
  uint64_t offset = 0, total = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json &item = list[i];
    std::string where = "manifest entry " + std::to_string(i);
    if (!item.is_object()) return fail(where, ": not an object");
    Outcome<std::string> name = stringField(item, "name", where);
    if (!name) return std::move(name).failure();
    if (Status s = checkEntryName(*name); !s) return fail(where, ": ", s.error());
    where = "entry " + jsonQuoted(*name);
    if (!folded.insert(asciiLower(*name)).second)
      return fail("duplicate entry name ", jsonQuoted(*name), " (names must differ in more than letter case)");
    if (i > 0 && !(m.entries.back().name < *name)) return fail(where, ": entries are not sorted by name");
    if (Status s = onlyKeys(item,
                            {"baseline", "compressed_sha256", "compressed_size", "info", "name", "offset", "sequence",
                             "sha256", "size", "supersedes"},
                            where);
        !s)
      return std::move(s).failure();
    ManifestEntry e;
    e.name = *name;
    Outcome<uint64_t> size = unsignedField(item, "size", where);
    if (!size) return std::move(size).failure();
    if (*size > kUnitMaxImageSize)
      return fail(where, " declares ", *size, " bytes, above the ", kUnitMaxImageSize >> 30, " GiB limit of one image");
    total += *size;
    if (total > kUnitMaxTotalImageSize)
      return fail(where, ": the images add up to more than the ", kUnitMaxTotalImageSize >> 30, " GiB a unit may hold");
    Outcome<uint64_t> entryOffset = unsignedField(item, "offset", where);
    if (!entryOffset) return std::move(entryOffset).failure();
    Outcome<uint64_t> compressedSize = unsignedField(item, "compressed_size", where);
    if (!compressedSize) return std::move(compressedSize).failure();
    if (*entryOffset != offset)
      return fail(where, ": payload offset ", *entryOffset, " is not ", offset, " (payloads follow each other)");
    if (*compressedSize == 0) return fail(where, ": compressed size is 0");
    if (*compressedSize > payloadSize - offset)
      return fail(where, ": payload (", *compressedSize, " bytes at ", offset, ") runs past the payload area (",
                  payloadSize, " bytes)");
    offset += *compressedSize;
    e.offset = *entryOffset;
    e.size = *size;
    e.compressedSize = *compressedSize;
    Outcome<std::array<uint8_t, 32>> hash = hashField(item, "sha256", where);
    if (!hash) return std::move(hash).failure();
    e.sha256 = *hash;
    Outcome<std::array<uint8_t, 32>> compressedHash = hashField(item, "compressed_sha256", where);
    if (!compressedHash) return std::move(compressedHash).failure();
    e.compressedSha256 = *compressedHash;
    if (!item.contains("info")) return fail(where, ": \"info\" is missing");
    e.info = item["info"];
    Outcome<nlohmann::json> recorded = recordedFromInfo(e.info);
    if (!recorded) return fail(where, ": ", recorded.error());
    for (const char *key : {"baseline", "sequence", "supersedes"}) {
      bool want = recorded->contains(key), have = item.contains(key);
      if (want != have || (want && (*recorded)[key] != item[key]))
        return fail(where, ": \"", key, "\" does not match what info records");
    }
    if (recorded->contains("baseline") && !baselines.insert((*recorded)["baseline"].dump()).second)
      return fail(where, ": another entry patches the same baseline");
    m.entries.push_back(std::move(e));
  }
  if (offset != payloadSize)
    return fail("manifest: the payloads cover ", offset, " of the ", payloadSize, " bytes of the payload area");
  return m;
}

// What the manifest records of a hotpatch image (its sequence, its baseline) must be what the image
// itself says: apply and the agent go by the image, `verify` and a reader of the manifest by info.
Status imageMatchesInfo(std::span<const uint8_t> bytes, const nlohmann::json &info) {
  if (!looksLikePatchImage(bytes)) return success();
  Outcome<PatchImage> image = readPatchImage(bytes);
  if (!image) return fail("not a valid hotpatch image: ", image.error());
  auto sequence = info.find("sequence");
  if (sequence != info.end() && sequence->get<uint64_t>() != image->sequence)
    return fail("the manifest records sequence ", sequence->get<uint64_t>(), ", the image is sequence ", image->sequence);
  auto baseline = info.find("baseline");
  if (baseline != info.end() && baseline->contains("sha256") && (*baseline)["sha256"].is_string() &&
      (*baseline)["sha256"].get<std::string>() != hexEncode(image->baseline.sha256))
    return fail("the manifest records baseline sha256 ", (*baseline)["sha256"].get<std::string>(), ", the image's is ",
                hexEncode(image->baseline.sha256));
  return success();
}

Outcome<std::vector<UnitEntry>> checkPayloads(const Manifest &manifest, std::span<const uint8_t> payload) {
  std::unique_ptr<ZSTD_DCtx, DctxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return fail("zstd: cannot allocate a decompression context");
  std::vector<UnitEntry> out;
  for (const ManifestEntry &e : manifest.entries) {
    std::string where = "entry " + jsonQuoted(e.name);
    if (e.offset > payload.size() || e.compressedSize > payload.size() - e.offset)
      return fail(where, ": payload outside the payload area");
    std::span<const uint8_t> packed = payload.subspan(e.offset, e.compressedSize);
    if (sha256(packed) != e.compressedSha256)
      return fail(where, ": the compressed payload does not match its SHA-256 in the manifest (the payload was "
                         "modified)");
    unsigned long long declared = ZSTD_getFrameContentSize(packed.data(), packed.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR) return fail(where, ": the payload is not a zstd frame");
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN) return fail(where, ": the zstd frame does not declare its content size");
    if (declared != e.size) return fail(where, ": the zstd frame declares ", declared, " bytes, the manifest ", e.size);
    size_t frame = ZSTD_findFrameCompressedSize(packed.data(), packed.size());
    if (ZSTD_isError(frame) || frame != packed.size()) return fail(where, ": the payload is not exactly one zstd frame");
    UnitEntry entry;
    entry.name = e.name;
    entry.info = e.info;
    // The size was checked against kUnitMaxImageSize when the manifest was read. zstd never writes
    // past the buffer: a frame that would produce more is an error, not an allocation.
    entry.bytes.resize(e.size);
    uint8_t spare = 0;
    uint8_t *dst = e.size ? entry.bytes.data() : &spare;
    size_t produced = ZSTD_decompressDCtx(dctx.get(), dst, e.size, packed.data(), packed.size());
    if (ZSTD_isError(produced))
      return fail(where, ": zstd: ", ZSTD_getErrorName(produced), " (the payload does not decompress to its declared ",
                  e.size, " bytes)");
    if (produced != e.size)
      return fail(where, ": decompressed to ", produced, " bytes, the manifest declares ", e.size);
    if (sha256(entry.bytes) != e.sha256) return fail(where, ": the image does not match its SHA-256 in the manifest");
    if (Status s = imageMatchesInfo(entry.bytes, e.info); !s) return fail(where, ": ", s.error());
    out.push_back(std::move(entry));
  }
  return out;
}

Outcome<std::vector<UnitEntry>> checkUnitContentsWithoutSignature(std::span<const uint8_t> unit) {
  Outcome<UnitHeader> header = parseHeader(unit);
  if (!header) return std::move(header).failure();
  Outcome<Manifest> manifest = parseManifest(manifestText(unit, *header), header->payloadSize);
  if (!manifest) return std::move(manifest).failure();
  return checkPayloads(*manifest, unit.subspan(header->payloadOffset, header->payloadSize));
}

}  // namespace unit_detail

using namespace unit_detail;

namespace {

// The signer an unverified manifest names, for a better message when the signature fails.
std::string claimedSigner(std::string_view text) {
  if (jsonDepth(text, kUnitMaxJsonDepth) > kUnitMaxJsonDepth) return "";
  try {
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("signer") && j["signer"].is_object() && j["signer"].contains("fingerprint") &&
        j["signer"]["fingerprint"].is_string()) {
      std::string fingerprint = j["signer"]["fingerprint"].get<std::string>();
      if (isLowerHex(fingerprint, 64)) return fingerprint;
    }
  } catch (const nlohmann::json::exception &) {
  }
  return "";
}

}  // namespace

bool looksLikeUnit(std::span<const uint8_t> bytes) {
  return bytes.size() >= sizeof(kUnitMagic) && std::memcmp(bytes.data(), kUnitMagic, sizeof(kUnitMagic)) == 0;
}

Outcome<VerifiedUnit> verifyUnit(std::span<const uint8_t> unit, const PublicKey &key) {
  Outcome<UnitHeader> header = parseHeader(unit);
  if (!header) return std::move(header).failure();
  // Header and manifest are copied once and everything after this reads the copy, so a unit in
  // shared or mapped memory cannot change between the signature check and the parse. (Payloads
  // are read twice, hashed and then decompressed, but the decompressed image is hashed again.)
  std::vector<uint8_t> signedBytes(unit.begin(), unit.begin() + header->payloadOffset);  // header + manifest
  std::array<uint8_t, kUnitSignatureSize> signature{};
  std::copy_n(unit.begin() + header->signatureOffset, kUnitSignatureSize, signature.begin());
  Outcome<UnitHeader> copied =
      parseHeader(std::span<const uint8_t>(signedBytes).first(kUnitHeaderSize), unit.size());
  if (!copied || !sameHeader(*copied, *header)) return fail("the unit changed while it was being read");
  if (!verifySignature(key, signedBytes, signature)) {
    std::string claimed = claimedSigner(manifestText(signedBytes, *header));
    if (!claimed.empty() && claimed != key.fingerprint())
      return fail("signature check failed: the unit names signer key ", claimed, ", but the given public key is ",
                  key.fingerprint(), " (wrong key, or a modified manifest)");
    return fail("signature check failed with key ", key.fingerprint(),
                ": the header or manifest was modified, or the signature is damaged");
  }
  Outcome<Manifest> manifest = parseManifest(manifestText(signedBytes, *header), header->payloadSize);
  if (!manifest) return std::move(manifest).failure();
  if (manifest->signerFingerprint != key.fingerprint())
    return fail("the manifest names signer key ", manifest->signerFingerprint, ", but the signature was made with key ",
                key.fingerprint());
  Outcome<std::vector<UnitEntry>> entries =
      checkPayloads(*manifest, unit.subspan(header->payloadOffset, header->payloadSize));
  if (!entries) return std::move(entries).failure();
  VerifiedUnit out;
  out.header = *header;
  out.manifest = std::move(manifest->json);
  out.entries = std::move(*entries);
  out.signerFingerprint = key.fingerprint();
  return out;
}

}  // namespace hotforge
