"""The before/after marks: what optimize removed, changed, added and declined, on the node it
concerns, with the pass's words."""

from __future__ import annotations

import numpy as np

from graphnet.ir import Graph
from graphnet.passes.manager import optimize
from graphnet.report.changes import _mentions, diff_graphs
from tests.report.models import inception_graph, resnet_graph, template_graph


def test_template_bn_folds_and_dropout():
    graph = template_graph()
    after, report = optimize(graph)
    ch = diff_graphs(graph, after, report)
    for k in range(1, 5):
        assert ch.before[f"bn{k}"].status == "removed"
        conv = ch.after[f"conv{k}"]
        assert conv.status == "changed" and conv.badge == "+BN"
        assert f"fold-batchnorm: folded bn{k} into conv{k} (Conv)" in conv.notes
        assert ch.before[f"conv{k}"].status == "changed"
    drop = ch.before["dropout1"]
    assert drop.status == "removed"
    assert any(n.startswith("drop-dropout: removed dropout1") for n in drop.notes)
    # Untouched nodes carry no mark; counts add up with the graphs' sizes.
    assert "relu1" not in ch.before and "fc1" not in ch.after
    assert len(graph.nodes) - ch.count("removed") + ch.count("added", after=True) == len(
        after.nodes
    )


def test_declined_fold_is_on_the_batchnorm_with_its_reason():
    graph = resnet_graph()
    after, report = optimize(graph)
    ch = diff_graphs(graph, after, report)
    bn7 = ch.before["bn7"]
    declines = [n for n in bn7.notes if "declined" in n]
    assert declines and all(n.startswith("fold-batchnorm: declined: bn7:") for n in declines)
    # bn7 became a Mul + Add: removed here, the two new nodes added (without a badge).
    assert bn7.status == "removed"
    added = {k for k, m in ch.after.items() if m.status == "added"}
    assert added == {n.name for n in after.nodes} - {n.name for n in graph.nodes}
    assert added and all(ch.after[k].badge == "" for k in added)
    # The Add named in the reason gets the note but is not itself "declined".
    assert ch.before["add2"].status == "" and any("bn7" in n for n in ch.before["add2"].notes)
    lines = [c for c in ch.lines if c.declined]
    assert lines and lines[0].nodes[0] == "bn7"


def test_bulk_lines_are_listed_but_not_attached():
    graph = inception_graph()
    after, report = optimize(graph)
    ch = diff_graphs(graph, after, report)
    bulk = [c for c in ch.lines if c.text.startswith("dropped")]
    assert bulk and len(bulk[0].nodes) == 8  # bn1..bn8, through their parameter names
    assert not any(
        n.startswith("fold-batchnorm: dropped") for m in ch.before.values() for n in m.notes
    )


def test_structure_alone_without_a_report():
    graph = template_graph()
    after, _ = optimize(graph)
    ch = diff_graphs(graph, after)
    assert ch.before["bn1"].status == "removed" and ch.after["conv1"].status == "changed"
    assert ch.lines == [] and ch.after["conv1"].badge == ""


def test_mentions():
    names = {"bn1", "conv1", "a/b.c", "relu"}
    assert _mentions("folded bn1 into conv1 (Conv)", names) == ["bn1", "conv1"]
    assert _mentions("absorbed x into bn1's scale", names) == ["bn1"]
    assert _mentions("dropped: bn1.scale, bn1.bias", names) == ["bn1", "bn1"]
    assert _mentions("'a/b.c' output feeds relu.", names) == ["a/b.c", "relu"]
    assert _mentions("bn10 and conv12", names) == []


def test_parameters_of_any_dtype_compare():
    """An int64 shape and a string parameter are compared too (NumPy's NaN-aware comparison
    raises on strings: it is asked for on float arrays only)."""
    g = Graph("reshape")
    g.add_input("x", (2, 3, 4))
    g.add_param("shape", np.array([2, 12], np.int64))
    g.add_node("Reshape", ["x", "shape"], name="r")
    g.add_node("Relu", ["r.out"], name="relu")
    g.mark_output("relu.out")
    after, report = optimize(g)
    ch = diff_graphs(g, after, report)
    assert ch.before == {} and ch.after == {}
    for graph in (g, after):
        graph.set_param("shape", np.array(["2", "12"]))  # not a valid graph: only compared here
    assert diff_graphs(g, after).before == {}


def test_cse_merge_badge():
    """Two identical Convs reading the same input: cse keeps one, which is badged "merged"."""
    from graphnet import nn

    net = nn.Network("twins", seed=0)
    x = net.input("x", (None, 2, 5, 5))
    conv = nn.Conv(3, 3, padding="same")
    net.output(nn.add(conv(x), conv(x)), name="y")  # the same layer twice: shared weights
    graph = net.graph
    after, report = optimize(graph)
    ch = diff_graphs(graph, after, report)
    kept = [k for k, m in ch.after.items() if m.badge]
    assert len(kept) == 1 and ch.after[kept[0]].badge == "merged"
    assert sum(m.status == "removed" for m in ch.before.values()) == 1
