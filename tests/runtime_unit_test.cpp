// The runtime's unit reader (hotforge/core/unit_reader.h), which the agent links instead of
// the packager: a unit made by `hotforge build`, `keygen` and `pack` verifies through it, and a
// tampered unit or the wrong key is refused with the message the CLI shows.
#include "hotforge/core/unit_reader.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace hotforge::test {
namespace {

struct PackedUnit {
  std::string dir, imagePath, unitPath;
};

// One hotpatch image of a real sample fix, packed into a unit signed with key "signer"; a second
// key pair "other" signs nothing.
const PackedUnit &packedUnit() {
  static const PackedUnit unit = [] {
    PackedUnit u;
    u.dir = tempDir() + "/runtime_unit";
    u.imagePath = u.dir + "/core.hfpatch";
    u.unitPath = u.dir + "/core.hfu";
    std::string samples = samplesDir() + "/elf-x64-gcc/";
    std::vector<std::vector<std::string>> steps = {
        {"mkdir", "-p", u.dir},
        {hotforgeBinary(), "build", samples + "core.base", samples + "core.fix1", "-o", u.imagePath},
        {hotforgeBinary(), "keygen", "-o", u.dir + "/signer"},
        {hotforgeBinary(), "keygen", "-o", u.dir + "/other"},
        {hotforgeBinary(), "pack", u.imagePath, "-o", u.unitPath, "--key", u.dir + "/signer.pem"},
    };
    for (const std::vector<std::string> &step : steps) {
      CommandResult r = run(step);
      EXPECT_EQ(r.exitCode, 0) << step[1] << ": " << r.err;
    }
    return u;
  }();
  return unit;
}

std::vector<uint8_t> unitBytes() {
  Outcome<std::vector<uint8_t>> bytes = readFileBytes(packedUnit().unitPath);
  EXPECT_TRUE(static_cast<bool>(bytes)) << bytes.error();
  return bytes ? *bytes : std::vector<uint8_t>{};
}

PublicKey key(const std::string &name) {
  Outcome<PublicKey> key = readPublicKeyFile(packedUnit().dir + "/" + name + ".pub.pem");
  EXPECT_TRUE(static_cast<bool>(key)) << key.error();
  return key ? *key : PublicKey{};
}

// The message verifyUnit refuses `unit` with, or "" when it verifies.
std::string refusal(const std::vector<uint8_t> &unit, const PublicKey &key) {
  Outcome<VerifiedUnit> verified = verifyUnit(unit, key);
  return verified ? "" : verified.error();
}

TEST(RuntimeUnit, VerifiesAPackedUnit) {
  std::vector<uint8_t> unit = unitBytes();
  ASSERT_TRUE(looksLikeUnit(unit));
  PublicKey signer = key("signer");
  Outcome<VerifiedUnit> verified = verifyUnit(unit, signer);
  ASSERT_TRUE(static_cast<bool>(verified)) << verified.error();
  EXPECT_EQ(verified->signerFingerprint, signer.fingerprint());
  EXPECT_EQ(verified->manifest["schema"], kUnitSchema);
  EXPECT_EQ(verified->header.signatureOffset + kUnitSignatureSize, unit.size());
  ASSERT_EQ(verified->entries.size(), 1u);
  EXPECT_EQ(verified->entries[0].name, "core.hfpatch");
  Outcome<std::vector<uint8_t>> image = readFileBytes(packedUnit().imagePath);
  ASSERT_TRUE(static_cast<bool>(image)) << image.error();
  EXPECT_EQ(verified->entries[0].bytes, *image);
}

TEST(RuntimeUnit, RefusesATamperedManifest) {
  std::vector<uint8_t> unit = unitBytes();
  std::string schema = kUnitSchema;
  auto at = std::search(unit.begin(), unit.end(), schema.begin(), schema.end());
  ASSERT_NE(at, unit.end());
  at[schema.size() - 1] = '2';  // "hotforge.unit/2": still canonical JSON, but not what was signed
  PublicKey signer = key("signer");
  EXPECT_EQ(refusal(unit, signer), "signature check failed with key " + signer.fingerprint() +
                                       ": the header or manifest was modified, or the signature is damaged");
}

TEST(RuntimeUnit, RefusesATamperedPayload) {
  std::vector<uint8_t> unit = unitBytes();
  ASSERT_GT(unit.size(), kUnitSignatureSize);
  unit[unit.size() - kUnitSignatureSize - 1] ^= 1;  // the last payload byte
  EXPECT_EQ(refusal(unit, key("signer")), "entry \"core.hfpatch\": the compressed payload does not match its SHA-256 "
                                          "in the manifest (the payload was modified)");
}

TEST(RuntimeUnit, RefusesTheWrongKey) {
  PublicKey other = key("other");
  EXPECT_EQ(refusal(unitBytes(), other), "signature check failed: the unit names signer key " +
                                             key("signer").fingerprint() + ", but the given public key is " +
                                             other.fingerprint() + " (wrong key, or a modified manifest)");
}

TEST(RuntimeUnit, ReadsOnlyEd25519PublicKeys) {
  std::string privatePath = packedUnit().dir + "/signer.pem";
  Outcome<std::vector<uint8_t>> pem = readFileBytes(privatePath);
  ASSERT_TRUE(static_cast<bool>(pem)) << pem.error();
  Outcome<PublicKey> parsed =
      parsePublicKeyPem(std::string_view(reinterpret_cast<const char *>(pem->data()), pem->size()), privatePath);
  ASSERT_FALSE(static_cast<bool>(parsed));
  EXPECT_EQ(parsed.error().rfind(privatePath + ": this is a private key", 0), 0u) << parsed.error();

  Outcome<PublicKey> missing = readPublicKeyFile(packedUnit().dir + "/absent.pub.pem");
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(missing.error().find("absent.pub.pem: cannot read: No such file"), std::string::npos) << missing.error();

  // An empty file used to reach OpenSSL and come back as "BIO routines::passed a null parameter".
  Outcome<PublicKey> empty = parsePublicKeyPem({}, "empty.pub.pem");
  ASSERT_FALSE(static_cast<bool>(empty));
  EXPECT_EQ(empty.error(), "empty.pub.pem: the file is empty, not a PEM public key");
}

}  // namespace
}  // namespace hotforge::test
