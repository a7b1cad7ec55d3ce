"""PyTorch eager as a benchmark engine: a small interpreter of our IR onto
`torch.nn.functional`, for the ops of the benchmark suite and the usual CNN layers.

PyTorch is optional (never a dependency): `torch_engine` returns None with a note when it is not
installed or when the graph has an op this converter does not map (the note names it). The
engine runs inference, eager, under `torch.no_grad()` with `torch.set_num_threads(threads)`, on
the same input arrays (`torch.from_numpy`, no copy) and the same weights (converted once) as
every other engine; its outputs are compared with onnxruntime's like any engine's, which is what
proves the conversion right.

ONNX semantics the conversion keeps (where PyTorch's defaults differ): asymmetric pads become an
explicit `F.pad` (zeros for Conv, -inf for MaxPool); Gemm's alpha, beta and transposes; Flatten
to 2-D at `axis`; Reshape's 0 (copy the dim) and -1; PRelu's slope broadcast from the right;
LayerNormalization over the axes from `axis` on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.errors import UnsupportedOpError
from graphnet.ir import Graph, Node

__all__ = ["torch_engine", "TorchProgram"]


def _pads(attrs: dict, k: int) -> tuple[list[int], list[int]]:
    pads = list(attrs.get("pads") or [0] * (2 * k))
    return pads[:k], pads[k:]


def _torch_pad(begins: list[int], ends: list[int]) -> list[int]:
    """ONNX (begins, ends) per spatial axis -> F.pad's order: last axis first, (begin, end)."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [b, e]
    return out


class TorchProgram:
    """The graph as a list of PyTorch closures over a value table; `run(feeds)` -> outputs."""

    def __init__(self, graph: Graph) -> None:
        import torch

        self.torch = torch
        self.graph = graph
        self.params = {k: torch.from_numpy(np.array(v)) for k, v in graph.params.items()}
        self.steps: list[tuple[Callable, list[str], list[str]]] = []
        for node in graph.nodes:
            values = [graph.values.get(i) if i else None for i in node.inputs]
            attrs = ops.attrs_of(node, values)
            fn = self._convert(node, attrs)
            self.steps.append((fn, list(node.inputs), [o for o in node.outputs if o]))

    def _convert(self, node: Node, a: dict) -> Callable:
        torch = self.torch
        F = torch.nn.functional
        op = node.op
        rank = len(self.graph.values[node.inputs[0]].shape or ()) if node.inputs else 0
        k = max(rank - 2, 0)
        if op == "Conv":
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(k)
            if conv is None:
                raise UnsupportedOpError(f"PyTorch engine: Conv of rank {rank} at '{node.name}'")
            begins, ends = _pads(a, k)
            sym = begins == ends
            pad = _torch_pad(begins, ends)
            kw = dict(
                stride=tuple(a["strides"]),
                dilation=tuple(a["dilations"]),
                groups=int(a["group"]),
                padding=tuple(begins) if sym else 0,
            )

            def run_conv(x, w, b=None):
                if not sym:
                    x = F.pad(x, pad)
                return conv(x, w, b, **kw)

            return run_conv
        if op == "MaxPool" and len(node.outputs) == 1:
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[k]
            begins, ends = _pads(a, k)
            ks = tuple(a["kernel_shape"])
            sym = begins == ends and all(2 * p <= kk for p, kk in zip(begins, ks, strict=True))
            pad = _torch_pad(begins, ends)
            kw = dict(
                kernel_size=ks,
                stride=tuple(a["strides"]),
                dilation=tuple(a["dilations"]),
                ceil_mode=bool(a["ceil_mode"]),
                padding=tuple(begins) if sym else 0,
            )
            if not sym and a["ceil_mode"]:
                raise UnsupportedOpError(
                    f"PyTorch engine: MaxPool '{node.name}' with asymmetric pads and ceil_mode"
                )

            def run_maxpool(x):
                if not sym:
                    x = F.pad(x, pad, value=-math.inf)
                return pool(x, **kw)

            return run_maxpool
        if op == "AveragePool":
            pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[k]
            begins, ends = _pads(a, k)
            ks = tuple(a["kernel_shape"])
            if begins != ends or any(2 * p > kk for p, kk in zip(begins, ks, strict=True)):
                raise UnsupportedOpError(
                    f"PyTorch engine: AveragePool '{node.name}' with asymmetric or large pads"
                )
            if any(d != 1 for d in a["dilations"]):
                raise UnsupportedOpError(f"PyTorch engine: dilated AveragePool '{node.name}'")
            kw = dict(
                kernel_size=ks,
                stride=tuple(a["strides"]),
                padding=tuple(begins),
                ceil_mode=bool(a["ceil_mode"]),
                count_include_pad=bool(a["count_include_pad"]),
            )
            return lambda x: pool(x, **kw)
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            dims = tuple(range(2, rank))
            if op == "GlobalAveragePool":
                return lambda x: x.mean(dim=dims, keepdim=True)
            return lambda x: x.amax(dim=dims, keepdim=True)
        if op == "Gemm":
            alpha, beta = float(a["alpha"]), float(a["beta"])
            ta, tb = bool(a["transA"]), bool(a["transB"])

            def run_gemm(x, w, c=None):
                x = x.t() if ta else x
                if tb and alpha == 1.0 and beta == 1.0 and (c is None or c.dim() == 1):
                    return F.linear(x, w, c)
                y = x @ (w.t() if tb else w)
                if alpha != 1.0:
                    y = y * alpha
                return y if c is None else y + beta * c

            return run_gemm
        if op == "MatMul":
            return torch.matmul
        simple: dict[str, Callable] = {
            "Relu": F.relu,
            "Sigmoid": torch.sigmoid,
            "Tanh": torch.tanh,
            "Add": torch.add,
            "Sub": torch.sub,
            "Mul": torch.mul,
            "Div": torch.div,
            "Identity": lambda x: x,
        }
        if op in simple:
            return simple[op]
        if op == "LeakyRelu":
            return lambda x: F.leaky_relu(x, float(a["alpha"]))
        if op == "Elu":
            return lambda x: F.elu(x, float(a["alpha"]))
        if op == "PRelu":
            return lambda x, slope: torch.where(x >= 0, x, x * slope)
        if op in ("Softmax", "LogSoftmax"):
            fn = F.softmax if op == "Softmax" else F.log_softmax
            axis = int(a["axis"])
            return lambda x: fn(x, dim=axis)
        if op == "Flatten":
            axis = int(a["axis"]) % max(rank, 1) if rank else int(a["axis"])
            return lambda x: x.reshape(math.prod(x.shape[:axis]), -1)
        if op == "Reshape":
            allowzero = bool(a["allowzero"])

            def run_reshape(x, shape):
                dims = [int(d) for d in shape.tolist()]
                if not allowzero:
                    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
                return x.reshape(dims)

            return run_reshape
        if op == "Concat":
            axis = int(a["axis"])
            return lambda *xs: torch.cat(xs, dim=axis)
        if op == "Dropout" and len(node.outputs) == 1:
            if a["scheme"] == "inverted":
                return lambda x, *_: x
            keep = 1.0 - float(a["drop_prob"])
            return lambda x, *_: x * keep
        if op == "BatchNormalization" and len(node.outputs) == 1:
            eps = float(a["epsilon"])
            return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, eps)
        if op == "InstanceNormalization":
            eps = float(a["epsilon"])
            return lambda x, s=None, b=None: F.instance_norm(x, weight=s, bias=b, eps=eps)
        if op == "GroupNormalization":
            groups, eps = int(a["num_groups"]), float(a["epsilon"])
            return lambda x, s=None, b=None: F.group_norm(x, groups, s, b, eps)
        if op == "LayerNormalization" and len(node.outputs) == 1:
            axis, eps = int(a["axis"]) % rank, float(a["epsilon"])

            def run_layernorm(x, s=None, b=None):
                shape = tuple(x.shape[axis:])
                s = None if s is None else s.expand(shape)
                b = None if b is None else b.expand(shape)
                return F.layer_norm(x, shape, s, b, eps)

            return run_layernorm
        raise UnsupportedOpError(f"PyTorch engine: no conversion for op '{op}' at '{node.name}'")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        env: dict[str, Any] = dict(self.params)
        for name in self.graph.inputs:
            env[name] = torch.from_numpy(feeds[name])
        with torch.no_grad():
            for fn, inputs, outputs in self.steps:
                y = fn(*[env[i] if i else None for i in inputs])
                env[outputs[0]] = y
        return {o: env[o].numpy() for o in self.graph.outputs}


def torch_engine(
    graph: Graph, feeds: Mapping[str, np.ndarray], *, threads: int
) -> tuple[Callable[[], dict] | None, str]:
    """(a zero-argument run function, note), or (None, why not) when PyTorch is not installed or
    the graph has an op the converter does not map."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch not installed"
    torch.set_num_threads(threads)
    try:
        program = TorchProgram(graph)
    except UnsupportedOpError as exc:
        return None, str(exc)
    wanted = {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in graph.inputs}
    return (lambda: program.run(wanted)), f"PyTorch {torch.__version__}, eager, {threads} threads"
