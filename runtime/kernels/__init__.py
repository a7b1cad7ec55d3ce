"""Kernels: plain NumPy functions keyed by op name, grouped by family.

A kernel takes its inputs positionally (None for an omitted optional input) and the op's
attributes as keyword-only arguments named like the op table's. Kernels registered with
`context=True` also receive `training: bool` and `rng: numpy.random.Generator`. In train mode
a kernel of an op with `state` (BatchNorm) returns its outputs followed by the new values of the
state inputs. A kernel with a keyword `num_outputs` parameter is told how many outputs its
node has (so MaxPool computes Indices only when asked). No kernel loops in Python over pixels,
channels or batch items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphnet.errors import UnsupportedOpError

__all__ = ["Kernel", "kernel", "get_kernel", "has_kernel", "all_kernels"]


@dataclass(frozen=True)
class Kernel:
    op: str
    fn: Callable
    context: bool = False


_KERNELS: dict[str, Kernel] = {}


def kernel(op: str, *, context: bool = False) -> Callable[[Callable], Callable]:
    """Register `fn` as the kernel of `op`."""

    def deco(fn: Callable) -> Callable:
        if op in _KERNELS:
            raise ValueError(f"a kernel for op '{op}' is registered twice")
        _KERNELS[op] = Kernel(op, fn, context)
        return fn

    return deco


def has_kernel(op: str) -> bool:
    return op in _KERNELS


def get_kernel(op: str, node_name: str | None = None) -> Kernel:
    try:
        return _KERNELS[op]
    except KeyError:
        where = f" at node '{node_name}'" if node_name else ""
        raise UnsupportedOpError(f"no kernel for op '{op}'{where}") from None


def all_kernels() -> dict[str, Kernel]:
    return dict(_KERNELS)


from graphnet.runtime.kernels import (  # noqa: E402,F401
    activation,
    conv,
    linear,
    math,
    normalization,
    pooling,
    shape,
    tensor,
)
