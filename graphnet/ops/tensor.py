"""Tensor ops: Add, Concat, Flatten, and the helpers imported ONNX models use.

Axis attributes may be negative (ONNX opset 11+ semantics); `resolve` turns them into the
non-negative axis when the input rank is known, so kernels and exporters see one spelling.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphnet import dims
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import broadcast, known_shape, required
from graphnet.ops.spec import REQUIRED, OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["concat_shape", "flatten_shape"]


def _binary(inputs, attrs):
    a, b = required(inputs[0]), required(inputs[1])
    if a.dtype != b.dtype:
        raise ShapeError(f"dtypes differ: '{a.name}' is {a.dtype}, '{b.name}' is {b.dtype}")
    return [(broadcast(known_shape(a, "A"), known_shape(b, "B")), a.dtype)]


# Add's cost (one add per element) is negligible next to conv and matrix products: no MACs rule.
register(
    OpSpec(
        "Add",
        "a + b with NumPy broadcasting (residual connections).",
        ("A", "B"),
        _binary,
        macs=None,
        family="tensor",
    )
)


def _normalize_axis(axis: int, rank: int, lo: int, hi: int) -> int:
    """`axis` in [lo, hi] (both may depend on rank) -> non-negative; AttributeValueError
    otherwise."""
    if not lo <= axis <= hi:
        raise AttributeValueError(
            f"axis {axis} is out of range [{lo}, {hi}] for a rank-{rank} input"
        )
    return axis + rank if axis < 0 else axis


def _resolve_axis(lo_of, hi_of):
    """A `resolve` that makes `axis` non-negative when the first input's rank is known."""

    def resolve(inputs: Sequence[Value | None], attrs: dict) -> dict:
        x = inputs[0] if inputs else None
        axis = attrs["axis"]
        if x is not None and x.shape is not None and isinstance(axis, int):
            r = len(x.shape)
            if lo_of(r) <= axis <= hi_of(r) and axis < 0:
                attrs = dict(attrs, axis=axis + r)
        return attrs  # out-of-range axes are reported by `infer`, which names the shapes

    return resolve


# ------------------------------------------------------------------------------------- Flatten
def flatten_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """(prod(d[:axis]), prod(d[axis:])): a symbolic dim makes its side an expression ("4*N"),
    an unknown one makes it unknown."""
    x = required(inputs[0])
    shape = known_shape(x)
    r = len(shape)
    try:
        axis = _normalize_axis(attrs["axis"], r, -r, r)
    except AttributeValueError as exc:
        raise AttributeValueError(f"{exc}: X{format_shape(shape)}") from None

    return [((dims.prod(shape[:axis]), dims.prod(shape[axis:])), x.dtype)]


register(
    OpSpec(
        "Flatten",
        "Reshape to 2-D: (d0*...*d[axis-1], d[axis]*...*d[n-1]) (ONNX Flatten).",
        ("X",),
        flatten_shape,
        attrs={"axis": 1},
        resolve=_resolve_axis(lambda r: -r, lambda r: r),
        family="tensor",
    )
)


# -------------------------------------------------------------------------------------- Concat
def concat_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Same rank and dtype everywhere, same dims except along `axis`, whose sizes add up (as
    expressions when symbolic: two batches N make 2*N)."""
    values = [required(v) for v in inputs]
    shapes = [known_shape(v) for v in values]
    first, first_shape = values[0], shapes[0]
    r = len(first_shape)
    if r == 0:
        raise ShapeError(f"input '{first.name}' is a scalar; Concat needs rank >= 1")
    try:
        axis = _normalize_axis(attrs["axis"], r, -r, r - 1)
    except AttributeValueError as exc:
        raise AttributeValueError(f"{exc}: {first.name}{format_shape(first_shape)}") from None
    out = list(first_shape)
    for v, shape in zip(values[1:], shapes[1:], strict=True):
        where = f"'{v.name}'{format_shape(shape)} vs '{first.name}'{format_shape(first_shape)}"
        if v.dtype != first.dtype:
            raise ShapeError(
                f"dtypes differ: '{first.name}' is {first.dtype}, '{v.name}' is {v.dtype}"
            )
        if len(shape) != r:
            raise ShapeError(f"ranks differ: {where}")
        for k, (d, o) in enumerate(zip(shape, out, strict=True)):
            if k == axis:
                out[k] = dims.add(o, d)
            elif dims.differ(d, o):
                raise ShapeError(
                    f"dim {k} differs ({d} != {o}) off the concat axis {axis}: {where}"
                )
            else:
                out[k] = dims.unify(o, d)
    return [(tuple(out), first.dtype)]


register(
    OpSpec(
        "Concat",
        "Join tensors along `axis` (negative counts from the end); other dims must agree.",
        ("*inputs",),
        concat_shape,
        attrs={"axis": REQUIRED},
        resolve=_resolve_axis(lambda r: -r, lambda r: r - 1),
        family="tensor",
    )
)
