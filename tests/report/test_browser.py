"""The report as a person sees it: headless Chromium loads each report from file:// and the test
checks that the page raises no error, that every node of both graphs is drawn, that every
activation image decodes to a picture that is not blank, and that clicking, toggling and
searching work. A screenshot of each page is kept under pytest's temporary directory (its path is
printed; `pytest --basetemp=DIR` puts it somewhere known).

CI installs Debian's `chromium` (.ci/run does, and fails if it cannot); without it these tests
are skipped with that reason.
"""

from __future__ import annotations

import json
import struct
from urllib.parse import quote

import pytest

from graphnet.report import build_report
from graphnet.report.drawing import _layout_inputs
from tests.report.browser import Chromium, chromium_path
from tests.report.models import inception_graph, resnet_graph, template_graph

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="chromium is not installed (apt-get install chromium; .ci/run installs it)",
)

WIDTH, HEIGHT = 1280, 900

# For each activation image: decoded, and do its opaque pixels differ (not one flat grey)?
CHECK_IMAGES = """
(() => {
  const out = [];
  document.querySelectorAll('#activations img.actmap').forEach((img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    let lo = 255, hi = 0, opaque = 0;
    if (img.complete && img.naturalWidth > 0) {
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] === 0) continue;
        opaque++; lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]);
      }
    }
    out.push({node: img.closest('figure').dataset.node, w: img.naturalWidth, opaque, lo, hi});
  });
  return out;
})()
"""


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("report-screenshots")


def _count(page, view: str) -> int:
    return page.evaluate(f"document.querySelectorAll('.view[data-view={view}] g.node').length")


def look_at(browser, shots, graph, name: str, report=None) -> None:
    report = report or build_report(graph)
    path = shots / f"{name}.html"
    report.write(path)
    page = browser.open(path.as_uri(), width=WIDTH, height=HEIGHT)
    assert page.errors == []
    assert page.evaluate("window.graphnetReport && window.graphnetReport.ready") is True
    # Every node of both graphs is drawn.
    assert _count(page, "before") == len(graph.nodes)
    assert _count(page, "after") == len(report.optimized.nodes)
    # Every activation picture decodes in the browser and is not blank.
    images = page.evaluate(CHECK_IMAGES)
    maps = [v for v in report.activations.visuals if v.kind == "maps" and "actmap" in v.html]
    assert [i["node"] for i in images] == [v.node for v in maps]
    assert maps, "the models have conv layers"
    for i in images:
        assert i["w"] > 0 and i["opaque"] > 0, i
        assert i["hi"] > i["lo"], f"blank activation image: {i}"
    # The graph is on screen: the viewport has a view box and the minimap is drawn.
    assert page.evaluate("document.querySelector('#before').getAttribute('viewBox')")
    # Clicking a node opens its panel, with its activations when it has some.
    first = next(v.node for v in maps if not v.node.startswith("input:"))
    page.evaluate(
        "document.querySelector(`.view[data-view=before] g.node[data-node=${JSON.stringify("
        + json.dumps(first)
        + ")}]`).dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    assert page.evaluate("document.querySelector('#panel h3').textContent") == first
    assert page.evaluate("document.querySelectorAll('#panel img.actmap').length") == 1
    # ... lights up its edges and lists its neighbours (inputs and readers).
    _, edges, _ = _layout_inputs(graph)
    pairs = {(u, v) for u, v, _ in edges}
    ins = sorted(str(u[1] if isinstance(u, tuple) else u) for u, v in pairs if v == first)
    outs = sorted(str(v[1] if isinstance(v, tuple) else v) for u, v in pairs if u == first)
    lit = page.evaluate("document.querySelectorAll('.view[data-view=before] path.hl-edge').length")
    assert lit == len(ins) + len(outs)
    listed = page.evaluate("[...document.querySelectorAll('#panel p.nb')].map(p => p.textContent)")
    assert len(listed) == 2
    assert all(n in listed[0] for n in ins) and all(n in listed[1] for n in outs)
    # The toggle shows the optimized graph; a report line shows its nodes.
    page.evaluate("document.querySelector('[data-show=after]').click()")
    hidden = page.evaluate(
        "[...document.querySelectorAll('.view')].map(v => v.classList.contains('hidden'))"
    )
    assert hidden == [True, False]
    # Search finds a node by name in the shown view and selects it.
    target = report.optimized.nodes[-1].name
    page.evaluate(
        "(() => { const s = document.getElementById('search'); s.value = "
        + json.dumps(target)
        + "; s.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); })()"
    )
    assert page.evaluate("document.querySelector('#panel h3').textContent") == target
    page.evaluate("document.querySelector('[data-show=before]').click()")
    page.evaluate("document.querySelector('.passes li.did').click()")
    assert page.evaluate("document.querySelectorAll('g.node.hl').length") >= 1
    assert page.errors == []
    # A link can open the page on a node of either view.
    last = report.optimized.nodes[-1].name
    linked = browser.open(f"{path.as_uri()}#after:node={quote(last)}", width=WIDTH, height=HEIGHT)
    assert linked.evaluate("document.querySelector('#panel h3').textContent") == last
    assert linked.evaluate("document.querySelector('.view[data-view=after]').className") == "view"
    assert linked.errors == []
    linked.close()
    png = page.screenshot(str(shots / f"{name}.png"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)
    page.close()
    print(f"screenshot: {shots / (name + '.png')}")


@pytest.mark.parametrize(
    ("name", "build"),
    [("template", template_graph), ("resnet", resnet_graph), ("inception", inception_graph)],
)
def test_report_in_browser(browser, shots, name, build):
    look_at(browser, shots, build(), name)


@pytest.mark.slow
def test_densenet_report_in_browser(browser, shots, densenet_report):
    graph, report = densenet_report
    look_at(browser, shots, graph, "densenet121", report)
