#include "output.h"

#include "hotforge/core/error.h"

#include <fmt/core.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/raw_ostream.h>

#include <cstdio>

namespace hotforge::cli {

llvm::Error writeOutput(const std::string &path, const std::string &content) {
  if (path.empty() || path == "-") {
    std::fwrite(content.data(), 1, content.size(), stdout);
    return llvm::Error::success();
  }
  llvm::Expected<llvm::sys::fs::TempFile> temp = llvm::sys::fs::TempFile::create(path + ".tmp-%%%%%%");
  if (!temp) return formatError("{}: cannot create a temporary file: {}", path, errorText(temp.takeError()));
  {
    llvm::raw_fd_ostream out(temp->FD, /*shouldClose=*/false);
    out << content;
    out.flush();
    if (out.has_error()) {
      std::string reason = out.error().message();
      out.clear_error();
      llvm::consumeError(temp->discard());
      return formatError("{}: write failed: {}", path, reason);
    }
  }
  if (llvm::Error e = temp->keep(path)) return formatError("{}: {}", path, errorText(std::move(e)));
  return llvm::Error::success();
}

std::string printableText(std::string_view text) {
  std::string out;
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\n') || byte == 0x7f) out += fmt::format("\\x{:02x}", byte);
    else out += c;
  }
  return out;
}

}  // namespace hotforge::cli
