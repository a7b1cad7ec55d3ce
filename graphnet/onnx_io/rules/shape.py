"""ONNX export/import rules of the shape family.

The IR holds the newest ONNX form (axes, starts/ends, pads as inputs). Import turns an older opset's
attributes into constant parameters: Unsqueeze/Squeeze axes before opset 13, Slice's
starts/ends/axes before 10, Pad's pads/value before 11. Export writes the newest form; at opset 17
a Pad with an `axes` input (opset 18) is written with pads expanded to every axis.
"""

from __future__ import annotations

import numpy as np

from graphnet.errors import UnsupportedOpError
from graphnet.onnx_io.rules.math import passthrough
from graphnet.onnx_io.rules.table import export_rule, import_rule

__all__: list[str] = []


def _export_same(ctx, node, attrs):
    ctx.emit(node.op, node.inputs, node.outputs, name=node.name)


for _op in ("Squeeze", "Unsqueeze", "Slice", "Expand"):
    export_rule(_op)(_export_same)


@import_rule("Expand")
def _import_expand(ctx, node):
    passthrough(ctx, node)


@import_rule("Reshape")
def _import_reshape(ctx, node):
    passthrough(ctx, node, ("allowzero",))


@export_rule("Reshape")
def _export_reshape(ctx, node, attrs):
    ctx.emit(
        "Reshape", node.inputs, node.outputs, name=node.name, allowzero=attrs["allowzero"] or None
    )


@import_rule("Transpose")
def _import_transpose(ctx, node):
    passthrough(ctx, node, ("perm",))


@export_rule("Transpose")
def _export_transpose(ctx, node, attrs):
    ctx.emit("Transpose", node.inputs, node.outputs, name=node.name, perm=attrs["perm"])


@import_rule("Gather")
def _import_gather(ctx, node):
    passthrough(ctx, node, ("axis",))


@export_rule("Gather")
def _export_gather(ctx, node, attrs):
    ctx.emit("Gather", node.inputs, node.outputs, name=node.name, axis=attrs["axis"])


@import_rule("Shape")
def _import_shape(ctx, node):
    passthrough(ctx, node, ("start", "end"))  # start/end exist from opset 15 on


@export_rule("Shape")
def _export_shape(ctx, node, attrs):
    ctx.emit(
        "Shape",
        node.inputs,
        node.outputs,
        name=node.name,
        start=attrs["start"] or None,
        end=attrs["end"],
    )


@import_rule("ConstantOfShape")
def _import_constant_of_shape(ctx, node):
    passthrough(ctx, node, ("value",))


@export_rule("ConstantOfShape")
def _export_constant_of_shape(ctx, node, attrs):
    from onnx import numpy_helper

    ctx.emit(
        "ConstantOfShape",
        node.inputs,
        node.outputs,
        name=node.name,
        value=numpy_helper.from_array(np.asarray(attrs["value"]).reshape(1), "value"),
    )


def _attr_param(ctx, node, key: str, values, dtype) -> str:
    return ctx.param(np.array(values, dtype).reshape(-1), f"{node.output[0]}_{key}")


@import_rule("Squeeze", "Unsqueeze")
def _import_squeeze(ctx, node):
    attrs = ctx.attrs(node)
    inputs = list(node.input)
    if ctx.opset < 13 and "axes" in attrs:
        inputs = [inputs[0], _attr_param(ctx, node, "axes", attrs.pop("axes"), np.int64)]
    if attrs:
        ctx.opaque(node)
        return
    ctx.add(node.op_type, inputs, list(node.output), name=node.name or None)


@import_rule("Slice")
def _import_slice(ctx, node):
    attrs = ctx.attrs(node)
    if ctx.opset >= 10:
        passthrough(ctx, node)
        return
    inputs = [node.input[0]]
    for key in ("starts", "ends", "axes"):
        if key in attrs:
            inputs.append(_attr_param(ctx, node, key, attrs.pop(key), np.int64))
    if attrs or len(inputs) < 3:
        ctx.opaque(node)
        return
    ctx.add("Slice", inputs, list(node.output), name=node.name or None)


@import_rule("Pad")
def _import_pad(ctx, node):
    attrs = ctx.attrs(node)
    if ctx.opset >= 11:
        passthrough(ctx, node, ("mode",))
        return
    dtype = ctx.graph.values[node.input[0]].dtype
    mode = attrs.pop("mode", "constant")
    inputs = [node.input[0], _attr_param(ctx, node, "pads", attrs.pop("pads", ()), np.int64)]
    value = attrs.pop("value", 0.0)
    if mode == "constant" and value != 0:
        # Pad-11's constant_value is a scalar tensor of the input's dtype.
        inputs.append(ctx.param(np.array(value, dtype), f"{node.output[0]}_value"))
    if attrs:
        ctx.opaque(node)
        return
    ctx.add("Pad", inputs, list(node.output), {"mode": mode}, name=node.name or None)


@export_rule("Pad")
def _export_pad(ctx, node, attrs):
    mode = attrs["mode"]
    if mode == "wrap" and ctx.opset < 19:
        raise UnsupportedOpError(
            f"node '{node.name}' (Pad): mode 'wrap' needs opset >= 19, exporting opset {ctx.opset}"
        )
    inputs = list(node.inputs)
    if len(inputs) > 3 and inputs[3] and ctx.opset < 18:
        # Opset 17 has no axes input: write pads for every axis (zeros on the others).
        pads = ctx.graph.params.get(inputs[1])
        axes = ctx.graph.params.get(inputs[3])
        shape = ctx.value(inputs[0]).shape
        if pads is None or axes is None or shape is None:
            raise UnsupportedOpError(
                f"node '{node.name}' (Pad): an axes input needs opset >= 18 unless pads, axes and "
                f"the input rank are constant; exporting opset {ctx.opset}"
            )
        r, k = len(shape), axes.size
        full = np.zeros(2 * r, np.int64)
        for i, a in enumerate(int(a) % r for a in axes.reshape(-1)):
            full[a], full[a + r] = pads[i], pads[i + k]
        inputs = [inputs[0], ctx.const(full, f"{node.name}_pads")] + inputs[2:3]
    while inputs and inputs[-1] == "":
        inputs.pop()
    ctx.emit("Pad", inputs, node.outputs, name=node.name, mode=mode)


del _op
