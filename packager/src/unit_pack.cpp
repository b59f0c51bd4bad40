// packUnit: compress each image (zstd, multi-threaded mode, whose output does not depend on the
// number of workers), write the canonical manifest, sign header and manifest, assemble the file.
#include "hotforge/core/error.h"
#include "hotforge/core/ascii.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/unit_checks.h"
#include "hotforge/unit.h"

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

namespace hotforge {
namespace {

using namespace unit_detail;

struct CctxFree {
  void operator()(ZSTD_CCtx *c) const { ZSTD_freeCCtx(c); }
};

// zstd's multi-threaded mode (nbWorkers >= 1) splits the input into jobs whose boundaries depend
// only on the level and the input, so any worker count gives the same bytes. It is used even with
// one worker so that the output never depends on the machine's core count. Input is fed with
// ZSTD_e_continue first: starting with ZSTD_e_end takes a one-shot path (zstd issue #2327).
llvm::Expected<std::vector<uint8_t>> compress(llvm::ArrayRef<uint8_t> input, int level, unsigned workers) {
  std::unique_ptr<ZSTD_CCtx, CctxFree> cctx(ZSTD_createCCtx());
  if (!cctx) return makeError("zstd: cannot allocate a compression context");
  auto set = [&](ZSTD_cParameter p, int v) { return ZSTD_isError(ZSTD_CCtx_setParameter(cctx.get(), p, v)); };
  if (set(ZSTD_c_compressionLevel, level) || set(ZSTD_c_checksumFlag, 0) || set(ZSTD_c_contentSizeFlag, 1))
    return formatError("zstd: level {} is not accepted", level);
  if (set(ZSTD_c_nbWorkers, static_cast<int>(workers)))
    return makeError("zstd: this libzstd has no multi-threading support, which deterministic units need");
  if (ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cctx.get(), input.size())))
    return makeError("zstd: cannot set the content size");
  // Output goes through a fixed staging buffer and is appended, so memory follows the compressed
  // size instead of compressBound(input) (which would be touched in full by a zero-filled vector).
  std::vector<uint8_t> out, staging(ZSTD_CStreamOutSize() * 8);
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  auto step = [&](ZSTD_EndDirective mode) -> llvm::Expected<size_t> {
    ZSTD_outBuffer o{staging.data(), staging.size(), 0};
    size_t r = ZSTD_compressStream2(cctx.get(), &o, &in, mode);
    if (ZSTD_isError(r)) return formatError("zstd: {}", ZSTD_getErrorName(r));
    out.insert(out.end(), staging.begin(), staging.begin() + static_cast<std::ptrdiff_t>(o.pos));
    return r;
  };
  while (in.pos < in.size)
    if (llvm::Expected<size_t> r = step(ZSTD_e_continue); !r) return r.takeError();
  for (;;) {
    llvm::Expected<size_t> remaining = step(ZSTD_e_end);
    if (!remaining) return remaining.takeError();
    if (*remaining == 0) break;
  }
  return out;
}

unsigned workerCount(unsigned requested) {
  unsigned n = requested ? requested : std::thread::hardware_concurrency();
  return std::clamp(n, 1u, 64u);
}

}  // namespace

llvm::Expected<std::optional<int64_t>> sourceDateEpoch() {
  const char *value = std::getenv("SOURCE_DATE_EPOCH");
  if (!value) return std::nullopt;
  std::string text(value);
  bool digits = !text.empty() && text.size() <= 18 &&
                std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits)
    return formatError("SOURCE_DATE_EPOCH={} is not a non-negative decimal integer (seconds since 1970)", jsonQuoted(text));
  return static_cast<int64_t>(std::strtoll(text.c_str(), nullptr, 10));
}

llvm::Expected<std::vector<uint8_t>> packUnit(const std::vector<UnitEntry> &input, const PackOptions &options) {
  if (!options.signer) return makeError("packUnit: no signer given");
  if (options.level < 1 || options.level > ZSTD_maxCLevel())
    return formatError("zstd level {} is out of range (1..{})", options.level, ZSTD_maxCLevel());
  if (input.empty()) return makeError("a unit needs at least one image");
  if (input.size() > kUnitMaxEntries)
    return formatError("{} images are more than a unit holds ({})", input.size(), kUnitMaxEntries);

  // Validate, then sort by name so that argument order does not change the unit.
  std::vector<const UnitEntry *> entries;
  std::vector<nlohmann::json> recorded(input.size());
  uint64_t total = 0;
  for (const UnitEntry &e : input) {
    if (llvm::Error error = lift(checkEntryName(e.name))) return error;
    if (e.bytes.size() > kUnitMaxImageSize)
      return formatError("image {} has {} bytes, above the {} GiB limit of one image", jsonQuoted(e.name), e.bytes.size(),
                         kUnitMaxImageSize >> 30);
    total += e.bytes.size();
    if (total > kUnitMaxTotalImageSize)
      return formatError("the images add up to more than the {} GiB a unit holds", kUnitMaxTotalImageSize >> 30);
    entries.push_back(&e);
  }
  std::sort(entries.begin(), entries.end(), [](const UnitEntry *a, const UnitEntry *b) { return a->name < b->name; });
  std::set<std::string> folded, baselines;
  for (size_t i = 0; i < entries.size(); ++i) {
    const UnitEntry &e = *entries[i];
    if (!folded.insert(asciiLower(e.name)).second)
      return formatError("duplicate entry name {} (names must differ in more than letter case)", jsonQuoted(e.name));
    Outcome<nlohmann::json> r = recordedFromInfo(e.info);
    if (!r) return formatError("image {}: {}", jsonQuoted(e.name), r.error());
    if (r->contains("baseline") &&
        !baselines.insert((*r)["baseline"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)).second)
      return formatError("image {}: another image in this unit patches the same baseline (patches are cumulative: "
                         "pack only the newest one for each baseline)",
                         jsonQuoted(e.name));
    recorded[i] = std::move(*r);
  }

  unsigned workers = workerCount(options.threads);
  const PublicKey &publicKey = options.signer->publicKey();
  nlohmann::json list = nlohmann::json::array();
  std::vector<std::vector<uint8_t>> payloads;
  uint64_t offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const UnitEntry &e = *entries[i];
    llvm::Expected<std::vector<uint8_t>> packed = compress(e.bytes, options.level, workers);
    if (!packed) return formatError("image {}: {}", jsonQuoted(e.name), errorText(packed.takeError()));
    nlohmann::json item = recorded[i];
    item["name"] = e.name;
    item["offset"] = offset;
    item["size"] = static_cast<uint64_t>(e.bytes.size());
    item["compressed_size"] = static_cast<uint64_t>(packed->size());
    item["sha256"] = hexEncode(sha256(e.bytes));
    item["compressed_sha256"] = hexEncode(sha256(*packed));
    item["info"] = e.info;
    list.push_back(std::move(item));
    offset += packed->size();
    payloads.push_back(std::move(*packed));
  }
  nlohmann::json manifest = {
      {"schema", kUnitSchema},
      {"release", options.release},
      {"created", options.created ? nlohmann::json(*options.created) : nlohmann::json(nullptr)},
      {"compression", "zstd"},
      {"level", options.level},
      {"signer", {{"algorithm", "ed25519"}, {"fingerprint", publicKey.fingerprint()}}},
      {"entries", std::move(list)},
  };
  std::string text;
  try {
    text = manifest.dump();  // object keys are sorted (std::map), no whitespace: canonical
  } catch (const nlohmann::json::exception &e) {
    return formatError("cannot write the manifest: {} (release id and info strings must be valid UTF-8)", e.what());
  }
  uint64_t payloadSize = offset;
  // Never write a unit that verify would refuse.
  if (Outcome<Manifest> check = parseManifest(text, payloadSize); !check)
    return formatError("the manifest would not verify: {}", check.error());

  std::vector<uint8_t> unit(kUnitHeaderSize);
  std::memcpy(unit.data(), kUnitMagic, sizeof(kUnitMagic));
  writeLe16(&unit[kOffVersion], kUnitFormatVersion);
  writeLe16(&unit[kOffFlags], 0);
  writeLe16(&unit[kOffHeaderSize], static_cast<uint16_t>(kUnitHeaderSize));
  writeLe32(&unit[kOffReserved], 0);
  writeLe64(&unit[kOffManifestOffset], kUnitHeaderSize);
  writeLe64(&unit[kOffManifestSize], text.size());
  writeLe64(&unit[kOffPayloadOffset], kUnitHeaderSize + text.size());
  writeLe64(&unit[kOffPayloadSize], payloadSize);
  writeLe64(&unit[kOffSignatureOffset], kUnitHeaderSize + text.size() + payloadSize);
  writeLe64(&unit[kOffSignatureSize], kUnitSignatureSize);
  unit.insert(unit.end(), text.begin(), text.end());

  llvm::Expected<std::array<uint8_t, 64>> signature = options.signer->sign(unit);  // header + manifest
  if (!signature) return signature.takeError();
  if (!verifySignature(publicKey, unit, *signature))
    return makeError("the signer returned a signature that does not verify with its own public key");

  unit.reserve(unit.size() + payloadSize + kUnitSignatureSize);
  for (const std::vector<uint8_t> &p : payloads) unit.insert(unit.end(), p.begin(), p.end());
  unit.insert(unit.end(), signature->begin(), signature->end());
  return unit;
}

}  // namespace hotforge
