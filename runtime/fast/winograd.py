"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3, stride-1, undilated, ungrouped convs.

For one output tile Y (m x m) of one (input, output) channel pair, with d the (m+2) x (m+2) input
tile and g the 3 x 3 kernel (cross-correlation, as ONNX's Conv):

    Y = A^T [ (G g G^T) . (B^T d B) ] A

("." element-wise). Summed over input channels, the element-wise products become (m+2)^2
independent GEMMs of (output channels x input channels) @ (input channels x tiles): 2.25x
(F(2x2)) or 4x (F(4x4)) fewer multiplications than direct convolution. The transforms are GEMMs
too, on tiles laid out contiguously as (m+2, m+2, everything else): B^T on the first tile axis
(one GEMM), then on the second (a stack of GEMMs), no transposes in between; the weight
transform likewise, G on the kernel rows then on its columns, in float32 (train mode prepares
the weights on every run).

The matrices are those of Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural
Networks", with interpolation points 0, +-1, +-2 (F(4x4)) and 0, +-1 (F(2x2)). F(4x4)'s
transforms have entries up to 8 and 5: rounding grows with the tiles' dynamic range (max error
~1e-4 relative on typical activations), which is inside the whole-model tolerance; F(2x2)'s are
exact in float32 up to the GEMM's own rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TRANSFORMS", "SEPARABLE", "weight_transform"]


def _f2() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
    return bt, g, at


def _f4() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt = np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float64,
    )
    g = np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    )
    at = np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        np.float64,
    )
    return bt, g, at


def _kron(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt, g, at = _f2() if m == 2 else _f4()
    # Tiles are flattened row-major (row i, column j -> i * t + j): B^T d B on the flattened tile
    # is kron(B^T, B^T) @ vec(d); likewise G g G^T and A^T M A.
    return (
        np.kron(bt, bt).astype(np.float32),
        np.kron(g, g),  # float64 (the oracle of weight_transform's tests)
        np.kron(at, at).astype(np.float32),
    )


TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {m: _kron(m) for m in (2, 4)}
"""m -> (kron(B^T, B^T) float32, kron(G, G) float64, kron(A^T, A^T) float32)."""

SEPARABLE: dict[int, tuple[np.ndarray, np.ndarray]] = {
    m: (f()[0].astype(np.float32), f()[2].astype(np.float32)) for m, f in ((2, _f2), (4, _f4))
}
"""m -> (B^T, A^T) float32: the input and output transforms applied one tile axis at a time
(B^T d B = two GEMMs with K = m+2): 3x fewer multiplications than the Kronecker form."""


_G32: dict[int, np.ndarray] = {m: f()[1].astype(np.float32) for m, f in ((2, _f2), (4, _f4))}


def weight_transform(w: np.ndarray, m: int) -> np.ndarray:
    """U[xi, o, c] = (G w[o, c] G^T) flattened: ((m+2)^2, M, C) float32. The kernel re-laid as
    (3, 3, M*C) (one copy), then G on its rows (one GEMM, K = 3) and on its columns (a stack of
    t GEMMs): 324 multiply-adds per kernel where the Kronecker form kron(G, G) @ vec(w) took
    648, in float32 on contiguous operands where that ran in float64 on a transposed one: 0.6x
    the time at 32 -> 32 channels, 0.4x at 64-128, 0.6x at 256 (one thread, min of 20; 3.1 ms
    for 256 x 256 became 1.9: writing U, 4x the kernel, is most of it), which train mode pays on
    every run (Winograd from batch 1 there, see TRAIN_WINOGRAD_BATCH). Its rounding stays
    float32's: 2.6e-8 of the largest value, where float64 rounded once gave 1.3e-8 (256 x 256
    random kernels)."""
    g = _G32[m]
    t = m + 2
    mo, c = w.shape[:2]
    w9 = np.ascontiguousarray(w.reshape(mo * c, 9).T, dtype=np.float32)  # (3 rows, 3 cols, M*C)
    rows = g @ w9.reshape(3, 3 * mo * c)  # (t, 3, M*C): G on the kernel rows
    u = np.matmul(g, rows.reshape(t, 3, mo * c))  # (t, t, M*C): and on its columns
    return u.reshape(t * t, mo, c)
