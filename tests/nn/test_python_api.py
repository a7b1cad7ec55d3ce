"""Habits of the Python API a user expects: errors that say what is expected instead of a
generic TypeError, and `Graph.summary()` as in Keras."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.errors import InputError


def _net():
    return nn.Sequential([nn.Conv(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2)]).build(
        (None, 3, 8, 8)
    )


def test_run_with_a_bare_array_says_what_it_expects():
    g = _net()
    with pytest.raises(InputError, match=r"feeds must be a mapping .*run\(graph, \{'input': "):
        runtime.run(g, np.zeros((1, 3, 8, 8), np.float32))


def test_graph_summary_prints_the_table_like_keras(capsys):
    g = _net()
    g.summary()
    out = capsys.readouterr().out
    assert "conv1" in out and "Gemm" in out and "total" in out
    # conv 4*3*3*3 + 4, fc 2*144 + 2
    assert "parameters: 402" in out
    lines: list[str] = []
    g.summary(print_fn=lines.append)
    assert lines == [out.rstrip("\n")]
