// A patch image as JSON (`hotforge inspect IMAGE --json`).
#include "emitter_internal.h"

namespace hotforge {

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
                         {"jump_offset", r.jumpOffset},
                         {"overwritten_offset", r.overwrittenOffset},
                         {"overwritten_size", r.overwrittenSize},
                         {"quiescent", r.quiescent},
                         {"expected_bytes", hexEncode(r.expected)}});
  for (const PatchFixup &f : image.fixups)
    fixups.push_back({{"site", f.site},
                      {"kind", fixupKindName(f.kind)},
                      {"field_offset", f.fieldOffset},
                      {"instruction_size", f.instructionSize},
                      {"scale", f.scale},
                      {"space", fixupSpaceName(f.space)},
                      {"target", f.target},
                      {"veneer", f.veneer}});
  json imports = json::array();
  for (const PatchImport &i : image.imports)
    imports.push_back({{"symbol", i.symbol},
                       {"version", i.version.empty() ? json(nullptr) : json(i.version)},
                       {"library", i.library.empty() ? json(nullptr) : json(i.library)}});
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
          {"fixups", std::move(fixups)},
          {"imports", std::move(imports)}};
}

}  // namespace hotforge
