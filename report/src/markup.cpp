#include "markup.h"

#include "hotforge/report.h"

#include <fmt/core.h>

namespace hotforge {
namespace {

// Length of the well-formed UTF-8 sequence at text[i] (1..4), or 0 when it is not one.
size_t utf8Length(std::string_view text, size_t i) {
  auto byte = [&](size_t k) { return uint8_t(text[k]); };
  uint8_t lead = byte(i);
  size_t length = lead < 0x80 ? 1 : (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : (lead & 0xf8) == 0xf0 ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  uint32_t code = length == 1 ? lead : lead & (0x7f >> length);
  for (size_t k = 1; k < length; ++k) code = code << 6 | (byte(i + k) & 0x3f);
  static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < kSmallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;  // overlong, surrogate
  if (code < 0x20 || (code >= 0x7f && code < 0xa0)) return 0;  // control characters: not for XML 1.0 either
  return length;
}

}  // namespace

std::string markupEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    switch (text[i]) {
    case '&': out += "&amp;"; ++i; continue;
    case '<': out += "&lt;"; ++i; continue;
    case '>': out += "&gt;"; ++i; continue;
    case '"': out += "&quot;"; ++i; continue;
    case '\'': out += "&#39;"; ++i; continue;
    default: break;
    }
    if (size_t length = utf8Length(text, i)) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out += fmt::format("\\x{:02x}", uint8_t(text[i]));
      ++i;
    }
  }
  return out;
}

namespace report_detail {

// Laptop screens and paper: a readable measure, monospace code that wraps instead of scrolling,
// colours that survive printing, rows that do not split across pages.
constexpr const char *kStyle = R"(
:root { --ink: #1d2328; --muted: #5b6670; --line: #d5dbe1; --panel: #f5f7f9;
        --del: #fde8e8; --del-strong: #f5b5b5; --ins: #e4f6e7; --ins-strong: #a8e0b2;
        --ok: #1f7a3a; --warn: #b3261e; --info: #2f5d8a; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0 auto; max-width: 1400px; padding: 1.2rem 1.6rem 3rem; color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
h1 { font-size: 1.45rem; margin: 0 0 .3rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
a { color: var(--info); }
code, .code td, .hex td, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.paths { color: var(--muted); margin: .1rem 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: .8rem; font-weight: 600; font-size: .85rem;
         color: #fff; background: var(--muted); white-space: nowrap; }
.badge.hotpatchable, .badge.hotpatched { background: var(--ok); }
.badge.needs-restart, .badge.restart-required, .badge.failed { background: var(--warn); }
.badge.unchanged, .badge.no-change { background: var(--info); }
.verdict { font-size: 1.05rem; margin: .6rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .25rem .5rem; border-bottom: 1px solid var(--line); }
th { background: var(--panel); font-weight: 600; }
td { overflow-wrap: anywhere; }
.counts { width: auto; }
.counts td, .counts th { padding: .2rem .9rem .2rem .5rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.fn { border: 1px solid var(--line); border-radius: 6px; margin: 1rem 0; break-inside: auto; }
.fn > header { background: var(--panel); padding: .45rem .7rem; border-bottom: 1px solid var(--line); }
.fn > header h3 { margin: 0; display: inline; overflow-wrap: anywhere; }
.fn > header .where { color: var(--muted); margin-left: .6rem; }
.fn > p { margin: .4rem .7rem; }
.code { table-layout: fixed; }
.code td { border: 0; padding: 0 .4rem; white-space: pre-wrap; word-break: break-all; }
.code col.offc { width: 4.5em; }
.code col.gapc { width: 1.8em; }
.code td.off { color: var(--muted); text-align: right; user-select: none; }
.code td.gap { text-align: center; color: var(--muted); border-left: 1px solid var(--line); }
.code th { font-family: inherit; font-size: .85rem; }
.code tr.del td.b, .code tr.chg td.b { background: var(--del); }
.code tr.ins td.p, .code tr.chg td.p { background: var(--ins); }
.code tr.chg td.b.text, .code tr.del td.b.text { box-shadow: inset 3px 0 var(--del-strong); }
.code tr.chg td.p.text, .code tr.ins td.p.text { box-shadow: inset 3px 0 var(--ins-strong); }
.code tr.skip td { color: var(--muted); text-align: center; font-style: italic; background: var(--panel); }
.hex td { border: 0; padding: 0 .5rem; white-space: pre; }
.hex td.off { color: var(--muted); }
.hex mark.b { background: var(--del-strong); }
.hex mark.p { background: var(--ins-strong); }
.legend { color: var(--muted); font-size: .85rem; }
.legend span { padding: 0 .35rem; border-radius: 3px; }
.reason { overflow-wrap: anywhere; }
.changes td:nth-child(-n+3) { white-space: nowrap; }
tr { break-inside: avoid; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  a { color: inherit; text-decoration: none; }
  .fn { border-color: #999; }
  h2 { break-after: avoid; }
}
)";

std::string pageStart(std::string_view title) {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
         markupEscape(title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
}

std::string pageEnd() { return "</body>\n</html>\n"; }

std::string hrefEscape(std::string_view path) {
  std::string out;
  for (char c : path) {
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '~' || c == '/' || c == '-';
    out += plain ? std::string(1, c) : fmt::format("%{:02X}", uint8_t(c));
  }
  return out;
}

}  // namespace report_detail
}  // namespace hotforge
