#include "hotforge/diff.h"

namespace hotforge {

using nlohmann::json;

namespace {

json rangeJson(const std::optional<AddressRange> &range) {
  if (!range) return nullptr;
  return {{"rva", range->rva}, {"size", range->size}};
}

json imageJson(const Image &image) {
  return {{"path", image.path},
          {"format", formatName(image.format)},
          {"machine", machineName(image.machine)},
          {"sha256", hexEncode(image.identity.sha256)}};
}

}  // namespace

json toJson(const Diff &diff, const Image &base, const Image &patched) {
  json changes = json::array();
  for (const Change &c : diff.changes) {
    json entry = {{"kind", changeKindName(c.kind)},
                  {"name", c.name ? json(*c.name) : json(nullptr)},
                  {"base", rangeJson(c.base)},
                  {"patched", rangeJson(c.patched)},
                  {"verdict", verdictName(c.verdict)},
                  {"rule", c.rule},
                  {"reason", c.reason}};
    entry["match"] = c.match ? json{{"stage", matchStageName(c.match->stage)}, {"confidence", c.match->confidence}}
                             : json(nullptr);
    if (c.firstDifference)
      entry["first_difference"] = {{"base_offset", c.firstDifference->baseOffset},
                                   {"patched_offset", c.firstDifference->patchedOffset},
                                   {"base", c.firstDifference->baseInstruction},
                                   {"patched", c.firstDifference->patchedInstruction}};
    if (c.kind == ChangeKind::Data) entry["writable"] = c.writable;
    changes.push_back(std::move(entry));
  }
  const DiffSummary &s = diff.summary;
  std::string verdict = diff.changes.empty() ? "no-change" : diff.needsRestart() ? "needs-restart" : "hotpatchable";
  return {{"schema", kDiffSchema},
          {"base", imageJson(base)},
          {"patched", imageJson(patched)},
          {"verdict", verdict},
          {"summary",
           {{"matched", s.matched},
            {"changed", s.changed},
            {"added", s.added},
            {"removed", s.removed},
            {"needs_restart", s.needsRestart}}},
          {"changes", std::move(changes)},
          {"matching", diff.log}};
}

}  // namespace hotforge
