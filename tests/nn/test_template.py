"""`nn.template`: the template CNN INPUT -> [[CONV -> RELU] * N -> POOL?] * M -> [FC -> RELU] * K ->
Softmax, layer by layer, for several N, M, K and with or without pooling, BatchNorm, dropout."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.errors import AttributeValueError
from graphnet.nn import template


def _expected(n, m, k, *, pool, bn, dropout):
    """The layer sequence the template (docs/formulas.md) describes, written out independently."""
    seq = []
    for _ in range(m):
        seq += (["Conv", "BatchNorm", "ReLU"] if bn else ["Conv", "ReLU"]) * n
        if pool:
            seq.append("MaxPool")
    seq.append("Flatten")
    seq += (["Dropout", "Linear", "ReLU"] if dropout else ["Linear", "ReLU"]) * k
    return seq + ["Linear", "Softmax"]


@pytest.mark.parametrize("n, m, k", [(1, 1, 0), (2, 2, 1), (3, 1, 2), (0, 2, 1)])
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("dropout", [True, False])
def test_layer_sequence(n, m, k, pool, bn, dropout):
    net = template(
        n=n,
        m=m,
        k=k,
        channels=4,
        hidden=6,
        classes=3,
        pool=pool,
        batchnorm=bn,
        **({"drop": 0.25} if dropout else {"drop": 0}),
    )
    assert [type(layer).__name__ for layer in net.layers] == _expected(
        n, m, k, pool=pool, bn=bn, dropout=dropout
    )
    convs = [layer for layer in net.layers if isinstance(layer, nn.Conv)]
    assert all(c.bias is not bn for c in convs)  # BN's shift replaces the conv bias
    assert all(d.drop == 0.25 for d in net.layers if isinstance(d, nn.Dropout))
    g = net.build((None, 3, 8, 8))
    y = runtime.run(g, {"input": np.random.default_rng(0).random((2, 3, 8, 8), np.float32)})
    out = y["output"]
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)  # Softmax rows


def test_widths_per_stage_and_per_hidden_layer():
    net = template(n=1, m=2, k=2, channels=(4, 8), hidden=(16, 12), classes=5, drop=0)
    convs = [layer.out_channels for layer in net.layers if isinstance(layer, nn.Conv)]
    fcs = [layer.out_features for layer in net.layers if isinstance(layer, nn.Linear)]
    assert convs == [4, 8] and fcs == [16, 12, 5]
    with pytest.raises(AttributeValueError, match="channels has 3 entries for 2 stages"):
        template(m=2, channels=(4, 8, 16))


def test_dropout_is_given_as_drop_or_keep_never_bare():
    keep = template(n=1, m=1, k=1, channels=8, keep=0.8)
    (d,) = [layer for layer in keep.layers if isinstance(layer, nn.Dropout)]
    assert d.keep == 0.8 and d.drop == pytest.approx(0.2)
    default = template(n=1, m=1, k=1, channels=8)
    assert [layer.drop for layer in default.layers if isinstance(layer, nn.Dropout)] == [0.5]
    assert not any(isinstance(layer, nn.Dropout) for layer in template(k=1, keep=1).layers)
    with pytest.raises(AttributeValueError, match="drop= .* or keep= .*not dropout=0.5") as err:
        template(dropout=0.5)
    assert "docs/formulas.md" in str(err.value) and "lecture" not in str(err.value)
    with pytest.raises(AttributeValueError, match="not both"):
        template(drop=0.5, keep=0.5)
