"""Gradients: one backward rule per op, registered by op name like the kernels, grouped by family
the same way (`activation`, `conv`, `linear`, `math`, `normalization`, `pooling`, `shape`,
`tensor`).

A rule is a small pure function with its formula in the docstring. It mirrors its op's kernel:

    @gradient("Conv")
    def conv(dy, x, w, b=None, *, out, strides, pads, dilations, group, kernel_shape):
        ...
        return dx, dw, db

- `dy` is the gradient of the loss with respect to the node's first output, then come the
  node's inputs as the kernel got them (None for an omitted optional input), then, keyword-only,
  `out` (everything the kernel returned, as a tuple: Dropout's mask, BatchNorm's statistics) and
  the op's resolved attributes (every one, named like the op table's).
- Rules registered with `context=True` also get `training: bool` (BatchNorm, Dropout).
- A rule with a keyword `needs` parameter is told which inputs need a gradient (a tuple of bools)
  and may skip the others (a first Conv never needs the gradient of the image).
- It returns one entry per input: the gradient (same shape and dtype as that input) or None.

Input slots listed in `nondiff` never get a gradient (BatchNorm's running statistics, Pow's
exponent); integer and bool values never carry one either. Ops with no gradient at all are
declared with `non_differentiable(op, reason)`: the op table test fails for an op that is
neither.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from graphnet.errors import UnsupportedOpError

__all__ = [
    "Gradient",
    "gradient",
    "non_differentiable",
    "get_gradient",
    "has_gradient",
    "all_gradients",
    "non_differentiable_ops",
    "unbroadcast",
    "Backprop",
    "FastBackprop",
    "Tape",
    "trainable_params",
]


@dataclass(frozen=True)
class Gradient:
    """A registered backward rule: `fn`, the input slots that never get a gradient, whether it
    takes `training` and whether it takes `needs`."""

    op: str
    fn: Callable
    nondiff: frozenset[int] = frozenset()
    context: bool = False
    takes_needs: bool = False


_GRADIENTS: dict[str, Gradient] = {}
_NON_DIFFERENTIABLE: dict[str, str] = {}


def gradient(
    op: str, *, nondiff: Iterable[int] = (), context: bool = False
) -> Callable[[Callable], Callable]:
    """Register `fn` as the backward rule of `op`; `nondiff` lists input slots that never get a
    gradient."""

    def deco(fn: Callable) -> Callable:
        if op in _GRADIENTS or op in _NON_DIFFERENTIABLE:
            raise ValueError(f"a gradient for op '{op}' is registered twice")
        takes_needs = "needs" in inspect.signature(fn).parameters
        _GRADIENTS[op] = Gradient(op, fn, frozenset(nondiff), context, takes_needs)
        return fn

    return deco


def non_differentiable(op: str, reason: str) -> None:
    """Declare that `op` has no gradient, and why."""
    if op in _GRADIENTS or op in _NON_DIFFERENTIABLE:
        raise ValueError(f"a gradient for op '{op}' is registered twice")
    _NON_DIFFERENTIABLE[op] = reason


def has_gradient(op: str) -> bool:
    return op in _GRADIENTS


def get_gradient(op: str, node_name: str | None = None) -> Gradient:
    """The rule of `op`, or `UnsupportedOpError` naming the op (and why it has none)."""
    try:
        return _GRADIENTS[op]
    except KeyError:
        where = f" at node '{node_name}'" if node_name else ""
        why = _NON_DIFFERENTIABLE.get(op)
        reason = f": {why}" if why else ""
        raise UnsupportedOpError(f"no gradient for op '{op}'{where}{reason}") from None


def all_gradients() -> dict[str, Gradient]:
    return dict(_GRADIENTS)


def non_differentiable_ops() -> dict[str, str]:
    """op -> the reason it has no gradient."""
    return dict(_NON_DIFFERENTIABLE)


def unbroadcast(g: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """Sum `g` down to the shape `target`: the gradient of an operand that NumPy/ONNX
    broadcasting stretched to g's shape (leading axes it lacked, axes where it had size 1)."""
    target = tuple(target)
    if g.shape == target:
        return g
    lead = g.ndim - len(target)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(target) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(target)


from graphnet.runtime.gradients import (  # noqa: E402,F401
    activation,
    conv,
    linear,
    math,
    normalization,
    pooling,
    shape,
    tensor,
)
from graphnet.runtime.gradients.backprop import Backprop, Tape, trainable_params  # noqa: E402
from graphnet.runtime.gradients.fast_plan import FastBackprop  # noqa: E402

non_differentiable("Opaque", "an ONNX op graphnet has no mapping for: no semantics, no kernel")
