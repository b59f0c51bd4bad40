#include "hotforge/core/error.h"

namespace hotforge {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::string errorText(llvm::Error error) { return llvm::toString(std::move(error)); }

}  // namespace hotforge
