"""Shape arithmetic shared by the op families."""

from __future__ import annotations

from typing import Sequence

from graphnet.errors import ShapeError
from graphnet.ir import Value, format_shape

__all__ = ["broadcast", "same_dim", "need_rank", "need_float", "elementwise", "FLOAT_DTYPES"]

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
            raise ShapeError(f"shapes {format_shape(tuple(a))} and {format_shape(tuple(b))} do not broadcast")
    return tuple(reversed(out))


def need_rank(v: Value, ranks: Sequence[int] | range, what: str) -> None:
    if v.shape is None:
        raise ShapeError(f"{what} '{v.name}' has an unknown shape")
    if len(v.shape) not in ranks:
        raise ShapeError(
            f"{what} '{v.name}' must have rank {' or '.join(map(str, ranks))}, got {format_shape(v.shape)}"
        )


def need_float(v: Value, what: str) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{what} '{v.name}' must be a float tensor, got {v.dtype}")


def elementwise(inputs: Sequence[Value | None], attrs: dict) -> list:
    """Infer rule of a one-input element-wise op: same shape and dtype as the input."""
    x = inputs[0]
    need_float(x, "input")
    return [(x.shape, x.dtype)]
