"""Math kernels: element-wise arithmetic, Clip, reductions, Cast, Identity (ONNX semantics).

Every kernel returns the dtype ONNX defines (the input's, or Cast's `to`): NumPy would promote an
int32 sum to int64 or a float32 ** int64 to float64, so results are cast back where it could.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from graphnet.runtime.kernels import kernel

__all__ = [
    "mul",
    "sub",
    "div",
    "max_",
    "min_",
    "neg",
    "sqrt",
    "exp",
    "log",
    "reciprocal",
    "pow_",
    "identity",
    "clip",
    "reduce_mean",
    "reduce_max",
    "reduce_sum",
    "cast",
    "reduce_axes",
]


def _keep(y: np.ndarray | np.generic, like: np.ndarray) -> np.ndarray:
    return np.asarray(y).astype(like.dtype, copy=False)


@kernel("Mul")
def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _keep(np.multiply(a, b), a)


@kernel("Sub")
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _keep(np.subtract(a, b), a)


@kernel("Div")
def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b; integer division truncates toward zero (C semantics, as ONNX), not floor."""
    if np.issubdtype(a.dtype, np.integer):
        q = np.floor_divide(a, b)
        # floor and trunc differ by one where the remainder is non-zero and the signs differ.
        fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return _keep(q + fix.astype(q.dtype), a)
    return _keep(np.divide(a, b), a)


@kernel("Max")
def max_(*xs: np.ndarray) -> np.ndarray:
    return _keep(reduce(np.maximum, xs), xs[0])


@kernel("Min")
def min_(*xs: np.ndarray) -> np.ndarray:
    return _keep(reduce(np.minimum, xs), xs[0])


@kernel("Neg")
def neg(x: np.ndarray) -> np.ndarray:
    return np.negative(x)


@kernel("Sqrt")
def sqrt(x: np.ndarray) -> np.ndarray:
    return np.sqrt(x)


@kernel("Exp")
def exp(x: np.ndarray) -> np.ndarray:
    return np.exp(x)


@kernel("Log")
def log(x: np.ndarray) -> np.ndarray:
    return np.log(x)


@kernel("Reciprocal")
def reciprocal(x: np.ndarray) -> np.ndarray:
    return _keep(np.divide(1, x), x)


@kernel("Pow")
def pow_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # A float base with an integer exponent: compute in the base's dtype, as ONNX does.
    if np.issubdtype(x.dtype, np.floating):
        y = y.astype(x.dtype, copy=False)
    return _keep(np.power(x, y), x)


@kernel("Identity")
def identity(x: np.ndarray) -> np.ndarray:
    # A copy: the output may be a graph output, and a caller writing into it must not change
    # the graph's parameter it came from.
    return x.copy()


@kernel("Clip")
def clip(x: np.ndarray, min: np.ndarray | None = None, max: np.ndarray | None = None) -> np.ndarray:  # noqa: A002
    y = x
    # maximum first, then minimum: with min > max every value becomes max, as ONNX specifies.
    if min is not None:
        y = np.maximum(y, min.reshape(()))
    if max is not None:
        y = np.minimum(y, max.reshape(()))
    return _keep(y, x) if y is not x else x.copy()


def reduce_axes(
    x: np.ndarray, axes: np.ndarray | None, noop_with_empty_axes: int
) -> tuple[int, ...] | None:
    """Axes of a reduction as a tuple; None for "all axes"; () for the no-op case."""
    if axes is None or np.asarray(axes).size == 0:
        return () if noop_with_empty_axes else None
    return tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))


def _reduction(fn, x, axes, keepdims, noop_with_empty_axes):
    ax = reduce_axes(x, axes, noop_with_empty_axes)
    if ax == ():
        return x.copy()
    return _keep(fn(x, axis=ax, keepdims=bool(keepdims)), x)


@kernel("ReduceMean")
def reduce_mean(
    x: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int, noop_with_empty_axes: int
) -> np.ndarray:
    return _reduction(np.mean, x, axes, keepdims, noop_with_empty_axes)


def _lowest(dtype: np.dtype):
    if dtype == np.bool_:
        return False
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


@kernel("ReduceMax")
def reduce_max(
    x: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int, noop_with_empty_axes: int
) -> np.ndarray:
    # The maximum of an empty set is the dtype's lowest value (-inf for floats), as ONNX defines;
    # NumPy needs it as `initial` to reduce over a zero-size axis at all.
    return _reduction(
        lambda a, **kw: np.max(a, initial=_lowest(a.dtype), **kw),
        x,
        axes,
        keepdims,
        noop_with_empty_axes,
    )


@kernel("ReduceSum")
def reduce_sum(
    x: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int, noop_with_empty_axes: int
) -> np.ndarray:
    return _reduction(np.sum, x, axes, keepdims, noop_with_empty_axes)


@kernel("Cast")
def cast(x: np.ndarray, *, to: str) -> np.ndarray:
    # NumPy's astype truncates floats toward zero on conversion to integers, like ONNX's Cast.
    return x.astype(to)
