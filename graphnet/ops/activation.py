"""Activations: element-wise non-linearities, PRelu (whose slope is a parameter), Softmax,
LogSoftmax and Dropout.

Conventions (they are the IR's, and close to ONNX's so that export and import are 1:1):

- `PRelu(X, slope)`: `slope` broadcasts to X unidirectionally, NumPy-style from the RIGHT, exactly
  as in ONNX. A slope shared by every element has shape (1,); a per-channel slope of a rank-r
  NC... input has shape (C, 1, ..., 1) (r - 1 dims). A plain (C,) slope on an NCHW input would
  broadcast along W, which is the classic export bug; `infer` rejects it with a hint unless W == C.
- `Softmax` / `LogSoftmax`: opset-13 semantics, normalized along the single axis `axis`.
- `Dropout`: `drop_prob` is the DROP probability (ONNX `ratio`, PyTorch `p`, Keras `rate`); the
  KEEP probability is `1 - drop_prob` (docs/formulas.md, "Dropout"). `scheme` is "inverted"
  (train: x*mask/keep, inference: x) or "classic" (train: x*mask, inference: x*keep).
  `drop_prob` lies in [0, 1): at 1 every unit is dropped, the inverted scale 1/keep is undefined
  and ONNX forbids ratio = 1.
  Two optional inputs, named and placed as in ONNX (opset 12+), exist only for imported models
  that compute them at run time (e.g. graph inputs): `ratio` (a scalar) replaces `drop_prob`, and
  `training_mode` (a scalar bool) replaces the mode the graph runs in, for this node only. A
  constant ratio or training_mode is imported as the attribute / the run-time mode instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import broadcasts_to, elementwise, need_float, required
from graphnet.ops.spec import OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["DROPOUT_SCHEMES"]

DROPOUT_SCHEMES = ("inverted", "classic")


def _real(attrs: dict, key: str) -> float:
    """The attribute `key` as a float, or AttributeValueError (a bool or a string is not a
    number)."""
    v = attrs[key]
    if isinstance(v, bool) or not isinstance(v, Real):
        raise AttributeValueError(f"{key} must be a real number, got {v!r}")
    return float(v)


def _alpha_elementwise(inputs: Sequence[Value | None], attrs: dict) -> list:
    _real(attrs, "alpha")
    return elementwise(inputs, attrs)


def _prelu(inputs: Sequence[Value | None], attrs: dict) -> list:
    x, slope = required(inputs[0]), required(inputs[1])
    need_float(x, "input")
    if slope.dtype != x.dtype:
        raise ShapeError(f"slope '{slope.name}' is {slope.dtype} but X '{x.name}' is {x.dtype}")
    if x.shape is None or slope.shape is None:
        return [(x.shape, x.dtype)]
    xs, ss = tuple(x.shape), tuple(slope.shape)
    # Unidirectional broadcasting: the output keeps X's shape, so every slope dim (right-aligned)
    # is 1 or equals X's; a dynamic dim on either side is accepted (the runtime checks it).
    ok = broadcasts_to(ss, xs)
    if not ok:
        hint = ""
        if len(xs) >= 3 and len(ss) == 1 and ss[0] == xs[1]:
            hint = (
                f"; a per-channel slope of a rank-{len(xs)} input has shape "
                f"{format_shape((xs[1],) + (1,) * (len(xs) - 2))} (slopes broadcast from the right)"
            )
        raise ShapeError(
            f"slope '{slope.name}'{format_shape(ss)} does not broadcast to X '{x.name}'"
            f"{format_shape(xs)}{hint}"
        )
    return [(x.shape, x.dtype)]


def _softmax(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    need_float(x, "input")
    axis = attrs["axis"]
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise AttributeValueError(f"axis must be an int, got {axis!r}")
    if x.shape is not None:
        r = len(x.shape)
        if not -r <= axis < r:
            raise AttributeValueError(
                f"axis {axis} is out of range for input "
                f"'{x.name}'{format_shape(x.shape)} of rank {r}"
            )
    return [(x.shape, x.dtype)]


def _scalar_input(v: Value | None, what: str, dtypes: tuple[str, ...]) -> None:
    if v is None:
        return
    if v.dtype not in dtypes:
        raise ShapeError(f"{what} '{v.name}' must be {' or '.join(dtypes)}, got {v.dtype}")
    if v.shape is not None and any(d != 1 for d in v.shape):
        raise ShapeError(f"{what} '{v.name}' must be a scalar, got shape {format_shape(v.shape)}")


def _dropout(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    need_float(x, "input")
    _scalar_input(
        inputs[1] if len(inputs) > 1 else None, "ratio", ("float16", "float32", "float64")
    )
    _scalar_input(inputs[2] if len(inputs) > 2 else None, "training_mode", ("bool",))
    p = _real(attrs, "drop_prob")
    if not 0.0 <= p < 1.0:
        raise AttributeValueError(
            f"drop_prob (the DROP probability) must be in [0, 1), got {attrs['drop_prob']!r}"
        )
    if attrs["scheme"] not in DROPOUT_SCHEMES:
        raise AttributeValueError(
            f"scheme must be one of {DROPOUT_SCHEMES}, got {attrs['scheme']!r}"
        )
    return [(x.shape, x.dtype), (x.shape, "bool")]


def _elementwise_spec(name: str, doc: str, attrs: dict[str, Any] | None = None) -> OpSpec:
    infer = _alpha_elementwise if attrs else elementwise
    return OpSpec(name, doc, ("X",), infer, attrs=attrs or {}, family="activation")


register(_elementwise_spec("Relu", "max(0, x), element-wise."))
register(
    _elementwise_spec("Sigmoid", "1 / (1 + exp(-x)), element-wise (computed without overflow).")
)
register(_elementwise_spec("Tanh", "tanh(x) = 2 * sigmoid(2x) - 1, element-wise."))
register(
    _elementwise_spec("LeakyRelu", "x if x >= 0 else alpha * x, element-wise.", {"alpha": 0.01})
)
register(
    _elementwise_spec("Elu", "x if x >= 0 else alpha * (exp(x) - 1), element-wise.", {"alpha": 1.0})
)
register(
    OpSpec(
        "PRelu",
        "x if x >= 0 else slope * x; slope broadcasts to X from the right "
        "(per channel: (C,1,...,1)).",
        ("X", "slope"),
        _prelu,
        family="activation",
    )
)
register(
    OpSpec(
        "Softmax",
        "exp(x - max) / sum(exp(x - max)) along one axis (ONNX opset-13 semantics).",
        ("X",),
        _softmax,
        attrs={"axis": -1},
        family="activation",
    )
)
register(
    OpSpec(
        "LogSoftmax",
        "x - max - log(sum(exp(x - max))) along one axis (ONNX opset-13 semantics).",
        ("X",),
        _softmax,
        attrs={"axis": -1},
        family="activation",
    )
)
register(
    OpSpec(
        "Dropout",
        "Zero each unit with probability drop_prob in training (scheme inverted: scale by 1/keep; "
        "classic: scale by keep at inference); optional bool `mask` output; optional run-time "
        "`ratio` / `training_mode` inputs (ONNX's) override drop_prob / the run mode.",
        ("X", "ratio?", "training_mode?"),
        _dropout,
        outputs=("Y", "mask?"),
        attrs={"drop_prob": 0.5, "scheme": "inverted"},
        mode_dependent=True,
        family="activation",
    )
)
