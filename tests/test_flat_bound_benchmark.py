"""benchmarks/flat_numpy_bound.py keeps computing LeNet-5: its flat NumPy sequence (the bound
the README quotes for ours / GEMM floor at batch 1) against the reference plan on several
inputs, and its main prints the three engines."""

from __future__ import annotations

import numpy as np

from benchmarks import flat_numpy_bound as bench
from graphnet import runtime
from graphnet.bench import suite
from graphnet.passes import optimize


def test_the_flat_sequence_is_lenet():
    g = optimize(suite.build("lenet5"))[0]
    inp, (out,) = g.inputs[0], g.outputs
    flat = bench.flat_lenet(g.params)
    ref = runtime.Session(g, plan="reference")
    for seed in range(3):  # (its buffers are reused: each input must be read afresh)
        x = np.random.default_rng(seed).standard_normal((1, 1, 28, 28)).astype(np.float32)
        np.testing.assert_allclose(flat(x), ref.run({inp: x})[out], rtol=1e-5, atol=1e-6)


def test_main_prints_each_engine_against_the_floor(capsys):
    bench.main(["--rounds", "1"])
    text = capsys.readouterr().out
    for name in ("GEMM floor", "flat NumPy", "graphnet"):
        assert name in text
