"""Single-node cases for the gradient checks, a few per op of the op table: odd sizes, strides,
asymmetric padding, dilation, groups, 1-D and 3-D, broadcasting, both modes of the mode-dependent
ops. Inputs are float64 and drawn away from the kinks (ReLU's 0, ties of a max) by more than the
finite-difference step, so the central differences are well-conditioned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphnet.ir import Graph
from graphnet.runtime.gradients import get_gradient

__all__ = ["Case", "CASES", "build_case"]


@dataclass
class Case:
    """`inputs`: float arrays become float64 graph inputs (checked), everything else (integer
    shapes, the running statistics, exponents, bounds) a parameter; None an omitted input."""

    op: str
    id: str
    inputs: list[Any]
    attrs: dict = field(default_factory=dict)
    training: bool = True
    constant: tuple[int, ...] = ()  # float input slots kept as parameters (not checked)


_rng = np.random.default_rng(1234)


def r(*shape: int) -> np.ndarray:
    """Standard normal float64."""
    return _rng.standard_normal(shape)


def away(*shape: int, low: float = 0.1) -> np.ndarray:
    """Random signs, magnitudes in [low, 1.1): never within `low` of zero (ReLU's kink)."""
    return _rng.choice([-1.0, 1.0], size=shape) * _rng.uniform(low, low + 1.0, size=shape)


def distinct(*shape: int) -> np.ndarray:
    """A shuffled grid: every pair of values differs by at least 0.05 (max/argmax never ties)."""
    n = int(np.prod(shape))
    return _rng.permutation(np.arange(n) * 0.05 - n * 0.025).reshape(shape)


def positive(*shape: int) -> np.ndarray:
    return _rng.uniform(0.5, 2.0, size=shape)


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _conv_cases() -> list[Case]:
    c = []
    c.append(
        Case("Conv", "2d-pad1-bias", [r(2, 3, 5, 5), r(4, 3, 3, 3), r(4)], {"pads": (1, 1, 1, 1)})
    )
    c.append(
        Case(
            "Conv",
            "2d-stride2-asympad-dil2",
            [r(1, 2, 7, 6), r(3, 2, 2, 3)],
            {"strides": (2, 2), "pads": (0, 1, 1, 0), "dilations": (2, 1)},
        )
    )
    c.append(
        Case(
            "Conv",
            "2d-group2-stride21",
            [r(1, 4, 5, 6), r(6, 2, 3, 3), r(6)],
            {"group": 2, "strides": (2, 1)},
        )
    )
    c.append(
        Case(
            "Conv",
            "2d-depthwise",
            [r(2, 3, 4, 4), r(3, 1, 3, 3)],
            {"group": 3, "pads": (1, 1, 1, 1)},
        )
    )
    c.append(
        Case(
            "Conv",
            "1d-stride3-dil2",
            [r(2, 2, 10), r(3, 2, 3), r(3)],
            {"strides": (3,), "pads": (2, 1), "dilations": (2,)},
        )
    )
    c.append(
        Case(
            "Conv",
            "3d-stride-pad",
            [r(1, 2, 4, 5, 3), r(2, 2, 2, 3, 2)],
            {"strides": (1, 2, 1), "pads": (1, 0, 1, 0, 1, 0)},
        )
    )
    c.append(
        Case(
            "ConvTranspose",
            "2d-stride2-pad1-outpad1",
            [r(1, 3, 3, 4), r(3, 2, 3, 3), r(2)],
            {"strides": (2, 2), "pads": (1, 1, 1, 1), "output_padding": (1, 1)},
        )
    )
    c.append(
        Case(
            "ConvTranspose",
            "2d-group2-dil2-stride3",
            [r(2, 4, 3, 2), r(4, 1, 2, 2)],
            {"group": 2, "dilations": (2, 1), "strides": (3, 2), "pads": (0, 1, 1, 0)},
        )
    )
    c.append(Case("ConvTranspose", "1d-stride2", [r(2, 2, 5), r(2, 3, 3), r(3)], {"strides": (2,)}))
    c.append(
        Case(
            "ConvTranspose",
            "3d",
            [r(1, 2, 2, 3, 2), r(2, 2, 2, 2, 2)],
            {"strides": (2, 1, 2), "pads": (0, 1, 0, 1, 0, 0)},
        )
    )
    c.append(
        Case(
            "WSConv",
            "2d-bias-pad",
            [r(2, 3, 5, 4), r(4, 3, 3, 2), r(4)],
            {"pads": (1, 0, 1, 1), "epsilon": 1e-3},
        )
    )
    c.append(
        Case(
            "WSConv",
            "2d-group-stride",
            [r(1, 4, 6, 6), r(4, 2, 3, 3)],
            {"group": 2, "strides": (2, 2)},
        )
    )
    c.append(Case("WSConv", "1d", [r(2, 2, 7), r(3, 2, 3)], {"dilations": (2,)}))
    return c


def _pool_cases() -> list[Case]:
    c = []
    c.append(
        Case(
            "MaxPool",
            "2d-k3-s2-pad1",
            [distinct(2, 2, 5, 6)],
            {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)},
        )
    )
    c.append(
        Case(
            "MaxPool",
            "2d-overlap-ceil",
            [distinct(1, 2, 6, 5)],
            {"kernel_shape": (3, 2), "strides": (2, 2), "ceil_mode": 1},
        )
    )
    c.append(
        Case(
            "MaxPool",
            "2d-dilation",
            [distinct(1, 1, 7, 7)],
            {"kernel_shape": (2, 2), "dilations": (2, 3), "pads": (0, 1, 1, 0)},
        )
    )
    c.append(Case("MaxPool", "1d", [distinct(2, 3, 9)], {"kernel_shape": (3,), "strides": (2,)}))
    c.append(
        Case(
            "MaxPool",
            "3d",
            [distinct(1, 2, 4, 3, 5)],
            {"kernel_shape": (2, 2, 3), "strides": (2, 1, 2), "pads": (0, 1, 1, 0, 0, 1)},
        )
    )
    c.append(
        Case(
            "AveragePool",
            "2d-pad-exclude",
            [r(2, 2, 5, 6)],
            {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)},
        )
    )
    c.append(
        Case(
            "AveragePool",
            "2d-pad-include-ceil",
            [r(1, 2, 6, 5)],
            {
                "kernel_shape": (3, 2),
                "strides": (2, 2),
                "pads": (1, 0, 0, 1),
                "ceil_mode": 1,
                "count_include_pad": 1,
            },
        )
    )
    c.append(
        Case(
            "AveragePool",
            "2d-dilation",
            [r(1, 1, 7, 6)],
            {"kernel_shape": (2, 2), "dilations": (2, 2)},
        )
    )
    c.append(
        Case(
            "AveragePool",
            "1d",
            [r(2, 3, 9)],
            {"kernel_shape": (4,), "strides": (3,), "pads": (1, 2)},
        )
    )
    c.append(
        Case(
            "AveragePool",
            "3d",
            [r(1, 2, 4, 3, 5)],
            {"kernel_shape": (2, 2, 2), "strides": (1, 2, 2), "ceil_mode": 1},
        )
    )
    c.append(Case("GlobalAveragePool", "2d", [r(2, 3, 4, 5)]))
    c.append(Case("GlobalAveragePool", "1d", [r(2, 3, 7)]))
    c.append(Case("GlobalMaxPool", "2d", [distinct(2, 3, 4, 5)]))
    c.append(Case("GlobalMaxPool", "3d", [distinct(1, 2, 2, 3, 2)]))
    return c


def _activation_cases() -> list[Case]:
    c = []
    for op in ("Relu", "Sigmoid", "Tanh"):
        c.append(Case(op, "4d", [away(2, 3, 4, 5)]))
    c.append(Case("LeakyRelu", "alpha0.1", [away(3, 7)], {"alpha": 0.1}))
    c.append(Case("Elu", "alpha1.5", [away(2, 3, 5)], {"alpha": 1.5}))
    c.append(Case("PRelu", "per-channel", [away(2, 3, 4, 4), away(3, 1, 1)]))
    c.append(Case("PRelu", "shared", [away(2, 3, 5), away(1)]))
    c.append(Case("Softmax", "axis-1", [r(4, 10)], {"axis": -1}))
    c.append(Case("Softmax", "axis1-4d", [r(2, 5, 3, 2)], {"axis": 1}))
    c.append(Case("LogSoftmax", "axis-1", [r(4, 10)], {"axis": -1}))
    c.append(Case("LogSoftmax", "axis0", [r(3, 4)], {"axis": 0}))
    for scheme in ("inverted", "classic"):
        for training in (True, False):
            mode = "train" if training else "inference"
            c.append(
                Case(
                    "Dropout",
                    f"{scheme}-{mode}",
                    [r(4, 6, 3)],
                    {"drop_prob": 0.3, "scheme": scheme},
                    training,
                )
            )
    return c


def _linear_cases() -> list[Case]:
    c = []
    c.append(Case("Gemm", "transB-bias", [r(4, 5), r(3, 5), r(3)], {"transB": 1}))
    c.append(
        Case(
            "Gemm",
            "transA-alpha-beta-colbias",
            [r(5, 4), r(5, 3), r(4, 1)],
            {"transA": 1, "alpha": 0.5, "beta": 2.0},
        )
    )
    c.append(
        Case(
            "Gemm",
            "both-trans-fullC",
            [r(5, 4), r(3, 5), r(4, 3)],
            {"transA": 1, "transB": 1, "beta": -1.5},
        )
    )
    c.append(Case("Gemm", "no-bias", [r(2, 6), r(6, 3)]))
    c.append(Case("MatMul", "2d", [r(4, 5), r(5, 3)]))
    c.append(Case("MatMul", "batched-broadcast", [r(2, 1, 3, 4), r(5, 4, 2)]))
    c.append(Case("MatMul", "1d-left", [r(4), r(2, 4, 3)]))
    c.append(Case("MatMul", "1d-right", [r(2, 3, 4), r(4)]))
    c.append(Case("Maxout", "pieces3-bias", [distinct(4, 5), r(3, 6, 5), r(3, 6)], {"pieces": 3}))
    c.append(Case("Maxout", "pieces2", [distinct(3, 4), r(2, 2, 4)], {"pieces": 2}))
    return c


def _shape_cases() -> list[Case]:
    c = []
    c.append(Case("Reshape", "minus1", [r(2, 3, 4), i64(4, -1)]))
    c.append(Case("Transpose", "perm", [r(2, 3, 4)], {"perm": (1, 2, 0)}))
    c.append(Case("Transpose", "reverse", [r(2, 3, 4)]))
    c.append(Case("Squeeze", "axes", [r(2, 1, 3, 1), i64(1, -1)]))
    c.append(Case("Unsqueeze", "axes", [r(2, 3), i64(0, 3)]))
    c.append(Case("Gather", "axis0-repeats", [r(4, 3), i64(0, 2, 2, -1)], {"axis": 0}))
    c.append(
        Case(
            "Gather",
            "axis1-2d-indices",
            [r(2, 5, 3), np.array([[1, 1], [4, 0]], np.int64)],
            {"axis": 1},
        )
    )
    c.append(
        Case("Slice", "steps-negative", [r(5, 6, 4), i64(4, 1), i64(0, 6), i64(0, 1), i64(-2, 2)])
    )
    c.append(
        Case(
            "Pad",
            "constant-crop",
            [r(2, 3, 4), i64(0, 1, -1, 0, 2, 1), np.array(0.5)],
            {"mode": "constant"},
        )
    )
    for mode in ("reflect", "edge", "wrap"):
        c.append(Case("Pad", mode, [r(2, 4, 5), i64(0, 2, 1, 0, 1, 3)], {"mode": mode}))
    c.append(Case("Expand", "broadcast", [r(3, 1), i64(2, 3, 4)]))
    return c


def _math_cases() -> list[Case]:
    c = []
    c.append(Case("Mul", "broadcast", [r(2, 3, 4), r(3, 1)]))
    c.append(Case("Sub", "broadcast", [r(3, 1), r(2, 3, 4)]))
    c.append(Case("Div", "broadcast", [r(2, 3, 4), positive(4)]))
    c.append(
        Case("Max", "three-broadcast", [distinct(2, 3), distinct(3) + 0.01, distinct(2, 1) + 0.02])
    )
    c.append(Case("Min", "two", [distinct(3, 4), distinct(3, 4) + 0.01]))
    c.append(Case("Neg", "x", [r(3, 4)]))
    c.append(Case("Sqrt", "x", [positive(3, 4)]))
    c.append(Case("Exp", "x", [r(3, 4)]))
    c.append(Case("Log", "x", [positive(3, 4)]))
    c.append(Case("Reciprocal", "x", [away(3, 4, low=0.5)]))
    c.append(Case("Pow", "const-exponent", [positive(3, 4), np.array(2.5)], constant=(1,)))
    c.append(Case("Identity", "x", [r(3, 4)]))
    c.append(
        Case(
            "Clip",
            "min-max",
            [away(4, 5, low=0.05) * 2, np.array(-0.8), np.array(0.9)],
            constant=(1, 2),
        )
    )
    c.append(Case("Clip", "min-only", [away(4, 5), np.array(0.0)], constant=(1,)))
    c.append(Case("ReduceMean", "axes-keep", [r(2, 3, 4), i64(1, 2)], {"keepdims": 1}))
    c.append(Case("ReduceMean", "all-drop", [r(2, 3, 4)], {"keepdims": 0}))
    c.append(Case("ReduceSum", "axes-drop", [r(2, 3, 4), i64(0, -1)], {"keepdims": 0}))
    c.append(Case("ReduceMax", "axis-keep", [distinct(2, 3, 4), i64(2)], {"keepdims": 1}))
    c.append(Case("ReduceMax", "all-drop", [distinct(3, 4)], {"keepdims": 0}))
    c.append(Case("Cast", "float64", [r(3, 4)], {"to": "float64"}))
    return c


def _norm_cases() -> list[Case]:
    c = []

    def bn(x: np.ndarray, training: bool, name: str) -> Case:
        ch = x.shape[1]
        stats = [_rng.standard_normal(ch), _rng.uniform(0.5, 2.0, ch)]
        return Case(
            "BatchNormalization",
            name,
            [x, positive(ch), r(ch)] + stats,
            {"epsilon": 1e-3, "momentum": 0.9},
            training,
        )

    c.append(bn(r(4, 3, 3, 2), True, "train-4d"))
    c.append(bn(r(5, 4), True, "train-2d"))
    c.append(bn(r(2, 2, 3, 2, 2), True, "train-5d"))
    c.append(bn(r(3, 3, 4), False, "inference-3d"))
    c.append(
        Case(
            "LayerNormalization",
            "axis1-affine",
            [r(2, 3, 4), positive(3, 4), r(3, 4)],
            {"axis": 1, "epsilon": 1e-3},
        )
    )
    c.append(
        Case("LayerNormalization", "axis-1-vector", [r(3, 2, 5), positive(5), r(5)], {"axis": -1})
    )
    c.append(Case("LayerNormalization", "no-affine", [r(2, 6)], {"axis": 1}))
    c.append(
        Case(
            "GroupNormalization",
            "2groups",
            [r(2, 4, 3, 2), positive(4), r(4)],
            {"num_groups": 2, "epsilon": 1e-3},
        )
    )
    c.append(
        Case("GroupNormalization", "1group-1d", [r(2, 3, 5), positive(3), r(3)], {"num_groups": 1})
    )
    c.append(
        Case(
            "InstanceNormalization",
            "affine-2d",
            [r(2, 3, 3, 4), positive(3), r(3)],
            {"epsilon": 1e-3},
        )
    )
    c.append(Case("InstanceNormalization", "3d", [r(1, 2, 2, 3, 2), positive(2), r(2)]))
    c.append(
        Case("LRN", "size3", [r(2, 5, 3, 2)], {"size": 3, "alpha": 0.1, "beta": 0.75, "bias": 1.0})
    )
    c.append(
        Case("LRN", "size4-even", [r(1, 6, 4)], {"size": 4, "alpha": 0.2, "beta": 0.5, "bias": 2.0})
    )
    return c


def _tensor_cases() -> list[Case]:
    return [
        Case("Add", "broadcast", [r(2, 3, 4), r(3, 1)]),
        Case("Add", "same", [r(3, 4), r(3, 4)]),
        Case("Concat", "axis1-three", [r(2, 1, 3), r(2, 4, 3), r(2, 2, 3)], {"axis": 1}),
        Case("Concat", "axis-1", [r(2, 3), r(2, 2)], {"axis": -1}),
        Case("Flatten", "axis2", [r(2, 3, 4, 5)], {"axis": 2}),
    ]


CASES: list[Case] = (
    _conv_cases()
    + _pool_cases()
    + _activation_cases()
    + _linear_cases()
    + _shape_cases()
    + _math_cases()
    + _norm_cases()
    + _tensor_cases()
)


def build_case(
    case: Case, dtype: str = "float64"
) -> tuple[Graph, dict[str, np.ndarray], list[str]]:
    """A one-node graph; the checked float inputs are graph inputs, the rest parameters. With
    `dtype` float32, every float64 array of the case is cast to it."""
    g = Graph(f"{case.op}-{case.id}")
    names, feeds, checked = [], {}, []
    rule = get_gradient(case.op)
    for k, a in enumerate(case.inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{k}"
        a = np.asarray(a)
        if a.dtype == np.float64:
            a = a.astype(dtype)
        is_checked = a.dtype.kind == "f" and k not in case.constant and k not in rule.nondiff
        if is_checked:
            g.add_input(name, a.shape, dtype)
            feeds[name] = a
            checked.append(name)
        else:
            g.add_param(name, a)
        names.append(name)
    node = g.add_node(case.op, names, case.attrs, name="node")
    g.mark_output(node.outputs[0])
    return g, feeds, checked
