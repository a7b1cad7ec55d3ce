"""ONNX export/import rules of the linear family."""

from __future__ import annotations
