#!/usr/bin/env python3
"""Checks a Hotforge HTML page: well-formed (every element closed in order, as an XML parser
would need), self-contained (no script, no external stylesheet, image or link off the page) and
prints what it found as JSON: the titles of the change sections, the ids, the links, and the
counts of listing rows by class.  Usage: check_html.py FILE...; prints one JSON object by file,
or exits with 1 naming the file and the reason."""
import html.parser
import json
import sys

VOID = {"meta", "link", "br", "img", "col", "hr", "input", "wbr", "source", "area", "base", "embed", "param", "track"}


class Checker(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems = [], []
        self.headings, self.ids, self.links, self.rows = [], [], [], {}
        self.in_h3 = False
        self.text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "iframe", "object"):
            self.problems.append(f"<{tag}> on a page that must be self-contained")
        for key in ("src", "href"):
            v = a.get(key) or ""
            if "://" in v or v.startswith("//"):
                self.problems.append(f"external {key}={v}")
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "tr":
            cls = a.get("class") or "same"
            self.rows[cls] = self.rows.get(cls, 0) + 1
        if tag == "h3":
            self.in_h3, self.text = True, ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}> at line {self.getpos()[0]}")
            return
        self.stack.pop()
        if tag == "h3":
            self.in_h3 = False
            self.headings.append(self.text)

    def handle_data(self, data):
        if self.in_h3:
            self.text += data


def check(path):
    data = open(path, "rb").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [f"not UTF-8: {e}"]
    if not text.startswith("<!DOCTYPE html>"):
        return None, ["no <!DOCTYPE html>"]
    c = Checker()
    c.feed(text)
    c.close()
    if c.stack:
        c.problems.append("unclosed: " + " ".join(c.stack))
    if len(set(c.ids)) != len(c.ids):
        c.problems.append("duplicate ids")
    return {"headings": c.headings, "ids": c.ids, "links": c.links, "rows": c.rows}, c.problems


def main():
    found = {}
    for path in sys.argv[1:]:
        found[path], problems = check(path)
        if problems:
            print(path + ": " + "; ".join(problems), file=sys.stderr)
            return 1
    print(json.dumps(found))
    return 0


sys.exit(main())
