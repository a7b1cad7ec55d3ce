"""Normalization ops: BatchNormalization, LayerNormalization, InstanceNormalization,
GroupNormalization (opset-21 form: per-channel scale and bias) and LRN.

Names, inputs and attributes follow ONNX. Two deliberate differences, both invisible in ONNX files:
- the train/inference choice is not an attribute (no `training_mode`): it is made when the graph
  runs or is exported (DESIGN: "mode is chosen when it runs or is exported");
- the scale and bias of Layer/Instance/GroupNormalization are optional inputs here, so that a
  non-affine layer holds no parameters (the exporter writes ones and zeros for ONNX).
"""

from __future__ import annotations

from collections.abc import Sequence

from graphnet import dims
from graphnet.dims import Dim
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ops._shapes import broadcasts_to, need_float, need_rank, required
from graphnet.ops.spec import REQUIRED, OpSpec, register
from graphnet.value import Value, format_shape

__all__ = ["STASH_TYPES", "STASH_DTYPES"]

STASH_TYPES = (1, 10, 11, 16)
"""ONNX element types allowed for `stash_type` (float, float16, double, bfloat16). Our kernels
always compute statistics in float64, which is at least as precise as any of them."""

STASH_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "float32"}
"""dtype of LayerNormalization's optional Mean / InvStdDev outputs per `stash_type`. NumPy has no
bfloat16: with 16 they are float32 (the importer keeps a node that reads them opaque)."""

_RANKS = range(2, 6)  # (N,C), (N,C,L), (N,C,H,W), (N,C,T,H,W)


def _numel(v: Value) -> int:
    n = 1
    for d in v.shape or ():
        n *= int(d) if dims.is_static(d) else 1  # per example: dynamic dims count 1
    return n


def _check_epsilon(attrs: dict) -> None:
    eps = attrs["epsilon"]
    if not isinstance(eps, (int, float)) or not eps >= 0:
        raise AttributeValueError(f"epsilon must be a number >= 0, got {eps!r}")


def _check_stash(attrs: dict) -> None:
    if attrs["stash_type"] not in STASH_TYPES:
        raise AttributeValueError(
            f"stash_type must be one of {STASH_TYPES} (ONNX float types), got "
            f"{attrs['stash_type']!r}"
        )


def _per_channel(x: Value, p: Value | None, what: str, channels: Dim) -> Dim:
    """A per-channel parameter: 1-D of length C, float; returns its length (the channels when
    it is omitted)."""
    if p is None:
        return channels
    need_float(p, what)
    if p.shape is None or len(p.shape) != 1:
        raise ShapeError(
            f"{what} '{p.name}' must be 1-D (one value per channel), got {format_shape(p.shape)}"
        )
    if dims.differ(p.shape[0], channels):
        raise ShapeError(
            f"{what} '{p.name}' has {p.shape[0]} values but X '{x.name}' has {channels} channels "
            f"{format_shape(x.shape)}"
        )
    return p.shape[0]


def _same_dtype(a: Value | None, b: Value | None) -> None:
    if a is not None and b is not None and a.dtype != b.dtype:
        raise ShapeError(
            f"'{a.name}' is {a.dtype} but '{b.name}' is {b.dtype}; they must share a dtype"
        )


# ------------------------------------------------------------------------------ BatchNormalization
def _batchnorm_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x, scale, b, mean, var = (required(v) for v in inputs)
    shape = need_rank(x, _RANKS, "X")
    need_float(x, "X")
    _check_epsilon(attrs)
    m = attrs["momentum"]
    if not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
        raise AttributeValueError(
            f"momentum (the smoothing factor alpha) must be in [0, 1], got {m!r}"
        )
    c = shape[1]
    for p, what in ((scale, "scale"), (b, "B"), (mean, "input_mean"), (var, "input_var")):
        c = dims.unify(c, _per_channel(x, p, what, c))
    # ONNX (opset 15+) lets scale/B (T1) and the running statistics (T2) differ from X (T).
    _same_dtype(scale, b)
    _same_dtype(mean, var)
    return [(x.shape, x.dtype), (mean.shape, mean.dtype), (var.shape, var.dtype)]


def _affine_macs(inputs, outputs, attrs) -> int:
    # Counted as in inference: one multiply-add per element (BN folds to a per-channel affine;
    # the statistics of the others cost a few more adds per element, not counted).
    return _numel(outputs[0])


register(
    OpSpec(
        "BatchNormalization",
        "Per-channel normalization with batch statistics (train) or running averages (inference).",
        ("X", "scale", "B", "input_mean", "input_var"),
        _batchnorm_infer,
        # ONNX's optional outputs: the running statistics after this run (updated in train mode,
        # the inputs unchanged in inference mode).
        outputs=("Y", "running_mean?", "running_var?"),
        attrs={"epsilon": 1e-5, "momentum": 0.9},
        macs=_affine_macs,
        # Train mode: kernel outputs 1 and 2 (new running mean / variance) replace inputs 3 and 4.
        state={1: 3, 2: 4},
        mode_dependent=True,
        family="normalization",
    )
)


# ------------------------------------------------------------------------------ LayerNormalization
def _layernorm_resolve(inputs: Sequence[Value | None], attrs: dict) -> dict:
    x = inputs[0]
    axis = attrs["axis"]
    if x is not None and x.shape is not None:
        r = len(x.shape)
        if not isinstance(axis, int) or not -r <= axis < r:
            raise AttributeValueError(
                f"axis must be in [{-r}, {r - 1}] for X of rank {r}, got {axis!r}"
            )
        axis = axis % r
    return {**attrs, "axis": axis}


def _layernorm_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x, scale = required(inputs[0]), inputs[1] if len(inputs) > 1 else None
    b = inputs[2] if len(inputs) > 2 else None
    shape = need_rank(x, range(1, 9), "X")
    need_float(x, "X")
    _check_epsilon(attrs)
    _check_stash(attrs)
    for p, what in ((scale, "Scale"), (b, "B")):
        if p is None:
            continue
        _same_dtype(x, p)
        # ONNX multiplies the normalized X by Scale with broadcasting: Scale must broadcast TO X.
        if p.shape is None or not broadcasts_to(p.shape, shape):
            norm = format_shape(shape[attrs["axis"] :])
            raise ShapeError(
                f"{what} '{p.name}' {format_shape(p.shape)} does not broadcast to X '{x.name}' "
                f"{format_shape(shape)} (normalized shape {norm} from axis {attrs['axis']})"
            )
    # Mean and InvStdDev keep the leading dims and reduce the normalized ones to size 1 (ONNX).
    axis = attrs["axis"]
    stats = shape[:axis] + (1,) * (len(shape) - axis)
    stash = STASH_DTYPES[attrs["stash_type"]]
    return [(x.shape, x.dtype), (stats, stash), (stats, stash)]


register(
    OpSpec(
        "LayerNormalization",
        "Per example, normalize over the axes from `axis` on, then scale and "
        "shift (ONNX opset 17); optional Mean and InvStdDev = 1/sqrt(var + eps) outputs.",
        ("X", "Scale?", "B?"),
        _layernorm_infer,
        outputs=("Y", "Mean?", "InvStdDev?"),
        attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1},
        resolve=_layernorm_resolve,
        macs=_affine_macs,
        family="normalization",
    )
)


# --------------------------------------------------------------------------- Instance/GroupNorm
def _instancenorm_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    shape = need_rank(x, range(3, 6), "X")
    need_float(x, "X")
    _check_epsilon(attrs)
    for p, what in zip(inputs[1:], ("scale", "B"), strict=False):
        _per_channel(x, p, what, shape[1])
        _same_dtype(x, p)
    return [(x.shape, x.dtype)]


register(
    OpSpec(
        "InstanceNormalization",
        "Per example and channel, normalize over the spatial axes, then scale and shift.",
        ("X", "scale?", "B?"),
        _instancenorm_infer,
        attrs={"epsilon": 1e-5},
        macs=_affine_macs,
        family="normalization",
    )
)


def _groupnorm_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    shape = need_rank(x, _RANKS, "X")
    need_float(x, "X")
    _check_epsilon(attrs)
    _check_stash(attrs)
    g = attrs["num_groups"]
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        raise AttributeValueError(f"num_groups must be an int >= 1, got {g!r}")
    c = shape[1]
    if dims.is_static(c) and c % g:
        raise ShapeError(
            f"X '{x.name}' {format_shape(x.shape)} has {c} channels, not divisible by {g} groups"
        )
    for p, what in zip(inputs[1:], ("scale", "bias"), strict=False):
        # Opset-21 form: one value per CHANNEL (opset 18-20 per-group values are expanded on
        # import).
        _per_channel(x, p, what, c)
        _same_dtype(x, p)
    return [(x.shape, x.dtype)]


register(
    OpSpec(
        "GroupNormalization",
        "Per example, normalize over groups of channels and positions; per-channel scale and bias.",
        ("X", "scale?", "bias?"),
        _groupnorm_infer,
        attrs={"num_groups": REQUIRED, "epsilon": 1e-5, "stash_type": 1},
        macs=_affine_macs,
        family="normalization",
    )
)


# ------------------------------------------------------------------------------------------- LRN
def _lrn_infer(inputs: Sequence[Value | None], attrs: dict) -> list:
    x = required(inputs[0])
    need_rank(x, _RANKS, "X")
    need_float(x, "X")
    size = attrs["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise AttributeValueError(
            f"size must be an int >= 1 (channels in the window), got {size!r}"
        )
    for key in ("alpha", "beta", "bias"):
        if not isinstance(attrs[key], (int, float)):
            raise AttributeValueError(f"{key} must be a number, got {attrs[key]!r}")
    return [(x.shape, x.dtype)]


def _lrn_macs(inputs, outputs, attrs) -> int:
    # A window sum of `size` squares per element (the power is not a MAC).
    return attrs["size"] * _numel(outputs[0])


register(
    OpSpec(
        "LRN",
        "Local response normalization across channels: x / (bias + alpha/size * sum x^2)^beta.",
        ("X",),
        _lrn_infer,
        attrs={"size": REQUIRED, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
        macs=_lrn_macs,
        family="normalization",
    )
)
