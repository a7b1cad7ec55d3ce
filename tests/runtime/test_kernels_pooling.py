"""Pooling family: op table, kernels and export.

Every kernel result is checked against `naive_pool` below (plain loops over every output position
and every tap, the ONNX formulas written out) and against onnxruntime on the exported single-node
model. Tolerances: float32 rtol 1e-5 / atol 1e-6 (windows of at most 27 taps; onnxruntime and
NumPy add them in different orders, far inside that bound), float64 1e-12.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from graphnet import ops, runtime
from graphnet.errors import AttributeValueError, InputError, ShapeError, UnsupportedOpError
from graphnet.onnx_io.registry import has_export_rule, has_import_rule
from graphnet.runtime.kernels import has_kernel
from tests.helpers import (
    ATOL32,
    ATOL64,
    RTOL32,
    RTOL64,
    assert_close,
    compare_with_ort,
    export_checked,
    single_node,
)
from tests.oracles import literal_fallback, naive_indices, naive_out_len, naive_pool

POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize("op", POOL_OPS)
def test_every_pool_op_has_spec_kernel_and_rules(op):
    spec = ops.get(op)
    assert spec.family == "pooling" and spec.doc
    assert has_kernel(op), f"no kernel for {op}"
    assert has_export_rule(op), f"no export rule for {op}"
    assert has_import_rule(op), f"no import rule for {op}"


def test_resolve_fills_rank_dependent_defaults():
    g = single_node("MaxPool", {"x": (1, 2, 5, 6, 7)}, attrs={"kernel_shape": [2, 3, 1]})
    n = g.nodes[0]
    attrs = ops.attrs_of(n, [g.values["x"]])
    assert attrs == {
        "kernel_shape": (2, 3, 1),
        "strides": (1, 1, 1),
        "pads": (0,) * 6,
        "dilations": (1, 1, 1),
        "ceil_mode": 0,
        "storage_order": 0,
    }
    assert g.values[n.outputs[0]].shape == (1, 2, 4, 4, 7)


def test_macs_count_one_op_per_tap():
    g = single_node(
        "MaxPool", {"x": (None, 3, 4, 4)}, attrs={"kernel_shape": [2, 2], "strides": [2, 2]}
    )
    n = g.nodes[0]
    spec = ops.get("MaxPool")
    attrs = ops.attrs_of(n, [g.values["x"]])
    assert (
        spec.macs([g.values["x"]], [g.values[n.outputs[0]]], attrs) == 3 * 2 * 2 * 4
    )  # per example
    gap = single_node("GlobalAveragePool", {"x": (2, 3, 4, 5)})
    assert (
        ops.get("GlobalAveragePool").macs([gap.values["x"]], [gap.values[gap.outputs[0]]], {})
        == 2 * 3 * 4 * 5
    )


def test_dynamic_dims_stay_dynamic():
    g = single_node(
        "AveragePool", {"x": (None, 3, None, 9)}, attrs={"kernel_shape": [3, 3], "strides": [2, 2]}
    )
    assert g.values[g.outputs[0]].shape == (None, 3, None, 4)


# --------------------------------------------------------------------------- literal examples
def test_lecture_worked_example():
    """docs/formulas.md's example: 2x2 max pool, stride 2."""
    x = np.array([[1, 3, 2, 9], [7, 4, 1, 5], [8, 5, 2, 3], [4, 2, 1, 4]], dtype=np.float32)[
        None, None
    ]
    g = single_node("MaxPool", {"x": x.shape}, attrs={"kernel_shape": [2, 2], "strides": [2, 2]})
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    np.testing.assert_array_equal(y, np.array([[[[7, 9], [8, 4]]]], dtype=np.float32))


def test_ceil_mode_drops_window_starting_in_end_padding():
    # x = 1..5, kernel 2, stride 2, pads (1, 1): padded p 1 2 3 4 5 p. ceil would give windows
    # starting at -1, 1, 3, 5; the last starts in the end padding and is dropped -> 3 outputs.
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    g = single_node(
        "MaxPool",
        {"x": x.shape},
        attrs={"kernel_shape": [2], "strides": [2], "pads": [1, 1], "ceil_mode": 1},
    )
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    np.testing.assert_array_equal(y, np.array([[[1, 3, 5]]], dtype=np.float32))


@pytest.mark.parametrize(
    "cip, expected",
    [
        # x = 1..6, kernel 3, stride 2, pads (1, 1), ceil: windows at -1, 1, 3, 5
        # (the last: 6, pad, past-end).
        (
            1,
            [(0 + 1 + 2) / 3, (2 + 3 + 4) / 3, (4 + 5 + 6) / 3, (6 + 0) / 2],
        ),  # pad counts, overhang not
        (0, [(1 + 2) / 2, (2 + 3 + 4) / 3, (4 + 5 + 6) / 3, 6 / 1]),
    ],
)
def test_average_ceil_mode_divisor(cip, expected):
    x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6)
    g = single_node(
        "AveragePool",
        {"x": x.shape},
        attrs={
            "kernel_shape": [3],
            "strides": [2],
            "pads": [1, 1],
            "ceil_mode": 1,
            "count_include_pad": cip,
        },
    )
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert_close(y, np.array([[expected]], dtype=np.float32))


# --------------------------------------------------------------------------- impulse tests
IMPULSE_CASES = [
    # (input spatial, kernel, strides, pads, dilations, ceil_mode)
    ((5, 6), (2, 3), (1, 2), (0, 1, 1, 1), (1, 1), 0),
    ((7, 5), (3, 2), (2, 2), (1, 0, 1, 1), (1, 2), 1),
    ((6, 7), (2, 2), (3, 2), (1, 1, 0, 1), (2, 1), 1),
    ((4, 4, 5), (2, 1, 3), (1, 1, 2), (1, 0, 1, 0, 0, 2), (1, 1, 1), 1),
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("spatial, kernel, strides, pads, dilations, ceil", IMPULSE_CASES)
def test_impulse_window_positions(op, spatial, kernel, strides, pads, dilations, ceil):
    """A single 1 at each input position: output o is nonzero exactly for the windows whose
    taps o*stride - pad_begin + t*dilation hit that position (max: 1; average: 1/count)."""
    k = len(kernel)
    attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "pads": list(pads),
        "dilations": list(dilations),
        "ceil_mode": ceil,
    }
    if op == "AveragePool":
        attrs["count_include_pad"] = 1
    g = single_node(op, {"x": (1, 1) + spatial}, attrs=attrs)
    out_shape = g.values[g.outputs[0]].shape[2:]
    sess = runtime.Session(g)
    for p in itertools.product(*map(range, spatial)):
        x = np.zeros((1, 1) + spatial, dtype=np.float32)
        x[(0, 0, *p)] = 1.0
        y = sess.run({"x": x})[g.outputs[0]][0, 0]
        for o in itertools.product(*map(range, out_shape)):
            hits = [
                all(o[i] * strides[i] - pads[i] + t[i] * dilations[i] == p[i] for i in range(k))
                for t in itertools.product(*map(range, kernel))
            ]
            if op == "MaxPool":
                want = 1.0 if any(hits) else 0.0
            else:  # count_include_pad=1: the taps inside the explicit padding count
                count = sum(
                    all(
                        -pads[i]
                        <= o[i] * strides[i] - pads[i] + t[i] * dilations[i]
                        < spatial[i] + pads[k + i]
                        for i in range(k)
                    )
                    for t in itertools.product(*map(range, kernel))
                )
                want = (1.0 if any(hits) else 0.0) / count
            assert y[o] == pytest.approx(want, rel=RTOL32, abs=ATOL32), f"input {p}, output {o}"


# ------------------------------------------------------------------------ randomized vs naive + ORT
@st.composite
def window_configs(draw, max_rank=3):
    k = draw(st.integers(1, max_rank))
    kmax = 3 if k < 3 else 2  # keeps the naive reference fast in 3-D
    kernel = [draw(st.integers(1, kmax)) for _ in range(k)]
    strides = [draw(st.integers(1, 3)) for _ in range(k)]
    dilations = [draw(st.integers(1, 2)) for _ in range(k)]
    pads = [draw(st.integers(0, kk - 1)) for kk in kernel] + [
        draw(st.integers(0, kk - 1)) for kk in kernel
    ]
    extent = [d * (kk - 1) + 1 for kk, d in zip(kernel, dilations, strict=True)]
    sizes = [
        max(1, e - pads[i] - pads[k + i]) + draw(st.integers(0, 4 if k < 3 else 2))
        for i, e in enumerate(extent)
    ]
    ceil = draw(st.integers(0, 1))
    # A dilated window may see only padding; graphnet refuses that form (tested separately).
    for i in range(k):
        n_out = naive_out_len(
            sizes[i], kernel[i], strides[i], dilations[i], pads[i], pads[k + i], bool(ceil)
        )
        assume(n_out >= 1)
        for o in range(n_out):
            assume(
                any(
                    0 <= o * strides[i] - pads[i] + t * dilations[i] < sizes[i]
                    for t in range(kernel[i])
                )
            )
    assume(not literal_fallback(sizes, kernel, strides, pads, dilations, ceil))
    return sizes, {
        "kernel_shape": kernel,
        "strides": strides,
        "pads": pads,
        "dilations": dilations,
        "ceil_mode": ceil,
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cfg=window_configs(), seed=st.integers(0, 2**31 - 1))
def test_max_pool_random_vs_naive_and_ort(cfg, seed):
    sizes, attrs = cfg
    x = np.random.default_rng(seed).standard_normal([2, 3] + sizes).astype(np.float32)
    g = single_node("MaxPool", {"x": x.shape}, attrs=attrs)
    ours = compare_with_ort(g, {"x": x})[g.outputs[0]]
    ref = naive_pool(
        x,
        attrs["kernel_shape"],
        attrs["strides"],
        attrs["pads"],
        attrs["dilations"],
        attrs["ceil_mode"],
        "max",
    )
    assert ours.dtype == np.float32
    assert_close(ours, ref.astype(np.float32), what=f"MaxPool {attrs} on {sizes} vs naive")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cfg=window_configs(), cip=st.integers(0, 1), seed=st.integers(0, 2**31 - 1))
def test_average_pool_random_vs_naive_and_ort(cfg, cip, seed):
    sizes, attrs = cfg
    attrs = dict(attrs, count_include_pad=cip)
    x = np.random.default_rng(seed).standard_normal([2, 3] + sizes).astype(np.float32)
    g = single_node("AveragePool", {"x": x.shape}, attrs=attrs)
    ours = compare_with_ort(g, {"x": x})[g.outputs[0]]
    ref = naive_pool(
        x,
        attrs["kernel_shape"],
        attrs["strides"],
        attrs["pads"],
        attrs["dilations"],
        attrs["ceil_mode"],
        "avg",
        cip,
    )
    assert ours.dtype == np.float32
    assert_close(ours, ref.astype(np.float32), what=f"AveragePool {attrs} on {sizes} vs naive")


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_float64_keeps_dtype(op):
    # onnxruntime has no float64 AveragePool kernel, so float64 is checked against the naive loops;
    # MaxPool float64 is compared with onnxruntime as well.
    x = np.random.default_rng(1).standard_normal((2, 2, 7, 6))
    attrs = {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "ceil_mode": 1}
    g = single_node(op, {"x": x.shape}, attrs=attrs, dtype="float64")
    y = runtime.run(g, {"x": x})[g.outputs[0]]
    assert y.dtype == np.float64
    ref = naive_pool(
        x,
        attrs["kernel_shape"],
        attrs["strides"],
        attrs["pads"],
        (1, 1),
        1,
        "max" if op == "MaxPool" else "avg",
    )
    assert_close(y, ref, rtol=RTOL64, atol=ATOL64)
    if op == "MaxPool":
        compare_with_ort(g, {"x": x}, rtol=RTOL64, atol=ATOL64)


def test_max_pool_int8_vs_ort():
    """MaxPool-12 takes int8: the padding is the dtype's minimum, so it never wins."""
    x = np.random.default_rng(2).integers(-128, 128, (1, 2, 5, 6)).astype(np.int8)
    g = single_node(
        "MaxPool",
        {"x": x.shape},
        attrs={"kernel_shape": [2, 3], "pads": [1, 1, 1, 1]},
        dtype="int8",
    )
    y = compare_with_ort(g, {"x": x}, rtol=0, atol=0)[g.outputs[0]]
    assert y.dtype == np.int8
    np.testing.assert_array_equal(
        y, naive_pool(x, (2, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0, "max").astype(np.int8)
    )


def test_average_pool_float16_vs_ort():
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float16)
    g = single_node(
        "AveragePool",
        {"x": x.shape},
        attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        dtype="float16",
    )
    # float16 has an 11-bit mantissa: results agree to a few float16 ulps (2**-10 relative).
    y = compare_with_ort(g, {"x": x}, rtol=2e-3, atol=2e-3)[g.outputs[0]]
    assert y.dtype == np.float16


# --------------------------------------------------------------------------- global pools
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 4, 5, 6), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools_vs_formula_and_ort(op, shape):
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    g = single_node(op, {"x": shape})
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert y.shape == shape[:2] + (1,) * (len(shape) - 2)
    flat = x.astype(np.float64).reshape(shape[0], shape[1], -1)
    want = [
        [(max(row) if op == "GlobalMaxPool" else sum(row) / len(row)) for row in ch]
        for ch in flat.tolist()
    ]
    assert_close(y.reshape(shape[:2]), np.array(want, dtype=np.float32))


def test_global_pool_rejects_rank_2():
    with pytest.raises(
        ShapeError, match=r"node 'globalaveragepool' \(GlobalAveragePool\).*rank >= 3.*\(4,5\)"
    ):
        single_node("GlobalAveragePool", {"x": (4, 5)})


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "attrs, shape, err, pattern",
    [
        (
            {"kernel_shape": [3, 3]},
            (1, 1, 2, 2),
            ShapeError,
            r"node 'maxpool' \(MaxPool\): kernel \(3,3\) larger than padded input "
            r"\(2,2\).*x\(1,1,2,2\)",
        ),
        (
            {"kernel_shape": [2, 2], "dilations": [3, 1]},
            (1, 1, 3, 3),
            ShapeError,
            r"dilated kernel \(4,2\) larger than padded input \(3,3\)",
        ),
        (
            {"kernel_shape": [2, 2]},
            (1, 1, 5),
            ShapeError,
            r"kernel_shape \(2,2\) is 2-D.*rank 4.*\(1,1,5\)",
        ),
        (
            {"kernel_shape": [2, 2], "storage_order": 2},
            (1, 1, 4, 4),
            AttributeValueError,
            r"storage_order must be 0 or 1, got 2",
        ),
        (
            {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]},
            (1, 1, 4, 4),
            AttributeValueError,
            r"pads \[2, 0, 0, 0\] must be smaller than kernel \(2,2\)",
        ),
        (
            {"kernel_shape": [2, 2], "pads": [-1, 0, 0, 0]},
            (1, 1, 4, 4),
            AttributeValueError,
            r"pads must be >= 0",
        ),
        (
            {"kernel_shape": [2, 2], "strides": [1]},
            (1, 1, 4, 4),
            AttributeValueError,
            r"strides must have 2 entries",
        ),
        ({"kernel_shape": [2, 0]}, (1, 1, 4, 4), AttributeValueError, r"kernel_shape must be >= 1"),
        (
            {"kernel_shape": [1, 1, 1, 1]},
            (1, 1, 2, 2, 2, 2),
            AttributeValueError,
            r"1, 2 or 3 entries",
        ),
        (
            {"kernel_shape": [2], "ceil_mode": 2},
            (1, 1, 4),
            AttributeValueError,
            r"ceil_mode must be 0 or 1",
        ),
        # taps at -1 and 2 of a length-2 input with pads (1, 1): the only window sees padding only
        (
            {"kernel_shape": [2], "dilations": [3], "pads": [1, 1]},
            (1, 1, 2),
            AttributeValueError,
            r"window 0 on spatial axis 0 sees only padding",
        ),
    ],
)
def test_bad_attributes_and_shapes(attrs, shape, err, pattern):
    with pytest.raises(err, match=pattern):
        single_node("MaxPool", {"x": shape}, attrs=attrs)


def test_average_pool_rejects_integer_input():
    with pytest.raises(ShapeError, match=r"node 'averagepool' \(AveragePool\).*int8"):
        single_node(
            "AveragePool", {"x": (1, 1, 4, 4)}, attrs={"kernel_shape": [2, 2]}, dtype="int8"
        )


def test_missing_kernel_shape():
    with pytest.raises(AttributeValueError, match=r"required attribute\(s\) \['kernel_shape'\]"):
        single_node("MaxPool", {"x": (1, 1, 4, 4)})


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("opset", [17, 18, 19, 21])
def test_export_opsets(opset):
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 7)).astype(np.float32)
    for op, extra in (
        ("MaxPool", {"dilations": [2, 1]}),
        ("AveragePool", {"count_include_pad": 1}),
    ):
        g = single_node(
            op,
            {"x": x.shape},
            attrs={
                "kernel_shape": [3, 2],
                "strides": [2, 2],
                "pads": [1, 0, 1, 1],
                "ceil_mode": 1,
                **extra,
            },
        )
        compare_with_ort(g, {"x": x}, opset=opset)


INDICES_CASES = [  # (x shape, attributes)
    ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((2, 3, 6, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 2, 2, 1]}),
    (
        (1, 2, 7, 7),
        {
            "kernel_shape": [3, 2],
            "strides": [2, 2],
            "pads": [1, 0, 1, 1],
            "ceil_mode": 1,
            "dilations": [2, 1],
        },
    ),
    (
        (1, 2, 5, 6, 4),
        {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [1, 1, 0, 0, 1, 1]},
    ),
]


@pytest.mark.parametrize("shape, attrs", INDICES_CASES)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_match_reference_and_onnxruntime(shape, attrs, storage_order):
    """The optional Indices output (storage_order 0 and 1, with pads, strides, dilations,
    ceil_mode, 1-D to 3-D) vs the loop reference, and vs onnxruntime on our export."""
    attrs = {**attrs, "storage_order": storage_order}
    g = single_node("MaxPool", {"x": shape}, attrs=attrs, num_outputs=2)
    assert [g.values[o].dtype for o in g.outputs] == ["float32", "int64"]
    x = np.random.default_rng(len(shape) + storage_order).standard_normal(shape).astype(np.float32)
    args = (
        attrs["kernel_shape"],
        attrs.get("strides", [1] * (len(shape) - 2)),
        attrs.get("pads", [0] * 2 * (len(shape) - 2)),
        attrs.get("dilations", [1] * (len(shape) - 2)),
        attrs.get("ceil_mode", 0),
    )
    ours = compare_with_ort(g, {"x": x})  # both outputs vs onnxruntime (indices exactly: ints)
    np.testing.assert_array_equal(ours["y1"], naive_indices(x, *args, storage_order))
    assert_close(ours["y0"], naive_pool(x, *args, "max"))
    assert ours["y1"].dtype == np.int64


def test_max_pool_indices_never_point_at_padding():
    """uint8 padding is the dtype's minimum, 0: a window whose real values are all 0 ties with its
    padding, and Indices must still name a real element (the loop reference only sees real taps)."""
    x = np.zeros((1, 1, 3, 3), np.uint8)
    x[0, 0, 2, 2] = 7
    attrs = {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    g = single_node("MaxPool", {"x": x.shape}, attrs=attrs, dtype="uint8", num_outputs=2)
    idx = runtime.run(g, {"x": x})["y1"]
    np.testing.assert_array_equal(idx, naive_indices(x, [2, 2], [1, 1], [1, 1, 1, 1], [1, 1], 0, 0))
    assert idx.min() >= 0 and idx.max() < x.size


def test_max_pool_without_indices_skips_them():
    """The executor tells the kernel how many outputs the node has: one means Y alone."""
    from graphnet.runtime.kernels.pooling import max_pool

    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype(np.float32)
    kw = dict(
        kernel_shape=(2, 2),
        strides=(2, 2),
        pads=(0,) * 4,
        dilations=(1, 1),
        ceil_mode=0,
        storage_order=0,
    )
    assert isinstance(max_pool(x, **kw, num_outputs=1), np.ndarray)
    y, idx = max_pool(x, **kw)  # a caller that does not say gets both
    g = single_node("MaxPool", {"x": x.shape}, attrs={"kernel_shape": [2, 2], "strides": [2, 2]})
    np.testing.assert_array_equal(runtime.run(g, {"x": x})["maxpool.out"], y)


def test_export_writes_defaults_explicitly_and_no_storage_order():
    g = single_node("MaxPool", {"x": (1, 1, 4, 4)}, attrs={"kernel_shape": [2, 2]})
    node = export_checked(g).graph.node[0]
    names = {a.name for a in node.attribute}
    assert names == {"kernel_shape", "strides", "pads", "dilations", "ceil_mode"}


def test_export_dilated_average_pool_needs_opset_19():
    g = single_node(
        "AveragePool", {"x": (1, 1, 6, 6)}, attrs={"kernel_shape": [2, 2], "dilations": [2, 2]}
    )
    with pytest.raises(
        UnsupportedOpError,
        match=r"node 'averagepool' \(AveragePool\): dilations \[2, 2\] need opset 19",
    ):
        g.to_onnx(opset=18)
    x = np.random.default_rng(6).standard_normal((1, 1, 6, 6)).astype(np.float32)
    compare_with_ort(g, {"x": x}, opset=19)


def test_runtime_rejects_wrong_input_shape():
    g = single_node("MaxPool", {"x": (1, 2, 4, 4)}, attrs={"kernel_shape": [2, 2]})
    with pytest.raises(InputError, match=r"input 'x' must have shape \(1,2,4,4\), got \(1,2,3,3\)"):
        runtime.run(g, {"x": np.zeros((1, 2, 3, 3), np.float32)})


# --------------------------------------------------------------------------- ceil_mode export forms
def _onnx_node(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def _attr(node, name):
    from onnx import helper

    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


@pytest.mark.parametrize(
    "op, cip, want_pads, want_pad_node",
    [
        ("MaxPool", 0, [1, 0, 0, 1], False),
        ("AveragePool", 0, [1, 0, 0, 1], False),  # growing padding that never counts is exact
        ("AveragePool", 1, [0, 0, 0, 1], True),  # ... but it would count here: explicit Pad first
    ],
)
def test_export_ceil_drop_as_floor_form(op, cip, want_pads, want_pad_node):
    """onnx's shape inference ignores the rule that drops a window starting in the end padding
    (axis 0: 5 + pads (1,1), kernel 2, stride 2 -> 3 windows, onnx says 4). The export writes the
    same windows in floor mode, so the full checker agrees. Axis 1 (5, no pads, ceil) has a last
    window reading one element past the input, which must not count."""
    x = np.random.default_rng(7).standard_normal((1, 2, 5, 5)).astype(np.float32)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    g = single_node(op, {"x": x.shape}, attrs=attrs)
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert y.shape == (1, 2, 3, 3)
    ref = naive_pool(
        x, (2, 2), (2, 2), (1, 0, 1, 0), (1, 1), 1, "max" if op == "MaxPool" else "avg", cip
    )
    assert_close(y, ref.astype(np.float32))
    model = export_checked(g)
    node = _onnx_node(model, op)
    assert _attr(node, "ceil_mode") == 0 and list(_attr(node, "pads")) == want_pads
    assert any(n.op_type == "Pad" for n in model.graph.node) == want_pad_node


def test_export_ceil_without_drop_is_literal():
    g = single_node(
        "AveragePool", {"x": (1, 1, 5)}, attrs={"kernel_shape": [2], "strides": [2], "ceil_mode": 1}
    )
    node = _onnx_node(export_checked(g), "AveragePool")
    assert _attr(node, "ceil_mode") == 1 and list(_attr(node, "pads")) == [0, 0]


def test_export_ceil_literal_fallback():
    """Axis 0 drops a window; axis 1 (kernel 2, dilation 3, stride 3 on 5) has a last window at
    3 reading 3 and 6: a floor form would need end pad 2 >= kernel, which onnxruntime refuses.
    The node is written literally: onnxruntime computes it right (checked), only onnx's own shape
    inference miscounts axis 0 (documented limitation)."""
    import onnx

    from tests.helpers import ort_run

    x = np.random.default_rng(8).standard_normal((1, 1, 5, 5)).astype(np.float32)
    attrs = {
        "kernel_shape": [2, 2],
        "strides": [2, 3],
        "dilations": [1, 3],
        "pads": [1, 0, 1, 0],
        "ceil_mode": 1,
    }
    assert literal_fallback(
        (5, 5), attrs["kernel_shape"], attrs["strides"], attrs["pads"], attrs["dilations"], 1
    )
    g = single_node("MaxPool", {"x": x.shape}, attrs=attrs)
    model = g.to_onnx()
    onnx.checker.check_model(model)  # structure is valid; only full_check's shape inference objects
    assert _attr(_onnx_node(model, "MaxPool"), "ceil_mode") == 1
    ours = runtime.run(g, {"x": x})[g.outputs[0]]
    assert_close(ours, ort_run(model, {"x": x})[g.outputs[0]])
    assert_close(
        ours, naive_pool(x, (2, 2), (2, 3), (1, 0, 1, 0), (1, 3), 1, "max").astype(np.float32)
    )
