"""ONNX export/import rules of the tensor family."""

from __future__ import annotations

from graphnet.onnx_io.registry import export_rule, import_rule


@export_rule("Add")
def _export_add(ctx, node, attrs):
    ctx.emit("Add", node.inputs, node.outputs, name=node.name)


@import_rule("Add")
def _import_add(ctx, node):
    ctx.add("Add", node.input, node.output, name=node.name)
