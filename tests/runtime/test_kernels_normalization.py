"""Layer, Instance and Group normalization and LRN: kernels vs the formulas of docs/formulas.md
written as plain loops, exported single-node models vs onnxruntime (2-D to 5-D),
GroupNormalization import at opsets 18 (per-group scale) and 21 (per-channel), the non-affine
export, and error messages.
BatchNormalization has its own file, tests/runtime/test_kernels_batchnorm.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.nn import LRN, GroupNorm, InstanceNorm, LayerNorm, Network, Sequential
from tests.helpers import ATOL32, RTOL32, assert_close, export_checked, ort_run, rand, single_node

EPS = 2.0**-10  # exact in ONNX's float32 attribute, so float64 comparisons can stay tight
SHAPES = {2: (4, 6), 3: (2, 6, 7), 4: (2, 6, 5, 4), 5: (2, 6, 3, 4, 2)}


# ------------------------------------------------------ references: docs/formulas.md, as loops
def standardize(vals: np.ndarray, eps: float) -> np.ndarray:
    """(v - mu) / sqrt(sigma2 + eps) with mu, sigma2 the plain (biased) mean and variance."""
    vals = vals.astype(np.float64)
    mu = sum(vals.ravel()) / vals.size
    sigma2 = sum((v - mu) ** 2 for v in vals.ravel()) / vals.size
    return (vals - mu) / np.sqrt(sigma2 + eps)


def layer_norm_ref(x, scale, bias, axis, eps):
    """Per example t (every index before `axis`): statistics over all the remaining axes."""
    lead = int(np.prod(x.shape[:axis]))
    rows = x.reshape(lead, -1)
    y = np.stack([standardize(rows[t], eps) for t in range(lead)]).reshape(x.shape)
    return y * (1 if scale is None else scale) + (0 if bias is None else bias)


def group_norm_ref(x, scale, bias, groups, eps):
    """Per example t and group g: statistics over the group's C/G maps and all positions."""
    n, c = x.shape[:2]
    per = c // groups
    y = np.empty(x.shape, np.float64)
    for t in range(n):
        for g in range(groups):
            y[t, g * per : (g + 1) * per] = standardize(x[t, g * per : (g + 1) * per], eps)
    for m in range(c):
        y[:, m] = y[:, m] * (1 if scale is None else scale[m]) + (0 if bias is None else bias[m])
    return y


def instance_norm_ref(x, scale, bias, eps):
    """Per example t and map m: mu^mt, sigma2^mt over the positions (instance norm)."""
    y = np.empty(x.shape, np.float64)
    for t in range(x.shape[0]):
        for m in range(x.shape[1]):
            y[t, m] = standardize(x[t, m], eps) * (1 if scale is None else scale[m]) + (
                0 if bias is None else bias[m]
            )
    return y


def lrn_ref(x, size, alpha, beta, bias):
    """ONNX LRN: square_sum[n, c] = sum of X[n, i]^2 for i in
    [max(0, c - floor((size-1)/2)), min(C-1, c + ceil((size-1)/2))];
    Y = X / (bias + alpha/size * square_sum)^beta."""
    c_total = x.shape[1]
    y = np.empty(x.shape, np.float64)
    for c in range(c_total):
        lo = max(0, c - (size - 1) // 2)
        hi = min(c_total - 1, c + int(np.ceil((size - 1) / 2)))
        square_sum = sum(x[:, i].astype(np.float64) ** 2 for i in range(lo, hi + 1))
        y[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    return y


def check(g, x, expected, *, dtype="float32", ort=True, opset=None):
    """Our kernel vs the reference, and (if `ort`) vs onnxruntime on the exported model."""
    tol = dict(rtol=RTOL32, atol=ATOL32) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    out, feeds = g.outputs[0], {g.inputs[0]: x}
    ours = runtime.run(g, feeds)[out]
    assert ours.dtype == np.dtype(dtype)
    assert_close(ours, expected, **tol, what="vs the formula")
    if ort:
        theirs = ort_run(export_checked(g, opset=opset), feeds)[out]
        # onnxruntime accumulates the statistics in float32 (our kernels in float64): over up to
        # ~250 elements that moves the mean by a few float32 ulps, hence atol 1e-5 for float32.
        ort_tol = dict(rtol=RTOL32, atol=1e-5) if dtype == "float32" else tol
        assert_close(ours, theirs, **ort_tol, what="vs onnxruntime")
    return ours


# -------------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layernorm_lecture_axis1(rank, dtype):
    """Layer norm (docs/formulas.md): per example over all maps and positions (axis=1)."""
    rng = np.random.default_rng(rank)
    shape = SHAPES[rank]
    scale, bias = rand(rng, *shape[1:], dtype=dtype), rand(rng, *shape[1:], dtype=dtype)
    g = single_node(
        "LayerNormalization",
        {"x": shape},
        {"s": scale, "b": bias},
        {"axis": 1, "epsilon": EPS},
        dtype=dtype,
    )
    x = rand(rng, *shape, dtype=dtype, scale=2.0) + 1.0
    check(g, x, layer_norm_ref(x, scale, bias, 1, EPS), dtype=dtype)


@given(
    rank=st.integers(2, 5), data=st.data(), with_bias=st.booleans(), broadcast_scale=st.booleans()
)
@settings(max_examples=25, deadline=None)
def test_layernorm_any_axis(rank, data, with_bias, broadcast_scale):
    shape = SHAPES[rank]
    axis = data.draw(st.integers(-rank, rank - 1), label="axis")
    rng = np.random.default_rng(rank * 10 + axis)
    norm_shape = shape[axis % rank :]
    # ONNX broadcasts Scale against X: a scale with size-1 dims is legal too.
    s_shape = (1,) + norm_shape[1:] if broadcast_scale else norm_shape
    scale = rand(rng, *s_shape)
    params = {"s": scale, "b": rand(rng, *norm_shape)} if with_bias else {"s": scale}
    g = single_node("LayerNormalization", {"x": shape}, params, {"axis": axis, "epsilon": EPS})
    x = rand(rng, *shape)
    check(g, x, layer_norm_ref(x, scale, params.get("b"), axis % rank, EPS))


def test_layernorm_dsl_and_non_affine_export():
    rng = np.random.default_rng(0)
    g = Sequential([LayerNorm(eps=1e-3, affine=False)]).build((None, 4, 3, 3))
    assert g.num_params() == 0
    x = rand(rng, 2, 4, 3, 3)
    check(g, x, layer_norm_ref(x, None, None, 1, 1e-3))
    g = Sequential([LayerNorm()]).build((None, 4, 3, 3))
    assert g.params["ln1.scale"].shape == (4, 3, 3) and g.num_params() == 2 * 36


def layer_norm_stats_ref(x, axis, eps):
    """Mean and 1/sqrt(sigma2 + eps) per example t (every index before `axis`), the normalized
    axes kept as size 1 (ONNX's Mean and InvStdDev outputs)."""
    lead = int(np.prod(x.shape[:axis]))
    rows = x.reshape(lead, -1).astype(np.float64)
    mean = np.array([sum(r) / r.size for r in rows])
    var = np.array([sum((v - m) ** 2 for v in r) / r.size for r, m in zip(rows, mean, strict=True)])
    keep = x.shape[:axis] + (1,) * (x.ndim - axis)
    return mean.reshape(keep), (1 / np.sqrt(var + eps)).reshape(keep)


@pytest.mark.parametrize("outputs", [["y"], ["y", "mean"], ["y", "", "inv"], ["y", "mean", "inv"]])
@pytest.mark.parametrize("axis", [-1, 1])
def test_layernorm_import_with_statistics(outputs, axis):
    """LayerNormalization's optional Mean / InvStdDev outputs map onto the IR op's (an omitted
    one in the middle gets a placeholder name): each output vs the formula and onnxruntime, and
    the re-export writes them back."""
    rng = np.random.default_rng(len(outputs) + axis)
    shape = (2, 3, 4)
    norm = shape[axis:]  # Scale / B: the normalized shape
    inits = [
        numpy_helper.from_array(rand(rng, *norm), "s"),
        numpy_helper.from_array(rand(rng, *norm), "b"),
    ]
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], outputs, axis=axis, epsilon=1e-3)
    a = axis % len(shape)
    stats = shape[:a] + (1,) * (len(shape) - a)
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)] + [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, stats) for o in outputs[1:] if o
    ]
    model = _model([node], {"x": shape}, outs, inits, 17)
    g = graphnet.load(model)
    (n,) = g.nodes
    assert n.op == "LayerNormalization" and n.attrs == {"axis": axis, "epsilon": 1e-3}
    assert len(n.outputs) == len(outputs) and all(o in n.outputs for o in outputs if o)
    x = rand(rng, *shape)
    ours, theirs = runtime.run(g, {"x": x}), ort_run(model, {"x": x})
    p = {t.name: numpy_helper.to_array(t) for t in inits}
    mean, inv = layer_norm_stats_ref(x, a, 1e-3)
    want = {"y": layer_norm_ref(x, p["s"], p["b"], a, 1e-3), "mean": mean, "inv": inv}
    back = ort_run(export_checked(g), {"x": x})
    for o in filter(None, outputs):
        assert ours[o].dtype == np.float32 and ours[o].shape == want[o].shape
        assert_close(ours[o], want[o], what=f"{o} vs the formula")
        # onnxruntime's float32 statistics over 4-12 values differ by a few ulps: atol 1e-5.
        assert_close(ours[o], theirs[o], rtol=RTOL32, atol=1e-5, what=f"{o} vs onnxruntime")
        assert_close(
            back[o], theirs[o], rtol=RTOL32, atol=1e-5, what=f"{o}: our export vs onnxruntime"
        )


def test_layernorm_statistics_dtype_follows_stash_type():
    """stash_type=11 (double) makes Mean / InvStdDev float64 while Y stays float32; bfloat16
    statistics (16) have no NumPy dtype, so a node reading them stays opaque."""
    g = single_node("LayerNormalization", {"x": (2, 5)}, attrs={"stash_type": 11}, num_outputs=3)
    assert [g.values[o].dtype for o in g.nodes[0].outputs] == ["float32", "float64", "float64"]
    x = rand(np.random.default_rng(0), 2, 5)
    out = runtime.run(g, {"x": x})
    mean, inv = layer_norm_stats_ref(x, 1, 1e-5)
    assert [out[o].dtype for o in g.outputs] == [np.float32, np.float64, np.float64]
    assert_close(out[g.outputs[1]], mean, rtol=1e-12, atol=1e-12)
    assert_close(out[g.outputs[2]], inv, rtol=1e-12, atol=1e-12)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], stash_type=16)
    outs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 5)),
        helper.make_tensor_value_info("mean", TensorProto.BFLOAT16, (2, 1)),
    ]
    inits = [numpy_helper.from_array(np.ones(5, np.float32), "s")]
    assert graphnet.load(_model([node], {"x": (2, 5)}, outs, inits, 17)).nodes[0].op == "Opaque"


# ----------------------------------------------------------------------------- InstanceNorm
@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_instancenorm(rank, dtype):
    rng = np.random.default_rng(rank)
    shape = SHAPES[rank]
    scale, bias = rand(rng, shape[1], dtype=dtype), rand(rng, shape[1], dtype=dtype)
    g = single_node(
        "InstanceNormalization",
        {"x": shape},
        {"s": scale, "b": bias},
        {"epsilon": EPS},
        dtype=dtype,
    )
    x = rand(rng, *shape, dtype=dtype, scale=3.0) - 2.0
    # onnxruntime's CPU InstanceNormalization has no float64 kernel: float64 is checked vs the
    # formula.
    check(g, x, instance_norm_ref(x, scale, bias, EPS), dtype=dtype, ort=dtype == "float32")


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_instancenorm_dsl_not_affine_exports_ones_zeros(rank):
    rng = np.random.default_rng(rank)
    g = Sequential([InstanceNorm()]).build((None,) + SHAPES[rank][1:])
    assert g.num_params() == 0 and g.nodes[0].inputs[1:] == []
    x = rand(rng, *SHAPES[rank])
    check(g, x, instance_norm_ref(x, None, None, 1e-5))
    model = export_checked(g)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    _, s, b = model.graph.node[0].input
    np.testing.assert_array_equal(consts[s], np.ones(6, np.float32))
    np.testing.assert_array_equal(consts[b], np.zeros(6, np.float32))


@pytest.mark.parametrize("opset", [6, 9, 21])
def test_instancenorm_import(opset):
    rng = np.random.default_rng(opset)
    shape = (2, 3, 4, 5)
    inits = [numpy_helper.from_array(rand(rng, 3), "s"), numpy_helper.from_array(rand(rng, 3), "b")]
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=0.01)
    model = _model(
        [node],
        {"x": shape},
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
        opset,
    )
    g = graphnet.load(model)
    assert g.nodes[0].op == "InstanceNormalization" and g.nodes[0].attrs == {"epsilon": 0.01}
    x = rand(rng, *shape)
    assert_close(runtime.run(g, {"x": x})["y"], ort_run(model, {"x": x})["y"])


# ------------------------------------------------------------------------------- GroupNorm
@given(
    rank=st.integers(2, 5),
    groups=st.sampled_from([1, 2, 3, 6]),
    scale=st.booleans(),
    bias=st.booleans(),
    opset=st.sampled_from([17, 18, 20, 21]),
)
@settings(max_examples=30, deadline=None)
def test_groupnorm(rank, groups, scale, bias, opset):
    """Opset 21 writes GroupNormalization; 17-20 the exact Reshape/InstanceNorm decomposition.
    Either of scale and bias may be omitted (the IR's non-affine form)."""
    rng = np.random.default_rng(rank * 100 + groups * 10 + opset)
    shape = SHAPES[rank]
    s, b = (rand(rng, 6) if on else None for on in (scale, bias))
    # single_node: an input named "" is omitted; trailing omitted inputs are simply left out.
    params = {"s" if s is not None else "": s}
    if b is not None:
        params["b"] = b
    elif s is None:
        params = {}
    g = single_node(
        "GroupNormalization", {"x": shape}, params, {"num_groups": groups, "epsilon": EPS}
    )
    x = rand(rng, *shape, scale=2.0) + 0.5
    check(g, x, group_norm_ref(x, s, b, groups, EPS), opset=opset)


def test_groupnorm_limits_are_instance_and_layer_norm():
    """One map per group is instance norm; one group (no affine) is layer norm over all maps."""
    rng = np.random.default_rng(2)
    x = rand(rng, 2, 4, 3, 3)

    def gn(k):
        return runtime.run(
            single_node("GroupNormalization", {"x": x.shape}, {}, {"num_groups": k}), {"x": x}
        )

    assert_close(gn(4)["groupnormalization.out"], instance_norm_ref(x, None, None, 1e-5))
    assert_close(gn(1)["groupnormalization.out"], layer_norm_ref(x, None, None, 1, 1e-5))


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_groupnorm_float64_and_dsl(rank):
    rng = np.random.default_rng(rank)
    shape = SHAPES[rank]
    params = {"s": rand(rng, 6, dtype="float64"), "b": rand(rng, 6, dtype="float64")}
    # stash_type=11 (double): onnxruntime runs GroupNormalization-21's function body, which computes
    # the statistics in the stash type; with the default (float) it would round them to float32.
    attrs = {"num_groups": 2, "epsilon": EPS, "stash_type": 11}
    g = single_node("GroupNormalization", {"x": shape}, params, attrs, dtype="float64")
    x = rand(rng, *shape, dtype="float64")
    check(g, x, group_norm_ref(x, params["s"], params["b"], 2, EPS), dtype="float64")
    g = Sequential([GroupNorm(3, eps=EPS)]).build((None,) + shape[1:])
    np.testing.assert_array_equal(g.params["gn1.scale"], np.ones(6, np.float32))
    np.testing.assert_array_equal(g.params["gn1.bias"], np.zeros(6, np.float32))
    x = rand(rng, *shape)
    check(g, x, group_norm_ref(x, None, None, 3, EPS))


def _gn_model(opset, shape, groups, scale, bias, *, const=True):
    node = helper.make_node(
        "GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-3
    )
    inputs = {"x": shape}
    inits = []
    if const:
        inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")]
    else:
        inputs.update({"s": scale.shape, "b": bias.shape})
    # onnx's checker rejects GroupNormalization-18 as deprecated; models using it exist and
    # onnxruntime runs them, so they are built unchecked.
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    return _model([node], inputs, out, inits, opset, check=opset >= 21)


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_groupnorm_import_18_vs_21(rank):
    """Opset 18 scale/bias are per GROUP; import expands them per channel. The same per-group
    values given per channel to opset 21 describe the same function."""
    rng = np.random.default_rng(rank)
    shape, groups = SHAPES[rank], 3
    s_g, b_g = rand(rng, groups), rand(rng, groups)
    x = rand(rng, *shape)
    m18 = _gn_model(18, shape, groups, s_g, b_g)
    m21 = _gn_model(21, shape, groups, np.repeat(s_g, 2), np.repeat(b_g, 2))
    g18, g21 = graphnet.load(m18), graphnet.load(m21)
    (n18,) = g18.nodes
    assert n18.op == "GroupNormalization"
    np.testing.assert_array_equal(g18.params[n18.inputs[1]], np.repeat(s_g, 2))
    np.testing.assert_array_equal(g18.params[n18.inputs[2]], np.repeat(b_g, 2))
    ort18, ort21 = ort_run(m18, {"x": x})["y"], ort_run(m21, {"x": x})["y"]
    assert_close(ort18, ort21, atol=1e-5, what="onnxruntime 18 vs 21 (float32 statistics in both)")
    assert_close(
        runtime.run(g18, {"x": x})["y"], ort18, atol=1e-5, what="opset 18 import vs onnxruntime"
    )
    assert_close(
        runtime.run(g21, {"x": x})["y"], ort21, atol=1e-5, what="opset 21 import vs onnxruntime"
    )
    assert_close(
        runtime.run(g18, {"x": x})["y"],
        group_norm_ref(x, np.repeat(s_g, 2), np.repeat(b_g, 2), groups, 1e-3),
    )


def test_groupnorm_import_18_non_constant_scale_stays_opaque():
    shape = (2, 6, 4)
    model = _gn_model(18, shape, 3, np.ones(3, np.float32), np.zeros(3, np.float32), const=False)
    g = graphnet.load(model)
    assert g.nodes[0].op == "Opaque" and g.nodes[0].attrs["op_type"] == "GroupNormalization"


# ------------------------------------------------------------------------------------- LRN
@given(
    size=st.sampled_from([1, 3, 5, 7]),
    c=st.integers(1, 9),
    alpha=st.floats(1e-4, 2.0),
    beta=st.floats(0.1, 1.5),
    bias=st.floats(0.5, 3.0),
)
@settings(max_examples=30, deadline=None)
def test_lrn_vs_formula_and_onnxruntime(size, c, alpha, beta, bias):
    """Across CHANNELS, against the formula and onnxruntime (whose CPU LRN takes odd sizes only:
    lrn.h `size_ % 2 == 1`; even sizes are tested below against the formula)."""
    rng = np.random.default_rng(size * 10 + c)
    g = single_node(
        "LRN", {"x": (2, c, 3, 4)}, {}, {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    )
    x = rand(rng, 2, c, 3, 4, scale=2.0)
    # Attributes are float32 in ONNX: the reference uses the float32-rounded values ORT sees.
    a, b_, k = (float(np.float32(v)) for v in (alpha, beta, bias))
    g.nodes[0].attrs.update(alpha=a, beta=b_, bias=k)
    check(g, x, lrn_ref(x, size, a, b_, k))


@pytest.mark.parametrize(
    "rank, dtype", [(2, "float32"), (3, "float32"), (5, "float32"), (4, "float64"), (3, "float64")]
)
@pytest.mark.parametrize("size", [2, 3, 4, 8])
def test_lrn_other_ranks_even_sizes_float64(rank, dtype, size):
    """onnxruntime's CPU LRN takes 4-D float32 input and odd sizes only (lrn.cc
    `X_shape.NumDimensions() == 4`, lrn.h `size_ % 2 == 1`, no float64 kernel), so these cases are
    checked against the formula alone. Even sizes: the window leans towards higher channels."""
    rng = np.random.default_rng(rank)
    g = single_node(
        "LRN", {"x": SHAPES[rank]}, {}, {"size": size, "alpha": 0.5, "bias": 2.0}, dtype=dtype
    )
    x = rand(rng, *SHAPES[rank], dtype=dtype)
    check(g, x, lrn_ref(x, size, 0.5, 0.75, 2.0), dtype=dtype, ort=False)


@pytest.mark.parametrize("opset", [9, 13, 21])
def test_lrn_import(opset):
    rng = np.random.default_rng(opset)
    shape = (2, 5, 3, 3)
    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.5, beta=0.5, bias=2.0)
    model = _model(
        [node],
        {"x": shape},
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [],
        opset,
    )
    g = graphnet.load(model)
    assert g.nodes[0].op == "LRN" and g.nodes[0].attrs == {
        "size": 3,
        "alpha": 0.5,
        "beta": 0.5,
        "bias": 2.0,
    }
    x = rand(rng, *shape)
    assert_close(runtime.run(g, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_lrn_dsl():
    rng = np.random.default_rng(4)
    g = Sequential([LRN(5, alpha=1e-2, beta=0.5, bias=2.0)]).build((None, 7, 3, 3))
    x = rand(rng, 2, 7, 3, 3)
    check(g, x, lrn_ref(x, 5, 1e-2, 0.5, 2.0))


# ----------------------------------------------------------------------------------- errors
def test_groupnorm_dsl_error_names_layer():
    net = Network("n")
    x = net.input("x", (None, 6, 4, 4))
    with pytest.raises(
        ShapeError, match=r"gn1 \(GroupNorm\): 6 channels not divisible by 4 groups"
    ):
        GroupNorm(4)(x)
    with pytest.raises(
        AttributeValueError, match=r"GroupNorm\): groups must be an int >= 1, got 0"
    ):
        GroupNorm(0)


def test_op_level_errors_name_node_and_shapes():
    with pytest.raises(
        ShapeError,
        match=r"node 'groupnormalization' \(GroupNormalization\).*6 channels, not divisible by 4",
    ):
        single_node("GroupNormalization", {"x": (2, 6, 3)}, {}, {"num_groups": 4})
    with pytest.raises(
        ShapeError, match=r"scale 's' has 3 values but X 'x' has 6 channels \(2,6,3\)"
    ):
        single_node(
            "GroupNormalization", {"x": (2, 6, 3)}, {"s": np.ones(3, np.float32)}, {"num_groups": 3}
        )
    with pytest.raises(
        ShapeError,
        match=r"Scale 's' \(3\) does not broadcast to X 'x' \(2,6,4\).*\(4\) from axis 2",
    ):
        single_node("LayerNormalization", {"x": (2, 6, 4)}, {"s": np.ones(3, np.float32)})
    with pytest.raises(
        AttributeValueError, match=r"layernormalization.*axis must be in \[-3, 2\].*got 3"
    ):
        single_node(
            "LayerNormalization", {"x": (2, 6, 4)}, {"s": np.ones(4, np.float32)}, {"axis": 3}
        )
    with pytest.raises(ShapeError, match=r"instancenormalization.*rank 3 or 4 or 5, got \(2,6\)"):
        single_node("InstanceNormalization", {"x": (2, 6)}, {})
    with pytest.raises(AttributeValueError, match=r"lrn.*size must be an int >= 1.*got 0"):
        single_node("LRN", {"x": (1, 3, 2, 2)}, {}, {"size": 0})
    with pytest.raises(
        ShapeError, match=r"'s' is float64 but .*'x' is float32|'x' is float32 but 's' is float64"
    ):
        single_node("InstanceNormalization", {"x": (1, 3, 2)}, {"s": np.ones(3)})


def test_dsl_rank_and_eps_errors():
    net = Network("n")
    x = net.input("x", (None, 6))
    with pytest.raises(
        ShapeError, match=r"in1 \(InstanceNorm\): input 'x' must have rank 3 or 4 or 5.*\(N,6\)"
    ):
        InstanceNorm()(x)
    with pytest.raises(
        AttributeValueError, match=r"LayerNorm\): eps must be a number >= 0, got -1"
    ):
        LayerNorm(eps=-1)


# ---------------------------------------------------------------------------------- helpers
def _model(nodes, inputs: dict, outputs: list, inits: list, opset: int, *, check: bool = True):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("opset", [17, 21])
def test_round_trip_through_onnx(opset):
    """DSL -> ONNX -> graphnet: every op comes back as itself (GroupNorm only at opset 21, where
    ONNX has its per-channel form) and computes the same thing."""
    from graphnet.nn import BatchNorm

    rng = np.random.default_rng(opset)
    layers = [BatchNorm(), InstanceNorm(affine=True), LayerNorm(), LRN(3)]
    if opset >= 21:
        layers.insert(1, GroupNorm(2))
    g = Sequential(layers).build((None, 4, 3, 5))
    for k in g.params:  # non-trivial parameters, so that a dropped or swapped one shows
        g.set_param(k, (rng.uniform(0.5, 1.5, g.params[k].shape)).astype(np.float32))
    back = graphnet.load(export_checked(g, opset=opset))
    assert [n.op for n in back.nodes] == [n.op for n in g.nodes]
    for a, b in zip(g.nodes, back.nodes, strict=True):
        assert {k: v for k, v in b.attrs.items() if k != "stash_type"} == a.attrs, a.name
    x = rand(rng, 2, 4, 3, 5)
    assert_close(runtime.run(back, {"input": x})["output"], runtime.run(g, {"input": x})["output"])
