"""Export and import rules keyed by op name (IR op for export, ONNX op_type for import)."""

from __future__ import annotations

from collections.abc import Callable

from graphnet.errors import UnsupportedOpError

__all__ = [
    "export_rule",
    "get_export_rule",
    "has_export_rule",
    "import_rule",
    "get_import_rule",
    "has_import_rule",
    "load_rules",
]

_EXPORT: dict[str, Callable] = {}
_IMPORT: dict[str, Callable] = {}


def export_rule(op: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx, node, attrs)` as the ONNX export rule of IR op `op`."""

    def deco(fn: Callable) -> Callable:
        if op in _EXPORT:
            raise ValueError(f"an export rule for op '{op}' is registered twice")
        _EXPORT[op] = fn
        return fn

    return deco


def import_rule(*onnx_ops: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx, onnx_node)` as the import rule of ONNX op_type(s) `onnx_ops`."""

    def deco(fn: Callable) -> Callable:
        for op in onnx_ops:
            if op in _IMPORT:
                raise ValueError(f"an import rule for ONNX op '{op}' is registered twice")
            _IMPORT[op] = fn
        return fn

    return deco


_loaded = False


def load_rules() -> None:
    """Import every family's rule module once (registration happens on import). Deferred to the
    first lookup so that `import graphnet` does not pull in onnx."""
    global _loaded
    if _loaded:
        return
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

    _loaded = True


def get_export_rule(op: str, node_name: str = "") -> Callable:
    load_rules()
    try:
        return _EXPORT[op]
    except KeyError:
        where = f" (node '{node_name}')" if node_name else ""
        raise UnsupportedOpError(f"no ONNX export rule for op '{op}'{where}") from None


def has_export_rule(op: str) -> bool:
    load_rules()
    return op in _EXPORT


def get_import_rule(op_type: str) -> Callable | None:
    load_rules()
    return _IMPORT.get(op_type)


def has_import_rule(op_type: str) -> bool:
    load_rules()
    return op_type in _IMPORT
