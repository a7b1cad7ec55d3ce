"""The node-count gaps against onnxsim / onnxslim / onnxruntime (benchmarks/README.md):

- BN / a per-channel scale after a Conv whose weight is a ConstantOfShape or Expand fill (the ONNX
  zoo's light models): folded as Expand(v * s', shape), no weight materialised (passes/_fills.py);
- opt-in materialisation, `optimize(max_constant_bytes=...)`: fills become initializers and fold
  like any weight;
- Reshape targets computed from Shape(x) with one dynamic entry: a constant with -1
  (passes/shape_arith.py), and the shapes that makes static reach the Shapes after it.

Structure and numerics as in the other pass tests (`check_same`: our runtime and onnxruntime on the
export vs the original, FOLD tolerances), plus float64 formulas written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.passes._fills import fill_of
from graphnet.passes.base import run_pass
from graphnet.passes.manager import optimize
from tests import helpers
from tests.helpers import add_bn, bn_reference, check_same, ops_of, param
from tests.helpers import feeds as _feeds
from tests.oracles import naive_conv


def _cos(g: Graph, shape, fill: float, name: str) -> str:
    s = param(g, f"{name}.shape", np.array(shape, np.int64))
    return g.add_node(
        "ConstantOfShape", [s], {"value": np.array([fill], np.float32)}, name=name, outputs=[name]
    ).outputs[0]


def _fill_conv_bn(weight: str = "cos", shared: bool = False, seed: int = 0):
    """x -> Conv(W = fill (16, 8, 3, 3): 1,152 elements, more than fold-constants materialises,
    b) -> BN (random statistics) -> y; with `shared` the fill also feeds a second Conv."""
    rng = np.random.default_rng(seed)
    g = Graph("fill_bn")
    g.add_input("x", (None, 8, 5, 5))
    if weight == "cos":
        w = _cos(g, [16, 8, 3, 3], 0.05, "w")
    else:  # Expand of a per-output-channel column
        v = param(g, "v", rng.uniform(-0.1, 0.1, (16, 1, 1, 1)).astype(np.float32))
        w = g.add_node(
            "Expand",
            [v, param(g, "wshape", np.array([16, 8, 3, 3], np.int64))],
            name="w",
            outputs=["w"],
        ).outputs[0]
    b = param(g, "b", rng.standard_normal(16).astype(np.float32))
    conv = g.add_node("Conv", ["x", w, b], {"pads": (1, 1, 1, 1)}, name="conv").outputs[0]
    g.mark_output(
        g.add_node("Relu", [add_bn(g, conv, "bn", rng)], name="relu", outputs=["y"]).outputs[0]
    )
    if shared:
        g.mark_output(g.add_node("Conv", ["x", w], name="conv2", outputs=["z"]).outputs[0])
    return g


# ============================================================================ fill weights
@pytest.mark.parametrize("weight", ["cos", "expand"])
def test_bn_after_a_fill_weight_folds_into_an_expand(weight):
    g = _fill_conv_bn(weight)
    opt, report = optimize(g, verify=True)
    assert ops_of(opt) == ["Expand", "Conv", "Relu"], report.format()
    assert "folded bn into conv (Conv)" in report["fold-batchnorm"].changes
    # The stored vector is one number per output channel, not the weight: nothing materialised.
    vec = opt.params[opt.nodes[0].inputs[0]]
    assert vec.shape == (16, 1, 1, 1) and opt.num_params() < 16 * 8 * 9
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    w = runtime.run(g, {"x": feeds["x"]}, keep_all=True)["w"].astype(np.float64)
    st = {k: g.params[f"bn.{k}"] for k in ("scale", "B", "mean", "var")}
    want = np.maximum(
        bn_reference(
            naive_conv(feeds["x"].astype(np.float64), w, g.params["b"], pads=(1, 1, 1, 1)), st, 1e-5
        ),
        0,
    )
    np.testing.assert_allclose(ref["y"], want, rtol=1e-5, atol=1e-5)
    assert not optimize(opt)[1].changed


def test_a_shared_fill_is_not_changed_in_place():
    g = _fill_conv_bn("cos", shared=True)
    opt, report = optimize(g, verify=True)
    assert ops_of(opt) == ["ConstantOfShape", "Expand", "Conv", "Relu", "Conv"], report.format()
    assert opt.node("conv2").inputs[1] == "w" and opt.node("conv").inputs[1] != "w"
    assert any(
        "the fill 'w' is shared, so conv got its own" in line
        for line in report["fold-batchnorm"].changes
    )
    check_same(g, opt, _feeds(g))


def test_a_fill_whose_scaled_vector_is_as_big_as_the_weight_is_declined():
    # Depthwise 1x1 conv: W (8, 1, 1, 1) = 8 values; a per-channel vector has 8 too: that is the
    # weight.
    rng = np.random.default_rng(1)
    g = Graph("dw")
    g.add_input("x", (None, 8, 3, 3))
    w = g.add_node(
        "Expand",
        [
            param(g, "v", np.full((1, 1, 1, 1), 0.5, np.float32)),
            param(g, "s", np.array([8, 1, 1, 1], np.int64)),
        ],
        name="w",
        outputs=["w"],
    ).outputs[0]
    conv = g.add_node("Conv", ["x", w], {"group": 8}, name="conv").outputs[0]
    g.mark_output(
        g.add_node(
            "Mul",
            [conv, param(g, "c", rng.uniform(0.5, 2, (8, 1, 1)).astype(np.float32))],
            name="m",
            outputs=["y"],
        ).outputs[0]
    )
    opt = g.copy()
    report = run_pass("fold-affine", opt)
    assert ops_of(opt) == ["Expand", "Conv", "Mul"] and not report.changed
    assert any("would need 8 of its 8 values stored" in d for d in report.declines), report.lines


def test_fill_of_recognises_only_constant_fills():
    g = Graph("f")
    g.add_input("x", (None, 3))
    a = _cos(g, [2, 3], 1.0, "a")
    b = g.add_node(
        "Expand",
        [param(g, "v", np.ones((2, 1), np.float32)), param(g, "s", np.array([2, 3]))],
        name="b",
    ).outputs[0]
    c = g.add_node("Expand", ["x", param(g, "s2", np.array([2, 3]))], name="c").outputs[0]
    fa, fb = fill_of(g, a), fill_of(g, b)
    assert fa.vec.shape == (1, 1) and fa.shape == (2, 3) and fb.vec.shape == (2, 1)
    assert fill_of(g, c) is None and fill_of(g, "x") is None


# ========================================================================= materialisation
def test_max_constant_bytes_materialises_fills_and_bn_folds_as_usual():
    g = _fill_conv_bn("cos")
    small, _ = optimize(g)
    big, report = optimize(g, verify=True, max_constant_bytes=1 << 20)
    assert ops_of(small) == ["Expand", "Conv", "Relu"]
    assert ops_of(big) == ["Conv", "Relu"], report.format()
    assert big.params[big.node("conv").inputs[1]].shape == (16, 8, 3, 3)
    check_same(g, big, _feeds(g))


def test_max_constant_bytes_is_a_limit():
    g = _fill_conv_bn("cos")
    opt, report = optimize(
        g, max_constant_bytes=16 * 8 * 9 * 4 - 1
    )  # one byte short of the float32 weight
    assert ops_of(opt) == ["Expand", "Conv", "Relu"]
    assert any(
        "and more than max_constant_bytes 4,607" in d for d in report["fold-constants"].declines
    )


# ========================================================================= Reshape targets
def _reshape_of_shape(
    target_dims, data_shape=(None, 16, 1, 1), allowzero=0, src_shape=(None, 3, 4, 4)
):
    """y = Reshape(data, Concat(Shape(x)[dims] or static ints)), as exporters write x.view(...)."""
    g = Graph("view")
    g.add_input("x", src_shape)
    g.add_input("d", data_shape)
    shp = g.add_node("Shape", ["x"], name="shape").outputs[0]
    parts = []
    for k, t in enumerate(target_dims):
        if isinstance(t, str):  # "x0": dim 0 of x
            idx = param(g, f"i{k}", np.array([int(t[1:])], np.int64))
            parts.append(g.add_node("Gather", [shp, idx], {"axis": 0}, name=f"g{k}").outputs[0])
        else:
            parts.append(param(g, f"c{k}", np.array([t], np.int64)))
    target = g.add_node("Concat", parts, {"axis": 0}, name="cat").outputs[0]
    r = g.add_node(
        "Reshape", ["d", target], {"allowzero": allowzero}, name="view", infer=True
    ).outputs[0]
    g.mark_output(g.add_node("Relu", [r], name="relu", outputs=["y"]).outputs[0])
    return g


@pytest.mark.parametrize("allowzero", [0, 1])
def test_one_dynamic_entry_becomes_minus_one(allowzero):
    g = _reshape_of_shape(["x0", 16], allowzero=allowzero)
    opt, report = optimize(g, verify=True)
    assert ops_of(opt) == ["Reshape", "Relu"], report.format()
    np.testing.assert_array_equal(opt.params[opt.nodes[0].inputs[1]], [-1, 16])
    assert opt.values["y"].shape == (None, 16)
    assert any(
        "has one dynamic entry: the constant [-1, 16] (-1 = the rest)" in line
        for line in report["fold-constants"].changes
    )
    for batch in (1, 3):  # the -1 equals x's batch for every batch size the original accepts
        feeds = {
            "x": np.zeros((batch, 3, 4, 4), np.float32),
            "d": np.random.default_rng(batch).standard_normal((batch, 16, 1, 1)).astype(np.float32),
        }
        ref = check_same(g, opt, feeds)
        np.testing.assert_array_equal(ref["y"], np.maximum(feeds["d"].reshape(batch, 16), 0))


@pytest.mark.parametrize(
    "dims,why",
    [
        (["x0", "x2", 4], "two dynamic entries: -1 can stand for one"),
        (["x0", -1], "already has a -1"),
        (["x0", 0, 16], "a 0 beside the -1 (copy or literal zero) can be 0 at run time"),
    ],
)
def test_targets_that_minus_one_cannot_express_stay(dims, why):
    g = _reshape_of_shape(dims, data_shape=(None, 4, 4), src_shape=(None, 3, None, 4))
    opt, _ = optimize(g)
    assert "Shape" in ops_of(opt), why


def test_shapes_made_static_reach_the_next_shape_node():
    # ws_conv's pattern twice: Reshape(IN(Reshape(conv)), Shape(conv)); the second Shape reads a
    # value whose dims were unknown until the first target became constant.
    g = Graph("twice")
    g.add_input("x", (None, 4, 4, 4))
    src = "x"
    for k in range(2):
        flat = g.add_node(
            "Reshape", [src, param(g, f"t{k}", np.array([0, 2, -1], np.int64))], name=f"flat{k}"
        ).outputs[0]
        shp = g.add_node("Shape", [src], name=f"shape{k}").outputs[0]
        src = g.add_node(
            "Reshape", [g.add_node("Neg", [flat], name=f"neg{k}").outputs[0], shp], name=f"back{k}"
        ).outputs[0]
    g.mark_output(g.add_node("Relu", [src], name="relu", outputs=["y"]).outputs[0])
    assert g.values["back0.out"].shape == (
        None,
        None,
        None,
        None,
    )  # the target was dynamic on import
    opt, report = optimize(g, verify=True)
    assert "Shape" not in ops_of(opt), report.format()
    assert opt.values["y"].shape == (None, 4, 4, 4)
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_array_equal(
        ref["y"], np.maximum(feeds["x"], 0)
    )  # two Negs cancel, reshapes move nothing


def test_peer_node_counts_on_the_torch_exports():
    """onnxsim and onnxslim write cnn_dynamo_raw in 12 nodes and ws_conv in 17
    (benchmarks/README.md)."""
    import os

    import graphnet

    here = helpers.TORCH_DATA
    for name, peers in (("cnn_dynamo_raw", 12), ("ws_conv", 17)):
        g = graphnet.load(os.path.join(here, f"{name}.onnx"))
        opt, _ = optimize(g)
        assert len(opt.to_onnx().graph.node) <= peers, name


# ========================================================================= zoo, materialised
@pytest.mark.parametrize("name,peers", [("squeezenet", 65), ("inception_v1", 138)])
def test_materialised_zoo_model_has_no_more_nodes_than_the_peers(name, peers):
    """With max_constant_bytes the light zoo models reach the folding peers' node counts (onnxslim /
    onnxruntime: benchmarks/README.md) and still compute what the original does on onnxruntime."""
    import os

    import onnx

    import graphnet
    from tests.helpers import ort_run

    path = os.path.join(
        os.path.dirname(onnx.__file__), "backend/test/data/light", f"light_{name}.onnx"
    )
    model = onnx.load(path)
    g = graphnet.load(model)
    opt, report = optimize(g, max_constant_bytes=1 << 30)
    written = opt.to_onnx()
    ops = [n.op_type for n in written.graph.node]
    assert len(ops) <= peers and "ConstantOfShape" not in ops, report.format()
    feeds = {
        g.inputs[0]: np.random.default_rng(0)
        .standard_normal(g.values[g.inputs[0]].shape)
        .astype(np.float32)
    }
    want = ort_run(model, feeds)
    got = ort_run(written, feeds)
    for k in want:
        # Whole model (README's bound): the folded weights are re-rounded once, sums reorder.
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    assert not optimize(opt, max_constant_bytes=1 << 30)[1].changed
