"""Seeded random inputs for a graph (used by `graphnet check`, the pass manager's `--verify`,
benchmarks and tests)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphnet import dims
from graphnet.errors import InputError
from graphnet.ir import Graph

__all__ = ["random_inputs"]


def random_inputs(
    graph: Graph, *, batch: int = 1, seed: int = 0, sizes: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """One array per graph input: standard normal floats, small non-negative ints, random bools.
    Every symbol (graphnet.dims: "N", "H") takes its size in `sizes`, else `batch`, and so does
    every unknown dim; an expression of symbols ("2*N") takes its value for those sizes."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        v = graph.values[name]
        if v.shape is None:
            raise InputError(
                f"input '{name}' has an unknown rank; cannot make a random input for it"
            )
        env = {s: batch for d in v.shape for s in dims.atoms(d)} | dict(sizes or {})
        shape = tuple(_size(d, env, batch) for d in v.shape)
        dt = np.dtype(v.dtype)
        if dt.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[name] = rng.integers(0, 4, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[name] = rng.random(shape) < 0.5
        else:
            raise InputError(
                f"input '{name}' has dtype {v.dtype}, for which no random input is defined"
            )
    return feeds


def _size(d: dims.Dim, sizes: dict[str, int], batch: int) -> int:
    if dims.is_static(d):
        return int(d)  # type: ignore[arg-type]
    value = dims.evaluate(d, sizes)
    return value if value is not None and value > 0 else batch
