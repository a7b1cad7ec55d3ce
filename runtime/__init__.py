"""graphnet's NumPy reference runtime: `run(graph, feeds, mode=..., seed=...)` or a `Session`."""

from __future__ import annotations

from graphnet.runtime.executor import MODES, Session, run

__all__ = ["MODES", "Session", "run"]
