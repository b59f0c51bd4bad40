// Reading files that may be hostile (a unit directory anyone can drop files into, a path given on
// the command line): only regular files are read, never blocking (a FIFO is refused, not waited
// on; /dev/zero is refused, not read until memory runs out), and the size is checked against a
// limit before anything is allocated. Shared by the CLI, the ptrace loader and the agent.
#pragma once

#include "hotforge/core/outcome.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hotforge {

// Limits per kind of file, checked before reading.
inline constexpr uint64_t kMaxBinaryFileSize = uint64_t(4) << 30;  // binaries, debug files, PDBs, mapped files
inline constexpr uint64_t kMaxUnitFileSize = (uint64_t(8) << 30) + (uint64_t(64) << 20) + 4096;  // images + manifest
inline constexpr uint64_t kMaxImageFileSize = uint64_t(2) << 30;  // one hotpatch image (a unit's image limit)
inline constexpr uint64_t kMaxKeyFileSize = uint64_t(1) << 20;     // PEM keys
inline constexpr uint64_t kMaxStateFileSize = uint64_t(16) << 20;  // the ptrace loader's records

// An open regular file. `open` uses O_NONBLOCK (opening a FIFO never waits for a writer) and
// refuses anything fstat does not call a regular file, or one larger than `maxSize`. With
// `noFollow` a symbolic link is refused too (O_NOFOLLOW).
class RegularFile {
public:
  static Outcome<RegularFile> open(const std::string &path, uint64_t maxSize, bool noFollow = false);
  static Outcome<RegularFile> openAt(int directory, const std::string &name, const std::string &pathForMessages,
                                     uint64_t maxSize, bool noFollow);
  RegularFile(RegularFile &&other) noexcept;
  RegularFile &operator=(RegularFile &&) = delete;
  ~RegularFile();

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  unsigned owner() const { return owner_; }
  unsigned mode() const { return mode_; }  // permission bits
  // The first `count` bytes (fewer when the file is shorter); the whole file with size().
  Outcome<std::vector<uint8_t>> read(uint64_t count) const;

private:
  RegularFile(int fd, std::string path, uint64_t size, unsigned owner, unsigned mode)
      : fd_(fd), path_(std::move(path)), size_(size), owner_(owner), mode_(mode) {}
  int fd_ = -1;
  std::string path_;
  uint64_t size_ = 0;
  unsigned owner_ = 0, mode_ = 0;
};

// A whole regular file of at most `maxSize` bytes.
Outcome<std::vector<uint8_t>> readFileBytes(const std::string &path, uint64_t maxSize = kMaxBinaryFileSize);

struct AtomicWrite {
  unsigned mode = 0666;  // before the umask; a private mode (no group or other bits) is set exactly
  bool durable = true;   // fsync the file before the rename, and the directory after it
  bool replace = true;   // false: refuse when the file exists (no clobbering)
};

// Writes `bytes` as `name` in `directory` (a directory's descriptor, or AT_FDCWD for a path) so
// that it appears whole or not at all: through a temporary file of a unique name next to it
// (NAME.tmp-RANDOM, created with O_EXCL and O_NOFOLLOW, so no file or link that was there is
// written through), then a rename. On failure the temporary file is removed. `path` names the
// file in messages. Every writer of outputs, keys, cache entries and state records uses it.
Status writeAtomically(int directory, const std::string &name, std::span<const uint8_t> bytes, const AtomicWrite &how,
                       const std::string &path);

}  // namespace hotforge
