"""Checks of a report page shared by the HTML and CLI tests: elements balanced, nothing loaded or
linked from outside the file, and the drawn nodes counted per view."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["SVG_NS", "PageChecker", "check_page"]

VOID = {"meta", "img", "input", "br", "hr", "link", "col", "wbr", "source", "area", "base"}
SVG_NS = "http://www.w3.org/2000/svg"


class PageChecker(HTMLParser):
    """Checks that every element is closed in order (SVG elements may self-close) and collects
    what the page would load or link to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.node_views: dict[str, int] = {}
        self._view: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        for key in ("src", "href", "xlink:href", "action", "poster", "srcset", "data"):
            if a.get(key) is not None:
                self.refs.append((tag, key, a[key]))
        if tag == "div" and "view" in (a.get("class") or "").split():
            self._view = a.get("data-view")
        if tag == "g" and "node" in (a.get("class") or "").split():
            self.node_views[self._view] = self.node_views.get(self._view, 0) + 1
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
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def check_page(html: str) -> PageChecker:
    p = PageChecker()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], f"unclosed: {p.stack[-5:]}"
    # Self-contained: images are data URIs, links stay in the page, nothing is imported.
    for tag, key, value in p.refs:
        if key == "src":
            assert value.startswith("data:image/png;base64,"), (tag, value[:60])
        else:
            assert value.startswith("#"), (tag, key, value)
    assert p.counts.get("link", 0) == 0 and p.counts.get("iframe", 0) == 0
    text = re.sub(r'xmlns="http://www\.w3\.org/2000/svg"', "", html)
    assert not re.search(
        r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|\bfetch\(|XMLHttpRequest", text
    ), "a reference outside the file"
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", text))
    return p
