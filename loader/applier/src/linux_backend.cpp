#include "hotforge/linux_backend.h"

#include "hotforge/core/bytes.h"

#include <algorithm>

namespace hotforge {

const PatchSection *ehFrameSection(const PatchImage &image) {
  auto it = std::find_if(image.sections.begin(), image.sections.end(),
                         [](const PatchSection &s) { return s.name == ".eh_frame"; });
  return it == image.sections.end() ? nullptr : &*it;
}

Outcome<uint64_t> LinuxBackend::reserveNear(uint64_t baseAddress, uint64_t size, uint64_t reach) {
  std::vector<uint64_t> hints = freeAddressesNear(maps(), baseAddress, size, reach);
  for (size_t attempt = 0; attempt < hints.size() && attempt < 16; ++attempt) {
    Outcome<bool> mapped = mapAt(hints[attempt], size);
    if (!mapped) return std::move(mapped).failure();
    if (*mapped) return hints[attempt];
  }
  return fail("found no free memory within reach of the base for the patch");
}

Status LinuxBackend::install(const PatchImage &image, uint64_t address, std::span<const uint8_t> laidOut) {
  if (Status written = writeMemory(address, laidOut); !written) return written;
  // Written: the whole mapping becomes read-only, then each section gets only the access it
  // needs (code is never writable).
  Outcome<int> sealed = protect(address, mappedImageSize(image), Permissions{true, false, false});
  if (!sealed) return std::move(sealed).failure();
  for (const PatchSection &section : image.sections) {
    uint64_t begin = address + (section.rva & ~uint64_t(0xfff));
    uint64_t end = address + alignTo(uint64_t(section.rva) + section.memorySize, 0x1000);
    if (end <= begin) continue;
    Outcome<int> error = protect(begin, end - begin, section.permissions);
    if (!error) return std::move(error).failure();
    if (*error)
      return fail("cannot protect the patch's ", section.name, " in ", processName(), " (error ", *error, ")");
  }
  // Registered before the jumps go in: a thread may throw through the new code at once.
  const PatchSection *frames = ehFrameSection(image);
  if (!frames) return success();
  Outcome<uint64_t> registerFrame = frameFunction("__register_frame");
  if (!registerFrame) return std::move(registerFrame).failure();
  return *registerFrame ? callFrameFunction(*registerFrame, address + frames->rva) : success();
}

void LinuxBackend::release(const PatchImage &image, uint64_t address, bool installed) {
  if (const PatchSection *frames = ehFrameSection(image); installed && frames) {
    Outcome<uint64_t> deregisterFrame = frameFunction("__deregister_frame");
    if (!deregisterFrame) return;  // registered: it stays mapped
    if (*deregisterFrame && !callFrameFunction(*deregisterFrame, address + frames->rva)) return;
  }
  unmap(address, mappedImageSize(image));
}

}  // namespace hotforge
