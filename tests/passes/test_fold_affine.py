"""fold-affine: per-channel Mul / Add / Sub / Div by constants folded into the linear op before
them, chains merged into one Mul + Add, and every case where it must not fold.

Each graph is checked for structure (which ops remain, what the report says) and numerics: our
runtime and onnxruntime on the optimized export against our runtime on the original
(`check_same`, FOLD_RTOL/ATOL = 1e-5: a fold re-rounds the weight to float32 once, see
tests/helpers.py), and the original against a plain float64 formula written here
(naive convolution, matrix product, then the steps one by one).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.passes.base import run_pass
from graphnet.passes.fold_affine import Step, compose_steps
from graphnet.passes.manager import optimize
from tests.helpers import add_bn, bn_reference, check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds
from tests.oracles import naive_conv, naive_conv_transpose

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REF_TOL = dict(
    rtol=1e-5, atol=1e-5
)  # float32 graph vs the float64 formula: a sum of <= 72 products


def _fold(g: Graph):
    return run_on_copy("fold-affine", g)


def _apply(y: np.ndarray, steps: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The steps one by one in float64, each constant broadcast as given (NumPy's rules =
    ONNX's)."""
    y = np.asarray(y, np.float64)
    for op, c, first in steps:
        c = np.asarray(c, np.float64)
        if op == "Mul":
            y = y * c
        elif op == "Add":
            y = y + c
        elif op == "Sub":
            y = (c - y) if first else (y - c)
        else:
            y = y / c
    return y


def _add_steps(
    g: Graph, src: str, steps: list[tuple[str, np.ndarray, bool]], out: str = "y"
) -> str:
    """Append steps (op, constant, constant-is-first-operand) after `src`; the last writes `out`."""
    for k, (op, c, first) in enumerate(steps):
        cname = param(g, f"c{k}", c.astype(np.float32))
        ins = [cname, src] if first else [src, cname]
        last = k == len(steps) - 1
        src = g.add_node(op, ins, name=f"s{k}", outputs=[out] if last else None).outputs[0]
    return src


# ================================================================================ the maths
@SETTINGS
@given(
    st.lists(st.sampled_from(["mul", "add", "sub", "rsub", "div"]), min_size=1, max_size=5),
    st.integers(0, 2**31),
)
def test_compose_steps_is_the_steps_in_order(kinds, seed):
    rng = np.random.default_rng(seed)
    c_n = 3
    steps = [Step(k, rng.uniform(0.5, 2.0, c_n) * rng.choice([-1, 1], c_n), 0) for k in kinds]
    x = rng.standard_normal((4, c_n))
    s, t = compose_steps(steps, c_n)
    want = x.copy()
    for k, c, _ in steps:  # plainly, one after the other
        want = {
            "mul": want * c,
            "add": want + c,
            "sub": want - c,
            "rsub": c - want,
            "div": want / c,
        }[k]
    np.testing.assert_allclose(s * x + t, want, rtol=1e-12, atol=1e-12)


# ============================================================================ producer folds
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("cshape", ["scalar", "c11", "1c11"])
def test_conv_mul_add_folds_into_conv(rank, group, bias, cshape):
    rng = np.random.default_rng(rank * 10 + group)
    g = Graph("conv_affine")
    g.add_input("x", (None, 4, *(5, 4, 3)[:rank]))
    w = rng.standard_normal((6, 4 // group, *(3, 2, 2)[:rank])).astype(np.float32) * 0.5
    b = rng.standard_normal(6).astype(np.float32) if bias else None
    pads = (1,) * rank + (0,) * rank
    ins = ["x", param(g, "w", w)] + ([param(g, "b", b)] if bias else [])
    conv = g.add_node("Conv", ins, {"group": group, "pads": pads}, name="conv").outputs[0]
    shape = {"scalar": (), "c11": (6,) + (1,) * rank, "1c11": (1, 6) + (1,) * rank}[cshape]
    steps = [("Mul", rng.uniform(0.5, 2, shape), False), ("Add", rng.standard_normal(shape), True)]
    g.mark_output(_add_steps(g, conv, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv"], report.lines
    assert report.changes[0] == "folded s0 (Mul), s1 (Add) into conv (Conv)"
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    want = _apply(naive_conv(feeds["x"].astype(np.float64), w, b, pads=pads, group=group), steps)
    np.testing.assert_allclose(ref["y"], want, **REF_TOL)


@pytest.mark.parametrize("group", [1, 2])
def test_sub_div_chain_folds_into_conv_transpose(group):
    rng = np.random.default_rng(7)
    g = Graph("convt_affine")
    g.add_input("x", (None, 4, 3, 3))
    w = rng.standard_normal((4, 6 // group, 2, 2)).astype(np.float32) * 0.5
    conv = g.add_node(
        "ConvTranspose", ["x", param(g, "w", w)], {"group": group, "strides": (2, 2)}, name="ct"
    ).outputs[0]
    steps = [
        ("Sub", rng.standard_normal((6, 1, 1)), False),
        ("Div", rng.uniform(0.5, 2, (1, 6, 1, 1)), False),
        ("Sub", rng.standard_normal((6, 1, 1)), True),
    ]  # (c - x): a negative scale
    g.mark_output(_add_steps(g, conv, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["ConvTranspose"], report.lines
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    want = _apply(
        naive_conv_transpose(feeds["x"].astype(np.float64), w, strides=(2, 2), group=group), steps
    )
    np.testing.assert_allclose(ref["y"], want, **REF_TOL)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [False, True])
def test_gemm_scale_folds(trans_b, with_c):
    rng = np.random.default_rng(3)
    g = Graph("gemm_affine")
    g.add_input("x", (None, 5))
    b = rng.standard_normal((4, 5) if trans_b else (5, 4)).astype(np.float32)
    c = rng.standard_normal(4).astype(np.float32)
    ins = ["x", param(g, "B", b)] + ([param(g, "C", c)] if with_c else [])
    y = g.add_node("Gemm", ins, {"transB": trans_b, "alpha": 0.5, "beta": 2.0}, name="fc").outputs[
        0
    ]
    steps = [("Mul", rng.uniform(0.5, 2, (4,)), False), ("Add", rng.standard_normal((1, 4)), False)]
    g.mark_output(_add_steps(g, y, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Gemm"], report.lines
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    mat = b.T if trans_b else b
    want = _apply(0.5 * feeds["x"].astype(np.float64) @ mat + (2.0 * c if with_c else 0.0), steps)
    np.testing.assert_allclose(ref["y"], want, **REF_TOL)


def test_matmul_scale_folds_into_the_weight_and_a_bias_add():
    rng = np.random.default_rng(4)
    g = Graph("mm_affine")
    g.add_input("x", (None, 5))
    b = rng.standard_normal((5, 3)).astype(np.float32)
    y = g.add_node("MatMul", ["x", param(g, "B", b)], name="mm").outputs[0]
    steps = [("Mul", rng.uniform(0.5, 2, (3,)), False), ("Add", rng.standard_normal((3,)), False)]
    g.mark_output(_add_steps(g, y, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["MatMul", "Add"], report.lines
    assert (
        report.changes[0] == "folded s0 (Mul), s1 (Add) into mm (MatMul) and a bias s0_bias (Add)"
    )
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_allclose(
        ref["y"], _apply(feeds["x"].astype(np.float64) @ b, steps), **REF_TOL
    )


def test_scale_after_matmul_plus_bias_folds_into_both():
    rng = np.random.default_rng(5)
    g = Graph("mm_add_affine")
    g.add_input("x", (None, 5))
    b, c = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mm = g.add_node("MatMul", ["x", param(g, "B", b)], name="mm").outputs[0]
    y = g.add_node("Add", [mm, param(g, "bias", c)], name="bias_add").outputs[0]
    steps = [("Mul", rng.uniform(0.5, 2, (3,)), False)]
    g.mark_output(_add_steps(g, y, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["MatMul", "Add"], report.lines
    # The bias Add is itself a per-feature step: the chain bias_add -> s0 folds into B and a new
    # bias.
    assert (
        report.changes[0]
        == "folded bias_add (Add), s0 (Mul) into mm (MatMul) and a bias bias_add_bias (Add)"
    )
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_allclose(
        ref["y"], _apply(feeds["x"].astype(np.float64) @ b + c, steps), **REF_TOL
    )


def test_scale_after_a_bn_goes_into_its_gamma_and_beta():
    rng = np.random.default_rng(6)
    g = Graph("bn_affine")
    g.add_input("x", (None, 3, 4, 4))
    r = g.add_node("Relu", ["x"], name="relu").outputs[0]
    y = add_bn(g, r, "bn", rng)
    steps = [
        ("Add", rng.standard_normal((3, 1, 1)), False),
        ("Mul", rng.uniform(0.5, 2, (3, 1, 1)), False),
    ]
    g.mark_output(_add_steps(g, y, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "BatchNormalization"], report.lines
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    st_ = {k: g.params[f"bn.{k}"] for k in ("scale", "B", "mean", "var")}
    np.testing.assert_allclose(
        ref["y"], _apply(bn_reference(np.maximum(feeds["x"], 0), st_, 1e-5), steps), **REF_TOL
    )


def test_graph_output_name_survives_the_fold():
    g, _ = _conv_steps_graph()
    opt, _ = _fold(g)
    assert opt.outputs == ["y"] and opt.nodes[-1].outputs == ["y"] and ops_of(opt) == ["Conv"]


def _conv_steps_graph(steps=None, seed=8):
    rng = np.random.default_rng(seed)
    g = Graph("conv_steps")
    g.add_input("x", (None, 3, 4, 4))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    conv = g.add_node("Conv", ["x", param(g, "w", w)], {"pads": (1, 1, 1, 1)}, name="conv").outputs[
        0
    ]
    steps = steps or [
        ("Mul", rng.uniform(0.5, 2, (4, 1, 1)), False),
        ("Add", rng.standard_normal((4, 1, 1)), False),
    ]
    g.mark_output(_add_steps(g, conv, steps))
    return g, conv


# ============================================================================== must not fold
def test_conv_output_read_elsewhere_is_not_scaled():
    g, conv = _conv_steps_graph()
    g.mark_output(g.add_node("Relu", [conv], name="other").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Mul", "Add", "Relu"]
    assert any(
        "s0 (Mul), s1 (Add): not folded into conv (Conv): conv output also feeds other" in d
        for d in report.declines
    ), report.lines
    check_same(g, opt, _feeds(g))


def test_an_intermediate_read_elsewhere_splits_the_chain():
    g, conv = _conv_steps_graph()
    g.mark_output(g.add_node("Relu", ["s0.out"], name="peek").outputs[0])  # reads the Mul's output
    opt, report = _fold(g)
    # The Mul folds alone (its output is what 'peek' reads: the Conv now writes it); the Add stays.
    assert ops_of(opt) == ["Conv", "Add", "Relu"], report.lines
    check_same(g, opt, _feeds(g))


@pytest.mark.parametrize(
    "shape,why",
    [
        ((1, 1, 4, 4), "a per-pixel map"),
        ((4,), "a 1-D vector lines up with the width"),
        ((2, 4, 1, 1), "per batch item: changes the shape"),
    ],
)
def test_constants_that_are_not_per_channel_are_left(shape, why):
    rng = np.random.default_rng(9)
    g, _ = _conv_steps_graph([("Mul", rng.uniform(0.5, 2, shape), False)])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Mul"] and not report.changed, why


def test_divide_a_constant_by_the_data_is_not_a_step():
    rng = np.random.default_rng(10)
    g, _ = _conv_steps_graph([("Div", rng.uniform(0.5, 2, (4, 1, 1)), True)])  # c / x
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Div"] and not report.changed


def test_wsconv_is_not_scaled():
    rng = np.random.default_rng(11)
    g = Graph("ws_affine")
    g.add_input("x", (None, 3, 4, 4))
    w = param(g, "w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    ws = g.add_node("WSConv", ["x", w], name="ws").outputs[0]
    g.mark_output(_add_steps(g, ws, [("Mul", rng.uniform(0.5, 2, (4, 1, 1)), False)]))
    opt, report = _fold(g)
    assert ops_of(opt) == ["WSConv", "Mul"]
    assert any(
        "ws is a WSConv: standardizing its weight would undo the scale" in d
        for d in report.declines
    )


def test_matmul_with_features_on_the_last_axis_is_not_scaled():
    rng = np.random.default_rng(12)
    g = Graph("mm3d")
    g.add_input("x", (None, 3, 5))
    y = g.add_node(
        "MatMul", ["x", param(g, "B", rng.standard_normal((5, 3)).astype(np.float32))], name="mm"
    ).outputs[0]
    g.mark_output(
        _add_steps(g, y, [("Mul", rng.uniform(0.5, 2, (3, 1)), False)])
    )  # per axis 1 (T), not per feature
    opt, report = _fold(g)
    assert ops_of(opt) == ["MatMul", "Mul"]
    assert any("has its features on the last axis" in d for d in report.declines), report.lines
    check_same(g, opt, _feeds(g))


# ====================================================================== chains without a producer
def test_a_chain_after_relu_merges_into_one_mul_and_add():
    rng = np.random.default_rng(13)
    g = Graph("chain")
    g.add_input("x", (None, 3, 4, 4))
    r = g.add_node("Relu", ["x"], name="relu").outputs[0]
    steps = [
        ("Mul", rng.uniform(0.5, 2, (3, 1, 1)), False),
        ("Add", rng.standard_normal((3, 1, 1)), False),
        ("Mul", rng.uniform(0.5, 2, (1, 3, 1, 1)), True),
        ("Sub", rng.standard_normal(()), False),
    ]
    g.mark_output(_add_steps(g, r, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "Mul", "Add"], report.lines
    assert report.changes[0].startswith(
        "merged s0 (Mul), s1 (Add), s2 (Mul), s3 (Sub) into s0_mul (Mul) -> s0_add (Add)"
    )
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_allclose(ref["y"], _apply(np.maximum(feeds["x"], 0), steps), **REF_TOL)
    assert not run_pass("fold-affine", opt).changed  # Mul -> Add is as short as it gets


def test_two_adds_become_one_and_a_lone_step_stays():
    rng = np.random.default_rng(14)
    g = Graph("adds")
    g.add_input("x", (None, 3, 2))
    r = g.add_node("Relu", ["x"], name="relu").outputs[0]
    steps = [
        ("Add", rng.standard_normal((3, 1)), False),
        ("Add", rng.standard_normal((3, 1)), False),
    ]
    y = _add_steps(g, r, steps, out="y")
    g.mark_output(y)
    g.mark_output(
        g.add_node(
            "Mul", ["x", param(g, "k", np.full((3, 1), 2.0, np.float32))], name="lone"
        ).outputs[0]
    )
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "Add", "Mul"], report.lines
    feeds = _feeds(g)
    ref = check_same(g, opt, feeds)
    np.testing.assert_allclose(ref["y"], _apply(np.maximum(feeds["x"], 0), steps), **REF_TOL)


def test_an_identity_chain_is_removed():
    g = Graph("ident")
    g.add_input("x", (None, 3, 2))
    r = g.add_node("Relu", ["x"], name="relu").outputs[0]
    steps = [
        ("Mul", np.full((3, 1), 2.0), False),
        ("Div", np.full((1, 3, 1), 2.0), False),
        ("Sub", np.zeros(()), False),
    ]
    g.mark_output(_add_steps(g, r, steps))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu"] and opt.outputs == ["y"], report.lines
    check_same(g, opt, _feeds(g))


def test_an_identity_step_on_a_graph_input_that_is_an_output_stays():
    g = Graph("ident_io")
    g.add_input("x", (None, 3, 2))
    g.mark_output(
        g.add_node(
            "Mul", ["x", param(g, "one", np.ones((3, 1), np.float32))], name="m", outputs=["y"]
        ).outputs[0]
    )
    opt, report = _fold(g)
    assert ops_of(opt) == ["Mul"] and not report.changed
    assert any("would be 'x'" in d for d in report.declines)


def test_float64_graph_keeps_its_dtype():
    rng = np.random.default_rng(15)
    g = Graph("f64")
    g.add_input("x", (None, 3, 4), "float64")
    w = param(g, "w", rng.standard_normal((2, 3, 1)))
    conv = g.add_node("Conv", ["x", w], name="conv").outputs[0]
    g.mark_output(
        g.add_node(
            "Mul", [conv, param(g, "c", rng.uniform(0.5, 2, (2, 1)))], name="m", outputs=["y"]
        ).outputs[0]
    )
    opt, _ = _fold(g)
    assert ops_of(opt) == ["Conv"] and all(a.dtype == np.float64 for a in opt.params.values())
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(
        runtime.run(opt, {"x": x})["y"], runtime.run(g, {"x": x})["y"], rtol=1e-12, atol=1e-12
    )


def test_inference_pipeline_folds_a_scale_layer_and_is_a_fixed_point():
    g, _ = _conv_steps_graph()
    opt, report = optimize(g, verify=True)
    assert ops_of(opt) == ["Conv"] and report["fold-affine"].changed
    check_same(g, opt, _feeds(g))
    assert not optimize(opt)[1].changed
