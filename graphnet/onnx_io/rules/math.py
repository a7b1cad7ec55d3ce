"""ONNX export/import rules of the math family.

Import covers opsets 9 to 21+: Clip's min/max attributes (before opset 11) and the reductions'
`axes` attribute (before 18; ReduceSum before 13) become constant parameters, since the IR keeps
the newest, input form. Export writes the newest form the target opset has, folding a constant
`axes` input back into the attribute for ReduceMean/ReduceMax at opset 17.
"""

from __future__ import annotations

import numpy as np

from graphnet.errors import UnsupportedOpError
from graphnet.onnx_io.rules.table import export_rule, import_rule
from graphnet.ops.math import ONNX_DTYPES

__all__ = ["passthrough"]

_SAME = (
    "Mul",
    "Sub",
    "Div",
    "Max",
    "Min",
    "Neg",
    "Sqrt",
    "Pow",
    "Exp",
    "Log",
    "Reciprocal",
    "Identity",
    "Clip",
)

# First opset where the reduction's axes are an input rather than an attribute.
_AXES_INPUT_SINCE = {"ReduceMean": 18, "ReduceMax": 18, "ReduceSum": 13}


def passthrough(ctx, node, allowed: tuple[str, ...] = ()) -> None:
    """Import an ONNX node 1:1 onto the IR op of the same name, keeping the attributes in
    `allowed`; a node with any other attribute (a form we do not know) is kept opaque."""
    attrs = ctx.attrs(node)
    if set(attrs) - set(allowed):
        ctx.opaque(node)
        return
    ctx.add(node.op_type, list(node.input), list(node.output), attrs, name=node.name or None)


def _export_same(ctx, node, attrs):
    ctx.emit(node.op, node.inputs, node.outputs, name=node.name)


for _op in _SAME:
    export_rule(_op)(_export_same)
# Clip is imported by its own rule (its bounds were attributes before opset 11).
import_rule(*[op for op in _SAME if op != "Clip"])(passthrough)


@import_rule("Clip")
def _import_clip(ctx, node):
    if ctx.opset >= 11:
        passthrough(ctx, node)
        return
    attrs = ctx.attrs(node)
    dtype = ctx.graph.values[node.input[0]].dtype
    inputs = [node.input[0]]
    for key in ("min", "max"):
        # An absent bound is FLT_MAX / -FLT_MAX in Clip-6, i.e. no bound: leave the input empty.
        inputs.append(
            ctx.param(np.array(attrs[key], dtype), f"{node.output[0]}_{key}")
            if key in attrs
            else ""
        )
    while inputs[-1] == "":
        inputs.pop()
    ctx.add("Clip", inputs, list(node.output), name=node.name or None)


# ------------------------------------------------------------------------ reductions
def _export_reduce(ctx, node, attrs):
    keep = {"keepdims": attrs["keepdims"]}
    if ctx.opset >= _AXES_INPUT_SINCE[node.op]:
        if attrs["noop_with_empty_axes"]:
            keep["noop_with_empty_axes"] = 1
        ctx.emit(node.op, node.inputs, node.outputs, name=node.name, **keep)
        return
    axes_name = node.inputs[1] if len(node.inputs) > 1 else ""
    axes = ctx.graph.params.get(axes_name) if axes_name else None
    if axes_name and axes is None:
        raise UnsupportedOpError(
            f"node '{node.name}' ({node.op}): axes computed at run time need opset "
            f">= {_AXES_INPUT_SINCE[node.op]}, exporting opset {ctx.opset}"
        )
    if axes is not None and axes.size == 0:
        axes = None
    if axes is None and attrs["noop_with_empty_axes"]:
        ctx.emit("Identity", node.inputs[:1], node.outputs, name=node.name)
        return
    ctx.emit(
        node.op,
        node.inputs[:1],
        node.outputs,
        name=node.name,
        axes=None if axes is None else [int(a) for a in axes.reshape(-1)],
        **keep,
    )


def _import_reduce(ctx, node):
    attrs = ctx.attrs(node)
    inputs = list(node.input)
    if ctx.opset < _AXES_INPUT_SINCE[node.op_type]:
        axes = attrs.pop("axes", None)
        if axes is not None:
            inputs = [
                inputs[0],
                ctx.param(np.array(axes, np.int64).reshape(-1), f"{node.output[0]}_axes"),
            ]
    if set(attrs) - {"keepdims", "noop_with_empty_axes"}:
        ctx.opaque(node)
        return
    ctx.add(node.op_type, inputs, list(node.output), attrs, name=node.name or None)


for _op in _AXES_INPUT_SINCE:
    export_rule(_op)(_export_reduce)
import_rule(*_AXES_INPUT_SINCE)(_import_reduce)


# ------------------------------------------------------------------------------ Cast
_DTYPE_TO_ONNX = {v: k for k, v in ONNX_DTYPES.items()}


@export_rule("Cast")
def _export_cast(ctx, node, attrs):
    ctx.emit("Cast", node.inputs, node.outputs, name=node.name, to=_DTYPE_TO_ONNX[attrs["to"]])


@import_rule("Cast")
def _import_cast(ctx, node):
    attrs = ctx.attrs(node)
    to = ONNX_DTYPES.get(attrs.get("to"))
    # saturate (opset 19) only changes float8 targets, which are not among ONNX_DTYPES; any other
    # attribute (round_mode, opset 24) or source/target dtype (string, bfloat16, float8, int4)
    # stays opaque.
    source = ctx.graph.values[node.input[0]].dtype
    if to is None or source not in ONNX_DTYPES.values() or set(attrs) - {"to", "saturate"}:
        ctx.opaque(node)
        return
    ctx.add("Cast", list(node.input), list(node.output), {"to": to}, name=node.name or None)


del _op
