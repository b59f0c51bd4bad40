// Hex text for messages and JSON.
#include "hotforge/runtime/bytes.h"


namespace hotforge {

namespace {
constexpr char kDigits[] = "0123456789abcdef";
}

std::string hexEncode(std::span<const uint8_t> bytes) {
  std::string text;
  text.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    text.push_back(kDigits[b >> 4]);
    text.push_back(kDigits[b & 15]);
  }
  return text;
}

std::string hexAddress(uint64_t value) {
  std::string digits;
  do {
    digits.insert(digits.begin(), kDigits[value & 15]);
    value >>= 4;
  } while (value);
  return "0x" + digits;
}

}  // namespace hotforge
