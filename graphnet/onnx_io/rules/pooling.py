"""ONNX export/import rules of the pooling family.

Export writes the resolved attributes (opset 17+), except a ceil_mode window the spec drops,
which is written in an equivalent floor form (see `_floor_form`). Import reads every opset from 7:

| op          | since | what changed                                                        |
|-------------|-------|---------------------------------------------------------------------|
| MaxPool     | 8     | storage_order and the optional Indices output (both mapped)         |
| MaxPool     | 10    | ceil_mode, dilations                                                |
| MaxPool     | 11/12 | pads semantics clarified; int8/uint8 (12) — nothing to map          |
| AveragePool | 7     | count_include_pad (default 0)                                       |
| AveragePool | 10    | ceil_mode                                                           |
| AveragePool | 19    | dilations                                                           |

An attribute absent at a node's opset takes its ONNX default, which is ours too. `auto_pad`
becomes explicit pads when the input's spatial shape is known. Kept opaque (written back as
read): SAME padding on a dynamic spatial shape; SAME
padding with dilations (onnxruntime sizes that padding with the undilated kernel, against the
spec, so no explicit pads match both); forms the op table refuses (pads >= kernel, windows that
see only padding, ranks other than 3-5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError, UnsupportedOpError
from graphnet.onnx_io.rules.table import export_rule, import_rule
from graphnet.ops._shapes import same_pads, window_out_size
from graphnet.ops.pooling import SPATIAL_RANKS, check_pool_attrs

__all__: list[str] = []

_WINDOW_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")


# ----------------------------------------------------------------------------- export
def _floor_form(
    ctx, node, attrs: dict[str, Any], include_pad: bool
) -> tuple[tuple[int, ...], bool] | None:
    """An equivalent ceil_mode=0 form of a ceil_mode=1 pool whose last window would start in the
    end padding, as (pads, pad_first); None when the node can be written as it is (or must be).

    Why: the spec, onnxruntime and PyTorch drop such a window, but onnx's shape inference (1.23)
    still counts it, so `onnx.checker` (full_check) and every tool built on that inference would
    see the wrong output shape. The floor form has the same windows and the same divisors:
    end pads become r = (out - 1) * stride + extent - size - pad_begin, just what the last window
    reads. Padding never wins a max nor counts with count_include_pad=0, so growing or trimming it
    is exact; with count_include_pad=1, trimming padding no window reads is exact, and growing it
    is not, so then the explicit padding is written as a Pad node (pad_first) and the pool reads
    it as real zeros (count_include_pad=0), which counts exactly the taps on the explicit padding.
    """
    x = ctx.value(node.inputs[0])
    spatial = x.shape[2:] if x.shape is not None else (None,)
    if not attrs["ceil_mode"] or any(n is None for n in spatial):
        return None  # dynamic sizes: shape inference cannot disagree on a dimension it cannot know
    ks, st, dl, pads = attrs["kernel_shape"], attrs["strides"], attrs["dilations"], attrs["pads"]
    k = len(ks)
    ext = [d * (kk - 1) + 1 for kk, d in zip(ks, dl, strict=True)]
    out = [
        window_out_size(n, kk, s, d, pads[i], pads[k + i], ceil=True)
        for i, (n, kk, s, d) in enumerate(zip(spatial, ks, st, dl, strict=True))
    ]
    undropped = [
        -(-(n + pads[i] + pads[k + i] - e) // s) + 1
        for i, (n, e, s) in enumerate(zip(spatial, ext, st, strict=True))
    ]
    if out == undropped:
        return None
    reach = [
        max(0, (o - 1) * s + e - n - pads[i])
        for i, (o, s, e, n) in enumerate(zip(out, st, ext, spatial, strict=True))
    ]
    pad_first = include_pad and any(r > pads[k + i] for i, r in enumerate(reach))
    if pad_first:  # pool the padded input; the windows only reach past its end
        new = (0,) * k + tuple(max(0, r - pads[k + i]) for i, r in enumerate(reach))
    else:
        new = tuple(pads[:k]) + tuple(reach)
    if any(p >= kk for p, kk in zip(new[:k] + new[k:], ks + ks, strict=True)):
        return None  # onnxruntime refuses pads >= kernel; keep the literal form
    return new, pad_first


def _emit_pool(
    ctx, node, attrs: dict[str, Any], op: str, *, dilations: bool = True, **extra: Any
) -> None:
    """Write the pool (in its floor form when `_floor_form` finds one); without `dilations` the
    attribute is left out (all ones: AveragePool before opset 19)."""
    out = {k: attrs[k] for k in _WINDOW_ATTRS if dilations or k != "dilations"}
    include_pad = bool(extra.get("count_include_pad", 0))
    form = _floor_form(ctx, node, attrs, include_pad)
    x = node.inputs[0]
    if form is not None:
        out["pads"], pad_first = form
        out["ceil_mode"] = 0
        if pad_first:
            k = len(attrs["kernel_shape"])
            pb, pe = attrs["pads"][:k], attrs["pads"][k:]
            onnx_pads = np.array((0, 0) + tuple(pb) + (0, 0) + tuple(pe), dtype=np.int64)
            padded = ctx.fresh(f"{node.name}.padded")
            ctx.emit(
                "Pad",
                [x, ctx.const(onnx_pads, f"{node.name}.pads")],
                [padded],
                name=ctx.fresh(f"{node.name}.pad"),
                mode="constant",
            )
            x, extra = padded, dict(extra, count_include_pad=0)
    ctx.emit(op, [x], node.outputs, name=node.name, **out, **extra)


@export_rule("MaxPool")
def _export_max_pool(ctx, node, attrs):
    # storage_order (only meaningful with Indices) is written when it is not ONNX's default 0.
    # The floor form of a ceil_mode pool keeps pad_begin, so Indices are unchanged by it.
    extra = {"storage_order": 1} if attrs["storage_order"] and len(node.outputs) > 1 else {}
    _emit_pool(ctx, node, attrs, "MaxPool", **extra)


@export_rule("AveragePool")
def _export_average_pool(ctx, node, attrs):
    if ctx.opset < 19 and any(d != 1 for d in attrs["dilations"]):
        # AveragePool gained dilations in opset 19; before that only the undilated form exists.
        raise UnsupportedOpError(
            f"node '{node.name}' (AveragePool): dilations {list(attrs['dilations'])} need opset 19 "
            f"or newer, exporting opset {ctx.opset}"
        )
    _emit_pool(
        ctx,
        node,
        attrs,
        "AveragePool",
        dilations=ctx.opset >= 19,
        count_include_pad=attrs["count_include_pad"],
    )


@export_rule("GlobalAveragePool")
def _export_global_average_pool(ctx, node, attrs):
    ctx.emit("GlobalAveragePool", node.inputs, node.outputs, name=node.name)


@export_rule("GlobalMaxPool")
def _export_global_max_pool(ctx, node, attrs):
    ctx.emit("GlobalMaxPool", node.inputs, node.outputs, name=node.name)


# ----------------------------------------------------------------------------- import
def _window_attrs(ctx, node, extra: tuple[str, ...]) -> dict[str, Any] | None:
    """The IR attributes of an ONNX MaxPool/AveragePool, or None if the node must stay opaque."""
    a = ctx.attrs(node)
    if "kernel_shape" not in a:
        return None  # required by every version; a node without it is not ours to interpret
    k = len(a["kernel_shape"])
    if k not in SPATIAL_RANKS:
        return None
    attrs: dict[str, Any] = {"kernel_shape": tuple(a["kernel_shape"])}
    for key in ("strides", "dilations"):
        if key in a:
            attrs[key] = tuple(a[key])
    if "ceil_mode" in a:  # absent: the op table's default (0, ONNX's too)
        attrs["ceil_mode"] = int(a["ceil_mode"])
    for key in extra:
        if key in a:
            attrs[key] = int(a[key])
    auto_pad = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad == "NOTSET":
        if "pads" in a:
            attrs["pads"] = tuple(a["pads"])
    elif auto_pad == "VALID":
        attrs["pads"] = (0,) * (2 * k)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        from graphnet import ops

        try:  # the op table fills the defaults (strides and dilations 1 per axis)
            full = ops.resolve_attrs(node.op_type, [None], attrs)
        except (AttributeValueError, ShapeError):
            return None
        strides, dilations = full["strides"], full["dilations"]
        if any(d != 1 for d in dilations):
            return None
        x = ctx.graph.values.get(node.input[0])
        spatial = None if x is None or x.shape is None or len(x.shape) != 2 + k else x.shape[2:]
        if spatial is None or not all(is_static(d) for d in spatial):
            return None  # the pads depend on the spatial size, which is not known here
        attrs["pads"] = same_pads(
            spatial, attrs["kernel_shape"], strides, dilations, upper=auto_pad != "SAME_LOWER"
        )
    else:
        return None
    return attrs


def _mappable(ctx, node, op: str, attrs: dict[str, Any]) -> bool:
    """Whether the op table accepts these attributes (and, if the input shape is known, that
    shape): forms it refuses stay opaque instead of failing the whole import."""
    from graphnet import ops

    spec = ops.get(op)
    full = dict(spec.attrs)
    full.update(attrs)
    try:
        full = spec.resolve([None], full)
        x = ctx.graph.values.get(node.input[0])
        if x is not None and x.shape is not None:
            check_pool_attrs(x.shape, full)
    except (ShapeError, AttributeValueError):
        return False
    return True


@import_rule("MaxPool")
def _import_max_pool(ctx, node):
    # storage_order only affects the Indices output (opset 8+): kept only for a node that has it.
    wants_indices = len(node.output) > 1 and bool(node.output[1])
    attrs = _window_attrs(ctx, node, ("storage_order",) if wants_indices else ())
    if attrs is None or not _mappable(ctx, node, "MaxPool", attrs):
        ctx.opaque(node)
        return
    ctx.add(
        "MaxPool",
        node.input[:1],
        node.output[: 2 if wants_indices else 1],
        attrs,
        name=node.name or None,
    )


@import_rule("AveragePool")
def _import_average_pool(ctx, node):
    attrs = _window_attrs(ctx, node, ("count_include_pad",))
    if attrs is None or not _mappable(ctx, node, "AveragePool", attrs):
        ctx.opaque(node)
        return
    ctx.add("AveragePool", node.input[:1], node.output[:1], attrs, name=node.name or None)


@import_rule("GlobalAveragePool")
def _import_global_average_pool(ctx, node):
    ctx.add("GlobalAveragePool", node.input, node.output, name=node.name or None)


@import_rule("GlobalMaxPool")
def _import_global_max_pool(ctx, node):
    ctx.add("GlobalMaxPool", node.input, node.output, name=node.name or None)
