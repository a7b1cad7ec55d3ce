"""The README's screenshot: committed, small, a PNG of the size its command asks for, and the
command that made it is next to it."""

from __future__ import annotations

import os
import re
import struct

from tests.helpers import ROOT


def test_screenshot_and_its_command():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    section = readme[readme.index("## Pictures") :]
    section = section[: section.index("\n## ", 4)]
    assert "](docs/report.png)" in section
    path = os.path.join(ROOT, "docs", "report.png")
    with open(path, "rb") as fh:
        png = fh.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    (w, h) = re.search(r"--window-size=(\d+),(\d+)", section).groups()
    assert struct.unpack(">II", png[16:24]) == (int(w), int(h))
    assert "graphnet demo --report demo.html" in section
    assert "--screenshot=docs/report.png" in section
