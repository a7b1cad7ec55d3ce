"""Export and import rules keyed by op name (IR op for export, ONNX op_type for import).

Importing this module imports every family's rule module (each registers its rules in
`rules.table` as it loads), so a lookup here always sees the full tables. Nothing in `rules/`
imports this module: the rules sit below what looks them up.
"""

from __future__ import annotations

from collections.abc import Callable

from graphnet.errors import UnsupportedOpError

# Registration happens on import; each family module is listed explicitly.
from graphnet.onnx_io.rules import (  # noqa: F401
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
from graphnet.onnx_io.rules.table import EXPORT_RULES, IMPORT_RULES, export_rule, import_rule

__all__ = [
    "export_rule",
    "get_export_rule",
    "has_export_rule",
    "import_rule",
    "get_import_rule",
    "has_import_rule",
]


def get_export_rule(op: str, node_name: str = "") -> Callable:
    """The export rule of IR op `op`, or `UnsupportedOpError` naming the op (and node)."""
    try:
        return EXPORT_RULES[op]
    except KeyError:
        where = f" (node '{node_name}')" if node_name else ""
        raise UnsupportedOpError(f"no ONNX export rule for op '{op}'{where}") from None


def has_export_rule(op: str) -> bool:
    return op in EXPORT_RULES


def get_import_rule(op_type: str) -> Callable | None:
    """The import rule of ONNX op_type `op_type`, or None (the node stays opaque)."""
    return IMPORT_RULES.get(op_type)


def has_import_rule(op_type: str) -> bool:
    return op_type in IMPORT_RULES
