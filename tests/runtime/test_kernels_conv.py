"""Conv family kernels: Conv, ConvTranspose, WSConv.

Three independent checks of every kernel:
- ONNX's impulse trick: one 1 per batch item at a distinct (channel, position), powers of two in
  the kernel, so every output is exactly one kernel entry or 0 and says which tap saw which input.
  The expectation inverts the index formula (tap = (input + pad_b - output*s) / d) and is compared
  with exact equality: pads, strides, dilations and groups cannot be off by one.
- `naive_conv` / `naive_conv_transpose` (plain loops, float64) over hypothesis-drawn shapes and
  attributes, 1-, 2- and 3-D, grouped and depthwise.
- onnxruntime on the exported single-node model (optimizations off).

Tolerances: float64 rtol/atol 1e-12. float32 random data: elementwise |error| <= gamma_n * (|x|*|w|
conv) + 1e-6 (`float32_bound`, the standard bound of a float32 sum of n products), because a
random output that cancels to ~0 carries rounding relative to its terms, which a fixed rtol 1e-5
cannot express; onnxruntime and NumPy's BLAS sum in different orders.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from graphnet import ops, runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import Graph
from graphnet.runtime.kernels.conv import conv, conv_transpose, standardize_weight
from tests.helpers import ATOL64, RTOL64, assert_close, export_checked, ort_run, single_node
from tests.oracles import float32_bound, naive_conv, naive_conv_transpose, naive_standardize

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _graph(op: str, x_shape, w, b=None, attrs=None, dtype="float32") -> Graph:
    params = {"w": w}
    if b is not None:
        params["b"] = b
    return single_node(op, {"x": x_shape}, params, attrs or {}, dtype=dtype)


def _check_f32(ours, ref, absref, terms, what):
    bound = float32_bound(absref, terms)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = np.abs(ours.astype(np.float64) - ref)
    assert np.all(err <= bound), (
        f"{what}: max excess {np.max(err - bound):.3g} (max err {err.max():.3g})"
    )


def _impulses(c: int, sizes: tuple) -> tuple[np.ndarray, list]:
    """A batch with one 1 per item, at every (channel, position) in turn."""
    where = list(itertools.product(range(c), *map(range, sizes)))
    x = np.zeros((len(where), c, *sizes), np.float32)
    for n, (ch, *pos) in enumerate(where):
        x[(n, ch, *pos)] = 1.0
    return x, where


def _powers_of_two(shape) -> np.ndarray:
    """Every entry a distinct power of two: exact in float32, and a sum of them names its terms."""
    return (2.0 ** np.arange(int(np.prod(shape)))).reshape(shape).astype(np.float32)


def _tap(o: int, i: int, s: int, d: int, pb: int, kk: int) -> int | None:
    """The tap t with o*s + t*d - pb == i, if any (the index formula, inverted)."""
    num = i + pb - o * s
    if num % d or not 0 <= num // d < kk:
        return None
    return num // d


# ------------------------------------------------------------------------------ impulse: Conv
IMPULSE_CONV = [
    # (C, M, group, sizes, kernel, strides, pads, dilations)
    (1, 1, 1, (7,), (3,), (1,), (0, 0), (1,)),
    (2, 2, 1, (8,), (3,), (2,), (1, 2), (1,)),
    (1, 2, 1, (9,), (2,), (3,), (2, 0), (3,)),
    (4, 4, 4, (6,), (3,), (1,), (1, 1), (2,)),  # depthwise
    (4, 8, 4, (5, 4), (3, 2), (2, 1), (1, 0, 1, 1), (1, 2)),  # depthwise, multiplier 2
    (2, 3, 1, (5, 6), (2, 3), (1, 2), (0, 2, 1, 0), (2, 1)),
    (4, 6, 2, (4, 5), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 1, 1, (4, 3, 5), (2, 2, 3), (1, 2, 2), (1, 0, 1, 0, 1, 2), (2, 1, 1)),
    (2, 2, 2, (3, 4, 3), (2, 3, 1), (2, 1, 1), (0, 1, 0, 1, 1, 0), (1, 1, 1)),
]


@pytest.mark.parametrize("c, m, group, sizes, kernel, strides, pads, dilations", IMPULSE_CONV)
def test_conv_impulse(c, m, group, sizes, kernel, strides, pads, dilations):
    k = len(sizes)
    x, where = _impulses(c, sizes)
    cg, mg = c // group, m // group
    w = _powers_of_two((m, cg, *kernel))
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    y = conv(x, w, **attrs, kernel_shape=None)
    outs = y.shape[2:]
    expected = np.zeros_like(y)
    for n, (ch, *pos) in enumerate(where):
        for mm in range(m):
            if ch // cg != mm // mg:  # output map mm's group does not read channel ch
                continue
            for o in itertools.product(*map(range, outs)):
                taps = [
                    _tap(o[i], pos[i], strides[i], dilations[i], pads[i], kernel[i])
                    for i in range(k)
                ]
                if None not in taps:
                    expected[(n, mm, *o)] = w[(mm, ch - (ch // cg) * cg, *taps)]
    np.testing.assert_array_equal(y, expected)
    # The same impulses through the exported model on onnxruntime: exact too (one term per output).
    g = _graph("Conv", x.shape, w, attrs=attrs)
    np.testing.assert_array_equal(ort_run(export_checked(g), {"x": x})["conv.out"], expected)


# --------------------------------------------------------------------- impulse: ConvTranspose
IMPULSE_CONVT = [
    # (C, M, group, sizes, kernel, strides, pads, dilations, output_padding)
    (1, 1, 1, (3,), (3,), (2,), (0, 0), (1,), (0,)),
    (1, 2, 1, (4,), (3,), (2,), (1, 2), (1,), (1,)),
    (2, 1, 1, (3,), (2,), (3,), (0, 1), (2,), (2,)),
    (4, 4, 4, (3,), (3,), (1,), (1, 1), (2,), (1,)),  # depthwise; output_padding < dilation
    (2, 4, 2, (3, 2), (2, 3), (2, 1), (1, 0, 0, 1), (1, 2), (1, 0)),
    (3, 3, 1, (2, 3), (3, 2), (3, 2), (2, 1, 1, 0), (1, 1), (2, 1)),
    (2, 2, 2, (2, 3, 2), (2, 1, 3), (2, 1, 2), (0, 0, 1, 1, 0, 0), (1, 1, 1), (1, 0, 1)),
]


@pytest.mark.parametrize(
    "c, m, group, sizes, kernel, strides, pads, dilations, output_padding", IMPULSE_CONVT
)
def test_conv_transpose_impulse(
    c, m, group, sizes, kernel, strides, pads, dilations, output_padding
):
    k = len(sizes)
    x, where = _impulses(c, sizes)
    cg, mg = c // group, m // group
    w = _powers_of_two((c, mg, *kernel))
    attrs = dict(
        strides=strides, pads=pads, dilations=dilations, group=group, output_padding=output_padding
    )
    y = conv_transpose(x, w, **attrs, kernel_shape=None)
    outs = y.shape[2:]
    want = [
        (sizes[i] - 1) * strides[i]
        + output_padding[i]
        + dilations[i] * (kernel[i] - 1)
        + 1
        - pads[i]
        - pads[k + i]
        for i in range(k)
    ]
    assert list(outs) == want
    expected = np.zeros_like(y)
    for n, (ch, *pos) in enumerate(where):
        for mm in range(m):
            if ch // cg != mm // mg:
                continue
            for o in itertools.product(*map(range, outs)):
                # input i reaches output o = i*s + t*d - pb through tap t.
                taps = []
                for i in range(k):
                    num = o[i] + pads[i] - pos[i] * strides[i]
                    taps.append(
                        num // dilations[i]
                        if num % dilations[i] == 0 and 0 <= num // dilations[i] < kernel[i]
                        else None
                    )
                if None not in taps:
                    expected[(n, mm, *o)] = w[(ch, mm - (mm // mg) * mg, *taps)]
    np.testing.assert_array_equal(y, expected)
    g = _graph("ConvTranspose", x.shape, w, attrs=attrs)
    np.testing.assert_array_equal(
        ort_run(export_checked(g), {"x": x})["convtranspose.out"], expected
    )


# --------------------------------------------------------------------- random vs loops + ORT
@st.composite
def conv_cases(draw, transpose: bool = False):
    k = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(k))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(k))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(k))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * k))
    top = {1: 10, 2: 6, 3: 4}[k]
    sizes = tuple(draw(st.integers(1, top)) for _ in range(k))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    if transpose:
        attrs["output_padding"] = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True)
        )
        outs = [
            (sizes[i] - 1) * strides[i]
            + attrs["output_padding"][i]
            + dilations[i] * (kernel[i] - 1)
            + 1
            - pads[i]
            - pads[k + i]
            for i in range(k)
        ]
        w_shape = (cg * group, mg, *kernel)
    else:
        outs = [
            (sizes[i] + pads[i] + pads[k + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i]
            + 1
            for i in range(k)
        ]
        w_shape = (mg * group, cg, *kernel)
    assume(all(o >= 1 for o in outs))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((n, cg * group, *sizes)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(mg * group).astype(np.float32) if bias else None
    return x, w, b, attrs


@SETTINGS
@given(conv_cases())
def test_conv_matches_loops_and_onnxruntime(case):
    x, w, b, attrs = case
    g = _graph("Conv", x.shape, w, b, attrs)
    ours = runtime.run(g, {"x": x})["conv.out"]
    assert ours.dtype == np.float32
    ref = naive_conv(x, w, b, **attrs)
    absref = naive_conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), **attrs)
    terms = w[0].size
    _check_f32(ours, ref, absref, terms, "ours vs loops")
    theirs = ort_run(export_checked(g), {"x": x})["conv.out"]
    _check_f32(theirs, ref, absref, terms, "onnxruntime vs loops")


@SETTINGS
@given(conv_cases(transpose=True))
def test_conv_transpose_matches_loops_and_onnxruntime(case):
    x, w, b, attrs = case
    g = _graph("ConvTranspose", x.shape, w, b, attrs)
    ours = runtime.run(g, {"x": x})["convtranspose.out"]
    assert ours.dtype == np.float32
    ref = naive_conv_transpose(x, w, b, **attrs)
    absref = naive_conv_transpose(np.abs(x), np.abs(w), None if b is None else np.abs(b), **attrs)
    group = attrs["group"]
    terms = (x.shape[1] // group) * int(np.prod(w.shape[2:]))
    _check_f32(ours, ref, absref, terms, "ours vs loops")
    theirs = ort_run(export_checked(g), {"x": x})["convtranspose.out"]
    _check_f32(theirs, ref, absref, terms, "onnxruntime vs loops")


@pytest.mark.parametrize("transpose", [False, True])
def test_float64_stays_float64_and_matches_loops(transpose):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6))
    attrs = dict(strides=(2, 1), pads=(1, 0, 0, 2), dilations=(1, 2), group=2)
    if transpose:
        w, b = rng.standard_normal((4, 3, 2, 3)), rng.standard_normal(6)
        attrs["output_padding"] = (1, 0)
        y = conv_transpose(x, w, b, **attrs, kernel_shape=None)
        ref = naive_conv_transpose(x, w, b, **attrs)
    else:
        w, b = rng.standard_normal((6, 2, 2, 3)), rng.standard_normal(6)
        y, ref = conv(x, w, b, **attrs, kernel_shape=None), naive_conv(x, w, b, **attrs)
    assert y.dtype == np.float64
    assert_close(y, ref, rtol=RTOL64, atol=ATOL64)


def test_bias_is_added_per_output_map():
    # A zero input isolates the bias: every output position of map m is exactly b[m].
    b = np.array([1.5, -2.0, 0.25], np.float32)
    y = conv(
        np.zeros((1, 2, 4, 4), np.float32),
        np.ones((3, 2, 3, 3), np.float32),
        b,
        strides=(1, 1),
        pads=(1, 1, 1, 1),
        dilations=(1, 1),
        group=1,
        kernel_shape=None,
    )
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], (1, 3, 4, 4)))


# ---------------------------------------------------------------------------------- WSConv
def test_standardize_weight_is_the_lecture_formula():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32) * 3 + 1
    ours = standardize_weight(w, 1e-5)
    assert ours.dtype == np.float32
    assert_close(ours, naive_standardize(w, 1e-5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [17, 18, 21])
@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((2, 4, 7, 6), (6, 2, 3, 3), dict(strides=(2, 1), pads=(1, 1, 0, 1), group=2)),
        ((1, 3, 9), (4, 3, 3), dict(dilations=(2,))),
        ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), dict(pads=(0, 1, 0, 1, 0, 1))),
    ],
)
def test_wsconv_matches_formula_and_onnxruntime(opset, x_shape, w_shape, attrs):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 2 + 0.5).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    g = _graph("WSConv", x_shape, w, b, {**attrs, "epsilon": 1e-3})
    ours = runtime.run(g, {"x": x})["wsconv.out"]
    full = {"strides": None, "pads": None, "dilations": None, "group": 1, **attrs}
    w_hat = naive_standardize(w, 1e-3)
    ref = naive_conv(x, w_hat, b, **full)
    absref = naive_conv(np.abs(x), np.abs(w_hat), np.abs(b), **full)
    # W_hat itself is rounded to float32 (relative 2^-24 per entry): one more term of error.
    _check_f32(ours, ref, absref, w[0].size + 1, "WSConv vs loops")
    model = export_checked(g, opset=opset)
    kinds = [n.op_type for n in model.graph.node]
    assert kinds == ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Conv"], kinds
    reduce = model.graph.node[0]
    # axes moved from an attribute to an input in opset 18
    has_axes_attr = any(a.name == "axes" for a in reduce.attribute)
    assert (len(reduce.input) == 2, has_axes_attr) == (
        (True, False) if opset >= 18 else (False, True)
    )
    theirs = ort_run(model, {"x": x})["wsconv.out"]
    _check_f32(theirs, ref, absref, w[0].size + 1, "onnxruntime WSConv vs loops")


# -------------------------------------------------------------------------------- MACs
def test_macs_count_group_taps():
    g = _graph(
        "Conv",
        (None, 6, 8, 8),
        np.zeros((4, 3, 3, 3), np.float32),
        attrs={"group": 2, "pads": (1, 1, 1, 1)},
    )
    node = g.nodes[0]
    spec = ops.get("Conv")
    ins = [g.values[i] for i in node.inputs]
    # per example: 4 maps x 8x8 positions x (3 channels of the group x 9 taps)
    assert spec.macs(ins, [g.values[node.outputs[0]]], ops.attrs_of(node, ins)) == 4 * 64 * 3 * 9
    g = _graph(
        "ConvTranspose",
        (None, 6, 4, 4),
        np.zeros((6, 2, 3, 3), np.float32),
        attrs={"group": 3, "strides": (2, 2)},
    )
    node = g.nodes[0]
    ins = [g.values[i] for i in node.inputs]
    # every input element (6 x 4 x 4) meets 2 output maps of its group x 9 taps
    assert (
        ops.get("ConvTranspose").macs(ins, [g.values[node.outputs[0]]], ops.attrs_of(node, ins))
        == 6 * 16 * 2 * 9
    )


# -------------------------------------------------------------------------- bad inputs
BAD = [
    (
        "Conv",
        (1, 6, 8, 8),
        (4, 4, 3, 3),
        None,
        {},
        ShapeError,
        "W(4,4,3,3) has 4 input channels per group but X(1,6,8,8) has 6 channels / group 1",
    ),
    (
        "Conv",
        (1, 6, 8, 8),
        (4, 3, 3, 3),
        None,
        {"group": 3},
        ShapeError,
        "4 output channels, not divisible by group 3",
    ),
    (
        "Conv",
        (1, 3, 8),
        (4, 3, 3, 3),
        None,
        {},
        ShapeError,
        "W(4,3,3,3) must have the rank of X(1,3,8)",
    ),
    ("Conv", (1, 3), (4, 3), None, {}, ShapeError, "(rank 3, 4 or 5), got X(1,3)"),
    ("Conv", (1, 3, 8, 8), (4, 3, 3, 3), (5,), {}, ShapeError, "B must have shape (4,)"),
    ("Conv", (1, 3, 2, 8), (4, 3, 3, 3), None, {}, ShapeError, "smaller than the dilated kernel 3"),
    (
        "Conv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"strides": (1,)},
        AttributeValueError,
        "strides=[1] has 1 values, expected 2",
    ),
    (
        "Conv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"pads": (1, 1, -1, 1)},
        AttributeValueError,
        "pads must be >= 0",
    ),
    (
        "Conv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"strides": (0, 1)},
        AttributeValueError,
        "strides must be >= 1",
    ),
    (
        "Conv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"group": 0},
        AttributeValueError,
        "group must be >= 1",
    ),
    (
        "Conv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"kernel_shape": (3, 2)},
        ShapeError,
        "kernel_shape=[3, 2] does not match W(4,3,3,3)",
    ),
    (
        "ConvTranspose",
        (1, 6, 4, 4),
        (4, 2, 3, 3),
        None,
        {},
        ShapeError,
        "W(4,2,3,3) has 4 input channels (its first axis) but X(1,6,4,4) has 6",
    ),
    (
        "ConvTranspose",
        (1, 6, 4, 4),
        (6, 2, 3, 3),
        None,
        {"group": 4},
        ShapeError,
        "6 channels, not divisible by group 4",
    ),
    (
        "ConvTranspose",
        (1, 2, 4, 4),
        (2, 2, 3, 3),
        None,
        {"strides": (2, 2), "output_padding": (2, 0)},
        AttributeValueError,
        "output_padding=[2, 0] must be >= 0 and smaller than the stride",
    ),
    (
        "ConvTranspose",
        (1, 2, 1),
        (2, 2, 1),
        None,
        {"pads": (1, 0)},
        ShapeError,
        "leave no output on spatial axis 0",
    ),
    (
        "WSConv",
        (1, 3, 8, 8),
        (4, 3, 3, 3),
        None,
        {"epsilon": 0.0},
        AttributeValueError,
        "epsilon must be > 0",
    ),
]


@pytest.mark.parametrize(
    "op, x_shape, w_shape, b_shape, attrs, exc, fragment",
    BAD,
    ids=[f"{b[0]}-{b[-1][:30]}" for b in BAD],
)
def test_bad_shapes_and_attributes_name_the_node(
    op, x_shape, w_shape, b_shape, attrs, exc, fragment
):
    g = Graph("bad")
    g.add_input("x", x_shape)
    g.add_param("w", np.zeros(w_shape, np.float32))
    inputs = ["x", "w"]
    if b_shape is not None:
        g.add_param("b", np.zeros(b_shape, np.float32))
        inputs.append("b")
    with pytest.raises(exc) as err:
        g.add_node(op, inputs, attrs, name="conv7")
    msg = str(err.value)
    assert msg.startswith(f"node 'conv7' ({op}): "), msg
    assert fragment in msg, msg


def test_dtype_mismatch_is_a_shape_error():
    g = Graph("bad")
    g.add_input("x", (1, 3, 5, 5), "float64")
    g.add_param("w", np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"node 'c' \(Conv\): W is float32 but X is float64"):
        g.add_node("Conv", ["x", "w"], name="c")


def test_dynamic_dims_propagate():
    g = _graph(
        "Conv", (None, 3, None, 9), np.zeros((8, 3, 3, 3), np.float32), attrs={"strides": (2, 2)}
    )
    assert g.values["conv.out"].shape == (None, 8, None, 4)
    g = _graph(
        "ConvTranspose",
        (None, 3, 5, None),
        np.zeros((3, 2, 3, 3), np.float32),
        attrs={"strides": (2, 2)},
    )
    assert g.values["convtranspose.out"].shape == (None, 2, 11, None)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "pads, want_ops",
    [
        (
            (0, 0, 0, 0),
            ["ConvTranspose", "Pad"],
        ),  # bias-only positions past the end: an explicit Pad
        (
            (1, 0, 1, 1),
            ["ConvTranspose"],
        ),  # output_padding only cancels an end pad: folded into pads
    ],
)
def test_conv_transpose_output_padding_past_stride_exports_for_onnxruntime(bias, pads, want_ops):
    # output_padding (1) >= stride (1) is legal ONNX when < dilation (2), but onnxruntime rejects
    # it; the export rewrites it into an equivalent form, checked here on onnxruntime.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32) if bias else None
    attrs = dict(strides=(1, 1), dilations=(2, 2), pads=pads, output_padding=(1, 1))
    g = _graph("ConvTranspose", x.shape, w, b, attrs)
    model = export_checked(g)
    kinds = [n.op_type for n in model.graph.node]
    assert kinds[: len(want_ops)] == want_ops and len(kinds) == len(want_ops) + (
        2 if bias and "Pad" in want_ops else 0
    ), kinds
    ref = naive_conv_transpose(x, w, b, **attrs)
    absref = naive_conv_transpose(np.abs(x), np.abs(w), None if b is None else np.abs(b), **attrs)
    _check_f32(runtime.run(g, {"x": x})["convtranspose.out"], ref, absref, 2 * 6, "ours vs loops")
    _check_f32(
        ort_run(model, {"x": x})["convtranspose.out"], ref, absref, 2 * 6, "onnxruntime vs loops"
    )


def test_conv_transpose_output_padding_past_stride_with_large_begin_pad():
    # Found by hypothesis: the begin pad (2) crops all of the computed positions (2) and only the
    # output_padding position is left. The export must not go through an empty intermediate.
    x = np.array([[[0.5, -1.0]]], np.float32)
    w = np.array([[[2.0]]], np.float32)
    b = np.array([0.25], np.float32)
    attrs = dict(strides=(1,), dilations=(2,), pads=(2, 0), output_padding=(1,))
    g = _graph("ConvTranspose", x.shape, w, b, attrs)
    expected = naive_conv_transpose(x, w, b, **attrs)
    np.testing.assert_array_equal(expected, [[[0.25]]])  # full [1, -2] cropped, + 1 bias-only
    np.testing.assert_array_equal(runtime.run(g, {"x": x})["convtranspose.out"], expected)
    np.testing.assert_array_equal(
        ort_run(export_checked(g), {"x": x})["convtranspose.out"], expected
    )
