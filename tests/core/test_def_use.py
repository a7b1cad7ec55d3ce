"""Def-use kept by the IR: every Graph mutation keeps each value's producer and readers, the node
order and the name map equal to a recomputation from the nodes; `verify()` catches a stale map;
edits that go around the graph's methods are refused.

The oracle (`_recomputed`) is written here from the nodes alone, apart from `Graph._verify_maps`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphnet import Graph, GraphError


def _chain() -> Graph:
    g = Graph("chain")
    g.add_input("x", (None, 3))
    g.add_param("b", np.array([1.0, -2.0, 3.0], np.float32))
    g.add_node("Relu", ["x"], name="r1")
    g.add_node("Add", ["r1.out", "b"], name="a1")
    g.add_node("Add", ["a1.out", "a1.out"], name="a2")  # reads a1.out twice
    g.add_node("Relu", ["a2.out"], name="r2")
    g.mark_output("r2.out")
    return g


def _recomputed(g: Graph) -> tuple[dict, dict, list]:
    """(value -> producer name, value -> sorted reader names with counts, node names in order),
    from the nodes alone."""
    order, prod, readers = [], {}, {}
    for n in g.nodes:
        order.append(n.name)
        for o in n.outputs:
            if o:
                prod[o] = n.name
        for i in n.inputs:
            if i:
                readers.setdefault(i, {}).setdefault(n.name, 0)
                readers[i][n.name] += 1
    return prod, readers, order


def _kept(g: Graph) -> tuple[dict, dict, list]:
    """The same three, as the graph's own queries answer them."""
    names = {v for n in g.nodes for v in (*n.inputs, *n.outputs) if v}
    prod = {v: g.producer(v).name for v in names if g.producer(v) is not None}
    readers = {}
    position = {n.name: k for k, n in enumerate(g.nodes)}
    for v in names:
        users = g.readers(v)
        if users:
            readers[v] = {u.name: u.inputs.count(v) for u in users}
            pos = [position[u.name] for u in users]
            assert pos == sorted(pos), (v, [u.name for u in users])  # in graph order
    return prod, readers, [n.name for n in g.nodes]


def _same(g: Graph) -> None:
    assert _kept(g) == _recomputed(g)
    assert all(g.node(n.name) is n and n in g for n in g.nodes)
    assert len(g) == len(g.nodes)
    g._verify_maps()


# ------------------------------------------------------------------ each mutation
def test_each_mutation_keeps_the_maps():
    g = _chain()
    _same(g)
    a1, a2, r2 = g.node("a1"), g.node("a2"), g.node("r2")
    g.set_input(a2, 1, "x")  # one of a2's two reads of a1.out
    assert [n.name for n in g.readers("a1.out")] == ["a2"] and g.num_readers("x") == 2
    _same(g)
    g.add_node("Neg", ["r1.out"], name="neg", before=a1)  # inserted, not appended
    assert [n.name for n in g.nodes] == ["r1", "neg", "a1", "a2", "r2"]
    assert [n.name for n in g.readers("r1.out")] == ["neg", "a1"]  # graph order, not insertion
    _same(g)
    g.replace_uses("r1.out", "x", keep=a1)
    assert g.readers("r1.out") == [a1] and [n.name for n in g.readers("x")] == ["r1", "neg", "a2"]
    _same(g)
    g.rename_value("a1.out", "sum")
    assert a1.outputs == ["sum"] and a2.inputs == ["sum", "x"] and g.producer("sum") is a1
    _same(g)
    g.rename_value("x", "input")  # a graph input: inputs list and readers follow
    assert g.inputs == ["input"] and g.node("r1").inputs == ["input"]
    _same(g)
    g.set_outputs(a2, ["a2.y"])
    g.set_input(r2, 0, "a2.y")
    assert g.producer("a2.out") is None and g.producer("a2.y") is a2 and not g.readers("a2.out")
    _same(g)
    assert g.bypass(g.node("neg"), "input", "neg.out") is None and not g.has_node("neg")
    _same(g)
    g.remove_node(r2)
    g.mark_output("a2.y")
    g.outputs.remove("r2.out")
    _same(g)
    g.add_node("Relu", ["sum"], name="dead")
    removed, _ = g.remove_unused()
    assert [n.name for n in removed] == ["dead"]
    _same(g)
    g.verify()
    c = g.copy()
    _same(c)
    assert all(n not in g for n in c.nodes)


def test_bypass_of_a_graph_output_renames_onto_it():
    g = _chain()
    g.add_node("Identity", ["r2.out"], name="id", outputs=["y"])
    g.add_node("Relu", ["y"], name="after")  # the output is read too
    g.outputs = ["y", "after.out"]
    assert g.bypass(g.node("id"), "r2.out", "y") is None
    assert g.node("r2").outputs == ["y"] and g.node("after").inputs == ["y"]
    _same(g)
    g.verify()


def test_many_inserts_before_one_node_renumber_the_order():
    g = _chain()
    anchor = g.node("r2")
    for k in range(200):  # 200 halvings of one gap: more than a float's 52 bits
        g.add_node("Neg", ["a2.out"], name=f"n{k}", before=anchor)
    assert [n.name for n in g.nodes][3:-1] == [f"n{k}" for k in range(200)]
    users = g.readers("a2.out")
    assert [n.name for n in users] == [f"n{k}" for k in range(200)] + ["r2"]
    assert g.comes_before(g.node("n199"), anchor)
    _same(g)
    g.verify()


# ------------------------------------------------------------- stale maps, refused edits
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda g: g._readers["x"].clear(), "reader map is stale for 'x'"),
        (lambda g: g._readers.pop("a1.out"), "reader map is stale for 'a1.out'"),
        (lambda g: g._readers["a1.out"].update({g.node("a2"): 1}), "reader map is stale"),
        (lambda g: g._producer.pop("a2.out"), "'a2.out' is written by node 'a2', the map says"),
        (lambda g: g._producer.update({"ghost": g.node("r1")}), r"lists \['ghost'\]"),
        (
            lambda g: g._producer.update({"a1.out": g.node("r1")}),
            "'a1.out' is written by node 'a1', the map says node 'r1'",
        ),
        (lambda g: g._by_name.pop("r2"), "name map does not give node 'r2'"),
        (lambda g: setattr(g.node("a2"), "_key", -5.0), "order keys of 'a1', 'a2' are stale"),
    ],
)
def test_verify_catches_a_stale_map(corrupt, message):
    g = _chain()
    g.verify()
    corrupt(g)
    with pytest.raises(GraphError, match=message):
        g.verify()


def test_edits_around_the_graph_are_refused():
    g = _chain()
    node = g.node("a1")
    for edit in (
        lambda: node.inputs.append("x"),
        lambda: node.inputs.__setitem__(0, "x"),
        lambda: node.outputs.pop(),
        lambda: node.inputs.extend(["x"]),
    ):
        with pytest.raises(GraphError, match="changed through its graph"):
            edit()
    with pytest.raises(AttributeError):
        node.inputs = ["x"]  # type: ignore[misc]
    with pytest.raises(AttributeError):
        node.name = "other"  # type: ignore[misc]
    assert isinstance(g.nodes, tuple)
    other = Graph("other")
    other.add_input("x", (None, 3))
    with pytest.raises(GraphError, match="node 'a1' \\(Add\\) is not in graph 'other'"):
        other.remove_node(node)
    assert node.inputs == ["r1.out", "b"]  # reads and compares like a list
    _same(g)


def test_node_names_and_unique_dsl_names_are_o1_lookups():
    from graphnet import nn

    net = nn.Network("n")
    x = net.input("x", (None, 3))
    names = [net.unique("relu") for _ in range(3)]
    assert names == ["relu1", "relu2", "relu3"]
    nn.ReLU(name="relu4")(x)
    assert net.graph.has_node("relu4") and net.unique("relu") == "relu5"
    with pytest.raises(GraphError, match="has no node named 'nope'"):
        net.graph.node("nope")


# ------------------------------------------------------------ randomized sequences
_OPS = ("add", "insert", "remove", "set_input", "replace", "rename", "outputs", "bypass", "sort")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_OPS), st.integers(0, 10**6)), max_size=40))
def test_random_mutation_sequences_keep_the_maps(steps):
    """Any sequence of mutations, valid programs or not (a removed producer leaves its readers
    dangling), keeps the kept maps equal to the recomputation; `verify` agrees with the maps."""
    g = _chain()
    fresh = 0
    for op, r in steps:
        nodes = g.nodes
        values = [v for v in g.values if v]
        if op in ("add", "insert") or not nodes:
            fresh += 1
            ins = [values[r % len(values)], values[(r // 7) % len(values)]]
            before = nodes[r % len(nodes)] if op == "insert" and nodes else None
            g.add_node("Add", ins, name=f"n{fresh}", before=before, infer=False)
        elif op == "remove":
            g.remove_node(nodes[r % len(nodes)])
        elif op == "set_input":
            n = nodes[r % len(nodes)]
            g.set_input(n, (r // 3) % (len(n.inputs) + 1), values[(r // 5) % len(values)])
        elif op == "replace":
            old, new = values[r % len(values)], values[(r // 11) % len(values)]
            g.replace_uses(old, new)
        elif op == "rename":
            fresh += 1
            g.rename_value(values[r % len(values)], f"v{fresh}")
        elif op == "outputs":
            fresh += 1
            n = nodes[r % len(nodes)]
            g.set_outputs(n, [f"o{fresh}"] + ([f"p{fresh}"] if r % 2 else []))
        elif op == "bypass":
            n = nodes[r % len(nodes)]
            if n.inputs and n.inputs[0] and n.outputs:
                g.bypass(n, n.inputs[0], n.outputs[0])
        elif op == "sort":
            try:
                g.toposort()
            except GraphError:
                pass  # a cycle (a set_input can make one): nothing was reordered
        _same(g)
    _same(g.copy())


def test_deepcopy_and_pickle_rebuild_the_maps_of_a_long_graph():
    """Nodes are linked along the order: copying or pickling them one by one would recurse
    through the whole graph (deeper than Python allows at a few thousand nodes)."""
    import copy
    import pickle

    g = Graph("long")
    g.add_input("x", (None, 3))
    v = "x"
    for k in range(3000):
        v = g.add_node("Relu", [v], name=f"r{k}").outputs[0]
    g.mark_output(v)
    for h in (copy.deepcopy(g), pickle.loads(pickle.dumps(g)), g.copy()):
        _same(h)
        h.verify()
        assert [n.name for n in h.nodes] == [n.name for n in g.nodes]
        assert not any(n in g for n in h.nodes) and h.outputs == g.outputs
