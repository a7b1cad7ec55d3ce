"""Data sets for training: a general `.npz` loader and the shipped UCI digits.

A data file is an `.npz` holding `x` (N, ...) and `y` (N,) integer labels, and optionally
`x_test` and `y_test`. `load(path)` checks and returns it as a `Dataset` (x float32, y int64).
`digits()` returns the shipped handwritten digits (see DIGITS.md beside this file):
1,438 training and 359 test images, (N, 1, 8, 8) float32 in [0, 1].
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphnet.errors import InputError

__all__ = ["Dataset", "load", "digits", "save", "DIGITS_PATH"]

DIGITS_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


@dataclass
class Dataset:
    """Training arrays `x`, `y` and optional held-out `x_test`, `y_test`."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x, self.y = _check_pair(self.x, self.y, "x", "y")
        if (self.x_test is None) != (self.y_test is None):
            raise InputError("give both x_test and y_test, or neither")
        if self.x_test is not None:
            self.x_test, self.y_test = _check_pair(self.x_test, self.y_test, "x_test", "y_test")
            if self.x_test.shape[1:] != self.x.shape[1:]:
                raise InputError(
                    f"x_test has examples of shape {self.x_test.shape[1:]}, x has "
                    f"{self.x.shape[1:]}"
                )

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def _check_pair(x, y, xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or len(x) == 0:
        raise InputError(f"{xn} must be an array of N >= 1 examples, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise InputError(f"{xn} must hold numbers, got dtype {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{yn} must have shape ({len(x)},) to match {xn}, got {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise InputError(f"{yn} must hold integer class labels, got dtype {y.dtype}")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def load(path: str | os.PathLike) -> Dataset:
    """Read a data `.npz` (x, y and optionally x_test, y_test); errors name the file and array."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise InputError(f"{path} is not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise InputError(f"{path} has no array(s) {missing} (it holds {sorted(arrays)})")
    try:
        return Dataset(arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def digits() -> Dataset:
    """The shipped UCI handwritten digits: 8x8 images as (N, 1, 8, 8) float32 in [0, 1] (pixel
    counts 0..16 divided by 16), labels 0-9; 1,438 training and 359 test images."""
    with np.load(DIGITS_PATH, allow_pickle=False) as f:
        scale = np.float32(1.0 / 16.0)
        return Dataset(
            f["x"][:, None].astype(np.float32) * scale,
            f["y"].astype(np.int64),
            f["x_test"][:, None].astype(np.float32) * scale,
            f["y_test"].astype(np.int64),
        )


def save(data: Dataset, path: str | os.PathLike) -> None:
    """Write a data `.npz` in the form `load` and `graphnet train --data` read (atomically)."""
    from graphnet.onnx_io.export import atomic_write

    arrays: dict[str, Any] = {"x": data.x, "y": data.y}
    if data.x_test is not None:
        arrays.update(x_test=data.x_test, y_test=data.y_test)
    buf = io.BytesIO()
    np.savez_compressed(buf, allow_pickle=False, **arrays)
    atomic_write(path, buf.getvalue())
