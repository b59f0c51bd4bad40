// One shard of a release: every pair of the slice is hashed, looked up in the cache, read, diffed
// and built on a small pool of worker threads; the results land in a shard record.
#include "hotforge/core/container_target.h"
#include "release_internal.h"

#include "hotforge/diff.h"
#include "hotforge/core/error.h"
#include "hotforge/image.h"
#include "hotforge/patch_image.h"
#include "hotforge/report.h"
#include "hotforge/core/files.h"

#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <regex>
#include <thread>
#include <unistd.h>

namespace hotforge {
using namespace release_detail;
namespace {

using Clock = std::chrono::steady_clock;

class Lap {
public:
  double next() {
    Clock::time_point now = Clock::now();
    double seconds = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return seconds;
  }

private:
  Clock::time_point last_ = Clock::now();
};

struct StageTimes {
  double hash = 0, cache = 0, read = 0, diff = 0, build = 0;
  nlohmann::json json() const {
    return {{"hash", hash}, {"cache", cache}, {"read", read}, {"diff", diff}, {"build", build}};
  }
};

struct PairOutcome {
  nlohmann::json result;  // what the pair's content gives: status and everything after it
  std::vector<uint8_t> image;
  std::string page;  // the review page, for pairs with changes
  bool cached = false;
  StageTimes times;
  std::string note;  // a cache problem that did not stop the pair
};

std::string displayName(const std::optional<std::string> &name, const std::optional<AddressRange> &base,
                        const std::optional<AddressRange> &patched) {
  if (name) return *name;
  if (patched) return fmt::format("(unnamed at patched 0x{:x})", patched->rva);
  if (base) return fmt::format("(unnamed at base 0x{:x})", base->rva);
  return "(unnamed)";
}

nlohmann::json identityJson(const Image &base) {
  nlohmann::json id = {{"sha256", hexEncode(base.identity.sha256)}};
  if (containerTarget(base.format).identifiedByBuildId()) {
    id["build_id"] = base.identity.buildId.empty() ? nlohmann::json(nullptr) : nlohmann::json(hexEncode(base.identity.buildId));
  } else {
    id["time_date_stamp"] = base.identity.timeDateStamp;
    id["check_sum"] = base.identity.checkSum;
    id["size_of_image"] = base.identity.sizeOfImage;
  }
  return id;
}

// Everything the summary says about a diffed pair, before the build.
nlohmann::json diffResult(const Image &base, const Image &patched, const Diff &diff) {
  nlohmann::json changed = nlohmann::json::array(), added = nlohmann::json::array(), removed = nlohmann::json::array(),
                 data = nlohmann::json::array(), changes = nlohmann::json::array(), restart = nlohmann::json::array();
  for (const Change &c : diff.changes) {
    std::string name = displayName(c.name, c.base, c.patched);
    switch (c.kind) {
    case ChangeKind::Changed: changed.push_back(name); break;
    case ChangeKind::Added: added.push_back(name); break;
    case ChangeKind::Removed: removed.push_back(name); break;
    case ChangeKind::Data: data.push_back(name); break;
    case ChangeKind::LineOnly: break;  // left out of the patch; listed in `changes`
    }
    changes.push_back({{"kind", changeKindName(c.kind)},
                       {"name", name},
                       {"rule", c.rule},
                       {"verdict", verdictName(c.verdict)},
                       {"reason", c.reason}});
    if (c.verdict == Verdict::NeedsRestart)
      restart.push_back({{"stage", "diff"}, {"rule", c.rule}, {"name", name}, {"reason", c.reason}});
  }
  return {{"format", formatName(base.format)},
          {"machine", machineName(base.machine)},
          {"baseline", identityJson(base)},
          {"patched_sha256", hexEncode(patched.identity.sha256)},
          {"diff",
           {{"matched", diff.summary.matched},
            {"changed", diff.summary.changed},
            {"added", diff.summary.added},
            {"removed", diff.summary.removed},
            {"data", data.size()},
            {"needs_restart", diff.summary.needsRestart}}},
          {"changed_functions", changed},
          {"added_functions", added},
          {"removed_functions", removed},
          {"data_changes", data},
          {"changes", changes},
          {"restart", restart}};
}

struct Context {
  const ReleaseRunOptions &options;
  unsigned diffThreads = 1;
};

bool isStringArray(const nlohmann::json &j) {
  return j.is_array() && std::all_of(j.begin(), j.end(), [](const nlohmann::json &e) { return e.is_string(); });
}
bool hasStrings(const nlohmann::json &j, std::initializer_list<const char *> keys) {
  return j.is_object() && std::all_of(keys.begin(), keys.end(), [&](const char *k) {
           auto it = j.find(k);
           return it != j.end() && it->is_string();
         });
}
bool hasCounts(const nlohmann::json &j, std::initializer_list<const char *> keys) {
  return j.is_object() && std::all_of(keys.begin(), keys.end(), [&](const char *k) {
           auto it = j.find(k);
           return it != j.end() && it->is_number_unsigned();
         });
}
bool stringOrNull(const nlohmann::json &j, const char *key) {
  auto it = j.find(key);
  return it != j.end() && (it->is_string() || it->is_null());
}

// ---- the cache: DIR/xx/KEY.json (+ DIR/xx/KEY.hfpatch) ----

std::string cachePath(const std::string &dir, const std::string &key, const char *suffix) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, key.substr(0, 2), key + suffix);
  return std::string(p);
}

std::optional<PairOutcome> cacheLoad(const std::string &dir, const std::string &key) {
  std::string jsonPath = cachePath(dir, key, ".json");
  if (!llvm::sys::fs::exists(jsonPath)) return std::nullopt;
  llvm::Expected<nlohmann::json> doc = readJsonFile(jsonPath);
  if (!doc) {
    llvm::consumeError(doc.takeError());
    return std::nullopt;
  }
  try {
    if (doc->value("schema", "") != kCacheSchema || doc->value("key", "") != key) return std::nullopt;
    // The debug files the build read must still be what they were.
    for (const nlohmann::json &input : (*doc)["debug_inputs"]) {
      llvm::Expected<Digest> d = sha256File(input["path"].get<std::string>());
      if (!d) {
        llvm::consumeError(d.takeError());
        return std::nullopt;
      }
      if (hexEncode(*d) != input["sha256"].get<std::string>()) return std::nullopt;
    }
    PairOutcome out;
    out.result = (*doc)["result"];
    if (!validResult(out.result) || out.result["status"] == "failed") return std::nullopt;
    if (out.result.value("status", "") == "hotpatched") {
      llvm::Expected<std::vector<uint8_t>> image = lift(readFileBytes(cachePath(dir, key, ".hfpatch")));
      if (!image) {
        llvm::consumeError(image.takeError());
        return std::nullopt;
      }
      if (hexEncode(sha256(*image)) != out.result["image"]["sha256"].get<std::string>()) return std::nullopt;
      out.image = std::move(*image);
    }
    if (!out.result.value("changes", nlohmann::json::array()).empty()) {  // a pair with changes has its page
      llvm::Expected<std::vector<uint8_t>> page = lift(readFileBytes(cachePath(dir, key, ".html")));
      if (!page) {
        llvm::consumeError(page.takeError());
        return std::nullopt;
      }
      out.page.assign(page->begin(), page->end());
    }
    out.cached = true;
    return out;
  } catch (const nlohmann::json::exception &) {
    return std::nullopt;
  }
}

// Cache files are written through a temporary file and a rename, like every output, but without
// fsync: a cache entry lost or torn by a crash is only a miss (its JSON or its image hash no
// longer checks out), and syncing two files per pair would cost more than most pairs' diff.
llvm::Error writeCacheFile(const std::string &path, llvm::ArrayRef<uint8_t> bytes) {
  return lift(writeAtomically(AT_FDCWD, path, bytes, {.mode = 0666, .durable = false, .replace = true}, path));
}

llvm::Error cacheStore(const std::string &dir, const std::string &key, const std::string &pairName,
                       const PairOutcome &outcome, const nlohmann::json &debugInputs) {
  llvm::SmallString<256> sub(dir);
  llvm::sys::path::append(sub, key.substr(0, 2));
  if (std::error_code ec = llvm::sys::fs::create_directories(sub))
    return formatError("{}: cannot create: {}", std::string(sub), ec.message());
  if (!outcome.image.empty())
    if (llvm::Error e = writeCacheFile(cachePath(dir, key, ".hfpatch"), outcome.image)) return e;
  if (!outcome.page.empty())
    if (llvm::Error e = writeCacheFile(cachePath(dir, key, ".html"),
                                       llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(outcome.page.data()),
                                                               outcome.page.size())))
      return e;
  nlohmann::json doc = {{"schema", kCacheSchema},
                        {"key", key},
                        {"pair", pairName},
                        {"debug_inputs", debugInputs},
                        {"result", outcome.result}};
  std::string text = jsonText(doc);
  return writeCacheFile(cachePath(dir, key, ".json"),
                        llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()));
}

// ---- one pair ----

PairOutcome failed(PairOutcome out, std::string message) {
  out.result = {{"status", "failed"}, {"error", std::move(message)}};
  out.image.clear();
  return out;
}

PairOutcome processPair(const ReleasePair &pair, const Context &ctx) {
  PairOutcome out;
  if (!pair.problem.empty()) return failed(std::move(out), pair.problem);
  Lap lap;

  // Hash every input: identical files need nothing more, the rest get their cache key.
  llvm::Expected<Digest> baseSha = sha256File(pair.base);
  if (!baseSha) return failed(std::move(out), errorText(baseSha.takeError()));
  llvm::Expected<Digest> patchedSha = sha256File(pair.patched);
  if (!patchedSha) return failed(std::move(out), errorText(patchedSha.takeError()));
  Sha256 key;
  key.field(kCacheSchema);
  key.field(ctx.options.toolIdentity);
  key.field(ctx.options.carryLineChanges ? "carry-line-changes" : "");
  key.field(pair.name);
  key.field(llvm::sys::path::filename(pair.base));
  key.field(llvm::sys::path::filename(pair.patched));
  key.field(std::to_string(pair.sequence));
  key.field(hexEncode(*baseSha));
  key.field(hexEncode(*patchedSha));
  for (const std::string *pdb : {&pair.pdbBase, &pair.pdbPatched}) {
    if (pdb->empty()) {
      key.field("");
      continue;
    }
    llvm::Expected<Digest> d = sha256File(*pdb);
    if (!d) return failed(std::move(out), errorText(d.takeError()));
    key.field(hexEncode(*d));
  }
  key.field(pair.debugDir);
  std::string cacheKey = hexEncode(key.finish());
  out.times.hash = lap.next();
  if (*baseSha == *patchedSha) {
    out.result = {{"status", "unchanged"}, {"identical", true}};
    return out;
  }

  const std::string &cacheDir = ctx.options.cacheDir;
  if (!cacheDir.empty()) {
    std::optional<PairOutcome> hit = cacheLoad(cacheDir, cacheKey);
    double spent = lap.next();
    if (hit) {
      hit->times = out.times;
      hit->times.cache = spent;
      return std::move(*hit);
    }
    out.times.cache = spent;
  }

  ImageReadOptions baseRead, patchedRead;
  baseRead.pdbPath = pair.pdbBase;
  patchedRead.pdbPath = pair.pdbPatched;
  baseRead.debugDir = patchedRead.debugDir = pair.debugDir;
  llvm::Expected<Image> base = readImage(pair.base, baseRead);
  if (!base) return failed(std::move(out), errorText(base.takeError()));
  llvm::Expected<Image> patched = readImage(pair.patched, patchedRead);
  if (!patched) return failed(std::move(out), errorText(patched.takeError()));
  out.times.read = lap.next();

  DiffOptions diffOptions;
  diffOptions.threads = ctx.diffThreads;
  diffOptions.carryLineChanges = ctx.options.carryLineChanges;
  llvm::Expected<Diff> diff = diffImages(*base, *patched, diffOptions);
  out.times.diff = lap.next();
  if (!diff) return failed(std::move(out), errorText(diff.takeError()));  // names both files

  out.result = diffResult(*base, *patched, *diff);
  if (!diff->changes.empty()) {
    DiffPageOptions pageOptions{pair.name, "../summary.html"};
    llvm::Expected<std::string> page = diffPageHtml(*diff, *base, *patched, pageOptions);
    if (!page) return failed(std::move(out), errorText(page.takeError()));
    out.page = std::move(*page);
    out.times.diff += lap.next();
  }
  if (diff->changes.empty()) {
    out.result["status"] = "unchanged";
  } else if (diff->needsRestart()) {
    out.result["status"] = "restart-required";
  } else {
    BuildOptions buildOptions;
    buildOptions.sequence = pair.sequence;
    llvm::Expected<PatchImage> image = buildPatchImage(*base, *patched, *diff, buildOptions);
    out.times.build = lap.next();
    if (!image) {
      llvm::Error error = image.takeError();
      std::optional<BuildRefusal> refusal = takeRefusal(error);
      if (!refusal) return failed(std::move(out), errorText(std::move(error)));
      out.result["status"] = "restart-required";
      for (nlohmann::json why : toJson(refusal->refusals)) {
        why["stage"] = "build";
        out.result["restart"].push_back(std::move(why));
      }
    } else {
      out.result["status"] = "hotpatched";
      out.image = std::move(image->file);
      out.result["image"] = {{"sha256", hexEncode(sha256(out.image))},
                             {"size", out.image.size()},
                             {"code", image->sizes.code},
                             {"data", image->sizes.data},
                             {"metadata", image->sizes.metadata},
                             {"functions", image->functions.size()},
                             {"redirects", image->redirects.size()},
                             {"fixups", image->fixups.size()}};
    }
  }

  if (!cacheDir.empty()) {
    nlohmann::json debugInputs = nlohmann::json::array();
    for (const Image *image : {&*base, &*patched}) {
      if (image->debugInfoPath.empty()) continue;
      llvm::Expected<Digest> d = sha256File(image->debugInfoPath);
      if (!d) {
        llvm::consumeError(d.takeError());
        continue;
      }
      debugInputs.push_back({{"path", image->debugInfoPath}, {"sha256", hexEncode(*d)}});
    }
    if (llvm::Error e = cacheStore(cacheDir, cacheKey, pair.name, out, debugInputs))
      out.note = fmt::format("{}: not cached: {}", pair.name, errorText(std::move(e)));
    out.times.cache += lap.next();
  }
  return out;
}

// A pair that failed or needs a restart: its progress line is kept above a progress bar.
bool notableOutcome(const PairOutcome &o) {
  std::string status = o.result.value("status", "");
  return status != "unchanged" && status != "hotpatched";
}

std::string progressLine(const std::string &name, const PairOutcome &o) {
  const nlohmann::json &r = o.result;
  std::string status = r.value("status", "");
  std::string text;
  if (status == "failed") {
    text = "FAILED: " + r.value("error", "");
  } else if (status == "unchanged") {
    text = r.value("identical", false) ? "identical files" : "no change";
  } else {
    const nlohmann::json &d = r.at("diff");
    text = fmt::format("{} changed", d.value("changed", 0));
    if (d.value("added", 0)) text += fmt::format(", {} added", d.value("added", 0));
    if (d.value("data", 0)) text += fmt::format(", {} data", d.value("data", 0));
    if (status == "hotpatched") {
      text += ", hotpatchable";
    } else {
      std::string why;
      for (const nlohmann::json &reason : r.at("restart")) why += (why.empty() ? "" : ", ") + restartLabel(reason);
      text += ", NEEDS RESTART (" + why + ")";
    }
  }
  if (o.cached) text += " (cached)";
  return name + ": " + text;
}

}  // namespace

namespace release_detail {

bool validResult(const nlohmann::json &r) {
  if (!hasStrings(r, {"status"})) return false;
  std::string status = r["status"].get<std::string>();
  if (status == "failed") return hasStrings(r, {"error"});
  if (status == "unchanged" && !r.contains("diff")) return true;
  if (status != "unchanged" && status != "restart-required" && status != "hotpatched") return false;
  if (!hasStrings(r, {"format", "machine", "patched_sha256"}) || !hasStrings(r["baseline"], {"sha256"}) ||
      !hasCounts(r["diff"], {"matched", "changed", "added", "removed", "data", "needs_restart"}))
    return false;
  for (const char *k : {"changed_functions", "added_functions", "removed_functions", "data_changes"})
    if (!r.contains(k) || !isStringArray(r[k])) return false;
  if (!r.contains("changes") || !r["changes"].is_array() || !r.contains("restart") || !r["restart"].is_array())
    return false;
  for (const nlohmann::json &c : r["changes"])
    if (!hasStrings(c, {"kind", "name", "rule", "verdict", "reason"})) return false;
  for (const nlohmann::json &c : r["restart"])
    if (!hasStrings(c, {"stage", "reason"}) || !stringOrNull(c, "rule") || !stringOrNull(c, "name")) return false;
  if (status == "hotpatched")
    return hasStrings(r["image"], {"sha256"}) &&
           hasCounts(r["image"], {"size", "code", "data", "metadata", "functions", "redirects", "fixups"});
  return true;
}

}  // namespace release_detail

llvm::Expected<ReleaseShard> runReleaseShard(const ReleasePlan &plan, const ReleaseRunOptions &options) {
  Clock::time_point start = Clock::now();
  if (options.shard.count == 0 || options.shard.index == 0 || options.shard.index > options.shard.count)
    return formatError("shard {}/{} is not a valid slice", options.shard.index, options.shard.count);
  if (!options.cacheDir.empty())
    if (std::error_code ec = llvm::sys::fs::create_directories(options.cacheDir))
      return formatError("{}: cannot create the cache directory: {}", options.cacheDir, ec.message());

  std::vector<size_t> mine;  // plan indices of this shard's pairs
  for (size_t i = 0; i < plan.pairs.size(); ++i)
    if (shardOfPair(plan.pairs[i].name, options.shard.count) == options.shard.index) mine.push_back(i);

  // Largest baselines first, so that one big pair does not start last and keep the others waiting.
  std::vector<std::pair<uint64_t, size_t>> order;
  for (size_t i : mine) {
    uint64_t size = 0;
    if (llvm::sys::fs::file_size(plan.pairs[i].base, size)) size = 0;
    order.push_back({size, i});
  }
  std::sort(order.begin(), order.end(),
            [](const auto &a, const auto &b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });

  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsigned jobs = std::min(options.jobs ? options.jobs : cores, 256u);
  unsigned workers = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(jobs, mine.size())));
  Context ctx{options, std::max(1u, jobs / workers)};

  std::vector<PairOutcome> outcomes(plan.pairs.size());
  std::atomic<size_t> next{0};
  std::mutex progressMutex;
  size_t done = 0;
  auto work = [&] {
    for (;;) {
      size_t k = next.fetch_add(1);
      if (k >= order.size()) return;
      size_t i = order[k].second;
      outcomes[i] = processPair(plan.pairs[i], ctx);
      std::lock_guard<std::mutex> lock(progressMutex);
      ++done;
      if (options.progress)
        options.progress({done, mine.size(), plan.pairs[i].name, progressLine(plan.pairs[i].name, outcomes[i]),
                          notableOutcome(outcomes[i])});
    }
  };
  std::vector<std::thread> pool;
  for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread &t : pool) t.join();

  ReleaseShard shard;
  nlohmann::json results = nlohmann::json::array(), pairTimes = nlohmann::json::object(),
                 notes = nlohmann::json::array();
  StageTimes total;
  for (size_t i : mine) {
    const ReleasePair &p = plan.pairs[i];
    PairOutcome &o = outcomes[i];
    nlohmann::json record = {{"name", p.name},     {"entry", p.entry},   {"base", p.base},
                             {"patched", p.patched}, {"sequence", p.sequence}, {"cached", o.cached}};
    for (auto it = o.result.begin(); it != o.result.end(); ++it) record[it.key()] = it.value();
    results.push_back(std::move(record));
    if (!o.image.empty()) shard.images[p.entry] = std::move(o.image);
    results.back()["page"] = o.page.empty() ? nlohmann::json(nullptr) : nlohmann::json(releasePagePath(p.entry));
    if (!o.page.empty()) shard.pages[p.entry] = std::move(o.page);
    pairTimes[p.name] = o.times.json();
    total.hash += o.times.hash;
    total.cache += o.times.cache;
    total.read += o.times.read;
    total.diff += o.times.diff;
    total.build += o.times.build;
    if (!o.note.empty()) notes.push_back(o.note);
  }
  nlohmann::json ignored = nlohmann::json::array();
  for (const ReleaseIgnored &i : plan.ignored) ignored.push_back({{"path", i.path}, {"reason", i.reason}});
  shard.record = {{"schema", kShardSchema},
                  {"plan", planDigest(plan)},
                  {"release", plan.release},
                  {"baseline", plan.baseline.empty() ? nlohmann::json(nullptr) : nlohmann::json(plan.baseline)},
                  {"sequence", plan.sequence},
                  {"grouping", releaseGroupingName(plan.grouping)},
                  {"shard", {{"index", options.shard.index}, {"count", options.shard.count}}},
                  {"plan_pairs", planPairsJson(plan)},
                  {"ignored", ignored},
                  {"results", results},
                  {"notes", notes},
                  {"times",
                   {{"wall", std::chrono::duration<double>(Clock::now() - start).count()},
                    {"jobs", jobs},
                    {"stages", total.json()},
                    {"pairs", pairTimes}}}};
  // Through text and back: a merge in this process sees exactly what one from files would.
  shard.record = nlohmann::json::parse(shard.record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return shard;
}

llvm::Error writeReleaseShard(const ReleaseShard &shard, const std::string &outDir) {
  llvm::SmallString<256> images(outDir);
  llvm::sys::path::append(images, "images");
  if (std::error_code ec = llvm::sys::fs::create_directories(images))
    return formatError("{}: cannot create: {}", std::string(images), ec.message());
  for (const auto &[entry, bytes] : shard.images) {
    llvm::SmallString<256> path(images);
    llvm::sys::path::append(path, entry);
    if (llvm::Error e = writeFileAtomically(std::string(path), bytes, 0666, true)) return e;
  }
  if (llvm::Error e = writeReleasePages(shard.pages, outDir, false)) return e;  // shards may share OUTDIR
  const nlohmann::json &s = shard.record["shard"];
  llvm::SmallString<256> record(outDir);
  llvm::sys::path::append(record, fmt::format("shard-{}-of-{}.json", s["index"].get<unsigned>(), s["count"].get<unsigned>()));
  return writeTextAtomically(std::string(record), jsonText(shard.record));
}

llvm::Expected<std::vector<ReleaseShard>> readReleaseShards(const std::vector<std::string> &dirs) {
  static const std::regex recordName(R"(shard-([0-9]+)-of-([0-9]+)\.json)");
  std::vector<ReleaseShard> shards;
  for (const std::string &dir : dirs) {
    std::vector<std::string> files;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = llvm::sys::path::filename(it->path()).str();
      if (std::regex_match(name, recordName)) files.push_back(it->path());
    }
    if (ec) return formatError("{}: cannot list: {}", dir, ec.message());
    if (files.empty()) return formatError("{}: holds no shard record (shard-I-of-N.json)", dir);
    std::sort(files.begin(), files.end());
    for (const std::string &file : files) {
      llvm::Expected<nlohmann::json> doc = readJsonFile(file);
      if (!doc) return doc.takeError();
      ReleaseShard shard;
      shard.record = std::move(*doc);
      try {
        if (shard.record.value("schema", "") != kShardSchema)
          return formatError("{}: not a shard record (schema \"{}\" expected)", file, kShardSchema);
        for (const nlohmann::json &r : shard.record.at("results")) {
          if (!validResult(r)) return formatError("{}: a result is malformed", file);
          std::string name = r.at("name").get<std::string>(), entry = r.at("entry").get<std::string>();
          if (entry != releaseEntryName(name))
            return formatError("{}: pair {} has entry name {}, expected {}", file, name, entry, releaseEntryName(name));
          if (r.value("page", nlohmann::json()).is_string()) {
            llvm::SmallString<256> page(dir);
            llvm::sys::path::append(page, releasePagePath(entry));
            llvm::Expected<std::vector<uint8_t>> html = lift(readFileBytes(std::string(page)));
            if (!html) return html.takeError();
            shard.pages[entry].assign(html->begin(), html->end());
          }
          if (r.at("status").get<std::string>() != "hotpatched") continue;
          llvm::SmallString<256> path(dir);
          llvm::sys::path::append(path, "images", entry);
          llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(std::string(path)));
          if (!bytes) return bytes.takeError();
          if (hexEncode(sha256(*bytes)) != r.at("image").at("sha256").get<std::string>())
            return formatError("{}: SHA-256 differs from the one {} records for pair {}", std::string(path), file, name);
          shard.images[entry] = std::move(*bytes);
        }
      } catch (const nlohmann::json::exception &e) {
        return formatError("{}: malformed shard record: {}", file, e.what());
      }
      shards.push_back(std::move(shard));
    }
  }
  return shards;
}

}  // namespace hotforge
