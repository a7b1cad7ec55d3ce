"""Seeded random inputs for a graph (used by `graphnet check`, the pass manager's `--verify`,
benchmarks and tests)."""

from __future__ import annotations

import numpy as np

from graphnet.errors import InputError
from graphnet.ir import Graph

__all__ = ["random_inputs"]


def random_inputs(graph: Graph, *, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One array per graph input: standard normal floats, small non-negative ints, random bools.
    Dynamic dims (None) take the size `batch`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        v = graph.values[name]
        if v.shape is None:
            raise InputError(
                f"input '{name}' has an unknown rank; cannot make a random input for it"
            )
        shape = tuple(batch if d is None else d for d in v.shape)
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
