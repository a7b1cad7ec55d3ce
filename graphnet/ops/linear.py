"""Linear ops: `Gemm` (fully connected), `MatMul` (NumPy matmul) and `Maxout`.

- Gemm follows ONNX: Y = alpha * A' B' + beta * C, with A' = A^T if transA, B' = B^T if transB,
  A' of shape (M, K), B' of shape (K, N) and C (optional) broadcasting unidirectionally to (M, N).
  The DSL's `Linear` is a Gemm with transB=1 and W of shape (out, in), PyTorch's layout.
- MatMul follows ONNX (= `numpy.matmul`): 1-D operands are promoted and the promoted axis removed,
  leading (batch) axes broadcast.
- Maxout is the max over k affine pieces (docs/formulas.md):
  Y[n, o] = max_j (sum_i W[j, o, i] X[n, i] + B[j, o]), X (N, in), W (k, out, in), B (k, out).
  ONNX has no such op; it exports as Gemm -> Reshape -> ReduceMax.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import (
    broadcast,
    broadcasts_to,
    known_shape,
    need_float,
    need_rank,
    required,
)
from graphnet.ops.spec import REQUIRED, OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["gemm_shape", "matmul_shape", "maxout_shape"]


def _same_dtype(values: Sequence[Value | None]) -> str:
    """The common dtype of the given (non-omitted) values, or a ShapeError naming the odd one."""
    present = [v for v in values if v is not None]
    first = present[0]
    for v in present[1:]:
        if v.dtype != first.dtype:
            raise ShapeError(
                f"dtypes differ: '{first.name}' is {first.dtype}, '{v.name}' is {v.dtype}"
            )
    return first.dtype


def _prod(shape: Sequence[Dim]) -> int:
    # MACs are counted per example by the summary, which already replaced dynamic dims by 1;
    # treating a leftover dynamic dim as 1 keeps the rule total rather than raising.
    out = 1
    for d in shape:
        out *= int(d) if dims.is_static(d) else 1
    return out


# ------------------------------------------------------------------------------------------ Gemm
def _check_flag(attrs: dict, key: str) -> None:
    if attrs[key] not in (0, 1):
        raise AttributeValueError(f"{key} must be 0 or 1, got {attrs[key]!r}")


def gemm_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """(M, N) from A (M, K) or (K, M) and B (K, N) or (N, K); C must broadcast to (M, N)."""
    a, b = required(inputs[0]), required(inputs[1])
    c = inputs[2] if len(inputs) > 2 else None
    _check_flag(attrs, "transA")
    _check_flag(attrs, "transB")
    sa = need_rank(a, (2,), "A")
    sb = need_rank(b, (2,), "B")
    need_float(a, "A")
    dtype = _same_dtype([a, b, c])
    m, ka = (sa[1], sa[0]) if attrs["transA"] else sa
    kb, n = (sb[1], sb[0]) if attrs["transB"] else sb
    a_desc = f"A{format_shape(sa)}{' (transA=1)' if attrs['transA'] else ''}"
    b_desc = f"B{format_shape(sb)}{' (transB=1)' if attrs['transB'] else ''}"
    if dims.differ(ka, kb):
        raise ShapeError(f"{a_desc} has K={ka} but {b_desc} has K={kb}")
    if c is not None:
        if c.shape is None:
            raise ShapeError(f"C '{c.name}' has an unknown shape")
        # Unidirectional: C may be stretched to (M, N), never the other way round.
        if len(c.shape) > 2 or not broadcasts_to(c.shape, (m, n)):
            raise ShapeError(
                f"C{format_shape(c.shape)} does not broadcast to the output {format_shape((m, n))}"
            )
    return [((m, n), dtype)]


def _gemm_macs(inputs: Sequence[Value | None], outputs: Sequence[Value], attrs: dict) -> int:
    sa = known_shape(required(inputs[0]))
    k = sa[0] if attrs["transA"] else sa[1]
    return _prod(known_shape(outputs[0])) * _prod([k])


register(
    OpSpec(
        "Gemm",
        "Y = alpha * A' @ B' + beta * C (ONNX Gemm; A' = A^T if transA, B' = B^T if transB).",
        ("A", "B", "C?"),
        gemm_shape,
        attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
        macs=_gemm_macs,
        family="linear",
    )
)


# ---------------------------------------------------------------------------------------- MatMul
def matmul_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """numpy.matmul's shape rule over static, symbolic and unknown dims (graphnet.dims)."""
    a, b = required(inputs[0]), required(inputs[1])
    shape_a, shape_b = known_shape(a, "A"), known_shape(b, "B")
    for v, what in ((a, "A"), (b, "B")):
        if v.shape is not None and len(v.shape) == 0:
            raise ShapeError(f"{what} '{v.name}' is a scalar; MatMul needs rank >= 1")
    dtype = _same_dtype([a, b])
    sa = (1, *shape_a) if len(shape_a) == 1 else shape_a
    sb = (*shape_b, 1) if len(shape_b) == 1 else shape_b
    if dims.differ(sa[-1], sb[-2]):
        raise ShapeError(
            f"A{format_shape(a.shape)} has {sa[-1]} columns but B{format_shape(b.shape)} "
            f"has {sb[-2]} rows"
        )
    try:
        batch = broadcast(sa[:-2], sb[:-2])
    except ShapeError:
        raise ShapeError(
            f"batch dims of A{format_shape(a.shape)} and B{format_shape(b.shape)} do not broadcast"
        ) from None
    out = batch + (sa[-2], sb[-1])
    # A 1-D operand's promoted axis is removed again (numpy / ONNX semantics).
    if len(shape_b) == 1:
        out = out[:-1]
    if len(shape_a) == 1:
        out = out[:-2] + out[-1:] if len(shape_b) > 1 else out[:-1]
    return [(out, dtype)]


def _matmul_macs(inputs: Sequence[Value | None], outputs: Sequence[Value], attrs: dict) -> int:
    return _prod(known_shape(outputs[0])) * _prod([known_shape(required(inputs[0]))[-1]])


register(
    OpSpec(
        "MatMul",
        "numpy.matmul (ONNX MatMul): batched, broadcast leading axes, 1-D operands promoted.",
        ("A", "B"),
        matmul_shape,
        macs=_matmul_macs,
        family="linear",
    )
)


# ---------------------------------------------------------------------------------------- Maxout
def maxout_shape(inputs: Sequence[Value | None], attrs: dict) -> list:
    """(N, out) from X (N, in), W (k, out, in), B (k, out) with k = pieces."""
    x, w = required(inputs[0]), required(inputs[1])
    bias = inputs[2] if len(inputs) > 2 else None
    k = attrs["pieces"]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise AttributeValueError(f"pieces must be a positive int, got {k!r}")
    sx = need_rank(x, (2,), "X")
    sw = need_rank(w, (3,), "W")
    need_float(x, "X")
    dtype = _same_dtype([x, w, bias])
    if dims.differ(sw[0], int(k)):
        raise ShapeError(f"W{format_shape(sw)} holds {sw[0]} pieces but pieces={k}")
    if dims.differ(sx[1], sw[2]):
        raise ShapeError(
            f"W{format_shape(sw)} takes {sw[2]} inputs but X{format_shape(sx)} has {sx[1]}"
        )
    if bias is not None:
        sbias = need_rank(bias, (2,), "B")
        if any(dims.differ(db, dw) for db, dw in zip(sbias, (int(k), sw[1]), strict=True)):
            raise ShapeError(
                f"B{format_shape(sbias)} must have shape {format_shape((k, sw[1]))} to "
                f"match W{format_shape(sw)}"
            )
    return [((sx[0], sw[1]), dtype)]


def _maxout_macs(inputs: Sequence[Value | None], outputs: Sequence[Value], attrs: dict) -> int:
    x, w = required(inputs[0]), required(inputs[1])
    return _prod([known_shape(x)[0]]) * _prod(known_shape(w))


register(
    OpSpec(
        "Maxout",
        "max over k affine pieces: Y[n,o] = max_j (X @ W[j].T + B[j])[n,o]; "
        "W (k,out,in), B (k,out).",
        ("X", "W", "B?"),
        maxout_shape,
        attrs={"pieces": REQUIRED},
        macs=_maxout_macs,
        family="linear",
    )
)
