"""Train mode: the BatchNorms of one merged 1x1 conv's outputs as one step (`BatchNormGroupStep`)
or fused with the conv (`ConvBatchNormStep`, batch 1 normalizes the stacked GEMM result).
Outputs and running statistics against the plan without the grouping (each BN its own step),
the reference plan (plain kernels) and a float64 formula, at batch 1 and 3 on one session
(1 -> 3 -> 1: the fused path, the fallback, the fused path again), odd sizes, data far from
zero, rows long enough for the unbuffered passes. What the grouping refuses (it would change
the graph's semantics: other Dropout masks, a cycle, running statistics shared or read by
another node) and what a failed train run leaves in the running statistics, against the
reference plan."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast.steps import BatchNormGroupStep
from graphnet.runtime.fast.steps.trainfuse import ConvBatchNormStep
from tests.helpers import assert_close

CHANNELS = (3, 5, 4)  # the three 1x1 convs' output channels


def _block(
    hw: tuple[int, int] = (5, 7),
    stride: int = 1,
    relus: tuple[bool, ...] = (True, True, False),
    eps: tuple[float, ...] = (1e-5, 1e-5, 1e-5),
    raw_output: bool = False,
    seed: int = 4,
    momenta: tuple[float, ...] = (0.8, 0.8, 0.8),
    stats_out: bool = False,
) -> Graph:
    """x (N, 6, H, W) -> three 1x1 convs (the second with a bias) of `stride` -> each a
    train-mode BatchNorm (momentum `momenta`, epsilon `eps`) [-> Relu per `relus`] -> one
    Concat (the output). `raw_output`: the second conv's output is a graph output too (its BN
    is then not the only reader); `stats_out`: the second BN's running mean and variance
    outputs are graph outputs."""
    rng = np.random.default_rng(seed)
    g = Graph("bn_group")
    g.add_input("x", (None, 6, *hw))
    ys = []
    for k, (m, relu, e, mom) in enumerate(zip(CHANNELS, relus, eps, momenta, strict=True)):
        name = f"c{k}"
        g.add_param(f"{name}.w", (0.5 * rng.standard_normal((m, 6, 1, 1))).astype(np.float32))
        ins = ["x", f"{name}.w"]
        if k == 1:
            g.add_param(f"{name}.b", rng.standard_normal(m).astype(np.float32))
            ins.append(f"{name}.b")
        attrs = {"strides": [stride, stride], "pads": [0] * 4}
        y = g.add_node("Conv", ins, attrs, name=name).outputs[0]
        if raw_output and k == 1:
            g.mark_output(y)
        bn = [y]
        for p, arr in (
            ("scale", rng.uniform(0.5, 1.5, m)),
            ("B", rng.normal(0.0, 1.0, m)),
            ("mean", rng.normal(0.0, 1.0, m)),
            ("var", rng.uniform(0.5, 2.0, m)),
        ):
            g.add_param(f"{name}.{p}", arr.astype(np.float32))
            bn.append(f"{name}.{p}")
        stats = stats_out and k == 1
        node = g.add_node(
            "BatchNormalization",
            bn,
            {"epsilon": e, "momentum": mom},
            name=f"{name}.bn",
            **({"outputs": [f"{name}.y", f"{name}.rm", f"{name}.rv"]} if stats else {}),
        )
        y = node.outputs[0]
        if stats:
            g.mark_output(node.outputs[1])
            g.mark_output(node.outputs[2])
        if relu:
            y = g.add_node("Relu", [y], {}, name=f"{name}.relu").outputs[0]
        ys.append(y)
    g.mark_output(g.add_node("Concat", ys, {"axis": 1}, name="cat").outputs[0])
    return g


def _ungrouped(monkeypatch, g: Graph) -> runtime.Session:
    """A session whose train plan groups nothing (each BN its own step)."""
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_group_batchnorms", lambda self: None)
        m.setattr(fast_compile.CompiledPlan, "_group_concat_batchnorms", lambda self: None)
        sess = runtime.Session(g)
        sess._fast(training=True, keep_all=False)
    return sess


def _kinds(sess: runtime.Session) -> list[str]:
    return [type(s).__name__ for s in sess._fast(training=True, keep_all=False).steps]


def _feeds(batch: int, hw: tuple[int, int], offset: float, seed: int) -> dict[str, np.ndarray]:
    x = offset + np.random.default_rng(seed).standard_normal((batch, 6, *hw))
    return {"x": x.astype(np.float32)}


def _float64_block(g: Graph, start: dict, x: np.ndarray, stride: int, relus) -> tuple:
    """The block in float64 from the parameters `start` (before the run): the Concat and the
    new running statistics {param name: value}."""
    xs = x.astype(np.float64)[:, :, ::stride, ::stride]
    ys, running = [], {}
    for k in range(len(CHANNELS)):
        p = {n: start[f"c{k}.{n}"].astype(np.float64) for n in ("w", "scale", "B", "mean", "var")}
        y = np.einsum("mc,nchw->nmhw", p["w"][:, :, 0, 0], xs)
        if k == 1:
            y += start["c1.b"].astype(np.float64)[None, :, None, None]
        mu, var = y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))
        col = (slice(None), None, None)
        y = (y - mu[col]) / np.sqrt(var[col] + 1e-5) * p["scale"][col] + p["B"][col]
        ys.append(np.maximum(y, 0.0) if relus[k] else y)
        running[f"c{k}.mean"] = 0.8 * p["mean"] + 0.2 * mu
        running[f"c{k}.var"] = 0.8 * p["var"] + 0.2 * var
    return np.concatenate(ys, axis=1), running


@pytest.mark.parametrize(
    ("hw", "stride", "kind"),
    [
        ((5, 7), 1, ConvBatchNormStep),  # fused with the conv
        ((24, 23), 1, ConvBatchNormStep),  # 552-element rows: the unbuffered passes
        ((5, 7), 2, BatchNormGroupStep),  # stride 2: the conv apart, the BNs grouped
        ((47, 25), 2, BatchNormGroupStep),  # 24 x 13 outputs
        ((47, 45), 2, BatchNormGroupStep),  # 24 x 23 = 552-element rows
    ],
)
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_grouped_batchnorms_match_ungrouped_reference_and_float64(
    monkeypatch, hw, stride, kind, offset
):
    """Batch 1 -> 3 -> 1 on one session (each run starts from the running statistics the last
    one wrote): outputs and running statistics against the ungrouped plan and the reference
    plan, each on its own copy of the graph, and the float64 formula."""
    relus = (True, True, False)
    graphs = [_block(hw, stride, relus) for _ in range(3)]
    sess = runtime.Session(graphs[0])
    kinds = _kinds(sess)
    assert kind.__name__ in kinds and "BatchNormStep" not in kinds
    assert ("MergedPointwiseStep" in kinds) == (kind is BatchNormGroupStep)
    others = [_ungrouped(monkeypatch, graphs[1]), runtime.Session(graphs[2], plan="reference")]
    assert "BatchNormStep" in _kinds(others[0])
    out = graphs[0].outputs[0]
    for batch in (1, 3, 1):
        feeds = _feeds(batch, hw, offset, seed=batch)
        start = dict(graphs[0].params)
        got = sess.run(feeds, mode="train")[out]
        want, running = _float64_block(graphs[0], start, feeds["x"], stride, relus)
        # Y ~ 1: the conv's float32 sums of 6 products of size ~|offset| round by ~1e-7 of
        # it (4e-5 at offset 100 against a channel std >= ~0.5: 1e-4); the BN's corrected
        # two-pass statistics keep ~1e-6 of Y (the offset BN test's bound)
        tol = 2e-5 + 1e-6 * offset
        assert_close(got, want.astype(np.float32), rtol=1e-5, atol=tol, what="Y vs float64")
        for name, value in running.items():  # float64 blends of float32 statistics
            assert_close(graphs[0].params[name], value, rtol=1e-5, atol=tol, what=name)
        for other, g in zip(others, graphs[1:], strict=True):
            y = other.run(feeds, mode="train")[out]
            assert_close(got, y, rtol=1e-5, atol=tol, what="Y vs ungrouped / reference")
            for name in running:
                assert_close(graphs[0].params[name], g.params[name], rtol=1e-5, atol=tol)


@pytest.mark.parametrize(
    ("stride", "where", "ref_node"),
    [
        # fused (batch 1): c0.bn's statistics written, c1.bn's not = the reference failing in c1.bn
        (1, "running", "c1.bn"),
        # fused: the copy-out runs after every member's write = the reference failing after them
        (1, "alloc", "cat"),
        (2, "running", "c1.bn"),  # grouped (batch 1): as fused
        # grouped: the members' outputs are allocated before any write = failing in c0.bn
        (2, "alloc", "c0.bn"),
    ],
)
def test_a_failed_train_run_keeps_the_reference_running_statistics(
    monkeypatch, stride, where, ref_node
):
    """A train run that fails keeps the running statistics of the BNs that finished before the
    failure, in graph order, and no other (the reference plan writes each BN's as it returns;
    `CompiledPlan._group_batchnorms`). An error injected inside the batch-1 group step (when
    c1.bn writes its running statistics, or when its output is allocated) against the
    reference plan failing in the node at the same point of graph order: the parameters after
    the failure and after the good runs that follow, and those runs' outputs, are the
    reference's (nothing stale left behind). Batch 1 at stride 1 also writes each BN's
    channels into its slice of the Concat's buffer (the Concat copies nothing)."""
    import dataclasses

    from graphnet.runtime.fast.steps import BatchNormStep, Run

    g, ref_g = _block(stride=stride), _block(stride=stride)
    sess, ref = runtime.Session(g), runtime.Session(ref_g, plan="reference")
    if stride == 1:
        rows = {r.split()[0]: r for r in sess.describe(mode="train").splitlines()[1:]}
        assert "no copy" in rows["cat"] and "BNs of its outputs" in rows["c0"]
    steps = sess._fast(training=True, keep_all=False).steps
    (group,) = [s for s in steps if isinstance(s, (BatchNormGroupStep, ConvBatchNormStep))]
    group = group.group if isinstance(group, ConvBatchNormStep) else group
    target = group.members[1].outputs[0]  # (c1.bn's, its Relu fused)
    armed = {"on": False, "fired": 0}

    def fire() -> None:
        armed["on"] = False
        armed["fired"] += 1
        raise FloatingPointError("injected")

    running, alloc = BatchNormStep._running, Run.alloc

    def failing_running(self, run, new, params):
        if armed["on"] and self.name == "c1.bn":
            fire()
        running(self, run, new, params)

    def failing_alloc(self, slot, shape, dtype):
        if armed["on"] and slot == target:
            fire()
        return alloc(self, slot, shape, dtype)

    if where == "running":
        monkeypatch.setattr(BatchNormStep, "_running", failing_running)
    else:
        monkeypatch.setattr(Run, "alloc", failing_alloc)
    k_ref = next(k for k, st in enumerate(ref._steps) if st.node.name == ref_node)
    good = ref._steps[k_ref]

    def raising(*args, **kwargs):
        raise FloatingPointError("injected")

    out = g.outputs[0]
    for k in range(4):
        feeds = _feeds(1, (5, 7), 0.0, seed=9 + k)
        if k == 1:
            armed["on"] = True
            ref._steps[k_ref] = dataclasses.replace(
                good, kernel=dataclasses.replace(good.kernel, fn=raising)
            )
            for s in (sess, ref):
                with pytest.raises(Exception, match="injected"):
                    s.run(feeds, mode="train")
            ref._steps[k_ref] = good
        else:
            got = sess.run(feeds, mode="train")[out]
            want = ref.run(feeds, mode="train")[out]
            # (see the float64 test: Y ~ 1, float32 sums of 6 products)
            assert_close(got, want, rtol=1e-5, atol=2e-5, what=f"run {k}")
        for name in ref_g.params:  # (float64 blends of float32 statistics)
            assert_close(g.params[name], ref_g.params[name], rtol=1e-5, atol=2e-5, what=name)
    assert armed["fired"] == 1


@pytest.mark.parametrize(
    ("relus", "eps", "raw_output", "extra", "grouped"),
    [
        ((False, False, False), (1e-5, 1e-5, 1e-5), False, {}, ["c0.bn", "c1.bn", "c2.bn"]),
        ((True, True, True), (1e-5, 1e-3, 1e-5), False, {}, ["c0.bn", "c2.bn"]),
        ((True, False, True), (1e-5, 1e-5, 1e-5), True, {}, ["c0.bn", "c2.bn"]),
        # (grouped: c1's running statistics blended with 0.8, off by ~1)
        ((True, True, False), (1e-5,) * 3, False, {"momenta": (0.8, 0.3, 0.8)}, ["c0.bn", "c2.bn"]),
        # (grouped: IndexError, the group writes no statistics outputs)
        ((True, True, False), (1e-5,) * 3, False, {"stats_out": True}, ["c0.bn", "c2.bn"]),
    ],
)
def test_what_groups_and_what_fuses(monkeypatch, relus, eps, raw_output, extra, grouped):
    """Mixed ReLUs fuse; a BN with another epsilon or momentum, one whose conv output has
    another reader, or one with running-statistics outputs stays its own step, and the rest
    group without the conv (it must make every output); the result (outputs and parameters)
    matches the ungrouped and reference plans at batch 1 and 3."""
    graphs = [_block(relus=relus, eps=eps, raw_output=raw_output, **extra) for _ in range(3)]
    sess = runtime.Session(graphs[0])
    steps = sess._fast(training=True, keep_all=False).steps
    groups = [s for s in steps if isinstance(s, (BatchNormGroupStep, ConvBatchNormStep))]
    assert len(groups) == 1
    group = groups[0].group if isinstance(groups[0], ConvBatchNormStep) else groups[0]
    assert [b.name for b in group.members] == grouped
    assert isinstance(groups[0], ConvBatchNormStep) == (len(grouped) == 3)
    others = [_ungrouped(monkeypatch, graphs[1]), runtime.Session(graphs[2], plan="reference")]
    for batch in (1, 3):
        feeds = _feeds(batch, (5, 7), 0.0, seed=batch)
        got = sess.run(feeds, mode="train")
        for other in others:
            want = other.run(feeds, mode="train")
            assert set(got) == set(want)
            for k in got:  # (see the float64 test: Y ~ 1, float32 sums of 6 products)
                assert_close(got[k], want[k], rtol=1e-5, atol=2e-5, what=k)
    for name in graphs[0].params:
        for g in graphs[1:]:
            assert_close(graphs[0].params[name], g.params[name], rtol=1e-5, atol=2e-5)


def test_inference_and_unfused_plans_do_not_group():
    """Inference folds the BNs (no BN steps); keep_all (fuse off) and the lean plan keep
    each BN its own step."""
    g = _block()
    sess = runtime.Session(g)
    assert not {"BatchNormGroupStep", "ConvBatchNormStep"} & {
        type(s).__name__ for s in sess._fast(training=False, keep_all=False).steps
    }
    kept = sess._fast(training=True, keep_all=True).steps
    assert [type(s).__name__ for s in kept].count("BatchNormStep") == 3
    lean = runtime.Session(_block(), memory="lean")._fast(training=True, keep_all=False)
    assert not any(isinstance(s, (BatchNormGroupStep, ConvBatchNormStep)) for s in lean.steps)


@pytest.mark.parametrize("vecdot", [True, False])
def test_row_dots_with_and_without_numpy_vecdot(monkeypatch, vecdot):
    """The BN steps' per-row sums of squares: np.vecdot (NumPy 2) or the stacked matmul (NumPy
    1.x, forced here), into a strided row of a (2, rows) array, against float64 (float32 BLAS
    dots of 1..300 terms of size ~1-10: within 1e-6 relative); a train-mode batch-1 block on
    either path matches the reference plan."""
    from graphnet.runtime.fast.steps import elementwise

    if not vecdot:
        monkeypatch.setattr(elementwise, "_VECDOT", None)
    rng = np.random.default_rng(5)
    for rows, n in ((1, 1), (7, 13), (5, 300)):
        a = (3.0 + rng.standard_normal((rows, n))).astype(np.float32)
        out = np.zeros((2, rows), np.float32)
        elementwise.row_dots(a, out[1])
        want = (a.astype(np.float64) ** 2).sum(axis=1)
        assert_close(out[1], want, rtol=1e-6, atol=0, what=f"row dots {rows}x{n}")
        assert not out[0].any()
    g, ref_g = _block(), _block()
    feeds = _feeds(1, (5, 7), 0.0, seed=2)
    got = runtime.Session(g).run(feeds, mode="train")[g.outputs[0]]
    want = runtime.Session(ref_g, plan="reference").run(feeds, mode="train")[g.outputs[0]]
    assert_close(got, want, rtol=1e-5, atol=2e-5, what="block Y")


def test_threads_sharing_a_session_in_train_mode():
    """Two threads running one session's train plan: each run's output is its own input's, as
    the reference plan computes it (train-mode outputs depend on the batch only). The plan
    serializes its runs (a per-plan lock, `CompiledPlan`), so this cannot catch two runs
    sharing the fused step's scratch (its GEMM result between its passes): it checks that
    concurrent callers each get their own, correct results."""
    import threading

    g = _block(hw=(24, 23))
    sess = runtime.Session(g)
    ref = runtime.Session(_block(hw=(24, 23)), plan="reference")
    out = g.outputs[0]
    xs = [_feeds(1, (24, 23), 0.0, seed=k) for k in range(2)]
    expected = [ref.run(f, mode="train")[out] for f in xs]
    wrong = [0, 0]

    def worker(i: int) -> None:
        for _ in range(40):
            got = sess.run(xs[i], mode="train")[out]
            # (see the float64 test: Y ~ 1, float32 sums of 6 products)
            if not np.allclose(got, expected[i], rtol=1e-5, atol=2e-5):
                wrong[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [0, 0]
    rows = runtime.Session(g).profile(xs[0], runs=2, mode="train")
    assert [r[0] for r in rows if r[1] == "Conv"] == ["c0"]  # the fused step, timed as c0


# --- the grouping keeps the graph's semantics (each case: the plan that grouped it differed
# from the reference plan): the members run at the first one's place, so only BNs whose
# running statistics and affine parameters are their own graph parameters, in conv order


def _sibling_bns(
    stride: int, bn_order: tuple[int, int], between: str = "", tied: bool = False
) -> Graph:
    """x (N, 4, 6, 6) -> two 1x1 convs c0, c1 (5 channels, `stride`; one merged step) -> their
    BNs bn0, bn1 in `bn_order` (graph order), each read by a Dropout and a graph output.
    `between` (after the first BN in graph order): "dropout" a Dropout of x (an output),
    "peek" a node reading bn1's running mean (z + bn1.mean, an output), "scale" bn1's scale
    computed from bn0's output (its mean over N, H, W). `tied`: both BNs share one running
    mean and variance."""
    rng = np.random.default_rng(0)
    g = Graph("siblings")
    g.add_input("x", (None, 4, 6, 6))
    g.add_input("z", (5,))
    for k in range(2):
        g.add_param(f"c{k}.w", (0.5 * rng.standard_normal((5, 4, 1, 1))).astype(np.float32))
        attrs = {"strides": [stride, stride], "pads": [0] * 4}
        g.add_node("Conv", ["x", f"c{k}.w"], attrs, name=f"c{k}")
        for p, arr in (
            ("scale", rng.uniform(0.5, 1.5, 5)),
            ("B", rng.normal(0.0, 1.0, 5)),
            ("mean", rng.normal(0.0, 1.0, 5)),
            ("var", rng.uniform(0.5, 2.0, 5)),
        ):
            g.add_param(f"bn{k}.{p}", arr.astype(np.float32))
    g.add_param("axes", np.array([0, 2, 3], np.int64))
    outs, computed = [], None
    for j, k in enumerate(bn_order):
        stats = ["bn0.mean", "bn0.var"] if tied else [f"bn{k}.mean", f"bn{k}.var"]
        scale = computed if k == 1 and computed else f"bn{k}.scale"
        ins = [f"c{k}.out", scale, f"bn{k}.B", *stats]
        y = g.add_node("BatchNormalization", ins, {"epsilon": 1e-5, "momentum": 0.8}, name=f"bn{k}")
        outs.append(g.add_node("Dropout", y.outputs, {"drop_prob": 0.5}, name=f"d{k}").outputs[0])
        if j == 0 and between == "dropout":
            outs.append(g.add_node("Dropout", ["x"], {"drop_prob": 0.5}, name="dx").outputs[0])
        if j == 0 and between == "peek":
            outs.append(g.add_node("Add", ["z", "bn1.mean"], {}, name="peek").outputs[0])
        if j == 0 and between == "scale":
            mean = g.add_node("ReduceMean", [y.outputs[0], "axes"], {"keepdims": 0}, name="m0")
            computed = mean.outputs[0]
    for o in outs:
        g.mark_output(o)
    return g


@pytest.mark.parametrize("stride", [1, 2])  # 1: fused with the conv; 2: the BNs grouped
@pytest.mark.parametrize(
    ("case", "grouped"),
    [
        # bn1 first in graph order: at bn0's place, its Dropout moved past dx (other masks)
        ({"bn_order": (1, 0), "between": "dropout"}, False),
        ({"bn_order": (0, 1), "between": "dropout"}, True),  # in order: masks drawn as before
        # bn1's scale is the mean of bn0's output: one step would read its own output
        ({"bn_order": (0, 1), "between": "scale"}, False),
        # one running mean and variance: bn1 blends into what bn0 just wrote
        ({"bn_order": (0, 1), "tied": True}, False),
        # peek reads bn1's running mean before bn1 updates it
        ({"bn_order": (0, 1), "between": "peek"}, False),
    ],
)
def test_grouping_keeps_the_graph_semantics(stride, case, grouped):
    """Sibling BNs group only when running them all at the first one's place changes nothing:
    their parameters their own (no other node reads them, none computed), their graph order
    the conv's. Batch 1 -> 3 -> 1, one seed a run: outputs (the Dropout masks too) and
    parameters as the reference plan's."""
    g, ref_g = _sibling_bns(stride, **case), _sibling_bns(stride, **case)
    sess, ref = runtime.Session(g), runtime.Session(ref_g, plan="reference")
    kinds = _kinds(sess)
    assert kinds.count("BatchNormStep") == (0 if grouped else 2)
    for k, batch in enumerate((1, 3, 1)):
        x = 1.0 + np.random.default_rng(k).standard_normal((batch, 4, 6, 6))
        feeds = {"x": x.astype(np.float32), "z": np.zeros(5, np.float32)}
        got = sess.run(feeds, mode="train", seed=k)
        want = ref.run(feeds, mode="train", seed=k)
        assert set(got) == set(want)
        for name in want:  # (Y ~ 1, float32 sums of 4 products, kept ones scaled by 2)
            assert_close(got[name], want[name], rtol=1e-5, atol=4e-5, what=f"run {k} {name}")
        for name in ref_g.params:  # (float64 blends of float32 statistics)
            assert_close(g.params[name], ref_g.params[name], rtol=1e-5, atol=2e-5, what=name)
