"""The report page: well formed, self-contained (no URL outside the file), every node drawn in
both views, bounded size; the standalone SVG and the DOT text."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphnet
from graphnet.errors import InputError
from graphnet.passes.manager import optimize
from graphnet.report import build_report, graph_dot, graph_svg
from graphnet.report.changes import diff_graphs
from tests.helpers import onnx_model, vi
from tests.report.models import inception_graph, resnet_graph, template_graph
from tests.report.pagecheck import SVG_NS, check_page


@pytest.mark.parametrize("build", [template_graph, resnet_graph, inception_graph])
def test_report_page(build, tmp_path):
    graph = build()
    before = repr(graph), {k: v.copy() for k, v in graph.params.items()}
    path = tmp_path / "r.html"
    report = graph.report(str(path))
    # The graph given is left as it was.
    assert repr(graph) == before[0]
    assert all(np.array_equal(graph.params[k], v) for k, v in before[1].items())
    html = path.read_text("utf-8")
    assert html == report.html
    assert os.listdir(tmp_path) == ["r.html"]  # atomic write: no temporary left behind
    page = check_page(html)
    assert page.node_views == {"before": len(graph.nodes), "after": len(report.optimized.nodes)}
    assert len(html) < 400_000, len(html)
    # Sections: optimize totals, one table per view with a row per node, activations.
    assert "What optimize did" in html and "folded bn1 into conv1 (Conv)" in html
    assert html.count("<tr data-node=") == len(graph.nodes) + len(report.optimized.nodes)
    layers = sum(n.op in ("Conv", "MaxPool") for n in graph.nodes)
    assert html.count('class="actmap"') == layers + 1  # and the input image
    assert 'id="history"' not in html


def test_report_options(tmp_path):
    graph = template_graph()
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    hist = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "accuracy": 0.7}]
    r = build_report(
        graph,
        inputs={"input": x},
        input_source="x.npy",
        history=hist,
        optimize=False,
        title="my net",
    )
    assert r.optimized is None and "optimize was not run" in r.html
    page = check_page(r.html)
    assert page.node_views == {"before": len(graph.nodes)}
    assert "<title>my net</title>" in r.html and "on x.npy" in r.html
    assert 'id="history"' in r.html and r.html.count('class="chart"') == 2
    with pytest.raises(InputError, match="input 'input' must have shape"):
        build_report(graph, inputs={"input": x[:, :, :5]})
    with pytest.raises(InputError, match="unknown input"):
        build_report(graph, inputs={"input": x, "other": x})


def test_failures_are_shown_not_raised():
    """A pipeline that fails and a graph the runtime cannot run still give a page that says so."""
    bad = build_report(template_graph(), pipeline=["no-such-pass"])
    assert "optimize failed: PassError: no pass named 'no-such-pass'" in bad.html
    check_page(bad.html)
    # Softmax of opset 11 over two unknown dims stays an opaque node, which cannot run.
    from onnx import helper

    model = onnx_model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        [vi("x", ("N", "C", 4, 5))],
        [vi("y", ("N", "C", 4, 5))],
        11,
    )
    graph = graphnet.load(model)
    assert graph.op_counts() == {"Opaque": 1}
    r = build_report(graph)
    page = check_page(r.html)
    assert page.node_views["before"] == 1
    assert "could not run this graph" in r.html


def test_standalone_svg_and_dot():
    graph = resnet_graph()
    svg = graph_svg(graph)
    root = ET.fromstring(svg.encode())  # well-formed XML
    nodes = [g for g in root.iter(f"{{{SVG_NS}}}g") if "node" in g.get("class", "").split()]
    assert sorted(g.get("data-node") for g in nodes) == sorted(n.name for n in graph.nodes)
    assert root.find(f"{{{SVG_NS}}}style") is not None  # renders alone
    paths = [p for p in root.iter(f"{{{SVG_NS}}}path") if p.get("class") == "edge"]
    producers = graph.producers()
    distinct = {
        (producers[i].name, n.name) for n in graph.nodes for i in n.inputs if i in producers
    }
    ios = sum(1 for n in graph.nodes for i in n.inputs if i in graph.inputs)
    assert len(paths) == len(distinct) + ios + len(graph.outputs)
    dot = graph_dot(graph)
    assert dot.startswith('digraph "resnet_style" {') and dot.rstrip().endswith("}")
    node_lines = [ln for ln in dot.splitlines() if "[label=" in ln and "->" not in ln]
    assert len(node_lines) == len(graph.nodes) + len(graph.inputs) + len(graph.outputs)
    assert dot.count("->") == len(paths)
    assert '"conv4" [label="Conv 3\u00d73 /2\\nconv4"' in dot


def test_marks_in_svg_and_dot():
    graph = template_graph()
    after, rep = optimize(graph)
    marks = diff_graphs(graph, after, rep).after
    root = ET.fromstring(graph_svg(after, marks=marks).encode())
    conv1 = next(g for g in root.iter(f"{{{SVG_NS}}}g") if g.get("data-node") == "conv1")
    assert "st-changed" in conv1.get("class").split()
    assert "folded bn1 into conv1" in conv1.find(f"{{{SVG_NS}}}title").text
    badge = next(g for g in conv1.iter(f"{{{SVG_NS}}}g") if g.get("class") == "badge")
    assert badge.find(f"{{{SVG_NS}}}text").text == "+BN"
    dot = graph_dot(after, marks=marks)
    assert '"conv1" [label="Conv 3\u00d73\\nconv1\\n+BN", color="#e0a800", penwidth=3' in dot


def test_names_are_escaped():
    graph = template_graph()
    graph.name = 'a<b>&"c'
    r = build_report(graph, optimize=False)
    check_page(r.html)
    assert "a&lt;b&gt;&amp;" in r.html
    ET.fromstring(graph_svg(graph).encode())


@pytest.mark.slow
def test_densenet_report_size(densenet_report):
    graph, r = densenet_report
    page = check_page(r.html)
    assert page.node_views == {"before": len(graph.nodes), "after": len(r.optimized.nodes)}
    assert len(r.html.encode()) < 3_500_000, len(r.html)  # measured: 3.1 MB
    data = [json.loads(li) for li in re.findall(r"data-nodes='([^']*)'", r.html)]
    assert data  # report lines carry their nodes


def test_counts_in_words():
    """A one-node graph's page says "1 node" (it said "1 nodes" in four places)."""
    from graphnet import nn

    graph = nn.Sequential([nn.ReLU()]).build((None, 3))
    html = build_report(graph).html
    assert "1 nodes" not in html
    assert "original (1 node)" in html and "total: 1 node;" in html
    assert "1 node · 0 parameters · " in html
