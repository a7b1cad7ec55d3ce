"""benchmarks/winograd_layouts.py keeps working: its variants compute the same arrays (timings
themselves are not checked: speed lives in the benchmark's output), and its tables print."""

from __future__ import annotations

import numpy as np

from benchmarks import winograd_layouts as bench


def test_gemm_variants_agree(monkeypatch):
    from graphnet.runtime.fast import conv

    monkeypatch.setattr(conv, "WINOGRAD_GEMM_MAX_MNK", 0)  # blocks of 16, 16 and 8 rows
    variants = bench.gemm_variants(4, 40, 24, 5)
    assert list(variants)[2] == "blocks of 16"
    outs = [np.array(run()) for run in variants.values()]
    for o in outs[1:]:  # the same products summed in BLAS's orders: float32 rounding only
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-5)


def test_pad_variants_gather_the_same_tiles(monkeypatch):
    from graphnet.runtime.fast import winograd

    monkeypatch.setattr(winograd, "TRANSPOSE_L1_WAYS", 1)  # blocks of 1 channel (4 KiB planes)
    tiles = []
    for run in bench.pad_variants(2, 5, 32).values():
        run()[...] = np.nan  # the shared operand: a variant must write all of it itself
        tiles.append(np.array(run()))
    assert len(tiles) == 3 and not np.isnan(tiles[0]).any()
    for t in tiles[1:]:
        np.testing.assert_array_equal(t, tiles[0])  # copies: exactly equal
    assert winograd.TRANSPOSE_L1_WAYS == 1  # restored after the one-block variant


def test_main_prints_both_tables(capsys):
    bench.main(["--rounds", "1", "--markdown"])
    out = capsys.readouterr().out
    assert "GEMM (positions, M, C, tiles)" in out and "pad + gather" in out
    assert out.count(" | ") >= len(bench.GEMMS) + len(bench.PADS)
