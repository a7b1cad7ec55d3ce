"""Typed errors. Every message names the node (or layer), the op, what was expected and what
came."""

from __future__ import annotations

__all__ = [
    "GraphNetError",
    "GraphError",
    "ShapeError",
    "AttributeValueError",
    "InputError",
    "UnsupportedOpError",
    "KernelError",
    "PassError",
    "ModelImportError",
]


class GraphNetError(Exception):
    """Base class of every error graphnet raises on purpose."""


class GraphError(GraphNetError):
    """A broken graph invariant: order, producers, undefined or duplicate values."""


class ShapeError(GraphNetError):
    """Shapes or dtypes that do not fit an op (raised while a graph is built or inferred)."""


class AttributeValueError(GraphNetError):
    """An attribute with an unknown name or an invalid value."""


class InputError(GraphNetError):
    """Inputs given to the runtime that do not match the graph's inputs (name, shape, dtype)."""


class UnsupportedOpError(GraphNetError):
    """An op with no kernel, export rule or import rule."""


class KernelError(GraphNetError):
    """A kernel failed while executing a node; the message names the node and its input shapes."""


class PassError(GraphNetError):
    """A pass failed or changed the graph's numerics beyond tolerance."""


class ModelImportError(GraphNetError):
    """An ONNX model that cannot be read into the IR."""
