// What both PE appliers share: the command line, the check of the base against the image's
// identity, and the session itself (call, apply, call, revert, call). Each applier supplies a
// PeProcess: the base DLL loaded somewhere it can call into and write, natively under wine
// (pe_apply_x64.cpp) or in an emulator (pe_apply_a64.cpp). Standard library only.
#pragma once

#include "hotforge/core/patch_format.h"

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hotforge::pe {

// One call of an exported function, written NAME[:ARG,...][:str]. An argument is an integer
// (decimal, 0x hex, 0 octal) or a double-quoted string with \t \n \\ \" escapes, passed as a
// pointer to a NUL-terminated copy. ":str" marks a function returning a pointer to a string.
// Examples: table_get:16, volume_step:5,-9, checksum_text:"a\tb\n", status_text:1:str.
struct CallArgument {
  bool isString = false;
  int64_t number = 0;
  std::string text;
};
struct Call {
  std::string function;
  std::vector<CallArgument> arguments;
  bool returnsString = false;
  std::string written;  // the arguments as the command line gave them, for the result line
};
Outcome<Call> parseCall(std::string_view spec);

// A process holding the base DLL, as the session sees it.
class PeProcess {
public:
  virtual ~PeProcess() = default;
  virtual Machine machine() const = 0;
  virtual uint64_t baseAddress() const = 0;
  virtual Outcome<uint64_t> exportAddress(const std::string &name) = 0;
  // Where a symbol the patch imports is, found as the process finds its DLLs' imports.
  virtual Outcome<uint64_t> importAddress(const PatchImport &import) = 0;
  // Calls a function with up to eight integer or pointer arguments and returns its result register.
  virtual Outcome<uint64_t> call(uint64_t function, const std::vector<uint64_t> &arguments) = 0;
  virtual uint64_t placeString(const std::string &text) = 0;  // a NUL-terminated copy calls can read
  virtual std::string readString(uint64_t address) = 0;
  // Runs `work` on a thread of its own, so thread-local variables start from their initial values.
  virtual void onNewThread(const std::function<void()> &work) = 0;
  // `size` bytes of memory within reach of every fixup to the base (x64 ±2 GiB, Arm64 ±4 GiB).
  virtual Outcome<uint64_t> reserveNear(uint32_t size) = 0;
  // Copies the laid-out image (fixups applied) to `address`, then gives each section its permissions.
  virtual Status installImage(const PatchImage &image, uint64_t address, std::span<const uint8_t> memory) = 0;
  virtual void releaseImage(const PatchImage &image, uint64_t address) = 0;
  virtual void read(uint64_t address, std::span<uint8_t> out) = 0;
  // Writes over code: makes it writable, writes, restores its protection, flushes the instruction cache.
  virtual Status writeCode(uint64_t address, std::span<const uint8_t> bytes) = 0;
};

// SHA-256 of the base file for the identity check; each applier brings its own (bcrypt, OpenSSL).
std::array<uint8_t, 32> fileSha256(std::span<const uint8_t> bytes);

// Loads the base DLL at `basePath` into a process to call and patch.
using ProcessOpener = std::function<Outcome<std::unique_ptr<PeProcess>>(const std::string &basePath)>;

// The whole program: `APPLIER BASE.dll IMAGE.dll|- CALL...`. With an image it prints every call's
// result as "before NAME(ARGS)=VALUE", applies the image, prints "patched ...", reverts, prints
// "reverted ..."; with "-" it prints "NAME(ARGS)=VALUE" once (the unpatched DLL, as an oracle).
// Each group of calls runs on a new thread. Returns the exit code (0 ok, 1 error, 2 usage).
int runApplier(int argc, char **argv, const ProcessOpener &open);

}  // namespace hotforge::pe
