"""ONNX export/import rules of the activation family."""

from __future__ import annotations

from graphnet.onnx_io.registry import export_rule, import_rule


@export_rule("Relu")
def _export_relu(ctx, node, attrs):
    ctx.emit("Relu", node.inputs, node.outputs, name=node.name)


@import_rule("Relu")
def _import_relu(ctx, node):
    ctx.add("Relu", node.input, node.output, name=node.name)
