// Reading whole files: units, keys and images.
#include "hotforge/runtime/unit_reader.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hotforge {

Outcome<std::vector<uint8_t>> readFileBytes(const std::string &path) {
  // read(), not a mapping: the bytes are copied anyway, and a mapping would double the memory.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(path, ": cannot read: ", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int error = errno;
    close(fd);
    return fail(path, ": cannot read: ", std::strerror(error));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return fail(path, ": cannot read: it is a directory");
  }
  std::vector<uint8_t> bytes;
  if (S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size));  // pipes (e.g. <(...)) read to EOF
  uint8_t buffer[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      close(fd);
      return fail(path, ": cannot read: ", std::strerror(error));
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
  close(fd);
  return bytes;
}

}  // namespace hotforge
