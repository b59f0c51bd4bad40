#include "hotforge/core/container_target.h"
#include "hotforge/image_json.h"

namespace hotforge {

using nlohmann::json;

std::string permissionsText(const Permissions &p) {
  return {p.read ? 'r' : '-', p.write ? 'w' : '-', p.execute ? 'x' : '-'};
}

namespace {

json rangeJson(const AddressRange &range) { return {{"rva", range.rva}, {"size", range.size}}; }

json identityJson(const Image &image) {
  const Identity &id = image.identity;
  json out = {{"sha256", hexEncode(id.sha256)}};
  if (containerTarget(image.format).identifiedByBuildId()) {
    out["build_id"] = id.buildId.empty() ? json(nullptr) : json(hexEncode(id.buildId));
  } else {
    out["time_date_stamp"] = id.timeDateStamp;
    out["check_sum"] = id.checkSum;
    out["size_of_image"] = id.sizeOfImage;
    if (id.codeView)
      out["codeview"] = {{"pdb_path", id.codeView->pdbPath}, {"guid", guidString(id.codeView->guid)}, {"age", id.codeView->age}};
    else
      out["codeview"] = nullptr;
  }
  return out;
}

json functionJson(const Function &f) {
  json sources = json::array();
  for (int s = 0; s < kFunctionSourceCount; ++s)
    if (f.seenBy(static_cast<FunctionSource>(s))) sources.push_back(functionSourceName(static_cast<FunctionSource>(s)));
  json out = {{"name", f.name ? json(*f.name) : json(nullptr)},
              {"rva", f.range.rva},
              {"size", f.range.size},
              {"source", functionSourceName(f.source)},
              {"sources", std::move(sources)}};
  if (!f.parts.empty()) {
    json parts = json::array();
    for (const AddressRange &p : f.parts) parts.push_back(rangeJson(p));
    out["parts"] = std::move(parts);
  }
  return out;
}

}  // namespace

json toJson(const Image &image, const ImageJsonOptions &options) {
  json sections = json::array();
  for (const Section &s : image.sections)
    sections.push_back({{"name", s.name},
                        {"rva", s.rva},
                        {"size", s.size},
                        {"file_offset", s.fileOffset},
                        {"file_size", s.fileSize},
                        {"permissions", permissionsText(s.permissions)},
                        {"loaded", s.loaded}});
  json segments = json::array();
  for (const Segment &s : image.segments)
    segments.push_back({{"type", s.type},
                        {"rva", s.rva},
                        {"memory_size", s.memorySize},
                        {"file_offset", s.fileOffset},
                        {"file_size", s.fileSize},
                        {"permissions", permissionsText(s.permissions)}});
  json functions = json::array();
  for (const Function &f : image.functions) functions.push_back(functionJson(f));
  json data = json::array();
  for (const DataObject &d : image.dataObjects)
    data.push_back({{"name", d.name},
                    {"rva", d.range.rva},
                    {"size", d.range.size},
                    {"thread_local", d.threadLocal},
                    {"size_known", d.sizeKnown},
                    {"source", dataSourceName(d.source)}});
  json imports = json::array();
  for (const Import &i : image.imports)
    imports.push_back({{"name", i.name}, {"library", i.library}, {"slot_rva", i.slotRva}, {"kind", importKindName(i.kind)}});

  json out = {{"schema", kInspectSchema},
              {"path", image.path},
              {"format", formatName(image.format)},
              {"machine", machineName(image.machine)},
              {"image_base", image.imageBase},
              {"entry_rva", image.entryRva},
              {"identity", identityJson(image)},
              {"sections", std::move(sections)},
              {"segments", std::move(segments)},
              {"functions", std::move(functions)},
              {"coverage", {{"code_bytes", image.coverage.codeBytes},
                            {"function_bytes", image.coverage.functionBytes},
                            {"fill_bytes", image.coverage.fillBytes},
                            {"discovery_ran", image.coverage.discoveryRan}}},
              {"data_objects", std::move(data)},
              {"imports", std::move(imports)},
              {"relocation_count", image.relocations.size()},
              {"debug_info", image.debugInfoPath.empty() ? json(nullptr) : json(image.debugInfoPath)},
              {"warnings", image.warnings}};
  if (options.relocations) {
    json relocations = json::array();
    for (const Relocation &r : image.relocations)
      relocations.push_back({{"rva", r.rva},
                             {"type", r.typeName},
                             {"symbol", r.symbol ? json(*r.symbol) : json(nullptr)},
                             {"addend", r.addend}});
    out["relocations"] = std::move(relocations);
  }
  if (image.loadConfig)
    out["load_config"] = {{"size", image.loadConfig->size},
                          {"security_cookie", image.loadConfig->securityCookie},
                          {"guard_flags", image.loadConfig->guardFlags},
                          {"hot_patch_table_offset", image.loadConfig->hotPatchTableOffset}};
  else
    out["load_config"] = nullptr;
  return out;
}

}  // namespace hotforge
