// SHA-256 through OpenSSL: the baseline identity, unit hashes and cache keys.
//
// The SHA256_* functions run OpenSSL's SHA-256 code (SHA-NI, AVX2) directly. EVP_Digest runs the
// same code, but its first call loads the provider machinery: 8 million instructions, a third of
// a `hotforge diff` of a small library. OpenSSL 3 marks them deprecated without a replacement that
// avoids that cost.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "hotforge/core/bytes.h"

#include <openssl/sha.h>

namespace hotforge {

std::array<uint8_t, 32> sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> digest{};
  SHA256_CTX context;
  // These fail only on null arguments; the zero digest then matches nothing real.
  if (SHA256_Init(&context) != 1 || SHA256_Update(&context, bytes.data(), bytes.size()) != 1 ||
      SHA256_Final(digest.data(), &context) != 1)
    digest.fill(0);
  return digest;
}

}  // namespace hotforge
