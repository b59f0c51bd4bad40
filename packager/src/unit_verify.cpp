// Reading units: the header layout, the manifest, the payloads, and the signature over them.
// Nothing is read before the offsets and sizes that lead to it are checked against the file size,
// and nothing is allocated from a declared size before that size is checked against a limit.
#include "unit_internal.h"

#include "hotforge/error.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace hotforge {
namespace unit_detail {
namespace {

struct DctxFree {
  void operator()(ZSTD_DCtx *d) const { ZSTD_freeDCtx(d); }
};

// A manifest field read with its expected type, or a message naming it.
llvm::Expected<uint64_t> unsignedField(const nlohmann::json &object, const char *key, const std::string &where) {
  auto it = object.find(key);
  if (it == object.end()) return formatError("{}: \"{}\" is missing", where, key);
  if (!it->is_number_unsigned()) return formatError("{}: \"{}\" must be a non-negative integer", where, key);
  return it->get<uint64_t>();
}

llvm::Expected<std::string> stringField(const nlohmann::json &object, const char *key, const std::string &where) {
  auto it = object.find(key);
  if (it == object.end()) return formatError("{}: \"{}\" is missing", where, key);
  if (!it->is_string()) return formatError("{}: \"{}\" must be a string", where, key);
  return it->get<std::string>();
}

llvm::Expected<std::array<uint8_t, 32>> hashField(const nlohmann::json &object, const char *key,
                                                  const std::string &where) {
  llvm::Expected<std::string> text = stringField(object, key, where);
  if (!text) return text.takeError();
  if (!isLowerHex(*text, 64)) return formatError("{}: \"{}\" must be 64 lowercase hex digits", where, key);
  std::array<uint8_t, 32> out{};
  for (size_t i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(std::stoul(text->substr(2 * i, 2), nullptr, 16));
  return out;
}

llvm::Error onlyKeys(const nlohmann::json &object, const std::set<std::string> &allowed, const std::string &where) {
  for (auto it = object.begin(); it != object.end(); ++it)
    if (!allowed.count(it.key()))
      return formatError("{}: unknown field {} (schema {})", where, jsonQuoted(it.key()), kUnitSchema);
  return llvm::Error::success();
}

}  // namespace

llvm::Expected<UnitHeader> parseHeader(llvm::ArrayRef<uint8_t> unit) { return parseHeader(unit, unit.size()); }

llvm::Expected<UnitHeader> parseHeader(llvm::ArrayRef<uint8_t> unit, uint64_t fileSize) {
  size_t magicBytes = std::min<size_t>(unit.size(), sizeof(kUnitMagic));
  if (unit.empty() || std::memcmp(unit.data(), kUnitMagic, magicBytes) != 0)
    return makeError("not a hotforge delivery unit (no HFUNIT magic)");
  if (unit.size() < kUnitHeaderSize || fileSize < kUnitHeaderSize)
    return formatError("truncated: {} bytes, shorter than the {}-byte unit header", fileSize, kUnitHeaderSize);
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
    return formatError("unit format version {} is not supported (this hotforge reads version {})", header.version,
                       kUnitFormatVersion);
  if (header.flags != 0) return formatError("unknown header flags {:#06x}", header.flags);
  if (readLe16(h + kOffHeaderSize) != kUnitHeaderSize)
    return formatError("header size {} is not {}", readLe16(h + kOffHeaderSize), kUnitHeaderSize);
  if (readLe32(h + kOffReserved) != 0) return makeError("reserved header bytes are not zero");
  // The regions follow each other: header, manifest, payloads, signature, end of file. Each check
  // compares against what is left of the file, so no sum can overflow.
  if (header.manifestOffset != kUnitHeaderSize)
    return formatError("manifest offset {} is not {} (right after the header)", header.manifestOffset, kUnitHeaderSize);
  if (header.manifestSize == 0 || header.manifestSize > kUnitMaxManifestSize)
    return formatError("manifest size {} is outside 1..{}", header.manifestSize, kUnitMaxManifestSize);
  if (header.manifestSize > fileSize - kUnitHeaderSize)
    return formatError("truncated: the manifest ({} bytes at offset {}) runs past the end of the file ({} bytes)",
                       header.manifestSize, header.manifestOffset, fileSize);
  if (header.payloadOffset != header.manifestOffset + header.manifestSize)
    return formatError("payload offset {} is not {} (right after the manifest)", header.payloadOffset,
                       header.manifestOffset + header.manifestSize);
  if (header.payloadSize > fileSize - header.payloadOffset)
    return formatError("truncated: the payloads ({} bytes at offset {}) run past the end of the file ({} bytes)",
                       header.payloadSize, header.payloadOffset, fileSize);
  if (header.signatureOffset != header.payloadOffset + header.payloadSize)
    return formatError("signature offset {} is not {} (right after the payloads)", header.signatureOffset,
                       header.payloadOffset + header.payloadSize);
  if (header.signatureSize != kUnitSignatureSize)
    return formatError("signature size {} is not {}", header.signatureSize, kUnitSignatureSize);
  uint64_t left = fileSize - header.signatureOffset;
  if (left < kUnitSignatureSize)
    return formatError("truncated: the file ends {} bytes into the {}-byte signature (file size {}, expected {})", left,
                       kUnitSignatureSize, fileSize, header.signatureOffset + kUnitSignatureSize);
  if (left > kUnitSignatureSize)
    return formatError("{} unexpected bytes after the signature", left - kUnitSignatureSize);
  return header;
}

llvm::Expected<Manifest> parseManifest(llvm::StringRef text, uint64_t payloadSize) {
  if (jsonDepth(text, kUnitMaxJsonDepth) > kUnitMaxJsonDepth)
    return formatError("manifest: JSON nested deeper than {} levels", kUnitMaxJsonDepth);
  Manifest m;
  try {
    m.json = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception &e) {
    return formatError("manifest: not valid JSON: {}", e.what());
  }
  const nlohmann::json &j = m.json;
  if (!j.is_object()) return makeError("manifest: not a JSON object");
  try {
    if (j.dump() != text) return makeError("manifest: not in canonical form (sorted keys, no whitespace, no duplicates)");
  } catch (const nlohmann::json::exception &e) {
    return formatError("manifest: {}", e.what());
  }
  if (llvm::Error e = onlyKeys(j, {"compression", "created", "entries", "level", "release", "schema", "signer"},
                               "manifest"))
    return e;
  llvm::Expected<std::string> schema = stringField(j, "schema", "manifest");
  if (!schema) return schema.takeError();
  if (*schema != kUnitSchema)
    return formatError("manifest: schema {} is not {}", jsonQuoted(*schema), kUnitSchema);
  llvm::Expected<std::string> compression = stringField(j, "compression", "manifest");
  if (!compression) return compression.takeError();
  if (*compression != "zstd") return formatError("manifest: compression {} is not \"zstd\"", jsonQuoted(*compression));
  llvm::Expected<uint64_t> level = unsignedField(j, "level", "manifest");
  if (!level) return level.takeError();
  if (*level < 1 || *level > 22) return formatError("manifest: zstd level {} is outside 1..22", *level);
  if (llvm::Expected<std::string> release = stringField(j, "release", "manifest"); !release)
    return release.takeError();
  if (!j.contains("created")) return makeError("manifest: \"created\" is missing");
  const nlohmann::json &created = j["created"];
  if (!created.is_null() && !(created.is_number_integer() && (!created.is_number_unsigned() ||
                                                              created.get<uint64_t>() <= uint64_t(INT64_MAX))))
    return makeError("manifest: \"created\" must be null or an integer");
  if (!j.contains("signer") || !j["signer"].is_object()) return makeError("manifest: \"signer\" must be an object");
  const nlohmann::json &signer = j["signer"];
  if (llvm::Error e = onlyKeys(signer, {"algorithm", "fingerprint"}, "manifest signer")) return e;
  llvm::Expected<std::string> algorithm = stringField(signer, "algorithm", "manifest signer");
  if (!algorithm) return algorithm.takeError();
  if (*algorithm != "ed25519") return formatError("manifest: signer algorithm {} is not \"ed25519\"", jsonQuoted(*algorithm));
  llvm::Expected<std::string> fingerprint = stringField(signer, "fingerprint", "manifest signer");
  if (!fingerprint) return fingerprint.takeError();
  if (!isLowerHex(*fingerprint, 64)) return makeError("manifest: signer fingerprint must be 64 lowercase hex digits");
  m.signerFingerprint = *fingerprint;

  if (!j.contains("entries") || !j["entries"].is_array()) return makeError("manifest: \"entries\" must be an array");
  const nlohmann::json &list = j["entries"];
  if (list.empty()) return makeError("manifest: the unit holds no images");
  if (list.size() > kUnitMaxEntries)
    return formatError("manifest: {} entries are more than a unit may hold ({})", list.size(), kUnitMaxEntries);
  std::set<std::string> folded, baselines;
  uint64_t offset = 0, total = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json &item = list[i];
    std::string where = fmt::format("manifest entry {}", i);
    if (!item.is_object()) return formatError("{}: not an object", where);
    llvm::Expected<std::string> name = stringField(item, "name", where);
    if (!name) return name.takeError();
    if (llvm::Error e = checkEntryName(*name)) return formatError("{}: {}", where, errorText(std::move(e)));
    where = fmt::format("entry {}", jsonQuoted(*name));
    if (!folded.insert(foldCase(*name)).second)
      return formatError("duplicate entry name {} (names must differ in more than letter case)", jsonQuoted(*name));
    if (i > 0 && !(m.entries.back().name < *name))
      return formatError("{}: entries are not sorted by name", where);
    if (llvm::Error e = onlyKeys(item,
                                 {"baseline", "compressed_sha256", "compressed_size", "info", "name", "offset",
                                  "sequence", "sha256", "size", "supersedes"},
                                 where))
      return e;
    ManifestEntry e;
    e.name = *name;
    llvm::Expected<uint64_t> size = unsignedField(item, "size", where);
    if (!size) return size.takeError();
    if (*size > kUnitMaxImageSize)
      return formatError("{} declares {} bytes, above the {} GiB limit of one image", where, *size,
                         kUnitMaxImageSize >> 30);
    total += *size;
    if (total > kUnitMaxTotalImageSize)
      return formatError("{}: the images add up to more than the {} GiB a unit may hold", where,
                         kUnitMaxTotalImageSize >> 30);
    llvm::Expected<uint64_t> entryOffset = unsignedField(item, "offset", where);
    if (!entryOffset) return entryOffset.takeError();
    llvm::Expected<uint64_t> compressedSize = unsignedField(item, "compressed_size", where);
    if (!compressedSize) return compressedSize.takeError();
    if (*entryOffset != offset)
      return formatError("{}: payload offset {} is not {} (payloads follow each other)", where, *entryOffset, offset);
    if (*compressedSize == 0) return formatError("{}: compressed size is 0", where);
    if (*compressedSize > payloadSize - offset)
      return formatError("{}: payload ({} bytes at {}) runs past the payload area ({} bytes)", where, *compressedSize,
                         offset, payloadSize);
    offset += *compressedSize;
    e.offset = *entryOffset;
    e.size = *size;
    e.compressedSize = *compressedSize;
    llvm::Expected<std::array<uint8_t, 32>> hash = hashField(item, "sha256", where);
    if (!hash) return hash.takeError();
    e.sha256 = *hash;
    hash = hashField(item, "compressed_sha256", where);
    if (!hash) return hash.takeError();
    e.compressedSha256 = *hash;
    if (!item.contains("info")) return formatError("{}: \"info\" is missing", where);
    e.info = item["info"];
    llvm::Expected<nlohmann::json> recorded = recordedFromInfo(e.info);
    if (!recorded) return formatError("{}: {}", where, errorText(recorded.takeError()));
    for (const char *key : {"baseline", "sequence", "supersedes"}) {
      bool want = recorded->contains(key), have = item.contains(key);
      if (want != have || (want && (*recorded)[key] != item[key]))
        return formatError("{}: \"{}\" does not match what info records", where, key);
    }
    if (recorded->contains("baseline") && !baselines.insert((*recorded)["baseline"].dump()).second)
      return formatError("{}: another entry patches the same baseline", where);
    m.entries.push_back(std::move(e));
  }
  if (offset != payloadSize)
    return formatError("manifest: the payloads cover {} of the {} bytes of the payload area", offset, payloadSize);
  return m;
}

llvm::Expected<std::vector<UnitEntry>> checkPayloads(const Manifest &manifest, llvm::ArrayRef<uint8_t> payload) {
  std::unique_ptr<ZSTD_DCtx, DctxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return makeError("zstd: cannot allocate a decompression context");
  std::vector<UnitEntry> out;
  for (const ManifestEntry &e : manifest.entries) {
    std::string where = fmt::format("entry {}", jsonQuoted(e.name));
    if (e.offset > payload.size() || e.compressedSize > payload.size() - e.offset)
      return formatError("{}: payload outside the payload area", where);
    llvm::ArrayRef<uint8_t> packed = payload.slice(e.offset, e.compressedSize);
    if (sha256(packed) != e.compressedSha256)
      return formatError("{}: the compressed payload does not match its SHA-256 in the manifest (the payload was "
                         "modified)",
                         where);
    unsigned long long declared = ZSTD_getFrameContentSize(packed.data(), packed.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR) return formatError("{}: the payload is not a zstd frame", where);
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
      return formatError("{}: the zstd frame does not declare its content size", where);
    if (declared != e.size)
      return formatError("{}: the zstd frame declares {} bytes, the manifest {}", where, declared, e.size);
    size_t frame = ZSTD_findFrameCompressedSize(packed.data(), packed.size());
    if (ZSTD_isError(frame) || frame != packed.size())
      return formatError("{}: the payload is not exactly one zstd frame", where);
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
      return formatError("{}: zstd: {} (the payload does not decompress to its declared {} bytes)", where,
                         ZSTD_getErrorName(produced), e.size);
    if (produced != e.size)
      return formatError("{}: decompressed to {} bytes, the manifest declares {}", where, produced, e.size);
    if (sha256(entry.bytes) != e.sha256)
      return formatError("{}: the image does not match its SHA-256 in the manifest", where);
    out.push_back(std::move(entry));
  }
  return out;
}

llvm::Expected<std::vector<UnitEntry>> checkUnitContentsWithoutSignature(llvm::ArrayRef<uint8_t> unit) {
  llvm::Expected<UnitHeader> header = parseHeader(unit);
  if (!header) return header.takeError();
  llvm::StringRef text(reinterpret_cast<const char *>(unit.data() + header->manifestOffset), header->manifestSize);
  llvm::Expected<Manifest> manifest = parseManifest(text, header->payloadSize);
  if (!manifest) return manifest.takeError();
  return checkPayloads(*manifest, unit.slice(header->payloadOffset, header->payloadSize));
}

}  // namespace unit_detail

using namespace unit_detail;

namespace {

llvm::StringRef manifestText(llvm::ArrayRef<uint8_t> unit, const UnitHeader &header) {
  return llvm::StringRef(reinterpret_cast<const char *>(unit.data() + header.manifestOffset), header.manifestSize);
}

// The signer an unverified manifest names, for a better message when the signature fails.
std::string claimedSigner(llvm::StringRef text) {
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

bool unit_detail::sameHeader(const UnitHeader &a, const UnitHeader &b) {
  return a.version == b.version && a.flags == b.flags && a.manifestOffset == b.manifestOffset &&
         a.manifestSize == b.manifestSize && a.payloadOffset == b.payloadOffset && a.payloadSize == b.payloadSize &&
         a.signatureOffset == b.signatureOffset && a.signatureSize == b.signatureSize;
}

bool looksLikeUnit(llvm::ArrayRef<uint8_t> bytes) {
  return bytes.size() >= sizeof(kUnitMagic) && std::memcmp(bytes.data(), kUnitMagic, sizeof(kUnitMagic)) == 0;
}

llvm::Expected<VerifiedUnit> verifyUnit(llvm::ArrayRef<uint8_t> unit, const PublicKey &key) {
  llvm::Expected<UnitHeader> header = parseHeader(unit);
  if (!header) return header.takeError();
  // Header and manifest are copied once and everything after this reads the copy, so a unit in
  // shared or mapped memory cannot change between the signature check and the parse. (Payloads
  // are read twice, hashed and then decompressed, but the decompressed image is hashed again.)
  std::vector<uint8_t> signedBytes(unit.begin(), unit.begin() + header->payloadOffset);  // header + manifest
  std::array<uint8_t, kUnitSignatureSize> signature{};
  std::copy_n(unit.begin() + header->signatureOffset, kUnitSignatureSize, signature.begin());
  llvm::Expected<UnitHeader> copied = parseHeader(
      llvm::ArrayRef<uint8_t>(signedBytes).take_front(kUnitHeaderSize), unit.size());
  if (!copied || !sameHeader(*copied, *header)) {
    if (!copied) llvm::consumeError(copied.takeError());
    return makeError("the unit changed while it was being read");
  }
  if (!verifySignature(key, signedBytes, signature)) {
    std::string claimed = claimedSigner(manifestText(signedBytes, *header));
    if (!claimed.empty() && claimed != key.fingerprint())
      return formatError("signature check failed: the unit names signer key {}, but the given public key is {} "
                         "(wrong key, or a modified manifest)",
                         claimed, key.fingerprint());
    return formatError("signature check failed with key {}: the header or manifest was modified, or the signature "
                       "is damaged",
                       key.fingerprint());
  }
  llvm::Expected<Manifest> manifest = parseManifest(manifestText(signedBytes, *header), header->payloadSize);
  if (!manifest) return manifest.takeError();
  if (manifest->signerFingerprint != key.fingerprint())
    return formatError("the manifest names signer key {}, but the signature was made with key {}",
                       manifest->signerFingerprint, key.fingerprint());
  llvm::Expected<std::vector<UnitEntry>> entries =
      checkPayloads(*manifest, unit.slice(header->payloadOffset, header->payloadSize));
  if (!entries) return entries.takeError();
  VerifiedUnit out;
  out.header = *header;
  out.manifest = std::move(manifest->json);
  out.entries = std::move(*entries);
  out.signerFingerprint = key.fingerprint();
  return out;
}

llvm::Expected<UnitDescription> inspectUnit(llvm::ArrayRef<uint8_t> unit) {
  llvm::Expected<UnitHeader> header = parseHeader(unit);
  if (!header) return header.takeError();
  llvm::Expected<Manifest> manifest = parseManifest(manifestText(unit, *header), header->payloadSize);
  if (!manifest) return manifest.takeError();
  UnitDescription out;
  out.header = *header;
  out.manifest = std::move(manifest->json);
  out.fileSize = unit.size();
  out.verified = false;
  return out;
}

}  // namespace hotforge
