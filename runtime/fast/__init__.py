"""The compiled fast plan behind `Session(graph)`: `compile` (graph -> steps), `steps` (what each
step does), `conv` and `winograd` (the convolution algorithms), `memory` (activation pool and
arena, scratch), `threads` (batch slices on a small thread pool, BLAS thread control). The plain
kernels in `graphnet.runtime.kernels` stay the oracle (`Session(graph, plan="reference")`)."""

from __future__ import annotations

from graphnet.runtime.fast.compile import CompiledPlan

__all__ = ["CompiledPlan"]
