"""Convs replaying their NumPy calls bound to their arrays (ConvStep's `_replay`, see
`steps.base.BIND_CALLS`): a batch-1 conv on one thread records the calls it makes in a
replayed run, and the next runs with the same arrays (input, weight, bias, residual, output,
workspaces: the arena's views) replay them without the algorithm's Python.

Oracles: the same plan without binding (BIND_CALLS False: the same NumPy calls, so the outputs
are equal bit for bit) and the reference plan (plain kernels; float32 convs summed in another
order: the differential tests' relative bound, 1e-4 of the output's largest magnitude). One
session runs batch 1, 3 and 1 again (two recorded layouts, the arena replaced by a larger one in
between), so bound calls meet other arrays and must compute afresh."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.passes import optimize
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast.steps import ConvStep
from graphnet.runtime.fast.steps import base as fast_base
from graphnet.runtime.fast.steps import linear as fast_linear
from tests.runtime.test_fast_differential import _random_graph

RTOL = 1e-4  # |fast - reference| / max |reference|, as the differential tests


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = max(float(np.abs(want).max()), 1e-3)
    err = float(np.abs(got - want).max()) / scale
    assert err <= RTOL, f"{what}: max |diff| / max |ref| = {err:.2e}"


def _bound(sess: runtime.Session, mode: str = "inference", convs: bool = True) -> list[str]:
    """The steps (the convs only, by default) holding bound calls."""
    plan = sess._fast(training=mode == "train", keep_all=False)
    return [
        s.name
        for s in plan.steps
        if (isinstance(s, ConvStep) or not convs) and getattr(s, "_bound", None) is not None
    ]


def _runs(g: Graph, feeds: dict, order: tuple, mode: str = "inference") -> None:
    """Runs `order` (batch sizes) on one session with binding and one without, each output
    equal bit for bit between them and close to the reference plan's."""
    on, off = runtime.Session(g), runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    start = dict(g.params)
    for k, n in enumerate(order):
        got = {}
        for name, sess, bind in (("on", on, True), ("off", off, False)):
            fast_base.BIND_CALLS = bind
            try:
                got[name] = sess.run(feeds[n], mode=mode)
            finally:
                fast_base.BIND_CALLS = True
            for p, arr in start.items():  # (train mode's running statistics: the same arrays)
                if g.params[p] is not arr:
                    g.set_param(p, arr)
        want = ref.run(feeds[n], mode=mode)
        for p, arr in start.items():
            if g.params[p] is not arr:
                g.set_param(p, arr)
        for o in g.outputs:
            what = f"{g.name} {mode} run {k} batch {n} output {o}"
            np.testing.assert_array_equal(got["on"][o], got["off"][o], err_msg=what)
            _close(got["on"][o], want[o], what)
    assert not _bound(off, mode, convs=False)


@pytest.mark.parametrize(
    "name", ["lenet5", "inception_bn", "resnet20", "norms_acts", "vgg_bn", "video3d"]
)
def test_suite_models_replay_bound_calls(name):
    """Every algorithm that binds (pointwise, colstack on its own rows and padded, im2col wide
    and exact with a fused pool, phasepool, Winograd F(4x4) and F(2x2), wino3d with its fused
    pools; Gemm; the pairwise, pairs and tiled pools, one fused in a Concat) at the suite's
    shapes, batch 1 -> 3 -> 1."""
    g = optimize(suite.build(name))[0]
    inp = g.inputs[0]
    shape = g.values[inp].shape
    rng = np.random.default_rng(7)
    feeds = {n: {inp: rng.standard_normal((n, *shape[1:])).astype(np.float32)} for n in (1, 3)}
    _runs(g, feeds, (1, 1, 1, 3, 3, 1, 1))
    sess = runtime.Session(g)
    for _ in range(3):
        sess.run(feeds[1])
    assert _bound(sess), "no conv bound its calls: the test would be vacuous"


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_replay_bound_calls(seed):
    """Random small graphs (odd sizes, strides, dilations, groups, pads, residuals, leaky
    activations; see the differential tests), inference and train mode, batch 1 -> 3 -> 1."""
    g, _ = _random_graph(seed)
    c, h, w = g.values["x"].shape[1:]
    rng = np.random.default_rng(seed)
    feeds = {n: {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)} for n in (1, 3)}
    _runs(g, feeds, (1, 1, 1, 3, 1, 1))
    _runs(g, feeds, (1, 1, 3, 1, 1), mode="train")


def test_random_graphs_bind_some_convs():
    """The random graphs' convs bind (the test above is not vacuous)."""
    bound = 0
    for seed in range(12):
        g, _ = _random_graph(seed)
        c, h, w = g.values["x"].shape[1:]
        x = np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)
        sess = runtime.Session(g)
        for _ in range(3):
            sess.run({"x": x})
        bound += len(_bound(sess))
    assert bound >= 6


def test_a_rebound_step_reads_no_stale_array():
    """After its calls are bound: a new feed array (another object), new values written into
    the fed array itself, a replaced weight (`set_param`) and a larger batch in between (the
    arena replaced): every output is the reference plan's for what was fed then."""
    g = optimize(suite.build("lenet5"))[0]
    inp = g.inputs[0]
    shape = g.values[inp].shape[1:]
    rng = np.random.default_rng(11)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    out = g.outputs[0]
    x = rng.standard_normal((1, *shape)).astype(np.float32)

    def check(feed: np.ndarray, what: str) -> None:
        _close(sess.run({inp: feed})[out], ref.run({inp: feed.copy()})[out], what)

    for k in range(3):
        check(x, f"bound {k}")
    assert _bound(sess)
    y = rng.standard_normal((1, *shape)).astype(np.float32)
    check(y, "another feed array")
    check(x, "the first feed again")
    x[...] = rng.standard_normal(x.shape).astype(np.float32)  # the same array, new values
    check(x, "new values in the fed array")
    conv_w = next(p for p in g.params if g.params[p].ndim == 4)
    g.set_param(conv_w, (g.params[conv_w] * -0.5).astype(np.float32))
    check(x, "a replaced weight")
    check(x, "a replaced weight, bound again")
    check(rng.standard_normal((3, *shape)).astype(np.float32), "batch 3")
    check(x, "batch 1 after 3")
    check(x, "batch 1 after 3, bound again")


def test_a_bound_phasepool_sees_a_non_finite_input():
    """LeNet's first conv (phasepool: taps outside a phase's kernel multiply by zero weights)
    replays a guard first: an inf in the fed array (the same object as bound) stops the replay
    and the conv runs as im2col, as without binding (no NaN where the conv has none)."""
    g = optimize(suite.build("lenet5"))[0]
    inp = g.inputs[0]
    plan_algos = {
        r["algorithm"] for r in runtime.Session(g)._fast(training=False, keep_all=False).describe()
    }
    assert any(a.startswith("phasepool") for a in plan_algos)
    x = np.random.default_rng(5).standard_normal((1, *g.values[inp].shape[1:])).astype(np.float32)
    sess, off = runtime.Session(g), runtime.Session(g)
    for _ in range(3):
        sess.run({inp: x})
    assert _bound(sess)
    x[0, 0, 3, 4] = np.inf
    with np.errstate(invalid="ignore"):  # (inf - inf in the later layers: both plans)
        got = sess.run({inp: x})
        fast_base.BIND_CALLS = False
        try:
            want = off.run({inp: x})
        finally:
            fast_base.BIND_CALLS = True
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], want[o], err_msg=o)


def test_a_step_fed_new_arrays_backs_off_recording():
    """A conv whose input is a new array every run (the caller's feed) never replays: it stops
    recording for 1, 2, 4, ... runs (steps.base.may_record), and its outputs stay right."""
    g = optimize(suite.build("lenet5"))[0]
    inp = g.inputs[0]
    rng = np.random.default_rng(13)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    first = sess._fast(training=False, keep_all=False).steps[0]
    assert isinstance(first, ConvStep)
    skipped = 0
    for k in range(12):
        x = rng.standard_normal((1, *g.values[inp].shape[1:])).astype(np.float32)
        for o, want in ref.run({inp: x}).items():
            _close(sess.run({inp: x})[o], want, f"run {k}")
        skipped += first._bound is None
    assert first._no_record and skipped >= 4


def test_a_graph_output_gemm_replays_into_its_own_buffer():
    """LeNet's last Gemm (with its Softmax) writes the graph output, a fresh array every run:
    its bound calls write a buffer of its own, copied into each run's output. The caller gets a
    new array each run; writing into it changes nothing the next run computes."""
    g = optimize(suite.build("lenet5"))[0]
    inp = g.inputs[0]
    out = g.outputs[0]
    x = np.random.default_rng(17).standard_normal((1, *g.values[inp].shape[1:]))
    x = x.astype(np.float32)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    want = ref.run({inp: x})[out]
    got = [sess.run({inp: x})[out] for _ in range(4)]
    last = sess._fast(training=False, keep_all=False).steps[-1]
    assert isinstance(last, fast_linear.GemmStep)
    assert last._bound is not None and last._bound[7] is not None
    assert got[-1] is not got[-2] and got[-1] is not last._bound[7]
    got[-1][...] = np.nan  # the caller's array
    again = sess.run({inp: x})[out]
    for k, arr in enumerate([*got[:-1], again]):
        _close(arr, want, f"run {k}")


def _strided_feed_net(kind: str) -> Graph:
    from graphnet import nn

    b = nn.Network(f"strided_{kind}", seed=0)
    x = b.input("x", (None, 8, 6, 6))
    # (the step reading x is not the graph's output step: those are not bound)
    if kind == "pointwise":  # (a 1x1 conv: its GEMM reads x reshaped to (n, c, h * w))
        y = nn.Conv(4, 3, padding=1)(nn.ReLU()(nn.Conv(16, 1)(x)))
    elif kind == "merged":  # (two 1x1 convs of one input: one merged GEMM)
        y = nn.Conv(4, 3, padding=1)(nn.concat([nn.Conv(6, 1)(x), nn.Conv(5, 1)(x)]))
    elif kind == "one_row":  # (colstack's 1xk kernel over whole rows: x reshaped)
        y = nn.Conv(4, 3, padding=1)(nn.ReLU()(nn.Conv(5, (1, 3))(x)))
    else:  # "flatten": a Gemm reading the flattened input
        y = nn.Linear(7)(nn.Flatten()(x))
    b.output(y, name="y")
    return b.graph


@pytest.mark.parametrize("kind", ["pointwise", "merged", "one_row", "flatten"])
def test_a_strided_feed_updated_in_place_is_read_every_run(kind):
    """A Fortran-ordered feed (the same array every run, its values updated in place) read by
    a bound step whose calls reshape it: the reshape is a copy, so the recorded calls would read
    the first run's copy ever after (|fast - reference| 0.3-1.1 from the third run, a read-only
    review's repro). Such a recording is not replayed (conv._view, GemmStep's check). Oracle:
    the reference plan every run."""
    g = _strided_feed_net(kind)
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rng = np.random.default_rng(0)
    feed = np.asfortranarray(rng.standard_normal((1, 8, 6, 6)).astype(np.float32))
    for k in range(6):
        feed[...] = rng.standard_normal(feed.shape)
        got, want = fast.run({"x": feed})["y"], ref.run({"x": feed})["y"]
        _close(got, want, f"{kind} run {k}")


def test_convs_into_a_graph_output_concat_back_off_from_recording(monkeypatch):
    """Convs placed into a Concat that is a graph output get a new output slice every run, so
    their recordings never replay: they record after 1, 2, 4, ... runs (RECORD_BACKOFF_MAX),
    not every run (99 recordings in 50 runs before, a read-only review's probe). Outputs against
    the reference plan every run."""
    from graphnet import nn

    b = nn.Network("cat_out", seed=0)
    x = b.input("x", (None, 8, 8, 8))
    h = nn.ReLU()(nn.Conv(8, 3, padding=1)(x))
    b.output(nn.concat([nn.Conv(4, 3, padding=1)(h), nn.Conv(4, (1, 3), padding="same")(h)]), "y")
    g = b.graph
    recordings = [0]
    chunked = fast_linear.conv_chunked

    def spy(*args, **kw):
        recordings[0] += kw.get("rec") is not None
        return chunked(*args, **kw)

    monkeypatch.setattr(fast_linear, "conv_chunked", spy)
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    feed = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)}
    want = ref.run(feed)["y"]
    for k in range(50):
        _close(fast.run(feed)["y"], want, f"run {k}")
    # conv1 once; each Concat conv at runs 1, 3, 6, 11, 20, 37 at most (backoff 1, 2, 4 ...)
    assert recordings[0] <= 1 + 2 * 7, recordings[0]


def _winograd_net() -> Graph:
    """Winograd convs on every path that binds at batch 1: `_winograd_m` from NCHW (32x32
    planes of 4 KiB alias, see conv.WINOGRAD_ALIASED_PLANE_BYTES) writing a channels-last
    hand-off, `_winograd_cl` reading it with a residual added (over its own buffer or not),
    cropped tiles (30x30 and 13x13 outputs under F(4x4)), a bias and ReLU, LeakyReLU, no
    activation, a stride-2 conv (not Winograd) in between."""
    net = nn.Network("wino_bind", seed=3)
    x = net.input("x", (None, 32, 32, 32))
    y1 = nn.ReLU()(nn.Conv(48, 3, padding=1)(x))
    y2 = nn.ReLU()(nn.add(y1, nn.Conv(48, 3, padding=1, bias=False)(y1)))
    y3 = nn.Conv(56, 3, padding=0)(y2)  # 30x30: cropped tiles
    y4 = nn.LeakyReLU(0.1)(nn.Conv(56, 3, padding=1)(y3))
    y5 = nn.Conv(64, 3, stride=2, padding=0)(y4)  # 14x14
    y6 = nn.ReLU()(nn.Conv(64, 3, padding=0)(y5))  # 12x12
    y7 = nn.Conv(64, 3, padding=(1, 1))(nn.Conv(64, 3, padding=1)(y6))
    y = nn.Linear(10)(nn.Flatten()(nn.GlobalAvgPool()(nn.add(y6, y7))))
    net.output(y, name="out")
    return net.graph


def _winograd_bound(sess: runtime.Session) -> list[str]:
    plan = sess._fast(training=False, keep_all=False)
    return [
        s.name
        for s in plan.steps
        if isinstance(s, ConvStep)
        and s._bound is not None
        and str(s._bound[10]).startswith("winograd")
    ]


def test_winograd_convs_replay_bound_calls():
    """Winograd's bound calls (conv.BIND_ALGORITHMS) bit-equal to the unbound plan and close
    to the reference across batch 1 -> 3 -> 1 -> 2 on one session; most of the net's Winograd
    convs bind (the test is not vacuous), channels-last hand-offs among them."""
    g = optimize(_winograd_net())[0]
    rng = np.random.default_rng(19)
    feeds = {n: {"x": rng.standard_normal((n, 32, 32, 32)).astype(np.float32)} for n in (1, 2, 3)}
    _runs(g, feeds, (1, 1, 1, 3, 3, 1, 1, 2, 2, 1, 1))
    sess = runtime.Session(g)
    for _ in range(3):
        sess.run(feeds[1])
    bound = _winograd_bound(sess)
    assert len(bound) >= 4, bound
    plan = sess._fast(training=False, keep_all=False)
    handoffs = [s for s in plan.steps if s.name in bound and s._bound[12] is not None]
    assert handoffs, "no channels-last output bound"


def test_bound_winograd_reads_no_stale_array(monkeypatch):
    """After the Winograd convs bound their calls: the fed array mutated in place, a new feed
    array, replaced weights (`set_param`), a larger batch, an exception mid-run (a bound
    step's replay raises in a replayed run), then good runs: every output is the reference
    plan's for what was fed then."""
    g = optimize(_winograd_net())[0]
    rng = np.random.default_rng(23)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    x = rng.standard_normal((1, 32, 32, 32)).astype(np.float32)

    def check(feed: np.ndarray, what: str) -> None:
        _close(sess.run({"x": feed})["out"], ref.run({"x": feed.copy()})["out"], what)

    for k in range(3):
        check(x, f"bound {k}")
    assert _winograd_bound(sess)
    x[...] = rng.standard_normal(x.shape).astype(np.float32)
    check(x, "new values in the fed array")
    check(rng.standard_normal(x.shape).astype(np.float32), "another feed array")
    check(x, "the first feed again")
    check(x, "the first feed, bound again")
    conv_w = [p for p in g.params if g.params[p].ndim == 4]
    for p in (conv_w[1], conv_w[-1]):
        g.set_param(p, (g.params[p] * -0.5).astype(np.float32))
    check(x, "replaced weights")
    check(x, "replaced weights, bound again")
    check(rng.standard_normal((3, 32, 32, 32)).astype(np.float32), "batch 3")
    plan = sess._fast(training=False, keep_all=False)
    names = _winograd_bound_names(sess, x)
    victim = [s for s in plan.steps if s.name in names][-1]  # (the steps before it replayed)
    original = victim._replay

    def boom(*args: object) -> bool:
        raise RuntimeError("mid-run")

    victim._replay = boom  # type: ignore[method-assign]
    # (by the steps: the whole-run replay would not call the step's _replay; its own
    # exceptions: tests/runtime/test_fast_whole_run.py)
    monkeypatch.setattr(fast_compile, "REPLAY_RUNS", False)
    with pytest.raises(Exception, match="mid-run"):
        sess.run({"x": x})
    monkeypatch.setattr(fast_compile, "REPLAY_RUNS", True)
    victim._replay = original  # type: ignore[method-assign]
    for k in range(3):
        check(x, f"after an exception {k}")
    assert _winograd_bound(sess)


def _winograd_bound_names(sess: runtime.Session, x: np.ndarray) -> list[str]:
    for _ in range(3):
        sess.run({"x": x})
    names = _winograd_bound(sess)
    assert names
    return names


def _wino3d_net() -> Graph:
    """wino3d convs (kt x 3 x 3) on the paths that bind at batch 1: a channels-last gather
    (32+ channels, planes that do not alias), the NCHW gather by indices (16-24 channels, 3
    tiles across), cropped tiles (10x10 outputs under F(4x4)), a residual, a bias or none,
    ReLU, LeakyReLU or no activation, a fused max pool on exact tiles."""
    net = nn.Network("wino3d_bind", seed=5)
    x = net.input("x", (None, 36, 5, 12, 12))
    y1 = nn.ReLU()(nn.Conv(40, 3, padding=(1, 0, 0))(x))  # 5 x 10 x 10
    y2 = nn.ReLU()(nn.add(y1, nn.Conv(40, 3, padding=1, bias=False)(y1)))
    y3 = nn.LeakyReLU(0.2)(nn.Conv(16, 3, padding=1)(y2))
    y4 = nn.ReLU()(nn.Conv(16, 3, padding=(1, 2, 2))(y3))  # 5 x 12 x 12
    y5 = nn.Conv(24, 3, padding=(1, 0, 0))(y4)  # 5 x 10 x 10
    y6 = nn.MaxPool((1, 2, 2))(nn.ReLU()(nn.Conv(16, 3, padding=(1, 0, 0))(y5)))  # 8x8 -> 4x4
    y = nn.Linear(10)(nn.Flatten()(nn.GlobalAvgPool()(y6)))
    net.output(y, name="out")
    return net.graph


def test_wino3d_convs_replay_bound_calls():
    """wino3d's bound calls bit-equal to the unbound plan and close to the reference across
    batch 1 -> 3 -> 1 -> 2 on one session; then a feed mutated in place, a replaced weight
    and a larger batch on a bound session stay the reference's."""
    g = optimize(_wino3d_net())[0]
    rng = np.random.default_rng(29)
    shape = (36, 5, 12, 12)
    feeds = {n: {"x": rng.standard_normal((n, *shape)).astype(np.float32)} for n in (1, 2, 3)}
    _runs(g, feeds, (1, 1, 1, 3, 3, 1, 1, 2, 2, 1, 1))
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    x = feeds[1]["x"].copy()

    def check(feed: np.ndarray, what: str) -> None:
        _close(sess.run({"x": feed})["out"], ref.run({"x": feed.copy()})["out"], what)

    for k in range(3):
        check(x, f"bound {k}")
    plan = sess._fast(training=False, keep_all=False)
    bound = [s for s in plan.steps if isinstance(s, ConvStep) and s._bound is not None]
    assert len([s for s in bound if s._bound[10].startswith("wino3d")]) >= 4, bound
    x[...] = rng.standard_normal(x.shape).astype(np.float32)
    check(x, "new values in the fed array")
    conv_w = [p for p in g.params if g.params[p].ndim == 5]
    g.set_param(conv_w[2], (g.params[conv_w[2]] * -0.5).astype(np.float32))
    check(x, "a replaced weight")
    check(x, "a replaced weight, bound again")
    check(feeds[3]["x"], "batch 3")
    check(x, "batch 1 after 3")
    check(x, "batch 1 after 3, bound again")


def test_a_bound_merged_pointwise_sees_replaced_weights():
    """Inception's merged 1x1 convs (MergedPointwiseStep, its stacked weight checked by the
    parameters' identity) after binding: a replaced weight, a replaced bias, then the original
    arrays back (the stack rebuilt twice since the calls were bound): every output is the
    reference plan's for the parameters then."""
    g = optimize(suite.build("inception_bn"))[0]
    inp = g.inputs[0]
    out = g.outputs[0]
    x = np.random.default_rng(31).standard_normal((1, *g.values[inp].shape[1:]))
    x = x.astype(np.float32)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")

    def check(what: str) -> None:
        _close(sess.run({inp: x})[out], ref.run({inp: x})[out], what)

    for k in range(3):
        check(f"bound {k}")
    plan = sess._fast(training=False, keep_all=False)
    merged = [s for s in plan.steps if isinstance(s, fast_linear.MergedPointwiseStep)]
    assert merged and all(s._bound is not None for s in merged)
    step = merged[0]
    w_name = step.weights[-1]
    b_name = next(b for b in step.biases if b is not None)
    w0, b0 = g.params[w_name], g.params[b_name]
    g.set_param(w_name, (w0 * -0.5).astype(np.float32))
    check("a replaced weight")
    check("a replaced weight, bound again")
    g.set_param(b_name, (b0 + 1).astype(np.float32))
    check("a replaced bias")
    check("a replaced bias, bound again")
    g.set_param(w_name, w0)
    g.set_param(b_name, b0)
    for k in range(3):
        check(f"the original arrays back {k}")


def test_edited_weights_set_again_are_prepared_again():
    """The set_param contract (ir.Graph.set_param: every call stores a new object) against a
    Winograd conv's kept transformed weights and bound calls, two ways the graph used to hand
    back the object a session had prepared from: (1) a weight edited in place and set_param'd
    twice with no run between (the first stored a view, the second the array itself);
    (2) a weight replaced by another, edited while not installed, then installed again (a
    batch-3 run between: the batch-1 replay kept the old transform). Both read stale weights
    (|fast - reference| / max 0.1-0.2, a read-only review's repros). Oracle: the reference
    plan after every change."""
    g = optimize(_winograd_net())[0]
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 32, 32, 32)).astype(np.float32)
    x3 = rng.standard_normal((3, 32, 32, 32)).astype(np.float32)
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")

    def check(x, what):
        _close(fast.run({"x": x})["out"], ref.run({"x": x})["out"], what)

    for k in range(3):
        check(x1, f"run {k}")
    name = "conv1.weight"
    a = g.params[name]
    a *= -1.0
    g.set_param(name, a)
    a *= 3.0
    g.set_param(name, a)
    check(x1, "edited twice, set_param twice")
    a = g.params[name]
    g.set_param(name, (a * 0.5).astype(np.float32))
    check(x3, "another weight, batch 3")
    a[...] = -2.0 * a  # (not the graph's parameter now)
    g.set_param(name, a)
    check(x1, "the edited first weight installed again")


@pytest.mark.parametrize("name", ["wino", "lenet5", "resnet20"])
def test_a_conv_bias_set_between_runs_is_read(name):
    """Every conv bias replaced (set_param, new values) between replayed runs at batch 1: the
    bound calls check the bias's identity and compute afresh (without that check the replay
    added the old bias: 0.26 of the output's magnitude in a read-only review's mutation).
    Oracle: the reference plan after every change."""
    g = optimize(_winograd_net())[0] if name == "wino" else optimize(suite.build(name))[0]
    inp = g.inputs[0]
    shape = tuple(1 if not isinstance(d, int) else d for d in g.values[inp].shape)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    (out,) = g.outputs
    rng = np.random.default_rng(6)
    biases = [n.inputs[2] for n in g.nodes if n.op == "Conv" and len(n.inputs) > 2 and n.inputs[2]]
    assert biases
    for k in range(4):
        _close(fast.run({inp: x})[out], ref.run({inp: x})[out], f"{name} run {k}")
        if k >= 1:  # (after a replayed run)
            for b in biases:
                old = g.params[b]
                g.set_param(b, (old + rng.uniform(0.5, 1.0, old.shape)).astype(old.dtype))


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_a_feed_reshaped_in_place_between_runs(mode):
    """The same feed array given a new shape in place (x.shape = ...) between runs, dynamic H
    and W: the steps that bound their calls to it (the merged 1x1 convs here) saw the same
    object and replayed the old shape's calls ("could not broadcast", a read-only review's
    repro). The plan hands the steps a view of its own per (array, shape, strides). Oracle:
    the reference plan."""
    rng = np.random.default_rng(4)
    g = Graph("reshaped_feed")
    g.add_input("x", (None, 6, None, None))
    ys = []
    for k, m in enumerate((4, 5, 3)):
        g.add_param(f"c{k}.w", (0.5 * rng.standard_normal((m, 6, 1, 1))).astype(np.float32))
        ys.append(g.add_node("Conv", ["x", f"c{k}.w"], {}, name=f"c{k}").outputs[0])
    c = g.add_node("Concat", ys, {"axis": 1}, name="cat").outputs[0]
    g.mark_output(g.add_node("Relu", [c], {}, name="last").outputs[0])
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    x = rng.standard_normal((1, 6, 6, 10)).astype(np.float32)
    for k in range(5):
        if k == 3:
            x.shape = (1, 6, 10, 6)
        (got,), (want,) = (s.run({"x": x}, mode=mode).values() for s in (fast, ref))
        assert got.shape == want.shape
        _close(got, want, f"run {k}")


def test_the_plan_keeps_no_feed_alive():
    """A feed the caller drops after a run (batch 64: nothing binds) is freed: the plan's
    record of the last feed (its view handed to the steps) holds it weakly (c0d9b58 had kept
    each input's last array alive until the next run; a read-only review's repro)."""
    import gc
    import weakref

    g = optimize(suite.build("lenet5"))[0]
    inp = g.inputs[0]
    sess = runtime.Session(g)
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    sess.run({inp: x})
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None
