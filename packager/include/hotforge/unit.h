// Delivery units: one file that carries one or many hotpatch images, zstd-compressed and signed
// with Ed25519. The byte layout is in packager/FORMAT.md; how to use it is in packager/README.md.
//
// packUnit() is deterministic: the same entries, options and key give a byte-identical unit.
// inspectUnit() shows a unit without a key and says that what it shows is unverified.
// Reading and verifying (verifyUnit, public keys, readFileBytes) is the runtime's
// (hotforge/core/unit_reader.h), shared with the agent; call it through lift().
#pragma once

#include "hotforge/core/unit_reader.h"

#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotforge {

// zstd level when none is given: a unit is packed once and fetched by many hosts, and zstd
// decompresses about equally fast at every level, so the default buys size with pack time. 19 is
// the highest level that needs no "ultra" window (levels 20..22 are accepted too).
inline constexpr int kUnitDefaultLevel = 19;

// ---- signing ----
class Signer {
public:
  virtual ~Signer() = default;
  virtual const PublicKey &publicKey() const = 0;
  virtual llvm::Expected<std::array<uint8_t, 64>> sign(llvm::ArrayRef<uint8_t> message) = 0;
};

// Signs with an unencrypted PKCS#8 Ed25519 private key in PEM ("BEGIN PRIVATE KEY", what
// `openssl genpkey -algorithm ed25519` and `hotforge keygen` write).
llvm::Expected<std::unique_ptr<Signer>> makeKeyFileSigner(const std::string &path);
// Same, from a raw 32-byte Ed25519 seed (tests, fuzzing).
llvm::Expected<std::unique_ptr<Signer>> makeSeedSigner(const std::array<uint8_t, 32> &seed);
// Runs `command` through /bin/sh -c with the bytes to sign on stdin (a regular file, so tools that
// need to know the input size work) and expects exactly the raw 64-byte signature on stdout. The
// returned signature is checked against `expectedKey` before sign() returns it.
std::unique_ptr<Signer> makeCommandSigner(std::string command, PublicKey expectedKey);

struct KeyFiles {
  std::string privatePath, publicPath;
  PublicKey publicKey;
};
// Generates an Ed25519 key pair and writes NAME.pem (PKCS#8, mode 0600) and NAME.pub.pem (SPKI).
// Refuses to replace an existing file; each file appears whole or not at all.
llvm::Expected<KeyFiles> generateKeyFiles(const std::string &name);

// ---- packing ----
struct PackOptions {
  std::string release;                 // release id, may be empty
  int level = kUnitDefaultLevel;       // zstd level, 1..22
  std::optional<int64_t> created;      // seconds since the epoch; null in the manifest when unset
  unsigned threads = 0;                // zstd workers, 0 = one per core; never changes the output
  Signer *signer = nullptr;            // required
};

// SOURCE_DATE_EPOCH as an integer, or nullopt when unset; an error when it is not a decimal integer.
llvm::Expected<std::optional<int64_t>> sourceDateEpoch();

// Entries are stored sorted by name, so their order does not change the unit.
llvm::Expected<std::vector<uint8_t>> packUnit(const std::vector<UnitEntry> &entries, const PackOptions &options);

// ---- inspecting ----
struct UnitDescription {
  UnitHeader header;
  nlohmann::json manifest;
  uint64_t fileSize = 0;
  bool verified = false;  // inspectUnit never checks the signature
};

llvm::Expected<UnitDescription> inspectUnit(llvm::ArrayRef<uint8_t> unit);
std::string describeUnitText(const UnitDescription &unit, const std::string &path);
nlohmann::json describeUnitJson(const UnitDescription &unit, const std::string &path);

// ---- files ----
// Writes through a temporary file in the same directory and a rename. With `replace` false an
// existing file is never replaced (the final step is an atomic no-clobber link).
llvm::Error writeFileAtomically(const std::string &path, llvm::ArrayRef<uint8_t> bytes, unsigned mode,
                                bool replace);

}  // namespace hotforge
