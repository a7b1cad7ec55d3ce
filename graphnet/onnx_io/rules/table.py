"""The two rule tables (IR op -> export rule, ONNX op_type -> import rule) and the decorators
with which each family module fills them. Lookups go through `graphnet.onnx_io.registry`, which
imports every family module, so that the rules never import what looks them up."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["EXPORT_RULES", "IMPORT_RULES", "export_rule", "import_rule"]

EXPORT_RULES: dict[str, Callable] = {}
IMPORT_RULES: dict[str, Callable] = {}


def export_rule(op: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx, node, attrs)` as the ONNX export rule of IR op `op`."""

    def deco(fn: Callable) -> Callable:
        if op in EXPORT_RULES:
            raise ValueError(f"an export rule for op '{op}' is registered twice")
        EXPORT_RULES[op] = fn
        return fn

    return deco


def import_rule(*onnx_ops: str) -> Callable[[Callable], Callable]:
    """Register `fn(ctx, onnx_node)` as the import rule of ONNX op_type(s) `onnx_ops`."""

    def deco(fn: Callable) -> Callable:
        for op in onnx_ops:
            if op in IMPORT_RULES:
                raise ValueError(f"an import rule for ONNX op '{op}' is registered twice")
            IMPORT_RULES[op] = fn
        return fn

    return deco
