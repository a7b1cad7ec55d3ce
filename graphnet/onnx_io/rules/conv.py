"""ONNX export/import rules of the conv family.

Export: Conv and ConvTranspose map 1:1 with explicit, complete attributes. WSConv, which ONNX
lacks, becomes ReduceMean / Sub / Mul / ReduceMean / Add / Sqrt / Div computing the standardized
kernel from W, then a Conv (ReduceMean takes `axes` as an input from opset 18, an attribute before).

Import (opsets 1..22 share the same attributes for both ops: Conv-1/11/22, ConvTranspose-1/11/22):
`auto_pad` and ConvTranspose's `output_shape` become explicit `pads` (and `output_padding`), which
needs the input's static spatial shape; without it the node is kept opaque. The conventions are
those of ONNX opset 11's text, which onnxruntime implements for every opset:
- Conv SAME_*: out = ceil(in / s); total = max(0, (out-1)*s + d*(k-1)+1 - in); the odd pad goes
  at the end for SAME_UPPER, at the beginning for SAME_LOWER.
- ConvTranspose: total = s*(in-1) + output_padding + d*(k-1)+1 - out, with out = output_shape or
  in*s (SAME_*). SAME_UPPER puts the odd pad at the end, anything else at the beginning. (Opset 1's
  text swaps the two, contradicting its own auto_pad description; onnxruntime ignores that text.)
  A negative total means the output is longer than the computed one: onnxruntime appends
  bias-only positions at the end, which is exactly `output_padding`, so it is added there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.errors import AttributeValueError
from graphnet.onnx_io.rules.table import export_rule, import_rule
from graphnet.ops._shapes import same_pad

__all__ = ["conv_transpose_pads"]

_PASS_THROUGH = ("strides", "pads", "dilations", "group", "kernel_shape")


def _inputs(names: list[str]) -> list[str]:
    """Drop trailing omitted optional inputs (ONNX allows them, but they say nothing)."""
    names = list(names)
    while names and not names[-1]:
        names.pop()
    return names


# ------------------------------------------------------------------------------ export
@export_rule("Conv")
def _export_conv(ctx, node, attrs):
    ctx.emit(
        "Conv",
        _inputs(node.inputs),
        node.outputs,
        name=node.name,
        **{k: attrs.get(k) for k in _PASS_THROUGH},
    )


@export_rule("ConvTranspose")
def _export_conv_transpose(ctx, node, attrs):
    ins = _inputs(node.inputs)
    out_pad, pads, strides = attrs.get("output_padding"), attrs.get("pads"), attrs.get("strides")
    if out_pad is None or not any(out_pad):
        ctx.emit(
            "ConvTranspose",
            ins,
            node.outputs,
            name=node.name,
            **{k: attrs.get(k) for k in _PASS_THROUGH},
        )
        return
    # ONNX allows output_padding < stride *or* dilation; onnxruntime only < stride. Write the
    # same output in a form every runtime takes. Pads and output_padding only choose where the
    # output starts and ends along the full result, so output_padding may first cancel end pads.
    k = len(out_pad)
    ends = [p - min(p, o) for p, o in zip(pads[k:], out_pad, strict=True)]
    rest = [o - min(p, o) for p, o in zip(pads[k:], out_pad, strict=True)]
    fields = {key: attrs.get(key) for key in _PASS_THROUGH}
    if all(r < s for r, s in zip(rest, strides, strict=True)):
        fields["pads"] = tuple(pads[:k]) + tuple(ends)
        fields["output_padding"] = tuple(rest) if any(rest) else None
        ctx.emit("ConvTranspose", ins, node.outputs, name=node.name, **fields)
        return
    # Otherwise: the full, unpadded result, then one Pad whose negative amounts crop the pads and
    # whose positive ones add the zero (bias-only) positions, then the bias over all of it.
    fields["pads"] = (0,) * (2 * k)
    full = ctx.emit(
        "ConvTranspose", ins[:2], [ctx.fresh(f"{node.name}.full")], name=node.name, **fields
    )[0]
    amounts = (
        [0, 0]
        + [-p for p in pads[:k]]
        + [0, 0]
        + [o - p for p, o in zip(pads[k:], out_pad, strict=True)]
    )
    padded = node.outputs[0] if len(ins) < 3 else ctx.fresh(f"{node.name}.padded")
    ctx.emit(
        "Pad",
        [full, ctx.const(np.asarray(amounts, dtype=np.int64), f"{node.name}.pads")],
        [padded],
        name=ctx.fresh(f"{node.name}/pad"),
    )
    if len(ins) == 3:
        shape = ctx.const(np.asarray([-1] + [1] * k, dtype=np.int64), f"{node.name}.bias_shape")
        bias = ctx.emit(
            "Reshape",
            [ins[2], shape],
            [ctx.fresh(f"{node.name}.bias")],
            name=ctx.fresh(f"{node.name}/bias_reshape"),
        )[0]
        ctx.emit("Add", [padded, bias], node.outputs, name=ctx.fresh(f"{node.name}/bias"))


@export_rule("WSConv")
def _export_wsconv(ctx, node, attrs):
    x, w = node.inputs[0], node.inputs[1]
    wv = ctx.value(w)
    shape = wv.shape if wv.shape is not None else ctx.value(x).shape
    axes = list(range(1, len(shape)))  # every axis but the output map's
    dtype = np.dtype(wv.dtype)
    base = node.name

    def reduce_mean(src: str, hint: str) -> str:
        out = ctx.fresh(f"{base}.{hint}")
        if ctx.opset >= 18:
            ax = ctx.const(np.asarray(axes, dtype=np.int64), f"{base}.axes")
            ctx.emit("ReduceMean", [src, ax], [out], name=ctx.fresh(f"{base}/{hint}"), keepdims=1)
        else:
            ctx.emit(
                "ReduceMean", [src], [out], name=ctx.fresh(f"{base}/{hint}"), axes=axes, keepdims=1
            )
        return out

    def step(op: str, ins: list[str], hint: str) -> str:
        out = ctx.fresh(f"{base}.{hint}")
        ctx.emit(op, ins, [out], name=ctx.fresh(f"{base}/{hint}"))
        return out

    mean = reduce_mean(w, "w_mean")
    centered = step("Sub", [w, mean], "w_centered")
    square = step("Mul", [centered, centered], "w_sq")
    var = reduce_mean(square, "w_var")  # biased: a mean, not a sum / (n-1)
    eps = ctx.const(np.asarray(attrs["epsilon"], dtype=dtype), f"{base}.epsilon")
    std = step("Sqrt", [step("Add", [var, eps], "w_var_eps")], "w_std")
    w_hat = step("Div", [centered, std], "w_hat")
    ins = [x, w_hat] + _inputs(node.inputs[2:])
    ctx.emit("Conv", ins, node.outputs, name=node.name, **{k: attrs.get(k) for k in _PASS_THROUGH})


# ------------------------------------------------------------------------------ import
def conv_transpose_pads(
    size: int, kernel: int, stride: int, dilation: int, out_pad: int, target: int, upper: bool
) -> tuple[int, int, int]:
    """(pad_begin, pad_end, output_padding) giving a ConvTranspose output of length `target` along
    one axis (see the module docstring for the convention)."""
    total = stride * (size - 1) + out_pad + dilation * (kernel - 1) + 1 - target
    if total < 0:
        return 0, 0, out_pad - total
    begin = total // 2 if upper else total - total // 2
    return begin, total - begin, out_pad


def _static(shape: tuple | None, start: int) -> tuple[int, ...] | None:
    if shape is None or len(shape) <= start or not all(is_static(d) for d in shape[start:]):
        return None
    return tuple(int(d) for d in shape[start:])


@import_rule("Conv", "ConvTranspose")
def _import_conv(ctx, node):
    a: dict[str, Any] = ctx.attrs(node)
    transpose = node.op_type == "ConvTranspose"
    known = {"auto_pad", *_PASS_THROUGH} | (
        {"output_padding", "output_shape"} if transpose else set()
    )
    if set(a) - known:
        return ctx.opaque(node)
    auto_pad = a.pop("auto_pad", "NOTSET") or "NOTSET"
    output_shape = a.pop("output_shape", None)
    ins = _inputs(node.input)
    xv = ctx.graph.values.get(ins[0])
    wv = ctx.graph.values.get(ins[1])
    attrs = {key: (tuple(int(v) for v in a[key]) if key != "group" else int(a[key])) for key in a}
    if auto_pad == "VALID":
        attrs.pop("pads", None)  # VALID means no padding whatever `pads` says
    elif auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER"):
        return ctx.opaque(node)
    elif auto_pad != "NOTSET" or output_shape:
        spatial = _static(xv.shape if xv is not None else None, 2)
        kernel = attrs.get("kernel_shape") or _static(wv.shape if wv is not None else None, 2)
        if spatial is None or kernel is None:
            return ctx.opaque(node)  # the pads depend on sizes we do not know
        k = len(spatial)
        if any(
            len(attrs.get(key, (0,) * k)) != k
            for key in ("kernel_shape", "strides", "dilations", "output_padding")
        ):
            # malformed: let the op table's check say which attribute has the wrong length
            return ctx.add(node.op_type, ins, list(node.output), attrs, name=node.name or None)
        # The op table fills the defaults (strides, dilations 1, output_padding 0 per axis).
        try:
            full = ops.resolve_attrs(node.op_type, [xv, wv], attrs)
        except AttributeValueError:  # let the op table's check name the attribute, on the node
            return ctx.add(node.op_type, ins, list(node.output), attrs, name=node.name or None)
        strides, dilations = full["strides"], full["dilations"]
        upper = auto_pad == "SAME_UPPER"
        if not transpose:
            pairs = [
                same_pad(spatial[i], kernel[i], strides[i], dilations[i], upper) for i in range(k)
            ]
        else:
            out_pad = full["output_padding"]
            if output_shape:
                if len(output_shape) != k:  # spatial dims only, says the spec: do not guess
                    return ctx.opaque(node)
                target = tuple(int(v) for v in output_shape)
            else:
                target = tuple(spatial[i] * strides[i] for i in range(k))
            triples = [
                conv_transpose_pads(
                    spatial[i], kernel[i], strides[i], dilations[i], out_pad[i], target[i], upper
                )
                for i in range(k)
            ]
            pairs = [t[:2] for t in triples]
            attrs["output_padding"] = tuple(t[2] for t in triples)
        attrs["pads"] = tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
    ctx.add(node.op_type, ins, list(node.output), attrs, name=node.name or None)
