"""ONNX export/import rules of the tensor family: Add, Concat, Flatten, and ONNX's Sum (imported
as a chain of Adds).

Opset notes for import (we read opsets 9+): Add changed only its type lists (7, 13, 14); its
opset < 7 `broadcast`/`axis` attributes cannot appear. Concat's `axis` is required from opset 4 and
may be negative from 11. Flatten's `axis` may be negative from 11 (our op accepts both). Sum
broadcasts from opset 8; a chain of broadcasting Adds computes the same thing.
"""

from __future__ import annotations

from graphnet import ops
from graphnet.onnx_io.registry import export_rule, import_rule


@export_rule("Add")
def _export_add(ctx, node, attrs):
    ctx.emit("Add", node.inputs, node.outputs, name=node.name)


@import_rule("Add")
def _import_add(ctx, node):
    if ctx.attrs(node):  # opset < 7 `broadcast`/`axis`: legacy semantics we do not map
        ctx.opaque(node)
        return
    ctx.add("Add", node.input, node.output, name=node.name)


@export_rule("Concat")
def _export_concat(ctx, node, attrs):
    ctx.emit("Concat", node.inputs, node.outputs, name=node.name, axis=int(attrs["axis"]))


@import_rule("Concat")
def _import_concat(ctx, node):
    a = ctx.attrs(node)
    if "axis" not in a or any(not i for i in node.input):  # malformed for opset 4+: keep verbatim
        ctx.opaque(node)
        return
    ctx.add("Concat", node.input, node.output, {"axis": int(a["axis"])}, name=node.name)


@export_rule("Flatten")
def _export_flatten(ctx, node, attrs):
    ctx.emit("Flatten", node.inputs, node.outputs, name=node.name, axis=int(attrs["axis"]))


@import_rule("Flatten")
def _import_flatten(ctx, node):
    a = ctx.attrs(node)
    ctx.add("Flatten", node.input, node.output, {"axis": int(a.get("axis", 1))}, name=node.name)


@import_rule("Sum")
def _import_sum(ctx, node):
    """Sum(x0, x1, ..., xn) -> Add(...Add(Add(x0, x1), x2)..., xn), the last Add writing Sum's output.
    A one-input Sum is an Identity where that op exists, else it stays opaque."""
    xs = list(node.input)
    base = node.name or node.output[0]
    if len(xs) == 1:
        if ops.has("Identity"):
            ctx.add("Identity", xs, node.output, name=base)
        else:
            ctx.opaque(node)
        return
    acc = xs[0]
    for k, x in enumerate(xs[1:], start=1):
        last = k == len(xs) - 1
        out = node.output[0] if last else ctx.graph.fresh_name(f"{base}.partial{k}")
        ctx.add("Add", [acc, x], [out], name=base if last else f"{base}.add{k}")
        acc = out
