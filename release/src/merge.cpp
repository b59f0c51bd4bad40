// The merge: shard records to units and the summary. A single run goes through here too (as the
// one shard 1/1), so its outputs are those of any sharded run of the same plan, byte for byte.
#include "release_internal.h"

#include "hotforge/core/error.h"
#include "hotforge/report.h"

#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>

#include <chrono>
#include <map>
#include <set>

namespace hotforge {
using namespace release_detail;
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::string unitGroup(ReleaseGrouping grouping, const std::string &format, const std::string &machine) {
  switch (grouping) {
  case ReleaseGrouping::Machine: return machine;
  case ReleaseGrouping::FormatMachine: return format + "-" + machine;
  case ReleaseGrouping::Single: return "";
  }
  return machine;
}

std::string unitFile(const std::string &release, const std::string &group) {
  return group.empty() ? release + ".hfu" : release + "-" + group + ".hfu";
}

ReleaseGrouping groupingFrom(const std::string &name) {
  if (name == "format-machine") return ReleaseGrouping::FormatMachine;
  if (name == "single") return ReleaseGrouping::Single;
  return ReleaseGrouping::Machine;
}

std::vector<std::string> possibleUnits(const std::string &release, ReleaseGrouping grouping) {
  std::vector<std::string> out;
  for (const char *format : {"elf", "pe"})
    for (const char *machine : {"x64", "arm64"}) {
      std::string file = unitFile(release, unitGroup(grouping, format, machine));
      if (std::find(out.begin(), out.end(), file) == out.end()) out.push_back(file);
    }
  return out;
}

// The info a unit records for one image: its pair, the baseline it fits, what it changes.
json entryInfo(const json &header, const json &r) {
  json baseline = r.at("baseline");
  baseline["file"] = r.at("name");
  json changes = json::array();
  for (const json &c : r.at("changes"))
    changes.push_back({{"kind", c.at("kind")}, {"name", c.at("name")}, {"rule", c.at("rule")}, {"verdict", c.at("verdict")}});
  json info = {{"pair", r.at("name")},
               {"release", header.at("release")},
               {"baseline", baseline},
               {"format", r.at("format")},
               {"machine", r.at("machine")},
               {"sequence", r.at("sequence")},
               {"patched_sha256", r.at("patched_sha256")},
               {"changes", changes}};
  if (header.at("baseline").is_string()) info["baseline_release"] = header.at("baseline");
  return info;
}

struct Totals {
  uint64_t pairs = 0, hotpatched = 0, restart = 0, unchanged = 0, failed = 0, cached = 0;
  uint64_t changed = 0, added = 0, removed = 0, data = 0;
  uint64_t imageBytes = 0, code = 0, dataBytes = 0, metadata = 0;
};

json buildSummary(const json &header, const std::vector<json> &records, const json &units,
                  const std::optional<int64_t> &created, const json &signer, int &exitCode) {
  Totals t;
  json hotpatched = json::array(), restart = json::array(), unchanged = json::array(), failed = json::array();
  for (const json &r : records) {
    ++t.pairs;
    if (r.at("cached").get<bool>()) ++t.cached;
    std::string status = r.at("status").get<std::string>();
    std::string name = r.at("name").get<std::string>();
    if (status == "failed") {
      ++t.failed;
      failed.push_back({{"name", name}, {"error", r.at("error")}});
      continue;
    }
    if (status == "unchanged") {
      ++t.unchanged;
      unchanged.push_back(name);
      continue;
    }
    if (status == "restart-required") {
      ++t.restart;
      restart.push_back({{"name", name}, {"reasons", r.at("restart")}});
      continue;
    }
    ++t.hotpatched;
    hotpatched.push_back(name);
    t.changed += r.at("changed_functions").size();
    t.added += r.at("added_functions").size();
    t.removed += r.at("removed_functions").size();
    t.data += r.at("data_changes").size();
    const json &image = r.at("image");
    t.imageBytes += image.at("size").get<uint64_t>();
    t.code += image.at("code").get<uint64_t>();
    t.dataBytes += image.at("data").get<uint64_t>();
    t.metadata += image.at("metadata").get<uint64_t>();
  }
  uint64_t unitBytes = 0;
  for (const json &u : units) unitBytes += u.at("size").get<uint64_t>();
  exitCode = t.failed ? 1 : t.restart ? 3 : 0;
  return {{"schema", kSummarySchema},
          {"release", header.at("release")},
          {"baseline", header.at("baseline")},
          {"sequence", header.at("sequence")},
          {"grouping", header.at("grouping")},
          {"created", created ? json(*created) : json(nullptr)},
          {"signer", signer},
          {"units", units},
          {"pairs", records},
          {"hotpatched", hotpatched},
          {"restart_required", restart},
          {"unchanged", unchanged},
          {"failed", failed},
          {"ignored", header.at("ignored")},
          {"totals",
           {{"pairs", t.pairs},
            {"hotpatched", t.hotpatched},
            {"restart_required", t.restart},
            {"unchanged", t.unchanged},
            {"failed", t.failed},
            {"cached", t.cached},
            {"ignored", header.at("ignored").size()},
            {"changed_functions", t.changed},
            {"added_functions", t.added},
            {"removed_functions", t.removed},
            {"data_changes", t.data},
            {"image_bytes", t.imageBytes},
            {"code_bytes", t.code},
            {"data_bytes", t.dataBytes},
            {"metadata_bytes", t.metadata},
            {"units", units.size()},
            {"unit_bytes", unitBytes}}},
          {"exit_code", exitCode}};
}

json addStages(json total, const json &more) {
  for (auto it = more.begin(); it != more.end(); ++it)
    if (it->is_number()) total[it.key()] = total.value(it.key(), 0.0) + it->get<double>();
  return total;
}

// The shards by index, each once, all of one plan and one split, none missing.
llvm::Expected<std::map<unsigned, const ReleaseShard *>> shardsByIndex(const std::vector<ReleaseShard> &shards) {
  const json &header = shards.front().record;
  std::string plan = header.at("plan").get<std::string>();
  unsigned count = header.at("shard").at("count").get<unsigned>();
  std::map<unsigned, const ReleaseShard *> byIndex;
  for (const ReleaseShard &s : shards) {
    const json &r = s.record;
    unsigned index = r.at("shard").at("index").get<unsigned>();
    if (r.at("plan").get<std::string>() != plan)
      return formatError("shard {}/{} is from another release plan than shard {}/{} (release {} vs {}): the shards "
                         "must come from the same manifest",
                         index, r.at("shard").at("count").get<unsigned>(), header.at("shard").at("index").get<unsigned>(),
                         count, r.at("release").dump(), header.at("release").dump());
    if (r.at("shard").at("count").get<unsigned>() != count)
      return formatError("shard {}/{} and shard {}/{} split the release differently", index,
                         r.at("shard").at("count").get<unsigned>(), header.at("shard").at("index").get<unsigned>(), count);
    if (index == 0 || index > count) return formatError("shard {}/{} is not a valid slice", index, count);
    if (!byIndex.emplace(index, &s).second) return formatError("shard {}/{} is given twice", index, count);
  }
  std::string missing;
  for (unsigned i = 1; i <= count; ++i)
    if (!byIndex.count(i)) missing += fmt::format("{}{}/{}", missing.empty() ? "" : ", ", i, count);
  if (!missing.empty()) return formatError("shard(s) {} missing: merge needs every shard's output", missing);
  return byIndex;
}

// Every pair's result in plan order, each from the shard it belongs to (`owner`).
llvm::Expected<std::vector<json>> resultsInPlanOrder(const json &header,
                                                     const std::map<unsigned, const ReleaseShard *> &byIndex,
                                                     std::map<std::string, const ReleaseShard *> &owner) {
  unsigned count = header.at("shard").at("count").get<unsigned>();
  std::map<std::string, const json *> results;
  for (const auto &[index, s] : byIndex)
    for (const json &r : s->record.at("results")) {
      if (!validResult(r)) return formatError("shard {}/{}: a result is malformed", index, count);
      std::string name = r.at("name").get<std::string>();
      if (shardOfPair(name, count) != index)
        return formatError("shard {}/{} has a result for {}, which belongs to shard {}", index, count, name,
                           shardOfPair(name, count));
      if (!results.emplace(name, &r).second) return formatError("pair {} has two results", name);
      owner[name] = s;
    }
  std::vector<json> records;
  for (const json &p : header.at("plan_pairs")) {
    std::string name = p.at("name").get<std::string>();
    auto it = results.find(name);
    if (it == results.end())
      return formatError("pair {} has no result in shard {}/{}", name, shardOfPair(name, count), count);
    records.push_back(*it->second);
  }
  if (records.size() != results.size()) return makeError("the shards hold results for pairs the plan does not have");
  return records;
}

// One unit from its members' images, sorted by entry name; its summary record goes to `units`.
llvm::Error packGroup(const json &header, const std::string &file, const std::vector<json *> &members,
                      const std::map<std::string, const ReleaseShard *> &owner, const ReleasePackOptions &options,
                      ReleaseGrouping grouping, json &units, ReleaseResult &result) {
  std::vector<UnitEntry> entries;
  uint64_t imagesSize = 0;
  json entryNames = json::array();
  for (json *r : members) {
    std::string name = r->at("name").get<std::string>(), entry = r->at("entry").get<std::string>();
    auto image = owner.at(name)->images.find(entry);
    if (image == owner.at(name)->images.end()) return formatError("pair {}: its image {} is missing", name, entry);
    UnitEntry e;
    e.name = entry;
    e.bytes = image->second;
    e.info = entryInfo(header, *r);
    // What `hotforge pack` records for a hotpatch image, so units from either look alike.
    e.info["file"] = entry;
    e.info["size"] = e.bytes.size();
    e.info["kind"] = "hotpatch-image";
    imagesSize += e.bytes.size();
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const UnitEntry &a, const UnitEntry &b) { return a.name < b.name; });
  for (const UnitEntry &e : entries) entryNames.push_back(e.name);
  PackOptions pack;
  pack.release = header.at("release").get<std::string>();
  pack.level = options.level;
  pack.created = options.created;
  pack.threads = options.threads;
  pack.signer = options.signer;
  llvm::Expected<std::vector<uint8_t>> bytes = packUnit(entries, pack);
  if (!bytes) return formatError("{}: {}", file, errorText(bytes.takeError()));
  units.push_back({{"file", file},
                   {"group", unitGroup(grouping, members.front()->at("format").get<std::string>(),
                                       members.front()->at("machine").get<std::string>())},
                   {"entries", entryNames},
                   {"images_size", imagesSize},
                   {"size", bytes->size()},
                   {"sha256", hexEncode(sha256(*bytes))}});
  result.units.push_back({file, std::move(*bytes)});
  return llvm::Error::success();
}

// times.json of the merged release: the shards' stage times summed, plus the pack and the merge.
json mergedTimes(const std::map<unsigned, const ReleaseShard *> &byIndex, double packSeconds, Clock::time_point start) {
  json stages = json::object(), shardTimes = json::array(), pairTimes = json::object(), notes = json::array();
  for (const auto &[index, s] : byIndex) {
    const json &t = s->record.value("times", json::object());
    stages = addStages(stages, t.value("stages", json::object()));
    shardTimes.push_back({{"index", index}, {"wall", t.value("wall", 0.0)}, {"jobs", t.value("jobs", 0)}});
    json perPair = t.value("pairs", json::object());
    for (auto it = perPair.begin(); it != perPair.end(); ++it) pairTimes[it.key()] = it.value();
    for (const json &n : s->record.value("notes", json::array())) notes.push_back(n);
  }
  stages["pack"] = packSeconds;
  return {{"schema", kTimesSchema},
          {"merge", std::chrono::duration<double>(Clock::now() - start).count()},
          {"stages", stages},
          {"shards", shardTimes},
          {"pairs", pairTimes},
          {"notes", notes}};
}

llvm::Expected<ReleaseResult> merge(const std::vector<ReleaseShard> &shards, const ReleasePackOptions &options) {
  Clock::time_point start = Clock::now();
  if (shards.empty()) return makeError("no shards to merge");
  if (!options.signer) return makeError("merging a release needs a signer");
  const json &header = shards.front().record;
  llvm::Expected<std::map<unsigned, const ReleaseShard *>> byIndex = shardsByIndex(shards);
  if (!byIndex) return byIndex.takeError();
  std::map<std::string, const ReleaseShard *> owner;
  llvm::Expected<std::vector<json>> records = resultsInPlanOrder(header, *byIndex, owner);
  if (!records) return records.takeError();

  // Units: hotpatched pairs grouped, each unit from its full, sorted list of entries.
  ReleaseGrouping grouping = groupingFrom(header.at("grouping").get<std::string>());
  std::string release = header.at("release").get<std::string>();
  std::map<std::string, std::vector<json *>> groups;  // unit file -> records
  for (json &r : *records) {
    r["unit"] = nullptr;
    if (r.at("status") != "hotpatched") continue;
    std::string file = unitFile(release, unitGroup(grouping, r.at("format").get<std::string>(), r.at("machine").get<std::string>()));
    r["unit"] = file;
    groups[file].push_back(&r);
  }
  ReleaseResult result;
  for (const json &r : *records) {
    if (!r.value("page", json()).is_string()) continue;
    std::string name = r.at("name").get<std::string>(), entry = r.at("entry").get<std::string>();
    auto page = owner.at(name)->pages.find(entry);
    if (page == owner.at(name)->pages.end()) return formatError("pair {}: its review page is missing", name);
    result.pages[entry] = page->second;
  }
  json units = json::array();
  Clock::time_point packStart = Clock::now();
  for (auto &[file, members] : groups)
    if (llvm::Error e = packGroup(header, file, members, owner, options, grouping, units, result)) return e;
  double packSeconds = std::chrono::duration<double>(Clock::now() - packStart).count();
  for (const std::string &file : possibleUnits(release, grouping))
    if (!groups.count(file)) result.staleUnits.push_back(file);

  result.summary = buildSummary(header, *records, units, options.created,
                                json(options.signer->publicKey().fingerprint()), result.exitCode);
  result.times = mergedTimes(*byIndex, packSeconds, start);
  return result;
}

std::string seconds(const json &times, const char *key) {
  auto it = times.find(key);
  return it != times.end() && it->is_number() ? fmt::format("{:.2f} s", it->get<double>()) : "-";
}

}  // namespace

llvm::Expected<ReleaseResult> mergeReleaseShards(const std::vector<ReleaseShard> &shards,
                                                 const ReleasePackOptions &options) {
  try {
    return merge(shards, options);
  } catch (const json::exception &e) {
    return formatError("a shard record is malformed: {}", e.what());
  }
}

ReleaseResult summarizeReleaseShard(const ReleaseShard &shard) {
  ReleaseResult result;
  const json &r = shard.record;
  std::vector<json> records(r.at("results").begin(), r.at("results").end());
  for (json &record : records) record["unit"] = nullptr;  // units come with the merge
  result.summary = buildSummary(r, records, json::array(), std::nullopt, nullptr, result.exitCode);
  result.summary["shard"] = r.at("shard");
  const json &t = r.at("times");
  result.times = {{"schema", kTimesSchema},
                  {"stages", t.at("stages")},
                  {"shards", json::array({{{"index", r.at("shard").at("index")}, {"wall", t.at("wall")}, {"jobs", t.at("jobs")}}})},
                  {"pairs", t.at("pairs")},
                  {"notes", r.at("notes")}};
  return result;
}

llvm::Error writeReleaseOutput(const ReleaseResult &result, const std::string &outDir) {
  if (std::error_code ec = llvm::sys::fs::create_directories(outDir))
    return formatError("{}: cannot create: {}", outDir, ec.message());
  auto path = [&](const std::string &file) {
    llvm::SmallString<256> p(outDir);
    llvm::sys::path::append(p, file);
    return std::string(p);
  };
  for (const ReleaseUnit &u : result.units)
    if (llvm::Error e = writeFileAtomically(path(u.file), u.bytes, 0666, true)) return e;
  if (llvm::Error e = writeTextAtomically(path("summary.json"), jsonText(result.summary))) return e;
  if (llvm::Error e = writeTextAtomically(path("times.json"), jsonText(result.times))) return e;
  if (llvm::Error e = writeReleasePages(result.pages, outDir, true)) return e;
  std::set<std::string> paged;
  for (const auto &[entry, page] : result.pages) paged.insert(entry);
  if (llvm::Error e = writeTextAtomically(path("summary.html"), releaseSummaryHtml(result.summary, paged))) return e;
  for (const std::string &stale : result.staleUnits) {
    std::error_code ec = llvm::sys::fs::remove(path(stale), /*IgnoreNonExisting=*/true);
    if (ec) return formatError("{}: cannot remove the unit of an earlier run: {}", path(stale), ec.message());
  }
  return llvm::Error::success();
}

llvm::Error writeReleasePages(const std::map<std::string, std::string> &pages, const std::string &outDir,
                              bool removeOthers) {
  llvm::SmallString<256> dir(outDir);
  llvm::sys::path::append(dir, llvm::sys::path::parent_path(releasePagePath("x")));
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return formatError("{}: cannot create: {}", std::string(dir), ec.message());
  std::set<std::string> wanted;
  for (const auto &[entry, page] : pages) {
    llvm::SmallString<256> file(outDir);
    llvm::sys::path::append(file, releasePagePath(entry));
    wanted.insert(std::string(file));
    if (llvm::Error e = writeTextAtomically(std::string(file), page)) return e;
  }
  if (!removeOthers) return llvm::Error::success();
  std::error_code ec;
  std::vector<std::string> stale;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (llvm::StringRef(it->path()).ends_with(".html") && !wanted.count(it->path())) stale.push_back(it->path());
  for (const std::string &file : stale)
    if (std::error_code removed = llvm::sys::fs::remove(file))
      return formatError("{}: cannot remove the page of an earlier run: {}", file, removed.message());
  return llvm::Error::success();
}

nlohmann::json releaseSummaryJson(const ReleaseResult &result) {
  json doc = result.summary;
  doc["times"] = result.times;
  return doc;
}

std::string releaseSummaryText(const ReleaseResult &result) {
  const json &s = result.summary;
  const json &t = s.at("totals");
  std::string out;
  std::string head = "release " + s.at("release").get<std::string>();
  if (s.contains("shard"))
    head += fmt::format(" shard {}/{}", s["shard"].at("index").get<unsigned>(), s["shard"].at("count").get<unsigned>());
  std::string baseline = s.at("baseline").is_string() ? "baseline " + s.at("baseline").get<std::string>() + ", " : "";
  out += fmt::format("{} ({}sequence {}): {} pairs: {} hotpatched, {} need a restart, {} unchanged, {} failed",
                     head, baseline, s.at("sequence").get<uint64_t>(), t.at("pairs").get<uint64_t>(),
                     t.at("hotpatched").get<uint64_t>(), t.at("restart_required").get<uint64_t>(),
                     t.at("unchanged").get<uint64_t>(), t.at("failed").get<uint64_t>());
  if (t.at("cached").get<uint64_t>()) out += fmt::format("; {} cached", t.at("cached").get<uint64_t>());
  out += "\n";
  if (!s.at("units").empty()) {
    out += "units:\n";
    for (const json &u : s.at("units"))
      out += fmt::format("  {:<32} {:>4} image{} {:>10} bytes -> {:>10} bytes  sha256 {}\n", u.at("file").get<std::string>(),
                         u.at("entries").size(), u.at("entries").size() == 1 ? " " : "s", u.at("images_size").get<uint64_t>(),
                         u.at("size").get<uint64_t>(), u.at("sha256").get<std::string>());
  }
  auto names = [](const json &list) {
    std::string text;
    for (const json &n : list) text += (text.empty() ? "" : ", ") + n.get<std::string>();
    return text.empty() ? std::string("-") : text;
  };
  bool any = false;
  for (const json &r : s.at("pairs")) {
    if (r.at("status") != "hotpatched") continue;
    if (!any) out += "hotpatched:\n";
    any = true;
    const json &image = r.at("image");
    out += fmt::format("  {:<32} {:<9} changed {}; added {}; code {} data {} metadata {} bytes -> {}{}\n",
                       r.at("name").get<std::string>(), r.at("format").get<std::string>() + " " + r.at("machine").get<std::string>(),
                       names(r.at("changed_functions")), names(r.at("added_functions")), image.at("code").get<uint64_t>(),
                       image.at("data").get<uint64_t>(), image.at("metadata").get<uint64_t>(), r.at("unit").is_string() ? r.at("unit").get<std::string>() : std::string("(shard)"),
                       r.at("cached").get<bool>() ? "  [cached]" : "");
  }
  if (!s.at("restart_required").empty()) {
    out += "restart required:\n";
    for (const json &r : s.at("restart_required")) {
      out += "  " + r.at("name").get<std::string>() + "\n";
      for (const json &why : r.at("reasons")) {
        out += fmt::format("    {}: {}\n", restartLabel(why), why.at("reason").get<std::string>());
      }
    }
  }
  if (!s.at("failed").empty()) {
    out += "failed:\n";
    for (const json &f : s.at("failed"))
      out += fmt::format("  {}: {}\n", f.at("name").get<std::string>(), f.at("error").get<std::string>());
  }
  if (!s.at("unchanged").empty()) out += "unchanged: " + names(s.at("unchanged")) + "\n";
  if (!s.at("ignored").empty()) {
    out += "ignored:\n";
    for (const json &i : s.at("ignored"))
      out += fmt::format("  {}: {}\n", i.at("path").get<std::string>(), i.at("reason").get<std::string>());
  }
  out += fmt::format("totals: {} changed, {} added, {} removed functions, {} data changes; images {} bytes (code {}, "
                     "data {}, metadata {}); units {} bytes\n",
                     t.at("changed_functions").get<uint64_t>(), t.at("added_functions").get<uint64_t>(),
                     t.at("removed_functions").get<uint64_t>(), t.at("data_changes").get<uint64_t>(),
                     t.at("image_bytes").get<uint64_t>(), t.at("code_bytes").get<uint64_t>(),
                     t.at("data_bytes").get<uint64_t>(), t.at("metadata_bytes").get<uint64_t>(),
                     t.at("unit_bytes").get<uint64_t>());
  const json &times = result.times;
  if (times.is_object() && times.contains("stages")) {
    const json &st = times.at("stages");
    out += fmt::format("times: wall {}; stages (summed over workers): hash {}, cache {}, read {}, diff {}, build {}, pack {}\n",
                       seconds(times, "wall"), seconds(st, "hash"), seconds(st, "cache"), seconds(st, "read"),
                       seconds(st, "diff"), seconds(st, "build"), seconds(st, "pack"));
  }
  for (const json &n : times.value("notes", json::array())) out += "note: " + n.get<std::string>() + "\n";
  return out;
}

}  // namespace hotforge
