// TOML manifests: toml++ (Debian libtomlplusplus-dev, used header-only), converted to the JSON
// shape the JSON manifest has, so one validator checks both.
#include "release_internal.h"

#include "hotforge/core/error.h"

#if HOTFORGE_HAVE_TOMLPLUSPLUS
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>
#endif

namespace hotforge::release_detail {

#if HOTFORGE_HAVE_TOMLPLUSPLUS
namespace {

llvm::Expected<nlohmann::json> convert(const toml::node &node, const std::string &path, const std::string &where) {
  if (const toml::table *table = node.as_table()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto &&[key, value] : *table) {
      std::string k(key.str());
      llvm::Expected<nlohmann::json> v = convert(value, path, where.empty() ? k : where + "." + k);
      if (!v) return v.takeError();
      out[k] = std::move(*v);
    }
    return out;
  }
  if (const toml::array *array = node.as_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < array->size(); ++i) {
      llvm::Expected<nlohmann::json> v = convert(*array->get(i), path, fmt::format("{}[{}]", where, i));
      if (!v) return v.takeError();
      out.push_back(std::move(*v));
    }
    return out;
  }
  if (const toml::value<std::string> *s = node.as_string()) return nlohmann::json(s->get());
  if (const toml::value<int64_t> *i = node.as_integer()) return nlohmann::json(i->get());
  if (const toml::value<bool> *b = node.as_boolean()) return nlohmann::json(b->get());
  if (const toml::value<double> *d = node.as_floating_point()) return nlohmann::json(d->get());
  return formatError("{}: {}: dates and times are not used in a release manifest", path, where);
}

}  // namespace

llvm::Expected<nlohmann::json> tomlToJson(llvm::StringRef text, const std::string &path) {
  toml::parse_result parsed = toml::parse(std::string_view(text.data(), text.size()), std::string_view(path));
  if (!parsed) {
    const toml::parse_error &error = parsed.error();
    return formatError("{}: not valid TOML: line {}, column {}: {}", path, error.source().begin.line,
                       error.source().begin.column, error.description());
  }
  return convert(parsed.table(), path, "");
}
#else
llvm::Expected<nlohmann::json> tomlToJson(llvm::StringRef, const std::string &path) {
  return formatError("{}: this hotforge was built without TOML support (Debian package libtomlplusplus-dev); "
                     "write the manifest as JSON",
                     path);
}
#endif

}  // namespace hotforge::release_detail
