"""The layered layout: every node and edge present, no overlapping boxes, edges go downward and
never run through a box, constants sit just above their reader; and its pieces (crossing count,
isotonic regression) against brute-force formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet
from graphnet.errors import GraphError
from graphnet.report.drawing import _layout_inputs
from graphnet.report.layout import _count_crossings, _pav, layered_layout
from tests.report.models import densenet_path, inception_graph, resnet_graph, template_graph

EPS = 1e-6  # layout coordinates are sums of floats: compare with a hair of slack


def check_layout(sizes, edges, layout) -> None:
    """The invariants every layout must satisfy."""
    boxes = layout.boxes
    assert set(boxes) == set(sizes), "every node is laid out"
    for k, (w, h) in sizes.items():
        assert boxes[k].w == pytest.approx(w) and boxes[k].h == pytest.approx(h)
        assert boxes[k].left >= -EPS and boxes[k].y >= -EPS
        assert boxes[k].right <= layout.width + EPS and boxes[k].bottom <= layout.height + EPS
    # No two boxes overlap (a sweep over x keeps this quadratic only within overlapping columns).
    items = sorted(boxes.items(), key=lambda kv: kv[1].left)
    for i, (ka, a) in enumerate(items):
        for kb, b in items[i + 1 :]:
            if b.left >= a.right - EPS:
                break
            assert b.y >= a.bottom - EPS or a.y >= b.bottom - EPS, f"{ka!r} overlaps {kb!r}"
    distinct = {(u, v) for u, v in edges}
    routes = {(r.src, r.dst): r for r in layout.edges}
    assert set(routes) == distinct, "one route per distinct edge"
    for (u, v), r in routes.items():
        bu, bv = boxes[u], boxes[v]
        assert bv.layer > bu.layer, f"edge {u!r} -> {v!r} does not go down a layer"
        assert r.points[0] == pytest.approx((bu.x, bu.bottom))
        assert r.points[-1] == pytest.approx((bv.x, bv.y))
        ys = [p[1] for p in r.points]
        assert all(b >= a - EPS for a, b in zip(ys, ys[1:], strict=False)), "edges go downward"
        # The vertical runs through intermediate layers (point pairs) miss every box.
        for (x1, y1), (x2, y2) in zip(r.points[1:-1:2], r.points[2:-1:2], strict=True):
            assert x1 == pytest.approx(x2)
            for k, b in boxes.items():
                if b.left + EPS < x1 < b.right - EPS:
                    assert b.bottom <= y1 + EPS or b.y >= y2 - EPS, f"{u!r}->{v!r} crosses {k!r}"


def _graph_layout(graph):
    sizes, edges, floating = _layout_inputs(graph)
    pairs = [(u, v) for u, v, _ in edges]
    return sizes, pairs, floating, layered_layout(sizes, pairs, floating=floating)


@pytest.mark.parametrize("build", [template_graph, resnet_graph, inception_graph])
def test_dsl_graphs(build):
    graph = build()
    sizes, edges, _, layout = _graph_layout(graph)
    check_layout(sizes, edges, layout)
    # Every node of the graph, its inputs and its outputs are drawn.
    assert {k for k in sizes if not isinstance(k, tuple)} == {n.name for n in graph.nodes}


def test_inception_branches_side_by_side():
    """The four branches of the module share layers (drawn next to each other), so the picture
    is as tall as the longest branch, not the sum of them."""
    graph = inception_graph()
    _, _, _, layout = _graph_layout(graph)
    first = {n: layout.boxes[n].layer for n in ("conv2", "conv3", "conv5", "pool1")}
    assert len(set(first.values())) == 1, first
    xs = sorted(layout.boxes[n].x for n in first)
    assert len(set(xs)) == 4


@pytest.mark.slow
def test_densenet_layout():
    path = densenet_path()
    if path is None:
        pytest.skip("this onnx build does not ship light_densenet121.onnx")
    graph = graphnet.load(path)
    sizes, edges, floating, layout = _graph_layout(graph)
    check_layout(sizes, edges, layout)
    # Weights computed by ConstantOfShape float down to one layer above their first reader,
    # instead of all sitting in the first layer with edges across the whole picture.
    succ: dict = {}
    for u, v in edges:
        succ.setdefault(u, []).append(v)
    for k in floating:
        if k in succ:
            assert layout.boxes[k].layer == min(layout.boxes[s].layer for s in succ[k]) - 1
    # Usable proportions: the data path does not drift sideways by a box per layer.
    assert layout.width < 3000, layout.width


def test_floating_nodes_sit_above_their_reader():
    sizes = {k: (40, 20) for k in "abcdw"}
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("w", "d")]
    layout = layered_layout(sizes, edges, floating={"w"})
    assert layout.boxes["w"].layer == layout.boxes["d"].layer - 1 == 2
    plain = layered_layout(sizes, edges)
    assert plain.boxes["w"].layer == 0


def test_duplicate_edges_drawn_once_and_errors():
    sizes = {"a": (10, 10), "b": (10, 10)}
    layout = layered_layout(sizes, [("a", "b"), ("a", "b")])
    assert len(layout.edges) == 1
    with pytest.raises(GraphError, match="cycle"):
        layered_layout(sizes, [("a", "b"), ("b", "a")])
    with pytest.raises(GraphError, match="not laid out"):
        layered_layout(sizes, [("a", "c")])
    with pytest.raises(GraphError, match="feeds itself"):
        layered_layout(sizes, [("a", "a")])
    empty = layered_layout({}, [])
    assert empty.boxes == {} and empty.edges == []


@st.composite
def dags(draw):
    n = draw(st.integers(1, 14))
    edges = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1]),
            max_size=30,
        )
    )
    widths = draw(st.lists(st.integers(10, 120), min_size=n, max_size=n))
    floating = draw(st.sets(st.integers(0, n - 1), max_size=3))
    return n, edges, widths, floating


@settings(max_examples=60, deadline=None)
@given(dags())
def test_random_dags(dag):
    n, edges, widths, floating = dag
    # Node order shuffled against the topological one: the layout must not rely on it.
    sizes = {k: (float(widths[k]), 30.0) for k in reversed(range(n))}
    # Floating nodes must not be reached from a non-floating one (they are constants).
    floating = {k for k in floating if all(u in floating for u, v in edges if v == k)}
    layout = layered_layout(sizes, edges, floating=floating)
    check_layout(sizes, edges, layout)


def _crossings_brute(top, bottom_pos, down) -> int:
    segs = [(i, bottom_pos[b]) for i, a in enumerate(top) for b in down[a]]
    return sum(
        1 for (a1, b1), (a2, b2) in itertools.combinations(segs, 2) if (a1 - a2) * (b1 - b2) < 0
    )


def test_crossing_count_matches_pairwise_formula():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top = list(range(int(rng.integers(1, 7))))
        bottom = [f"b{k}" for k in range(int(rng.integers(1, 7)))]
        pos = {b: k for k, b in enumerate(bottom)}
        down = {a: sorted({bottom[int(j)] for j in rng.integers(0, len(bottom), 3)}) for a in top}
        assert _count_crossings(top, pos, down) == _crossings_brute(top, pos, down)


def _wmean(t, w, j, k) -> float:
    return sum(t[i] * w[i] for i in range(j, k + 1)) / sum(w[j : k + 1])


def test_pav_matches_minmax_formula():
    """Isotonic regression has the closed form y_i = max_{j<=i} min_{k>=i} mean_w(t[j..k])."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 9))
        t = rng.normal(size=n).tolist()
        w = rng.uniform(0.1, 3.0, n).tolist()
        got = _pav(t, w)
        want = [
            max(min(_wmean(t, w, j, k) for k in range(i, n)) for j in range(i + 1))
            for i in range(n)
        ]
        assert got == pytest.approx(want, abs=1e-12)
