// Showing a unit without a key: what `hotforge inspect UNIT` prints. The description comes from an
// unverified manifest, so every field is read defensively and the output says it is unverified.
#include "hotforge/core/error.h"
#include "hotforge/core/unit_checks.h"
#include "hotforge/unit.h"

#include <fmt/core.h>


namespace hotforge {
namespace {

using unit_detail::jsonQuoted;

std::string compact(const nlohmann::json &value, size_t limit) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

std::string str(const nlohmann::json &object, const char *key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t num(const nlohmann::json &object, const char *key) {
  if (!object.is_object()) return 0;
  auto it = object.find(key);
  return it != object.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

const nlohmann::json &entriesOf(const nlohmann::json &manifest) {
  static const nlohmann::json empty = nlohmann::json::array();
  if (!manifest.is_object()) return empty;
  auto it = manifest.find("entries");
  return it != manifest.end() && it->is_array() ? *it : empty;
}

}  // namespace

llvm::Expected<UnitDescription> inspectUnit(llvm::ArrayRef<uint8_t> unit) {
  llvm::Expected<UnitHeader> header = lift(unit_detail::parseHeader(unit));
  if (!header) return header.takeError();
  llvm::Expected<unit_detail::Manifest> manifest =
      lift(unit_detail::parseManifest(unit_detail::manifestText(unit, *header), header->payloadSize));
  if (!manifest) return manifest.takeError();
  UnitDescription out;
  out.header = *header;
  out.manifest = std::move(manifest->json);
  out.fileSize = unit.size();
  out.verified = false;
  return out;
}

std::string describeUnitText(const UnitDescription &unit, const std::string &path) {
  const nlohmann::json &m = unit.manifest;
  const nlohmann::json &entries = entriesOf(m);
  uint64_t total = 0, packed = 0;
  for (const nlohmann::json &e : entries) {
    total += num(e, "size");
    packed += num(e, "compressed_size");
  }
  std::string out = fmt::format("{}: hotforge delivery unit (format {}), {} image{}, {}\n", path, unit.header.version,
                                entries.size(), entries.size() == 1 ? "" : "s",
                                unit.verified ? std::string("signature verified")
                                              : fmt::format("NOT VERIFIED (check it with: hotforge verify {} --pubkey "
                                                            "KEY.pub.pem)",
                                                            path));
  std::string release = str(m, "release");
  out += fmt::format("  release     {}\n", release.empty() ? "(none)" : jsonQuoted(release));
  const nlohmann::json *created = m.is_object() && m.contains("created") ? &m["created"] : nullptr;
  out += fmt::format("  created     {}\n", created && created->is_number_integer() ? compact(*created, 32) : "(not recorded)");
  const nlohmann::json signer = m.is_object() && m.contains("signer") ? m["signer"] : nlohmann::json();
  out += fmt::format("  signer      {} key sha256 {}\n", str(signer, "algorithm"), str(signer, "fingerprint"));
  out += fmt::format("  payloads    {} level {}, {} bytes -> {} bytes\n", str(m, "compression"), num(m, "level"), total,
                     packed);
  out += fmt::format("  file        {} bytes: header {}, manifest {}, payloads {}, signature {}\n", unit.fileSize,
                     kUnitHeaderSize, unit.header.manifestSize, unit.header.payloadSize, unit.header.signatureSize);
  out += fmt::format("images ({}):\n", entries.size());
  for (const nlohmann::json &e : entries) {
    out += fmt::format("  {:<28} {:>12} bytes, {:>12} compressed, sha256 {}\n", str(e, "name"), num(e, "size"),
                       num(e, "compressed_size"), str(e, "sha256"));
    if (e.is_object() && e.contains("sequence"))
      out += fmt::format("    sequence {} for its baseline, supersedes {}\n", num(e, "sequence"),
                         num(e, "supersedes") == 0 ? std::string("nothing")
                                                   : fmt::format("sequences 1..{}", num(e, "supersedes")));
    if (e.is_object() && e.contains("baseline")) out += fmt::format("    baseline {}\n", compact(e["baseline"], 200));
    if (e.is_object() && e.contains("info")) out += fmt::format("    info     {}\n", compact(e["info"], 200));
  }
  return out;
}

nlohmann::json describeUnitJson(const UnitDescription &unit, const std::string &path) {
  const UnitHeader &h = unit.header;
  return {
      {"schema", "hotforge.inspect-unit/1"},
      {"path", path},
      {"verified", unit.verified},
      {"file_size", unit.fileSize},
      {"header",
       {{"version", h.version},
        {"flags", h.flags},
        {"manifest_offset", h.manifestOffset},
        {"manifest_size", h.manifestSize},
        {"payload_offset", h.payloadOffset},
        {"payload_size", h.payloadSize},
        {"signature_offset", h.signatureOffset},
        {"signature_size", h.signatureSize}}},
      {"manifest", unit.manifest},
  };
}

}  // namespace hotforge
