"""cse: duplicate parameters and duplicate nodes merged; what must never merge (mode-dependent
ops, Opaque nodes, two graph outputs); graph output names kept. Structure is checked on the
rewritten graph, numerics with `check_same` (our runtime and onnxruntime on the export; merging
is exact, but onnxruntime's kernels round differently from NumPy's, hence FOLD tolerances), and a
randomized test builds graphs with planted duplicates and checks that none are left.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.passes.base import run_pass
from graphnet.passes.cse import attrs_key, param_key
from graphnet.passes.manager import optimize
from tests.helpers import check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cse(g: Graph):
    return run_on_copy("cse", g)


# ==================================================================================== keys
def test_param_key_is_bitwise():
    a = np.array([0.0, 1.0], np.float32)
    assert param_key(a) == param_key(a.copy())
    assert param_key(a) != param_key(
        np.array([-0.0, 1.0], np.float32)
    )  # -0.0 is another bit pattern
    assert param_key(a) != param_key(a.astype(np.float64))
    assert param_key(a) != param_key(a.reshape(2, 1))
    assert param_key(np.asfortranarray(np.arange(6.0).reshape(2, 3))) == param_key(
        np.arange(6.0).reshape(2, 3)
    )


def test_attrs_key_separates_what_differs():
    assert attrs_key({"pads": (1, 1)}) == attrs_key({"pads": (1, 1)})
    assert attrs_key({"pads": (1, 1)}) != attrs_key({"pads": (1, 0)})
    assert attrs_key({"alpha": 0.0}) != attrs_key({"alpha": -0.0})
    assert attrs_key({"alpha": float("nan")}) == attrs_key({"alpha": float("nan")})
    assert attrs_key({"value": np.array([1.0], np.float32)}) != attrs_key(
        {"value": np.array([1.0], np.float64)}
    )
    assert attrs_key({"to": 1}) != attrs_key({"to": 1.0})


# ============================================================================ parameters
def test_equal_parameters_are_merged_and_others_kept():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3)).astype(np.float32)
    g = Graph("params")
    g.add_input("x", (None, 3))
    a = g.add_node("MatMul", ["x", param(g, "w1", w)], name="a").outputs[0]
    b = g.add_node("MatMul", ["x", param(g, "w2", w.copy())], name="b").outputs[
        0
    ]  # same bytes: merged
    c = g.add_node(
        "MatMul", ["x", param(g, "w3", w.astype(np.float64).astype(np.float32) + 1)], name="c"
    ).outputs[0]
    d = g.add_node("Add", [param(g, "z1", np.zeros(3, np.float32)), a], name="d").outputs[0]
    e = g.add_node("Add", [param(g, "z2", -np.zeros(3, np.float32)), b], name="e").outputs[
        0
    ]  # -0.0: kept
    for o in (c, d, e):
        g.mark_output(o)
    opt, report = _cse(g)
    assert set(opt.params) == {"w1", "w3", "z1", "z2"}, report.lines
    assert "merged 1 duplicate parameter(s) into 1: w1 <- w2" in report.changes
    # a and b now read the same weight and input: b is merged into a (its reader e reads a).
    assert ops_of(opt) == ["MatMul", "MatMul", "Add", "Add"] and opt.node("e").inputs == [
        "z2",
        "a.out",
    ]
    check_same(g, opt, _feeds(g))


def test_a_parameter_that_is_a_graph_output_is_kept():
    g = Graph("param_out")
    g.add_input("x", (None, 2))
    g.add_param("k1", np.ones(2, np.float32))
    g.add_param("k2", np.ones(2, np.float32))
    g.mark_output(g.add_node("Add", ["x", "k1"], name="a").outputs[0])
    g.mark_output("k2")
    opt, report = _cse(g)
    assert set(opt.params) == {"k1", "k2"} and not report.changed


# ================================================================================== nodes
def _branches(g: Graph, src: str, attrs_a: dict, attrs_b: dict) -> tuple[str, str]:
    rng = np.random.default_rng(1)
    w = param(g, "w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    outs = []
    for name, attrs in (("a", attrs_a), ("b", attrs_b)):
        c = g.add_node("Conv", [src, w], attrs, name=f"conv_{name}").outputs[0]
        outs.append(g.add_node("Relu", [c], name=f"relu_{name}").outputs[0])
    return outs[0], outs[1]


def test_duplicate_branches_merge_in_one_sweep():
    g = Graph("branches")
    g.add_input("x", (None, 3, 5, 5))
    # Spelled differently, resolved the same: explicit default strides/dilations/group.
    a, b = _branches(
        g,
        "x",
        {"pads": (1, 1, 1, 1)},
        {"pads": (1, 1, 1, 1), "strides": (1, 1), "dilations": (1, 1), "group": 1},
    )
    g.mark_output(g.add_node("Add", [a, b], name="sum", outputs=["y"]).outputs[0])
    opt, report = _cse(g)
    assert ops_of(opt) == ["Conv", "Relu", "Add"], report.lines
    assert opt.nodes[-1].inputs == ["relu_a.out", "relu_a.out"]
    assert report.changes == [
        "merged conv_b into conv_a (Conv)",
        "merged relu_b into relu_a (Relu)",
    ]
    check_same(g, opt, _feeds(g))


def test_different_attributes_are_not_merged():
    g = Graph("diff")
    g.add_input("x", (None, 3, 5, 5))
    a, b = _branches(
        g,
        "x",
        {"pads": (1, 1, 1, 1)},
        {
            "pads": (1, 1, 1, 1),
            "dilations": (1, 1),
            "strides": (1, 1),
            "group": 1,
            "kernel_shape": (3, 3),
        },
    )
    c = g.add_node("Conv", ["x", "w"], {"pads": (0, 0, 0, 0)}, name="conv_c").outputs[0]
    g.mark_output(g.add_node("Add", [a, b], name="sum").outputs[0])
    g.mark_output(c)
    opt, _ = _cse(g)
    assert (
        ops_of(opt).count("Conv") == 2
    )  # a = b (kernel_shape is what the weight implies); c has other pads


@pytest.mark.parametrize("op", ["Dropout", "BatchNormalization"])
def test_mode_dependent_nodes_are_never_merged(op):
    g = Graph("mode")
    g.add_input("x", (None, 3, 2, 2))
    if op == "Dropout":
        ins, attrs = ["x"], {"drop_prob": 0.5}
    else:
        ins = ["x"] + [
            param(g, k, np.full(3, v, np.float32))
            for k, v in (("s", 1.5), ("b", 0.1), ("m", 0.2), ("v", 2.0))
        ]
        attrs = {}
    a = g.add_node(op, ins, attrs, name="n1").outputs[0]
    b = g.add_node(op, ins, attrs, name="n2").outputs[0]
    g.mark_output(g.add_node("Add", [a, b], name="sum").outputs[0])
    opt, report = _cse(g)
    assert ops_of(opt) == [op, op, "Add"] and not report.changed
    # In train mode the two Dropouts draw two masks: merging would make them one.
    if op == "Dropout":
        x = np.ones((64, 3, 2, 2), np.float32)
        y = runtime.run(g, {"x": x}, mode="train", seed=0)["sum.out"]
        assert np.any(y == 2.0) and np.any(y == 4.0)  # one of the two kept x / 0.5, or both


def test_opaque_nodes_are_declined_with_the_reason():
    g = Graph("opaque")
    g.add_input("x", (None, 3))
    attrs = {"node": b"", "op_type": "RandomLike", "domain": "com.example"}
    a = g.add_node(
        "Opaque", ["x"], dict(attrs), name="o1", outputs=["o1.out"], infer=False
    ).outputs[0]
    b = g.add_node(
        "Opaque", ["x"], dict(attrs), name="o2", outputs=["o2.out"], infer=False
    ).outputs[0]
    g.mark_output(a)
    g.mark_output(b)
    opt, report = _cse(g)
    assert ops_of(opt) == ["Opaque", "Opaque"] and not report.changed
    assert report.declines == [
        "same op type, inputs and attributes, but Opaque nodes are kept (nothing proves them "
        "deterministic): o1 and o2 (RandomLike)"
    ]


def test_a_removed_graph_output_name_survives():
    g = Graph("outs")
    g.add_input("x", (None, 3))
    a = g.add_node("Relu", ["x"], name="r1").outputs[0]
    g.add_node("Relu", ["x"], name="r2", outputs=["y"])
    g.mark_output(g.add_node("Neg", [a], name="neg", outputs=["z"]).outputs[0])
    g.mark_output("y")
    opt, report = _cse(g)
    assert ops_of(opt) == ["Relu", "Neg"] and opt.outputs == ["z", "y"]
    assert opt.nodes[0].outputs == ["y"] and opt.nodes[1].inputs == ["y"], opt
    check_same(g, opt, _feeds(g))


def test_two_graph_outputs_keep_both_nodes():
    g = Graph("two_outs")
    g.add_input("x", (None, 3))
    g.add_node("Relu", ["x"], name="r1", outputs=["y1"])
    g.add_node("Relu", ["x"], name="r2", outputs=["y2"])
    g.mark_output("y1")
    g.mark_output("y2")
    opt, report = _cse(g)
    assert ops_of(opt) == ["Relu", "Relu"] and not report.changed
    assert report.declines == ["r2: same as r1, but 'y1' and 'y2' are both graph outputs"]


def test_multi_output_nodes_merge_every_output():
    g = Graph("maxpool_idx")
    g.add_input("x", (1, 2, 4, 4))
    attrs = {"kernel_shape": (2, 2), "strides": (2, 2)}
    a = g.add_node("MaxPool", ["x"], attrs, name="p1", outputs=["v1", "i1"])
    b = g.add_node("MaxPool", ["x"], attrs, name="p2", outputs=["v2", "i2"])
    s = g.add_node("Add", [a.outputs[0], b.outputs[0]], name="s").outputs[0]
    eq = g.add_node("Sub", [a.outputs[1], b.outputs[1]], name="d").outputs[0]
    g.mark_output(s)
    g.mark_output(eq)
    opt, _ = _cse(g)
    assert ops_of(opt) == ["MaxPool", "Add", "Sub"] and opt.node("d").inputs == ["i1", "i1"]
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(runtime.run(opt, {"x": x})["d.out"], 0)
    np.testing.assert_array_equal(
        runtime.run(opt, {"x": x})["s.out"], runtime.run(g, {"x": x})["s.out"]
    )


# ============================================================================ randomized
UNARY = ["Relu", "Neg", "Sigmoid", "Tanh"]


@st.composite
def graphs_with_duplicates(draw):
    """A random DAG of unary / binary ops over x; then some nodes are copied (same op, same
    inputs, a new name) and the copies' readers pick either twin."""
    n = draw(st.integers(3, 12))
    plan = []
    for k in range(n):
        if draw(st.booleans()):
            plan.append((draw(st.sampled_from(UNARY)), [draw(st.integers(-1, k - 1))]))
        else:
            plan.append(
                (
                    draw(st.sampled_from(["Add", "Mul", "Sub"])),
                    [draw(st.integers(-1, k - 1)) for _ in range(2)],
                )
            )
    dups = draw(st.sets(st.integers(0, n - 1), max_size=n))
    picks = draw(st.lists(st.booleans(), min_size=2 * n, max_size=2 * n))
    return plan, dups, picks


def _build(plan, dups, picks) -> Graph:
    g = Graph("rand")
    g.add_input("x", (None, 4))
    names: list[list[str]] = []  # per planned node: its output, and its twin's
    p = iter(picks * 2)
    for k, (op, srcs) in enumerate(plan):
        ins = ["x" if s < 0 else names[s][next(p) % len(names[s])] for s in srcs]
        outs = [g.add_node(op, ins, name=f"n{k}").outputs[0]]
        if k in dups:
            outs.append(g.add_node(op, ins, name=f"n{k}_twin").outputs[0])
        names.append(outs)
    for o in names[-1]:
        g.mark_output(o)
    return g


@SETTINGS
@given(graphs_with_duplicates())
def test_randomized_graphs_have_no_duplicates_left(case):
    g = _build(*case)
    opt, _ = _cse(g)
    keys = [(n.op, tuple(n.inputs)) for n in opt.nodes]
    # Only twins that both write graph outputs may stay.
    extra = len(keys) - len(set(keys))
    assert extra <= max(0, len(g.outputs) - 1)
    assert opt.outputs == g.outputs
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want, got = runtime.run(g, {"x": x}), runtime.run(opt, {"x": x})
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], want[o])  # merging computes the very same numbers
    assert not run_pass("cse", opt).changed  # one sweep reaches the fixed point


def test_inference_pipeline_merges_the_duplicated_convs_of_a_fill_model():
    """Inception-style: two Convs of the same input with the same ConstantOfShape weight (1,728
    elements: more than fold-constants materialises)."""
    g = Graph("fills")
    g.add_input("x", (None, 3, 4, 4))
    outs = []
    for k in range(2):
        shape = param(g, f"shape{k}", np.array([64, 3, 3, 3], np.int64))
        w = g.add_node(
            "ConstantOfShape", [shape], {"value": np.array([0.02], np.float32)}, name=f"w{k}"
        ).outputs[0]
        c = g.add_node("Conv", ["x", w], {"pads": (1, 1, 1, 1)}, name=f"conv{k}").outputs[0]
        outs.append(g.add_node("Relu", [c], name=f"relu{k}").outputs[0])
    g.mark_output(g.add_node("Concat", outs, {"axis": 1}, name="cat", outputs=["y"]).outputs[0])
    opt, report = optimize(g, verify=True)
    assert ops_of(opt) == ["ConstantOfShape", "Conv", "Relu", "Concat"], report.format()
    check_same(g, opt, _feeds(g))
    assert not optimize(opt)[1].changed
