"""`Value`: a named tensor type (shape and dtype), and the helpers that name shapes and dtypes.

The bottom of the core: the op table's shape rules reason about `Value`s and the IR (`graphnet.ir`)
holds them, so both import this module and neither has to import the other to describe a tensor.
`graphnet.ir` re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["Value", "Shape", "format_shape", "dtype_name"]

Shape = tuple  # tuple[int | str | None, ...]: static, symbolic, unknown (graphnet.dims)

_DTYPE_NAMES: dict = {}


def dtype_name(dtype: DTypeLike) -> str:
    """`str(np.dtype(dtype))`, cached: NumPy builds the name anew on every call, and the IR asks
    for it once per value (a tenth of importing a 1,700-node model)."""
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):
        name = str(np.dtype(dtype))
        try:
            _DTYPE_NAMES[dtype] = name
        except TypeError:  # an unhashable dtype-like
            pass
        return name


def format_shape(shape: Shape | None) -> str:
    """`("N", 3, 32, None)` -> `"(N,3,32,?)"`: symbolic dims as written, an unknown dim (None)
    as "?"; an unknown shape -> `"?"`."""
    if shape is None:
        return "?"
    return "(" + ",".join("?" if d is None else str(d) for d in shape) + ")"


@dataclass
class Value:
    """A named tensor with a (possibly partly dynamic) shape and a dtype."""

    name: str
    shape: Shape | None
    dtype: str = "float32"

    def __repr__(self) -> str:
        return f"%{self.name}: {self.dtype}{format_shape(self.shape)}"
