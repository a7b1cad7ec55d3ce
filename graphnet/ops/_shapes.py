"""Shape arithmetic shared by the op families."""

from __future__ import annotations

from collections.abc import Sequence

from graphnet.errors import ShapeError
from graphnet.value import Value, format_shape

__all__ = [
    "broadcast",
    "same_dim",
    "need_rank",
    "need_float",
    "elementwise",
    "FLOAT_DTYPES",
    "window_out_size",
    "same_pad",
    "same_pads",
]

FLOAT_DTYPES = ("float16", "float32", "float64")


def same_dim(a: int | None, b: int | None, what: str) -> int | None:
    """Unify two dims (None is dynamic and matches anything)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    raise ShapeError(f"{what}: {a} != {b}")


def broadcast(a: Sequence, b: Sequence) -> tuple:
    """NumPy/ONNX multidirectional broadcasting of two shapes; None dims are dynamic."""
    out = []
    for k in range(max(len(a), len(b))):
        da = a[len(a) - 1 - k] if k < len(a) else 1
        db = b[len(b) - 1 - k] if k < len(b) else 1
        if da == 1:
            out.append(db)
        elif db == 1 or da == db:
            out.append(da)
        elif da is None or db is None:
            out.append(da if db is None else db)
        else:
            raise ShapeError(
                f"shapes {format_shape(tuple(a))} and {format_shape(tuple(b))} do not broadcast"
            )
    return tuple(reversed(out))


def need_rank(v: Value, ranks: Sequence[int] | range, what: str) -> None:
    if v.shape is None:
        raise ShapeError(f"{what} '{v.name}' has an unknown shape")
    if len(v.shape) not in ranks:
        raise ShapeError(
            f"{what} '{v.name}' must have rank {' or '.join(map(str, ranks))}, got "
            f"{format_shape(v.shape)}"
        )


def need_float(v: Value, what: str) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{what} '{v.name}' must be a float tensor, got {v.dtype}")


def elementwise(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Infer rule of a one-input element-wise op: same shape and dtype as the input."""
    x = inputs[0]
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
