"""The op table: one `OpSpec` per op, the single source of truth for attributes and their defaults,
input and output arity, and shape/dtype inference. The DSL, the runtime, the passes and ONNX I/O
look ops up here by name.

Families live in their own modules (`conv`, `pooling`, `activation`, `linear`, `normalization`,
`tensor`) and register their specs explicitly with `register(OpSpec(...))`.
"""

from __future__ import annotations

# Registration happens on import; each family module is listed explicitly.
from graphnet.ops import (  # noqa: E402,F401
    activation,
    conv,
    linear,
    math,
    normalization,
    opaque,
    pooling,
    shape,
    tensor,
)
from graphnet.ops.spec import (
    REQUIRED,
    OpSpec,
    all_specs,
    attrs_for_arrays,
    attrs_of,
    get,
    has,
    infer,
    register,
    resolve_attrs,
)

__all__ = [
    "REQUIRED",
    "OpSpec",
    "all_specs",
    "attrs_for_arrays",
    "attrs_of",
    "get",
    "has",
    "infer",
    "register",
    "resolve_attrs",
]
