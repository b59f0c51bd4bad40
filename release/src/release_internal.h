// Helpers shared by the release sources.
#pragma once

#include "hotforge/image.h"  // sha256, hexEncode

#include "hotforge/release.h"
#include "hotforge/core/json_text.h"

#include <llvm/ADT/StringRef.h>
#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>

namespace hotforge::release_detail {

inline constexpr const char *kManifestSchema = "hotforge.release-manifest/1";
inline constexpr const char *kShardSchema = "hotforge.release-shard/1";
inline constexpr const char *kSummarySchema = "hotforge.release/1";
inline constexpr const char *kCacheSchema = "hotforge.release-cache/1";
inline constexpr const char *kTimesSchema = "hotforge.release-times/1";

using Digest = std::array<uint8_t, 32>;

class Sha256 {
public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256 &) = delete;
  Sha256 &operator=(const Sha256 &) = delete;
  void update(llvm::ArrayRef<uint8_t> bytes);
  void update(llvm::StringRef text);
  // A length-prefixed field, so that concatenations stay unambiguous.
  void field(llvm::StringRef text);
  Digest finish();

private:
  void *context_;
};

// SHA-256 of a file's bytes, read through a mapping.
llvm::Expected<Digest> sha256File(const std::string &path);

llvm::Expected<nlohmann::json> readJsonFile(const std::string &path);
llvm::Error writeTextAtomically(const std::string &path, const std::string &text);

// The manifest document (JSON, or TOML converted to the same shape) to a plan.
llvm::Expected<ReleasePlan> planFromDocument(const nlohmann::json &doc, const std::string &manifestPath);
// TOML text to JSON (the manifest only uses tables, arrays, strings, integers and booleans).
llvm::Expected<nlohmann::json> tomlToJson(llvm::StringRef text, const std::string &path);

// A restart reason of a pair's result as the text reports name it: `RULE NAME` (NAME empty when
// null); "build refused" for a build refusal recorded without a rule (by releases before rule ids).
std::string restartLabel(const nlohmann::json &reason);

// Whether a pair's result (from a cache file or a shard record) has every field the merge and the
// summary read, with the right types.
bool validResult(const nlohmann::json &result);

// Content of the plan that every shard must agree on (release, ids, pair names and entries).
std::string planDigest(const ReleasePlan &plan);
nlohmann::json planPairsJson(const ReleasePlan &plan);

}  // namespace hotforge::release_detail
