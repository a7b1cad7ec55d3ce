"""fold-constants: constant sub-graphs become parameters, WSConv with a constant kernel becomes a
Conv on the standardized kernel, static Shape becomes a constant, and what must not fold stays
(graph outputs, mode-dependent ops, Opaque nodes, results much bigger than their inputs).
Numerics before/after on our runtime and onnxruntime (FOLD_RTOL/ATOL, tests/helpers.py:
the standardized kernel is computed in float64 here but in float32 by the WSConv kernel).
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import passes, runtime
from graphnet.ir import Graph
from graphnet.passes.constant_folding import GROWTH_LIMIT, SMALL_RESULT, standardize_weight
from tests.helpers import check_same, ops_of, param, run_on_copy
from tests.oracles import naive_standardize


def _fold(g: Graph):
    return run_on_copy("fold-constants", g)


def _decline(report, needle):
    assert any(needle in d for d in report.declines), (
        f"no decline containing {needle!r} in {report.lines}"
    )


def test_standardize_weight_is_the_lecture_formula():
    w = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    got = standardize_weight(w, 1e-3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, naive_standardize(w, 1e-3), rtol=1e-6, atol=1e-6
    )  # float32 rounding of O(1) values


@pytest.mark.parametrize("group,bias", [(1, False), (2, True), (4, True)])
def test_wsconv_with_constant_kernel_becomes_conv(group, bias):
    rng = np.random.default_rng(1)
    g = Graph("ws")
    g.add_input("x", (None, 4, 6, 6))
    w = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    ins = ["x", param(g, "w", w)] + (
        [param(g, "b", rng.standard_normal(4).astype(np.float32))] if bias else []
    )
    g.mark_output(
        g.add_node(
            "WSConv", ins, {"group": group, "pads": (1, 1, 1, 1), "epsilon": 1e-4}, name="ws"
        ).outputs[0]
    )
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv"] and "epsilon" not in opt.nodes[0].attrs
    assert report.changes == [
        "ws: WSConv -> Conv with the standardized constant kernel (eps 0.0001)"
    ]
    np.testing.assert_allclose(opt.params["w"], naive_standardize(w, 1e-4), rtol=1e-6, atol=1e-6)
    check_same(g, opt, {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)})


def test_wsconv_kernel_shared_with_a_conv_is_copied():
    rng = np.random.default_rng(2)
    g = Graph("ws_shared")
    g.add_input("x", (None, 3, 5, 5))
    w = param(g, "w", rng.standard_normal((3, 3, 3, 3)).astype(np.float32))
    a = g.add_node("WSConv", ["x", w], {"pads": (1, 1, 1, 1)}, name="ws")
    g.mark_output(g.add_node("Conv", [a.outputs[0], w], name="plain").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Conv"]
    np.testing.assert_array_equal(opt.params["w"], g.params["w"])
    assert opt.node("ws").inputs[1] == "w_std" and "'w' is shared with plain" in report.changes[0]
    check_same(g, opt, {"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)})


def test_wsconv_with_a_computed_kernel_stays():
    g = Graph("ws_dyn")
    g.add_input("x", (None, 3, 5, 5))
    g.add_input("w", (3, 3, 3, 3))
    g.mark_output(g.add_node("WSConv", ["x", "w"], name="ws").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["WSConv"] and not report.changed
    _decline(report, "ws: WSConv's kernel 'w' is not a constant")


def test_constant_chain_folds_link_by_link_into_one_parameter():
    # The weight standardization an exporter writes: (w - mean) / sqrt(mean((w - mean)^2) + eps).
    rng = np.random.default_rng(3)
    g = Graph("chain")
    g.add_input("x", (None, 6))
    w = param(g, "w", rng.standard_normal((6,)).astype(np.float32))
    axes = param(g, "axes", np.array([0], np.int64))
    mean = g.add_node("ReduceMean", [w, axes], {"keepdims": 1}, name="mean").outputs[0]
    c = g.add_node("Sub", [w, mean], name="center").outputs[0]
    sq = g.add_node("Mul", [c, c], name="square").outputs[0]
    var = g.add_node("ReduceMean", [sq, axes], {"keepdims": 1}, name="var").outputs[0]
    sd = g.add_node(
        "Sqrt",
        [g.add_node("Add", [var, param(g, "eps", np.float32(1e-5))], name="plus_eps").outputs[0]],
        name="sd",
    ).outputs[0]
    w_hat = g.add_node("Div", [c, sd], name="std").outputs[0]
    g.mark_output(g.add_node("Add", ["x", w_hat], name="use").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Add"] and sorted(opt.params) == ["std.out"]
    wv = g.params["w"].astype(np.float64)
    want = (wv - wv.mean()) / np.sqrt(((wv - wv.mean()) ** 2).mean() + 1e-5)
    np.testing.assert_allclose(
        opt.params["std.out"], want, rtol=1e-6, atol=1e-6
    )  # float32 chain vs float64 formula
    assert len(report.changes) == 8  # 7 folds + the dropped intermediates
    check_same(g, opt, {"x": rng.standard_normal((2, 6)).astype(np.float32)})


@pytest.mark.parametrize(
    "start,end", [(0, None), (1, None), (-2, None), (0, -1), (1, 100), (3, None)]
)
def test_static_shape_becomes_a_constant(start, end):
    g = Graph("shape")
    g.add_input("x", (2, 3, 4))
    g.add_input("z", (None,), "int64")
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    s = g.add_node("Shape", ["x"], attrs, name="shape")
    g.mark_output(g.add_node("Concat", [s.outputs[0], "z"], {"axis": 0}, name="cat").outputs[0])
    opt, report = _fold(g)
    want = np.array([2, 3, 4][start:end], np.int64)  # ONNX clamps start/end like Python slicing
    np.testing.assert_array_equal(opt.params["shape.out"], want)
    assert opt.params["shape.out"].dtype == np.int64 and ops_of(opt) == ["Concat"]
    assert report.changes[0] == f"folded shape (Shape of (2,3,4)) into the constant {want.tolist()}"
    check_same(g, opt, {"x": np.zeros((2, 3, 4), np.float32), "z": np.array([7, 8], np.int64)})


def test_dynamic_shape_is_left_alone_without_a_decline():
    g = Graph("dyn_shape")
    g.add_input("x", (None, 3))
    g.mark_output(g.add_node("Shape", ["x"], name="shape").outputs[0])
    g.mark_output(g.add_node("Relu", ["x"], name="relu").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Shape", "Relu"] and report.lines == [] and not report.changed


def test_result_much_bigger_than_its_inputs_is_not_folded():
    g = Graph("big")
    g.add_input("x", (None, 16, 32, 32))
    shape = param(g, "shape", np.array([1, 16, 32, 32], np.int64))
    ones = g.add_node("ConstantOfShape", [shape], {"value": np.ones(1, np.float32)}, name="ones")
    g.mark_output(g.add_node("Add", ["x", ones.outputs[0]], name="add").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["ConstantOfShape", "Add"]
    _decline(
        report,
        "ones: all inputs are constant, but its result (16,384 elements) would be more than "
        f"{SMALL_RESULT:,}",
    )
    check_same(g, opt, {"x": np.zeros((2, 16, 32, 32), np.float32)})


def test_small_result_folds_even_when_it_grows():
    g = Graph("small")
    g.add_input("x", (None, 4, 4))
    ones = g.add_node(
        "ConstantOfShape",
        [param(g, "shape", np.array([4, 4], np.int64))],
        {"value": np.full(1, 2.5, np.float32)},
        name="fill",
    )
    g.mark_output(g.add_node("Mul", ["x", ones.outputs[0]], name="mul").outputs[0])
    opt, _ = _fold(g)
    assert ops_of(opt) == ["Mul"] and GROWTH_LIMIT * 2 < 16 <= SMALL_RESULT
    np.testing.assert_array_equal(opt.params["fill.out"], np.full((4, 4), 2.5, np.float32))
    check_same(
        g, opt, {"x": np.random.default_rng(4).standard_normal((2, 4, 4)).astype(np.float32)}
    )


def test_graph_outputs_and_mode_dependent_ops_are_not_folded():
    rng = np.random.default_rng(5)
    g = Graph("keep")
    a = param(g, "a", rng.standard_normal((2, 3)).astype(np.float32))
    r = g.add_node("Relu", [a], name="relu")
    g.mark_output(r.outputs[0])
    st = [param(g, k, rng.uniform(0.5, 2, 3).astype(np.float32)) for k in ("g", "b", "m", "v")]
    bn = g.add_node("BatchNormalization", [a, *st], name="bn")
    g.add_input("x", (None, 3))
    g.mark_output(g.add_node("Add", ["x", bn.outputs[0]], name="add").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "BatchNormalization", "Add"] and not report.changed
    _decline(report, "relu: all inputs are constant, but its output 'relu.out' is a graph output")
    _decline(report, "bn: all inputs are constant, but BatchNormalization depends on the run mode")


def test_opaque_node_is_not_folded():
    g = Graph("opaque")
    a = param(g, "a", np.ones(3, np.float32))
    op = g.add_node(
        "Opaque",
        [a],
        {"node": b"", "op_type": "Mystery", "domain": "com.example"},
        name="m",
        outputs=["m.out"],
        infer=False,
    )
    g.add_input("x", (3,))
    g.mark_output(g.add_node("Add", ["x", op.outputs[0]], name="add", infer=False).outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Opaque", "Add"]
    _decline(report, "m: all inputs are constant, but there is no kernel for Mystery")


def test_pipeline_removes_a_reshape_to_its_own_static_shape():
    g = Graph("reshape_self")
    g.add_input("x", (2, 3, 4))
    s = g.add_node("Shape", ["x"], name="shape")
    rs = g.add_node("Reshape", ["x", s.outputs[0]], name="reshape")
    g.mark_output(g.add_node("Relu", [rs.outputs[0]], name="relu").outputs[0])
    opt, report = passes.optimize(g, verify=True)
    assert ops_of(opt) == ["Relu"] and opt.params == {}
    check_same(
        g, opt, {"x": np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)}
    )


def test_folded_values_match_the_runtime():
    # Every folded parameter equals what the runtime computed for that value before folding.
    rng = np.random.default_rng(7)
    g = Graph("same_values")
    g.add_input("x", (None, 4))
    w = param(g, "w", rng.standard_normal((4, 4)).astype(np.float32))
    t = g.add_node("Transpose", [w], name="t")
    e = g.add_node("Exp", [t.outputs[0]], name="e")
    g.mark_output(g.add_node("MatMul", ["x", e.outputs[0]], name="mm").outputs[0])
    feeds = {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    before = runtime.run(g, feeds, keep_all=True)
    opt, _ = _fold(g)
    assert ops_of(opt) == ["MatMul"]
    np.testing.assert_array_equal(opt.params["e.out"], before["e.out"])
    check_same(g, opt, feeds)


# ===================================================================== partly dynamic shapes
def _view_graph(
    shape_of: str = "r", position: int = 0, allowzero: int = 0, dyn_first: bool = True
) -> Graph:
    """r = Relu(x); Reshape(r, Concat(Unsqueeze(Gather(Shape(shape_of), 0)), [-1])) - the
    `x.view(x.size(0), -1)` an exporter writes (entries swapped when position is 1)."""
    g = Graph("view")
    g.add_input("x", (None, 2, 3, 4))
    g.add_input("x2", (None, 5))
    r = g.add_node("Relu", ["x"], name="relu", outputs=["r"])
    s = g.add_node("Shape", [shape_of], name="shape")
    n = g.add_node(
        "Gather",
        [s.outputs[0], param(g, "zero", np.array(0, np.int64))],
        {"axis": 0},
        name="gather",
    )
    u = g.add_node(
        "Unsqueeze", [n.outputs[0], param(g, "axes", np.array([0], np.int64))], name="unsq"
    )
    rest = param(g, "rest", np.array([-1], np.int64))
    parts = [u.outputs[0], rest] if position == 0 else [rest, u.outputs[0]]
    cat = g.add_node("Concat", parts, {"axis": 0}, name="cat")
    rs = g.add_node(
        "Reshape", [r.outputs[0], cat.outputs[0]], {"allowzero": allowzero}, name="view"
    )
    g.mark_output(rs.outputs[0])
    g.mark_output(g.add_node("Neg", ["x2"], name="neg").outputs[0])
    return g


def test_view_of_the_batch_dim_becomes_a_constant_target():
    g = _view_graph()
    opt, report = passes.optimize(g, verify=True)
    assert [n.op for n in opt.nodes] == ["Relu", "Reshape", "Neg"]
    assert opt.params[opt.node("view").inputs[1]].tolist() == [0, -1]
    assert (
        "copies its own input's dims: the constant [0, -1] (0 = copy)"
        in report["fold-constants"].changes[0]
    )
    for batch in (1, 2, 5):  # exact for every batch size, not just the one verify used
        rng = np.random.default_rng(batch)
        check_same(
            g,
            opt,
            {
                "x": rng.standard_normal((batch, 2, 3, 4)).astype(np.float32),
                "x2": rng.standard_normal((batch, 5)).astype(np.float32),
            },
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize("variant", ["another tensor's dim", "other position", "allowzero"])
def test_view_targets_that_are_not_copies_stay(variant):
    g = {
        "another tensor's dim": lambda: _view_graph(shape_of="x2"),
        "other position": lambda: _view_graph(position=1),
        "allowzero": lambda: _view_graph(allowzero=1),
    }[variant]()
    opt, report = _fold(g)
    assert "Shape" in ops_of(opt) and "Concat" in ops_of(opt) and not report.changed


def test_static_entries_of_a_dynamic_shape_fold():
    # Shape(x)[1:] of an (N, 3, 4) x is the constant [3, 4] although N is dynamic.
    g = Graph("tail")
    g.add_input("x", (None, 3, 4))
    s = g.add_node("Shape", ["x"], name="shape")
    sl = g.add_node(
        "Slice",
        [
            s.outputs[0],
            param(g, "one", np.array([1], np.int64)),
            param(g, "big", np.array([100], np.int64)),
        ],
        name="tail",
    )
    cat = g.add_node(
        "Concat", [param(g, "m1", np.array([-1], np.int64)), sl.outputs[0]], {"axis": 0}, name="cat"
    )
    rs = g.add_node("Reshape", ["x", cat.outputs[0]], name="rs")
    g.mark_output(g.add_node("Relu", [rs.outputs[0]], name="relu").outputs[0])
    opt, report = _fold(g)
    assert opt.params["cat.out"].tolist() == [-1, 3, 4] and opt.params["cat.out"].dtype == np.int64
    assert ops_of(opt) == [
        "Shape",
        "Reshape",
        "Relu",
    ]  # the Shape is dead now; eliminate removes it
    full, _ = passes.optimize(g, verify=True)
    assert ops_of(full) == ["Relu"]  # and the Reshape to [-1, 3, 4] of (N, 3, 4) is a no-op
    check_same(
        g,
        full,
        {"x": np.random.default_rng(8).standard_normal((3, 3, 4)).astype(np.float32)},
        rtol=0,
        atol=0,
    )
