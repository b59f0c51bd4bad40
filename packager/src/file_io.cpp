// Writing files that appear whole or not at all.
#include "hotforge/error.h"
#include "hotforge/unit.h"

#include <fmt/core.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace hotforge {

llvm::Error writeFileAtomically(const std::string &path, llvm::ArrayRef<uint8_t> bytes, unsigned mode, bool replace) {
  if (path.empty()) return makeError("no output path given");
  // Created with O_EXCL and `mode`, so the umask applies as to any new file.
  int fd = -1;
  std::string tempPath;
  std::random_device random;
  for (int attempt = 0; fd < 0; ++attempt) {
    tempPath = fmt::format("{}.tmp-{:08x}", path, random());
    fd = open(tempPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
    if (fd < 0 && (errno != EEXIST || attempt == 100))
      return formatError("{}: cannot create a temporary file next to it: {}", path, std::strerror(errno));
  }
  auto fail = [&](const std::string &what, int error) {
    if (fd >= 0) close(fd);
    unlink(tempPath.c_str());
    return formatError("{}: {}: {}", path, what, std::strerror(error));
  };
  // A private mode (no group or other bits, like a key's 0600) is set exactly, whatever the umask.
  if ((mode & 077) == 0 && fchmod(fd, mode & 0777) != 0) return fail("cannot set the file mode", errno);
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write failed", n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("fsync failed", errno);
  if (close(fd) != 0) {
    fd = -1;
    return fail("close failed", errno);
  }
  fd = -1;
  if (replace) {
    if (std::rename(tempPath.c_str(), path.c_str()) != 0) return fail("cannot rename the temporary file into place", errno);
    return llvm::Error::success();
  }
  // No clobbering: renameat2(RENAME_NOREPLACE), or link()+unlink() where the file system lacks it.
  if (renameat2(AT_FDCWD, tempPath.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0)
    return llvm::Error::success();
  if (errno == EEXIST) {
    unlink(tempPath.c_str());
    return formatError("{} already exists; not replacing it", path);
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return fail("cannot move the temporary file into place", errno);
  if (link(tempPath.c_str(), path.c_str()) != 0) {
    int error = errno;
    unlink(tempPath.c_str());
    if (error == EEXIST) return formatError("{} already exists; not replacing it", path);
    return formatError("{}: cannot move the temporary file into place: {}", path, std::strerror(error));
  }
  unlink(tempPath.c_str());
  return llvm::Error::success();
}

}  // namespace hotforge
