"""The whole-run replay (compile.REPLAY_RUNS): after an inference run whose every step replayed
its bound calls, the next runs with the same feed arrays, parameters, threads and arena make
only those calls, as one flat list.

Oracles: the same session's normal path (REPLAY_RUNS False: the same NumPy calls step by step,
so equal bit for bit), the unbound plan (BIND_CALLS False too: the same operations, bit for bit
as test_fast_bind proves), and the reference plan (plain kernels, float32 convs summed in
another order: the differential tests' bound, 1e-4 of the output's largest magnitude). Every
test checks that the replay ran (`CompiledPlan.replayed_runs`): none is vacuous."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.errors import InputError
from graphnet.ir import Graph
from graphnet.passes import optimize
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast.steps import base as fast_base

RTOL = 1e-4  # |fast - reference| / max |reference|, as the differential tests


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = max(float(np.abs(want).max()), 1e-3)
    err = float(np.abs(got - want).max()) / scale
    assert err <= RTOL, f"{what}: max |diff| / max |ref| = {err:.2e}"


def _replayed(sess: runtime.Session) -> int:
    return sess._fast(training=False, keep_all=False).replayed_runs


def _oracle(sess: runtime.Session, feeds: dict, bind: bool = True) -> dict:
    """A run of `sess` by the normal path (and without bound calls unless `bind`)."""
    old = fast_compile.REPLAY_RUNS, fast_base.BIND_CALLS
    fast_compile.REPLAY_RUNS, fast_base.BIND_CALLS = False, bind
    try:
        return sess.run(feeds)
    finally:
        fast_compile.REPLAY_RUNS, fast_base.BIND_CALLS = old


def _suite_feed(g: Graph, n: int, seed: int) -> dict:
    inp = g.inputs[0]
    shape = tuple(n if not isinstance(d, int) else d for d in g.values[inp].shape)
    return {inp: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _run_checked(sess, off, ref, g: Graph, feeds: dict, what: str) -> dict:
    """`sess`'s run of `feeds`, each output bit-equal to the same session's normal path and to
    `off` without bound calls (the unbound plan), close to `ref` (the reference plan)."""
    got = sess.run(feeds)
    normal = _oracle(sess, feeds)
    unbound = _oracle(off, feeds, bind=False)
    want = ref.run(feeds)
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], normal[o], err_msg=f"{what} output {o}")
        np.testing.assert_array_equal(got[o], unbound[o], err_msg=f"{what} output {o}")
        _close(got[o], want[o], f"{what} output {o}")
    return got


# the suite models whose every step binds at batch 1 (VGG's 2 MiB GEMV split over threads too)
TAPED = ["lenet5", "inception_bn", "norms_acts", "resnet20", "video3d", "vgg_bn"]


@pytest.mark.parametrize("name", TAPED)
def test_suite_models_whole_run_replay(name):
    """Batch 1 -> 3 -> 1 -> 2 -> 1 on one session (layouts recorded anew, the arena replaced
    by a larger one in between), new values in the fed arrays now and then: each output
    equal bit for bit to the same session's normal path and to a session without bound
    calls, close to the reference plan; the outputs handed out earlier unchanged by the
    later runs (each run's are fresh arrays)."""
    g = optimize(suite.build(name))[0]
    sess, off = runtime.Session(g), runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    feeds = {n: _suite_feed(g, n, n) for n in (1, 2, 3)}
    kept = []
    rng = np.random.default_rng(9)
    for k, n in enumerate((1, 1, 1, 1, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1)):
        if k in (3, 8, 13):  # (new values in the same feed arrays)
            for x in feeds[n].values():
                x[...] = rng.standard_normal(x.shape).astype(np.float32)
        got = _run_checked(sess, off, ref, g, feeds[n], f"{name} run {k} batch {n}")
        kept.append((got, {o: a.copy() for o, a in got.items()}))
    for k, (got, copies) in enumerate(kept):
        for o in g.outputs:
            np.testing.assert_array_equal(got[o], copies[o], err_msg=f"run {k}'s {o} changed")
    if name in TAPED:
        assert _replayed(sess) >= 4, "the whole-run replay ran too rarely"


def _dynamic_net() -> Graph:
    """Two 1x1 convs of the input (merged) and a 3x3 one, ReLU (the outputs placed in their
    Concat's buffer at batch 1), global average pool, Gemm: every step binds; H and W
    dynamic."""
    rng = np.random.default_rng(4)
    g = Graph("whole_run")
    g.add_input("x", (None, 6, None, None))
    ys = []
    for k, (m, h) in enumerate(((4, 1), (5, 1), (3, 3))):
        g.add_param(f"c{k}.w", (0.5 * rng.standard_normal((m, 6, h, h))).astype(np.float32))
        g.add_param(f"c{k}.b", rng.standard_normal(m).astype(np.float32))
        pads = {"pads": [h // 2] * 4}
        conv = g.add_node("Conv", ["x", f"c{k}.w", f"c{k}.b"], pads, name=f"c{k}").outputs[0]
        ys.append(g.add_node("Relu", [conv], {}, name=f"r{k}").outputs[0])
    c = g.add_node("Concat", ys, {"axis": 1}, name="cat").outputs[0]
    p = g.add_node("GlobalAveragePool", [c], {}, name="gap").outputs[0]
    f = g.add_node("Flatten", [p], {}, name="flat").outputs[0]
    g.add_param("fc.w", rng.standard_normal((7, 12)).astype(np.float32))
    g.add_param("fc.b", rng.standard_normal(7).astype(np.float32))
    y = g.add_node("Gemm", [f, "fc.w", "fc.b"], {"transB": 1}, name="fc").outputs[0]
    g.mark_output(y)
    return optimize(g)[0]


def _check(sess: runtime.Session, ref: runtime.Session, x: np.ndarray, what: str) -> dict:
    got = sess.run({"x": x})
    normal = _oracle(sess, {"x": x})
    want = ref.run({"x": x.copy()})
    for o, arr in got.items():
        np.testing.assert_array_equal(arr, normal[o], err_msg=what)
        _close(arr, want[o], what)
    return got


def test_whole_run_replay_follows_the_feeds():
    """The feed mutated in place, replaced by another array, a view of another array (held,
    the other array mutated), a new view each run, reshaped in place (x.shape = ...): every
    output is the normal path's and the reference's for what was fed then."""
    g = _dynamic_net()
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 6, 10)).astype(np.float32)
    for k in range(4):
        _check(sess, ref, x, f"same feed {k}")
    start = _replayed(sess)
    assert start >= 2
    x[...] = rng.standard_normal(x.shape).astype(np.float32)
    _check(sess, ref, x, "new values in the fed array")
    assert _replayed(sess) == start + 1  # (the replay reads the feed's memory)
    other = rng.standard_normal(x.shape).astype(np.float32)
    for k in range(3):
        _check(sess, ref, other, f"another array {k}")
    big = rng.standard_normal((3, 6, 6, 10)).astype(np.float32)
    view = big[1:2]
    for k in range(3):
        big[...] = rng.standard_normal(big.shape).astype(np.float32)
        _check(sess, ref, view, f"a view of another array {k}")
    for k in range(3):
        _check(sess, ref, big[2:3], f"a new view each run {k}")
    before = _replayed(sess)
    for k in range(6):
        _check(sess, ref, x, f"the first feed again {k}")
    assert _replayed(sess) > before
    before = _replayed(sess)
    x.shape = (1, 6, 10, 6)
    for k in range(3):
        _check(sess, ref, x, f"reshaped in place {k}")
    t = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
    x.shape = (1, 6, 6, 10)
    x[...] = t  # (the first shape again, new values)
    _check(sess, ref, x, "reshaped back")
    assert _replayed(sess) > before


def test_whole_run_replay_reads_set_params():
    """set_param between runs (a conv's weight and bias, the Gemm's weight; an array edited in
    place and set again): the next run computes with the new arrays."""
    g = _dynamic_net()
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 6, 5, 7)).astype(np.float32)
    for k in range(3):
        _check(sess, ref, x, f"start {k}")
    for p in [n for n in g.params if n.startswith(("c1", "fc"))]:
        old = g.params[p]
        g.set_param(p, (old * -0.75 + 0.25).astype(np.float32))
        before = _replayed(sess)
        for k in range(3):
            _check(sess, ref, x, f"{p} replaced, run {k}")
        assert _replayed(sess) > before
    arr = g.params["c0.w"]
    arr *= -1.0  # (edited in place, then set: a new view, prepared again)
    g.set_param("c0.w", arr)
    for k in range(3):
        _check(sess, ref, x, f"c0.w edited and set, run {k}")


def test_whole_run_replay_falls_back_mid_run():
    """A guard among the calls saying no (lenet5's phase-pool conv: a non-finite input), and
    a call raising mid-run: the run is made by the normal path (the values the replay wrote
    are computed again), the outputs the normal path's; the replay runs again afterwards. An
    exception in a normal run then good runs."""
    g = optimize(suite.build("lenet5"))[0]
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    (inp,) = g.inputs
    x = _suite_feed(g, 1, 7)[inp]
    for _ in range(4):
        sess.run({inp: x})
    plan = sess._fast(training=False, keep_all=False)
    start = plan.replayed_runs
    assert start >= 1
    x[0, 0, 3, 4] = np.nan  # (the phase-pool's finite-input guard says no)
    got = sess.run({inp: x})
    want = _oracle(sess, {inp: x})
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], want[o])
        np.testing.assert_array_equal(np.isnan(got[o]), np.isnan(ref.run({inp: x})[o]))
    assert plan.replayed_runs == start
    x[0, 0, 3, 4] = 0.5
    for _ in range(4):
        got = sess.run({inp: x})
    want = ref.run({inp: x.copy()})
    for o in g.outputs:
        _close(got[o], want[o], "finite again")
    assert plan.replayed_runs > start

    tape = plan._tape
    assert tape is not None
    calls = list(tape.calls)
    raised = []

    def boom() -> None:
        raised.append(1)
        raise RuntimeError("mid-run")

    calls.insert(len(calls) // 2, boom)
    tape.calls = tuple(calls)
    n = plan.replayed_runs
    got = sess.run({inp: x})
    assert raised and plan.replayed_runs == n
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], _oracle(sess, {inp: x})[o])
        _close(got[o], ref.run({inp: x.copy()})[o], "a call raised mid-run")
    for _ in range(4):
        got = sess.run({inp: x})
    assert len(raised) == 1 and plan.replayed_runs > n  # (recorded anew, without boom)

    step = plan.steps[2]
    cls = type(step)

    class Boom(cls):  # type: ignore[misc, valid-type]
        def __call__(self, run):
            raise RuntimeError("mid-run")

    step.__class__ = Boom
    with pytest.raises(Exception, match="mid-run"):  # (another array: by the normal path)
        sess.run({inp: x.copy()})
    step.__class__ = cls
    n = plan.replayed_runs
    for k in range(8):  # (steps that recorded for the copy back off from recording: 1, 2 runs)
        got = sess.run({inp: x})
        for o in g.outputs:
            _close(got[o], ref.run({inp: x.copy()})[o], f"after an exception {k}")
    assert plan.replayed_runs > n


def test_whole_run_replay_with_train_runs_between():
    """Train runs (another plan, on the same feed array) between inference runs: the next
    inference runs replay, and compute what the normal path does."""
    g = optimize(suite.build("inception_bn"))[0]
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    feeds = _suite_feed(g, 1, 8)
    for _ in range(3):
        sess.run(feeds)
    for k in range(3):
        sess.run(feeds, mode="train", seed=k)
        n = _replayed(sess)
        for j in range(3):
            got = sess.run(feeds)
            for o in g.outputs:
                np.testing.assert_array_equal(got[o], _oracle(sess, feeds)[o])
                _close(got[o], ref.run(feeds)[o], f"after train run {k}, run {j}")
        assert _replayed(sess) > n


def test_whole_run_replay_two_threads_share_a_session():
    """Two threads running one session, each with its own feed (and then the same one),
    behind a barrier: each gets its own feed's outputs every run (the runs are serialized;
    a feed that is not the recorded one runs by the normal path and records)."""
    g = optimize(suite.build("inception_bn"))[0]
    sess = runtime.Session(g)
    (inp,) = g.inputs
    xs = [_suite_feed(g, 1, 20 + k)[inp] for k in range(2)]
    want = [_oracle(runtime.Session(g), {inp: x}, bind=False) for x in xs]
    for shared in (False, True):
        errors: list = []
        barrier = threading.Barrier(2)

        def work(k: int, shared: bool = shared, errors: list = errors, barrier=barrier) -> None:
            x = xs[0] if shared else xs[k]
            w = want[0] if shared else want[k]
            barrier.wait()
            for _ in range(40):
                got = sess.run({inp: x})
                if not all(np.array_equal(got[o], w[o]) for o in g.outputs):
                    errors.append(k)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    assert _replayed(sess) >= 10


def test_feeds_checked_again_after_a_change():
    """Session.check_inputs passes the last feeds it passed without checking them again
    (`_checked_again`): the same array given a wrong shape or dtype in place, an unknown or a
    missing input, an input added to the graph, the graph's input Value edited in place: all
    still refused; a feed that is not an array is converted."""
    g = _dynamic_net()
    sess = runtime.Session(g)
    x = np.random.default_rng(10).standard_normal((1, 6, 4, 5)).astype(np.float32)
    for _ in range(3):
        sess.run({"x": x})
    assert sess._checked_again({"x": x}) is not None  # (the test is not vacuous)
    x.shape = (1, 5, 4, 6)
    with pytest.raises(InputError, match="shape"):
        sess.run({"x": x})
    x.shape = (1, 6, 4, 5)
    sess.run({"x": x})
    x.dtype = np.int32
    with pytest.raises(InputError, match="float32"):
        sess.run({"x": x})
    x.dtype = np.float32
    sess.run({"x": x})
    with pytest.raises(InputError, match="unknown"):
        sess.run({"x": x, "y": x})
    with pytest.raises(InputError, match="missing"):
        sess.run({})
    want = sess.run({"x": x})
    got = sess.run({"x": memoryview(x)})  # (not an array: converted, as before)
    np.testing.assert_array_equal(got[g.outputs[0]], want[g.outputs[0]])
    sess.run({"x": x})
    g.add_input("z", (1,))  # (the graph edited: one more input)
    with pytest.raises(InputError, match="missing"):
        sess.run({"x": x})
    g.inputs.remove("z")
    sess.run({"x": x})
    g.values["x"].shape = (None, 6, 4, 4)  # (the graph's input edited in place)
    with pytest.raises(InputError, match="shape"):
        sess.run({"x": x})


def _elementwise_net() -> Graph:
    """Steps of their own for the element-wise ops (a Mul of the feed by a parameter, PReLU
    after a max pool, a Sub of a parameter, ELU: UnaryStep / BinaryStep), a Reshape (a view:
    AliasStep) and a Softmax over the channels writing the graph output (SoftmaxStep): they
    bind too (the view is the same object while its input is), so the run replays whole."""
    rng = np.random.default_rng(3)
    g = Graph("elementwise_whole_run")
    g.add_input("x", (None, 4, 9, 11))
    g.add_param("s", rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32))
    m = g.add_node("Mul", ["x", "s"], {}, name="scale").outputs[0]
    g.add_param("w", (0.3 * rng.standard_normal((6, 4, 3, 3))).astype(np.float32))
    c = g.add_node("Conv", [m, "w"], {"pads": [1, 1, 1, 1]}, name="conv").outputs[0]
    pool = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    p = g.add_node("MaxPool", [c], pool, name="pool").outputs[0]
    g.add_param("slope", rng.uniform(-0.5, 0.5, (6, 1, 1)).astype(np.float32))
    r = g.add_node("PRelu", [p, "slope"], {}, name="prelu").outputs[0]
    g.add_param("t", rng.standard_normal((6, 9, 11)).astype(np.float32))
    a = g.add_node("Sub", [r, "t"], {}, name="shift").outputs[0]
    e = g.add_node("Elu", [a], {"alpha": 0.7}, name="elu").outputs[0]
    g.add_param("shape", np.array([0, 6, -1], np.int64))
    r = g.add_node("Reshape", [e, "shape"], {}, name="rows").outputs[0]  # (a view: AliasStep)
    g.mark_output(g.add_node("Softmax", [r], {"axis": 1}, name="soft").outputs[0])
    return g


def test_whole_run_replay_of_elementwise_steps():
    """The element-wise steps' and Softmax's bound calls in the whole-run replay: batch 1 ->
    2 -> 1, new values in the fed array, another array, set_param of each parameter between
    runs: every output equal bit for bit to the normal path's and the unbound plan's, close
    to the reference; outputs handed out earlier unchanged."""
    g = _elementwise_net()
    sess, off = runtime.Session(g), runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    (out,) = g.outputs
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 4, 9, 11)).astype(np.float32)
    x2 = rng.standard_normal((2, 4, 9, 11)).astype(np.float32)
    other = rng.standard_normal(x.shape).astype(np.float32)
    plan = [x] * 4 + [x2] * 2 + [x] * 4 + [other] * 4 + [x] * 4
    kept = []

    def check(feed: np.ndarray, what: str) -> None:
        got = sess.run({"x": feed})[out]
        kept.append((got, got.copy()))
        np.testing.assert_array_equal(got, _oracle(sess, {"x": feed})[out], err_msg=what)
        np.testing.assert_array_equal(got, _oracle(off, {"x": feed}, bind=False)[out], what)
        _close(got, ref.run({"x": feed.copy()})[out], what)

    for k, feed in enumerate(plan):
        if k == 8:
            x[...] = rng.standard_normal(x.shape).astype(np.float32)
        check(feed, f"run {k}")
    n = _replayed(sess)
    assert n >= 4
    for p in ("s", "slope", "t", "w", "shape"):
        new = g.params[p] * -1.5 if p != "shape" else np.array([0, 3, -1], np.int64)
        g.set_param(p, new.astype(g.params[p].dtype))
        for k in range(4):
            check(x, f"{p} replaced, run {k}")
    assert _replayed(sess) > n
    for got, copy in kept:
        np.testing.assert_array_equal(got, copy)


def test_whole_run_replay_of_a_concat_it_copies():
    """A Concat whose inputs are not written into its buffer (the feed beside a conv of it;
    a conv of that beside it): its np.concatenate call binds too; batch 1 -> 2 -> 1, feeds
    changed in place and replaced, set_param: bit-equal to the normal path and the unbound
    plan, close to the reference."""
    rng = np.random.default_rng(12)
    g = Graph("concat_copy")
    g.add_input("x", (None, 3, 8, 10))
    g.add_param("w", (0.4 * rng.standard_normal((5, 3, 3, 3))).astype(np.float32))
    c = g.add_node("Conv", ["x", "w"], {"pads": [1, 1, 1, 1]}, name="conv").outputs[0]
    p = g.add_node("Concat", ["x", c], {"axis": 1}, name="cat").outputs[0]
    g.add_param("w2", (0.4 * rng.standard_normal((4, 8, 1, 1))).astype(np.float32))
    c2 = g.add_node("Conv", [p, "w2"], {}, name="conv2").outputs[0]
    cat2 = g.add_node("Concat", [c2, p], {"axis": 1}, name="cat2").outputs[0]
    gap = g.add_node("GlobalAveragePool", [cat2], {}, name="gap").outputs[0]
    f = g.add_node("Flatten", [gap], {}, name="flat").outputs[0]
    g.add_param("fc", rng.standard_normal((7, 12)).astype(np.float32))
    g.mark_output(g.add_node("Gemm", [f, "fc"], {"transB": 1}, name="out").outputs[0])
    sess, off = runtime.Session(g), runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    (out,) = g.outputs
    x = rng.standard_normal((1, 3, 8, 10)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)
    other = rng.standard_normal(x.shape).astype(np.float32)
    for k, feed in enumerate([x] * 4 + [x2] * 2 + [x] * 4 + [other] * 3 + [x] * 4):
        if k == 9:
            x[...] = rng.standard_normal(x.shape).astype(np.float32)
        if k == 15:
            g.set_param("w", (g.params["w"] * -1.0).astype(np.float32))
        got = sess.run({"x": feed})[out]
        np.testing.assert_array_equal(got, _oracle(sess, {"x": feed})[out])
        np.testing.assert_array_equal(got, _oracle(off, {"x": feed}, bind=False)[out])
        _close(got, ref.run({"x": feed.copy()})[out], f"run {k}")
    plan = sess._fast(training=False, keep_all=False)
    assert any(type(s).__name__ == "ConcatStep" and not s.placed for s in plan.steps)
    assert _replayed(sess) >= 2


# the suite models whose lean plan replays whole at batch 1 (resnet20's and inception_bn's
# tapgemm convs bind; the lean im2col slabs do not yet)
LEAN_TAPED = ["lenet5", "resnet20", "vgg_bn"]


@pytest.mark.parametrize("name", LEAN_TAPED)
def test_whole_run_replay_under_the_lean_plan(name):
    """memory="lean" (its ufunc buffer size set around each run, the replay included), batch 1
    -> 3 -> 1 on one session, new values in the fed array, set_param of a conv's weight
    between runs: bit-equal to its normal path and to a lean session without bound calls,
    close to the reference; the replay ran."""
    g = optimize(suite.build(name))[0]
    sess, off = runtime.Session(g, memory="lean"), runtime.Session(g, memory="lean")
    ref = runtime.Session(g, plan="reference")
    feeds = {n: _suite_feed(g, n, 13 + n) for n in (1, 3)}
    convs = [n.inputs[1] for n in g.nodes if n.op == "Conv" and n.inputs[1] in g.params]
    rng = np.random.default_rng(5)
    for k, n in enumerate((1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1)):
        if k == 6:  # (new values in the same fed array)
            (x,) = feeds[1].values()
            x[...] = rng.standard_normal(x.shape).astype(np.float32)
        if k == 8:  # (a conv's weight replaced: the bound calls read the old one's view)
            p = convs[len(convs) // 2]
            g.set_param(p, (g.params[p] * -0.75 + 0.01).astype(np.float32))
        _run_checked(sess, off, ref, g, feeds[n], f"{name} lean run {k} batch {n}")
    assert _replayed(sess) >= 3, "the whole-run replay ran too rarely"


def test_whole_run_replay_runs_blas_on_one_thread_and_restores_it():
    """The replay's calls run with BLAS on one thread (as a run's steps do), and the caller's
    thread count is back after it."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="controls BLAS threads")
    from graphnet.runtime.fast import threads as fast_threads

    if not fast_threads._blas_libs():
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    libs = [c for c in threadpoolctl.ThreadpoolController().lib_controllers if c.user_api == "blas"]
    g = optimize(suite.build("lenet5"))[0]
    sess = runtime.Session(g)
    feeds = _suite_feed(g, 1, 14)
    for _ in range(4):
        sess.run(feeds)
    plan = sess._fast(training=False, keep_all=False)
    assert plan._tape is not None
    seen: list = []
    plan._tape.calls = (lambda: seen.append([lib.num_threads for lib in libs]), *plan._tape.calls)
    n = plan.replayed_runs
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = [lib.num_threads for lib in libs]
        sess.run(feeds)
        assert [lib.num_threads for lib in libs] == before
    assert plan.replayed_runs == n + 1
    assert seen == [[1] * len(libs)]


@pytest.mark.parametrize("replay", [True, False])
def test_reshape_to_a_fed_shape_changed_in_place(replay, monkeypatch):
    """A Reshape whose shape is a graph input the caller changes in place between runs (the
    same array object): the fast plan's view takes the new shape, with the whole-run replay
    on (its guard says no) and off (AliasStep's kept view is not handed out again). A stale
    view of shape (1, 4, 4, 4) gives the Softmax another axis: off by O(1), another shape."""
    monkeypatch.setattr(fast_compile, "REPLAY_RUNS", replay)
    rng = np.random.default_rng(0)
    g = Graph("reshape_fed")
    g.add_input("x", (1, 2, 4, 4))
    g.add_input("s", (4,), "int64")
    g.add_param("w", rng.standard_normal((4, 2, 1, 1)).astype(np.float32))
    c = g.add_node("Conv", ["x", "w"], {}, name="c").outputs[0]
    r = g.add_node("Reshape", [c, "s"], {}, name="r").outputs[0]
    y = g.add_node("Softmax", [r], {"axis": -1}, name="sm").outputs[0]
    g.mark_output(y)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    shape = np.array([1, 4, 4, 4], np.int64)
    for _ in range(4):
        sess.run({"x": x, "s": shape})
    for new in ([1, 4, 16, 1], [1, 16, 4, 1], [1, 4, 4, 4]):
        shape[...] = new
        for _ in range(3):  # (then the view kept for the new values, then a replay)
            got, want = sess.run({"x": x, "s": shape})[y], ref.run({"x": x, "s": shape})[y]
            assert got.shape == want.shape == tuple(new)
            _close(got, want, f"shape {new}")
    if replay:
        assert _replayed(sess) >= 4
