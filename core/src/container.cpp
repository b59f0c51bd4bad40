// Reading a patch image back from its container: the section headers of the ELF shared object
// or PE32+ DLL the emitter wrote, with every offset and size checked against the file. Only what
// a loader needs is read, so the agent and the PE appliers carry no object-file library.
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/patch_format.h"

#include <cstring>
#include <optional>

namespace hotforge {
namespace {

Outcome<std::vector<ContainerSection>> containerSections(std::span<const uint8_t> file) {
  std::optional<Format> format = findFormat([&](const ContainerTarget &c) { return c.holds(file); });
  if (!format) return fail("offset 0x0: neither an ELF nor a PE container");
  return containerTarget(*format).sections(file);
}

}  // namespace

bool looksLikePatchImage(std::span<const uint8_t> file) {
  Outcome<std::vector<ContainerSection>> sections = containerSections(file);
  if (!sections) return false;
  for (const ContainerSection &s : *sections)
    if (s.name == kRecordSectionName) return s.contents.size() >= 8 && std::memcmp(s.contents.data(), "HFPATCH", 8) == 0;
  return false;
}

Outcome<PatchImage> readPatchImage(std::span<const uint8_t> file) {
  Outcome<std::vector<ContainerSection>> sections = containerSections(file);
  if (!sections) return std::move(sections).failure();
  PatchImage image;
  const ContainerSection *records = nullptr;
  for (const ContainerSection &s : *sections)
    if (s.name == kRecordSectionName) records = &s;
  if (!records) return fail("no .hotpatch record section: not a Hotforge patch image");
  if (Status decoded = decodeRecords(records->contents, image); !decoded) return std::move(decoded).failure();
  if (!containerTarget(image.format).holds(file))
    return fail("the records describe a ", formatName(image.format), " image but the container is not one");
  for (const ContainerSection &s : *sections) {
    if (!s.loaded || s.name == kRecordSectionName) continue;
    if (uint64_t(s.rva) + s.memorySize > image.imageSize)
      return fail("section ", s.name, " at rva ", hexAddress(s.rva), " lies outside the image size ",
                  hexAddress(image.imageSize));
    PatchSection section;
    section.name = s.name;
    section.rva = s.rva;
    section.memorySize = s.memorySize;
    section.permissions = s.permissions;
    section.bytes.assign(s.contents.begin(), s.contents.begin() + std::min<size_t>(s.contents.size(), s.memorySize));
    image.sections.push_back(std::move(section));
  }
  image.file.assign(file.begin(), file.end());
  image.sizes.file = file.size();
  return image;
}

}  // namespace hotforge
