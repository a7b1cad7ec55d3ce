"""ONNX export/import rules of the activation family.

Export writes opset >= 17, where every op here has its modern form (Softmax-13 semantics,
Dropout-12 ratio/training_mode inputs). Import reads opsets 7 to 21+:

- Softmax/LogSoftmax below opset 13 flattened the input to 2-D at `axis` (default 1) and
  normalized over all trailing dims at once. When every dim after `axis` is 1 (e.g. `axis` is
  the last axis) that is the one-axis op; otherwise it becomes Flatten + op(axis=-1) + Reshape
  back when at most one input dim is dynamic (the shape written back may hold one -1); else the
  node stays opaque.
- PRelu (opset 7+): the slope broadcasts unidirectionally from the right, as in the IR; 1:1.
  Before opset 7 the slope was per CHANNEL (size C, along axis 1) or shared (size 1), as PyTorch's
  opset-6 exports write it: a constant slope is reshaped to (C, 1, ..., 1); a run-time one stays
  opaque.
- Dropout is always imported as scheme "inverted" (ONNX scales by 1/keep in training).
  Opsets 7-11 carry `ratio` as an attribute; opsets 7-9 type the mask like the data (float), which
  the IR's bool mask cannot express, so a node that uses that mask stays opaque. From opset 12
  `ratio` and `training_mode` are inputs; a constant one becomes `drop_prob` / is dropped (below),
  one computed at run time (e.g. a graph input) stays an input of the IR Dropout, which reads it.
  A constant `training_mode` of True (a training export, e.g. PyTorch's TrainingMode.TRAINING, or
  graphnet's own train-mode export) maps to the same mode-independent IR Dropout as False: the IR
  does not bake the mode into nodes (DESIGN.md, "IR choices"), so running or exporting in train
  mode reproduces the ONNX node exactly and inference mode gives its inference form, and
  export(mode="train") -> import round-trips. The `seed` attribute is dropped (graphnet draws
  from its own generator).
"""

from __future__ import annotations

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.errors import UnsupportedOpError
from graphnet.onnx_io.decode import f32_decimal
from graphnet.onnx_io.rules.table import export_rule, import_rule

__all__: list[str] = []

_PLAIN = ("Relu", "Sigmoid", "Tanh")


# ------------------------------------------------------------------------------------------ export
def _export_plain(ctx, node, attrs):
    ctx.emit(node.op, node.inputs, node.outputs, name=node.name)


def _export_alpha(ctx, node, attrs):
    ctx.emit(node.op, node.inputs, node.outputs, name=node.name, alpha=float(attrs["alpha"]))


def _export_axis(ctx, node, attrs):
    ctx.emit(node.op, node.inputs, node.outputs, name=node.name, axis=int(attrs["axis"]))


for _op in _PLAIN + ("PRelu",):
    export_rule(_op)(_export_plain)
for _op in ("LeakyRelu", "Elu"):
    export_rule(_op)(_export_alpha)
for _op in ("Softmax", "LogSoftmax"):
    export_rule(_op)(_export_axis)


@export_rule("Dropout")
def _export_dropout(ctx, node, attrs):
    """inverted/inference: Dropout(x, ratio) (no training_mode: an identity in every runtime);
    classic/inference: Mul(x, keep); train: Dropout(x, ratio, training_mode=True), followed for
    classic by Mul(., keep) since ONNX's training Dropout divides the kept units by keep.
    Run-time `ratio` / `training_mode` inputs (imported ones) are written back as they are."""
    dtype = np.dtype(ctx.value(node.inputs[0]).dtype)
    drop = float(attrs["drop_prob"])
    classic = attrs["scheme"] == "classic"
    y = node.outputs[0]
    mask = node.outputs[1:2]
    ratio_in, mode_in = (list(node.inputs[1:]) + ["", ""])[:2]
    if classic and (ratio_in or mode_in):
        raise UnsupportedOpError(
            f"node '{node.name}' (Dropout): a classic-scheme Dropout with run-time "
            "ratio/training_mode inputs has no ONNX form (ONNX's Dropout is inverted); graphnet "
            "never builds one"
        )
    if classic and not ctx.training and not mask:
        keep = ctx.const(np.asarray(1.0 - drop, dtype=dtype), f"{node.name}.keep")
        ctx.emit("Mul", [node.inputs[0], keep], [y], name=node.name)
        return
    inputs = [
        node.inputs[0],
        ratio_in or ctx.const(np.asarray(drop, dtype=dtype), f"{node.name}.ratio"),
    ]
    if mode_in:
        inputs.append(mode_in)
    elif ctx.training:
        inputs.append(ctx.const(np.asarray(True), f"{node.name}.training_mode"))
    dropped = ctx.fresh(f"{node.name}.dropped") if classic else y
    ctx.emit("Dropout", inputs, [dropped, *mask], name=node.name)
    if classic:
        keep = ctx.const(np.asarray(1.0 - drop, dtype=dtype), f"{node.name}.keep")
        ctx.emit("Mul", [dropped, keep], [y], name=ctx.fresh(f"{node.name}.scale"))


# ------------------------------------------------------------------------------------------ import
def _outputs(node) -> list[str]:
    """The node's outputs without trailing omitted ("") ones."""
    outs = list(node.output)
    while outs and not outs[-1]:
        outs.pop()
    return outs


@import_rule(*_PLAIN)
def _import_plain(ctx, node):
    ctx.add(node.op_type, node.input[:1], _outputs(node), name=node.name)


@import_rule("LeakyRelu", "Elu")
def _import_alpha(ctx, node):
    # ONNX's defaults (LeakyRelu 0.01, Elu 1.0) are the op table's: an absent alpha stays absent.
    a = ctx.attrs(node)
    attrs = {"alpha": f32_decimal(a["alpha"])} if "alpha" in a else {}
    ctx.add(node.op_type, node.input[:1], _outputs(node), attrs, name=node.name)


@import_rule("PRelu")
def _import_prelu(ctx, node):
    x, slope_name = node.input[0], node.input[1]
    if ctx.opset >= 7:
        ctx.add("PRelu", [x, slope_name], _outputs(node), name=node.name)
        return
    # PRelu-1/6 predate ONNX's broadcasting: the slope is shared (size 1) or per channel (size C).
    slope, shape = ctx.const(slope_name), ctx.graph.values[x].shape
    if slope is None or shape is None or len(shape) < 2 or slope.size not in (1, shape[1]):
        ctx.opaque(node)
        return
    per_channel = (
        slope.reshape((-1,) + (1,) * (len(shape) - 2)) if slope.size > 1 else slope.reshape(1)
    )
    ctx.add(
        "PRelu",
        [x, ctx.param(per_channel, f"{slope_name}.per_channel")],
        _outputs(node),
        name=node.name,
    )


@import_rule("Softmax", "LogSoftmax")
def _import_softmax(ctx, node):
    op, x, outs = node.op_type, node.input[0], _outputs(node)
    attrs = ctx.attrs(node)
    if ctx.opset >= 13:
        ctx.add(op, [x], outs, {"axis": int(attrs.get("axis", -1))}, name=node.name)
        return
    axis = int(attrs.get("axis", 1))
    shape = ctx.graph.values[x].shape
    if shape is None:
        ctx.opaque(node)  # the rank is needed to know which dims the old op normalized over
        return
    r = len(shape)
    a = axis + r if axis < 0 else axis
    if not 0 <= a < r:  # let the op table name the node and the shapes
        ctx.add(op, [x], outs, {"axis": axis}, name=node.name)
        return
    if all(d == 1 for d in shape[a + 1 :]):
        # Normalizing over d[a:] with every dim after `a` of size 1 is normalizing along `a`.
        ctx.add(op, [x], outs, {"axis": -1 if a == r - 1 else a}, name=node.name)
        return
    if sum(not is_static(d) for d in shape) > 1:  # Reshape's shape takes one -1 at most
        ctx.opaque(node)
        return
    base = node.name or outs[0]
    flat = ctx.graph.fresh_name(f"{base}.flat")
    ctx.add("Flatten", [x], [flat], {"axis": a}, name=flat)
    normed = ctx.graph.fresh_name(f"{base}.2d")
    ctx.add(op, [flat], [normed], {"axis": -1}, name=node.name or normed)
    back = ctx.param(
        np.array([d if is_static(d) else -1 for d in shape], dtype=np.int64), f"{base}.shape"
    )
    ctx.add("Reshape", [normed, back], outs, name=ctx.graph.fresh_name(f"{base}.unflat"))


@import_rule("Dropout")
def _import_dropout(ctx, node):
    outs = _outputs(node)
    if ctx.opset < 10 and len(outs) > 1 and not ctx.is_used(outs[1]):
        outs = outs[:1]  # old zoo models list a mask output that nothing reads
    if ctx.opset < 7 or (ctx.opset < 10 and len(outs) > 1):
        ctx.opaque(node)  # is_test attribute (< 7) / a float mask that is read (7-9)
        return
    drop = ops.get("Dropout").attrs["drop_prob"]  # ONNX's default ratio is the table's, 0.5
    inputs = [node.input[0]]
    if ctx.opset < 12:
        drop = f32_decimal(ctx.attrs(node).get("ratio", drop))
    else:
        ins = list(node.input) + ["", ""]
        runtime_inputs = ["", ""]  # ratio, training_mode: wired only when not constants
        if ins[1]:
            ratio = ctx.const(ins[1])
            if ratio is None:
                runtime_inputs[0] = ins[1]
            elif np.size(ratio) != 1:
                ctx.opaque(node)
                return
            else:
                ratio = np.asarray(ratio).reshape(())
                drop = f32_decimal(ratio) if ratio.dtype == np.float32 else float(ratio)
        # A constant training_mode is the mode of the export, which the IR chooses at run/export
        # time instead (see the module docstring); one computed at run time stays an input.
        if ins[2]:
            training = ctx.const(ins[2])
            if training is None:
                runtime_inputs[1] = ins[2]
            elif np.size(training) != 1:
                ctx.opaque(node)
                return
        while runtime_inputs and not runtime_inputs[-1]:
            runtime_inputs.pop()
        inputs += runtime_inputs
    ctx.add("Dropout", inputs, outs, {"drop_prob": drop, "scheme": "inverted"}, name=node.name)
