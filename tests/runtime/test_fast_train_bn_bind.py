"""Train-mode BatchNorm steps replaying their NumPy calls bound to their arrays
(`BatchNormStep._bind` / `_replay`, see `steps.base.BIND_CALLS`): a single-image BN records its
calls in a replayed run, and the next runs with the same input, scale, bias, residual and output
arrays (and the running statistics it stored itself) replay them.

Oracles: the same plan without binding (BIND_CALLS False: the same float operations in the same
dtypes, so outputs and running statistics are equal bit for bit), the reference plan (plain
kernels: another summation order; the bound of the train BN tests) and, through the reference,
the float64 formula those tests check. One session runs batch 1 -> 3 -> 1 -> 2 -> 1 (two arenas:
bound arrays meet other arrays and must compute afresh), each copy of the graph starting from the
same parameters and carrying its own running statistics from run to run."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.runtime.fast.steps import BatchNormStep
from graphnet.runtime.fast.steps import base as fast_base
from tests.helpers import assert_close

ORDER = (1, 1, 1, 3, 1, 1, 2, 1, 1)


def _net(hw: tuple[int, int], channels: int = 6, seed: int = 3) -> Graph:
    """x (N, 3, H, W) -> conv 3x3 -> BN -> Relu (r1) -> conv 3x3 -> BN -> Add r1 -> Relu ->
    conv 1x1 -> BN -> MaxPool 2x2 (the output). Momentum 0.8, epsilon 1e-3, the statistics far
    from the initial running ones."""
    rng = np.random.default_rng(seed)
    g = Graph("bn_bind")
    g.add_input("x", (None, 3, *hw))
    y, r1 = "x", ""
    for k, (cin, ks) in enumerate(((3, 3), (channels, 3), (channels, 1))):
        g.add_param(f"w{k}", (rng.standard_normal((channels, cin, ks, ks)) / ks).astype(np.float32))
        pad = ks // 2
        y = g.add_node("Conv", [y, f"w{k}"], {"pads": [pad] * 4}, name=f"conv{k}").outputs[0]
        for p, arr in (
            ("scale", rng.uniform(0.5, 1.5, channels)),
            ("B", rng.normal(0.0, 1.0, channels)),
            ("mean", rng.normal(0.0, 1.0, channels)),
            ("var", rng.uniform(0.5, 2.0, channels)),
        ):
            g.add_param(f"bn{k}.{p}", arr.astype(np.float32))
        bn = [y, *(f"bn{k}.{p}" for p in ("scale", "B", "mean", "var"))]
        attrs = {"epsilon": 1e-3, "momentum": 0.8}
        y = g.add_node("BatchNormalization", bn, attrs, name=f"bn{k}").outputs[0]
        if k == 1:
            y = g.add_node("Add", [y, r1], {}, name="add").outputs[0]
        if k < 2:
            y = g.add_node("Relu", [y], {}, name=f"relu{k}").outputs[0]
        r1 = r1 or y
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    g.mark_output(g.add_node("MaxPool", [y], attrs, name="pool").outputs[0])
    return g


def _run(sess: runtime.Session, feeds: dict, bind: bool) -> dict:
    fast_base.BIND_CALLS = bind
    try:
        return sess.run(feeds, mode="train")
    finally:
        fast_base.BIND_CALLS = True


def _replayed(sess: runtime.Session) -> list[str]:
    plan = sess._fast(training=True, keep_all=False)
    return [
        s.name
        for s in plan.steps
        if isinstance(s, BatchNormStep) and s._bound is not None and s._replayed
    ]


def _check_equal(graphs: list[Graph], got: list[dict], what: str) -> None:
    """The bound session's outputs and parameters equal the unbound one's, bit for bit."""
    for o in got[0]:
        np.testing.assert_array_equal(got[0][o], got[1][o], err_msg=f"{what} {o}")
    for p, arr in graphs[0].params.items():
        np.testing.assert_array_equal(arr, graphs[1].params[p], err_msg=f"{what} {p}")


@pytest.mark.parametrize("hw", [(5, 7), (23, 25), (16, 16)])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_bound_batchnorms_equal_unbound_and_reference(hw, offset):
    """Rows of 35 elements, of 575 (the unbuffered passes) and a power of two; data near and far
    from zero. Bound vs unbound bit for bit; vs the reference plan: Y ~ 1 after each BN, the
    convs' float32 sums of <= 54 products of size ~|offset| round to ~1e-7 of it (3e-6 at
    offset 30, against channel stds ~0.5-2), the corrected two-pass statistics keep ~1e-6 of Y
    and the blend of the float64 running statistics ~1e-7 of them: 1e-5 + 2e-7 * offset."""
    graphs = [_net(hw) for _ in range(3)]
    on, off = runtime.Session(graphs[0]), runtime.Session(graphs[1])
    ref = runtime.Session(graphs[2], plan="reference")
    tol = 1e-5 + 2e-7 * offset
    rng = np.random.default_rng(hw[0])
    for k, n in enumerate(ORDER):
        feeds = {"x": (offset + rng.standard_normal((n, 3, *hw))).astype(np.float32)}
        got = [_run(on, feeds, True), _run(off, feeds, False)]
        want = ref.run(feeds, mode="train")
        what = f"run {k} batch {n}"
        _check_equal(graphs, got, what)
        for o in want:
            assert_close(got[0][o], want[o], rtol=1e-4, atol=tol * 10, what=f"{what} {o}")
        for p, arr in graphs[2].params.items():
            assert_close(graphs[0].params[p], arr, rtol=1e-5, atol=tol, what=f"{what} {p}")
    assert len(_replayed(on)) == 3, "the BNs did not replay: the test would be vacuous"


def test_suite_resnet20_bound_equals_unbound():
    """ResNet-20's 21 train BNs (residual Adds and ReLUs fused, 1024-element rows unbuffered)
    replay at batch 1; outputs and running statistics bit for bit across 1 -> 3 -> 1."""
    graphs = [suite.build("resnet20") for _ in range(2)]
    on, off = runtime.Session(graphs[0]), runtime.Session(graphs[1])
    inp = graphs[0].inputs[0]
    rng = np.random.default_rng(5)
    for k, n in enumerate((1, 1, 1, 3, 1, 1)):
        feeds = {inp: rng.standard_normal((n, 3, 32, 32)).astype(np.float32)}
        got = [_run(on, feeds, True), _run(off, feeds, False)]
        _check_equal(graphs, got, f"run {k} batch {n}")
    assert len(_replayed(on)) >= 20


def test_a_bound_batchnorm_sees_new_parameters_and_feeds():
    """After the calls are bound: a new scale (`set_param`), a running mean edited in place, the
    fed array edited in place, a new feed array, a rejected feed: each run equals the unbound
    session's under the same changes, bit for bit."""
    hw = (9, 11)
    graphs = [_net(hw, channels=5, seed=8) for _ in range(2)]
    sessions = [runtime.Session(g) for g in graphs]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, *hw)).astype(np.float32)
    feeds = [{"x": x}, {"x": x.copy()}]

    def check(what: str) -> None:
        got = [_run(s, f, b) for s, f, b in zip(sessions, feeds, (True, False), strict=True)]
        _check_equal(graphs, got, what)

    for k in range(3):
        check(f"bound {k}")
    assert len(_replayed(sessions[0])) == 3
    new = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    for g in graphs:
        g.set_param("bn1.scale", new.copy())
    check("a new scale")
    check("a new scale, bound again")
    for g in graphs:
        g.params["bn0.mean"][...] = 3.0  # (the array the BN stored last run)
    check("a running mean edited in place")
    y = rng.standard_normal(x.shape).astype(np.float32)
    for f in feeds:
        f["x"][...] = y
    check("the fed array edited in place")
    for f in feeds:
        f["x"] = (y + 1.0).astype(np.float32)
    check("a new feed array")
    check("a new feed array again")
    for s, f, b in zip(sessions, feeds, (True, False), strict=True):
        with pytest.raises(Exception):  # noqa: B017,PT011 - whichever error the check raises
            _run(s, {"x": f["x"][:, :2]}, b)
    check("after a rejected feed")
    check("after a rejected feed, bound again")
    assert len(_replayed(sessions[0])) == 3


@pytest.mark.parametrize(
    ("hw", "stride", "relus"),
    [
        ((5, 7), 1, (True, True, False)),  # ConvBatchNormStep: per-member ReLUs on Z's rows
        ((24, 23), 1, (True, True, True)),  # one ReLU over Z, 552-element rows (unbuffered)
        ((5, 7), 2, (True, True, False)),  # BatchNormGroupStep
        ((47, 45), 2, (False, True, True)),  # 24 x 23 = 552-element rows
    ],
)
def test_bound_grouped_batchnorms_equal_unbound(hw, stride, relus):
    """An Inception-like block's BNs grouped (stride 2) or fused with their merged 1x1 convs
    (stride 1) replay their calls at batch 1 (the fused step reads the feed: one array per batch
    size, new values written into it); outputs and running statistics equal the unbound
    session's bit for bit across 1 -> 3 -> 1 -> 2 -> 1, and stay close to the reference plan's
    (the group tests' bound: Y ~ 1, float32 sums of 6 products)."""
    from graphnet.runtime.fast.steps import BatchNormGroupStep
    from graphnet.runtime.fast.steps.trainfuse import ConvBatchNormStep
    from tests.runtime.test_fast_train_bn_group import _block, _feeds

    graphs = [_block(hw, stride, relus) for _ in range(3)]
    for g in graphs:  # (the Concat no graph output: its buffer, the BNs' outputs, pooled)
        g.outputs = [g.add_node("Relu", [g.outputs[0]], {}, name="last").outputs[0]]
    on, off = runtime.Session(graphs[0]), runtime.Session(graphs[1])
    ref = runtime.Session(graphs[2], plan="reference")
    kind = ConvBatchNormStep if stride == 1 else BatchNormGroupStep
    (step,) = [s for s in on._fast(training=True, keep_all=False).steps if isinstance(s, kind)]
    fed: dict[int, dict] = {}  # one array per batch size, new values written into it
    for k, n in enumerate(ORDER):
        feeds = fed.setdefault(n, _feeds(n, hw, 0.0, seed=k))
        feeds["x"][...] = _feeds(n, hw, 0.0, seed=k)["x"]
        got = [_run(on, feeds, True), _run(off, feeds, False)]
        _check_equal(graphs, got, f"run {k} batch {n}")
        want = ref.run(feeds, mode="train")
        for o in want:
            assert_close(got[0][o], want[o], rtol=1e-5, atol=2e-5, what=f"run {k} {o}")
        for p, arr in graphs[2].params.items():
            assert_close(graphs[0].params[p], arr, rtol=1e-5, atol=2e-5, what=f"run {k} {p}")
    assert step._bound is not None and step._replayed, "no replay: the test would be vacuous"


@pytest.mark.parametrize(("hw", "offset"), [((5, 7), 0.0), ((24, 23), 50.0)])
def test_a_bound_batchnorm_matches_float64(hw, offset):
    """x (the feed: one array, new values written into it each run) -> BN -> Relu -> MaxPool:
    the bound BN's output and running statistics against the float64 formula run after run
    (each from the running statistics the last run stored). Tolerances: the corrected
    two-pass statistics keep ~1e-6 of Y ~ 1 whatever the offset (the float32 x itself is
    exact here); the running mean ~ offset, blended in float64 and rounded to float32:
    1e-6 relative; the variance ~1."""
    c = 5
    rng = np.random.default_rng(1)
    g = Graph("bn_feed")
    g.add_input("x", (None, c, *hw))
    start = {
        "scale": rng.uniform(0.5, 1.5, c),
        "B": rng.normal(0.0, 1.0, c),
        "mean": rng.normal(0.0, 1.0, c),
        "var": rng.uniform(0.5, 2.0, c),
    }
    for p, arr in start.items():
        g.add_param(f"bn.{p}", arr.astype(np.float32))
    attrs = {"epsilon": 1e-3, "momentum": 0.8}
    y = g.add_node("BatchNormalization", ["x", *(f"bn.{p}" for p in start)], attrs, name="bn")
    r = g.add_node("Relu", [y.outputs[0]], {}, name="relu").outputs[0]
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    g.mark_output(g.add_node("MaxPool", [r], pool, name="pool").outputs[0])
    sess = runtime.Session(g)
    x = np.empty((1, c, *hw), np.float32)
    for k in range(6):
        x[...] = offset + rng.standard_normal(x.shape) * rng.uniform(0.5, 2.0, (1, c, 1, 1))
        old = {p: g.params[f"bn.{p}"].astype(np.float64) for p in ("mean", "var")}
        got = sess.run({"x": x}, mode="train")[g.outputs[0]]
        x64 = x.astype(np.float64)
        mu, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
        col = (slice(None), None, None)
        scale, bias = (g.params[f"bn.{p}"].astype(np.float64) for p in ("scale", "B"))
        want = np.maximum((x64 - mu[col]) / np.sqrt(var[col] + 1e-3) * scale[col] + bias[col], 0)
        n, _, h, w = want.shape
        want = want[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
        assert_close(got, want.max(axis=(3, 5)), rtol=1e-5, atol=1e-5, what=f"run {k} Y")
        for p, stat in (("mean", mu), ("var", var)):
            blended = 0.8 * old[p] + 0.2 * stat
            assert_close(g.params[f"bn.{p}"], blended, rtol=1e-6, atol=1e-6, what=f"run {k} {p}")
    (bn,) = [s for s in sess._fast(training=True, keep_all=False).steps if s.name == "bn"]
    assert bn._bound is not None and bn._replayed, "no replay: the test would be vacuous"


class _Lockstep:
    """Three copies of a graph run in lockstep, the same changes made to each between runs: the
    default plan binding its calls, the same plan with BIND_CALLS False (the same float
    operations: outputs and running statistics equal bit for bit) and the reference plan (an
    independent oracle: plain kernels, another summation order; the bound of the train BN
    tests above: Y ~ 1 after each BN, float32 sums of <= 6 products, 2e-5)."""

    def __init__(self, make) -> None:
        self.graphs = [make() for _ in range(3)]
        self.sessions = [
            runtime.Session(self.graphs[0]),
            runtime.Session(self.graphs[1]),
            runtime.Session(self.graphs[2], plan="reference"),
        ]

    def set_param(self, name: str, value: np.ndarray) -> None:
        for g in self.graphs:  # (a new array for each copy)
            g.set_param(name, value.copy())

    def check(self, feeds: dict, what: str) -> None:
        on, off, ref = self.sessions
        got = [_run(on, feeds, True), _run(off, feeds, False)]
        _check_equal(self.graphs[:2], got, what)
        want = ref.run(feeds, mode="train")
        for o in want:
            assert_close(got[0][o], want[o], rtol=1e-5, atol=2e-5, what=f"{what} {o}")
        for p, arr in self.graphs[2].params.items():
            assert_close(self.graphs[0].params[p], arr, rtol=1e-5, atol=2e-5, what=f"{what} {p}")

    def steps(self, kind: type) -> list:
        plan = self.sessions[0]._fast(training=True, keep_all=False)
        return [s for s in plan.steps if isinstance(s, kind)]


def _feed_bn(c: int = 4, hw: tuple[int, int] = (6, 7)) -> Graph:
    """x (the feed) -> BN -> Add r (a second feed: the residual) -> Relu -> MaxPool 2x2 (the
    output)."""
    rng = np.random.default_rng(3)
    g = Graph("bn_feed_res")
    g.add_input("x", (None, c, *hw))
    g.add_input("r", (None, c, *hw))
    for p, arr in (
        ("scale", rng.uniform(0.5, 1.5, c)),
        ("B", rng.normal(0.0, 1.0, c)),
        ("mean", rng.normal(0.0, 1.0, c)),
        ("var", rng.uniform(0.5, 2.0, c)),
    ):
        g.add_param(f"bn.{p}", arr.astype(np.float32))
    ins = ["x", *(f"bn.{p}" for p in ("scale", "B", "mean", "var"))]
    y = g.add_node("BatchNormalization", ins, {"epsilon": 1e-3, "momentum": 0.8}, name="bn")
    y = g.add_node("Add", [y.outputs[0], "r"], {}, name="add").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu").outputs[0]
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    g.mark_output(g.add_node("MaxPool", [y], pool, name="pool").outputs[0])
    return g


def test_a_replayed_batchnorm_reads_new_parameters_and_residual():
    """One BN (the residual Add and ReLU fused) replaying at batch 1; between runs a new array
    (`set_param`) for its bias, its running mean and variance, its scale, then a new residual
    array: each run against the unbound session and the reference plan, twice (the second run
    replays what the first bound)."""
    ls = _Lockstep(lambda: _feed_bn())
    rng = np.random.default_rng(11)
    x, r = (rng.standard_normal((1, 4, 6, 7)).astype(np.float32) for _ in range(2))
    feeds = {"x": x, "r": r}
    for k in range(3):
        ls.check(feeds, f"warm {k}")
    (bn,) = ls.steps(BatchNormStep)
    assert bn._bound is not None and bn._replayed, "no replay: the test would be vacuous"
    changes = [
        ("bn.B", rng.normal(3.0, 1.0, 4)),
        ("bn.mean", rng.normal(5.0, 1.0, 4)),
        ("bn.var", rng.uniform(4.0, 9.0, 4)),
        ("bn.scale", rng.uniform(-2.0, -0.5, 4)),
    ]
    for name, value in changes:
        ls.set_param(name, value.astype(np.float32))
        for k in range(2):
            ls.check(feeds, f"new {name} {k}")
    for k in range(2):
        feeds = {"x": x, "r": (rng.standard_normal(x.shape) + 2.0).astype(np.float32)}
        ls.check(feeds, f"new residual array {k}")
        ls.check(feeds, f"new residual array {k} again")
    assert bn._replayed


@pytest.mark.parametrize("stride", [1, 2])
def test_replayed_grouped_batchnorms_read_new_weights_scale_and_bias(stride):
    """An Inception-like block (a ReLU after its Concat); its BNs grouped (stride 2) or fused
    with their merged 1x1 convs (stride 1), replaying at batch 1. Between runs a new array for
    a member's scale, a member's bias, the first conv's weights, the second conv's bias, a
    member's running mean: each run against the unbound session and the reference plan."""
    from graphnet.runtime.fast.steps import BatchNormGroupStep
    from graphnet.runtime.fast.steps.trainfuse import ConvBatchNormStep
    from tests.runtime.test_fast_train_bn_group import _block, _feeds

    kind = ConvBatchNormStep if stride == 1 else BatchNormGroupStep
    hw = (5, 7) if stride == 1 else (9, 11)

    def make() -> Graph:
        g = _block(hw, stride, (True, False, True))
        g.outputs = [g.add_node("Relu", [g.outputs[0]], {}, name="last").outputs[0]]
        return g

    ls = _Lockstep(make)
    feeds = _feeds(1, hw, 0.0, seed=5)
    for k in range(3):
        ls.check(feeds, f"warm {k}")
    (step,) = ls.steps(kind)
    assert step._bound is not None and step._replayed, "no replay: the test would be vacuous"
    rng = np.random.default_rng(stride)
    g = ls.graphs[0]
    changes = [
        ("c2.scale", rng.uniform(-2.0, -0.5, g.params["c2.scale"].shape)),
        ("c0.B", rng.normal(5.0, 1.0, g.params["c0.B"].shape)),
        ("c0.w", 2.0 * g.params["c0.w"]),
        ("c1.b", rng.normal(3.0, 1.0, g.params["c1.b"].shape)),
        ("c1.mean", rng.normal(4.0, 1.0, g.params["c1.mean"].shape)),
    ]
    for name, value in changes:
        ls.set_param(name, value.astype(np.float32))
        for k in range(2):
            ls.check(feeds, f"new {name} {k}")
    assert step._replayed


def test_grouped_batchnorms_into_a_concat_output_after_a_failed_run(monkeypatch):
    """Grouped BNs (stride 2, batch 1) writing slices of a Concat that is the graph output (a
    fresh buffer every run), the train runs 1 and 3 failing when the second member's output is
    allocated (before any running statistics are written: as the reference not run): the group
    binds its calls in a run and the next run, its outputs other arrays, must compute afresh
    (`_replay_group`'s output check), not replay into the former buffer. Each good run against
    the unbound session and the reference plan."""
    from graphnet.errors import KernelError
    from graphnet.runtime.fast.steps import BatchNormGroupStep, Run
    from tests.runtime.test_fast_train_bn_group import _block

    ls = _Lockstep(lambda: _block((5, 7), 2))
    (step,) = ls.steps(BatchNormGroupStep)
    target = step.members[1].outputs[0]
    armed = {"on": False}
    alloc, replay = Run.alloc, BatchNormGroupStep._replay_group
    replays = []

    def failing_alloc(self, slot, shape, dtype):
        if armed["on"] and slot == target:
            raise FloatingPointError("injected")
        return alloc(self, slot, shape, dtype)

    def counted(self, run, xs, bound):
        done = replay(self, run, xs, bound)
        replays.append(done)
        return done

    monkeypatch.setattr(Run, "alloc", failing_alloc)
    monkeypatch.setattr(BatchNormGroupStep, "_replay_group", counted)
    rng = np.random.default_rng(9)
    for k in range(6):
        feeds = {"x": rng.standard_normal((1, 6, 5, 7)).astype(np.float32)}
        if k in (1, 3):
            armed["on"] = True
            for s, b in zip(ls.sessions[:2], (True, False), strict=True):
                with pytest.raises(KernelError, match="injected"):
                    _run(s, feeds, b)
            armed["on"] = False
        else:
            ls.check(feeds, f"run {k}")
    assert any(replays), "the bound group never met its arrays again: the test would be vacuous"
