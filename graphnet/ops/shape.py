"""Shape ops: the reshaping, indexing and padding ops that imported ONNX models use.

Attributes follow the newest ONNX form: what later opsets moved from attributes to inputs (axes,
starts/ends, pads, the shape of Reshape) is an INPUT here; import rules turn an older opset's
attribute into a constant parameter. Shape inference reads the values of constant inputs (`consts`)
and degrades gracefully: a symbolic dim stays an expression where the op's arithmetic allows
(graphnet.dims), else unknown (`None`), and an output whose shape depends on a non-constant input
(a shape computed at run time by Shape -> Gather -> Concat) is `None`, or a tuple of `None`s when
only its rank is known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import required
from graphnet.ops.spec import OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["norm_axes", "INDEX_DTYPES", "reshape_shape", "slice_bounds", "ALL_DTYPES"]

INDEX_DTYPES = ("int32", "int64")
ALL_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


def norm_axes(axes: Sequence[int], rank: int, what: str, *, unique: bool = True) -> tuple[int, ...]:
    """Axes in [-rank, rank-1] made non-negative; `AttributeValueError` naming `what` otherwise."""
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise AttributeValueError(f"{what} {a} is out of range for rank {rank}")
        out.append(a % rank if rank else a)
    if unique and len(set(out)) != len(out):
        raise AttributeValueError(f"{what} {list(map(int, axes))} repeat an axis")
    return tuple(out)


def _ints(arr: np.ndarray | None) -> list[int] | None:
    return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]


def _need_index(v: Value | None, what: str) -> None:
    if v is not None and v.dtype not in INDEX_DTYPES:
        raise ShapeError(f"{what} '{v.name}' must be int32 or int64, got {v.dtype}")


def _need_1d(v: Value | None, what: str) -> None:
    if v is not None and v.shape is not None and len(v.shape) != 1:
        raise ShapeError(f"{what} '{v.name}' must be 1-D, got {format_shape(v.shape)}")


def _length(v: Value | None) -> int | None:
    """Static length of a 1-D input (None if unknown)."""
    if v is None or v.shape is None or len(v.shape) != 1 or not dims.is_static(v.shape[0]):
        return None
    return int(v.shape[0])


# --------------------------------------------------------------------------- Reshape
def reshape_shape(in_shape: Sequence[Dim], target: Sequence[int], allowzero: int) -> tuple:
    """Output shape of Reshape(in_shape -> target): 0 copies the input dim (unless `allowzero`),
    one -1 takes what is left: total / rest as an expression when the input is symbolic
    ((N,4,3) -> [0, -1] gives (N, 12), (N,4,3) -> [-1, 3] gives (4*N, 3)), unknown when that
    division is not exact or a dim is unknown."""
    if sum(1 for t in target if t == -1) > 1:
        raise ShapeError(f"shape {list(target)} has more than one -1")
    if any(t < -1 for t in target):
        raise ShapeError(f"shape {list(target)} has a dim below -1")
    if allowzero and 0 in target and -1 in target:
        raise ShapeError(f"shape {list(target)} has both 0 and -1 with allowzero=1")
    out: list[Dim] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(
                    f"shape {list(target)} copies dim {i} (0) but the input has rank "
                    f"{len(in_shape)}"
                )
            out.append(in_shape[i])
        else:
            out.append(t)
    total = dims.prod(in_shape)
    k = out.index(-1) if -1 in out else None
    rest = dims.prod([d for j, d in enumerate(out) if j != k])
    if k is not None:
        if rest == 0:
            raise ShapeError(f"shape {list(target)}: -1 is ambiguous next to a zero dim")
        if dims.is_static(total) and dims.is_static(rest) and total % rest:
            raise ShapeError(
                f"cannot reshape {format_shape(tuple(in_shape))} to {list(target)}: "
                f"{total} elements do not split into parts of {rest}"
            )
        out[k] = dims.exact_div(total, rest)
    elif dims.differ(total, rest):
        raise ShapeError(
            f"cannot reshape {format_shape(tuple(in_shape))} ({total} elements) to "
            f"{format_shape(tuple(out))} ({rest} elements)"
        )
    return tuple(out)


def _reshape(inputs, attrs, consts):
    x, s = required(inputs[0]), required(inputs[1])
    _need_index(s, "shape")
    _need_1d(s, "shape")
    if attrs["allowzero"] not in (0, 1):
        raise AttributeValueError(f"allowzero must be 0 or 1, got {attrs['allowzero']}")
    target = _ints(consts[1])
    if target is None:  # a shape computed at run time: only its length is known, if that
        n = _length(s)
        return [(None if n is None else (None,) * n, x.dtype)]
    if x.shape is None:
        if attrs["allowzero"] or 0 not in target:
            return [(tuple(None if t == -1 else t for t in target), x.dtype)]
        return [(None, x.dtype)]
    return [(reshape_shape(x.shape, target, attrs["allowzero"]), x.dtype)]


register(
    OpSpec(
        "Reshape",
        "x viewed with a new shape (0 copies a dim unless allowzero, -1 infers one).",
        ("data", "shape"),
        _reshape,
        attrs={"allowzero": 0},
        consts=True,
        family="shape",
    )
)


# ------------------------------------------------------------------------- Transpose
def _resolve_transpose(inputs, attrs):
    x = inputs[0]
    if attrs["perm"] is None:
        if x is not None and x.shape is not None:
            attrs["perm"] = tuple(reversed(range(len(x.shape))))
    else:
        attrs["perm"] = tuple(int(p) for p in attrs["perm"])
    return attrs


def _transpose(inputs, attrs):
    x = required(inputs[0])
    if x.shape is None:
        return [(None, x.dtype)]
    perm = attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise AttributeValueError(
            f"perm {list(perm)} is not a permutation of the axes of a rank-{len(x.shape)} input"
        )
    return [(tuple(x.shape[p] for p in perm), x.dtype)]


register(
    OpSpec(
        "Transpose",
        "Axes permuted by perm (default: reversed).",
        ("data",),
        _transpose,
        attrs={"perm": None},
        resolve=_resolve_transpose,
        family="shape",
    )
)


# ---------------------------------------------------------------- Squeeze, Unsqueeze
def _squeeze(inputs, attrs, consts):
    x = required(inputs[0])
    a = inputs[1] if len(inputs) > 1 else None
    _need_index(a, "axes")
    _need_1d(a, "axes")
    if x.shape is None:
        return [(None, x.dtype)]
    axes: Sequence[int] | None = _ints(consts[1]) if a is not None else None
    if a is not None and axes is None:
        n = _length(a)
        return [(None if n is None else (None,) * (len(x.shape) - n), x.dtype)]
    if axes is None:
        if not all(dims.is_static(d) for d in x.shape):  # a dynamic dim may be 1 at run time
            return [(None, x.dtype)]
        return [(tuple(d for d in x.shape if d != 1), x.dtype)]
    axes = norm_axes(axes, len(x.shape), "axis")
    for ax in axes:
        if dims.differ(x.shape[ax], 1):
            raise ShapeError(f"cannot squeeze axis {ax} of size {x.shape[ax]} (not 1)")
    return [(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)]


def _unsqueeze(inputs, attrs, consts):
    x, a = required(inputs[0]), required(inputs[1])
    _need_index(a, "axes")
    _need_1d(a, "axes")
    axes: Sequence[int] | None = _ints(consts[1])
    if x.shape is None:
        return [(None, x.dtype)]
    if axes is None:
        n = _length(a)
        return [(None if n is None else (None,) * (len(x.shape) + n), x.dtype)]
    rank = len(x.shape) + len(axes)
    axes = norm_axes(axes, rank, "axis")
    rest = iter(x.shape)
    return [(tuple(1 if i in axes else next(rest) for i in range(rank)), x.dtype)]


register(
    OpSpec(
        "Squeeze",
        "Drop the listed size-1 axes (all size-1 axes without axes).",
        ("data", "axes?"),
        _squeeze,
        consts=True,
        family="shape",
    )
)
register(
    OpSpec(
        "Unsqueeze",
        "Insert size-1 axes at the listed positions of the output.",
        ("data", "axes"),
        _unsqueeze,
        consts=True,
        family="shape",
    )
)


# ----------------------------------------------------------------------------- Shape
def _shape(inputs, attrs):
    x = required(inputs[0])
    if x.shape is None:
        return [((None,), "int64")]
    r = len(x.shape)
    start, end = attrs["start"], r if attrs["end"] is None else attrs["end"]
    return [((len(range(r)[start:end]),), "int64")]


register(
    OpSpec(
        "Shape",
        "The input's shape as an int64 vector (dims start..end).",
        ("data",),
        _shape,
        attrs={"start": 0, "end": None},
        family="shape",
    )
)


# ---------------------------------------------------------------------------- Gather
def _gather(inputs, attrs):
    x, idx = required(inputs[0]), required(inputs[1])
    _need_index(idx, "indices")
    if x.shape is None:
        return [(None, x.dtype)]
    if not x.shape:
        raise ShapeError(f"cannot gather from a scalar '{x.name}'")
    (axis,) = norm_axes([attrs["axis"]], len(x.shape), "axis")
    if idx.shape is None:
        return [(None, x.dtype)]
    return [(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1 :]), x.dtype)]


register(
    OpSpec(
        "Gather",
        "Entries of data at indices along axis (negative indices count from the end).",
        ("data", "indices"),
        _gather,
        attrs={"axis": 0},
        family="shape",
    )
)


# ----------------------------------------------------------------------------- Slice
def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int | None, int]:
    """ONNX's Slice bounds on one axis as a Python slice: negatives count from the end, then
    start is clamped to [0, dim] (step > 0) or [0, dim-1] (step < 0) and end to [0, dim] or
    [-1, dim-1]; an end of -1 with a negative step means "through index 0" (Python's None)."""
    if step == 0:
        raise AttributeValueError("slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        return start, end, step
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return start, (None if end < 0 else end), step


def _slice(inputs, attrs, consts):
    x, starts_v, ends_v = inputs[:3]
    axes_v = inputs[3] if len(inputs) > 3 else None
    steps_v = inputs[4] if len(inputs) > 4 else None
    for v, what in ((starts_v, "starts"), (ends_v, "ends"), (axes_v, "axes"), (steps_v, "steps")):
        _need_index(v, what)
        _need_1d(v, what)
    if x.shape is None:
        return [(None, x.dtype)]
    r = len(x.shape)
    starts, ends = _ints(consts[1]), _ints(consts[2])
    axes: Sequence[int] | None = (
        _ints(consts[3]) if len(consts) > 3 and axes_v is not None else None
    )
    steps = _ints(consts[4]) if len(consts) > 4 and steps_v is not None else None
    if axes_v is not None and axes is None:  # run-time axes: any axis may shrink
        return [((None,) * r, x.dtype)]
    n = len(starts) if starts is not None else len(ends) if ends is not None else _length(starts_v)
    axes = list(range(n)) if axes is None and n is not None else axes
    if axes is None:
        return [((None,) * r, x.dtype)]
    axes = norm_axes(axes, r, "axis")
    for vals, what in ((starts, "starts"), (ends, "ends"), (steps, "steps")):
        if vals is not None and len(vals) != len(axes):
            raise ShapeError(f"{what} has {len(vals)} entries but axes has {len(axes)}")
    if steps is not None and 0 in steps:
        raise AttributeValueError(f"steps {steps} contain a 0")
    out = list(x.shape)
    for k, ax in enumerate(axes):
        if starts is None or ends is None:
            out[ax] = None
            continue
        if not dims.is_static(out[ax]):
            # The whole of a dynamic axis keeps it; any other slice of it is unknown here.
            whole = starts[k] == 0 and ends[k] >= 2**31 - 1 and (steps is None or steps[k] == 1)
            out[ax] = out[ax] if whole else None
            continue
        step = 1 if steps is None else steps[k]
        out[ax] = len(range(out[ax])[slice(*slice_bounds(out[ax], starts[k], ends[k], step))])
    return [(tuple(out), x.dtype)]


register(
    OpSpec(
        "Slice",
        "x[starts:ends:steps] on the listed axes (ONNX clamping of out-of-range bounds).",
        ("data", "starts", "ends", "axes?", "steps?"),
        _slice,
        consts=True,
        family="shape",
    )
)


# ------------------------------------------------------------------------------- Pad
PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(inputs, attrs, consts):
    x, p = required(inputs[0]), required(inputs[1])
    cv = inputs[2] if len(inputs) > 2 else None
    axes_v = inputs[3] if len(inputs) > 3 else None
    if attrs["mode"] not in PAD_MODES:
        raise AttributeValueError(f"mode must be one of {PAD_MODES}, got {attrs['mode']!r}")
    if p.dtype != "int64":
        raise ShapeError(f"pads '{p.name}' must be int64, got {p.dtype}")
    _need_1d(p, "pads")
    _need_index(axes_v, "axes")
    if cv is not None:
        if cv.dtype != x.dtype:
            raise ShapeError(f"constant_value '{cv.name}' is {cv.dtype} but the input is {x.dtype}")
        if cv.shape is not None and dims.differ(dims.prod(cv.shape), 1):
            raise ShapeError(
                f"constant_value '{cv.name}' must hold one value, got {format_shape(cv.shape)}"
            )
    if x.shape is None:
        return [(None, x.dtype)]
    r = len(x.shape)
    pads = _ints(consts[1])
    axes: Sequence[int] | None
    if axes_v is not None:
        axes = _ints(consts[3])
        if axes is None:
            return [((None,) * r, x.dtype)]
        axes = norm_axes(axes, r, "axis")
    else:
        axes = tuple(range(r))
    if pads is None:
        return [(tuple(None if i in axes else d for i, d in enumerate(x.shape)), x.dtype)]
    if len(pads) != 2 * len(axes):
        raise ShapeError(
            f"pads has {len(pads)} entries; {2 * len(axes)} expected for {len(axes)} axes"
        )
    out = list(x.shape)
    mode = attrs["mode"]
    for k, ax in enumerate(axes):
        begin, end = pads[k], pads[k + len(axes)]
        if not dims.is_static(out[ax]):  # a symbolic size grows (or shrinks) by the pads
            out[ax] = dims.add(out[ax], begin + end)
            continue
        kept = out[ax] - max(-begin, 0) - max(-end, 0)  # negative pads crop first
        if kept < 0:
            raise ShapeError(f"pads {pads} crop axis {ax} of size {x.shape[ax]} below zero")
        grow = max(begin, 0, end)
        # reflect and edge read from what is kept: reflect needs a pad below its size, the
        # other non-constant modes need something to read (onnxruntime rejects both otherwise).
        if mode == "reflect" and grow and grow >= kept:
            raise ShapeError(
                f"reflect pads {pads} must be smaller than axis {ax} of size {kept} after cropping"
            )
        if mode != "constant" and kept == 0:
            raise ShapeError(
                f"{mode} pads {pads} leave nothing of axis {ax} of size {x.shape[ax]} to pad from"
            )
        out[ax] = kept + max(begin, 0) + max(end, 0)
    return [(tuple(out), x.dtype)]


register(
    OpSpec(
        "Pad",
        "x padded (or cropped, pads < 0) on the listed axes; modes constant/reflect/edge/wrap.",
        ("data", "pads", "constant_value?", "axes?"),
        _pad,
        attrs={"mode": "constant"},
        consts=True,
        family="shape",
    )
)


# ------------------------------------------------------------ ConstantOfShape, Expand
def _resolve_cos(inputs, attrs):
    v = attrs["value"]
    # A fresh array per node: a shared mutable default could be changed through one node.
    v = np.zeros(1, np.float32) if v is None else np.asarray(v)
    if v.size != 1:
        raise AttributeValueError(f"value must hold one element, got shape {format_shape(v.shape)}")
    attrs["value"] = v.reshape(1)
    return attrs


def _constant_of_shape(inputs, attrs, consts):
    s = required(inputs[0])
    if s.dtype != "int64":
        raise ShapeError(f"shape '{s.name}' must be int64, got {s.dtype}")
    _need_1d(s, "shape")
    dtype = str(attrs["value"].dtype)
    target = _ints(consts[0])
    if target is None:
        n = _length(s)
        return [(None if n is None else (None,) * n, dtype)]
    if any(d < 0 for d in target):
        raise ShapeError(f"shape {target} has a negative dim")
    return [(tuple(target), dtype)]


def _expand(inputs, attrs, consts):
    from graphnet.ops._shapes import broadcast, required

    x, s = required(inputs[0]), required(inputs[1])
    if s.dtype != "int64":
        raise ShapeError(f"shape '{s.name}' must be int64, got {s.dtype}")
    _need_1d(s, "shape")
    given = _ints(consts[1])
    if x.shape is None:
        return [(None, x.dtype)]
    if given is None:
        n = _length(s)
        if n is None:
            return [(None, x.dtype)]
        target: list[Dim] = [None] * n
    else:
        target = list(given)
    return [(broadcast(x.shape, target), x.dtype)]


register(
    OpSpec(
        "ConstantOfShape",
        "A tensor of the given shape filled with value (a 1-element tensor).",
        ("input",),
        _constant_of_shape,
        attrs={"value": None},
        resolve=_resolve_cos,
        consts=True,
        family="shape",
    )
)
register(
    OpSpec(
        "Expand",
        "x broadcast against shape (ONNX bidirectional broadcasting).",
        ("input", "shape"),
        _expand,
        consts=True,
        family="shape",
    )
)
