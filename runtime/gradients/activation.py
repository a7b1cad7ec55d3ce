"""Gradients of the activations: element-wise non-linearities, PRelu, Softmax/LogSoftmax and
Dropout. Where the forward output gives the derivative cheaply (sigmoid, tanh, softmax) it is
read from `out` rather than recomputed."""

from __future__ import annotations

import numpy as np

from graphnet.runtime.gradients import gradient, unbroadcast

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


@gradient("Relu")
def relu(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dx = dy * [x > 0] (0 at the kink, as PyTorch)."""
    return (np.where(x > 0, dy, np.zeros((), dy.dtype)),)


@gradient("Sigmoid")
def sigmoid(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dx = dy * y * (1 - y)."""
    y = out[0]
    return (dy * y * (1 - y),)


@gradient("Tanh")
def tanh(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dx = dy * (1 - y^2)."""
    y = out[0]
    return (dy * (1 - y * y),)


@gradient("LeakyRelu")
def leaky_relu(dy: np.ndarray, x: np.ndarray, *, out: tuple, alpha: float) -> tuple:
    """dx = dy if x >= 0 else alpha * dy."""
    return (np.where(x >= 0, dy, dy * np.asarray(alpha, dy.dtype)),)


@gradient("Elu")
def elu(dy: np.ndarray, x: np.ndarray, *, out: tuple, alpha: float) -> tuple:
    """dx = dy if x >= 0 else dy * alpha * exp(x) = dy * (y + alpha)."""
    y = out[0]
    return (np.where(x >= 0, dy, dy * (y + np.asarray(alpha, dy.dtype))),)


@gradient("PRelu")
def prelu(dy: np.ndarray, x: np.ndarray, slope: np.ndarray, *, out: tuple) -> tuple:
    """dx = dy if x >= 0 else slope * dy;  dslope = sum over the broadcast axes of
    dy * min(x, 0) (x where x < 0, else 0). Both summed over the axes along which the other
    operand stretched them (a slope may broadcast the output past x, as the kernel does)."""
    pos = x >= 0
    dx = unbroadcast(np.where(pos, dy, dy * slope.astype(dy.dtype, copy=False)), x.shape)
    dslope = unbroadcast(np.where(pos, np.zeros((), dy.dtype), dy * x), slope.shape)
    return dx, dslope.astype(slope.dtype, copy=False)


@gradient("Softmax")
def softmax(dy: np.ndarray, x: np.ndarray, *, out: tuple, axis: int) -> tuple:
    """dx = y * (dy - sum(dy * y, axis))."""
    y = out[0]
    return (y * (dy - np.sum(dy * y, axis=axis, keepdims=True)),)


@gradient("LogSoftmax")
def log_softmax(dy: np.ndarray, x: np.ndarray, *, out: tuple, axis: int) -> tuple:
    """dx = dy - exp(y) * sum(dy, axis)  (exp(y) is the softmax)."""
    y = out[0]
    return (dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True),)


@gradient("Dropout", nondiff=(1, 2), context=True)
def dropout(
    dy: np.ndarray,
    x: np.ndarray,
    ratio: np.ndarray | None = None,
    training_mode: np.ndarray | None = None,
    *,
    out: tuple,
    drop_prob: float,
    scheme: str,
    training: bool,
) -> tuple:
    """The forward's mask (out[1]) is reused, never redrawn. keep = 1 - drop probability.
    train: inverted dx = dy * mask / keep, classic dx = dy * mask;
    inference: inverted dx = dy, classic dx = dy * keep."""
    if ratio is not None:  # run-time inputs override the attribute and the mode, as in the kernel
        drop_prob = float(np.asarray(ratio).reshape(()))
    if training_mode is not None:
        training = bool(np.asarray(training_mode).reshape(()))
    keep = np.asarray(1.0 - float(drop_prob), dy.dtype)
    zero = np.zeros((), dy.dtype)
    if not training:
        return (dy * keep if scheme == "classic" else dy, None, None)
    mask = out[1]
    return (np.where(mask, dy if scheme == "classic" else dy / keep, zero), None, None)
