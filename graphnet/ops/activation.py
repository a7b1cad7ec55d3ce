"""Activations: element-wise non-linearities (and PRelu, whose slope is a parameter)."""

from __future__ import annotations

from graphnet.ops._shapes import elementwise
from graphnet.ops.spec import OpSpec, register

register(OpSpec("Relu", "max(0, x), element-wise.", ("X",), elementwise, family="activation"))
