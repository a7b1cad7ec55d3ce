"""ONNX export/import rules of the pooling family.

Export writes the resolved attributes as they are (opset 17+). Import reads every opset from 7:

| op          | since | what changed                                                        |
|-------------|-------|---------------------------------------------------------------------|
| MaxPool     | 8     | storage_order and the optional Indices output                       |
| MaxPool     | 10    | ceil_mode, dilations                                                |
| MaxPool     | 11/12 | pads semantics clarified; int8/uint8 (12) — nothing to map          |
| AveragePool | 7     | count_include_pad (default 0)                                       |
| AveragePool | 10    | ceil_mode                                                           |
| AveragePool | 19    | dilations                                                           |

An attribute absent at a node's opset takes its ONNX default, which is ours too. `auto_pad`
becomes explicit pads when the input's spatial shape is known. Kept opaque (written back as
read): a MaxPool asking for its Indices output; SAME padding on a dynamic spatial shape; SAME
padding with dilations (onnxruntime sizes that padding with the undilated kernel, against the
spec, so no explicit pads match both); forms the op table refuses (pads >= kernel, windows that
see only padding, ranks other than 3-5).
"""

from __future__ import annotations

from typing import Any

from graphnet.errors import AttributeValueError, ShapeError, UnsupportedOpError
from graphnet.onnx_io.registry import export_rule, import_rule
from graphnet.ops.pooling import SPATIAL_RANKS, check_pool_attrs, same_pads

__all__: list[str] = []

_WINDOW_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")


# ----------------------------------------------------------------------------- export
@export_rule("MaxPool")
def _export_max_pool(ctx, node, attrs):
    ctx.emit(
        "MaxPool", node.inputs, node.outputs, name=node.name,
        **{k: attrs[k] for k in _WINDOW_ATTRS},
        # storage_order is always 0 (the only value the op table accepts), ONNX's default.
    )


@export_rule("AveragePool")
def _export_average_pool(ctx, node, attrs):
    out = {k: attrs[k] for k in _WINDOW_ATTRS}
    if ctx.opset < 19:
        # AveragePool gained dilations in opset 19; before that only the undilated form exists.
        if any(d != 1 for d in attrs["dilations"]):
            raise UnsupportedOpError(
                f"node '{node.name}' (AveragePool): dilations {list(attrs['dilations'])} need opset 19 "
                f"or newer, exporting opset {ctx.opset}"
            )
        out.pop("dilations")
    ctx.emit("AveragePool", node.inputs, node.outputs, name=node.name,
             count_include_pad=attrs["count_include_pad"], **out)


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
    attrs["ceil_mode"] = int(a.get("ceil_mode", 0))
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
        strides = attrs.get("strides", (1,) * k)
        dilations = attrs.get("dilations", (1,) * k)
        if any(d != 1 for d in dilations):
            return None
        x = ctx.graph.values.get(node.input[0])
        spatial = None if x is None or x.shape is None or len(x.shape) != 2 + k else x.shape[2:]
        if spatial is None or any(d is None for d in spatial):
            return None  # the pads depend on the spatial size, which is not known here
        attrs["pads"] = same_pads(spatial, attrs["kernel_shape"], strides, dilations, lower=auto_pad == "SAME_LOWER")
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
    # The Indices output (opset 8+) is out of scope; storage_order only affects Indices, so a
    # node without them maps exactly whatever its storage_order.
    wants_indices = len(node.output) > 1 and bool(node.output[1])
    attrs = None if wants_indices else _window_attrs(ctx, node, ())
    if attrs is None or not _mappable(ctx, node, "MaxPool", attrs):
        ctx.opaque(node)
        return
    ctx.add("MaxPool", node.input[:1], node.output[:1], attrs, name=node.name or None)


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
