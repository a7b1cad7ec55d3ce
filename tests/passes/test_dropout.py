"""drop-dropout: inverted Dropout removed, classic Dropout's scale folded into a neighbour (or a
Mul), a read mask replaced by constant ones; structure, report and numerics before/after (our
runtime and onnxruntime on the exported optimized model). Tolerances: FOLD_RTOL/ATOL
(tests/helpers.py), since a folded weight keep * W is rounded to float32 once more.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import passes, runtime
from graphnet.ir import Graph
from tests.helpers import add_bn, check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds

KEEP = 0.7  # drop_prob 0.3


def _dropout(
    g: Graph,
    x: str,
    *,
    scheme: str,
    drop: float = 1 - KEEP,
    name: str = "drop",
    mask: bool = False,
    out=None,
):
    outputs = [out or f"{name}.y"] + ([f"{name}.mask"] if mask else [])
    return g.add_node(
        "Dropout", [x], {"drop_prob": drop, "scheme": scheme}, name=name, outputs=outputs
    )


def _run_pass(g: Graph):
    return run_on_copy("drop-dropout", g)


def _conv(g: Graph, x: str, name: str, rng, cin=3, cout=4, bias=True, pads=(1, 1, 1, 1), w=None):
    ins = [
        x,
        w or param(g, f"{name}.w", rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3),
    ]
    if bias:
        ins.append(param(g, f"{name}.b", rng.standard_normal(cout).astype(np.float32)))
    return g.add_node("Conv", ins, {"pads": pads}, name=name)


def _decline(report, needle):
    assert any(needle in d for d in report.declines), (
        f"no decline containing {needle!r} in {report.lines}"
    )


# ================================================================================= inverted
def test_inverted_dropout_is_removed():
    rng = np.random.default_rng(1)
    g = Graph("inv")
    g.add_input("x", (None, 3, 5, 5))
    c = _conv(g, "x", "conv", rng)
    d = _dropout(g, c.outputs[0], scheme="inverted")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu", outputs=["y"]).outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Conv", "Relu"]
    assert report.changes == ["removed drop (inverted, drop_prob 0.3): identity at inference"]
    np.testing.assert_array_equal(opt.params["conv.w"], g.params["conv.w"])
    check_same(g, opt, _feeds(g))


def test_inverted_dropout_writing_a_graph_output_keeps_the_output_name():
    g = Graph("inv_out")
    g.add_input("x", (None, 6))
    r = g.add_node("Relu", ["x"], name="relu")
    g.mark_output(_dropout(g, r.outputs[0], scheme="inverted", out="y").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Relu"] and opt.outputs == ["y"] and opt.nodes[0].outputs == ["y"]
    check_same(g, opt, _feeds(g))


def test_inverted_dropout_from_input_to_output_becomes_identity():
    g = Graph("inv_io")
    g.add_input("x", (None, 6))
    g.mark_output(_dropout(g, "x", scheme="inverted", out="y").outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Identity"] and opt.outputs == ["y"]
    assert "output 'y' would be graph input 'x' unchanged" in report.changes[0]
    check_same(g, opt, _feeds(g))


@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_zero_drop_probability_is_an_identity_in_both_schemes(scheme):
    g = Graph("p0")
    g.add_input("x", (None, 6))
    d = _dropout(g, "x", scheme=scheme, drop=0.0)
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Relu"]
    check_same(g, opt, _feeds(g))


# =================================================================== classic: into the producer
def test_classic_scale_folds_into_the_conv_before():
    rng = np.random.default_rng(2)
    g = Graph("classic_conv")
    g.add_input("x", (None, 3, 5, 5))
    c = _conv(g, "x", "conv", rng)
    d = _dropout(g, c.outputs[0], scheme="classic")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Conv", "Relu"]
    assert report.changes == ["removed drop (classic): its scale 0.7 folded into conv (Conv)"]
    for k in ("conv.w", "conv.b"):  # keep * W and keep * b, in float64 then cast
        np.testing.assert_array_equal(
            opt.params[k], (g.params[k].astype(np.float64) * KEEP).astype(np.float32)
        )
    check_same(g, opt, _feeds(g))


def test_classic_scale_folds_into_gemm_alpha_and_beta():
    rng = np.random.default_rng(3)
    g = Graph("classic_gemm")
    g.add_input("a", (None, 4))
    fc = g.add_node(
        "Gemm",
        [
            "a",
            param(g, "W", rng.standard_normal((5, 4)).astype(np.float32)),
            param(g, "C", rng.standard_normal(5).astype(np.float32)),
        ],
        {"transB": 1, "alpha": 2.0, "beta": 0.5},
        name="fc",
    )
    g.mark_output(_dropout(g, fc.outputs[0], scheme="classic").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Gemm"]
    assert opt.nodes[0].attrs["alpha"] == pytest.approx(2.0 * KEEP) and opt.nodes[0].attrs[
        "beta"
    ] == pytest.approx(0.5 * KEEP)
    np.testing.assert_array_equal(opt.params["W"], g.params["W"])  # no parameter changes
    check_same(g, opt, _feeds(g))


@pytest.mark.parametrize("const_side", [0, 1])
def test_classic_scale_folds_into_the_constant_operand_of_matmul(const_side):
    rng = np.random.default_rng(4)
    g = Graph("classic_mm")
    g.add_input("a", (4, 4))
    w = param(g, "W", rng.standard_normal((4, 4)).astype(np.float32))
    mm = g.add_node("MatMul", [w, "a"] if const_side == 0 else ["a", w], name="mm")
    g.mark_output(_dropout(g, mm.outputs[0], scheme="classic").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["MatMul"]
    np.testing.assert_array_equal(
        opt.params["W"], (g.params["W"].astype(np.float64) * KEEP).astype(np.float32)
    )
    check_same(g, opt, _feeds(g))


def test_classic_scale_folds_into_batchnorm_then_bn_into_conv():
    rng = np.random.default_rng(5)
    g = Graph("conv_bn_drop")
    g.add_input("x", (None, 3, 5, 5))
    c = _conv(g, "x", "conv", rng, bias=False)
    y = add_bn(g, c.outputs[0], "bn", rng)
    d = _dropout(g, y, scheme="classic")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Conv", "BatchNormalization", "Relu"]
    assert (
        report.changes[0]
        == "removed drop (classic): its scale 0.7 folded into bn (BatchNormalization)"
    )
    check_same(g, opt, _feeds(g))
    full, _ = passes.optimize(g, verify=True)
    assert ops_of(full) == ["Conv", "Relu"]
    check_same(g, full, _feeds(g))


def test_shared_weight_gets_a_copy():
    rng = np.random.default_rng(6)
    g = Graph("shared")
    g.add_input("x", (None, 3, 5, 5))
    w = param(g, "w", rng.standard_normal((3, 3, 3, 3)).astype(np.float32))
    c1 = _conv(g, "x", "conv1", rng, cin=3, cout=3, bias=False, w=w)
    d = _dropout(g, c1.outputs[0], scheme="classic")
    c2 = _conv(g, d.outputs[0], "conv2", rng, cin=3, cout=3, bias=False, w=w)
    g.mark_output(c2.outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Conv", "Conv"]
    np.testing.assert_array_equal(opt.params["w"], g.params["w"])
    assert opt.node("conv1").inputs[1] != "w" and opt.node("conv2").inputs[1] == "w"
    assert "'w' is shared with conv2" in report.changes[0]
    check_same(g, opt, _feeds(g))


# =================================================================== classic: into the consumer
def test_classic_scale_folds_into_the_following_padded_conv():
    # keep * 0 = 0: padding does not stop a scale (unlike a BN shift).
    rng = np.random.default_rng(7)
    g = Graph("relu_drop_conv")
    g.add_input("x", (None, 3, 5, 5))
    r = g.add_node("Relu", ["x"], name="relu")
    d = _dropout(g, r.outputs[0], scheme="classic")
    g.mark_output(_conv(g, d.outputs[0], "conv", rng).outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Relu", "Conv"]
    _decline(report, "drop: scale not folded into the layer before it: relu is a Relu")
    assert (
        report.changes[0]
        == "removed drop (classic): its scale 0.7 folded into the following conv (Conv)"
    )
    np.testing.assert_array_equal(opt.params["conv.b"], g.params["conv.b"])  # only W scales
    check_same(g, opt, _feeds(g))


@pytest.mark.parametrize("operand", [0, 1, 2])
def test_classic_scale_folds_into_the_following_gemm(operand):
    rng = np.random.default_rng(8)
    g = Graph("drop_gemm")
    shapes = {0: (3, 4), 1: (4, 5), 2: (3, 5)}
    g.add_input("x", shapes[operand])
    r = g.add_node("Relu", ["x"], name="relu")
    d = _dropout(g, r.outputs[0], scheme="classic")
    ins = [param(g, f"p{k}", rng.standard_normal(shapes[k]).astype(np.float32)) for k in range(3)]
    ins[operand] = d.outputs[0]
    g.mark_output(g.add_node("Gemm", ins, {"alpha": 1.5, "beta": 0.25}, name="fc").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Relu", "Gemm"]
    check_same(g, opt, _feeds(g))


def test_classic_with_no_linear_neighbour_becomes_a_mul():
    g = Graph("relu_drop_relu")
    g.add_input("x", (None, 6))
    r = g.add_node("Relu", ["x"], name="relu1")
    d = _dropout(g, r.outputs[0], scheme="classic")
    g.mark_output(g.add_node("Sigmoid", [d.outputs[0]], name="sig").outputs[0])
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Relu", "Mul", "Sigmoid"]
    _decline(report, "not folded into the layer after it: sig is a Sigmoid")
    mul = opt.nodes[1]
    assert opt.params[mul.inputs[1]].dtype == np.float32 and float(
        opt.params[mul.inputs[1]]
    ) == np.float32(KEEP)
    check_same(g, opt, _feeds(g))


def test_classic_next_to_shared_values_and_wsconv_is_not_folded():
    rng = np.random.default_rng(9)
    g = Graph("busy")
    g.add_input("x", (None, 3, 5, 5))
    c = _conv(g, "x", "conv", rng, cout=3)
    d = _dropout(g, c.outputs[0], scheme="classic")
    ws = g.add_node(
        "WSConv",
        [d.outputs[0], param(g, "ws.w", rng.standard_normal((3, 3, 3, 3)).astype(np.float32))],
        {"pads": (1, 1, 1, 1)},
        name="ws",
    )
    g.mark_output(g.add_node("Add", [ws.outputs[0], c.outputs[0]], name="add").outputs[0])
    opt, report = _run_pass(g)
    _decline(report, "conv output also feeds add")
    _decline(report, "ws is a WSConv: standardizing its weight would undo the scale")
    assert ops_of(opt) == ["Conv", "Mul", "WSConv", "Add"]
    check_same(g, opt, _feeds(g))


# ======================================================================================= mask
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("use", ["graph output", "read by a node"])
def test_read_mask_becomes_constant_ones(scheme, batch, use):
    g = Graph("mask")
    g.add_input("x", (batch, 4))
    d = _dropout(g, "x", scheme=scheme, mask=True, out="y")
    g.mark_output("y")
    if use == "graph output":
        g.mark_output(d.outputs[1])
    else:
        g.mark_output(g.add_node("Cast", [d.outputs[1]], {"to": "float32"}, name="cast").outputs[0])
    opt, report = _run_pass(g)
    want_ops = ["ConstantOfShape"] if batch else ["Shape", "ConstantOfShape"]
    assert [o for o in ops_of(opt) if o in ("Shape", "ConstantOfShape")] == want_ops
    assert "Dropout" not in ops_of(opt) and opt.outputs == g.outputs
    assert "now comes from drop_mask (ConstantOfShape" in report.changes[0]
    feeds = _feeds(g, batch=2)
    mask = runtime.run(opt, feeds, keep_all=True)["drop.mask"]
    assert mask.dtype == np.bool_ and mask.shape == (batch or 2, 4) and mask.all()
    check_same(g, opt, feeds)


def test_unread_mask_output_is_just_dropped():
    g = Graph("mask_unread")
    g.add_input("x", (None, 4))
    d = _dropout(g, "x", scheme="inverted", mask=True)
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Relu"] and "drop.mask" not in opt.values
    check_same(g, opt, _feeds(g))


def test_pipeline_removes_dropout_between_conv_and_bn_before_folding():
    # The order argument of passes.manager: drop-dropout runs before fold-batchnorm.
    rng = np.random.default_rng(10)
    g = Graph("conv_drop_bn")
    g.add_input("x", (None, 3, 5, 5))
    c = _conv(g, "x", "conv", rng)
    d = _dropout(g, c.outputs[0], scheme="inverted")
    g.mark_output(add_bn(g, d.outputs[0], "bn", rng))
    opt, report = passes.optimize(g, verify=True)
    assert ops_of(opt) == ["Conv"]
    check_same(g, opt, _feeds(g))


# ====================================================== run-time ratio / training_mode inputs
def _runtime_dropout_graph(with_mode: bool, scheme: str = "inverted") -> Graph:
    """Dropout(x, ratio, training_mode) whose ratio (and mode) are graph inputs, as an imported
    ONNX Dropout-12+ may have them."""
    g = Graph("rt")
    g.add_input("x", (None, 6))
    g.add_input("ratio", (), "float32")
    ins = ["x", "ratio"]
    if with_mode:
        g.add_input("training_mode", (), "bool")
        ins.append("training_mode")
    d = g.add_node("Dropout", ins, {"drop_prob": 0.5, "scheme": scheme}, name="drop")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu", outputs=["y"]).outputs[0])
    return g


def _rt_feeds(g: Graph) -> dict:
    feeds = {
        "x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6),
        "ratio": np.array(0.25, np.float32),
    }
    if "training_mode" in g.inputs:
        feeds["training_mode"] = np.array(False)
    return feeds


def test_dropout_with_run_time_training_mode_is_kept():
    g = _runtime_dropout_graph(with_mode=True)
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Dropout", "Relu"]
    assert report.declines == ["drop: its training_mode 'training_mode' is computed at run time"]
    runtime.Session(opt)  # still plans


def test_inverted_dropout_with_run_time_ratio_is_removed():
    g = _runtime_dropout_graph(with_mode=False)
    opt, _ = _run_pass(g)
    assert ops_of(opt) == ["Relu"]
    check_same(g, opt, _rt_feeds(g))


def test_classic_dropout_with_run_time_ratio_is_kept():
    g = _runtime_dropout_graph(with_mode=False, scheme="classic")
    opt, report = _run_pass(g)
    assert ops_of(opt) == ["Dropout", "Relu"] and "computed at run time" in report.declines[0]
