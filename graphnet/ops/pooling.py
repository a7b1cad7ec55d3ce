"""Pooling ops: MaxPool, AveragePool (windowed, 1-D/2-D/3-D) and the global pools.

Attribute names and defaults follow ONNX. `auto_pad` is not an IR attribute: the importer and the
DSL turn it into explicit `pads` (see `graphnet.ops._shapes.same_pads`), so kernels and exporters
see one form only.

Output length along a spatial axis (ONNX, PyTorch):

    extent = dilation * (kernel - 1) + 1
    out    = floor((in + pad_begin + pad_end - extent) / stride) + 1          (ceil_mode=0)
    out    = ceil(...) + 1, minus the last window if it starts in the end padding   (ceil_mode=1)

Two restrictions beyond the ONNX text, both where the runtimes disagree or refuse:
- each pad must be smaller than the kernel (onnxruntime refuses the model otherwise);
- no window may see only padding (possible with dilations): onnxruntime returns -FLT_MAX (max)
  or 0 (average) there, onnx.reference NaN; graphnet refuses instead of picking one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import FLOAT_DTYPES, required, window_out_dim, window_out_size
from graphnet.ops.spec import REQUIRED, OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["check_pool_attrs", "MAXPOOL_DTYPES", "SPATIAL_RANKS"]

SPATIAL_RANKS = (1, 2, 3)
"""Spatial ranks of the windowed pools: 1-D, 2-D and 3-D (inputs of rank 3, 4, 5)."""

MAXPOOL_DTYPES = FLOAT_DTYPES + ("int8", "uint8")  # ONNX MaxPool-12 added int8/uint8


def _pad_only_window(
    size: int, out: int, kernel: int, stride: int, dilation: int, pad_begin: int
) -> int | None:
    """The first window (index) along an axis whose taps all miss the real input, or None.
    Only dilated kernels can skip the whole input: with dilation 1 and pads < kernel, every
    window overlaps it (shape-time arithmetic over one axis, not a kernel loop)."""
    if dilation == 1:
        return None
    for o in range(out):
        start = o * stride - pad_begin
        if not any(0 <= start + t * dilation < size for t in range(kernel)):
            return o
    return None


def _ints(name: str, value: Any, length: int, minimum: int) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in value)
    except TypeError:
        raise AttributeValueError(f"{name} must be a list of ints, got {value!r}") from None
    if len(vals) != length:
        raise AttributeValueError(f"{name} must have {length} entries, got {list(vals)}")
    if any(v < minimum for v in vals):
        raise AttributeValueError(f"{name} must be >= {minimum}, got {list(vals)}")
    return vals


def _flag(name: str, value: Any) -> int:
    if value not in (0, 1, True, False):
        raise AttributeValueError(f"{name} must be 0 or 1, got {value!r}")
    return int(value)


def _resolve_window(inputs: Sequence[Value | None], attrs: dict) -> dict:
    """Complete tuple-valued window attributes. The spatial rank comes from kernel_shape (always
    set), so attributes resolve even when the input's shape is unknown (an imported model)."""
    out = dict(attrs)
    ks = attrs["kernel_shape"]
    try:
        k = len(ks)
    except TypeError:
        raise AttributeValueError(f"kernel_shape must be a list of ints, got {ks!r}") from None
    if k not in SPATIAL_RANKS:
        raise AttributeValueError(
            f"kernel_shape must have 1, 2 or 3 entries (1-D/2-D/3-D pooling), got {list(ks)}"
        )
    out["kernel_shape"] = _ints("kernel_shape", ks, k, 1)
    out["strides"] = _ints(
        "strides", (1,) * k if attrs["strides"] is None else attrs["strides"], k, 1
    )
    out["pads"] = _ints(
        "pads", (0,) * (2 * k) if attrs["pads"] is None else attrs["pads"], 2 * k, 0
    )
    out["dilations"] = _ints(
        "dilations", (1,) * k if attrs["dilations"] is None else attrs["dilations"], k, 1
    )
    out["ceil_mode"] = _flag("ceil_mode", attrs["ceil_mode"])
    if "count_include_pad" in attrs:
        out["count_include_pad"] = _flag("count_include_pad", attrs["count_include_pad"])
    if "storage_order" in attrs:
        # Only the optional Indices output depends on it: 0 row-major, 1 column-major.
        out["storage_order"] = _flag("storage_order", attrs["storage_order"])
    return out


def check_pool_attrs(shape: Sequence[Dim], attrs: dict) -> tuple[Dim, ...]:
    """Validate resolved window attributes against an input shape (N, C, *spatial); return the
    output shape. Raises ShapeError / AttributeValueError with messages about the shapes."""
    ks, st, pads, dl = attrs["kernel_shape"], attrs["strides"], attrs["pads"], attrs["dilations"]
    k = len(ks)
    if len(shape) != 2 + k:
        raise ShapeError(
            f"kernel_shape {_tup(ks)} is {k}-D, so the input must have rank {2 + k} "
            f"(N,C + {k} spatial), got {format_shape(tuple(shape))}"
        )
    begins, ends = pads[:k], pads[k:]
    if any(b >= kk or e >= kk for b, e, kk in zip(begins, ends, ks, strict=True)):
        raise AttributeValueError(
            f"pads {list(pads)} must be smaller than kernel {_tup(ks)} on every axis"
        )
    spatial = shape[2:]
    out: list[Dim] = []
    for i, n in enumerate(spatial):
        if not dims.is_static(n):  # an expression of a symbolic size, or unknown
            out.append(
                window_out_dim(n, ks[i], st[i], dl[i], begins[i], ends[i], bool(attrs["ceil_mode"]))
            )
            continue
        o = window_out_size(n, ks[i], st[i], dl[i], begins[i], ends[i], bool(attrs["ceil_mode"]))
        if o < 1:
            extent = tuple(d * (kk - 1) + 1 for kk, d in zip(ks, dl, strict=True))
            padded = tuple(
                dims.add(m, b + e) for m, b, e in zip(spatial, begins, ends, strict=True)
            )
            what = "dilated kernel" if extent != tuple(ks) else "kernel"
            raise ShapeError(f"{what} {_tup(extent)} larger than padded input {_tup(padded)}")
        bad = _pad_only_window(n, o, ks[i], st[i], dl[i], begins[i])
        if bad is not None:
            raise AttributeValueError(
                f"window {bad} on spatial axis {i} sees only padding (input {n}, kernel {ks[i]}, "
                f"dilation {dl[i]}, pads {list(pads)}); its value would be undefined"
            )
        out.append(o)
    return tuple(shape[:2]) + tuple(out)


def _tup(t: Sequence) -> str:
    return "(" + ",".join("?" if v is None else str(v) for v in t) + ")"


def _window_infer(dtypes: Sequence[str], *, indices: bool = False):
    def infer(inputs: Sequence[Value | None], attrs: dict) -> list:
        x = required(inputs[0])
        if x.shape is None:
            raise ShapeError(f"input '{x.name}' has an unknown shape")
        if x.dtype not in dtypes:
            raise ShapeError(f"input '{x.name}' must be one of {list(dtypes)}, got {x.dtype}")
        y = check_pool_attrs(x.shape, attrs)
        # MaxPool's optional Indices: one int64 per output element.
        return [(y, x.dtype), (y, "int64")] if indices else [(y, x.dtype)]

    return infer


def _global_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    if x.shape is None:
        raise ShapeError(f"input '{x.name}' has an unknown shape")
    if len(x.shape) < 3:
        raise ShapeError(
            f"input '{x.name}' must be N,C,spatial... (rank >= 3), got {format_shape(x.shape)}"
        )
    if x.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"input '{x.name}' must be a float tensor, got {x.dtype}")
    return [(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), x.dtype)]


def _numel(v: Any) -> int:
    shape = v.shape if hasattr(v, "shape") else v[0]  # a Value or a (shape, dtype) pair
    n = 1
    for d in shape or ():
        n *= int(d) if dims.is_static(d) else 1  # a dynamic dim counts as 1: cost per example
    return n


def _window_macs(inputs: Sequence, outputs: Sequence, attrs: dict) -> int:
    """One compare / add per window tap and output element."""
    taps = 1
    for kk in attrs["kernel_shape"]:
        taps *= kk
    return _numel(outputs[0]) * taps


def _global_macs(inputs: Sequence, outputs: Sequence, attrs: dict) -> int:
    return _numel(inputs[0])


_WINDOW = {
    "kernel_shape": REQUIRED,
    "strides": None,
    "pads": None,
    "dilations": None,
    "ceil_mode": 0,
}

register(
    OpSpec(
        "MaxPool",
        "Max over sliding windows of the spatial axes (padding never wins: it is -inf); optional "
        "Indices output: where each max is, as a flat index into X (storage_order 0: row-major).",
        ("X",),
        _window_infer(MAXPOOL_DTYPES, indices=True),
        outputs=("Y", "Indices?"),
        attrs={**_WINDOW, "storage_order": 0},
        resolve=_resolve_window,
        macs=_window_macs,
        family="pooling",
    )
)
register(
    OpSpec(
        "AveragePool",
        "Mean over sliding windows; count_include_pad=0 (ONNX default) divides by the "
        "real elements only.",
        ("X",),
        _window_infer(FLOAT_DTYPES),
        attrs={**_WINDOW, "count_include_pad": 0},
        resolve=_resolve_window,
        macs=_window_macs,
        family="pooling",
    )
)
register(
    OpSpec(
        "GlobalAveragePool",
        "Mean over all spatial positions per channel: (N,C,...) -> (N,C,1,...).",
        ("X",),
        _global_infer,
        macs=_global_macs,
        family="pooling",
    )
)
register(
    OpSpec(
        "GlobalMaxPool",
        "Max over all spatial positions per channel: (N,C,...) -> (N,C,1,...).",
        ("X",),
        _global_infer,
        macs=_global_macs,
        family="pooling",
    )
)
