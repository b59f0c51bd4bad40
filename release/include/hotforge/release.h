// Release batches: every baseline/patched pair of a release is diffed and built in parallel, the
// hotpatch images go into signed delivery units (one per machine by default), and a summary says
// what is hotpatched, what needs a restart and why, and what failed. docs/release.md documents the
// manifest, the outputs, sharding and the cache.
//
// A run is always "shards, then a merge": runReleaseShard() works through one deterministic slice
// of the pairs (the whole release as shard 1/1), mergeReleaseShards() packs the units and writes
// the summary from the full, sorted list of results. A single run and N shards + merge therefore
// give byte-identical units and summary.json.
#pragma once

#include "hotforge/unit.h"

#include <llvm/ADT/ArrayRef.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hotforge {

// Which pairs share a unit: one per machine (<release>-x64.hfu, <release>-arm64.hfu), one per
// format and machine (<release>-elf-x64.hfu, ...), or all in one (<release>.hfu).
enum class ReleaseGrouping { Machine, FormatMachine, Single };
std::string_view releaseGroupingName(ReleaseGrouping grouping);

struct ReleasePair {
  std::string name;    // relative path with '/' separators; unique; the sort and shard key
  std::string entry;   // entry name in the unit: releaseEntryName(name)
  std::string base, patched;        // files to read
  std::string pdbBase, pdbPatched;  // PE: explicit PDBs (default: found from the CodeView record)
  std::string debugDir;             // ELF: separate debug files, for both builds
  uint32_t sequence = 1;
  std::string problem;  // set: the pair fails with this message and is never read
};

// A file of a directory pairing that is not a pair (only on one side, or not an image).
struct ReleaseIgnored {
  std::string path, reason;
};

struct ReleasePlan {
  std::string release;   // release id: [A-Za-z0-9._+-], names the units
  std::string baseline;  // id of the baseline release; may be empty
  uint32_t sequence = 1;
  ReleaseGrouping grouping = ReleaseGrouping::Machine;
  std::vector<ReleasePair> pairs;  // sorted by name
  std::vector<ReleaseIgnored> ignored;
};

// A JSON manifest, or TOML when the file name ends in ".toml". Relative paths in it are taken
// relative to the manifest's directory.
llvm::Expected<ReleasePlan> loadReleaseManifest(const std::string &path);

struct ReleaseDirectories {
  std::string baselineDir, patchedDir, debugDir;
  std::vector<std::string> exclude;  // globs on relative paths (* crosses /); "*.debug", "*.pdb" always
};
// Pairs the files of two trees by relative path. `settings` gives release, baseline, sequence and
// grouping; its pairs and ignored lists are replaced.
llvm::Expected<ReleasePlan> planFromDirectories(ReleasePlan settings, const ReleaseDirectories &dirs);

// Entry name of a pair: components joined by "__", bytes outside [A-Za-z0-9.+-_] and every '_'
// that touches another '_' or a component's edge as %XX, then ".hfpatch". Injective.
std::string releaseEntryName(llvm::StringRef pairName);
llvm::Error checkReleaseId(llvm::StringRef id);

// What the cache keys include besides the inputs: "hotforge VERSION" and the SHA-256 of the running
// executable, so that any rebuild of Hotforge starts from an empty cache.
std::string releaseToolIdentity(llvm::StringRef version);

struct ShardSpec {
  unsigned index = 1, count = 1;  // 1 <= index <= count
};
llvm::Expected<ShardSpec> parseShardSpec(llvm::StringRef text);  // "I/N"
// The shard (1-based) a pair belongs to: the first 8 bytes of SHA-256(name), big-endian, mod
// count, plus 1. Depends on the name only, so a pair stays on its shard when others come and go.
unsigned shardOfPair(llvm::StringRef name, unsigned count);

struct ReleaseProgress {
  size_t done = 0, total = 0;
  std::string name;
  std::string line;  // "lib/foo.so: 3 changed, hotpatchable"
  bool notable = false;  // the pair failed or needs a restart
};

struct ReleaseRunOptions {
  unsigned jobs = 0;  // pairs in flight; 0: one per core
  ShardSpec shard;
  std::string cacheDir;      // empty: no cache
  std::string toolIdentity;  // part of every cache key (version and executable hash)
  bool carryLineChanges = false;  // DiffOptions::carryLineChanges
  std::function<void(const ReleaseProgress &)> progress;  // called from workers, serialised
};

// What a shard produced: its record (schema hotforge.release-shard/1) and its images by entry name.
struct ReleaseShard {
  nlohmann::json record;
  std::map<std::string, std::vector<uint8_t>> images;
  std::map<std::string, std::string> pages;  // review page (hotforge/report.h) by entry name, for pairs with changes
};

// Fails only when nothing can run (a cache directory that cannot be made); a failing pair is a
// result, not an error.
llvm::Expected<ReleaseShard> runReleaseShard(const ReleasePlan &plan, const ReleaseRunOptions &options);
// OUTDIR/shard-I-of-N.json, OUTDIR/images/ENTRY and OUTDIR/pages/ENTRY.html; shards may share an OUTDIR.
llvm::Error writeReleaseShard(const ReleaseShard &shard, const std::string &outDir);
// Every shard-*-of-*.json in each directory, with its images (hashes checked).
llvm::Expected<std::vector<ReleaseShard>> readReleaseShards(const std::vector<std::string> &dirs);

struct ReleasePackOptions {
  Signer *signer = nullptr;  // required for a merge
  int level = kUnitDefaultLevel;
  std::optional<int64_t> created;  // SOURCE_DATE_EPOCH
  unsigned threads = 0;            // zstd workers
};

struct ReleaseUnit {
  std::string file;
  std::vector<uint8_t> bytes;
};

struct ReleaseResult {
  nlohmann::json summary;  // hotforge.release/1: deterministic, OUTDIR/summary.json
  nlohmann::json times;    // wall-clock figures: OUTDIR/times.json, never in summary.json
  std::vector<ReleaseUnit> units;
  std::vector<std::string> staleUnits;  // unit names this release could have made and did not
  std::map<std::string, std::string> pages;  // review page by entry name: OUTDIR/pages/ENTRY.html
  int exitCode = 0;  // 0 all ok, 3 some pair needs a restart, 1 some pair failed (1 wins)
};

// Checks that the shards are all the slices of one plan, then packs and summarises.
llvm::Expected<ReleaseResult> mergeReleaseShards(const std::vector<ReleaseShard> &shards,
                                                 const ReleasePackOptions &options);
// The summary of one shard alone (no units): what `release --shard` prints.
ReleaseResult summarizeReleaseShard(const ReleaseShard &shard);
// Units, summary.json, times.json, the review pages and summary.html linking them, each written
// atomically; removes stale units and pages.
llvm::Error writeReleaseOutput(const ReleaseResult &result, const std::string &outDir);
// OUTDIR/pages/ENTRY.html for each page; with `removeOthers`, removes the pages of other entries
// (left from earlier runs).
llvm::Error writeReleasePages(const std::map<std::string, std::string> &pages, const std::string &outDir,
                              bool removeOthers);

std::string releaseSummaryText(const ReleaseResult &result);
nlohmann::json releaseSummaryJson(const ReleaseResult &result);  // summary + "times"

}  // namespace hotforge
