"""ONNX protos -> Python values: node attributes, `Constant` nodes, float32 attribute values.

Below both the importer and the per-family import rules (which only need these helpers), so that
the rules never import the importer that calls them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphnet.errors import ModelImportError

__all__ = ["f32_decimal", "onnx_attrs", "constant_value"]


def f32_decimal(v) -> float:
    """A float32 value as the shortest decimal that rounds to it: ONNX stores FLOAT attributes as
    float32, so alpha=0.2 comes back as 0.2 (not 0.20000000298) and re-export writes the same
    bits."""
    return float(str(np.float32(v)))


def onnx_attrs(node) -> dict[str, Any]:
    """An ONNX node's attributes as Python values (strings decoded, tensors as arrays).
    FLOAT attributes are stored as float32: they come back as the shortest decimal that is
    that float32 (alpha=0.2 reads as 0.2, not 0.20000000298023224)."""
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = tuple(x.decode() if isinstance(x, bytes) else x for x in v)
        elif a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif a.type == a.FLOAT:
            v = f32_decimal(v)
        elif a.type == a.FLOATS:
            v = tuple(f32_decimal(x) for x in v)
        out[a.name] = v
    return out


def constant_value(node) -> np.ndarray:
    """The array an ONNX `Constant` node holds."""
    attrs = onnx_attrs(node)
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise ModelImportError(f"Constant '{node.output[0]}' has an unsupported form: {sorted(attrs)}")
