"""ONNX export/import rules of the normalization family.

Export (opset 17+):
- BatchNormalization: inference -> the opset-15 form (no `spatial`, training_mode=0), a node's
  own running-statistics outputs written as Identity of its inputs (ONNX forbids them there);
  train mode -> training_mode=1 with outputs (Y, running_mean, running_var): the node's own, or
  else extra graph outputs named "<mean input>.updated" and "<var input>.updated". A BN applied
  twice to the same statistics (shared layer) updates them twice, one after the other, as the
  runtime does: the second reads the first's update, and only the last update is a graph output.
- Layer/Instance/GroupNormalization: an omitted (non-affine) scale or bias is written as ones or
  zeros, since ONNX requires them (LayerNormalization's B excepted).
- GroupNormalization below opset 21 (where ONNX's scale and bias are per GROUP, or the op does not
  exist) is written exactly as Reshape(N, G, -1) -> InstanceNormalization -> Reshape back -> Mul,
  Add with the per-channel scale and bias.

Import (opset 9 to 21+): the inference forms map 1:1. Kept opaque, because the IR cannot say the
same thing: BatchNormalization in its opset < 7 training form (is_test=0) or reading its
saved_mean / saved_var outputs (opsets 7-13), `spatial=0` (per-activation statistics, opsets 7-8)
or an X rank outside 2..5; LayerNormalization asking for bfloat16 (stash_type=16) Mean / InvStdDev;
GroupNormalization of opsets 18-20 whose per-group scale/bias are not constants (constants are
expanded to per-channel). LayerNormalization's Mean / InvStdDev outputs map onto the IR op's.
"""

from __future__ import annotations

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import ShapeError
from graphnet.onnx_io.decode import f32_decimal
from graphnet.onnx_io.rules.table import export_rule, import_rule

__all__: list[str] = []


# ------------------------------------------------------------------------------------------ export
def _static_dims(ctx, node, dims: tuple, what: str) -> tuple:
    if not all(is_static(d) for d in dims):
        raise ShapeError(
            f"node '{node.name}' ({node.op}): exporting a non-affine {what} needs static "
            f"dims, got {dims}"
        )
    return tuple(int(d) for d in dims)


def _scale_bias(ctx, node, dims: tuple, *, need_bias: bool = True) -> list[str]:
    """The node's [X, scale, bias] with ones / zeros constants where the IR omits them."""
    x = ctx.value(node.inputs[0])
    ins = list(node.inputs) + [""] * (3 - len(node.inputs))
    if not ins[1]:
        ins[1] = ctx.const(
            np.ones(_static_dims(ctx, node, dims, "scale"), x.dtype), f"{node.name}.ones"
        )
    if not ins[2] and need_bias:
        ins[2] = ctx.const(
            np.zeros(_static_dims(ctx, node, dims, "bias"), x.dtype), f"{node.name}.zeros"
        )
    return ins if ins[2] else ins[:2]


@export_rule("BatchNormalization")
def _export_batchnorm(ctx, node, attrs):
    common = {"epsilon": float(attrs["epsilon"]), "momentum": float(attrs["momentum"])}
    stats = list(node.outputs[1:])  # the node's own running-statistics outputs, if it has them
    if not ctx.training:
        # ONNX forbids the statistics outputs in inference mode; there they are the inputs.
        ctx.emit("BatchNormalization", node.inputs, node.outputs[:1], name=node.name, **common)
        for k, out in enumerate(stats):
            ctx.emit("Identity", [node.inputs[3 + k]], [out], name=ctx.fresh(f"{node.name}.{out}"))
        return
    outputs = list(node.outputs)
    for k in range(1 + len(stats), 3):  # input_mean, input_var -> their updated running averages
        param = node.inputs[k + 2]
        src = ctx.value(param)
        if ctx.last_update(node, param):  # the statistics' final value: a graph output
            name = ctx.fresh(f"{param}.updated")
            ctx.add_output(name, src.shape, src.dtype)
        else:  # a BN applied again later reads this update (ExportContext.updated)
            name = ctx.fresh(f"{param}.updated_by_{node.name}")
        outputs.append(name)
    ctx.emit("BatchNormalization", node.inputs, outputs, name=node.name, training_mode=1, **common)
    for k in (1, 2):
        if node.inputs[k + 2] in ctx.graph.params:
            ctx.updated(node.inputs[k + 2], outputs[k])


@export_rule("LayerNormalization")
def _export_layernorm(ctx, node, attrs):
    x = ctx.value(node.inputs[0])
    ins = _scale_bias(ctx, node, tuple(x.shape[attrs["axis"] :]), need_bias=False)
    ctx.emit(
        "LayerNormalization",
        ins,
        node.outputs,
        name=node.name,
        axis=int(attrs["axis"]),
        epsilon=float(attrs["epsilon"]),
        stash_type=int(attrs["stash_type"]),
    )


@export_rule("InstanceNormalization")
def _export_instancenorm(ctx, node, attrs):
    x = ctx.value(node.inputs[0])
    ins = _scale_bias(ctx, node, (x.shape[1],))
    ctx.emit(
        "InstanceNormalization", ins, node.outputs, name=node.name, epsilon=float(attrs["epsilon"])
    )


@export_rule("GroupNormalization")
def _export_groupnorm(ctx, node, attrs):
    x = ctx.value(node.inputs[0])
    g, eps = int(attrs["num_groups"]), float(attrs["epsilon"])
    if ctx.opset >= 21:
        ins = _scale_bias(ctx, node, (x.shape[1],))
        ctx.emit(
            "GroupNormalization",
            ins,
            node.outputs,
            name=node.name,
            num_groups=g,
            epsilon=eps,
            stash_type=int(attrs["stash_type"]),
        )
        return
    # Opsets 17-20: instance norm over (N, G, C/G * positions) IS group norm (one "channel" per
    # group); the per-channel affine follows as Mul/Add with scale/bias reshaped to (1, C, 1, ...).
    name, xin = node.name, node.inputs[0]
    grouped, normed, shape = (ctx.fresh(f"{name}.{s}") for s in ("grouped", "normed", "shape"))
    group_shape = ctx.const(np.array([0, g, -1], np.int64), f"{name}.group_shape")
    ctx.emit("Reshape", [xin, group_shape], [grouped], name=ctx.fresh(f"{name}.group"))
    ones, zeros = (
        ctx.const(np.ones(g, x.dtype), f"{name}.ones"),
        ctx.const(np.zeros(g, x.dtype), f"{name}.zeros"),
    )
    ctx.emit(
        "InstanceNormalization",
        [grouped, ones, zeros],
        [normed],
        name=ctx.fresh(f"{name}.norm"),
        epsilon=eps,
    )
    ctx.emit("Shape", [xin], [shape], name=ctx.fresh(f"{name}.shape_of"))
    affine = [(op, p) for op, p in zip(("Mul", "Add"), node.inputs[1:], strict=False) if p]
    cur = ctx.fresh(f"{name}.ungrouped") if affine else node.outputs[0]
    ctx.emit("Reshape", [normed, shape], [cur], name=ctx.fresh(f"{name}.ungroup"))
    if affine:
        channel_shape = ctx.const(
            np.array([1, -1] + [1] * (len(x.shape) - 2), np.int64), f"{name}.channel_shape"
        )
    for k, (op, p) in enumerate(affine):
        col = ctx.fresh(f"{p}.per_channel")
        ctx.emit("Reshape", [p, channel_shape], [col], name=ctx.fresh(f"{name}.{op.lower()}_shape"))
        out = node.outputs[0] if k == len(affine) - 1 else ctx.fresh(f"{name}.scaled")
        ctx.emit(op, [cur, col], [out], name=ctx.fresh(f"{name}.{op.lower()}"))
        cur = out


@export_rule("LRN")
def _export_lrn(ctx, node, attrs):
    ctx.emit(
        "LRN",
        node.inputs,
        node.outputs,
        name=node.name,
        size=int(attrs["size"]),
        alpha=float(attrs["alpha"]),
        beta=float(attrs["beta"]),
        bias=float(attrs["bias"]),
    )


# ------------------------------------------------------------------------------------------ import
def _extra_outputs(node) -> bool:
    """Does the ONNX node ask for any output beyond Y?"""
    return any(o for o in node.output[1:])


def _rank(ctx, name: str) -> int | None:
    v = ctx.graph.values.get(name)
    return None if v is None or v.shape is None else len(v.shape)


@import_rule("BatchNormalization")
def _import_batchnorm(ctx, node):
    a = ctx.attrs(node)
    # `consumed_inputs` (opset < 6) was only an in-place hint: safe to drop.
    # A training-mode BatchNormalization (training_mode=1 from opset 14; from 7 to 13, the presence
    # of the statistics outputs) maps onto the IR op, whose mode is chosen when the graph runs or
    # is exported (DESIGN.md); its running-statistics outputs, when something reads them, become
    # the IR node's optional outputs. Kept opaque: before opset 7 (is_test=0) the statistics
    # outputs were the way to train; the saved_mean / saved_var outputs (opsets 7-13).
    old_training = ctx.opset < 7 and a.get("is_test", 0) == 0
    rank = _rank(ctx, node.input[0])
    saved_read = any(ctx.is_used(o) for o in node.output[3:])
    if (
        old_training
        or saved_read
        or a.get("spatial", 1) != 1
        or (rank is not None and not 2 <= rank <= 5)
    ):
        return ctx.opaque(node)
    attrs = {k: f32_decimal(a[k]) for k in ("epsilon", "momentum") if k in a}
    outputs = list(node.output[:3])
    while len(outputs) > 1 and not ctx.is_used(outputs[-1]):
        outputs.pop()
    outputs = [
        o
        if o and (k == 0 or ctx.is_used(o))
        else ctx.graph.fresh_name(f"{node.name or node.output[0]}.unused{k}")
        for k, o in enumerate(outputs)
    ]
    ctx.add("BatchNormalization", node.input, outputs, attrs, name=node.name)


def _named_outputs(ctx, node) -> list[str]:
    """The node's outputs without trailing omitted ones; an omitted one in the middle (ONNX's "")
    gets a fresh placeholder name, since IR values are named (nothing reads it)."""
    outs = list(node.output)
    while outs and not outs[-1]:
        outs.pop()
    base = node.name or outs[0]
    return [o or ctx.graph.fresh_name(f"{base}.unused{k}") for k, o in enumerate(outs)]


@import_rule("LayerNormalization")
def _import_layernorm(ctx, node):
    a = ctx.attrs(node)
    if _extra_outputs(node) and a.get("stash_type", 1) == 16:
        return ctx.opaque(node)  # bfloat16 statistics: NumPy has no bfloat16
    attrs = {
        k: f32_decimal(v) if k == "epsilon" else v
        for k, v in a.items()
        if k in ("axis", "epsilon", "stash_type")
    }
    ctx.add("LayerNormalization", node.input, _named_outputs(ctx, node), attrs, name=node.name)


@import_rule("InstanceNormalization")
def _import_instancenorm(ctx, node):
    a = ctx.attrs(node)
    rank = _rank(ctx, node.input[0])
    if rank is not None and not 3 <= rank <= 5:
        return ctx.opaque(node)
    attrs = {"epsilon": f32_decimal(a["epsilon"])} if "epsilon" in a else {}
    ctx.add("InstanceNormalization", node.input, node.output, attrs, name=node.name)


@import_rule("GroupNormalization")
def _import_groupnorm(ctx, node):
    a = ctx.attrs(node)
    attrs = {
        k: f32_decimal(v) if k == "epsilon" else v
        for k, v in a.items()
        if k in ("num_groups", "epsilon", "stash_type")
    }
    inputs = list(node.input)
    if ctx.opset < 21:
        # Opsets 18-20: scale and bias hold one value per GROUP. Repeating each C/G times gives the
        # per-channel form exactly (channel c belongs to group c // (C/G)).
        x = ctx.graph.values.get(inputs[0])
        c = None if x is None or x.shape is None or len(x.shape) < 2 else x.shape[1]
        g = attrs.get("num_groups")
        arrays = [ctx.const(i) for i in inputs[1:3]]
        if (
            not is_static(c)
            or not g
            or c % g
            or any(arr is None or arr.shape != (g,) for arr in arrays)
        ):
            return ctx.opaque(node)
        inputs[1:3] = [
            ctx.param(np.repeat(arr, c // g), f"{name}.per_channel")
            for arr, name in zip(arrays, inputs[1:3], strict=True)
        ]
    ctx.add("GroupNormalization", inputs, node.output, attrs, name=node.name)


@import_rule("LRN")
def _import_lrn(ctx, node):
    a = ctx.attrs(node)
    attrs = {
        k: v if k == "size" else f32_decimal(v)
        for k, v in a.items()
        if k in ("size", "alpha", "beta", "bias")
    }
    ctx.add("LRN", node.input, node.output, attrs, name=node.name)
