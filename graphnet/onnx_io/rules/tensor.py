"""ONNX export/import rules of the tensor family: Add, Concat, Flatten, and ONNX's Sum (imported
as a chain of Adds).

Opset notes for import: Add changed only its type lists from opset 7 on (7, 13, 14); before 7 its
`broadcast`/`axis` attributes meant a left-aligned broadcast, mapped by `legacy_broadcast`
(PyTorch's opset-6 exports use it). Concat's `axis` is required from opset 4 and
may be negative from 11. Flatten's `axis` may be negative from 11 (our op accepts both). Sum
broadcasts from opset 8; a chain of broadcasting Adds computes the same thing.
"""

from __future__ import annotations

import numpy as np

from graphnet.onnx_io.rules.table import export_rule, import_rule

__all__ = ["legacy_broadcast"]


@export_rule("Add")
def _export_add(ctx, node, attrs):
    ctx.emit("Add", node.inputs, node.outputs, name=node.name)


def legacy_broadcast(ctx, node) -> list[str] | None:
    """The inputs [A, B] of an opset 1-6 binary op (Add, Sub, Mul, Div) whose `broadcast`/`axis`
    attributes have today's meaning, or None if that cannot be expressed.

    Before opset 7, B broadcast to A only with broadcast=1, and `axis` placed B's dims at A's dims
    axis..axis+rank(B)-1 (default: the trailing dims, which is today's right-aligned broadcasting).
    With an axis, B gets rank(A) - axis - rank(B) trailing size-1 dims, after which NumPy's
    broadcasting from the right is exactly the old rule. A run-time B with an axis needs
    Unsqueeze; constant ones are reshaped here."""
    a = ctx.attrs(node)
    if set(a) - {"broadcast", "axis", "consumed_inputs"} or len(node.input) != 2:
        return None
    x, b = node.input
    if not a.get("broadcast", 0) or "axis" not in a:
        return [x, b]  # equal shapes (broadcast=0) or suffix matching: today's broadcasting
    xs, bs = ctx.graph.values[x].shape, ctx.graph.values[b].shape
    if xs is None or bs is None:
        return None
    axis = a["axis"] + len(xs) if a["axis"] < 0 else a["axis"]
    extra = len(xs) - axis - len(bs)
    if extra < 0 or axis < 0:
        return None
    if extra == 0:
        return [x, b]
    const = ctx.const(b)
    if const is not None:
        return [x, ctx.param(const.reshape(const.shape + (1,) * extra), f"{b}.aligned")]
    axes = ctx.param(np.arange(len(bs), len(bs) + extra, dtype=np.int64), f"{b}.align_axes")
    aligned = ctx.graph.fresh_name(f"{b}.aligned")
    ctx.add("Unsqueeze", [b, axes], [aligned], name=aligned)
    return [x, aligned]


@import_rule("Add")
def _import_add(ctx, node):
    inputs = list(node.input)
    if ctx.attrs(node):  # opset < 7: `broadcast`/`axis` (and < 6 `consumed_inputs`)
        inputs = legacy_broadcast(ctx, node)
        if inputs is None:
            ctx.opaque(node)
            return
    ctx.add("Add", inputs, node.output, name=node.name)


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
    # An absent axis is the op table's default (1, ONNX's too).
    attrs = {"axis": int(a["axis"])} if "axis" in a else {}
    ctx.add("Flatten", node.input, node.output, attrs, name=node.name)


@import_rule("Sum")
def _import_sum(ctx, node):
    """Sum(x0, x1, ..., xn) -> Add(...Add(Add(x0, x1), x2)..., xn), the last Add writing Sum's
    output. A one-input Sum is an Identity."""
    xs = list(node.input)
    base = node.name or node.output[0]
    if len(xs) == 1:
        ctx.add("Identity", xs, node.output, name=base)
        return
    acc = xs[0]
    for k, x in enumerate(xs[1:], start=1):
        last = k == len(xs) - 1
        out = node.output[0] if last else ctx.graph.fresh_name(f"{base}.partial{k}")
        ctx.add("Add", [acc, x], [out], name=base if last else f"{base}.add{k}")
        acc = out
