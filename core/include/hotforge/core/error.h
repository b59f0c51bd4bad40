// Errors in every Hotforge library are llvm::Error / llvm::Expected; these build them.
#pragma once

#include "hotforge/core/outcome.h"

#include <fmt/core.h>
#include <llvm/ADT/Twine.h>
#include <llvm/Support/Error.h>

namespace hotforge {

llvm::Error makeError(const llvm::Twine &message);

template <typename... Args>
llvm::Error formatError(fmt::format_string<Args...> format, Args &&...args) {
  return makeError(fmt::format(format, std::forward<Args>(args)...));
}

// A runtime Outcome (hotforge/core/outcome.h) as llvm::Expected / llvm::Error.
template <typename T> llvm::Expected<T> lift(Outcome<T> outcome) {
  if (!outcome) return makeError(outcome.error());
  return std::move(*outcome);
}
inline llvm::Error lift(Status status) { return status ? llvm::Error::success() : makeError(status.error()); }

// The message of an error, consuming it.
std::string errorText(llvm::Error error);

}  // namespace hotforge
