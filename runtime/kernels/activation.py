"""Activation kernels: element-wise non-linearities, PRelu, Softmax/LogSoftmax and Dropout.

Every kernel keeps the input dtype (float32 in, float32 out) and is written so that no
intermediate overflows for large |x|: exp is only ever taken of non-positive numbers.
"""

from __future__ import annotations

import numpy as np

from graphnet.runtime.kernels import kernel

__all__ = [
    "relu",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "elu",
    "prelu",
    "softmax",
    "log_softmax",
    "dropout",
]


@kernel("Relu")
def relu(x: np.ndarray) -> np.ndarray:
    """max(0, x)."""
    return np.maximum(x, 0).astype(x.dtype, copy=False)


@kernel("Sigmoid")
def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), evaluated as e/(1+e) with e = exp(-|x|) <= 1 on the negative side so
    that exp never overflows (1/(1+exp(1000)) would warn and 1+exp(-x) loses x < -88 in float32)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@kernel("Tanh")
def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) (= 2 * sigmoid(2x) - 1; np.tanh is exact and saturates without overflow)."""
    return np.tanh(x)


@kernel("LeakyRelu")
def leaky_relu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    """x if x >= 0 else alpha * x."""
    return np.where(x >= 0, x, x * np.asarray(alpha, dtype=x.dtype))


@kernel("Elu")
def elu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    """x if x >= 0 else alpha * (exp(x) - 1). np.where evaluates both branches, so the exp side
    only sees min(x, 0): no overflow warning for large positive x. expm1 keeps small |x| exact."""
    neg = np.asarray(alpha, dtype=x.dtype) * np.expm1(np.minimum(x, 0))
    return np.where(x >= 0, x, neg).astype(x.dtype, copy=False)


@kernel("PRelu")
def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """x if x >= 0 else slope * x; slope broadcasts to x from the right (ONNX)."""
    return np.where(x >= 0, x, x * slope.astype(x.dtype, copy=False))


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    # Subtracting the max makes every exponent <= 0: exp cannot overflow and the largest term is 1,
    # so the sum cannot underflow to 0 either.
    return x - np.max(x, axis=axis, keepdims=True)


@kernel("Softmax")
def softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    e = np.exp(_shifted(x, axis))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype, copy=False)


@kernel("LogSoftmax")
def log_softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    """(x - max) - log(sum(exp(x - max))) along `axis` (never log of an underflowed softmax)."""
    s = _shifted(x, axis)
    return (s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))).astype(x.dtype, copy=False)


@kernel("Dropout", context=True)
def dropout(
    x: np.ndarray,
    ratio: np.ndarray | None = None,
    training_mode: np.ndarray | None = None,
    *,
    drop_prob: float,
    scheme: str,
    training: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (y, mask); mask is bool, True where a unit is kept (all True at inference).

    keep = 1 - drop_prob (docs/formulas.md, "Dropout"). A run-time `ratio` input replaces
    drop_prob and a `training_mode` input replaces the run mode (ONNX's Dropout-12 inputs).
    - inference: inverted -> x; classic -> x * keep.
    - train: mask ~ Bernoulli(keep) drawn from `rng`; inverted -> x * mask / keep;
      classic -> x * mask.
    """
    if ratio is not None:
        drop_prob = float(np.asarray(ratio).reshape(()))
        if (
            not 0.0 <= drop_prob < 1.0
        ):  # the attribute is checked by the op table; this comes at run time
            raise ValueError(f"ratio (the DROP probability) must be in [0, 1), got {drop_prob!r}")
    if training_mode is not None:
        training = bool(np.asarray(training_mode).reshape(()))
    keep = 1.0 - float(drop_prob)
    if not training:
        mask = np.ones(x.shape, dtype=bool)
        if scheme == "classic":
            return x * np.asarray(keep, dtype=x.dtype), mask
        return x.copy(), mask
    # P(u < keep) = keep for u ~ U[0, 1); drawn in float64 whatever x's dtype, so that a seed gives
    # the same mask for float32 and float64 inputs.
    mask = rng.random(x.shape) < keep
    if scheme == "classic":
        return np.where(mask, x, np.zeros((), dtype=x.dtype)), mask
    return np.where(mask, x / np.asarray(keep, dtype=x.dtype), np.zeros((), dtype=x.dtype)), mask
