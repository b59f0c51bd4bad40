// What every page shares: the head with the style sheet, and the end.
#pragma once

#include <string>
#include <string_view>

namespace hotforge::report_detail {

std::string pageStart(std::string_view title);  // escaped here
std::string pageEnd();

// A relative link target with every byte outside [A-Za-z0-9._~/-] percent-encoded.
std::string hrefEscape(std::string_view path);

}  // namespace hotforge::report_detail
