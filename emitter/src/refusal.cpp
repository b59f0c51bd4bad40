// Refusals of the emitter as data: rule ids reach `build`, `release` and their JSON unjoined.
#include "hotforge/patch_image.h"

#include <llvm/Support/raw_ostream.h>

namespace hotforge {

char RefusalError::ID = 0;

std::string BuildRefusal::message() const {
  std::string text = needsRestart ? "the changes need a restart, so no patch is built:" : "cannot build a safe patch:";
  for (const Refusal &r : refusals) text += "\n  " + r.rule + " " + r.reason;
  return text;
}

void RefusalError::log(llvm::raw_ostream &os) const { os << refusal_.message(); }

std::optional<BuildRefusal> takeRefusal(llvm::Error &error) {
  std::optional<BuildRefusal> refusal;
  error = llvm::handleErrors(std::move(error), [&](const RefusalError &e) { refusal = e.refusal(); });
  return refusal;
}

nlohmann::json toJson(const std::vector<Refusal> &refusals) {
  nlohmann::json list = nlohmann::json::array();
  for (const Refusal &r : refusals)
    list.push_back({{"rule", r.rule}, {"name", r.name ? nlohmann::json(*r.name) : nlohmann::json(nullptr)},
                    {"reason", r.reason}});
  return list;
}

}  // namespace hotforge
