"""eliminate: identities, no-op Reshape/Flatten/Transpose/Cast, Dropout(p=0), dead nodes and
unused parameters; graph output names always survive. Structure, report, numerics before/after
(exact: removing y = x changes no value; onnxruntime on the exported optimized model too) and the
soundness of the no-op Reshape rule against NumPy's reshape for every value of the dynamic dims.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.passes.eliminate import flatten_is_noop, reshape_is_noop
from tests.helpers import check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds

EXACT = dict(rtol=0, atol=0)


def _elim(g: Graph):
    return run_on_copy("eliminate", g)


def _decline(report, needle):
    assert any(needle in d for d in report.declines), (
        f"no decline containing {needle!r} in {report.lines}"
    )


# ================================================================================ identities
def test_identity_chain_is_removed():
    g = Graph("ids")
    g.add_input("x", (None, 4))
    r = g.add_node("Relu", ["x"], name="relu")
    i1 = g.add_node("Identity", [r.outputs[0]], name="id1")
    i2 = g.add_node("Identity", [i1.outputs[0]], name="id2")
    g.mark_output(g.add_node("Sigmoid", [i2.outputs[0]], name="sig").outputs[0])
    opt, report = _elim(g)
    assert ops_of(opt) == ["Relu", "Sigmoid"] and opt.node("sig").inputs == ["relu.out"]
    assert report.changes == ["removed id1: Identity", "removed id2: Identity"]
    check_same(g, opt, _feeds(g), **EXACT)


def test_identity_writing_a_graph_output_renames_the_producer_output():
    g = Graph("id_out")
    g.add_input("x", (None, 4))
    r = g.add_node("Relu", ["x"], name="relu")
    g.add_node("Sigmoid", [r.outputs[0]], name="sig")  # a second reader of relu.out
    g.mark_output(g.add_node("Identity", [r.outputs[0]], name="id", outputs=["logits"]).outputs[0])
    g.mark_output("sig.out")
    opt, _ = _elim(g)
    assert ops_of(opt) == ["Relu", "Sigmoid"] and opt.outputs == ["logits", "sig.out"]
    assert opt.node("relu").outputs == ["logits"] and opt.node("sig").inputs == ["logits"]
    check_same(g, opt, _feeds(g), **EXACT)


@pytest.mark.parametrize(
    "source,needle",
    [
        ("input", "output 'y' would be graph input 'x' unchanged"),
        ("param", "output 'y' would be parameter 'p' unchanged"),
        ("output", "'r' and 'y' are both graph outputs"),
    ],
)
def test_identity_that_must_keep_two_names_stays(source, needle):
    g = Graph("id_keep")
    g.add_input("x", (None, 4))
    src = "x"
    if source == "param":
        src = param(g, "p", np.ones(4, np.float32))
    elif source == "output":
        src = g.add_node("Relu", ["x"], name="relu", outputs=["r"]).outputs[0]
        g.mark_output(src)
    g.mark_output(g.add_node("Identity", [src], name="id", outputs=["y"]).outputs[0])
    opt, report = _elim(g)
    assert "Identity" in ops_of(opt) and not report.changed
    _decline(report, needle)


# =================================================================================== reshape
@pytest.mark.parametrize(
    "in_shape,target,noop",
    [
        ((None, 3, 4), [0, 3, 4], True),
        ((None, 3, 4), [-1, 3, 4], True),
        ((None, 3, 4), [0, -1, 4], True),
        ((None, 3, 4), [0, 0, 0], True),
        ((2, 3, 4), [2, 3, 4], True),
        ((2, 3, 4), [2, -1, 4], True),
        ((None, 3, 4), [0, 4, 3], False),
        ((None, 3, 4), [-1, 12], False),
        ((None, 3, 4), [0, 3, -1], True),
        ((None, None, 4), [0, -1, 4], True),  # the -1 is the only unmatched axis
        ((None, None, 4), [-1, 0, 4], True),
        ((2, 6), [3, 4], False),
    ],
)
def test_reshape_noop_rule_and_pass(in_shape, target, noop):
    assert reshape_is_noop(in_shape, np.array(target), 0) is noop
    g = Graph("reshape")
    g.add_input("x", in_shape)
    rs = g.add_node("Reshape", ["x", param(g, "shape", np.array(target, np.int64))], name="rs")
    g.mark_output(g.add_node("Relu", [rs.outputs[0]], name="relu").outputs[0])
    opt, report = _elim(g)
    assert ops_of(opt) == (["Relu"] if noop else ["Reshape", "Relu"])
    assert ("shape" in opt.params) is (not noop)  # the shape constant is dropped with its reader
    check_same(g, opt, _feeds(g), **EXACT)


def test_reshape_with_allowzero_is_not_a_copy():
    assert not reshape_is_noop((None, 3, 4), np.array([0, 3, 4]), 1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1, max_size=4), st.data())
def test_reshape_noop_rule_is_sound(in_shape, data):
    # Targets built from the input's own entries, 0s, a -1 and random sizes. Sound: whenever the
    # rule says "no-op", NumPy's reshape gives the input's shape for every choice of the dynamic
    # dims. Complete for static shapes: if NumPy's reshape keeps the shape, the rule says so.
    choices = [st.just(0), st.just(-1), st.integers(1, 4)]
    target = [data.draw(st.one_of(*choices, st.just(d if d is not None else 0))) for d in in_shape]
    if target.count(-1) > 1:
        return
    noop = reshape_is_noop(tuple(in_shape), np.array(target), 0)
    for dyn in (1, 2, 3):
        concrete = tuple(dyn if d is None else d for d in in_shape)
        numpy_target = [
            concrete[i] if t == 0 else t for i, t in enumerate(target)
        ]  # allowzero=0: copy
        try:
            same = np.zeros(concrete).reshape(numpy_target).shape == concrete
        except ValueError:  # not a valid reshape of this input at all
            same = False
        if noop:
            assert same, (in_shape, target, dyn)
        elif None not in in_shape:
            assert not same, (in_shape, target)


# =============================================================================== flatten etc.
@pytest.mark.parametrize(
    "in_shape,axis,noop",
    [
        ((None, 5), 1, True),
        ((None, 5), -1, True),
        ((1, 5), 0, True),
        ((None, 1), 2, True),
        ((None, 5), 0, False),
        ((None, 5), 2, False),
        ((None, 3, 4), 1, False),
    ],
)
def test_flatten_noop(in_shape, axis, noop):
    g = Graph("flatten")
    g.add_input("x", in_shape)
    f = g.add_node("Flatten", ["x"], {"axis": axis}, name="flat")
    g.mark_output(g.add_node("Relu", [f.outputs[0]], name="relu").outputs[0])
    opt, _ = _elim(g)
    assert ops_of(opt) == (["Relu"] if noop else ["Flatten", "Relu"])
    check_same(g, opt, _feeds(g), **EXACT)


def test_flatten_rule_on_its_own():
    assert (
        flatten_is_noop((None, 7), 1)
        and not flatten_is_noop((None, 7, 1), 1)
        and not flatten_is_noop(None, 1)
    )


@pytest.mark.parametrize(
    "op,attrs,x_dtype,noop",
    [
        ("Transpose", {"perm": (0, 1, 2)}, "float32", True),
        ("Transpose", {"perm": (0, 2, 1)}, "float32", False),
        ("Cast", {"to": "float32"}, "float32", True),
        ("Cast", {"to": "float64"}, "float32", False),
    ],
)
def test_transpose_and_cast_noops(op, attrs, x_dtype, noop):
    g = Graph(op)
    g.add_input("x", (None, 3, 3), x_dtype)
    n = g.add_node(op, ["x"], attrs, name="n")
    g.mark_output(g.add_node("Neg", [n.outputs[0]], name="neg").outputs[0])
    opt, _ = _elim(g)
    assert ops_of(opt) == (["Neg"] if noop else [op, "Neg"])
    check_same(g, opt, _feeds(g), **EXACT)


# =================================================================================== dropout
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_zero_dropout_is_removed_and_train_mode_is_unchanged(scheme):
    g = Graph("p0")
    g.add_input("x", (None, 6))
    d = g.add_node("Dropout", ["x"], {"drop_prob": 0.0, "scheme": scheme}, name="drop")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, report = _elim(g)
    assert ops_of(opt) == ["Relu"] and report.changes == ["removed drop: Dropout with drop_prob 0"]
    feeds = _feeds(g)
    check_same(g, opt, feeds, **EXACT)
    # eliminate is mode-independent: a Dropout that drops nothing is an identity in training too
    np.testing.assert_array_equal(
        runtime.run(opt, feeds, mode="train", seed=1)["relu.out"],
        runtime.run(g, feeds, mode="train", seed=1)["relu.out"],
    )


def test_zero_dropout_whose_mask_is_read_stays():
    g = Graph("p0_mask")
    g.add_input("x", (None, 6))
    d = g.add_node("Dropout", ["x"], {"drop_prob": 0.0}, name="drop", outputs=["y", "mask"])
    g.mark_output("y")
    g.mark_output("mask")
    opt, report = _elim(g)
    assert ops_of(opt) == ["Dropout"]
    _decline(report, "drop: Dropout with drop_prob 0, but its mask output 'mask' is read")
    assert d.outputs == ["y", "mask"]


def test_nonzero_dropout_is_left_to_drop_dropout():
    g = Graph("p5")
    g.add_input("x", (None, 6))
    g.mark_output(g.add_node("Dropout", ["x"], {"drop_prob": 0.5}, name="drop").outputs[0])
    opt, report = _elim(g)
    assert ops_of(opt) == ["Dropout"] and report.lines == []


# ============================================================================ dead code
def test_dead_nodes_and_unused_parameters_are_removed():
    g = Graph("dead")
    g.add_input("x", (None, 4))
    w = param(g, "w", np.ones((4, 4), np.float32))
    param(g, "orphan", np.zeros(3, np.float32))
    dead = g.add_node("MatMul", ["x", w], name="unused_mm")
    g.add_node("Relu", [dead.outputs[0]], name="unused_relu")
    g.mark_output(g.add_node("Sigmoid", ["x"], name="sig").outputs[0])
    opt, report = _elim(g)
    assert ops_of(opt) == ["Sigmoid"] and opt.params == {}
    assert report.changes == [
        "removed 2 dead node(s) no output depends on: unused_mm, unused_relu",
        "removed 2 unused parameter(s): w, orphan",
    ]
    assert report.nodes_before == 3 and report.nodes_after == 1
    assert report.params_before == 19 and report.params_after == 0
    check_same(g, opt, _feeds(g), **EXACT)


def test_clean_graph_reports_no_change():
    g = Graph("clean")
    g.add_input("x", (None, 4))
    g.mark_output(g.add_node("Relu", ["x"], name="relu").outputs[0])
    opt, report = _elim(g)
    assert not report.changed and report.summary() == "eliminate: no change"
    assert repr(opt) == repr(g)
