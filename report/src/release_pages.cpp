// A release's summary page and its JUnit XML, both from summary.json (docs/release.md).
#include "markup.h"

#include "hotforge/report.h"

#include <fmt/core.h>

#include <algorithm>

namespace hotforge {
using namespace report_detail;
using json = nlohmann::json;
namespace {

std::string text(const json &value) { return value.is_string() ? value.get<std::string>() : std::string(); }

std::string names(const json &list) {
  std::string out;
  for (const json &n : list) out += (out.empty() ? "" : ", ") + text(n);
  return out;
}

// "HF210 g_limit: reason", or "build refused: reason".
std::string restartLine(const json &why) {
  std::string what = why.at("rule").is_string() ? text(why.at("rule")) + (why.at("name").is_string() ? " " + text(why.at("name")) : "")
                                                : std::string("build refused");
  return what + ": " + text(why.at("reason"));
}

std::string statusText(const json &pair) {
  std::string status = text(pair.at("status"));
  if (status == "failed") return "failed: " + text(pair.at("error"));
  if (!pair.contains("diff")) return "identical files";
  const json &d = pair.at("diff");
  return fmt::format("{} changed, {} added, {} removed, {} data", d.at("changed").get<uint64_t>(),
                     d.at("added").get<uint64_t>(), d.at("removed").get<uint64_t>(), d.at("data").get<uint64_t>());
}

}  // namespace

std::string releasePagePath(const std::string &entry) { return "pages/" + entry + ".html"; }

std::string releaseSummaryHtml(const json &summary, const std::set<std::string> &pagedEntries) {
  const json &t = summary.at("totals");
  std::string release = text(summary.at("release"));
  std::string out = pageStart("Hotforge release " + release);
  out += "<h1>Release <code>" + markupEscape(release) + "</code></h1>\n";
  out += fmt::format("<p class=\"paths\">{}sequence {}, grouping {}</p>\n",
                     summary.at("baseline").is_string() ? "baseline " + markupEscape(text(summary.at("baseline"))) + ", " : "",
                     summary.at("sequence").get<uint64_t>(), markupEscape(text(summary.at("grouping"))));
  int exitCode = summary.at("exit_code").get<int>();
  const char *verdict = exitCode == 1 ? "failed" : exitCode == 3 ? "restart-required" : "hotpatched";
  out += fmt::format("<p class=\"verdict\">Result: <span class=\"badge {0}\">{1}</span></p>\n", verdict,
                     exitCode == 1 ? "some pairs failed" : exitCode == 3 ? "some pairs need a restart" : "all hotpatchable");
  out += "<table class=\"counts\"><tr>";
  for (const char *k : {"pairs", "hotpatched", "restart_required", "unchanged", "failed", "changed_functions",
                        "added_functions", "data_changes", "image_bytes", "unit_bytes"}) {
    std::string heading = k;
    std::replace(heading.begin(), heading.end(), '_', ' ');
    out += "<th>" + heading + "</th>";
  }
  out += "</tr><tr>";
  for (const char *k : {"pairs", "hotpatched", "restart_required", "unchanged", "failed", "changed_functions",
                        "added_functions", "data_changes", "image_bytes", "unit_bytes"})
    out += fmt::format("<td class=\"num\">{}</td>", t.at(k).get<uint64_t>());
  out += "</tr></table>\n";

  if (!summary.at("units").empty()) {
    out += "<h2>Units</h2>\n<table><thead><tr><th>file</th><th class=\"num\">images</th><th class=\"num\">bytes</th>"
           "<th>sha256</th></tr></thead><tbody>\n";
    for (const json &u : summary.at("units"))
      out += fmt::format("<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                         "<td><code>{}</code></td></tr>\n",
                         markupEscape(text(u.at("file"))), u.at("entries").size(), u.at("size").get<uint64_t>(),
                         markupEscape(text(u.at("sha256"))));
    out += "</tbody></table>\n";
  }

  out += "<h2>Pairs</h2>\n<table><thead><tr><th>pair</th><th>status</th><th>target</th><th>what changed</th>"
         "<th>details</th></tr></thead><tbody>\n";
  for (const json &pair : summary.at("pairs")) {
    std::string status = text(pair.at("status")), entry = text(pair.at("entry"));
    std::string name = markupEscape(text(pair.at("name")));
    if (pagedEntries.count(entry)) name = "<a href=\"" + hrefEscape(releasePagePath(entry)) + "\">" + name + "</a>";
    std::string target = pair.contains("format") ? text(pair.at("format")) + " " + text(pair.at("machine")) : "";
    std::string details;
    if (status == "failed") details = markupEscape(text(pair.at("error")));
    if (status == "restart-required")
      for (const json &why : pair.at("restart")) details += "<div>" + markupEscape(restartLine(why)) + "</div>";
    if (status == "hotpatched") {
      details = "changed: <code>" + markupEscape(names(pair.at("changed_functions"))) + "</code>";
      if (!pair.at("added_functions").empty())
        details += "; added: <code>" + markupEscape(names(pair.at("added_functions"))) + "</code>";
      if (pair.at("unit").is_string()) details += "; in <code>" + markupEscape(text(pair.at("unit"))) + "</code>";
    }
    out += fmt::format("<tr><td><code>{0}</code></td><td><span class=\"badge {1}\">{1}</span></td><td>{2}</td>"
                       "<td>{3}</td><td class=\"reason\">{4}</td></tr>\n",
                       name, status, markupEscape(target), markupEscape(statusText(pair)), details);
  }
  out += "</tbody></table>\n";
  if (!summary.at("ignored").empty()) {
    out += "<h2>Ignored files</h2>\n<table><tbody>\n";
    for (const json &i : summary.at("ignored"))
      out += "<tr><td><code>" + markupEscape(text(i.at("path"))) + "</code></td><td>" +
             markupEscape(text(i.at("reason"))) + "</td></tr>\n";
    out += "</tbody></table>\n";
  }
  return out + pageEnd();
}

std::string releaseJunitXml(const json &summary) {
  const json &t = summary.at("totals");
  std::string release = markupEscape(text(summary.at("release")));
  uint64_t pairs = t.at("pairs").get<uint64_t>(), failures = t.at("restart_required").get<uint64_t>(),
           errors = t.at("failed").get<uint64_t>();
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += fmt::format("<testsuites name=\"hotforge release {0}\" tests=\"{1}\" failures=\"{2}\" errors=\"{3}\">\n"
                     "  <testsuite name=\"release {0}\" tests=\"{1}\" failures=\"{2}\" errors=\"{3}\" skipped=\"0\">\n",
                     release, pairs, failures, errors);
  for (const json &pair : summary.at("pairs")) {
    std::string status = text(pair.at("status"));
    out += fmt::format("    <testcase classname=\"hotforge.release.{}\" name=\"{}\">\n", release,
                       markupEscape(text(pair.at("name"))));
    if (status == "failed") {
      std::string error = markupEscape(text(pair.at("error")));
      out += fmt::format("      <error type=\"failed\" message=\"{0}\">{0}</error>\n", error);
    } else if (status == "restart-required") {
      std::string reasons, rules;
      for (const json &why : pair.at("restart")) {
        reasons += markupEscape(restartLine(why)) + "\n";
        rules += (rules.empty() ? "" : ", ") + (why.at("rule").is_string() ? text(why.at("rule")) : std::string("build"));
      }
      out += fmt::format("      <failure type=\"restart-required\" message=\"needs a restart ({})\">{}</failure>\n",
                         markupEscape(rules), reasons);
    }
    out += "      <system-out>" + status + ": " + markupEscape(statusText(pair)) + "</system-out>\n    </testcase>\n";
  }
  return out + "  </testsuite>\n</testsuites>\n";
}

}  // namespace hotforge
