// OpenSSL pieces that reading public keys (runtime) and signing with private keys (packager)
// share. Only for sources that link OpenSSL themselves.
#pragma once

#include "hotforge/core/unit_reader.h"

#include <openssl/bio.h>
#include <openssl/evp.h>

#include <memory>
#include <string>

namespace hotforge::openssl {

struct PkeyFree {
  void operator()(EVP_PKEY *key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct BioFree {
  void operator()(BIO *bio) const { BIO_free(bio); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
struct MdCtxFree {
  void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

// The newest OpenSSL error, and an empty queue afterwards.
std::string lastError();

// A pem_password_cb that never prompts: an encrypted key fails to load instead.
int noPassphrase(char *, int, int, void *);

// The raw Ed25519 public key of `key`; a message naming `name` when it is another kind of key.
Outcome<PublicKey> rawPublicKey(EVP_PKEY *key, const std::string &name);

// A PEM text too large to be a key is refused before OpenSSL sees it.
inline constexpr size_t kMaxPemSize = size_t(1) << 20;

}  // namespace hotforge::openssl
