"""The optimizer gaps the ONNX zoo's light models (tests/onnx_io/test_zoo_models.py) exposed:

- statistics computed by a constant sub-graph: the light models write every parameter as
  `ConstantOfShape(shape)`, and fold-constants keeps results much bigger than their inputs as
  nodes (a 2048-channel ResNet-50 statistic from a 1-element shape), so fold-batchnorm evaluates
  per-channel vectors itself (`passes._graph.constant_value`);
- a per-channel Mul / Add after the BN (Caffe2's BN -> scale layer, as DenseNet-121 and
  Inception v2 write it) is absorbed into the BN's gamma / beta before the BN folds;
- fold-constants: a Reshape (Unsqueeze, Squeeze, Flatten, Expand) of a ConstantOfShape fill is
  the fill in the new shape (Inception v1 reshapes its classifier weight).

Each rewrite is checked for structure (which ops remain) and numerics (NumPy before/after and
onnxruntime on the optimized export, FOLD_RTOL/ATOL of tests/helpers.py), and the pure
helpers against NumPy's own broadcasting.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.passes._graph import constant_value
from graphnet.passes.constant_folding import SMALL_RESULT
from graphnet.passes.fold_batchnorm import per_channel_vector
from graphnet.passes.manager import optimize
from tests.helpers import add_bn, bn_reference, check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds


def _fold(g: Graph):
    return run_on_copy("fold-batchnorm", g)


# ======================================================================= per_channel_vector
@pytest.mark.parametrize("shape", [(), (1,), (4, 1, 1), (1, 4, 1, 1), (1, 1, 1), (1, 1, 1, 1)])
def test_per_channel_vector_accepts_what_broadcasts_per_channel(shape):
    rng = np.random.default_rng(1)
    c = rng.standard_normal(shape)
    vec = per_channel_vector(c, 4, 4)
    y = rng.standard_normal((2, 4, 3, 5))
    # Independent check: NumPy's broadcasting of y * c equals y times the vector on axis 1.
    assert vec is not None and vec.shape == (4,)
    np.testing.assert_array_equal(y * c, y * vec[None, :, None, None])


@pytest.mark.parametrize(
    "shape,why",
    [
        ((4,), "a 1-D (4,) lines up with the LAST axis (width), not the channels"),
        ((1, 1, 3, 5), "spatial map"),
        ((2, 4, 1, 1), "per batch item"),
        ((1, 1, 4, 1, 1), "rank 5 > 4: broadcasting would add an axis"),
        ((3, 1, 1), "3 channels != 4"),
    ],
)
def test_per_channel_vector_rejects_other_shapes(shape, why):
    assert per_channel_vector(np.ones(shape), 4, 4) is None, why


# ============================================================================ constant_value
def _cos(g: Graph, shape: list[int], fill: float, name: str) -> str:
    """ConstantOfShape(shape) filled with `fill`, as the light zoo models write parameters."""
    s = param(g, f"{name}__SHAPE", np.array(shape, np.int64))
    return g.add_node(
        "ConstantOfShape", [s], {"value": np.array([fill], np.float32)}, name=name, outputs=[name]
    ).outputs[0]


def test_constant_value_evaluates_a_constant_chain_within_the_limit():
    g = Graph("cv")
    g.add_input("x", (None, 3))
    v = _cos(g, [3], 0.5, "v")
    u = g.add_node("Unsqueeze", [v, param(g, "axes", np.array([1], np.int64))], name="u").outputs[0]
    g.mark_output(g.add_node("Add", ["x", v], name="add").outputs[0])
    np.testing.assert_array_equal(constant_value(g, u, 3), np.full((3, 1), 0.5, np.float32))
    assert constant_value(g, u, 2) is None  # 3 elements > limit 2
    assert constant_value(g, "x", 100) is None  # a graph input is not a constant
    assert constant_value(g, "add", 100) is None  # depends on x
    assert ops_of(g) == ["ConstantOfShape", "Unsqueeze", "Add"]  # nothing was changed


def test_constant_value_does_not_evaluate_mode_dependent_ops():
    g = Graph("cv_drop")
    g.add_input("x", (None, 3))
    d = g.add_node(
        "Dropout", [param(g, "c", np.ones(3, np.float32))], {"drop_prob": 0.5}, name="drop"
    ).outputs[0]
    g.mark_output(g.add_node("Add", ["x", d], name="add").outputs[0])
    assert constant_value(g, d, 100) is None


# ======================================================= statistics from ConstantOfShape
def _cos_bn_graph(channels: int, *, conv_weight: bool) -> tuple[Graph, dict]:
    """x -> Conv(W) -> BN whose four statistics are ConstantOfShape([C]) fills (ResNet-50's
    res5 BNs have C = 2048 > fold-constants' 1024-element limit)."""
    rng = np.random.default_rng(3)
    g = Graph("cos_bn")
    g.add_input("x", (1, 3, 4, 4))
    w = rng.standard_normal((channels, 3, 1, 1)).astype(np.float32) * 0.5
    conv = g.add_node(
        "Conv",
        ["x", param(g, "w", w) if conv_weight else _cos(g, [channels, 3, 1, 1], 0.02, "w")],
        name="conv",
    )
    fills = {"scale": 1.5, "B": -0.25, "mean": 0.125, "var": 2.0}
    st = [_cos(g, [channels], v, f"bn_{k}") for k, v in fills.items()]
    g.mark_output(
        g.add_node("BatchNormalization", [conv.outputs[0], *st], name="bn", outputs=["y"]).outputs[
            0
        ]
    )
    return g, fills


@pytest.mark.parametrize("channels", [8, 2048])
def test_bn_with_constant_of_shape_statistics_folds_into_conv(channels):
    g, fills = _cos_bn_graph(channels, conv_weight=True)
    opt, report = optimize(g)
    assert ops_of(opt) == ["Conv"], report  # the ConstantOfShape nodes died with the BN
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    # ... and against the BN formula on a plain 1x1 conv (float64 reference, float32 output)
    conv = np.einsum(
        "nchw,oc->nohw", feeds["x"].astype(np.float64), g.params["w"][:, :, 0, 0].astype(np.float64)
    )
    st = {k: np.full(channels, v) for k, v in fills.items()}
    np.testing.assert_allclose(ref["y"], bn_reference(conv, st, 1e-5), rtol=1e-5, atol=1e-5)


def test_bn_after_a_constant_of_shape_conv_weight_folds_into_the_fill():
    # W = fill(0.02) and s is one number (fill statistics): W' = fill(0.02 * s) is a fill again,
    # so the ConstantOfShape node stays (no weight materialised) with a new value, and BN is gone.
    g, fills = _cos_bn_graph(2048, conv_weight=False)
    opt, report = optimize(g)
    assert ops_of(opt) == ["ConstantOfShape", "Conv"], report
    s = fills["scale"] / np.sqrt(fills["var"] + 1e-5)
    value = opt.nodes[0].attrs["value"]
    assert value.dtype == np.float32 and value.shape == (1,)
    np.testing.assert_allclose(value[0], np.float32(0.02) * s, rtol=1e-7)
    assert "folded bn into conv (Conv)" in report["fold-batchnorm"].changes
    check_same(g, opt, _feeds(g))


# ===================================================== a per-channel Mul / Add after the BN
def _bn_scale_graph(mul_shape, add_shape, *, mul_first_operand=False, producer="Conv", seed=5):
    """x -> [Conv] -> BN -> Mul(c) -> Add(d) -> Relu -> y (Caffe2's BN + scale layer)."""
    rng = np.random.default_rng(seed)
    g = Graph("bn_scale")
    g.add_input("x", (None, 4, 5, 5))
    src = "x"
    if producer == "Conv":
        w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
        src = g.add_node(
            "Conv", ["x", param(g, "w", w)], {"pads": (1, 1, 1, 1)}, name="conv"
        ).outputs[0]
    elif producer == "Relu":
        src = g.add_node("Relu", ["x"], name="r0").outputs[0]
    y = add_bn(g, src, "bn", rng)
    c = param(g, "c", rng.uniform(0.5, 2, mul_shape).astype(np.float32))
    m = g.add_node("Mul", [c, y] if mul_first_operand else [y, c], name="mul").outputs[0]
    a = g.add_node(
        "Add", [m, param(g, "d", rng.standard_normal(add_shape).astype(np.float32))], name="add"
    ).outputs[0]
    g.mark_output(g.add_node("Relu", [a], name="relu", outputs=["y"]).outputs[0])
    return g


@pytest.mark.parametrize(
    "mul_shape,add_shape", [((4, 1, 1), (4, 1, 1)), ((1, 4, 1, 1), ()), ((), (1, 4, 1, 1))]
)
@pytest.mark.parametrize("mul_first_operand", [False, True])
def test_scale_layer_is_absorbed_then_the_bn_folds_into_the_conv(
    mul_shape, add_shape, mul_first_operand
):
    g = _bn_scale_graph(mul_shape, add_shape, mul_first_operand=mul_first_operand)
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Relu"], report.lines
    assert report.changes[:3] == [
        "absorbed mul (Mul by the per-channel constant 'c') into bn's scale and B",
        "absorbed add (Add by the per-channel constant 'd') into bn's B",
        "folded bn into conv (Conv)",
    ]
    check_same(g, opt, _feeds(g))


def test_scale_layer_after_a_bn_with_nothing_to_fold_into_leaves_one_affine():
    g = _bn_scale_graph((4, 1, 1), (4, 1, 1), producer="Relu")
    opt, _ = _fold(g)
    assert ops_of(opt) == ["Relu", "Mul", "Add", "Relu"]  # BN + Mul + Add -> Mul + Add
    check_same(g, opt, _feeds(g))


@pytest.mark.parametrize(
    "mul_shape,why",
    [((1, 1, 5, 5), "a spatial map is not per channel"), ((5,), "(5,) multiplies the width axis")],
)
def test_a_mul_that_is_not_per_channel_stays(mul_shape, why):
    g = _bn_scale_graph(mul_shape, (4, 1, 1))
    opt, report = _fold(g)
    assert not any(line.startswith("absorbed") for line in report.changes), why
    assert ops_of(opt) == ["Conv", "Mul", "Add", "Relu"], (
        why
    )  # BN folded into the Conv, Mul/Add kept
    check_same(g, opt, _feeds(g))


def test_bn_output_with_a_second_reader_absorbs_nothing():
    g = _bn_scale_graph((4, 1, 1), (4, 1, 1))
    bn_out = next(n for n in g.nodes if n.op == "BatchNormalization").outputs[0]
    g.mark_output(bn_out)  # the un-scaled BN output is needed too
    opt, report = _fold(g)
    assert not any(line.startswith("absorbed") for line in report.changes)
    assert ops_of(opt).count("Mul") >= 1
    check_same(g, opt, _feeds(g))


def test_mul_by_a_graph_input_is_not_absorbed():
    rng = np.random.default_rng(9)
    g = Graph("bn_mul_input")
    g.add_input("x", (None, 3, 2, 2))
    g.add_input("c", (3, 1, 1))
    y = add_bn(g, g.add_node("Relu", ["x"], name="r").outputs[0], "bn", rng)
    g.mark_output(g.add_node("Mul", [y, "c"], name="mul", outputs=["y"]).outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "Mul", "Add", "Mul"]
    check_same(g, opt, _feeds(g))


def test_scale_layer_with_constant_of_shape_operands_is_absorbed_through_unsqueeze():
    # DenseNet-121's form: Mul(BN(x), Unsqueeze(ConstantOfShape([C]), axes=[1, 2])).
    rng = np.random.default_rng(6)
    g = Graph("densenet_like")
    g.add_input("x", (1, 1100, 2, 2))  # 1100 channels: fold-constants keeps the ConstantOfShape
    y = add_bn(g, g.add_node("Relu", ["x"], name="r").outputs[0], "bn", rng)
    axes = param(g, "axes", np.array([1, 2], np.int64))
    sc = g.add_node("Unsqueeze", [_cos(g, [1100], 1.5, "sc"), axes], name="usc").outputs[0]
    bi = g.add_node("Unsqueeze", [_cos(g, [1100], 0.25, "bi"), axes], name="ubi").outputs[0]
    m = g.add_node("Mul", [y, sc], name="mul").outputs[0]
    g.mark_output(g.add_node("Add", [m, bi], name="add", outputs=["y"]).outputs[0])
    opt, _ = optimize(g)
    assert ops_of(opt) == ["Relu", "Mul", "Add"]
    ref = check_same(g, opt, _feeds(g))
    st = {k: g.params[f"bn.{k}"] for k in ("scale", "B", "mean", "var")}
    relu = np.maximum(_feeds(g)["x"], 0)
    np.testing.assert_allclose(
        ref["y"], bn_reference(relu, st, 1e-5) * 1.5 + 0.25, rtol=1e-5, atol=1e-5
    )


def test_bn_statistics_keep_float32_after_absorbing():
    g = _bn_scale_graph((4, 1, 1), (4, 1, 1), producer="Relu")
    opt, _ = _fold(g)
    assert all(a.dtype == np.float32 for k, a in opt.params.items() if a.dtype.kind == "f")
    out = runtime.run(opt, _feeds(g))["y"]
    assert out.dtype == np.float32


# ======================================================== fold-constants: moved fills
def _moved_fill(op: str, args: dict, fill_shape: tuple, x_shape: tuple) -> Graph:
    """y = x + op(ConstantOfShape(fill_shape), *args): the fill has more than SMALL_RESULT
    elements, so fold-constants keeps it as a node."""
    g = Graph(f"fill_{op}")
    g.add_input("x", x_shape)
    w = _cos(g, list(fill_shape), 0.25, "w")
    moved = g.add_node(
        op, [w] + [param(g, k, np.asarray(v, np.int64)) for k, v in args.items()], name="mv"
    ).outputs[0]
    g.mark_output(g.add_node("Add", ["x", moved], name="add", outputs=["y"]).outputs[0])
    return g


@pytest.mark.parametrize(
    "op,args,fill_shape,new_shape",
    [
        ("Reshape", {"target": [40, 64]}, (2560,), (40, 64)),
        ("Reshape", {"target": [-1, 64]}, (4, 10, 64), (40, 64)),
        ("Unsqueeze", {"axes": [0]}, (40, 64), (1, 40, 64)),
        ("Squeeze", {"axes": [0]}, (1, 40, 64), (40, 64)),
        ("Flatten", {}, (40, 8, 8), (40, 64)),
        ("Expand", {"shape": [2, 1, 1]}, (40, 64), (2, 40, 64)),
    ],
)
def test_a_moved_fill_is_a_fill_of_the_new_shape(op, args, fill_shape, new_shape):
    assert int(np.prod(fill_shape)) > SMALL_RESULT
    g = _moved_fill(
        op, args, fill_shape, (None, *new_shape[1:]) if len(new_shape) == 3 else new_shape
    )
    opt, report = optimize(g)
    assert ops_of(opt) == ["ConstantOfShape", "Add"], report
    np.testing.assert_array_equal(
        opt.params[opt.nodes[0].inputs[0]], new_shape
    )  # the new fill's shape
    assert any("became ConstantOfShape" in line for line in report.passes[0].lines), report.passes[
        0
    ].lines
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_array_equal(ref["y"], feeds["x"] + np.float32(0.25))  # x + the fill, exactly


def test_a_fill_with_another_reader_stays_and_the_move_still_goes():
    # (A fill of the same shape as the moved one would be merged with it by cse: another shape.)
    g = _moved_fill("Reshape", {"target": [40, 64]}, (2560,), (40, 64))
    g.mark_output(g.add_node("Relu", ["w"], name="r").outputs[0])  # the fill itself is read again
    opt, _ = optimize(g)
    assert ops_of(opt) == ["ConstantOfShape", "ConstantOfShape", "Add", "Relu"]
    check_same(g, opt, _feeds(g))


def test_a_moved_fill_that_is_a_graph_output_stays():
    g = Graph("fill_out")
    g.add_input("x", (None, 3))
    w = _cos(g, [40, 64], 0.25, "w")
    g.mark_output(
        g.add_node(
            "Reshape", [w, param(g, "t", np.array([64, 40]))], name="mv", outputs=["y"]
        ).outputs[0]
    )
    g.mark_output(g.add_node("Relu", ["x"], name="r").outputs[0])
    opt, report = optimize(g)
    assert ops_of(opt) == ["ConstantOfShape", "Reshape", "Relu"]
    assert any("is a graph output" in line for line in report.passes[0].lines)
