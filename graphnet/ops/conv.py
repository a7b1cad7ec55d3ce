"""Convolution ops: `Conv`, `ConvTranspose` (ONNX's) and `WSConv` (weight-standardized conv).

Attributes follow ONNX: `strides`, `dilations` (one per spatial axis), `pads` (all begins, then all
ends), `group`, an optional `kernel_shape` (derived from W when absent), and for ConvTranspose
`output_padding`. ONNX's `auto_pad` and ConvTranspose's `output_shape` are not IR attributes: the
importer turns them into explicit `pads` / `output_padding` from the static input shape, so every
consumer of the IR sees one form only.

Spatial sizes follow ONNX (floor mode):
- Conv:          out = floor((in + pad_b + pad_e - (d*(k-1)+1)) / s) + 1
- ConvTranspose: out = s*(in-1) + output_padding + (d*(k-1)+1) - pad_b - pad_e
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import FLOAT_DTYPES, known_shape, required, window_out_dim
from graphnet.ops.spec import OpSpec, register
from graphnet.value import Value, format_shape

__all__ = [
    "conv_resolve",
    "conv_shape",
    "conv_transpose_resolve",
    "conv_transpose_shape",
    "conv_out_size",
    "conv_transpose_out_size",
]

_CONV_ATTRS = {"strides": None, "pads": None, "dilations": None, "group": 1, "kernel_shape": None}


# --------------------------------------------------------------------------- sizes
def conv_out_size(size: Dim, k: int, s: int, d: int, pad_b: int, pad_e: int) -> Dim:
    """Output length of a conv along one axis: an int for a static input length, an expression
    of a symbolic one (`window_out_dim`), unknown for an unknown one."""
    return window_out_dim(size, k, s, d, pad_b, pad_e)


def conv_transpose_out_size(
    size: Dim, k: int, s: int, d: int, pad_b: int, pad_e: int, out_pad: int
) -> Dim:
    """Output length of a transposed conv along one axis (an expression of a symbolic input
    length, unknown for an unknown one)."""
    return dims.add(dims.mul(s, dims.sub(size, 1)), out_pad + d * (k - 1) + 1 - pad_b - pad_e)


# ------------------------------------------------------------------------- resolve
def _spatial_rank(inputs: Sequence[Value | None], attrs: dict) -> int | None:
    """Number of spatial axes: from X's rank, else W's, else the length of a given attribute."""
    for v in inputs[:2]:
        if v is not None and v.shape is not None and len(v.shape) >= 3:
            return len(v.shape) - 2
    for key, per_axis in (
        ("kernel_shape", 1),
        ("strides", 1),
        ("dilations", 1),
        ("pads", 2),
        ("output_padding", 1),
    ):
        if attrs.get(key) is not None:
            return len(attrs[key]) // per_axis
    return None


def _int_tuple(attrs: dict, key: str, length: int, default: int) -> tuple[int, ...]:
    value = attrs.get(key)
    if value is None:
        return (default,) * length
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise AttributeValueError(f"{key} must be a sequence of ints, got {value!r}") from None
    if len(out) != length:
        raise AttributeValueError(
            f"{key}={list(out)} has {len(out)} values, expected {length} for "
            f"{length // (2 if key == 'pads' else 1)} spatial axes"
        )
    return out


def conv_resolve(inputs: Sequence[Value | None], attrs: dict) -> dict:
    """Fill rank-dependent defaults: strides/dilations 1, pads 0, kernel_shape from W."""
    attrs = dict(attrs)
    k = _spatial_rank(inputs, attrs)
    if k is None:  # nothing tells the rank yet (an import with unknown shapes); the kernel knows
        return attrs
    attrs["strides"] = _int_tuple(attrs, "strides", k, 1)
    attrs["dilations"] = _int_tuple(attrs, "dilations", k, 1)
    attrs["pads"] = _int_tuple(attrs, "pads", 2 * k, 0)
    if "output_padding" in attrs:
        attrs["output_padding"] = _int_tuple(attrs, "output_padding", k, 0)
    w = inputs[1] if len(inputs) > 1 else None
    if attrs.get("kernel_shape") is None:
        if (
            w is not None
            and w.shape is not None
            and len(w.shape) == k + 2
            and all(dims.is_static(d) for d in w.shape[2:])
        ):
            attrs["kernel_shape"] = tuple(int(d) for d in w.shape[2:])
    else:
        attrs["kernel_shape"] = _int_tuple(attrs, "kernel_shape", k, 1)
    try:
        attrs["group"] = int(attrs["group"])
    except (TypeError, ValueError):
        raise AttributeValueError(f"group must be an int, got {attrs['group']!r}") from None
    return attrs


conv_transpose_resolve = conv_resolve  # output_padding is filled because it is in the op's attrs


# -------------------------------------------------------------------------- checks
def _check_common(
    inputs: Sequence[Value | None], attrs: dict
) -> tuple[Value, tuple, tuple, Value | None, int]:
    """Ranks, dtypes and attribute values shared by Conv and ConvTranspose: (X, X's shape, W's
    shape, B, group)."""
    x, w = required(inputs[0]), required(inputs[1])
    b = inputs[2] if len(inputs) > 2 else None
    xs, ws = known_shape(x, "X"), known_shape(w, "W")
    if len(xs) not in (3, 4, 5):
        raise ShapeError(
            f"X must be N,C + 1 to 3 spatial axes (rank 3, 4 or 5), got X{format_shape(xs)}"
        )
    if len(ws) != len(xs):
        raise ShapeError(f"W{format_shape(ws)} must have the rank of X{format_shape(xs)}")
    for v, what in ((x, "X"), (w, "W"), (b, "B")):
        if v is not None and v.dtype not in FLOAT_DTYPES:
            raise ShapeError(f"{what} '{v.name}' must be a float tensor, got {v.dtype}")
    for v, what in ((w, "W"), (b, "B")):
        if v is not None and v.dtype != x.dtype:
            raise ShapeError(f"{what} is {v.dtype} but X is {x.dtype}")
    group = attrs["group"]
    if group < 1:
        raise AttributeValueError(f"group must be >= 1, got {group}")
    for key in ("strides", "dilations"):
        if any(v < 1 for v in attrs[key]):
            raise AttributeValueError(f"{key} must be >= 1, got {list(attrs[key])}")
    if any(p < 0 for p in attrs["pads"]):
        # ONNX requires pads >= 0 for both ops (onnxruntime rejects negative ones at load time).
        raise AttributeValueError(f"pads must be >= 0, got {list(attrs['pads'])}")
    ks = attrs.get("kernel_shape")
    if ks is not None and any(
        dims.is_static(a) and a != int(e) for a, e in zip(ws[2:], ks, strict=True)
    ):
        raise ShapeError(f"kernel_shape={list(ks)} does not match W{format_shape(ws)}")
    if any(dims.is_static(a) and a < 1 for a in ws[2:]):
        raise ShapeError(f"W{format_shape(ws)} has an empty kernel axis")
    return x, xs, ws, b, group


def _check_bias(b: Value | None, channels: Dim, ws: tuple) -> None:
    if b is None:
        return
    if b.shape is None or len(b.shape) != 1 or dims.differ(b.shape[0], channels):
        raise ShapeError(
            f"B must have shape ({channels},) (one per output channel of "
            f"W{format_shape(ws)}), got B{format_shape(b.shape)}"
        )


def conv_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Infer rule of Conv (and WSConv): Y is (N, M, *out) for W (M, C/group, *k)."""
    x, xs, ws, b, group = _check_common(inputs, attrs)
    n, c = xs[:2]
    m, c_per_group = ws[:2]
    if dims.is_static(m) and m % group:
        raise ShapeError(
            f"W{format_shape(ws)} has {m} output channels, not divisible by group {group}"
        )
    if dims.differ(c, dims.mul(c_per_group, group)):
        raise ShapeError(
            f"W{format_shape(ws)} has {c_per_group} input channels per group "
            f"but X{format_shape(xs)} has {c} channels / group {group}"
        )
    _check_bias(b, m, ws)
    out: list[Dim] = []
    for axis, (size, kk, s, d) in enumerate(
        zip(xs[2:], ws[2:], attrs["strides"], attrs["dilations"], strict=True)
    ):
        pb, pe = attrs["pads"][axis], attrs["pads"][axis + len(xs) - 2]
        if not dims.is_static(kk):
            out.append(None)
            continue
        o = conv_out_size(size, kk, s, d, pb, pe)
        if dims.is_static(o) and o < 1:
            raise ShapeError(
                f"spatial axis {axis} of X{format_shape(xs)} padded by ({pb}, {pe}) is "
                f"{dims.add(size, pb + pe)}, smaller than the dilated kernel {d * (kk - 1) + 1} of "
                f"W{format_shape(ws)}"
            )
        out.append(o)
    return [((n, m, *out), x.dtype)]


def conv_transpose_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Infer rule of ConvTranspose: W is (C, M/group, *k); Y is (N, M, *out)."""
    x, xs, ws, b, group = _check_common(inputs, attrs)
    n, c = xs[:2]
    c_w, m_per_group = ws[:2]
    if dims.is_static(c) and c % group:
        raise ShapeError(f"X{format_shape(xs)} has {c} channels, not divisible by group {group}")
    if dims.differ(c, c_w):
        raise ShapeError(
            f"W{format_shape(ws)} has {c_w} input channels (its first axis) but "
            f"X{format_shape(xs)} has {c}"
        )
    m = dims.mul(m_per_group, group)
    _check_bias(b, m, ws)
    out: list[Dim] = []
    k = len(xs) - 2
    for axis in range(k):
        s, d, op_ = attrs["strides"][axis], attrs["dilations"][axis], attrs["output_padding"][axis]
        if op_ < 0 or (op_ >= s and op_ >= d):
            raise AttributeValueError(
                f"output_padding={list(attrs['output_padding'])} must be >= 0 and smaller than the "
                f"stride or the dilation of its axis (strides={list(attrs['strides'])}, "
                f"dilations={list(attrs['dilations'])})"
            )
        kk = ws[2 + axis]
        if not dims.is_static(kk):
            out.append(None)
            continue
        pb, pe = attrs["pads"][axis], attrs["pads"][axis + k]
        o = conv_transpose_out_size(xs[2 + axis], kk, s, d, pb, pe, op_)
        if dims.is_static(o) and o < 1:
            raise ShapeError(
                f"pads ({pb}, {pe}) leave no output on spatial axis {axis} of X{format_shape(xs)}"
            )
        out.append(o)
    return [((n, m, *out), x.dtype)]


def _wsconv_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    if attrs["epsilon"] <= 0:
        raise AttributeValueError(f"epsilon must be > 0, got {attrs['epsilon']}")
    return conv_shape(inputs, attrs)


# ---------------------------------------------------------------------------- MACs
def _dims(v: Any) -> tuple:
    shape = v.shape if hasattr(v, "shape") else v[0]
    return tuple(d if dims.is_static(d) else 1 for d in shape)  # dynamic dims count 1


def _conv_macs(inputs: Sequence[Value | None], outputs: Sequence[Any], attrs: dict) -> int:
    """One MAC per output element per tap of its group's input channels: |Y| * C/group * prod(k)."""
    w = _dims(inputs[1])
    return prod(_dims(outputs[0])) * prod(w[1:])


def _conv_transpose_macs(
    inputs: Sequence[Value | None], outputs: Sequence[Any], attrs: dict
) -> int:
    """Every input element meets every tap of its group's output channels:
    |X| * M/group * prod(k)."""
    w = _dims(inputs[1])
    return prod(_dims(inputs[0])) * prod(w[1:])


register(
    OpSpec(
        "Conv",
        "N-D convolution (1-, 2- or 3-D), grouped or depthwise, ONNX semantics.",
        ("X", "W", "B?"),
        conv_shape,
        attrs=dict(_CONV_ATTRS),
        resolve=conv_resolve,
        macs=_conv_macs,
        family="conv",
    )
)

register(
    OpSpec(
        "ConvTranspose",
        "Transposed convolution (the gradient of Conv w.r.t. its input), W is (C, M/group, k...).",
        ("X", "W", "B?"),
        conv_transpose_shape,
        attrs={**_CONV_ATTRS, "output_padding": None},
        resolve=conv_transpose_resolve,
        macs=_conv_transpose_macs,
        family="conv",
    )
)

register(
    OpSpec(
        "WSConv",
        "Conv with a weight-standardized kernel: W standardized per output map (biased variance).",
        ("X", "W", "B?"),
        _wsconv_shape,
        attrs={**_CONV_ATTRS, "epsilon": 1e-5},
        resolve=conv_resolve,
        macs=_conv_macs,
        family="conv",
    )
)
