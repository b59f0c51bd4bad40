// Delivery units: round trips, determinism, and a reader that refuses every damaged, truncated,
// forged or malicious unit with a clear message. Malicious units are built here by hand from
// packager/FORMAT.md and signed with the test key, so verify's own checks are what refuses them.
#include "hotforge/core/error.h"
#include "hotforge/unit.h"
#include "test_support.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <sys/resource.h>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>

namespace hotforge::test {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes bytesOf(const std::string &text) { return Bytes(text.begin(), text.end()); }
std::string textOf(const Bytes &bytes) { return std::string(bytes.begin(), bytes.end()); }

std::string sha256Hex(const Bytes &bytes) {
  unsigned char digest[32];
  unsigned length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  static const char *digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : digest) out += {digits[b >> 4], digits[b & 15]};
  return out;
}

std::unique_ptr<Signer> seedSigner(uint8_t first) {
  std::array<uint8_t, 32> seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(first + i);
  llvm::Expected<std::unique_ptr<Signer>> signer = makeSeedSigner(seed);
  EXPECT_TRUE(static_cast<bool>(signer));
  return signer ? std::move(*signer) : nullptr;
}

Signer &testSigner() {
  static std::unique_ptr<Signer> signer = seedSigner(1);
  return *signer;
}
Signer &otherSigner() {
  static std::unique_ptr<Signer> signer = seedSigner(101);
  return *signer;
}

UnitEntry entry(const std::string &name, const std::string &content, nlohmann::json info = nlohmann::json::object()) {
  return UnitEntry{name, bytesOf(content), std::move(info)};
}

Bytes pack(const std::vector<UnitEntry> &entries, PackOptions options = {}) {
  if (!options.signer) options.signer = &testSigner();
  llvm::Expected<Bytes> unit = packUnit(entries, options);
  if (!unit) {
    ADD_FAILURE() << llvm::toString(unit.takeError());
    return {};
  }
  return std::move(*unit);
}

// The error verifyUnit reports, or "" when the unit verifies.
std::string verifyError(const Bytes &unit, const PublicKey &key) {
  llvm::Expected<VerifiedUnit> verified = lift(verifyUnit(unit, key));
  if (verified) return "";
  return llvm::toString(verified.takeError());
}

std::string packError(const std::vector<UnitEntry> &entries) {
  PackOptions options;
  options.signer = &testSigner();
  llvm::Expected<Bytes> unit = packUnit(entries, options);
  if (unit) return "";
  return llvm::toString(unit.takeError());
}

// ---- units built by hand, straight from FORMAT.md ----

Bytes zstdFrame(const Bytes &image, int level = 3) {
  Bytes out(ZSTD_compressBound(image.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), image.data(), image.size(), level);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

void putLe(Bytes &out, size_t at, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) out[at + i] = static_cast<uint8_t>(value >> (8 * i));
}

// Header + manifest text + payload + signature over header and manifest.
Bytes assemble(const std::string &manifest, const Bytes &payload, Signer &signer) {
  Bytes unit(64, 0);
  std::memcpy(unit.data(), "HFUNIT", 6);
  putLe(unit, 6, 1, 2);                                   // format version
  putLe(unit, 8, 0, 2);                                   // flags
  putLe(unit, 10, 64, 2);                                 // header size
  putLe(unit, 16, 64, 8);                                 // manifest offset
  putLe(unit, 24, manifest.size(), 8);                    // manifest size
  putLe(unit, 32, 64 + manifest.size(), 8);               // payload offset
  putLe(unit, 40, payload.size(), 8);                     // payload size
  putLe(unit, 48, 64 + manifest.size() + payload.size(), 8);  // signature offset
  putLe(unit, 56, 64, 8);                                 // signature size
  unit.insert(unit.end(), manifest.begin(), manifest.end());
  llvm::Expected<std::array<uint8_t, 64>> signature = signer.sign(unit);
  EXPECT_TRUE(static_cast<bool>(signature));
  unit.insert(unit.end(), payload.begin(), payload.end());
  if (signature) unit.insert(unit.end(), signature->begin(), signature->end());
  return unit;
}

struct HandEntry {
  std::string name;
  Bytes image = {};
  Bytes frame = {};  // empty: zstdFrame(image)
  nlohmann::json overrides = nlohmann::json::object();  // replace manifest fields of this entry
};

nlohmann::json handManifest(std::vector<HandEntry> &entries, Signer &signer, Bytes &payload) {
  nlohmann::json list = nlohmann::json::array();
  for (HandEntry &e : entries) {
    if (e.frame.empty()) e.frame = zstdFrame(e.image);
    nlohmann::json item = {{"name", e.name},
                           {"offset", payload.size()},
                           {"size", e.image.size()},
                           {"compressed_size", e.frame.size()},
                           {"sha256", sha256Hex(e.image)},
                           {"compressed_sha256", sha256Hex(e.frame)},
                           {"info", nlohmann::json::object()}};
    for (auto it = e.overrides.begin(); it != e.overrides.end(); ++it) item[it.key()] = it.value();
    list.push_back(item);
    payload.insert(payload.end(), e.frame.begin(), e.frame.end());
  }
  return {{"schema", "hotforge.unit/1"},
          {"release", ""},
          {"created", nullptr},
          {"compression", "zstd"},
          {"level", 3},
          {"signer", {{"algorithm", "ed25519"}, {"fingerprint", signer.publicKey().fingerprint()}}},
          {"entries", list}};
}

Bytes handUnit(std::vector<HandEntry> entries, Signer &signer = testSigner()) {
  Bytes payload;
  nlohmann::json manifest = handManifest(entries, signer, payload);
  return assemble(manifest.dump(), payload, signer);
}

// ---- library ----

TEST(Unit, RoundTrip) {
  nlohmann::json info = {{"file", "libcore.so"},
                         {"baseline", {{"build_id", "abcd"}, {"sha256", std::string(64, 'a')}}},
                         {"sequence", 3},
                         {"changes", {{{"name", "table_get"}, {"verdict", "hotpatchable"}}}}};
  std::string big(100000, 'x');
  for (size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>('a' + i % 26);
  std::vector<UnitEntry> entries = {entry("zeta.so", big, info), entry("alpha.dll", "MZ tiny"),
                                    entry("empty.bin", "")};
  PackOptions options;
  options.release = "2026-11";
  Bytes unit = pack(entries, options);
  ASSERT_FALSE(unit.empty());
  EXPECT_TRUE(looksLikeUnit(unit));
  llvm::Expected<VerifiedUnit> verified = lift(verifyUnit(unit, testSigner().publicKey()));
  ASSERT_TRUE(static_cast<bool>(verified)) << llvm::toString(verified.takeError());
  ASSERT_EQ(verified->entries.size(), 3u);
  // Stored sorted by name.
  EXPECT_EQ(verified->entries[0].name, "alpha.dll");
  EXPECT_EQ(verified->entries[1].name, "empty.bin");
  EXPECT_EQ(verified->entries[2].name, "zeta.so");
  EXPECT_EQ(textOf(verified->entries[0].bytes), "MZ tiny");
  EXPECT_TRUE(verified->entries[1].bytes.empty());
  EXPECT_EQ(textOf(verified->entries[2].bytes), big);
  EXPECT_EQ(verified->entries[2].info, info);

  const nlohmann::json &m = verified->manifest;
  EXPECT_EQ(m["schema"], "hotforge.unit/1");
  EXPECT_EQ(m["release"], "2026-11");
  EXPECT_TRUE(m["created"].is_null());
  EXPECT_EQ(m["compression"], "zstd");
  EXPECT_EQ(m["level"], kUnitDefaultLevel);
  EXPECT_EQ(m["signer"]["algorithm"], "ed25519");
  EXPECT_EQ(m["signer"]["fingerprint"], testSigner().publicKey().fingerprint());
  const nlohmann::json &z = m["entries"][2];
  EXPECT_EQ(z["sha256"], sha256Hex(bytesOf(big)));
  EXPECT_EQ(z["size"], big.size());
  EXPECT_LT(z["compressed_size"].get<uint64_t>(), big.size());
  EXPECT_EQ(z["baseline"], info["baseline"]);
  EXPECT_EQ(z["sequence"], 3);
  EXPECT_EQ(z["supersedes"], 2);
  EXPECT_FALSE(m["entries"][0].contains("sequence"));
  // The manifest is canonical JSON: what the header points at is exactly dump().
  uint64_t manifestSize = 0;
  for (int i = 7; i >= 0; --i) manifestSize = (manifestSize << 8) | unit[24 + i];
  EXPECT_EQ(std::string(unit.begin() + 64, unit.begin() + 64 + manifestSize), m.dump());
}

TEST(Unit, SameInputsGiveIdenticalBytes) {
  std::vector<UnitEntry> entries = {entry("b.so", std::string(5000, 'b')), entry("a.so", "hello hello hello")};
  Bytes first = pack(entries), second = pack(entries);
  EXPECT_EQ(first, second);
  std::reverse(entries.begin(), entries.end());
  EXPECT_EQ(pack(entries), first) << "entry order must not change the unit";

  // zstd's multi-threaded mode must not depend on the worker count: 24 MiB at level 3 is several jobs.
  std::mt19937 random(7);
  std::string data;
  std::vector<std::string> words = {"mov", "rax", "call", "ret", "push", "rbp", "lea", "0x1234", "\n"};
  while (data.size() < (24u << 20)) data += words[random() % words.size()] + static_cast<char>('a' + random() % 3);
  std::vector<UnitEntry> large = {entry("large.bin", data)};
  PackOptions one, four;
  one.level = four.level = 3;
  one.threads = 1;
  four.threads = 4;
  Bytes a = pack(large, one), b = pack(large, four);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "the worker count changed the unit";
}

TEST(Unit, CreatedComesFromSourceDateEpochOnly) {
  unsetenv("SOURCE_DATE_EPOCH");
  llvm::Expected<std::optional<int64_t>> none = sourceDateEpoch();
  ASSERT_TRUE(static_cast<bool>(none));
  EXPECT_FALSE(none->has_value());
  setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
  llvm::Expected<std::optional<int64_t>> set = sourceDateEpoch();
  ASSERT_TRUE(static_cast<bool>(set));
  EXPECT_EQ(**set, 1700000000);
  for (const char *bad : {"", "-5", "12x", "1.5", "99999999999999999999"}) {
    setenv("SOURCE_DATE_EPOCH", bad, 1);
    llvm::Expected<std::optional<int64_t>> r = sourceDateEpoch();
    EXPECT_FALSE(static_cast<bool>(r)) << bad;
    if (!r) EXPECT_NE(llvm::toString(r.takeError()).find("SOURCE_DATE_EPOCH"), std::string::npos);
  }
  unsetenv("SOURCE_DATE_EPOCH");
  PackOptions options;
  options.created = 1700000000;
  Bytes unit = pack({entry("a", "a")}, options);
  llvm::Expected<UnitDescription> d = inspectUnit(unit);
  ASSERT_TRUE(static_cast<bool>(d));
  EXPECT_EQ(d->manifest["created"], 1700000000);
}

TEST(Unit, WrongKeyIsRefused) {
  Bytes unit = pack({entry("a.so", "payload")});
  std::string error = verifyError(unit, otherSigner().publicKey());
  EXPECT_NE(error.find("signature check failed"), std::string::npos) << error;
  EXPECT_NE(error.find("wrong key"), std::string::npos) << error;
}

Bytes smallUnit() { return pack({entry("tiny.so", "\x7f" "ELF tiny image, a few bytes")}); }

TEST(Unit, EveryFlippedByteIsRefused) {
  Bytes unit = smallUnit();
  ASSERT_GT(unit.size(), 200u);
  ASSERT_LT(unit.size(), 1000u);
  ASSERT_EQ(verifyError(unit, testSigner().publicKey()), "");
  for (uint8_t mask : {uint8_t(0xff), uint8_t(0x01), uint8_t(0x80)}) {
    for (size_t i = 0; i < unit.size(); ++i) {
      Bytes damaged = unit;
      damaged[i] ^= mask;
      std::string error = verifyError(damaged, testSigner().publicKey());
      EXPECT_FALSE(error.empty()) << "byte " << i << " mask " << int(mask) << " went unnoticed";
      EXPECT_EQ(error.find('\n'), std::string::npos) << error;
      llvm::Expected<UnitDescription> shown = inspectUnit(damaged);  // must not crash either way
      if (shown) (void)describeUnitText(*shown, "x");
      else llvm::consumeError(shown.takeError());
    }
  }
}

TEST(Unit, EveryTruncationIsRefused) {
  Bytes unit = smallUnit();
  for (size_t length = 0; length < unit.size(); ++length) {
    Bytes cut(unit.begin(), unit.begin() + length);
    std::string error = verifyError(cut, testSigner().publicKey());
    EXPECT_FALSE(error.empty()) << "length " << length;
    if (length >= 64) EXPECT_NE(error.find("truncated"), std::string::npos) << length << ": " << error;
    llvm::Expected<UnitDescription> shown = inspectUnit(cut);
    EXPECT_FALSE(static_cast<bool>(shown)) << length;
    if (!shown) llvm::consumeError(shown.takeError());
  }
  Bytes longer = unit;
  longer.push_back(0);
  EXPECT_NE(verifyError(longer, testSigner().publicKey()).find("after the signature"), std::string::npos);
  Bytes notUnit = bytesOf("\x7f" "ELF and more bytes than a header would need, surely more than sixty-four of them");
  EXPECT_NE(verifyError(notUnit, testSigner().publicKey()).find("not a hotforge delivery unit"), std::string::npos);
}

TEST(Unit, ForgedManifestsAreRefused) {
  const PublicKey &key = testSigner().publicKey();
  std::vector<HandEntry> base = {{"core.so", bytesOf("the real image bytes")}};
  ASSERT_EQ(verifyError(handUnit(base), key), "") << "the hand-built unit itself must verify";

  // Change a hash in the manifest without re-signing.
  Bytes unit = handUnit(base);
  std::string text = textOf(unit);
  size_t at = text.find("\"sha256\":\"") + 10;
  unit[at] = unit[at] == '0' ? '1' : '0';
  EXPECT_NE(verifyError(unit, key).find("signature check failed"), std::string::npos) << verifyError(unit, key);

  // Re-sign a changed manifest with another key (which it then names as the signer).
  std::vector<HandEntry> evil = {{"core.so", bytesOf("evil image bytes!!!!")}};
  std::string error = verifyError(handUnit(evil, otherSigner()), key);
  EXPECT_NE(error.find("signature check failed"), std::string::npos) << error;
  // ... or still naming the real signer.
  Bytes payload;
  nlohmann::json manifest = handManifest(evil, testSigner(), payload);
  error = verifyError(assemble(manifest.dump(), payload, otherSigner()), key);
  EXPECT_NE(error.find("signature check failed"), std::string::npos) << error;

  // Signed by the right key, but the hashes do not match the bytes.
  std::vector<HandEntry> wrongCompressed = base;
  wrongCompressed[0].overrides = {{"compressed_sha256", std::string(64, 'c')}};
  error = verifyError(handUnit(wrongCompressed), key);
  EXPECT_NE(error.find("compressed payload does not match its SHA-256"), std::string::npos) << error;
  std::vector<HandEntry> wrongImage = base;
  wrongImage[0].overrides = {{"sha256", std::string(64, 'd')}};
  error = verifyError(handUnit(wrongImage), key);
  EXPECT_NE(error.find("image does not match its SHA-256"), std::string::npos) << error;

  // Right key, but not canonical JSON, or not this schema.
  payload.clear();
  manifest = handManifest(base, testSigner(), payload);
  error = verifyError(assemble(manifest.dump(1), payload, testSigner()), key);
  EXPECT_NE(error.find("canonical"), std::string::npos) << error;
  std::string duplicateKey = manifest.dump();
  duplicateKey.insert(1, "\"compression\":\"zstd\",");
  error = verifyError(assemble(duplicateKey, payload, testSigner()), key);
  EXPECT_NE(error.find("canonical"), std::string::npos) << error;
  nlohmann::json unknown = manifest;
  unknown["extra"] = 1;
  error = verifyError(assemble(unknown.dump(), payload, testSigner()), key);
  EXPECT_NE(error.find("unknown field"), std::string::npos) << error;
  nlohmann::json otherSchema = manifest;
  otherSchema["schema"] = "hotforge.unit/2";
  error = verifyError(assemble(otherSchema.dump(), payload, testSigner()), key);
  EXPECT_NE(error.find("schema"), std::string::npos) << error;
  // A manifest that names another signer than the key that signed it.
  nlohmann::json otherName = manifest;
  otherName["signer"]["fingerprint"] = otherSigner().publicKey().fingerprint();
  error = verifyError(assemble(otherName.dump(), payload, testSigner()), key);
  EXPECT_NE(error.find("names signer key"), std::string::npos) << error;
  // Payload bytes not covered by any entry.
  Bytes padded = payload;
  padded.push_back(0);
  error = verifyError(assemble(manifest.dump(), padded, testSigner()), key);
  EXPECT_NE(error.find("payload area"), std::string::npos) << error;
  // A recorded sequence that does not match the info it came from.
  std::vector<HandEntry> sequence = base;
  sequence[0].overrides = {{"info", {{"baseline", {{"sha256", std::string(64, 'a')}}}, {"sequence", 4}}},
                           {"baseline", {{"sha256", std::string(64, 'a')}}},
                           {"sequence", 4},
                           {"supersedes", 1}};
  error = verifyError(handUnit(sequence), key);
  EXPECT_NE(error.find("supersedes"), std::string::npos) << error;
  sequence[0].overrides["supersedes"] = 3;
  EXPECT_EQ(verifyError(handUnit(sequence), key), "");
}

const std::vector<std::string> kUnsafeNames = {"../x", "/abs", "a/b", "", "..", ".", "a\\b", "\\abs", "C:x",
                                               "x.", "tab\tname", "dir/../x"};

TEST(Unit, UnsafeNamesAreRefusedWhenPacking) {
  for (const std::string &name : kUnsafeNames) {
    std::string error = packError({entry(name, "bytes")});
    EXPECT_NE(error.find("entry name"), std::string::npos) << "'" << name << "': " << error;
  }
  EXPECT_NE(packError({entry("a.so", "1"), entry("a.so", "2")}).find("duplicate entry name"), std::string::npos);
  EXPECT_NE(packError({entry("A.so", "1"), entry("a.so", "2")}).find("duplicate entry name"), std::string::npos);
  EXPECT_EQ(packError({entry("a..b.so", "fine"), entry("b", "fine")}), "");
  EXPECT_NE(packError({}).find("at least one"), std::string::npos);
  nlohmann::json sameBaseline = {{"baseline", {{"sha256", std::string(64, 'a')}}}, {"sequence", 1}};
  EXPECT_NE(packError({entry("a", "1", sameBaseline), entry("b", "2", sameBaseline)}).find("same baseline"),
            std::string::npos);
  EXPECT_NE(packError({entry("a", "1", {{"sequence", 2}})}).find("needs info.baseline"), std::string::npos);
  EXPECT_NE(packError({entry("a", "1", {{"baseline", "x"}})}).find("must be an object"), std::string::npos);
  EXPECT_NE(packError({entry("a", "1", nlohmann::json::array())}).find("object"), std::string::npos);
}

TEST(Unit, UnsafeNamesAreRefusedWhenVerifying) {
  const PublicKey &key = testSigner().publicKey();
  for (const std::string &name : kUnsafeNames) {
    std::string error = verifyError(handUnit({{name, bytesOf("bytes")}}), key);
    EXPECT_NE(error.find("entry name"), std::string::npos) << "'" << name << "': " << error;
  }
  std::string error = verifyError(handUnit({{"a.so", bytesOf("1")}, {"a.so", bytesOf("2")}}), key);
  EXPECT_NE(error.find("duplicate entry name"), std::string::npos) << error;
  error = verifyError(handUnit({{"A.so", bytesOf("1")}, {"a.so", bytesOf("2")}}), key);
  EXPECT_NE(error.find("duplicate entry name"), std::string::npos) << error;
  error = verifyError(handUnit({{"b.so", bytesOf("1")}, {"a.so", bytesOf("2")}}), key);
  EXPECT_NE(error.find("not sorted"), std::string::npos) << error;
  EXPECT_EQ(verifyError(handUnit({{"a.so", bytesOf("1")}, {"b.so", bytesOf("2")}}), key), "");
}

bool underSanitizer() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#endif
#endif
  return false;
}

TEST(Unit, DeclaredSizesAreBoundedBeforeAllocating) {
  const PublicKey &key = testSigner().publicKey();
  Bytes image = bytesOf("small image");
  // Far above the limit: refused from the manifest alone.
  std::string error = verifyError(handUnit({{"big.so", image, {}, {{"size", uint64_t(1) << 40}}}}), key);
  EXPECT_NE(error.find("above the 2 GiB limit"), std::string::npos) << error;
  // Just under the limit, but the frame says otherwise: refused before the buffer is allocated.
  // Under an address-space limit of 512 MiB an allocation of 2 GiB would fail loudly.
  Bytes lying = handUnit({{"big.so", image, {}, {{"size", kUnitMaxImageSize}}}});
  if (!underSanitizer()) {
    auto underLimit = [&] {
      rlimit limit;
      limit.rlim_cur = limit.rlim_max = 512u << 20;
      setrlimit(RLIMIT_AS, &limit);
      std::string e = verifyError(lying, key);
      std::_Exit(e.find("the zstd frame declares 11 bytes") != std::string::npos ? 0 : 1);
    };
    EXPECT_EXIT(underLimit(), testing::ExitedWithCode(0), "");
  }
  error = verifyError(lying, key);
  EXPECT_NE(error.find("the zstd frame declares 11 bytes"), std::string::npos) << error;

  // A frame that lies about its own size (a zip bomb) is stopped at the declared size.
  Bytes bomb(1 << 20, 'A');
  Bytes frame = zstdFrame(bomb, 19);
  uint8_t fhd = frame[4];
  ASSERT_EQ(fhd >> 6, 2) << "expected a 4-byte content size field";
  size_t fcsAt = 5 + (((fhd >> 5) & 1) ? 0 : 1) + std::array<size_t, 4>{0, 1, 2, 4}[fhd & 3];
  putLe(frame, fcsAt, 1000, 4);
  Bytes declared(1000, 'A');
  error = verifyError(handUnit({{"bomb.so", declared, frame}}), key);
  EXPECT_NE(error.find("entry \"bomb.so\""), std::string::npos) << error;
  // A frame that does not declare its size at all.
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  Bytes noSize(ZSTD_compressBound(image.size()) + 64);
  ZSTD_inBuffer in{image.data(), image.size(), 0};
  ZSTD_outBuffer out{noSize.data(), noSize.size(), 0};
  ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_continue);  // streaming: the size stays unknown
  while (ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end) != 0) {
  }
  ZSTD_freeCCtx(cctx);
  noSize.resize(out.pos);
  error = verifyError(handUnit({{"nosize.so", image, noSize}}), key);
  EXPECT_NE(error.find("does not declare its content size"), std::string::npos) << error;
  // Two frames in one payload.
  Bytes twice = zstdFrame(image);
  Bytes second = zstdFrame(Bytes());
  twice.insert(twice.end(), second.begin(), second.end());
  error = verifyError(handUnit({{"two.so", image, twice}}), key);
  EXPECT_NE(error.find("exactly one zstd frame"), std::string::npos) << error;
  // A header whose sizes point past the end of the file.
  Bytes unit = smallUnit();
  putLe(unit, 40, uint64_t(1) << 62, 8);
  error = verifyError(unit, key);
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  unit = smallUnit();
  putLe(unit, 24, uint64_t(1) << 40, 8);
  error = verifyError(unit, key);
  EXPECT_NE(error.find("manifest size"), std::string::npos) << error;
}

TEST(Unit, InspectShowsUnverifiedUnits) {
  nlohmann::json info = {{"baseline", {{"sha256", std::string(64, 'b')}}}, {"sequence", 2}};
  Bytes unit = pack({entry("core.so", "image", info)});
  llvm::Expected<UnitDescription> d = inspectUnit(unit);
  ASSERT_TRUE(static_cast<bool>(d)) << llvm::toString(d.takeError());
  EXPECT_FALSE(d->verified);
  std::string text = describeUnitText(*d, "u.hfu");
  EXPECT_EQ(text.rfind("u.hfu: hotforge delivery unit (format 1), 1 image, NOT VERIFIED", 0), 0u) << text;
  EXPECT_NE(text.find("supersedes sequences 1..1"), std::string::npos) << text;
  nlohmann::json doc = describeUnitJson(*d, "u.hfu");
  EXPECT_EQ(doc["verified"], false);
  EXPECT_EQ(doc["manifest"]["entries"][0]["name"], "core.so");
  EXPECT_EQ(doc["header"]["signature_size"], 64);
}

// ---- keys, OpenSSL interoperability ----

CommandResult hotforge(std::vector<std::string> args) {
  args.insert(args.begin(), {"timeout", "120", hotforgeBinary()});
  return run(args);
}

std::string fresh(const std::string &name) {
  static int counter = 0;
  std::string dir = tempDir() + "/p" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  mkdir(dir.c_str(), 0700);
  return dir + "/" + name;
}

std::string sample(const std::string &variant) { return samplesDir() + "/elf-x64-gcc/core." + variant; }

void expectOneLineError(const CommandResult &r, const std::string &needle) {
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("hotforge: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

TEST(Keys, KeygenWritesAPrivateFileOnlyTheOwnerReads) {
  std::string name = fresh("release");
  mode_t old = umask(0);  // even a permissive umask must not widen the private key
  llvm::Expected<KeyFiles> files = generateKeyFiles(name);
  umask(old);
  ASSERT_TRUE(static_cast<bool>(files)) << llvm::toString(files.takeError());
  struct stat st;
  ASSERT_EQ(stat(files->privatePath.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(readFile(files->privatePath).rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  EXPECT_EQ(readFile(files->publicPath).rfind("-----BEGIN PUBLIC KEY-----", 0), 0u);

  std::string cliName = fresh("cli");
  CommandResult r = hotforge({"keygen", "-o", cliName});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  ASSERT_EQ(stat((cliName + ".pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string before = readFile(cliName + ".pem");
  r = hotforge({"keygen", "-o", cliName});
  expectOneLineError(r, "already exists");
  EXPECT_EQ(readFile(cliName + ".pem"), before) << "an existing key was replaced";
  // The files are what OpenSSL writes and reads.
  r = run({"openssl", "pkey", "-in", cliName + ".pem", "-pubout"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(r.out, readFile(cliName + ".pub.pem"));
  // No temporary files left next to them.
  r = run({"sh", "-c", "ls " + cliName.substr(0, cliName.rfind('/'))});
  EXPECT_EQ(r.out, "cli.pem\ncli.pub.pem\n");
}

TEST(Keys, OpenSslKeysWorkEverywhere) {
  std::string key = fresh("openssl.pem"), pub = key + ".pub";
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "ed25519", "-out", key}).exitCode, 0);
  ASSERT_EQ(run({"openssl", "pkey", "-in", key, "-pubout", "-out", pub}).exitCode, 0);
  llvm::Expected<std::unique_ptr<Signer>> signer = makeKeyFileSigner(key);
  ASSERT_TRUE(static_cast<bool>(signer)) << llvm::toString(signer.takeError());
  llvm::Expected<PublicKey> publicKey = lift(readPublicKeyFile(pub));
  ASSERT_TRUE(static_cast<bool>(publicKey)) << llvm::toString(publicKey.takeError());
  EXPECT_EQ((*signer)->publicKey(), *publicKey);

  std::string unit = fresh("u.hfu");
  CommandResult r = hotforge({"pack", sample("base"), sample("fix1"), "-o", unit, "--key", key});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = hotforge({"verify", unit, "--pubkey", pub});
  EXPECT_EQ(r.exitCode, 0) << r.err;

  // OpenSSL itself accepts the unit's signature over header + manifest.
  Bytes bytes = bytesOf(readFile(unit));
  uint64_t payloadOffset = 0;
  for (int i = 7; i >= 0; --i) payloadOffset = (payloadOffset << 8) | bytes[32 + i];
  std::string message = fresh("signed.bin"), signature = fresh("sig.bin");
  writeFile(message, std::string(bytes.begin(), bytes.begin() + payloadOffset));
  writeFile(signature, std::string(bytes.end() - 64, bytes.end()));
  r = run({"openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", message, "-sigfile", signature});
  EXPECT_EQ(r.exitCode, 0) << r.out << r.err;

  // Wrong kinds of key get a message that says what to give instead.
  r = hotforge({"verify", unit, "--pubkey", key});
  expectOneLineError(r, "this is a private key");
  r = hotforge({"pack", sample("base"), "-o", fresh("x.hfu"), "--key", pub});
  expectOneLineError(r, "this is a public key");
  std::string rsa = fresh("rsa.pem");
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", rsa}).exitCode, 0);
  r = hotforge({"pack", sample("base"), "-o", fresh("x.hfu"), "--key", rsa});
  expectOneLineError(r, "not Ed25519");
  std::string encrypted = fresh("enc.pem");
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "ed25519", "-aes256", "-pass", "pass:secret", "-out", encrypted})
                .exitCode,
            0);
  r = hotforge({"pack", sample("base"), "-o", fresh("x.hfu"), "--key", encrypted});
  expectOneLineError(r, "encrypted");
  // Empty key files: a sentence, not OpenSSL's "passed a null parameter".
  std::string empty = fresh("empty.pem");
  writeFile(empty, "");
  r = hotforge({"pack", sample("base"), "-o", fresh("x.hfu"), "--key", empty});
  expectOneLineError(r, "the file is empty, not a PEM private key");
  r = hotforge({"verify", unit, "--pubkey", empty});
  expectOneLineError(r, "the file is empty, not a PEM public key");
}

TEST(Keys, SignCommandSignsLikeTheKeyFile) {
  std::string key = fresh("k.pem"), pub = key + ".pub";
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "ed25519", "-out", key}).exitCode, 0);
  ASSERT_EQ(run({"openssl", "pkey", "-in", key, "-pubout", "-out", pub}).exitCode, 0);
  std::string script = fresh("sign.sh");
  // OpenSSL 3.0 signs Ed25519 in one shot and must know the input size: stdin is a regular file.
  writeFile(script, "#!/bin/sh\nexec openssl pkeyutl -sign -inkey \"$1\" -rawin -in /dev/stdin -out /dev/stdout\n");
  std::string withKey = fresh("key.hfu"), withCommand = fresh("cmd.hfu");
  CommandResult r = hotforge({"pack", sample("base"), sample("fix1"), "-o", withKey, "--key", key});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  r = hotforge({"pack", sample("base"), sample("fix1"), "-o", withCommand, "--sign-cmd", "sh " + script + " " + key,
                "--pubkey", pub});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(readFile(withKey), readFile(withCommand)) << "Ed25519 is deterministic: both ways give the same unit";
  r = hotforge({"verify", withCommand, "--pubkey", pub});
  EXPECT_EQ(r.exitCode, 0) << r.err;

  // A signer that misbehaves: nothing is written, and nothing is left behind.
  std::string other = fresh("other.pem");
  ASSERT_EQ(run({"openssl", "genpkey", "-algorithm", "ed25519", "-out", other}).exitCode, 0);
  std::string out = fresh("never.hfu");
  std::string dir = out.substr(0, out.rfind('/'));
  struct Case {
    std::string command, needle;
  };
  for (const Case &c : {Case{"sh " + script + " " + other, "does not verify"}, Case{"head -c 10 /dev/zero", "wrote 10 bytes"},
                        Case{"cat", "wrote"}, Case{"exit 7", "exit code 7"}, Case{"kill -9 $$", "signal 9"}}) {
    r = hotforge({"pack", sample("base"), "-o", out, "--sign-cmd", c.command, "--pubkey", pub});
    expectOneLineError(r, c.needle);
    EXPECT_EQ(run({"ls", "-A", dir}).out, "") << c.command;
  }
}

// ---- the command line ----

TEST(PackCli, PackAndVerifyRoundTrip) {
  std::string name = fresh("rel");
  ASSERT_EQ(hotforge({"keygen", "-o", name}).exitCode, 0);
  std::string unit = fresh("release.hfu");
  CommandResult r = run({"env", "SOURCE_DATE_EPOCH=1700000000", hotforgeBinary(), "pack", sample("base"),
                         sample("fix1"), sample("fix2"), "-o", unit, "--key", name + ".pem", "--release", "2026-11",
                         "--level", "9", "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["schema"], "hotforge.pack/1");
  EXPECT_EQ(summary["manifest"]["created"], 1700000000);
  EXPECT_EQ(summary["manifest"]["release"], "2026-11");
  EXPECT_EQ(summary["manifest"]["level"], 9);
  ASSERT_EQ(summary["manifest"]["entries"].size(), 3u);
  EXPECT_EQ(summary["manifest"]["entries"][0]["info"],
            nlohmann::json({{"file", "core.base"}, {"size", readFile(sample("base")).size()}}));
  EXPECT_EQ(summary["size"], readFile(unit).size());

  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("signature and every hash verified: 3 images"), std::string::npos) << r.out;
  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json verified = nlohmann::json::parse(r.out);
  EXPECT_EQ(verified["schema"], "hotforge.verify/1");
  EXPECT_EQ(verified["ok"], true);
  EXPECT_EQ(verified["entries"][1]["sha256"], sha256Hex(bytesOf(readFile(sample("fix1")))));

  // Same inputs, same key: the same bytes.
  std::string again = fresh("again.hfu");
  r = run({"env", "SOURCE_DATE_EPOCH=1700000000", hotforgeBinary(), "pack", sample("fix2"), sample("base"),
           sample("fix1"), "-o", again, "--key", name + ".pem", "--release", "2026-11", "--level", "9", "-j", "1"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(readFile(unit), readFile(again));

  // Another key does not verify it; a damaged copy gives one line naming the unit.
  std::string other = fresh("other");
  ASSERT_EQ(hotforge({"keygen", "-o", other}).exitCode, 0);
  expectOneLineError(hotforge({"verify", unit, "--pubkey", other + ".pub.pem"}), "signature check failed");
  std::string damaged = fresh("damaged.hfu");
  std::string bytes = readFile(unit);
  bytes[bytes.size() - 100] ^= 0x55;  // inside the last payload
  writeFile(damaged, bytes);
  r = hotforge({"verify", damaged, "--pubkey", name + ".pub.pem"});
  expectOneLineError(r, damaged);
  EXPECT_NE(r.err.find("does not match its SHA-256"), std::string::npos) << r.err;
  expectOneLineError(hotforge({"verify", fresh("missing.hfu"), "--pubkey", name + ".pub.pem"}), "cannot read");
  expectOneLineError(hotforge({"verify", sample("base"), "--pubkey", name + ".pub.pem"}),
                     "not a hotforge delivery unit");
}

TEST(PackCli, HelpAndUsage) {
  for (const char *command : {"keygen", "pack", "verify"}) {
    CommandResult r = hotforge({command, "--help"});
    EXPECT_EQ(r.exitCode, 0) << command;
    EXPECT_NE(r.out.find("Example"), std::string::npos) << command;
    EXPECT_NE(r.out.find("Exit codes"), std::string::npos) << command;
  }
  std::string unit = fresh("u.hfu");
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", unit}).exitCode, 2);  // no signer
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", unit, "--key", "k", "--sign-cmd", "x"}).exitCode, 2);
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", unit, "--sign-cmd", "x"}).exitCode, 2);  // needs --pubkey
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", unit, "--key", "k", "--level", "0"}).exitCode, 2);
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", unit, "--key", "k", "--level", "23"}).exitCode, 2);
  EXPECT_EQ(hotforge({"pack", "-o", unit, "--key", "k"}).exitCode, 2);
  EXPECT_EQ(hotforge({"verify", unit}).exitCode, 2);
  EXPECT_EQ(hotforge({"keygen"}).exitCode, 2);
}

TEST(PackCli, DuplicateAndUnsafeNamesAreRefused) {
  std::string name = fresh("k");
  ASSERT_EQ(hotforge({"keygen", "-o", name}).exitCode, 0);
  std::string a = fresh("core.so"), b = fresh("CORE.so");
  writeFile(a, "one");
  writeFile(b, "two");
  std::string unit = fresh("u.hfu");
  CommandResult r = hotforge({"pack", a, b, "-o", unit, "--key", name + ".pem"});
  expectOneLineError(r, "must be unique");
  r = hotforge({"pack", a, a, "-o", unit, "--key", name + ".pem"});
  expectOneLineError(r, "must be unique");
  std::string dotted = fresh("trailing.");
  writeFile(dotted, "x");
  r = hotforge({"pack", dotted, "-o", unit, "--key", name + ".pem"});
  expectOneLineError(r, "entry name");
  EXPECT_EQ(access(unit.c_str(), F_OK), -1) << "a refused pack wrote a unit";
  // A failed pack leaves an existing unit as it was.
  writeFile(unit, "old unit");
  r = hotforge({"pack", dotted, "-o", unit, "--key", name + ".pem"});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(readFile(unit), "old unit");
}

TEST(PackCli, InspectShowsAUnitFile) {
  nlohmann::json info = {{"baseline", {{"sha256", std::string(64, 'b')}}}, {"sequence", 2}};
  std::string path = fresh("inspect.hfu");
  writeFile(path, textOf(pack({entry("core.so", "image", info)})));
  CommandResult r = hotforge({"inspect", path, "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["schema"], "hotforge.inspect-unit/1");
  EXPECT_EQ(doc["verified"], false);
  EXPECT_EQ(doc["manifest"]["entries"][0]["name"], "core.so");
  r = hotforge({"inspect", path});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(r.out.rfind(path + ": hotforge delivery unit (format 1), 1 image, NOT VERIFIED", 0), 0u) << r.out;
  // A binary is still read as a binary.
  r = hotforge({"inspect", sample("base"), "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["schema"], "hotforge.inspect/1");
}

// What cannot be an image is refused with one line, and a failed pack, build or keygen leaves
// nothing in the output directory: no unit, no temporary file.
TEST(PackCli, RefusesWhatIsNoImageAndLeavesNothingBehind) {
  std::string keyName = fresh("k"), key = keyName + ".pem", pub = keyName + ".pub.pem";
  ASSERT_EQ(hotforge({"keygen", "-o", keyName}).exitCode, 0);
  std::string dir = fresh("");
  std::string image = dir + "core.hfpatch";
  CommandResult r = hotforge({"build", sample("base"), sample("fix1"), "-o", image});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  std::string good = dir + "good.hfu";
  r = hotforge({"pack", image, "-o", good, "--key", key, "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json info = nlohmann::json::parse(r.out)["manifest"]["entries"][0]["info"];
  EXPECT_EQ(info["kind"], "hotpatch-image");
  EXPECT_EQ(info["baseline"]["sha256"], sha256Hex(bytesOf(readFile(sample("base")))));
  EXPECT_EQ(info["changes"][0]["name"], "table_get");

  // A hotpatch image whose records carry another format version: before, it was packed as if it
  // were an opaque file, and only the loader found out.
  std::string empty = dir + "empty.hfpatch", crafted = dir + "crafted.hfpatch";
  writeFile(empty, "");
  std::string bytes = readFile(image);
  size_t records = bytes.find(std::string("HFPATCH\0", 8));
  ASSERT_NE(records, std::string::npos);
  bytes[records + 8] ^= 0x7f;
  writeFile(crafted, bytes);
  std::string unit = dir + "out.hfu";
  expectOneLineError(hotforge({"pack", empty, "-o", unit, "--key", key}), "empty.hfpatch: the file is empty");
  expectOneLineError(hotforge({"pack", good, "-o", unit, "--key", key}), "good.hfu: is a delivery unit");
  expectOneLineError(hotforge({"pack", crafted, "-o", unit, "--key", key}),
                     "crafted.hfpatch: not a valid hotpatch image: patch format version");
  expectOneLineError(hotforge({"pack", dir, "-o", unit, "--key", key}), "is a directory");
  expectOneLineError(hotforge({"pack", image, "-o", dir + "missing/out.hfu", "--key", key}),
                     "missing/out.hfu: cannot create a temporary file");
  expectOneLineError(hotforge({"pack", image, "-o", unit, "--sign-cmd", "false", "--pubkey", pub}),
                     "--sign-cmd failed");
  expectOneLineError(hotforge({"pack", image, "-o", dir, "--key", key}), "cannot rename");
  r = hotforge({"build", sample("base"), sample("fix1"), "-o", dir + "missing/x.hfpatch"});
  expectOneLineError(r, "missing/x.hfpatch: cannot create a temporary file");
  r = hotforge({"build", sample("base"), sample("base"), "-o", dir + "x.hfpatch"});  // no change: no error, no file
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("not written: no change"), std::string::npos) << r.out;
  for (const char *stdoutName : {"-", ""}) {
    r = hotforge({"build", sample("base"), sample("fix1"), "-o", stdoutName});
    EXPECT_EQ(r.exitCode, 2) << r.err;  // the binary image would run into the report on stdout
    EXPECT_TRUE(r.out.empty()) << r.out.size() << " bytes on stdout";
  }
  expectOneLineError(hotforge({"keygen", "-o", dir + "missing/k"}), "cannot create a temporary file");
  r = run({"sh", "-c", "cd " + dir + " && ls -A"});
  EXPECT_EQ(r.out, "core.hfpatch\ncrafted.hfpatch\nempty.hfpatch\ngood.hfu\n");
}

TEST(PackCli, VerifyMatchesBaseBinaries) {
  std::string name = fresh("k");
  ASSERT_EQ(hotforge({"keygen", "-o", name}).exitCode, 0);
  llvm::Expected<std::unique_ptr<Signer>> signer = makeKeyFileSigner(name + ".pem");
  ASSERT_TRUE(static_cast<bool>(signer));
  std::string baseSha = sha256Hex(bytesOf(readFile(sample("base"))));
  nlohmann::json info = {{"file", "core"}, {"baseline", {{"sha256", baseSha}}}, {"sequence", 1}};
  PackOptions options;
  options.signer = signer->get();
  Bytes bytes = pack({entry("core.patch", readFile(sample("fix1")), info), entry("other.patch", "x")}, options);
  std::string unit = fresh("u.hfu");
  writeFile(unit, textOf(bytes));

  CommandResult r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--base", sample("base")});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("base " + sample("base")), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("entry other.patch records no baseline"), std::string::npos) << r.out;
  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--base", sample("base"), "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["entries"][0]["base"], sample("base"));
  EXPECT_EQ(doc["entries"][0]["supersedes"], 0);
  EXPECT_TRUE(doc["entries"][1]["base"].is_null());

  // A base that fits no entry: the report once, as errors (nothing on stdout) or in the JSON.
  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--base", sample("fix2")});
  expectOneLineError(r, "is the baseline of no entry");
  EXPECT_EQ(r.out, "");
  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--base", sample("fix2"), "--json"});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.err, "");
  doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["ok"], false);
  ASSERT_EQ(doc["problems"].size(), 1u);
  EXPECT_NE(doc["problems"][0].get<std::string>().find("is the baseline of no entry"), std::string::npos);
  r = hotforge({"verify", unit, "--pubkey", name + ".pub.pem", "--base", sample("fix2"), "--base", name + ".pem"});
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 2) << r.err;
}

// The manifest's sequence and baseline of a hotpatch image are what the image itself says: a
// unit signed with other values is refused by verify (and by apply and the agent, which verify).
TEST(Verify, ManifestSequenceMustBeTheImagesSequence) {
  std::string name = fresh("sequence-key");
  ASSERT_EQ(hotforge({"keygen", "-o", name}).exitCode, 0);
  std::string image = fresh("core.hfpatch");
  ASSERT_EQ(hotforge({"build", sample("base"), sample("fix1"), "-o", image, "--sequence", "3"}).exitCode, 0);
  llvm::Expected<std::unique_ptr<Signer>> signer = makeKeyFileSigner(name + ".pem");
  ASSERT_TRUE(static_cast<bool>(signer));
  PackOptions options;
  options.signer = signer->get();
  std::string baseSha = sha256Hex(bytesOf(readFile(sample("base"))));
  for (auto [sequence, sha, needle] : {std::tuple{5, baseSha, "the manifest records sequence 5, the image is sequence 3"},
                                       {3, std::string(64, 'a'), "the manifest records baseline sha256 aaaa"}}) {
    nlohmann::json info = {{"file", "core.hfpatch"}, {"baseline", {{"sha256", sha}}}, {"sequence", sequence}};
    std::string unit = fresh("mismatch-" + std::to_string(sequence) + ".hfu");
    writeFile(unit, textOf(pack({entry("core.hfpatch", readFile(image), info)}, options)));
    expectOneLineError(hotforge({"verify", unit, "--pubkey", name + ".pub.pem"}), needle);
  }
  // What pack writes itself agrees.
  std::string unit = fresh("agrees.hfu");
  ASSERT_EQ(hotforge({"pack", image, "-o", unit, "--key", name + ".pem"}).exitCode, 0);
  EXPECT_EQ(hotforge({"verify", unit, "--pubkey", name + ".pub.pem"}).exitCode, 0);
}

// A private key others can read is refused by pack (and release), as ssh refuses one.
TEST(Keys, PackRefusesAPrivateKeyOthersCanRead) {
  std::string name = fresh("open-key");
  ASSERT_EQ(hotforge({"keygen", "-o", name}).exitCode, 0);
  for (mode_t mode : {mode_t(0644), mode_t(0640), mode_t(0604)}) {
    ASSERT_EQ(chmod((name + ".pem").c_str(), mode), 0);
    CommandResult r = hotforge({"pack", sample("base"), "-o", fresh("open.hfu"), "--key", name + ".pem"});
    expectOneLineError(r, "the private key is open to group or others");
    EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(fresh("open.hfu")));
  }
  ASSERT_EQ(chmod((name + ".pem").c_str(), 0600), 0);
  EXPECT_EQ(hotforge({"pack", sample("base"), "-o", fresh("open.hfu"), "--key", name + ".pem"}).exitCode, 0);
}

}  // namespace
}  // namespace hotforge::test
