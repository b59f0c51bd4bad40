// Release manifests (JSON or TOML) and directory pairings, to a sorted plan of pairs.
#include "release_internal.h"

#include "hotforge/core/ascii.h"
#include "hotforge/core/error.h"

#include <llvm/Support/FileSystem.h>
#include <llvm/Support/GlobPattern.h>
#include <llvm/Support/JSON.h>
#include <llvm/Support/Path.h>

#include <algorithm>
#include <fcntl.h>
#include <map>
#include <set>
#include <unistd.h>

namespace hotforge {
namespace release_detail {
namespace {

// "./lib//foo.so" -> "lib/foo.so"; ".." anywhere is refused.
llvm::Expected<std::string> normalizeName(llvm::StringRef raw) {
  std::string out;
  for (llvm::StringRef rest = raw; !rest.empty();) {
    auto [component, tail] = rest.split('/');
    rest = tail;
    if (component.empty() || component == ".") continue;
    if (component == "..") return formatError("pair name \"{}\" has a \"..\" component", raw.str());
    if (!out.empty()) out += '/';
    out += component.str();
  }
  if (out.empty()) return formatError("pair name \"{}\" is empty once \".\" and \"/\" are dropped", raw.str());
  return out;
}

std::string resolve(const std::string &baseDir, const std::string &path) {
  if (path.empty() || llvm::sys::path::is_absolute(path) || baseDir.empty()) return path;
  llvm::SmallString<256> joined(baseDir);
  llvm::sys::path::append(joined, path);
  return std::string(joined);
}

class DocReader {
public:
  DocReader(std::string where) : where_(std::move(where)) {}

  llvm::Error unknownKeys(const nlohmann::json &object, std::initializer_list<const char *> known,
                          const std::string &context) {
    for (auto it = object.begin(); it != object.end(); ++it) {
      bool found = false;
      for (const char *k : known) found = found || it.key() == k;
      if (!found)
        return formatError("{}: {}unknown field \"{}\" (known: {})", where_, context, it.key(), list(known));
    }
    return llvm::Error::success();
  }

  llvm::Expected<std::string> string(const nlohmann::json &object, const char *key, const std::string &context,
                                     bool required) {
    auto it = object.find(key);
    if (it == object.end()) {
      if (required) return formatError("{}: {}\"{}\" is missing", where_, context, key);
      return std::string();
    }
    if (!it->is_string()) return formatError("{}: {}\"{}\" must be a string", where_, context, key);
    std::string value = it->get<std::string>();
    if (required && value.empty()) return formatError("{}: {}\"{}\" is empty", where_, context, key);
    return value;
  }

  llvm::Expected<std::optional<uint32_t>> sequence(const nlohmann::json &object, const std::string &context) {
    auto it = object.find("sequence");
    if (it == object.end()) return std::nullopt;
    if (!it->is_number_integer() || (it->is_number_unsigned() ? it->get<uint64_t>() == 0 : it->get<int64_t>() < 1) ||
        it->get<uint64_t>() > 0xffffffffull)
      return formatError("{}: {}\"sequence\" must be an integer from 1 to 4294967295", where_, context);
    return static_cast<uint32_t>(it->get<uint64_t>());
  }

private:
  static std::string list(std::initializer_list<const char *> keys) {
    std::string out;
    for (const char *k : keys) out += (out.empty() ? "" : ", ") + std::string(k);
    return out;
  }
  std::string where_;
};

llvm::Expected<ReleaseGrouping> parseGrouping(const std::string &text, const std::string &where) {
  if (text.empty() || text == "machine") return ReleaseGrouping::Machine;
  if (text == "format-machine") return ReleaseGrouping::FormatMachine;
  if (text == "single") return ReleaseGrouping::Single;
  return formatError("{}: \"grouping\" is \"{}\"; it must be \"machine\" (one unit per machine, the default), "
                     "\"format-machine\" or \"single\"",
                     where, text);
}

// Entry names that collide (ASCII case folded, as packUnit compares them) or are too long make
// their pairs fail; the others run.
void finishPairs(ReleasePlan &plan) {
  std::sort(plan.pairs.begin(), plan.pairs.end(),
            [](const ReleasePair &a, const ReleasePair &b) { return a.name < b.name; });
  std::map<std::string, std::vector<size_t>> byEntry;
  for (size_t i = 0; i < plan.pairs.size(); ++i) {
    ReleasePair &p = plan.pairs[i];
    p.entry = releaseEntryName(p.name);
    // Names travel through JSON (records, summary), which would replace bytes that are not UTF-8.
    if (!llvm::json::isUTF8(p.name) && p.problem.empty())
      p.problem = "its name is not valid UTF-8; give the pair a UTF-8 name in a manifest";
    if (p.entry.size() > 255 && p.problem.empty())
      p.problem = fmt::format("its entry name is {} bytes long, above the 255 a unit allows; use a shorter pair name",
                              p.entry.size());
    byEntry[asciiLower(p.entry)].push_back(i);
  }
  for (auto &[folded, indices] : byEntry) {
    if (indices.size() < 2) continue;
    for (size_t i : indices) {
      std::string others;
      for (size_t j : indices)
        if (j != i) others += (others.empty() ? "" : ", ") + plan.pairs[j].name;
      if (plan.pairs[i].problem.empty())
        plan.pairs[i].problem = fmt::format("its entry name {} collides with that of {} (letter case aside); rename one",
                                            plan.pairs[i].entry, others);
    }
  }
}

bool looksLikeImage(const std::string &path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char magic[4] = {};
  ssize_t n = read(fd, magic, sizeof(magic));
  close(fd);
  if (n >= 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F') return true;
  return n >= 2 && magic[0] == 'M' && magic[1] == 'Z';
}

bool sameContent(const std::string &a, const std::string &b) {
  uint64_t sizeA = 0, sizeB = 0;
  if (llvm::sys::fs::file_size(a, sizeA) || llvm::sys::fs::file_size(b, sizeB) || sizeA != sizeB) return false;
  llvm::Expected<Digest> da = sha256File(a), db = sha256File(b);
  if (!da || !db) {
    llvm::consumeError(da.takeError());
    llvm::consumeError(db.takeError());
    return false;
  }
  return *da == *db;
}

// Regular files under `dir`, as sorted relative paths; symbolic links are neither followed nor listed.
llvm::Expected<std::vector<std::string>> listFiles(const std::string &dir, const char *role) {
  if (!llvm::sys::fs::is_directory(dir)) return formatError("{} {}: not a directory", role, dir);
  std::vector<std::string> out;
  std::error_code ec;
  llvm::sys::fs::recursive_directory_iterator it(dir, ec, /*follow_symlinks=*/false), end;
  for (; !ec && it != end; it.increment(ec)) {
    llvm::sys::fs::file_type type = it->type();
    if (type == llvm::sys::fs::file_type::type_unknown) {
      llvm::sys::fs::file_status status;
      if (llvm::sys::fs::status(it->path(), status, /*follow=*/false)) continue;
      type = status.type();
    }
    if (type != llvm::sys::fs::file_type::regular_file) continue;
    llvm::StringRef full = it->path();
    llvm::StringRef relative = full.substr(dir.size());
    while (relative.starts_with("/")) relative = relative.drop_front();
    out.push_back(relative.str());
  }
  if (ec) return formatError("{} {}: cannot list: {}", role, dir, ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

llvm::Expected<ReleasePlan> planFromDocument(const nlohmann::json &doc, const std::string &manifestPath) {
  const std::string &where = manifestPath;
  if (!doc.is_object()) return formatError("{}: the manifest must be an object", where);
  DocReader r(where);
  if (llvm::Error e = r.unknownKeys(doc, {"schema", "release", "baseline", "sequence", "grouping", "entries",
                                          "baseline_dir", "patched_dir", "debug_dir", "exclude"},
                                    ""))
    return e;
  if (doc.contains("schema") && doc["schema"] != kManifestSchema)
    return formatError("{}: \"schema\" must be \"{}\"", where, kManifestSchema);
  ReleasePlan plan;
  llvm::Expected<std::string> release = r.string(doc, "release", "", true);
  if (!release) return release.takeError();
  if (llvm::Error e = checkReleaseId(*release)) return formatError("{}: {}", where, errorText(std::move(e)));
  plan.release = *release;
  llvm::Expected<std::string> baseline = r.string(doc, "baseline", "", false);
  if (!baseline) return baseline.takeError();
  plan.baseline = *baseline;
  llvm::Expected<std::optional<uint32_t>> sequence = r.sequence(doc, "");
  if (!sequence) return sequence.takeError();
  plan.sequence = sequence->value_or(1);
  llvm::Expected<std::string> grouping = r.string(doc, "grouping", "", false);
  if (!grouping) return grouping.takeError();
  llvm::Expected<ReleaseGrouping> g = parseGrouping(*grouping, where);
  if (!g) return g.takeError();
  plan.grouping = *g;
  llvm::Expected<std::string> debugDir = r.string(doc, "debug_dir", "", false);
  if (!debugDir) return debugDir.takeError();

  std::string manifestDir = llvm::sys::path::parent_path(manifestPath).str();
  bool haveEntries = doc.contains("entries");
  bool haveDirs = doc.contains("baseline_dir") || doc.contains("patched_dir");
  if (haveEntries == haveDirs)
    return formatError("{}: give either \"entries\" or \"baseline_dir\" and \"patched_dir\"", where);

  if (haveDirs) {
    ReleaseDirectories dirs;
    llvm::Expected<std::string> a = r.string(doc, "baseline_dir", "", true);
    if (!a) return a.takeError();
    llvm::Expected<std::string> b = r.string(doc, "patched_dir", "", true);
    if (!b) return b.takeError();
    dirs.baselineDir = resolve(manifestDir, *a);
    dirs.patchedDir = resolve(manifestDir, *b);
    dirs.debugDir = resolve(manifestDir, *debugDir);
    if (doc.contains("exclude")) {
      const nlohmann::json &exclude = doc["exclude"];
      if (!exclude.is_array()) return formatError("{}: \"exclude\" must be an array of glob strings", where);
      for (const nlohmann::json &p : exclude) {
        if (!p.is_string()) return formatError("{}: \"exclude\" must be an array of glob strings", where);
        dirs.exclude.push_back(p.get<std::string>());
      }
    }
    return planFromDirectories(std::move(plan), dirs);
  }
  if (doc.contains("exclude")) return formatError("{}: \"exclude\" only applies to \"baseline_dir\"", where);

  const nlohmann::json &entries = doc["entries"];
  if (!entries.is_array()) return formatError("{}: \"entries\" must be an array", where);
  std::set<std::string> names;
  for (size_t i = 0; i < entries.size(); ++i) {
    const nlohmann::json &e = entries[i];
    std::string context = fmt::format("entries[{}]: ", i);
    if (!e.is_object()) return formatError("{}: {}must be an object", where, context);
    if (llvm::Error err = r.unknownKeys(e, {"name", "baseline", "patched", "pdb_base", "pdb_patched", "debug_dir",
                                            "sequence"},
                                        context))
      return err;
    ReleasePair pair;
    llvm::Expected<std::string> base = r.string(e, "baseline", context, true);
    if (!base) return base.takeError();
    llvm::Expected<std::string> patched = r.string(e, "patched", context, true);
    if (!patched) return patched.takeError();
    llvm::Expected<std::string> name = r.string(e, "name", context, false);
    if (!name) return name.takeError();
    std::string rawName = *name;
    if (rawName.empty())  // default: the baseline path as written, or its file name when absolute
      rawName = llvm::sys::path::is_absolute(*base) ? llvm::sys::path::filename(*base).str() : *base;
    llvm::Expected<std::string> normalized = normalizeName(rawName);
    if (!normalized) return formatError("{}: {}{}", where, context, errorText(normalized.takeError()));
    pair.name = *normalized;
    if (!names.insert(pair.name).second)
      return formatError("{}: {}a second pair named \"{}\"; pair names must be unique", where, context, pair.name);
    pair.base = resolve(manifestDir, *base);
    pair.patched = resolve(manifestDir, *patched);
    for (auto [key, field] : {std::pair{"pdb_base", &pair.pdbBase}, std::pair{"pdb_patched", &pair.pdbPatched},
                              std::pair{"debug_dir", &pair.debugDir}}) {
      llvm::Expected<std::string> value = r.string(e, key, context, false);
      if (!value) return value.takeError();
      *field = resolve(manifestDir, *value);
    }
    if (pair.debugDir.empty()) pair.debugDir = resolve(manifestDir, *debugDir);
    llvm::Expected<std::optional<uint32_t>> s = r.sequence(e, context);
    if (!s) return s.takeError();
    pair.sequence = s->value_or(plan.sequence);
    plan.pairs.push_back(std::move(pair));
  }
  finishPairs(plan);
  return plan;
}

std::string planDigest(const ReleasePlan &plan) {
  nlohmann::json ignored = nlohmann::json::array();
  for (const ReleaseIgnored &i : plan.ignored) ignored.push_back({{"path", i.path}, {"reason", i.reason}});
  nlohmann::json doc = {{"release", plan.release},
                        {"baseline", plan.baseline},
                        {"sequence", plan.sequence},
                        {"grouping", releaseGroupingName(plan.grouping)},
                        {"pairs", planPairsJson(plan)},
                        {"ignored", ignored}};
  std::string text = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return hexEncode(sha256(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size())));
}

nlohmann::json planPairsJson(const ReleasePlan &plan) {
  nlohmann::json pairs = nlohmann::json::array();
  for (const ReleasePair &p : plan.pairs) pairs.push_back({{"name", p.name}, {"entry", p.entry}, {"sequence", p.sequence}});
  return pairs;
}

}  // namespace release_detail

using namespace release_detail;

llvm::Expected<ReleasePlan> loadReleaseManifest(const std::string &path) {
  llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(path));
  if (!bytes) return bytes.takeError();
  llvm::StringRef text(reinterpret_cast<const char *>(bytes->data()), bytes->size());
  nlohmann::json doc;
  if (llvm::StringRef(path).ends_with_insensitive(".toml")) {
    llvm::Expected<nlohmann::json> converted = tomlToJson(text, path);
    if (!converted) return converted.takeError();
    doc = std::move(*converted);
  } else {
    try {
      doc = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error &e) {
      // e.what() reads "[json.exception.parse_error.101] parse error at line 3, column 5: ...".
      std::string message = e.what();
      if (size_t at = message.find("] "); at != std::string::npos) message = message.substr(at + 2);
      return formatError("{}: not valid JSON: {}", path, message);
    }
  }
  return planFromDocument(doc, path);
}

llvm::Expected<ReleasePlan> planFromDirectories(ReleasePlan plan, const ReleaseDirectories &dirs) {
  if (llvm::Error e = checkReleaseId(plan.release)) return e;
  plan.pairs.clear();
  plan.ignored.clear();
  std::vector<llvm::GlobPattern> exclude;
  std::vector<std::string> patterns = {"*.debug", "*.pdb"};  // debug inputs, read with their images
  patterns.insert(patterns.end(), dirs.exclude.begin(), dirs.exclude.end());
  for (const std::string &p : patterns) {
    llvm::Expected<llvm::GlobPattern> glob = llvm::GlobPattern::create(p);
    if (!glob) return formatError("exclude pattern \"{}\": {}", p, errorText(glob.takeError()));
    exclude.push_back(std::move(*glob));
  }
  llvm::Expected<std::vector<std::string>> baseFiles = listFiles(dirs.baselineDir, "baseline directory");
  if (!baseFiles) return baseFiles.takeError();
  llvm::Expected<std::vector<std::string>> patchedFiles = listFiles(dirs.patchedDir, "patched directory");
  if (!patchedFiles) return patchedFiles.takeError();

  std::set<std::string> all(baseFiles->begin(), baseFiles->end());
  std::set<std::string> inBase(all), inPatched(patchedFiles->begin(), patchedFiles->end());
  all.insert(patchedFiles->begin(), patchedFiles->end());
  auto join = [](const std::string &dir, const std::string &rel) {
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, rel);
    return std::string(p);
  };
  for (const std::string &rel : all) {
    if (std::any_of(exclude.begin(), exclude.end(), [&](const llvm::GlobPattern &g) { return g.match(rel); })) continue;
    std::string base = join(dirs.baselineDir, rel), patched = join(dirs.patchedDir, rel);
    bool b = inBase.count(rel) != 0, p = inPatched.count(rel) != 0;
    if (b && p) {
      if (looksLikeImage(base) || looksLikeImage(patched)) {
        ReleasePair pair;
        pair.name = rel;
        pair.base = base;
        pair.patched = patched;
        pair.debugDir = dirs.debugDir;
        pair.sequence = plan.sequence;
        plan.pairs.push_back(std::move(pair));
      } else if (!sameContent(base, patched)) {
        plan.ignored.push_back({rel, "changed, but not an ELF or PE image: a hotpatch cannot carry it"});
      }
    } else if (b && looksLikeImage(base)) {
      plan.ignored.push_back({rel, "only in the baseline tree (removed): nothing to patch"});
    } else if (p && looksLikeImage(patched)) {
      plan.ignored.push_back({rel, "only in the patched tree (new): a hotpatch cannot add a file"});
    }
  }
  finishPairs(plan);
  return plan;
}

}  // namespace hotforge
