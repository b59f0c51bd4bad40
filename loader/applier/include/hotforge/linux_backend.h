// What the two Linux backends of the applier core share (the ptrace loader, the agent): memory
// for the image found near the base in the process's maps, the image written, sealed and given
// each section's access, and its .eh_frame registered with libgcc's __register_frame, as JIT
// compilers do (patched code that throws needs its unwind entries known, and the image is not an
// object dl_iterate_phdr reports). Each backend supplies the primitives: its way to map, protect
// and write memory and to call a function in the target.
#pragma once

#include "hotforge/applier.h"
#include "hotforge/core/process_maps.h"

namespace hotforge {

class LinuxBackend : public ApplierBackend {
public:
  Outcome<uint64_t> reserveNear(uint64_t baseAddress, uint64_t size, uint64_t reach) override;
  Status install(const PatchImage &image, uint64_t address, std::span<const uint8_t> laidOut) override;
  // Installed: deregisters the unwind entries first, and leaves the image mapped when that fails.
  void release(const PatchImage &image, uint64_t address, bool installed) override;

protected:
  virtual std::vector<Mapping> maps() = 0;
  // Maps `size` bytes at `address` exactly; false when something is there.
  virtual Outcome<bool> mapAt(uint64_t address, uint64_t size) = 0;
  // Readable, and writable and executable as `permissions` say: 0, or the error number of a refusal.
  virtual Outcome<int> protect(uint64_t address, uint64_t size, Permissions permissions) = 0;
  virtual void unmap(uint64_t address, uint64_t size) = 0;
  virtual Status writeMemory(uint64_t address, std::span<const uint8_t> bytes) = 0;
  // libgcc's __register_frame or __deregister_frame in the target; 0 without libgcc_s (a plain C
  // program cannot throw, so there is nothing to register).
  virtual Outcome<uint64_t> frameFunction(const char *name) = 0;
  virtual Status callFrameFunction(uint64_t function, uint64_t frame) = 0;
};

// The image's .eh_frame section, or null.
const PatchSection *ehFrameSection(const PatchImage &image);

}  // namespace hotforge
