// Little-endian fields, hex text and SHA-256: the byte-level helpers every stage shares.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge {

inline uint16_t readLe16(const uint8_t *at) { return uint16_t(at[0] | at[1] << 8); }
inline uint32_t readLe32(const uint8_t *at) { return uint32_t(readLe16(at)) | uint32_t(readLe16(at + 2)) << 16; }
inline uint64_t readLe64(const uint8_t *at) { return uint64_t(readLe32(at)) | uint64_t(readLe32(at + 4)) << 32; }
inline void writeLe(uint8_t *at, uint64_t value, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) at[i] = uint8_t(value >> (8 * i));
}
inline void writeLe16(uint8_t *at, uint16_t value) { writeLe(at, value, 2); }
inline void writeLe32(uint8_t *at, uint32_t value) { writeLe(at, value, 4); }
inline void writeLe64(uint8_t *at, uint64_t value) { writeLe(at, value, 8); }

inline uint64_t alignTo(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

// A growing little-endian buffer.
class ByteWriter {
public:
  std::vector<uint8_t> bytes;
  void u8(uint8_t v) { bytes.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void raw(std::span<const uint8_t> data) { bytes.insert(bytes.end(), data.begin(), data.end()); }
  void zeros(size_t n) { bytes.insert(bytes.end(), n, 0); }
  void padTo(size_t alignment) { zeros(alignTo(bytes.size(), alignment) - bytes.size()); }
  size_t size() const { return bytes.size(); }
  void patch32(size_t at, uint32_t v) { writeLe32(&bytes[at], v); }

private:
  void put(uint64_t v, unsigned n) {
    bytes.resize(bytes.size() + n);
    writeLe(&bytes[bytes.size() - n], v, n);
  }
};

std::string hexEncode(std::span<const uint8_t> bytes);  // lowercase, two digits a byte
// hexEncode's inverse: nothing unless the text is lowercase hex of even length.
std::optional<std::vector<uint8_t>> hexDecode(std::string_view text);
std::string hexAddress(uint64_t value);                  // "0x1f"
std::array<uint8_t, 32> sha256(std::span<const uint8_t> bytes);

}  // namespace hotforge
