"""Math ops: element-wise arithmetic with NumPy/ONNX broadcasting, Clip, reductions, Cast and
Identity, with ONNX's semantics (integer Div truncates toward zero, Pow keeps the base's dtype).

Reductions take `axes` as an optional INPUT (opset 18's form); an older opset's `axes` attribute is
turned into a constant parameter by the import rule. Shapes of unknown inputs propagate as `None`.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import FLOAT_DTYPES, broadcast, required
from graphnet.ops.shape import ALL_DTYPES, _ints, _need_1d, norm_axes
from graphnet.ops.spec import REQUIRED, OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["CAST_DTYPES", "ONNX_DTYPES", "reduce_shape"]

SIGNED_DTYPES = ("int8", "int16", "int32", "int64")
INT_DTYPES = SIGNED_DTYPES + ("uint8", "uint16", "uint32", "uint64")
NUMERIC_DTYPES = FLOAT_DTYPES + INT_DTYPES
CAST_DTYPES = ALL_DTYPES

# ONNX TensorProto.DataType numbers of the dtypes graphnet handles (stable across onnx versions);
# kept here so that `import graphnet` needs no onnx. Cast's `to` is held as a NumPy dtype name.
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


def _need_dtype(v: Value, allowed: Sequence[str], what: str) -> None:
    if v.dtype not in allowed:
        raise ShapeError(
            f"{what} '{v.name}' has dtype {v.dtype}; expected one of {', '.join(allowed)}"
        )


def _broadcast_all(values: Sequence[Value]) -> tuple | None:
    shape: tuple | None = None
    for v in values:
        if v.shape is None:
            return None
        shape = tuple(v.shape) if shape is None else broadcast(shape, v.shape)
    return shape


def _elementwise_n(allowed: Sequence[str]):
    """Infer rule of a broadcasting op whose inputs all share one dtype (Mul, Sub, Div, Max,
    Min)."""

    def infer(inputs, attrs):
        values = [v for v in inputs if v is not None]
        first = values[0]
        _need_dtype(first, allowed, "input")
        for v in values[1:]:
            if v.dtype != first.dtype:
                raise ShapeError(
                    f"dtypes differ: '{first.name}' is {first.dtype}, '{v.name}' is {v.dtype}"
                )
        return [(_broadcast_all(values), first.dtype)]

    return infer


def _unary(allowed: Sequence[str]):
    def infer(inputs, attrs):
        x = required(inputs[0])
        _need_dtype(x, allowed, "input")
        return [(x.shape, x.dtype)]

    return infer


def _pow(inputs, attrs):
    x, y = required(inputs[0]), required(inputs[1])
    # Since opset 12 the exponent may have another dtype; the result has the base's.
    _need_dtype(x, ("float16", "float32", "float64", "int32", "int64"), "base")
    _need_dtype(y, NUMERIC_DTYPES, "exponent")
    return [(_broadcast_all([x, y]), x.dtype)]


for _name, _doc in (
    ("Mul", "a * b"),
    ("Sub", "a - b"),
    ("Div", "a / b (integers: truncated toward zero)"),
):
    register(
        OpSpec(
            _name,
            f"{_doc}, element-wise with NumPy broadcasting.",
            ("A", "B"),
            _elementwise_n(NUMERIC_DTYPES),
            family="math",
        )
    )
for _name, _doc in (("Max", "Element-wise maximum"), ("Min", "Element-wise minimum")):
    register(
        OpSpec(
            _name,
            f"{_doc} of one or more inputs, with NumPy broadcasting.",
            ("*data",),
            _elementwise_n(NUMERIC_DTYPES),
            family="math",
        )
    )
register(
    OpSpec("Neg", "-x, element-wise.", ("X",), _unary(FLOAT_DTYPES + SIGNED_DTYPES), family="math")
)
for _name, _doc in (
    ("Sqrt", "sqrt(x)"),
    ("Exp", "exp(x)"),
    ("Log", "ln(x)"),
    ("Reciprocal", "1 / x"),
):
    register(OpSpec(_name, f"{_doc}, element-wise.", ("X",), _unary(FLOAT_DTYPES), family="math"))
register(
    OpSpec(
        "Pow",
        "x ** y with NumPy broadcasting; the result has x's dtype.",
        ("X", "Y"),
        _pow,
        family="math",
    )
)
register(
    OpSpec(
        "Identity",
        "y = x.",
        ("input",),
        lambda inputs, attrs: [(inputs[0].shape, inputs[0].dtype)],
        family="math",
    )
)


# ------------------------------------------------------------------------------ Clip
def _clip(inputs, attrs):
    x = required(inputs[0])
    _need_dtype(x, NUMERIC_DTYPES, "input")
    for v, what in zip(inputs[1:], ("min", "max"), strict=False):
        if v is None:
            continue
        if v.dtype != x.dtype:
            raise ShapeError(f"{what} '{v.name}' is {v.dtype} but the input is {x.dtype}")
        if v.shape is not None and v.shape not in ((), (1,)):
            raise ShapeError(f"{what} '{v.name}' must be a scalar, got {format_shape(v.shape)}")
    return [(x.shape, x.dtype)]


register(
    OpSpec(
        "Clip",
        "x limited to [min, max] (an omitted bound does not limit).",
        ("input", "min?", "max?"),
        _clip,
        family="math",
    )
)


# ------------------------------------------------------------------------ reductions
def reduce_shape(
    shape: Sequence[int | None],
    axes: Sequence[int] | None,
    keepdims: int,
    noop_with_empty_axes: int,
) -> tuple:
    """Output shape of a reduction over `axes` (None or empty: all axes, unless the no-op flag)."""
    rank = len(shape)
    if not axes:
        if noop_with_empty_axes:
            return tuple(shape)
        axes = range(rank)
    axes = norm_axes(axes, rank, "axis")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce(allowed: Sequence[str]):
    def infer(inputs, attrs, consts):
        x = required(inputs[0])
        a = inputs[1] if len(inputs) > 1 else None
        _need_dtype(x, allowed, "input")
        for key in ("keepdims", "noop_with_empty_axes"):
            if attrs[key] not in (0, 1):
                raise AttributeValueError(f"{key} must be 0 or 1, got {attrs[key]}")
        if a is not None:
            if a.dtype != "int64":
                raise ShapeError(f"axes '{a.name}' must be int64, got {a.dtype}")
            _need_1d(a, "axes")
        if x.shape is None:
            return [(None, x.dtype)]
        axes = _ints(consts[1]) if a is not None else None
        if a is not None and axes is None:  # axes computed at run time
            if attrs["keepdims"]:
                return [((None,) * len(x.shape), x.dtype)]
            return [(None, x.dtype)]
        return [
            (reduce_shape(x.shape, axes, attrs["keepdims"], attrs["noop_with_empty_axes"]), x.dtype)
        ]

    return infer


for _name, _doc, _allowed in (
    ("ReduceMean", "Mean", FLOAT_DTYPES + ("int32", "int64")),
    ("ReduceMax", "Maximum", NUMERIC_DTYPES + ("bool",)),  # bool since opset 20
    ("ReduceSum", "Sum", NUMERIC_DTYPES),
):
    register(
        OpSpec(
            _name,
            f"{_doc} over axes (all axes if none are given, unless noop_with_empty_axes).",
            ("data", "axes?"),
            _reduce(_allowed),
            attrs={"keepdims": 1, "noop_with_empty_axes": 0},
            consts=True,
            family="math",
        )
    )


# ------------------------------------------------------------------------------ Cast
def _resolve_cast(inputs, attrs):
    to = attrs["to"]
    if isinstance(to, int) and not isinstance(to, bool):
        if to not in ONNX_DTYPES:
            raise AttributeValueError(f"to={to} is not an ONNX data type graphnet supports")
        to = ONNX_DTYPES[to]
    attrs["to"] = str(to)
    if attrs["to"] not in CAST_DTYPES:
        raise AttributeValueError(f"to={attrs['to']!r} is not one of {', '.join(CAST_DTYPES)}")
    return attrs


def _cast(inputs, attrs):
    x = required(inputs[0])
    _need_dtype(x, CAST_DTYPES, "input")
    return [(x.shape, attrs["to"])]


register(
    OpSpec(
        "Cast",
        "x converted to dtype `to` (a NumPy dtype name; floats truncate toward zero).",
        ("input",),
        _cast,
        attrs={"to": REQUIRED},
        resolve=_resolve_cast,
        family="math",
    )
)

del _name, _doc, _allowed
