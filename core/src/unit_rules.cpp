// Rules that packing and verifying share: entry names, what the manifest records from an entry's
// info, hex fields and JSON nesting.
#include "hotforge/core/unit_checks.h"

namespace hotforge::unit_detail {

bool isLowerHex(const std::string &text, size_t length) {
  if (text.size() != length) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string jsonQuoted(const std::string &text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// Well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool isUtf8(const std::string &text) {
  const auto *s = reinterpret_cast<const unsigned char *>(text.data());
  size_t i = 0, n = text.size();
  while (i < n) {
    unsigned char c = s[i];
    size_t extra = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i <= extra) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

}  // namespace

Status checkEntryName(const std::string &name) {
  if (name.empty()) return fail("an entry name is empty");
  std::string q = "entry name " + jsonQuoted(name);
  if (name.size() > 255) return fail(q, " is longer than 255 bytes");
  if (!isUtf8(name)) return fail(q, " is not valid UTF-8");
  if (name == "." || name == "..") return fail(q, " is a path component, not a file name");
  if (name[0] == '/' || name[0] == '\\') return fail(q, " is an absolute path");
  for (size_t start = 0; start <= name.size();) {
    size_t end = name.find_first_of("/\\", start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0)
      return fail(q, " has a \"..\" component that climbs out of the target directory");
    start = end + 1;
  }
  if (name.find_first_of("/\\") != std::string::npos)
    return fail(q, " contains a path separator; entry names are plain file names");
  if (name.find(':') != std::string::npos) return fail(q, " contains ':' (a Windows drive or stream name)");
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return fail(q, " contains a control character");
  if (name.back() == '.' || name.back() == ' ')
    return fail(q, " ends with '.' or ' ', which Windows drops from file names");
  return success();
}

Outcome<nlohmann::json> recordedFromInfo(const nlohmann::json &info) {
  nlohmann::json out = nlohmann::json::object();
  if (!info.is_object()) return fail("info must be a JSON object");
  auto baseline = info.find("baseline");
  if (baseline != info.end()) {
    if (!baseline->is_object()) return fail("info.baseline must be an object (the baseline's identity)");
    out["baseline"] = *baseline;
  }
  auto sequence = info.find("sequence");
  if (sequence != info.end()) {
    if (!sequence->is_number_integer() || (sequence->is_number_unsigned() ? sequence->get<uint64_t>() == 0
                                                                           : sequence->get<int64_t>() < 1))
      return fail("info.sequence must be a positive integer");
    if (baseline == info.end())
      return fail("info.sequence needs info.baseline: a sequence counts the patches of one baseline");
    uint64_t value = sequence->get<uint64_t>();
    if (value > (uint64_t(1) << 53)) return fail("info.sequence is too large");
    out["sequence"] = value;
    out["supersedes"] = value - 1;  // sequence N replaces every sequence below it for this baseline
  }
  return out;
}

size_t jsonDepth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool inString = false, escaped = false;
  for (char c : text) {
    if (inString) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') inString = false;
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace hotforge::unit_detail
