"""Tensor ops: Add, Concat, Flatten, and the helpers imported ONNX models use."""

from __future__ import annotations

from graphnet.errors import ShapeError
from graphnet.ops._shapes import broadcast
from graphnet.ops.spec import OpSpec, register


def _binary(inputs, attrs):
    a, b = inputs
    if a.dtype != b.dtype:
        raise ShapeError(f"dtypes differ: '{a.name}' is {a.dtype}, '{b.name}' is {b.dtype}")
    return [(broadcast(a.shape, b.shape), a.dtype)]


register(OpSpec("Add", "a + b with NumPy broadcasting (residual connections).", ("A", "B"), _binary, family="tensor"))
