#include "hotforge/core/json_text.h"

namespace hotforge {

std::string jsonText(const nlohmann::json &doc) {
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace hotforge
