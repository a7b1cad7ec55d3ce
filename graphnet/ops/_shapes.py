"""Shape arithmetic shared by the op families."""

from __future__ import annotations

from collections.abc import Sequence

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import ShapeError
from graphnet.value import Value, format_shape

__all__ = [
    "broadcast",
    "broadcasts_to",
    "required",
    "known_shape",
    "same_dim",
    "need_rank",
    "need_float",
    "elementwise",
    "FLOAT_DTYPES",
    "window_out_size",
    "window_out_dim",
    "same_pad",
    "same_pads",
]

FLOAT_DTYPES = ("float16", "float32", "float64")


def same_dim(a: Dim, b: Dim, what: str) -> Dim:
    """Unify two dims that must be equal: ShapeError when they provably differ (see
    `graphnet.dims.unify`)."""
    if dims.differ(a, b):
        raise ShapeError(f"{what}: {dims.format_dim(a)} != {dims.format_dim(b)}")
    return dims.unify(a, b)


def broadcast(a: Sequence, b: Sequence) -> tuple:
    """NumPy/ONNX multidirectional broadcasting of two shapes, dims as `graphnet.dims` has them:
    an error only for dims that provably cannot broadcast (two static sizes > 1 that differ, or
    a static size > 1 against an expression that provably differs from it and from 1)."""
    out = []
    for k in range(max(len(a), len(b))):
        da = a[len(a) - 1 - k] if k < len(a) else 1
        db = b[len(b) - 1 - k] if k < len(b) else 1
        if dims.differ(da, db) and dims.differ(da, 1) and dims.differ(db, 1):
            raise ShapeError(
                f"shapes {format_shape(tuple(a))} and {format_shape(tuple(b))} do not broadcast"
            )
        out.append(dims.broadcast_dim(da, db))
    return tuple(reversed(out))


def broadcasts_to(small: Sequence, big: Sequence) -> bool:
    """Unidirectional broadcasting (PRelu's slope, Gemm's C, LayerNorm's scale): can `small`
    be stretched to `big` without changing `big`? Every right-aligned dim of `small` is 1 or may
    equal `big`'s (a dynamic dim is accepted unless it provably differs: the runtime checks)."""
    if len(small) > len(big):
        return False
    tail = big[len(big) - len(small) :]
    return all(ds == 1 or not dims.differ(ds, db) for ds, db in zip(small, tail, strict=True))


def required(v: Value | None, what: str = "input") -> Value:
    """A required input of a node (the op table has checked that the node gives it; this is the
    type's narrowing, and a clear error if a caller passed None anyway)."""
    if v is None:
        raise ShapeError(f"{what} is required but missing")
    return v


def known_shape(v: Value, what: str = "input") -> tuple:
    """`v`'s shape, or ShapeError when it is unknown."""
    if v.shape is None:
        raise ShapeError(f"{what} '{v.name}' has an unknown shape")
    return tuple(v.shape)


def need_rank(v: Value, ranks: Sequence[int] | range, what: str) -> tuple:
    """`v`'s shape, after checking that it is known and of one of the `ranks`."""
    if v.shape is None:
        raise ShapeError(f"{what} '{v.name}' has an unknown shape")
    if len(v.shape) not in ranks:
        raise ShapeError(
            f"{what} '{v.name}' must have rank {' or '.join(map(str, ranks))}, got "
            f"{format_shape(v.shape)}"
        )
    return tuple(v.shape)


def need_float(v: Value, what: str) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{what} '{v.name}' must be a float tensor, got {v.dtype}")


def elementwise(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Infer rule of a one-input element-wise op: same shape and dtype as the input."""
    x = required(inputs[0])
    need_float(x, "input")
    return [(x.shape, x.dtype)]


# ------------------------------------------------------------------ window arithmetic (conv, pool)
def window_out_size(
    size: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    ceil: bool = False,
) -> int:
    """Number of windows along one axis (ONNX / PyTorch formula), 0 if the dilated kernel does
    not fit. With `ceil`, a last window that would start inside the end padding is dropped, as
    ONNX and PyTorch do."""
    extent = dilation * (kernel - 1) + 1
    span = size + pad_begin + pad_end - extent
    if span < 0:
        return 0
    if ceil:
        n = -(-span // stride) + 1
        if (n - 1) * stride >= size + pad_begin:
            n -= 1
        return n
    return span // stride + 1


def window_out_dim(
    size: Dim,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    ceil: bool = False,
) -> Dim:
    """`window_out_size` of any dim: static as there; an expression gives
    floor((size + pads - extent) / stride) + 1 (ceil mode's rule for a last window in the
    padding depends on the size: unknown); unknown stays unknown."""
    if dims.is_static(size):
        return window_out_size(int(size), kernel, stride, dilation, pad_begin, pad_end, ceil)
    if size is None or ceil:
        return None
    extent = dilation * (kernel - 1) + 1
    span = dims.add(size, pad_begin + pad_end - extent)
    return dims.add(dims.floordiv(span, stride), 1)


def same_pad(
    size: int, kernel: int, stride: int, dilation: int, upper: bool = True
) -> tuple[int, int]:
    """(begin, end) pads giving ceil(size / stride) windows along one axis (ONNX auto_pad SAME_*):
    total = max(0, (out-1)*s + d*(k-1)+1 - size); the odd pixel goes at the end for SAME_UPPER
    (`upper`, also the DSL's "same"), at the beginning for SAME_LOWER."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - size)
    begin = total // 2 if upper else total - total // 2
    return begin, total - begin


def same_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    upper: bool = True,
) -> tuple[int, ...]:
    """`same_pad` over every spatial axis, as ONNX pads (all begins, then all ends)."""
    pairs = [
        same_pad(n, k, s, d, upper)
        for n, k, s, d in zip(sizes, kernel, strides, dilations, strict=True)
    ]
    return tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
