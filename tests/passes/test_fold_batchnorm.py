"""fold-batchnorm: the pure maths against the BN formula, then every fold and must-not-fold case
on graphs (which ops remain, what the report says, NumPy and onnxruntime numerics before/after).

Tolerances: float64 maths 1e-10 (a handful of float64 roundings); float32 graphs FOLD_RTOL/ATOL
(tests/helpers.py says why).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphnet import passes, runtime
from graphnet.ir import Graph
from graphnet.passes.fold_batchnorm import (
    bn_scale_shift,
    fold_affine_into_conv,
    fold_affine_into_matrix,
    fuse_affine_weights,
)
from tests.helpers import add_bn, bn_reference, bn_stats, check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds
from tests.oracles import naive_conv, naive_conv_transpose

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL64 = dict(rtol=1e-10, atol=1e-10)


def fuse_conv_bn_weights(w, b, mean, var, eps, gamma, beta, axis=0, group=1):
    """FX's signature, composed of the two functions the passes call."""
    return fuse_affine_weights(w, b, *bn_scale_shift(mean, var, eps, gamma, beta), axis, group)


def _stats64(rng, c):
    return {k: v.astype(np.float64) for k, v in bn_stats(rng, c).items()}


# ================================================================================ the maths
def test_scale_shift_is_the_bn_formula():
    rng = np.random.default_rng(0)
    st_ = _stats64(rng, 5)
    x = rng.standard_normal((3, 5, 4))
    s, t = bn_scale_shift(st_["mean"], st_["var"], 1e-3, st_["scale"], st_["B"])
    np.testing.assert_allclose(
        s[None, :, None] * x + t[None, :, None], bn_reference(x, st_, 1e-3), **TOL64
    )


@st.composite
def conv_cases(draw):
    rank = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 4]))
    cin = group * draw(st.integers(1, 2))
    cout = group * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    size = tuple(draw(st.integers(2, 4)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 1)) for _ in range(2 * rank))
    return rank, group, cin, cout, k, size, pads, draw(st.booleans()), draw(st.integers(0, 2**31))


@SETTINGS
@given(conv_cases())
def test_fuse_conv_weights_per_channel_formula(case):
    _, group, cin, cout, k, _, _, bias, seed = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, *k))
    b = rng.standard_normal(cout) if bias else None
    st_ = _stats64(rng, cout)
    w2, b2 = fuse_conv_bn_weights(w, b, st_["mean"], st_["var"], 1e-5, st_["scale"], st_["B"])
    for o in range(cout):  # W'[o] = W[o] * gamma / sqrt(var + eps); b' = (b - mean) * that + beta
        s = st_["scale"][o] / np.sqrt(st_["var"][o] + 1e-5)
        np.testing.assert_allclose(w2[o], w[o] * s, **TOL64)
        np.testing.assert_allclose(
            b2[o], ((b[o] if bias else 0.0) - st_["mean"][o]) * s + st_["B"][o], **TOL64
        )


@SETTINGS
@given(conv_cases())
def test_fuse_conv_weights_bn_after_conv(case):
    rank, group, cin, cout, k, size, pads, bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, *size))
    w = rng.standard_normal((cout, cin // group, *k))
    b = rng.standard_normal(cout) if bias else None
    st_ = _stats64(rng, cout)
    w2, b2 = fuse_conv_bn_weights(
        w, b, st_["mean"], st_["var"], 1e-5, st_["scale"], st_["B"], axis=0
    )
    want = bn_reference(naive_conv(x, w, b, pads=pads, group=group), st_, 1e-5)
    np.testing.assert_allclose(naive_conv(x, w2, b2, pads=pads, group=group), want, **TOL64)


@SETTINGS
@given(conv_cases(), st.integers(1, 2))
def test_fuse_conv_transpose_weights_grouped(case, stride):
    # ConvTranspose's W is (C_in, C_out/group, k...): output channel g*C_out/g + j is column j of
    # row block g; scaling axis 1 without the blocks would be wrong for group > 1.
    rank, group, cin, cout, k, size, _, bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, *size))
    w = rng.standard_normal((cin, cout // group, *k))
    b = rng.standard_normal(cout) if bias else None
    st_ = _stats64(rng, cout)
    w2, b2 = fuse_conv_bn_weights(
        w, b, st_["mean"], st_["var"], 1e-5, st_["scale"], st_["B"], axis=1, group=group
    )
    strides = (stride,) * rank
    want = bn_reference(naive_conv_transpose(x, w, b, strides=strides, group=group), st_, 1e-5)
    np.testing.assert_allclose(
        naive_conv_transpose(x, w2, b2, strides=strides, group=group), want, **TOL64
    )


@pytest.mark.parametrize("trans", [False, True])
def test_fuse_matrix_weights(trans):
    rng = np.random.default_rng(1)
    a, wkf, c = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    st_ = _stats64(rng, 5)
    w = wkf.T if trans else wkf
    w2, c2 = fuse_conv_bn_weights(
        w, c, st_["mean"], st_["var"], 1e-5, st_["scale"], st_["B"], axis=0 if trans else 1
    )
    got = a @ (w2.T if trans else w2) + c2
    np.testing.assert_allclose(got, bn_reference(a @ wkf + c, st_, 1e-5), **TOL64)


def test_fuse_keeps_float32_but_computes_in_float64():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 2, 3)).astype(np.float32)
    st_ = bn_stats(rng, 4)
    st_["var"] = np.full(4, 1e-3, np.float32)  # large scales make float32 intermediates visible
    w2, b2 = fuse_conv_bn_weights(w, None, st_["mean"], st_["var"], 1e-5, st_["scale"], st_["B"])
    assert w2.dtype == np.float32 and b2.dtype == np.float32
    s = st_["scale"].astype(np.float64) / np.sqrt(st_["var"].astype(np.float64) + 1e-5)
    np.testing.assert_array_equal(w2, (w.astype(np.float64) * s[:, None, None]).astype(np.float32))


@SETTINGS
@given(conv_cases(), st.integers(1, 2), st.integers(1, 2))
def test_fold_affine_into_following_conv(case, stride, dilation):
    rank, group, cin, cout, k, size, _, bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, *size))
    w = rng.standard_normal((cout, cin // group, *k))
    b = rng.standard_normal(cout) if bias else None
    s, t = rng.uniform(0.5, 2, cin), rng.standard_normal(cin)
    view = (1, cin) + (1,) * rank
    w2, b2 = fold_affine_into_conv(w, b, s, t, group)
    kw = dict(strides=(stride,) * rank, dilations=(dilation,) * rank, group=group)
    want = naive_conv(x * s.reshape(view) + t.reshape(view), w, b, **kw)
    np.testing.assert_allclose(naive_conv(x, w2, b2, **kw), want, **TOL64)


@pytest.mark.parametrize("in_axis", [0, 1])
def test_fold_affine_into_following_matrix(in_axis):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 5) if in_axis == 0 else (5, 3))
    s, t = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    w2, bias = fold_affine_into_matrix(w, s, t, in_axis)
    mat = (lambda m: m) if in_axis == 0 else (lambda m: m.T)
    np.testing.assert_allclose(x @ mat(w2) + bias, (x * s + t) @ mat(w), **TOL64)


# ============================================================================ graph helpers
def _fold(g: Graph):
    return run_on_copy("fold-batchnorm", g)


def _conv_graph(
    op, rank, group, bias, *, pads=None, stride=1, cin=4, cout=6, dtype="float32", seed=0
):
    rng = np.random.default_rng(seed)
    g = Graph(f"{op}_bn")
    size = (5, 4, 3)[:rank]
    g.add_input("x", (None, cin, *size), dtype)
    k = (3, 2, 2)[:rank]
    wshape = (cout, cin // group, *k) if op == "Conv" else (cin, cout // group, *k)
    ins = ["x", param(g, "w", rng.standard_normal(wshape).astype(dtype) * 0.5)]
    if bias:
        ins.append(param(g, "b", rng.standard_normal(cout).astype(dtype)))
    attrs = {"group": group, "strides": (stride,) * rank, "pads": pads or (1,) * rank + (0,) * rank}
    conv = g.add_node(op, ins, attrs, name="conv")
    y = add_bn(g, conv.outputs[0], "bn", rng)
    g.mark_output(g.add_node("Relu", [y], name="relu", outputs=["y"]).outputs[0])
    return g, rng


# ==================================================================== folds into the producer
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_bn_folds(rank, group, bias):
    g, rng = _conv_graph(
        "Conv", rank, group, bias, cout=4 if group == 4 else 6
    )  # group 4 = depthwise
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Relu"]
    assert report.changes[0] == "folded bn into conv (Conv)"
    assert sorted(opt.params) == (
        ["b", "w"] if bias else ["conv.bias_bn", "w"]
    )  # BN statistics gone
    check_same(g, opt, _feeds(g, rng))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose_bn_folds(rank, group, bias):
    g, rng = _conv_graph("ConvTranspose", rank, group, bias, stride=2)
    opt, report = _fold(g)
    assert ops_of(opt) == ["ConvTranspose", "Relu"]
    assert report.changed
    check_same(g, opt, _feeds(g, rng))


def test_float64_graph_stays_float64():
    g, rng = _conv_graph("Conv", 2, 2, True, dtype="float64")
    opt, _ = _fold(g)
    assert ops_of(opt) == ["Conv", "Relu"]
    assert all(a.dtype == np.float64 for a in opt.params.values())
    # onnxruntime's CPU provider has no float64 Conv kernel, so only our runtime checks this one.
    check_same(g, opt, _feeds(g, rng), rtol=1e-10, atol=1e-10, ort=False)


def test_conv_bn_bn_chain_folds_twice_and_keeps_the_output_name():
    rng = np.random.default_rng(4)
    g = Graph("chain")
    g.add_input("x", (None, 3, 6, 6))
    conv = g.add_node(
        "Conv",
        ["x", param(g, "w", rng.standard_normal((5, 3, 3, 3)).astype(np.float32))],
        name="conv",
    )
    y1 = add_bn(g, conv.outputs[0], "bn1", rng)
    y2 = add_bn(g, y1, "bn2", rng)
    g.mark_output(y2)
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv"] and opt.nodes[0].outputs == [y2]
    assert report.changes[:2] == [
        "folded bn2 into bn1 (BatchNormalization)",
        "folded bn1 into conv (Conv)",
    ]
    check_same(g, opt, _feeds(g, rng))


def test_bn_bn_without_a_linear_layer_becomes_one_affine():
    rng = np.random.default_rng(15)
    g = Graph("bnbn")
    g.add_input("x", (None, 3, 4, 4))
    r = g.add_node("Relu", ["x"], name="relu")
    g.mark_output(add_bn(g, add_bn(g, r.outputs[0], "bn1", rng), "bn2", rng))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Relu", "Mul", "Add"]
    assert report.changes[0] == "folded bn2 into bn1 (BatchNormalization)"
    check_same(g, opt, _feeds(g, rng))


GEMM_C = {"none": None, "vector": (5,), "row": (1, 5), "full": (3, 5), "scalar": ()}


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", list(GEMM_C))
def test_gemm_bn_folds(trans_a, trans_b, c_shape):
    rng = np.random.default_rng(5)
    g = Graph("gemm_bn")
    g.add_input("a", (4, 3) if trans_a else (3, 4))  # M = 3 rows (static, so C may be (M, F))
    b = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    ins = ["a", param(g, "B", b)]
    if GEMM_C[c_shape] is not None:
        ins.append(param(g, "C", rng.standard_normal(GEMM_C[c_shape]).astype(np.float32)))
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": 0.7, "beta": -1.3}
    gemm = g.add_node("Gemm", ins, attrs, name="fc")
    g.mark_output(add_bn(g, gemm.outputs[0], "bn", rng))
    opt, report = _fold(g)
    assert ops_of(opt) == ["Gemm"], report.lines
    check_same(g, opt, _feeds(g, rng))


def test_matmul_bn_gets_a_fresh_bias_add():
    rng = np.random.default_rng(6)
    g = Graph("mm_bn")
    g.add_input("a", (None, 4))
    mm = g.add_node(
        "MatMul", ["a", param(g, "B", rng.standard_normal((4, 5)).astype(np.float32))], name="mm"
    )
    g.mark_output(add_bn(g, mm.outputs[0], "bn", rng))
    opt, report = _fold(g)
    assert ops_of(opt) == ["MatMul", "Add"]
    assert report.changes[0] == "folded bn into mm (MatMul) and a bias bn_bias (Add)"
    check_same(g, opt, _feeds(g, rng))


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_bn_folds_into_the_existing_bias(bias_first):
    rng = np.random.default_rng(7)
    g = Graph("mm_add_bn")
    g.add_input("a", (None, 4))
    mm = g.add_node(
        "MatMul", ["a", param(g, "B", rng.standard_normal((4, 5)).astype(np.float32))], name="mm"
    )
    c = param(g, "c", rng.standard_normal((1, 5)).astype(np.float32))
    add = g.add_node("Add", [c, mm.outputs[0]] if bias_first else [mm.outputs[0], c], name="bias")
    g.mark_output(add_bn(g, add.outputs[0], "bn", rng))
    opt, report = _fold(g)
    # B and c rewritten in place (nobody else reads them), the BN's four statistics dropped
    assert ops_of(opt) == ["MatMul", "Add"] and sorted(opt.params) == ["B", "c"]
    assert "folded bn into mm (MatMul) and its bias bias (Add)" in report.changes
    check_same(g, opt, _feeds(g, rng))


# ================================================================ must not fold into producer
def _decline(report, needle):
    assert any(needle in d for d in report.declines), (
        f"no decline containing {needle!r} in {report.lines}"
    )


def test_conv_output_with_another_reader_is_not_folded():
    rng = np.random.default_rng(8)
    g = Graph("residual")
    g.add_input("x", (None, 4, 5, 5))
    conv = g.add_node(
        "Conv",
        ["x", param(g, "w", rng.standard_normal((4, 4, 3, 3)).astype(np.float32))],
        {"pads": (1, 1, 1, 1)},
        name="conv_3",
    )
    y = add_bn(g, conv.outputs[0], "bn", rng)
    r = g.add_node("Relu", [y], name="relu")
    g.mark_output(g.add_node("Add", [conv.outputs[0], r.outputs[0]], name="add_7").outputs[0])
    opt, report = _fold(g)
    _decline(report, "conv_3 output also feeds add_7")
    assert ops_of(opt) == ["Conv", "Mul", "Add", "Relu", "Add"]  # BN as a per-channel affine
    np.testing.assert_array_equal(opt.params["w"], g.params["w"])
    check_same(g, opt, _feeds(g, rng))


def test_conv_output_that_is_a_graph_output_is_not_folded():
    g, rng = _conv_graph("Conv", 2, 1, True)
    g.mark_output("conv.out")
    opt, report = _fold(g)
    _decline(report, "conv output is a graph output")
    assert "BatchNormalization" not in ops_of(opt) and ops_of(opt).count("Conv") == 1
    np.testing.assert_array_equal(opt.params["w"], g.params["w"])
    check_same(g, opt, _feeds(g, rng))


def test_shared_weight_is_copied_not_changed():
    rng = np.random.default_rng(9)
    g = Graph("shared")
    g.add_input("x", (None, 3, 5, 5))
    w = param(g, "w", rng.standard_normal((3, 3, 3, 3)).astype(np.float32))
    c1 = g.add_node("Conv", ["x", w], {"pads": (1, 1, 1, 1)}, name="conv1")
    y1 = add_bn(g, c1.outputs[0], "bn", rng)
    c2 = g.add_node(
        "Conv", [y1, w], {"pads": (1, 1, 1, 1)}, name="conv2"
    )  # the same layer, applied twice
    g.mark_output(c2.outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "Conv"]
    np.testing.assert_array_equal(opt.params["w"], g.params["w"])  # conv2 still reads the original
    assert opt.node("conv1").inputs[1] != "w" and opt.node("conv2").inputs[1] == "w"
    assert "is shared with conv2" in report.changes[0]
    check_same(g, opt, _feeds(g, rng))


@pytest.mark.parametrize("constant_kernel", [True, False])
def test_wsconv_is_never_scaled(constant_kernel):
    rng = np.random.default_rng(10)
    g = Graph("ws")
    g.add_input("x", (None, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    feeds = {"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)}
    if constant_kernel:
        w_in = param(g, "w", w)
    else:
        w_in = g.add_input("w", w.shape).name
        feeds["w"] = w
    conv = g.add_node("WSConv", ["x", w_in], name="ws")
    g.mark_output(add_bn(g, conv.outputs[0], "bn", rng))
    opt, report = _fold(g)
    _decline(report, "ws is a WSConv: standardizing its weight would undo the scale")
    assert ops_of(opt) == ["WSConv", "Mul", "Add"]
    check_same(g, opt, feeds)
    full, full_report = passes.optimize(g, verify=True)
    if constant_kernel:  # fold-constants makes it a plain Conv first, then BN folds
        assert ops_of(full) == ["Conv"]
    else:
        assert ops_of(full) == ["WSConv", "Mul", "Add"]
    check_same(g, full, feeds)


def test_matmul_on_3d_input_is_not_folded_on_axis_1():
    rng = np.random.default_rng(11)
    g = Graph("mm3")
    g.add_input("a", (None, 6, 4))
    mm = g.add_node(
        "MatMul", ["a", param(g, "B", rng.standard_normal((4, 5)).astype(np.float32))], name="mm"
    )
    g.mark_output(
        add_bn(g, mm.outputs[0], "bn", rng)
    )  # normalizes axis 1 (size 6), not the features
    opt, report = _fold(g)
    _decline(report, "has its features on the last axis")
    assert ops_of(opt) == ["MatMul", "Mul", "Add"]
    np.testing.assert_array_equal(opt.params["B"], g.params["B"])
    check_same(g, opt, _feeds(g, rng))


def test_non_constant_statistics_are_left_alone():
    rng = np.random.default_rng(12)
    g = Graph("dyn_stats")
    g.add_input("x", (None, 3, 4))
    g.add_input("mean", (3,))
    conv = g.add_node(
        "Conv", ["x", param(g, "w", rng.standard_normal((3, 3, 1)).astype(np.float32))], name="conv"
    )
    st_ = bn_stats(rng, 3)
    ins = [
        conv.outputs[0],
        param(g, "g", st_["scale"]),
        param(g, "b", st_["B"]),
        "mean",
        param(g, "v", st_["var"]),
    ]
    g.mark_output(g.add_node("BatchNormalization", ins, name="bn").outputs[0])
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv", "BatchNormalization"] and not report.changed
    _decline(report, "bn: its input_mean 'mean' is not constant")


# ==================================================================== folds into the consumer
def _bn_then(op, attrs, wshape, *, xshape=(None, 4, 6, 6), bias_len=None, seed=13):
    """x -> BN -> op(BN, w[, b]) -> out: the BN has nothing before it to fold into."""
    rng = np.random.default_rng(seed)
    g = Graph(f"bn_{op}")
    g.add_input("x", xshape)
    y = add_bn(g, "x", "bn", rng)
    ins = [y, param(g, "w", rng.standard_normal(wshape).astype(np.float32) * 0.5)]
    if bias_len:
        ins.append(param(g, "b", rng.standard_normal(bias_len).astype(np.float32)))
    g.mark_output(g.add_node(op, ins, attrs, name="nxt", outputs=["out"]).outputs[0])
    return g, rng


@pytest.mark.parametrize(
    "group,strides,dilations", [(1, (1, 1), (1, 1)), (2, (2, 1), (1, 2)), (4, (1, 1), (2, 2))]
)
@pytest.mark.parametrize("bias", [False, True])
def test_bn_folds_into_following_unpadded_conv(group, strides, dilations, bias):
    attrs = {"group": group, "strides": strides, "dilations": dilations}
    g, rng = _bn_then("Conv", attrs, (4, 4 // group, 2, 2), bias_len=4 if bias else None)
    opt, report = _fold(g)
    assert ops_of(opt) == ["Conv"]
    assert "folded bn into the following nxt (Conv)" in report.changes
    check_same(g, opt, _feeds(g, rng))


def test_bn_does_not_fold_into_following_padded_conv():
    g, rng = _bn_then("Conv", {"pads": (1, 0, 1, 0)}, (4, 4, 3, 3), bias_len=4)
    opt, report = _fold(g)
    _decline(report, "nxt (Conv) has pads [1, 0, 1, 0]: its padded zeros would not be shifted")
    assert ops_of(opt) == ["Mul", "Add", "Conv"]
    check_same(g, opt, _feeds(g, rng))


def test_bn_does_not_fold_into_following_conv_transpose():
    g, rng = _bn_then("ConvTranspose", {"strides": (2, 2)}, (4, 3, 3, 3), bias_len=3)
    opt, report = _fold(g)
    _decline(report, "nxt is a ConvTranspose: its border outputs see fewer taps")
    assert ops_of(opt) == ["Mul", "Add", "ConvTranspose"]
    check_same(g, opt, _feeds(g, rng))


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_bn_folds_into_following_gemm(trans_b, bias):
    g, rng = _bn_then(
        "Gemm",
        {"transB": trans_b, "alpha": 1.5, "beta": 0.5},
        (5, 4) if trans_b else (4, 5),
        xshape=(None, 4),
        bias_len=5 if bias else None,
    )
    opt, report = _fold(g)
    assert ops_of(opt) == ["Gemm"], report.lines
    check_same(g, opt, _feeds(g, rng))


def test_bn_does_not_fold_into_gemm_with_trans_a():
    g, rng = _bn_then("Gemm", {"transA": 1}, (3, 5), xshape=(3, 4))  # BN channels = Gemm rows
    opt, report = _fold(g)
    _decline(report, "nxt (Gemm) has transA=1")
    assert ops_of(opt) == ["Mul", "Add", "Gemm"]
    check_same(g, opt, _feeds(g, rng))


def test_bn_folds_into_following_matmul_with_a_bias_add():
    g, rng = _bn_then("MatMul", {}, (4, 5), xshape=(None, 4))
    opt, report = _fold(g)
    assert ops_of(opt) == ["MatMul", "Add"] and opt.outputs == ["out"]
    check_same(g, opt, _feeds(g, rng))


def test_lone_bn_between_graph_input_and_output_becomes_an_affine():
    rng = np.random.default_rng(14)
    g = Graph("lone")
    g.add_input("x", (None, 3, 4, 2))
    y = add_bn(g, "x", "bn", rng, eps=1e-3)
    g.mark_output(y)
    opt, report = _fold(g)
    assert ops_of(opt) == ["Mul", "Add"] and opt.outputs == [y]
    _decline(report, "bn: not folded into the layer before it: its input 'x' is a graph input")
    _decline(
        report, "bn: not folded into the layer after it: its output 'bn.out' is a graph output"
    )
    assert opt.params["bn.mul"].shape == (3, 1, 1)
    feeds = _feeds(g, rng)
    check_same(g, opt, feeds)
    st_ = {k: g.params[f"bn.{k}"] for k in ("scale", "B", "mean", "var")}
    # and against the formula itself, float32 output of a float64 reference: 1e-5 bound
    np.testing.assert_allclose(
        runtime.run(opt, feeds)[y], bn_reference(feeds["x"], st_, 1e-3), rtol=1e-5, atol=1e-5
    )


def test_nothing_to_fold_reports_no_change():
    g = Graph("plain")
    g.add_input("x", (None, 3))
    g.mark_output(g.add_node("Relu", ["x"], name="relu").outputs[0])
    opt, report = _fold(g)
    assert (
        not report.changed
        and report.lines == []
        and report.summary() == "fold-batchnorm: no change"
    )
