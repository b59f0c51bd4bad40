// The review page of one diff: verdict and counts, every change with its rule and reason, each
// changed function's instructions side by side (aligned on equal lines, address operands by
// name), and changed data as hex with the differing bytes marked.
#include "markup.h"

#include "hotforge/arch.h"
#include "hotforge/report.h"

#include <fmt/core.h>

#include <algorithm>
#include <map>

namespace hotforge {
using namespace report_detail;
namespace {

using differ::AddressName;
using differ::InstructionText;

std::string hex(uint64_t value) { return fmt::format("0x{:x}", value); }

// Names for the addresses of one build. Functions without a name are called after the patched
// build's address of their pair, so that the same unnamed function reads the same on both sides.
class Symbolizer {
public:
  Symbolizer(const Image &image, const std::map<size_t, uint64_t> &labelOf, differ::InstructionDecoder &decoder,
             const differ::RelocationIndex &relocations)
      : image_(image), labelOf_(labelOf), decoder_(decoder), relocations_(relocations) {
    for (const Import &i : image.imports)
      imports_.emplace(i.slotRva, i.kind == ImportKind::IatSlot ? "__imp_" + i.name : i.name + "@got");
    for (const DataObject &o : image.dataObjects)
      if (!o.threadLocal && o.range.size) data_.push_back(&o);
  }

  std::optional<AddressName> operator()(uint64_t target) const {
    if (auto slot = imports_.find(target); slot != imports_.end()) return AddressName{slot->second, 0};
    if (std::optional<std::string> stub = stubName(target)) return AddressName{*stub, 0};
    if (const Function *f = image_.functionAt(target)) return AddressName{functionName(*f), target - f->range.rva};
    auto after = std::upper_bound(data_.begin(), data_.end(), target,
                                  [](uint64_t t, const DataObject *o) { return t < o->range.rva; });
    if (after != data_.begin() && (*std::prev(after))->range.contains(target))
      return AddressName{(*std::prev(after))->name, target - (*std::prev(after))->range.rva};
    if (const Section *s = image_.sectionAt(target)) return AddressName{s->name, target - s->rva};  // unnamed constants
    return std::nullopt;
  }

  std::string functionName(const Function &f) const {
    if (f.name) return *f.name;
    auto label = labelOf_.find(size_t(&f - image_.functions.data()));
    return fmt::format("sub_{:x}", label != labelOf_.end() ? label->second : f.range.rva);
  }

private:
  // A PLT stub (.plt, .plt.sec, .plt.got, .iplt) is named after the import slot it jumps through.
  std::optional<std::string> stubName(uint64_t target) const {
    const Section *section = image_.sectionAt(target);
    if (!section || (section->name.rfind(".plt", 0) != 0 && section->name != ".iplt")) return std::nullopt;
    constexpr uint64_t kStubBytes = 16;
    llvm::ArrayRef<uint8_t> bytes =
        image_.bytesAt(target, std::min(kStubBytes, section->rva + section->size - target));
    for (const differ::CodeReference &r : decoder_.decode(bytes, target, relocations_).references)
      if (auto slot = imports_.find(r.target); r.kind == differ::ReferenceKind::Memory && slot != imports_.end())
        return slot->second.substr(0, slot->second.rfind('@')) + "@plt";
    return std::nullopt;
  }

  const Image &image_;
  const std::map<size_t, uint64_t> &labelOf_;
  differ::InstructionDecoder &decoder_;
  const differ::RelocationIndex &relocations_;
  std::map<uint64_t, std::string> imports_;
  std::vector<const DataObject *> data_;  // sorted by rva, as the image keeps them
};

// One row of the side-by-side listing: an instruction on either side, or both.
struct Row {
  const InstructionText *base = nullptr, *patched = nullptr;
  bool same = false;
};

// Longest common subsequence of the texts; above this many cells, lines are paired in order.
constexpr size_t kMaxAlignCells = size_t(16) << 20;

std::vector<Row> align(const std::vector<InstructionText> &b, const std::vector<InstructionText> &p) {
  std::vector<Row> rows;
  size_t n = b.size(), m = p.size();
  if (n * m > kMaxAlignCells) {
    for (size_t i = 0; i < std::max(n, m); ++i) {
      Row r{i < n ? &b[i] : nullptr, i < m ? &p[i] : nullptr};
      r.same = r.base && r.patched && r.base->text == r.patched->text;
      rows.push_back(r);
    }
    return rows;
  }
  std::vector<uint32_t> lcs((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t & { return lcs[i * (m + 1) + j]; };
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;)
      at(i, j) = b[i].text == p[j].text ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
  // Walk the table; a run of removed and added lines between two equal ones is shown paired.
  std::vector<const InstructionText *> removed, added;
  auto flush = [&] {
    for (size_t k = 0; k < std::max(removed.size(), added.size()); ++k)
      rows.push_back({k < removed.size() ? removed[k] : nullptr, k < added.size() ? added[k] : nullptr, false});
    removed.clear();
    added.clear();
  };
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && b[i].text == p[j].text) {
      flush();
      rows.push_back({&b[i++], &p[j++], true});
    } else if (j == m || (i < n && at(i + 1, j) >= at(i, j + 1))) {
      removed.push_back(&b[i++]);
    } else {
      added.push_back(&p[j++]);
    }
  }
  flush();
  return rows;
}

std::string cell(const InstructionText *line, const char *side) {
  if (!line) return fmt::format("<td class=\"off {0}\"></td><td class=\"{0} text\"></td>", side);
  return fmt::format("<td class=\"off {0}\">+{1:x}</td><td class=\"{0} text\" title=\"{2}\">{3}</td>", side,
                     line->offset, line->bytes, markupEscape(line->text));
}

// Equal stretches longer than this show only their edges.
constexpr size_t kContext = 4;

std::string listing(const std::vector<Row> &rows) {
  std::string out = "<table class=\"code\"><colgroup><col class=\"offc\"><col class=\"text\"><col class=\"gapc\">"
                    "<col class=\"offc\"><col class=\"text\"></colgroup>\n"
                    "<thead><tr><th></th><th>base</th><th></th><th></th><th>patched</th></tr></thead><tbody>\n";
  for (size_t r = 0; r < rows.size();) {
    if (rows[r].same) {
      size_t end = r;
      while (end < rows.size() && rows[end].same) ++end;
      size_t keepHead = r == 0 ? 0 : kContext, keepTail = end == rows.size() ? 0 : kContext;
      for (size_t k = r; k < end; ++k) {
        if (end - r > keepHead + keepTail + 1 && k == r + keepHead) {
          out += fmt::format("<tr class=\"skip\"><td colspan=\"5\">{} equal instructions</td></tr>\n",
                             end - r - keepHead - keepTail);
          k = end - keepTail - 1;
          continue;
        }
        out += "<tr>" + cell(rows[k].base, "b") + "<td class=\"gap\"></td>" + cell(rows[k].patched, "p") + "</tr>\n";
      }
      r = end;
      continue;
    }
    const Row &row = rows[r++];
    const char *kind = row.base && row.patched ? "chg" : row.base ? "del" : "ins";
    const char *mark = row.base && row.patched ? "~" : row.base ? "-" : "+";
    out += fmt::format("<tr class=\"{}\">{}<td class=\"gap\">{}</td>{}</tr>\n", kind, cell(row.base, "b"), mark,
                       cell(row.patched, "p"));
  }
  return out + "</tbody></table>\n";
}

// Bytes shown per data change; the rest is counted.
constexpr uint64_t kMaxDataBytes = 4096;

std::string hexBytes(llvm::ArrayRef<uint8_t> mine, llvm::ArrayRef<uint8_t> other, uint64_t from, const char *side) {
  std::string out;
  for (uint64_t k = from; k < from + 16; ++k) {
    if (k > from) out += k % 8 == 0 ? "  " : " ";
    if (k >= mine.size()) {
      out += "  ";
      continue;
    }
    std::string byte = fmt::format("{:02x}", mine[k]);
    out += k < other.size() && other[k] == mine[k] ? byte : fmt::format("<mark class=\"{}\">{}</mark>", side, byte);
  }
  return out;
}

std::string dataTable(const Image &base, const Image &patched, const Change &c) {
  llvm::ArrayRef<uint8_t> b = c.base ? base.bytesAt(c.base->rva, c.base->size) : llvm::ArrayRef<uint8_t>();
  llvm::ArrayRef<uint8_t> p = c.patched ? patched.bytesAt(c.patched->rva, c.patched->size) : llvm::ArrayRef<uint8_t>();
  if (b.empty() && p.empty()) return "<p>No bytes in the files (zero-filled or not loaded).</p>\n";
  uint64_t shown = std::min<uint64_t>(std::max(b.size(), p.size()), kMaxDataBytes);
  std::string out = "<table class=\"hex\"><thead><tr><th>offset</th><th>base</th><th>patched</th></tr></thead><tbody>\n";
  for (uint64_t row = 0; row < shown; row += 16)
    out += fmt::format("<tr><td class=\"off\">+{:04x}</td><td>{}</td><td>{}</td></tr>\n", row,
                       hexBytes(b, p, row, "b"), hexBytes(p, b, row, "p"));
  out += "</tbody></table>\n";
  if (std::max(b.size(), p.size()) > shown)
    out += fmt::format("<p class=\"legend\">{} more bytes not shown.</p>\n", std::max(b.size(), p.size()) - shown);
  return out;
}

std::string rangeText(const std::optional<AddressRange> &range) {
  return range ? fmt::format("{}+{}", hex(range->rva), range->size) : std::string("-");
}

std::string verdictClass(const Diff &diff) {
  return diff.changes.empty() ? "no-change" : diff.needsRestart() ? "needs-restart" : "hotpatchable";
}

}  // namespace

llvm::Expected<std::string> diffPageHtml(const Diff &diff, const Image &base, const Image &patched,
                                         const DiffPageOptions &options) {
  llvm::Expected<std::unique_ptr<differ::InstructionDecoder>> decoder = differ::createInstructionDecoder(base.machine);
  if (!decoder) return decoder.takeError();
  // Unnamed functions are labelled with the patched address of their pair on both sides.
  std::map<size_t, uint64_t> baseLabels, patchedLabels;
  for (const FunctionPair &pair : diff.pairs) baseLabels[pair.base] = patched.functions[pair.patched].range.rva;
  differ::RelocationIndex baseRelocations = differ::relocationIndex(base),
                          patchedRelocations = differ::relocationIndex(patched);
  // The stubs are decoded with a decoder of their own: the listing's is inside a disassembly.
  llvm::Expected<std::unique_ptr<differ::InstructionDecoder>> stubDecoder = differ::createInstructionDecoder(base.machine);
  if (!stubDecoder) return stubDecoder.takeError();
  Symbolizer baseNames(base, baseLabels, **stubDecoder, baseRelocations),
      patchedNames(patched, patchedLabels, **stubDecoder, patchedRelocations);
  auto instructions = [&](const Image &image, const std::optional<AddressRange> &range,
                          const differ::RelocationIndex &relocations, const Symbolizer &names) {
    if (!range) return std::vector<InstructionText>{};
    return (*decoder)->disassembleSymbolic(image.bytesAt(range->rva, range->size), range->rva, relocations,
                                           [&](uint64_t target) { return names(target); });
  };

  std::string title = options.title.empty() ? base.path + " -> " + patched.path : options.title;
  std::string verdict = verdictClass(diff);
  const DiffSummary &s = diff.summary;
  std::string out = pageStart("Hotforge review: " + title);
  if (!options.summaryLink.empty())
    out += "<p><a href=\"" + hrefEscape(options.summaryLink) + "\">&larr; release summary</a></p>\n";
  out += "<h1>" + markupEscape(title) + "</h1>\n";
  out += fmt::format("<p class=\"paths\">base <code>{}</code> ({} {}, sha256 <code>{}</code>)</p>\n",
                     markupEscape(base.path), formatName(base.format), machineName(base.machine),
                     hexEncode(base.identity.sha256));
  out += fmt::format("<p class=\"paths\">patched <code>{}</code> (sha256 <code>{}</code>)</p>\n",
                     markupEscape(patched.path), hexEncode(patched.identity.sha256));
  out += fmt::format("<p class=\"verdict\">Verdict: <span class=\"badge {0}\">{0}</span></p>\n", verdict);
  out += fmt::format("<table class=\"counts\"><tr><th>matched</th><th>changed</th><th>added</th><th>removed</th>"
                     "<th>data</th><th>need a restart</th></tr><tr><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                     "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                     "<td class=\"num\">{}</td></tr></table>\n",
                     s.matched, s.changed, s.added, s.removed,
                     std::count_if(diff.changes.begin(), diff.changes.end(),
                                   [](const Change &c) { return c.kind == ChangeKind::Data; }),
                     s.needsRestart);

  out += fmt::format("<h2>Changes ({})</h2>\n", diff.changes.size());
  if (diff.changes.empty()) out += "<p>The two builds do the same: nothing to patch.</p>\n";
  else
    out += "<table class=\"changes\"><thead><tr><th>kind</th><th>verdict</th><th>rule</th><th>name</th>"
           "<th>reason</th></tr></thead><tbody>\n";
  for (size_t i = 0; i < diff.changes.size(); ++i) {
    const Change &c = diff.changes[i];
    out += fmt::format("<tr><td>{0}</td><td><span class=\"badge {1}\">{1}</span></td><td><code>{2}</code></td>"
                       "<td><a href=\"#change-{3}\"><code>{4}</code></a></td><td class=\"reason\">{5}</td></tr>\n",
                       changeKindName(c.kind), verdictName(c.verdict), markupEscape(c.rule), i,
                       markupEscape(c.name.value_or("(unnamed)")), markupEscape(c.reason));
  }
  if (!diff.changes.empty()) out += "</tbody></table>\n";

  if (!diff.changes.empty())
    out += "<h2>Details</h2>\n<p class=\"legend\">Instructions are aligned on equal lines; address operands are "
           "shown by name, so code that only moved reads the same. <span style=\"background:var(--del)\">removed or "
           "changed in base</span> <span style=\"background:var(--ins)\">added or changed in patched</span>; hover "
           "a line for its bytes.</p>\n";
  for (size_t i = 0; i < diff.changes.size(); ++i) {
    const Change &c = diff.changes[i];
    out += fmt::format("<section class=\"fn\" id=\"change-{}\"><header><h3><code>{}</code></h3><span class=\"where\">"
                       "{} &middot; {} &middot; base {} &rarr; patched {}</span></header>\n",
                       i, markupEscape(c.name.value_or("(unnamed)")), changeKindName(c.kind), markupEscape(c.rule),
                       rangeText(c.base), rangeText(c.patched));
    out += "<p class=\"reason\">" + markupEscape(c.reason) + "</p>\n";
    if (c.kind == ChangeKind::Data)
      out += dataTable(base, patched, c);
    else
      out += listing(align(instructions(base, c.base, baseRelocations, baseNames),
                           instructions(patched, c.patched, patchedRelocations, patchedNames)));
    out += "</section>\n";
  }
  return out + pageEnd();
}

}  // namespace hotforge
