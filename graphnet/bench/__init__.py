"""Benchmarking the NumPy runtime: the six-model DSL suite (`suite`), the engines it is compared
with and how they are timed (`engines`), and the GEMM floor of a model (`floor`).

Used by `graphnet bench` and by the scripts in benchmarks/. Nothing here is imported by the
runtime or the passes; this package sits at the CLI's level (it imports both)."""

from __future__ import annotations

__all__: list[str] = []
