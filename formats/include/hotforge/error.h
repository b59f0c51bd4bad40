// Errors in every Hotforge library are llvm::Error / llvm::Expected; these build them.
#pragma once

#include <fmt/core.h>
#include <llvm/ADT/Twine.h>
#include <llvm/Support/Error.h>

namespace hotforge {

llvm::Error makeError(const llvm::Twine &message);

template <typename... Args>
llvm::Error formatError(fmt::format_string<Args...> format, Args &&...args) {
  return makeError(fmt::format(format, std::forward<Args>(args)...));
}

// The message of an error, consuming it.
std::string errorText(llvm::Error error);

}  // namespace hotforge
