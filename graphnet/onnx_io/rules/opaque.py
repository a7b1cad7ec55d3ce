"""Opaque nodes are written back exactly as they were read."""

from __future__ import annotations

from graphnet.onnx_io.registry import export_rule


@export_rule("Opaque")
def _export_opaque(ctx, node, attrs):
    from onnx import NodeProto

    proto = NodeProto()
    proto.ParseFromString(attrs["node"])
    # Passes may have renamed the values it reads or writes; the IR node is authoritative.
    del proto.input[:]
    proto.input.extend(node.inputs)
    del proto.output[:]
    proto.output.extend(node.outputs)
    proto.name = node.name
    ctx.nodes.append(proto)
