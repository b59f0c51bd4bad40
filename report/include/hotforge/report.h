// Reports for people and CI servers: an HTML review page of one diff (what changed, every changed
// function's base and patched instructions side by side with address operands shown by name,
// data changes as hex), the release's summary page linking one such page per pair, and JUnit XML
// for a release. Every page is one self-contained file: inline CSS, no script, nothing fetched.
#pragma once

#include "hotforge/diff.h"

#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <string_view>

namespace hotforge {

// Text for HTML or XML content and attribute values: markup characters as entities, and bytes
// that are not printable UTF-8 (names from binaries hold any bytes) as visible \xNN.
std::string markupEscape(std::string_view text);

struct DiffPageOptions {
  std::string title;        // default: "BASE -> PATCHED"
  std::string summaryLink;  // when set, a link back to this page (a release's summary.html)
};

// The review page of a diff. Deterministic: the same inputs give the same bytes.
llvm::Expected<std::string> diffPageHtml(const Diff &diff, const Image &base, const Image &patched,
                                         const DiffPageOptions &options = {});

// Where the release writes the page of a pair, relative to its output directory.
std::string releasePagePath(const std::string &entry);

// A release's summary.html from its summary.json document (schema hotforge.release/1), linking
// releasePagePath(entry) of the pairs in `pagedEntries`.
std::string releaseSummaryHtml(const nlohmann::json &summary, const std::set<std::string> &pagedEntries);

// JUnit XML of a release summary: one test suite, one test case per pair; a failed pair is an
// <error>, one that needs a restart a <failure> listing the reasons.
std::string releaseJunitXml(const nlohmann::json &summary);

}  // namespace hotforge
