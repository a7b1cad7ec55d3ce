"""Gradients of the math ops: element-wise arithmetic (broadcasting operands get their gradient
summed back to their shape), Clip, the reductions, Cast and Identity. Integer operands carry no
gradient (the engine never asks for one)."""

from __future__ import annotations

import numpy as np

from graphnet.runtime.gradients import gradient, unbroadcast
from graphnet.runtime.kernels.math import reduce_axes

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
]


def _like(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return unbroadcast(g, x.shape).astype(x.dtype, copy=False)


@gradient("Mul")
def mul(dy: np.ndarray, a: np.ndarray, b: np.ndarray, *, out: tuple) -> tuple:
    """dA = dY * B, dB = dY * A (each summed back to its operand's shape)."""
    return _like(dy * b, a), _like(dy * a, b)


@gradient("Sub")
def sub(dy: np.ndarray, a: np.ndarray, b: np.ndarray, *, out: tuple) -> tuple:
    """dA = dY, dB = -dY."""
    return _like(dy, a), _like(-dy, b)


@gradient("Div")
def div(dy: np.ndarray, a: np.ndarray, b: np.ndarray, *, out: tuple) -> tuple:
    """dA = dY / B, dB = -dY * A / B^2."""
    return _like(dy / b, a), _like(-dy * a / (b * b), b)


def _extremum_grads(dy: np.ndarray, xs: tuple, y: np.ndarray) -> tuple:
    """The gradient goes to the first operand equal to the result (the one np.maximum kept)."""
    taken = np.zeros(y.shape, dtype=bool)
    grads = []
    for x in xs:  # a loop over the operands
        hit = (np.broadcast_to(x, y.shape) == y) & ~taken
        taken |= hit
        grads.append(_like(np.where(hit, dy, np.zeros((), dy.dtype)), x))
    return tuple(grads)


@gradient("Max")
def max_(dy: np.ndarray, *xs: np.ndarray, out: tuple) -> tuple:
    """dX_i = dY where X_i is the (first) maximum, else 0."""
    return _extremum_grads(dy, xs, out[0])


@gradient("Min")
def min_(dy: np.ndarray, *xs: np.ndarray, out: tuple) -> tuple:
    """dX_i = dY where X_i is the (first) minimum, else 0."""
    return _extremum_grads(dy, xs, out[0])


@gradient("Neg")
def neg(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = -dY."""
    return (-dy,)


@gradient("Sqrt")
def sqrt(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY / (2 sqrt(X))."""
    return (dy / (2 * out[0]),)


@gradient("Exp")
def exp(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY * exp(X)."""
    return (dy * out[0],)


@gradient("Log")
def log(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY / X."""
    return (dy / x,)


@gradient("Reciprocal")
def reciprocal(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = -dY / X^2 = -dY * Y^2."""
    y = out[0]
    return (-dy * y * y,)


@gradient("Pow", nondiff=(1,))
def pow_(dy: np.ndarray, x: np.ndarray, y: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY * Y * X^(Y-1). The exponent gets none: it is a structural constant (x^2 and
    x^0.5 in decomposed normalizations), never a learned weight."""
    e = y.astype(x.dtype, copy=False)
    return _like(dy * e * np.power(x, e - 1), x), None


@gradient("Identity")
def identity(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY."""
    return (dy,)


@gradient("Clip", nondiff=(1, 2))
def clip(
    dy: np.ndarray,
    x: np.ndarray,
    min: np.ndarray | None = None,  # noqa: A002 - ONNX's input names
    max: np.ndarray | None = None,  # noqa: A002
    *,
    out: tuple,
) -> tuple:
    """dX = dY where min <= X <= max (bounds included, as PyTorch), else 0. The bounds get no
    gradient: they are hyper-parameters (ReLU6's 0 and 6), not weights."""
    inside = np.ones(x.shape, dtype=bool)
    if min is not None:
        inside &= x >= min.reshape(())
    if max is not None:
        inside &= x <= max.reshape(())
    return np.where(inside, dy, np.zeros((), dy.dtype)), None, None


def _spread(dy: np.ndarray, x: np.ndarray, ax: tuple | None, keepdims: int) -> np.ndarray:
    """dY with the reduced axes restored as size-1 dims (when keepdims dropped them)."""
    if keepdims:
        return dy
    axes = tuple(range(x.ndim)) if ax is None else ax
    return np.expand_dims(dy, axes)


@gradient("ReduceSum", nondiff=(1,))
def reduce_sum(
    dy: np.ndarray,
    x: np.ndarray,
    axes: np.ndarray | None = None,
    *,
    out: tuple,
    keepdims: int,
    noop_with_empty_axes: int,
) -> tuple:
    """dX = dY broadcast back over the reduced axes."""
    ax = reduce_axes(x, axes, noop_with_empty_axes)
    if ax == ():
        return dy, None
    return np.broadcast_to(_spread(dy, x, ax, keepdims), x.shape).copy(), None


@gradient("ReduceMean", nondiff=(1,))
def reduce_mean(
    dy: np.ndarray,
    x: np.ndarray,
    axes: np.ndarray | None = None,
    *,
    out: tuple,
    keepdims: int,
    noop_with_empty_axes: int,
) -> tuple:
    """dX = dY / n broadcast back over the reduced axes (n elements per mean)."""
    ax = reduce_axes(x, axes, noop_with_empty_axes)
    if ax == ():
        return dy, None
    n = x.size // max(1, int(np.prod(out[0].shape)))
    g = _spread(dy, x, ax, keepdims) / dy.dtype.type(n)
    return np.broadcast_to(g, x.shape).copy(), None


@gradient("ReduceMax", nondiff=(1,))
def reduce_max(
    dy: np.ndarray,
    x: np.ndarray,
    axes: np.ndarray | None = None,
    *,
    out: tuple,
    keepdims: int,
    noop_with_empty_axes: int,
) -> tuple:
    """dX = dY shared equally by the elements equal to the maximum (PyTorch's amax rule)."""
    ax = reduce_axes(x, axes, noop_with_empty_axes)
    if ax == ():
        return dy, None
    y = _spread(out[0], x, ax, keepdims)
    hit = x == y
    count = hit.sum(axis=ax, keepdims=True)
    return np.where(hit, _spread(dy, x, ax, keepdims) / count, 0).astype(x.dtype), None


@gradient("Cast")
def cast(dy: np.ndarray, x: np.ndarray, *, out: tuple, to: str) -> tuple:
    """dX = dY cast back to X's dtype (float to float; an integer side has no gradient)."""
    return (dy.astype(x.dtype),)
