"""The compiled plan's step order (`CompiledPlan._schedule`): a valid topological order of the
steps, chosen only when it lowers the simulated peak of live activations, graph order in train
mode; the same outputs as the plan in graph order (bit for bit: the same kernels on the same
inputs, in another order) and a smaller arena where the order changed (Inception's pool
branches)."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.passes.manager import optimize
from graphnet.runtime.fast import compile as fast_compile
from tests.random_nets import random_network


def _graph_order(monkeypatch) -> None:
    """Plans compiled from here on keep graph order."""
    monkeypatch.setattr(fast_compile.CompiledPlan, "_schedule", lambda self: None)


def _check_topological(plan) -> None:
    """Every slot a step reads is a graph input or produced by an earlier step."""
    fed = {plan.slots[i] for i in plan.graph.inputs}
    done = set(fed)
    produced = {o for s in plan.steps for o in s.outputs if o >= 0}
    for s in plan.steps:
        for r in plan._reads(s):
            assert r in done or r not in produced, f"{s.name} reads slot {r} before its producer"
        done.update(o for o in s.outputs if o >= 0)


def _inception(batch: int):
    g = optimize(suite.inception_bn())[0]
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return g, {g.inputs[0]: x}


def test_inception_pool_branch_runs_before_the_wide_convs(monkeypatch):
    """Inception's pool branches (the block input's last reader, then the 1x1 conv that
    shrinks it) run right after the block's input is complete, before its 1x1 / 3x3 branches;
    outputs equal the graph-order plan's exactly, the arena is smaller (batch 32: 10.75 MiB
    in graph order, 9.00 here, when measured)."""
    g, feeds = _inception(8)
    sess = runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)
    names = [s.name for s in plan.steps]
    _check_topological(plan)
    for pool, conv, later in (("pool3", "conv15", "conv9"), ("pool5", "conv22", "conv16")):
        assert names.index(pool) < names.index(conv) < names.index(later), names
    ours = sess.run(feeds)
    sess.run(feeds)  # (the second run replays the recorded arena)
    with monkeypatch.context() as m:
        _graph_order(m)
        plain = runtime.Session(g)
        base = plain.run(feeds)
        plain.run(feeds)
    assert [s.name for s in plain._fast(training=False, keep_all=False).steps] != names
    for k in base:
        np.testing.assert_array_equal(ours[k], base[k])
    assert sess.held_bytes < plain.held_bytes


def _in_graph_order(plan, g) -> bool:
    names = [s.name for s in plan.steps]
    return names == [n.name for n in g.nodes if n.name in set(names)]


def test_train_mode_and_chains_keep_graph_order():
    """Train mode keeps graph order (Dropout masks are drawn in it); a chain has one order."""
    g, _ = _inception(2)
    sess = runtime.Session(g)
    assert not _in_graph_order(sess._fast(training=False, keep_all=False), g)
    assert _in_graph_order(sess._fast(training=True, keep_all=False), g)
    chain = optimize(suite.vgg_bn())[0]
    assert _in_graph_order(runtime.Session(chain)._fast(training=False, keep_all=False), chain)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("batch", [1, 3])
def test_random_nets_same_outputs_in_any_order(monkeypatch, seed, batch):
    """Random DSL nets (residuals, concats on any axis, several outputs, Dropout masks as
    outputs): the scheduled plan is topological and gives exactly the graph-order plan's
    outputs."""
    g = optimize(random_network(seed, drop=0.0))[0]
    shape = tuple(batch if not isinstance(d, int) else d for d in g.values["x"].shape)
    feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    sess = runtime.Session(g)
    _check_topological(sess._fast(training=False, keep_all=False))
    ours = [sess.run(feeds), sess.run(feeds)]
    with monkeypatch.context() as m:
        _graph_order(m)
        base = runtime.Session(g).run(feeds)
    for got in ours:
        assert got.keys() == base.keys()
        for k in base:
            np.testing.assert_array_equal(got[k], base[k], err_msg=f"output {k}")


class _CountingSizes(dict):
    """Slot -> bytes, counting the lookups (the scheduler's work)."""

    lookups = 0

    def __getitem__(self, key):
        type(self).lookups += 1
        return super().__getitem__(key)


def test_constant_steps_are_placed_without_weighing_them():
    """Weight generators (constant steps: results held by the step, 0 pooled bytes) are
    placed as soon as they are ready, not weighed against every other ready step at each pick
    (DenseNet-121's ~600 made its scheduling take 0.8 s): on a chain of n steps each reading a
    weight from its own generator, the scheduler's size lookups grow linearly (a few per
    step: under 20 n; weighing them was ~n^2 / 2), and the generators, all ready at once, run
    first in graph order."""
    from types import SimpleNamespace

    n = 300
    steps, reads, producer = [], [], {}
    size = _CountingSizes()
    for k in range(n):  # generator k: slot 2k + 1 (0 bytes); chain step k: slot 2k + 2
        steps.append(SimpleNamespace(outputs=[2 * k + 1]))
        reads.append([])
        steps.append(SimpleNamespace(outputs=[2 * k + 2]))
        reads.append([2 * k, 2 * k + 1])  # the previous chain value (slot 0: the input)
        size[2 * k + 1], size[2 * k + 2] = 0, 1000
        producer[2 * k + 1], producer[2 * k + 2] = 2 * k, 2 * k + 1
    _CountingSizes.lookups = 0
    order = fast_compile.CompiledPlan._greedy_order(None, steps, reads, producer, size, set())
    assert _CountingSizes.lookups < 20 * n
    assert order == list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2))
