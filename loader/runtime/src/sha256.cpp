// SHA-256 through OpenSSL: the baseline identity, unit hashes and cache keys.
#include "hotforge/runtime/bytes.h"

#include <openssl/evp.h>

namespace hotforge {

std::array<uint8_t, 32> sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> digest{};
  unsigned size = 0;
  // EVP_Digest fails only when OpenSSL cannot allocate; the zero digest then matches nothing real.
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1) digest.fill(0);
  return digest;
}

}  // namespace hotforge
