"""Known bugs of `onnx.reference.ReferenceEvaluator` that onnx's own backend suite does not catch,
and that we must not copy. For each: a small model where the reference's answer differs from
onnxruntime's (asserted, so the test documents the bug and notices when onnx fixes it), where
onnxruntime agrees with the spec's formula written out here, and where our import + NumPy runtime
agrees with onnxruntime.

1. BatchNormalization, opsets 9-13 (schema BatchNormalization-9): the reference fills in the
   default `momentum` 0.9 and then always mixes the batch's statistics into the running ones,
   i.e. uses batch statistics at inference; the spec's outputs are inference-mode (Y only).
2. Softmax / LogSoftmax below opset 13: the spec coerces the input to 2-D
   (prod(dims[:axis]), prod(dims[axis:])) and normalizes each row, i.e. over ALL axes >= axis;
   the reference normalizes over `axis` alone.
3. LRN: the reference's loop over channels runs `range(x.shape[0])` (the batch size), so only
   the first N channels get their square sum; the others are divided by bias ** beta alone.
4. ConvTranspose with group > 1: the reference slices the weight by OUTPUT channels
   (W is (C, M/group, k...), sliced on axis 0 by M/group) and adds the whole bias's first entry
   to every group: it raises on reshaping, or (depthwise, C = M = group) adds B[0] everywhere.

Tolerances: rtol 1e-5, atol 1e-6 (float32 single ops, tests/helpers.py) between us and
onnxruntime and against the float64 formula; the bugs change outputs by O(0.1) or more, asserted
as a difference of at least 1e-2.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import graphnet
from graphnet import runtime
from tests.helpers import assert_close, ort_run
from tests.oracles import naive_conv_transpose

BUG = 1e-2  # the smallest max|reference - onnxruntime| we call "the bug shows"


def _model(node: onnx.NodeProto, x_shape, y_shape, opset: int, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        f"{node.op_type.lower()}_{opset}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializer=[onnx.numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what onnxruntime accepts for every opset used here
    onnx.checker.check_model(model, full_check=True)
    return model


def _three_ways(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ours, onnxruntime, onnx.reference) on the same model and input."""
    ours = runtime.run(graphnet.load(model), {"x": x})["y"]
    theirs = ort_run(model, {"x": x})["y"]
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    return ours, theirs, ref


def _bug_shows(ref: np.ndarray, theirs: np.ndarray) -> float:
    diff = float(np.max(np.abs(np.asarray(ref, np.float64) - theirs)))
    assert diff > BUG, (
        f"onnx.reference now agrees with onnxruntime (max|diff| = {diff:.3g}): fixed upstream?"
    )
    return diff


# ============================================================== 1. BatchNormalization, opset 9-13
@pytest.mark.parametrize("opset", [9, 11, 13])
def test_batchnorm_is_inference_mode_not_batch_statistics(opset):
    rng = np.random.default_rng(opset)
    c = 3
    stats = {
        "scale": rng.uniform(0.5, 2, c),
        "B": rng.standard_normal(c),
        "mean": rng.standard_normal(c),
        "var": rng.uniform(0.5, 2, c),
    }
    inits = [(k, v.astype(np.float32)) for k, v in stats.items()]
    node = helper.make_node("BatchNormalization", ["x", *stats], ["y"], epsilon=1e-3)
    model = _model(node, [4, c, 5, 5], [4, c, 5, 5], opset, inits)
    # Batch statistics far from the running ones, so mixing them in is visible.
    x = (rng.standard_normal((4, c, 5, 5)) * 3 + 2).astype(np.float32)
    ours, theirs, ref = _three_ways(model, x)
    _bug_shows(ref, theirs)
    view = (1, c, 1, 1)
    g, b, m, v = (stats[k].reshape(view) for k in ("scale", "B", "mean", "var"))
    formula = (
        g * (x.astype(np.float64) - m) / np.sqrt(v + 1e-3) + b
    )  # inference BN, running statistics
    assert_close(theirs, formula, what="onnxruntime vs the inference formula")
    assert_close(ours, theirs, what=f"BatchNormalization opset {opset}: ours vs onnxruntime")


# ============================================================ 2. Softmax / LogSoftmax below 13
def _softmax_2d(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    """The opset < 13 definition: rows of the 2-D coercion at `axis`, normalized, reshaped back."""
    axis = axis % x.ndim
    rows = x.astype(np.float64).reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    out = np.empty_like(rows)
    for i, row in enumerate(rows):  # one row at a time, plainly
        e = np.exp(row - row.max())
        out[i] = np.log(e / e.sum()) if log else e / e.sum()
    return out.reshape(x.shape)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(9, None), (11, 1), (11, -2), (12, 2)])
def test_softmax_below_13_normalizes_the_flattened_trailing_axes(op, opset, axis):
    rng = np.random.default_rng(opset)
    shape = (2, 3, 4, 5)
    attrs = {} if axis is None else {"axis": axis}
    model = _model(helper.make_node(op, ["x"], ["y"], **attrs), list(shape), list(shape), opset)
    x = rng.standard_normal(shape).astype(np.float32)
    ours, theirs, ref = _three_ways(model, x)
    _bug_shows(ref, theirs)
    assert_close(
        theirs,
        _softmax_2d(x, 1 if axis is None else axis, op == "LogSoftmax"),
        what="onnxruntime vs the 2-D coercion formula",
    )
    assert_close(ours, theirs, what=f"{op} opset {opset} axis {axis}: ours vs onnxruntime")


# ======================================================================================= 3. LRN
def _lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The spec: square_sum[n, c] = sum of x[n, i]^2 for i in [c - floor((size-1)/2),
    c + ceil((size-1)/2)] within [0, C-1]; y = x / (bias + alpha / size * square_sum) ** beta."""
    x64 = x.astype(np.float64)
    sq = np.zeros_like(x64)
    C = x.shape[1]
    for c in range(C):
        lo, hi = max(0, c - (size - 1) // 2), min(C - 1, c + -(-(size - 1) // 2))
        sq[:, c] = (x64[:, lo : hi + 1] ** 2).sum(axis=1)
    return x64 / (bias + alpha / size * sq) ** beta


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("size", [3, 5])  # onnxruntime accepts odd sizes only
def test_lrn_normalizes_across_channels_not_the_batch(opset, size):
    rng = np.random.default_rng(size)
    shape = (2, 6, 3, 3)  # N = 2 < C = 6: the reference only fills square sums of channels 0, 1
    attrs = dict(size=size, alpha=0.5, beta=0.75, bias=2.0)
    model = _model(helper.make_node("LRN", ["x"], ["y"], **attrs), list(shape), list(shape), opset)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    ours, theirs, ref = _three_ways(model, x)
    _bug_shows(ref, theirs)
    assert_close(theirs, _lrn(x, **attrs), what="onnxruntime vs the LRN formula")
    assert_close(ours, theirs, what=f"LRN opset {opset} size {size}: ours vs onnxruntime")


# ============================================================= 4. ConvTranspose with group > 1
@pytest.mark.parametrize(
    "c,m,group,bias,reference_raises",
    [
        (
            4,
            2,
            2,
            False,
            True,
        ),  # W (4, 1, k): sliced as W[0:1] for 2 input channels -> reshape error
        (2, 4, 2, True, True),  # W (2, 2, k): sliced as W[0:2] (all of it) for 1 input channel
        (
            6,
            6,
            3,
            True,
            True,
        ),  # W (6, 2, k): W[0:2] fits, but the groups' outputs are stored 1 channel wide
        (3, 3, 3, True, False),  # depthwise: the right weight slice, but B[0] added to every group
    ],
)
@pytest.mark.parametrize("opset", [9, 21])
def test_conv_transpose_with_groups(c, m, group, bias, reference_raises, opset):
    rng = np.random.default_rng(c * 10 + m)
    w = rng.standard_normal((c, m // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    inits = [("w", w)] + ([("b", b)] if bias else [])
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w"] + (["b"] if bias else []),
        ["y"],
        group=group,
        strides=[2, 2],
        pads=[1, 0, 0, 1],
    )
    model = _model(node, [2, c, 3, 4], [2, m, 6, 8], opset, inits)
    x = rng.standard_normal((2, c, 3, 4)).astype(np.float32)
    ours = runtime.run(graphnet.load(model), {"x": x})["y"]
    theirs = ort_run(model, {"x": x})["y"]
    if reference_raises:
        # numpy's "cannot reshape array of size ..." or "could not broadcast input array ..."
        with pytest.raises(ValueError, match="reshape|broadcast"):
            ReferenceEvaluator(model).run(None, {"x": x})
    else:
        _bug_shows(ReferenceEvaluator(model).run(None, {"x": x})[0], theirs)
    formula = naive_conv_transpose(
        x, w, b if bias else None, strides=(2, 2), pads=(1, 0, 0, 1), group=group
    )
    assert_close(theirs, formula, what="onnxruntime vs the scatter formula")
    assert_close(ours, theirs, what=f"ConvTranspose group {group}: ours vs onnxruntime")
