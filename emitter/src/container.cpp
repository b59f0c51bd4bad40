// Reading a patch image back from its container, and its JSON form.
#include "emitter_internal.h"

#include <llvm/Object/Binary.h>
#include <llvm/Object/COFF.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Object/ObjectFile.h>

#include <cstring>

namespace hotforge {

namespace emitter {

llvm::Expected<llvm::ArrayRef<uint8_t>> findRecordSection(llvm::ArrayRef<uint8_t> file) {
  llvm::MemoryBufferRef buffer(llvm::StringRef(reinterpret_cast<const char *>(file.data()), file.size()), "patch image");
  llvm::Expected<std::unique_ptr<llvm::object::Binary>> binary = llvm::object::createBinary(buffer);
  if (!binary) return formatError("not an ELF or PE container: {}", errorText(binary.takeError()));
  auto *object = llvm::dyn_cast<llvm::object::ObjectFile>(binary->get());
  if (!object) return makeError("not an ELF or PE container");
  for (const llvm::object::SectionRef &s : object->sections()) {
    llvm::Expected<llvm::StringRef> name = s.getName();
    if (!name) return name.takeError();
    if (*name != kRecordSectionName) continue;
    llvm::Expected<llvm::StringRef> contents = s.getContents();
    if (!contents) return contents.takeError();
    // The contents view points into `file`: hand back a view of the same bytes.
    size_t offset = size_t(contents->data() - reinterpret_cast<const char *>(file.data()));
    if (offset > file.size() || file.size() - offset < contents->size())
      return makeError("the record section lies outside the file");
    return file.slice(offset, contents->size());
  }
  return makeError("no .hotpatch record section: not a Hotforge patch image");
}

}  // namespace emitter

bool looksLikePatchImage(llvm::ArrayRef<uint8_t> file) {
  llvm::Expected<llvm::ArrayRef<uint8_t>> records = emitter::findRecordSection(file);
  if (!records) {
    llvm::consumeError(records.takeError());
    return false;
  }
  return records->size() >= 8 && std::memcmp(records->data(), "HFPATCH", 8) == 0;
}

llvm::Expected<PatchImage> readPatchImage(llvm::ArrayRef<uint8_t> file) {
  llvm::Expected<llvm::ArrayRef<uint8_t>> records = emitter::findRecordSection(file);
  if (!records) return records.takeError();
  PatchImage image;
  if (llvm::Error e = emitter::decodeRecords(*records, image)) return e;
  // The loaded sections, at their RVAs.
  llvm::MemoryBufferRef buffer(llvm::StringRef(reinterpret_cast<const char *>(file.data()), file.size()), "patch image");
  llvm::Expected<std::unique_ptr<llvm::object::Binary>> binary = llvm::object::createBinary(buffer);
  if (!binary) return binary.takeError();
  auto *object = llvm::cast<llvm::object::ObjectFile>(binary->get());
  const auto *coff = llvm::dyn_cast<llvm::object::COFFObjectFile>(object);
  uint64_t imageBase = coff ? coff->getImageBase() : 0;  // COFF section addresses include it
  for (const llvm::object::SectionRef &s : object->sections()) {
    llvm::Expected<llvm::StringRef> name = s.getName();
    if (!name) return name.takeError();
    if (*name == emitter::kRecordSectionName || s.getAddress() == 0) continue;
    PatchSection section;
    section.name = name->str();
    section.rva = uint32_t(s.getAddress() - imageBase);
    // COFF: SectionRef's size is the raw size; the loaded size is VirtualSize.
    section.memorySize = coff ? uint32_t(coff->getCOFFSection(s)->VirtualSize) : uint32_t(s.getSize());
    bool writable = coff ? (coff->getCOFFSection(s)->Characteristics & llvm::COFF::IMAGE_SCN_MEM_WRITE) != 0
                         : (llvm::object::ELFSectionRef(s).getFlags() & llvm::ELF::SHF_WRITE) != 0;
    section.permissions = {true, writable, s.isText()};
    if (!s.isBSS()) {
      llvm::Expected<llvm::StringRef> contents = s.getContents();
      if (!contents) return contents.takeError();
      section.bytes.assign(contents->begin(), contents->begin() + std::min<size_t>(contents->size(), section.memorySize));
    }
    if (uint64_t(section.rva) + section.memorySize > image.imageSize)
      return formatError("section {} at rva {:#x} lies outside the image size {:#x}", section.name, section.rva,
                         image.imageSize);
    image.sections.push_back(std::move(section));
  }
  image.file.assign(file.begin(), file.end());
  image.sizes.file = file.size();
  return image;
}

nlohmann::json toJson(const PatchImage &image) {
  using nlohmann::json;
  json redirects = json::array(), fixups = json::array(), functions = json::array(), sections = json::array();
  for (const PatchRedirect &r : image.redirects)
    redirects.push_back({{"name", r.name ? json(*r.name) : json(nullptr)},
                         {"base_rva", r.baseRva},
                         {"base_size", r.baseSize},
                         {"patch_rva", r.patchRva},
                         {"stub_rva", r.stubRva},
                         {"kind", redirectKindName(r.kind)},
                         {"entry_offset", r.entryOffset},
                         {"padding_before", r.paddingBefore},
                         {"expected_bytes", hexEncode(r.expected)}});
  for (const PatchFixup &f : image.fixups)
    fixups.push_back({{"site", f.site},
                      {"kind", fixupKindName(f.kind)},
                      {"field_offset", f.fieldOffset},
                      {"instruction_size", f.instructionSize},
                      {"scale", f.scale},
                      {"space", f.toBase ? "base" : "patch"},
                      {"target", f.target},
                      {"veneer", f.veneer}});
  for (const PatchFunction &f : image.functions)
    functions.push_back({{"name", f.name ? json(*f.name) : json(nullptr)},
                         {"rva", f.rva},
                         {"size", f.size},
                         {"patched_rva", f.patchedRva},
                         {"added", f.added}});
  for (const PatchSection &s : image.sections)
    sections.push_back({{"name", s.name}, {"rva", s.rva}, {"size", s.memorySize}, {"file_size", s.bytes.size()}});
  const PatchBaseline &b = image.baseline;
  return {{"schema", kPatchImageSchema},
          {"format_version", kPatchFormatVersion},
          {"format", formatName(image.format)},
          {"machine", machineName(image.machine)},
          {"sequence", image.sequence},
          {"image_size", image.imageSize},
          {"baseline",
           {{"file", b.fileName},
            {"sha256", hexEncode(b.sha256)},
            {"build_id", b.buildId.empty() ? json(nullptr) : json(hexEncode(b.buildId))},
            {"time_date_stamp", b.timeDateStamp},
            {"check_sum", b.checkSum},
            {"size_of_image", b.sizeOfImage}}},
          {"sizes",
           {{"code", image.sizes.code}, {"data", image.sizes.data}, {"metadata", image.sizes.metadata}, {"file", image.sizes.file}}},
          {"sections", std::move(sections)},
          {"functions", std::move(functions)},
          {"redirects", std::move(redirects)},
          {"fixups", std::move(fixups)}};
}

}  // namespace hotforge
