"""graphnet: a graph compiler and NumPy runtime for convolutional networks.

`import graphnet` stays light: the IR and the op table. The DSL is `graphnet.nn`, ONNX I/O is
`graphnet.onnx_io`, the NumPy runtime is `graphnet.runtime` and the passes are `graphnet.passes`.
"""

from __future__ import annotations

from graphnet.errors import (
    AttributeValueError,
    GraphError,
    GraphNetError,
    InputError,
    KernelError,
    PassError,
    ShapeError,
    UnsupportedOpError,
)
from graphnet.ir import Graph, Node, Value

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "Node",
    "Value",
    "GraphNetError",
    "GraphError",
    "ShapeError",
    "AttributeValueError",
    "InputError",
    "UnsupportedOpError",
    "KernelError",
    "PassError",
    "load",
]


def load(path_or_model):
    """Import an ONNX model (a path or an `onnx.ModelProto`) into a `Graph`."""
    from graphnet.onnx_io.importer import load as _load

    return _load(path_or_model)
