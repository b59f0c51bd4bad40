// Ed25519 public keys (OpenSSL 3): reading them from PEM, fingerprints, signature checks.
#include "hotforge/core/bytes.h"
#include "hotforge/core/openssl_keys.h"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

namespace hotforge {
namespace openssl {

std::string lastError() {
  unsigned long code = ERR_peek_last_error();
  std::string text = "unknown OpenSSL error";
  if (code != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    text = buffer;
  }
  ERR_clear_error();
  return text;
}

int noPassphrase(char *, int, int, void *) { return -1; }

Outcome<PublicKey> rawPublicKey(EVP_PKEY *key, const std::string &name) {
  if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    const char *type = OBJ_nid2sn(EVP_PKEY_get_id(key));
    return fail(name, ": the key is ", type ? type : "of an unknown type",
                ", not Ed25519 (make one with `hotforge keygen` or `openssl genpkey -algorithm ed25519`)");
  }
  PublicKey out;
  size_t length = out.raw.size();
  if (EVP_PKEY_get_raw_public_key(key, out.raw.data(), &length) != 1 || length != out.raw.size())
    return fail(name, ": cannot read the raw public key: ", lastError());
  return out;
}

}  // namespace openssl

std::string PublicKey::fingerprint() const { return hexEncode(sha256(raw)); }

Outcome<PublicKey> parsePublicKeyPem(std::string_view pem, const std::string &name) {
  if (pem.empty()) return fail(name, ": the file is empty, not a PEM public key");
  if (pem.size() > openssl::kMaxPemSize) return fail(name, ": too large for a PEM key file");
  openssl::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(name, ": ", openssl::lastError());
  openssl::Pkey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, openssl::noPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    if (pem.find("PRIVATE KEY") != std::string_view::npos)
      return fail(name, ": this is a private key; give the public key instead (NAME.pub.pem from `hotforge keygen`, "
                        "or `openssl pkey -in KEY.pem -pubout`)");
    return fail(name, ": not a PEM public key (expected \"BEGIN PUBLIC KEY\", as `openssl pkey -pubout` and "
                      "`hotforge keygen` write)");
  }
  return openssl::rawPublicKey(key.get(), name);
}

Outcome<PublicKey> readPublicKeyFile(const std::string &path) {
  Outcome<std::vector<uint8_t>> bytes = readFileBytes(path, kMaxKeyFileSize);
  if (!bytes) return std::move(bytes).failure();
  return parsePublicKeyPem(std::string_view(reinterpret_cast<const char *>(bytes->data()), bytes->size()), path);
}

bool verifySignature(const PublicKey &key, std::span<const uint8_t> message, std::span<const uint8_t> signature) {
  if (signature.size() != 64) return false;
  openssl::Pkey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.raw.data(), key.raw.size()));
  openssl::MdCtx ctx(EVP_MD_CTX_new());
  bool ok = pkey && ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size()) == 1;
  ERR_clear_error();
  return ok;
}

}  // namespace hotforge
