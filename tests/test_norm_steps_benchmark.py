"""benchmarks/norm_steps.py keeps working: its graphs compile the norm with its activation fused
as the suite's, its measurement restores the module setting it varies, and its table prints
(timings themselves are not checked: speed lives in the benchmark's output)."""

from __future__ import annotations

import numpy as np

from benchmarks import norm_steps as bench
from graphnet.runtime import Session
from graphnet.runtime.fast.steps import elementwise


def test_graphs_fuse_the_activation_into_the_norm():
    for op, shape, arg, act in bench.CASES[:3]:
        sess = Session(bench._graph(op, shape, arg, act))
        rows = sess._fast(training=False, keep_all=False).describe()
        norm = next(r for r in rows if r["op"] == op)
        assert norm["fused"] == ["act"], (op, rows)
        x = np.random.default_rng(0).standard_normal((2, *shape[1:])).astype(np.float32)
        got = sess.run({"x": x})
        want = Session(bench._graph(op, shape, arg, act), plan="reference").run({"x": x})
        for k in want:  # means of normalized values: a few float32 ulps
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_main_prints_the_tables_and_restores_the_settings_it_varies(capsys):
    def settings():
        e = elementwise
        return e.UNBUFFERED_MIN_ROW, e.FUSED_POOL_INLINE_BYTES, e.CHUNKED, e.HALVING

    before = settings()
    bench.main(["--runs", "1", "--markdown"])
    assert settings() == before
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    # the heads, the cases, two ELU rows, the batch-1 and the batch-32 group norms with a pool
    assert len(rows) == len(bench.CASES) + 3 + 3 + 3
    assert "GroupNorm + PRelu | 32x32x32x32" in out and "Elu: expm1 / exp - 1" in out
    assert "GroupNorm + PRelu + pool | 1x32x32x32" in out
    assert "GroupNorm + PRelu + pool | 32x32x32x32" in out


def test_pooled_graphs_fuse_the_pool_and_bind_at_batch_1():
    """The pooled variant fuses the activation and the pool; as compiled its batch-1 step
    takes the bound path, with the general one's bits."""
    for op, shape, arg, act in bench.CASES[:2]:
        g = bench._graph(op, (1, *shape[1:]), arg, act, pool=True)
        rows = Session(g)._fast(training=False, keep_all=False).describe()
        assert next(r for r in rows if r["op"] == op)["fused"] == ["act", "pool"]
        x = {"x": np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)}
        got = Session(g).run(x)
        saved = elementwise.FUSED_POOL_INLINE_BYTES
        elementwise.FUSED_POOL_INLINE_BYTES = 0
        try:
            general = Session(g).run(x)
        finally:
            elementwise.FUSED_POOL_INLINE_BYTES = saved
        for k in general:
            if act == "Elu":  # (float32 expm1 is monotone only to the ulp)
                np.testing.assert_array_max_ulp(got[k], general[k], maxulp=1)
            else:
                np.testing.assert_array_equal(got[k], general[k])
