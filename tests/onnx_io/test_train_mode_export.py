"""Train-mode export against onnxruntime: BatchNormalization with batch statistics and updated
running statistics (`<param>.updated`), chained when one BN layer is applied twice, on a hand-made
network and on seeded random ones (tests/random_nets.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphnet import nn, runtime
from tests.helpers import assert_close, ort_run
from tests.random_nets import random_network

# Whole-model float32 tolerance: batch statistics are sums over N*H*W added in other orders.
TOL = dict(rtol=1e-4, atol=1e-5)


def _train_step_both(g, x, seed=0):
    """(runtime outputs, runtime parameters after the step, onnxruntime outputs) of one
    train-mode step from the same starting statistics."""
    model = g.to_onnx(mode="train")
    onnx.checker.check_model(model, full_check=True)
    theirs = ort_run(model, {"x": x})
    g2 = g.copy()
    ours = runtime.run(g2, {"x": x}, mode="train", seed=seed)
    return ours, g2.params, theirs, model


def _compare(g, ours, params, theirs):
    for o in g.outputs:
        assert_close(ours[o], theirs[o], **TOL, what=f"output '{o}'")
    updated = [k for k in theirs if k.endswith(".updated")]
    for k in updated:
        p = k[: -len(".updated")]
        assert_close(params[p], theirs[k], **TOL, what=f"'{k}' vs the runtime's {p}")
    return updated


def test_a_batchnorm_applied_twice_updates_its_statistics_twice_in_order():
    net = nn.Network("shared", seed=0)
    x = net.input("x", (None, 4, 5, 5))
    bn = nn.BatchNorm()
    y = bn(nn.Conv(4, 3, padding="same")(x))
    z = bn(nn.Conv(4, 3, padding="same")(nn.ReLU()(y)))
    net.output(z, name="y")
    g = net.graph
    before = {k: v.copy() for k, v in g.params.items()}
    feed = np.random.default_rng(0).standard_normal((3, 4, 5, 5)).astype(np.float32)
    ours, params, theirs, model = _train_step_both(g, feed)
    assert sorted(_compare(g, ours, params, theirs)) == [
        "bn1.running_mean.updated",
        "bn1.running_var.updated",
    ]
    # The second application reads the first's update, not the stored statistics.
    first, second = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert list(second.input[3:]) == list(first.output[1:])
    # Two smoothing steps, one after the other (docs/formulas.md's update with alpha = 0.9, biased
    # batch variance), from the batch statistics of each application's input.
    env = runtime.run(g.copy(), {"x": feed}, mode="train", keep_all=True)
    c1, c2 = (env[n.inputs[0]] for n in g.nodes if n.op == "BatchNormalization")
    m, v = (
        before["bn1.running_mean"].astype(np.float64),
        before["bn1.running_var"].astype(np.float64),
    )
    for c in (c1.astype(np.float64), c2.astype(np.float64)):
        m = 0.9 * m + 0.1 * c.mean(axis=(0, 2, 3))
        v = 0.9 * v + 0.1 * c.var(axis=(0, 2, 3))
    assert_close(params["bn1.running_mean"], m, **TOL, what="mean after two steps")
    assert_close(params["bn1.running_var"], v, **TOL, what="var after two steps")


@pytest.mark.parametrize("seed", range(24))
def test_random_networks_in_train_mode_match_onnxruntime(seed):
    g = random_network(seed, drop=0.0)  # Dropout of ratio 0: its train-mode mask is known
    x = np.random.default_rng(seed).standard_normal((3,) + g.values["x"].shape[1:])
    ours, params, theirs, _ = _train_step_both(g, x.astype(np.float32))
    updated = _compare(g, ours, params, theirs)
    bns = [n for n in g.nodes if n.op == "BatchNormalization"]
    assert len(updated) == 2 * len({n.inputs[3] for n in bns})
