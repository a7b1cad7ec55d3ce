"""ONNX I/O: `export.to_onnx(graph)` / `export.save(graph, path)` and `importer.load(path)`.

Per-op rules live in `graphnet.onnx_io.rules.<family>`, found by op name through `registry`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_OPSET"]

DEFAULT_OPSET = 21
"""Opset written by default: the first with per-channel GroupNormalization scale and bias."""
