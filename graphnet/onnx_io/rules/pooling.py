"""ONNX export/import rules of the pooling family."""

from __future__ import annotations
