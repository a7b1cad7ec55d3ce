"""Losses: each returns (loss value, d loss / d prediction), mean over the batch."""

from __future__ import annotations

import numpy as np

from graphnet.errors import InputError

__all__ = ["softmax_cross_entropy", "cross_entropy_from_probabilities", "mse", "LOSSES"]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax and cross-entropy fused, over the last axis of (N, K) logits z and integer labels
    y in [0, K):  loss = mean_n (logsumexp(z_n) - z_n[y_n]),  d loss / dz = (softmax(z) -
    onehot(y)) / N. Stable: the max is subtracted before exp, so nothing overflows and
    log(softmax) is never taken of an underflowed 0. Computed in float64; the gradient has the
    logits' dtype."""
    if logits.ndim != 2:
        raise InputError(f"cross-entropy needs (N, classes) logits, got shape {logits.shape}")
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"cross-entropy needs labels of shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu" or (n and (labels.min() < 0 or labels.max() >= k)):
        raise InputError(f"labels must be integers in [0, {k}) for {k} outputs")
    z = logits.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, labels])) if n else 0.0
    grad = e / total
    grad[rows, labels] -= 1.0
    return loss, (grad / max(n, 1)).astype(logits.dtype)


def cross_entropy_from_probabilities(probs: np.ndarray, labels: np.ndarray) -> float:
    """mean_n -log p_n[y_n] for (N, K) probabilities (a model that ends in Softmax, run for
    evaluation); p is clipped at the smallest normal float32 so a 0 costs 87, not infinity."""
    p = probs.astype(np.float64)[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.maximum(p, np.finfo(np.float32).tiny))))


def mse(prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every element: loss = mean((p - t)^2), d loss / dp = 2 (p - t) /
    size."""
    target = np.asarray(target)
    if target.shape != prediction.shape:
        raise InputError(
            f"mse needs targets shaped like the prediction {prediction.shape}, got {target.shape}"
        )
    d = prediction.astype(np.float64) - target.astype(np.float64)
    return float(np.mean(d * d)), (2.0 * d / max(d.size, 1)).astype(prediction.dtype)


LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": mse}
