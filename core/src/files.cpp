#include "hotforge/core/files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hotforge {
namespace {

std::string sizeText(uint64_t bytes) {
  return bytes >= (uint64_t(1) << 30) ? std::to_string(bytes >> 30) + " GiB"
         : bytes >= (uint64_t(1) << 20) ? std::to_string(bytes >> 20) + " MiB"
                                        : std::to_string(bytes) + " bytes";
}

const char *kindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

}  // namespace

Outcome<RegularFile> RegularFile::openAt(int directory, const std::string &name, const std::string &path,
                                         uint64_t maxSize, bool noFollow) {
  int fd = openat(directory, name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (noFollow ? O_NOFOLLOW : 0));
  if (fd < 0) {
    if (errno == ELOOP && noFollow) return fail(path, ": is a symbolic link");
    return fail(path, ": cannot read: ", std::strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int error = errno;
    close(fd);
    return fail(path, ": cannot read: ", std::strerror(error));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return fail(path, ": is ", kindOf(st.st_mode), ", not a regular file");
  }
  if (uint64_t(st.st_size) > maxSize) {
    close(fd);
    return fail(path, ": ", st.st_size, " bytes is more than the ", sizeText(maxSize), " such a file may have");
  }
  // Back to blocking reads: O_NONBLOCK only kept open() from waiting (regular files never block).
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return RegularFile(fd, path, uint64_t(st.st_size), unsigned(st.st_uid), unsigned(st.st_mode & 07777));
}

Outcome<RegularFile> RegularFile::open(const std::string &path, uint64_t maxSize, bool noFollow) {
  return openAt(AT_FDCWD, path, path, maxSize, noFollow);
}

RegularFile::RegularFile(RegularFile &&other) noexcept
    : fd_(other.fd_), path_(std::move(other.path_)), size_(other.size_), owner_(other.owner_), mode_(other.mode_) {
  other.fd_ = -1;
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) close(fd_);
}

Outcome<std::vector<uint8_t>> RegularFile::read(uint64_t count) const {
  // read(), not a mapping: the bytes are copied anyway, and a mapping would double the memory.
  std::vector<uint8_t> bytes(std::min(count, size_));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pread(fd_, bytes.data() + done, bytes.size() - done, off_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(path_, ": cannot read: ", std::strerror(errno));
    if (n == 0) return fail(path_, ": the file shrank while it was being read");
    done += size_t(n);
  }
  return bytes;
}

Outcome<std::vector<uint8_t>> readFileBytes(const std::string &path, uint64_t maxSize) {
  Outcome<RegularFile> file = RegularFile::open(path, maxSize);
  if (!file) return std::move(file).failure();
  return file->read(file->size());
}

Status writeAtomically(int directory, const std::string &name, std::span<const uint8_t> bytes, const AtomicWrite &how,
                       const std::string &path) {
  if (name.empty()) return fail("no output path given");
  std::random_device random;  // other processes (shards on other hosts) may write next to it
  std::string temp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, ".tmp-%08x%08x", unsigned(random()), unsigned(random()));
    temp = name + suffix;
    fd = openat(directory, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, how.mode & 0777);
    if (fd < 0 && (errno != EEXIST || attempt == 100))
      return fail(path, ": cannot create a temporary file next to it: ", std::strerror(errno));
  }
  auto failure = [&](const char *what, int error) {
    if (fd >= 0) close(fd);
    unlinkat(directory, temp.c_str(), 0);
    return fail(path, ": ", what, ": ", std::strerror(error));
  };
  if ((how.mode & 077) == 0 && fchmod(fd, how.mode & 0777) != 0) return failure("cannot set the file mode", errno);
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return failure("write failed", n < 0 ? errno : EIO);
    done += size_t(n);
  }
  if (how.durable && fsync(fd) != 0) return failure("fsync failed", errno);
  int closed = close(fd);
  fd = -1;
  if (closed != 0) return failure("close failed", errno);
  if (how.replace) {
    if (renameat(directory, temp.c_str(), directory, name.c_str()) != 0)
      return failure("cannot rename the temporary file into place", errno);
  } else if (renameat2(directory, temp.c_str(), directory, name.c_str(), RENAME_NOREPLACE) != 0) {
    // No clobbering: link() where the file system lacks RENAME_NOREPLACE, which fails as well on
    // an existing name.
    int error = errno;
    if (error == EINVAL || error == ENOSYS || error == ENOTSUP)
      error = linkat(directory, temp.c_str(), directory, name.c_str(), 0) == 0 ? 0 : errno;
    unlinkat(directory, temp.c_str(), 0);
    if (error == EEXIST) return fail(path, " already exists; not replacing it");
    if (error != 0) return fail(path, ": cannot move the temporary file into place: ", std::strerror(error));
  }
  if (how.durable && directory != AT_FDCWD) fsync(directory);  // the rename itself is durable
  return success();
}

}  // namespace hotforge
