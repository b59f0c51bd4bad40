// ASCII case folding, the one used everywhere names compare without regard to case (Windows file
// and DLL names, entry names in units, file-name suffixes). std::tolower would depend on the locale.
#pragma once

#include <string>
#include <string_view>

namespace hotforge {

inline std::string asciiLower(std::string_view text) {
  std::string out(text);
  for (char &c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace hotforge
