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


def test_a_tensor_stays_usable_after_output_renamed_it():
    net = nn.Network("n")
    x = net.input("x", (None, 4))
    h = nn.ReLU()(x)
    out = net.output(h, name="features")
    assert h.name == out.name == "features"
    y = nn.Linear(2)(h)  # used to raise a raw KeyError: 'relu1.out'
    net.output(y, name="logits")
    net.output(out, name="renamed_again")  # a rename of a rename follows too
    assert h.name == "renamed_again" and net.graph.outputs == ["renamed_again", "logits"]
    got = runtime.run(net.graph, {"x": np.ones((3, 4), np.float32)})
    assert got["logits"].shape == (3, 2) and got["renamed_again"].shape == (3, 4)


def test_none_in_an_input_shape_is_the_batch_on_axis_0_and_a_symbol_elsewhere():
    net = nn.Network("n")
    x = net.input("x", (None, 3, None))
    w = net.input("w", (None, 5))
    assert x.shape == ("N", 3, "x_2") and w.shape == ("N", 5)
    y = nn.Flatten()(x)
    assert y.shape == ("N", "3*x_2")


@pytest.mark.parametrize(
    "kw", [{"torch_momentum": "0.1"}, {"smoothing": "0.9"}, {"smoothing": True}]
)
def test_batchnorm_momentum_must_be_a_number(kw):
    """torch_momentum="0.1" was a bare TypeError from `1.0 - "0.1"` (found by mypy)."""
    from graphnet.errors import AttributeValueError

    what = next(iter(kw))
    with pytest.raises(AttributeValueError, match=rf"\(BatchNorm\): {what} must be a number, got"):
        nn.BatchNorm(**kw)
    assert nn.BatchNorm(torch_momentum=0.25).smoothing == 0.75


def test_a_layer_has_a_node_name_once_applied():
    from graphnet.errors import GraphError

    conv = nn.Conv(4, 3)
    with pytest.raises(GraphError, match="Conv has no name until it is applied to a Tensor"):
        _ = conv.node_name
    net = nn.Network("n")
    conv(net.input("x", (None, 3, 8, 8)))
    assert conv.node_name == conv.name == "conv1"
