// Feeds arbitrary bytes to the patch-image reader of the runtime (what `hotforge inspect` and
// every loader run on an image): the container walk, the records, and then what a loader does
// with what it read: lay the image out, apply its fixups (imports included) and compute every
// entry write.
#include "hotforge/core/patch_format.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  constexpr uint64_t kBase = 0x7f0000000000, kImage = 0x7f0010000000;
  std::span<const uint8_t> bytes(data, size);
  hotforge::looksLikePatchImage(bytes);
  hotforge::Outcome<hotforge::PatchImage> image = hotforge::readPatchImage(bytes);
  if (!image) return 0;
  // A loader maps imageSize bytes of a signed image; an unsigned input may claim 4 GiB.
  if (image->imageSize <= (uint32_t(1) << 24)) {
    std::vector<uint8_t> memory = hotforge::layOut(*image);
    std::vector<uint64_t> imports(image->imports.size(), kBase - 0x1000);  // as a loader resolves them
    (void)hotforge::applyFixups(*image, kBase, kImage, imports, memory);
  }
  for (const hotforge::PatchRedirect &r : image->redirects) (void)hotforge::entryWrite(r, image->machine, kBase, kImage);
  return 0;
}
