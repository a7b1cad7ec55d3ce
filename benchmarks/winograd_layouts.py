"""Benchmark: the layouts behind Winograd's constants in `graphnet.runtime.fast.conv`.

    python benchmarks/winograd_layouts.py [--rounds 50] [--markdown]

Two tables, each interleaved within one process on one thread (BLAS too), medians of the
per-round ratios (under 1: the variant is faster):

- GEMM: Winograd's (t^2 positions) GEMMs (M x C) @ (C x tiles) with the (C x tiles) operand as
  a transposed view of (tiles, C) planes (the former layout), as contiguous planes in one GEMM,
  and as contiguous planes in blocks of output channels of at most `WINOGRAD_GEMM_MAX_MNK`
  M*C*tiles (what `_winograd` runs): OpenBLAS runs GEMMs up to 100^3 with small-matrix kernels
  without packing, and its small kernel for a transposed right operand is slow.
- pad + gather: the input padded NCHW and its tiles gathered straight into the GEMMs' (C, tiles)
  order (inner loops of a tile row's tiles) against the input padded channels-last first, its
  tiles gathered channel-innermost and copied to (C, tiles) (`WINOGRAD_ALIASED_PLANE_BYTES`:
  NCHW for planes a multiple of 4 KiB apart), with the channels-last pad's transposing copy in
  channel blocks (`transpose_block`) and in one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from math import ceil

import numpy as np

# The checkout's graphnet, even where another one is installed: the repository root first.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from graphnet.runtime.fast import conv, winograd  # noqa: E402
from graphnet.runtime.fast.threads import blas_single_threaded  # noqa: E402

__all__ = ["GEMMS", "PADS", "interleaved", "gemm_variants", "pad_variants", "main"]

GEMMS = [  # (positions, M, C, tiles): F(4x4) at batch 1 and chunks of 64 columns
    (36, 64, 64, 64),
    (36, 128, 128, 16),
    (36, 128, 128, 64),
    (36, 256, 256, 64),
    (36, 64, 64, 256),
]
# (batch, C, size)
PADS = [(16, 32, 16), (16, 64, 8), (1, 128, 16), (1, 256, 8), (1, 64, 32), (1, 64, 28)]


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median over rounds of each variant's time / the first's (each round runs all, in turn).
    A variant returns its result (the variants of a table share one output array)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    first = times[next(iter(variants))]
    return {
        k: statistics.median(a / b for a, b in zip(v, first, strict=True)) for k, v in times.items()
    }


def gemm_variants(pos: int, mo: int, c: int, tiles: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((pos, mo, c)).astype(np.float32)
    planes = rng.standard_normal((pos, tiles, c)).astype(np.float32)
    contiguous = np.ascontiguousarray(planes.transpose(0, 2, 1))
    out = np.empty((pos, mo, tiles), np.float32)
    rows = conv._gemm_rows(mo, c * tiles)

    def blocks() -> np.ndarray:
        for m0 in range(0, mo, rows):
            np.matmul(w[:, m0 : m0 + rows], contiguous, out=out[:, m0 : m0 + rows])
        return out

    return {
        "transposed view": lambda: np.matmul(w, planes.transpose(0, 2, 1), out=out),
        "contiguous": lambda: np.matmul(w, contiguous, out=out),
        f"blocks of {rows}": blocks,
    }


def pad_variants(nb: int, c: int, size: int) -> dict[str, Callable[[], object]]:
    """The input side up to the GEMMs' (t, t, C, tiles) operand, without the B^T transforms
    (the same two GEMMs in every variant): NCHW padded, its tiles gathered straight into that
    order (what `_winograd` runs for aliasing planes); channels-last padded (the transposing
    copy in channel blocks, `transpose_block`), the tiles gathered channel-innermost, then
    copied to (C, tiles) (the V copy); the same with the pad's transposing copy in one block."""
    m, t = 4, 6
    th = ceil(size / m)
    hp = th * m + 2
    x = np.random.default_rng(0).standard_normal((nb, c, size, size)).astype(np.float32)
    buf = np.empty(nb * c * hp * hp, np.float32)
    d = np.empty((t, t, nb, th, th, c), np.float32)
    vc = np.empty((t, t, c, nb, th, th), np.float32)
    extra = (hp - size - 2,) * 2

    def nchw() -> np.ndarray:
        xp = conv.padded(x, (1, 1, 1, 1), extra, buf)
        s = xp.strides
        shape, strides = (nb, c, th, th, t, t), (s[0], s[1], m * s[2], m * s[3], s[2], s[3])
        np.copyto(vc, conv.view(xp, shape, strides).transpose(4, 5, 1, 0, 2, 3))
        return vc

    def channels_last(blocks: bool) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            ways = winograd.TRANSPOSE_L1_WAYS
            winograd.TRANSPOSE_L1_WAYS = ways if blocks else 1 << 30  # one block of all channels
            try:
                xp = conv._padded_channels_last(x, (1, 1, 1, 1), (hp, hp), buf)
            finally:
                winograd.TRANSPOSE_L1_WAYS = ways
            s = xp.strides
            shape, strides = (nb, th, th, t, t, c), (s[0], m * s[1], m * s[2], s[1], s[2], s[3])
            np.copyto(d, conv.view(xp, shape, strides).transpose(3, 4, 0, 1, 2, 5))
            planes = d.reshape(t * t, nb * th * th, c).transpose(0, 2, 1)
            np.copyto(vc.reshape(t * t, c, nb * th * th), planes)
            return vc

        return run

    return {
        "NCHW": nchw,
        "channels-last": channels_last(True),
        "channels-last, one block": channels_last(False),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    sep = " | " if args.markdown else "  "
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.processor() or platform.machine()}, one thread, load average {load:.1f}")
    with blas_single_threaded():
        print("\nGEMM (positions, M, C, tiles): time / transposed view's")
        for shape in GEMMS:
            r = interleaved(gemm_variants(*shape), args.rounds)
            print(sep.join([str(shape), *(f"{k} {v:.2f}" for k, v in r.items())]))
        print("\npad + gather (batch, C, size x size): time / NCHW's")
        for shape in PADS:
            r = interleaved(pad_variants(*shape), args.rounds)
            aliased = (shape[2] ** 2 * 4) % conv.WINOGRAD_ALIASED_PLANE_BYTES == 0
            note = " (planes alias: NCHW runs)" if aliased else ""
            print(sep.join([str(shape), *(f"{k} {v:.2f}" for k, v in r.items())]) + note)


if __name__ == "__main__":
    main()
