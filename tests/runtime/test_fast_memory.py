"""The compiled plan's memory (`runtime/fast/memory.py`): kernel workspaces placed in the
activation arena's gaps, the scratch's view cache, the pool's bookkeeping outside pooled runs."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.passes.manager import optimize
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import memory as fast_memory
from graphnet.runtime.fast import threads as fast_threads

MODEL_RTOL, MODEL_ATOL = 1e-4, 1e-5
"""float32 plans against the reference plan: different summation orders (Winograd, BN folded
into the weights) over a few hundred terms per output."""


def _pool_with(threads: int = 2) -> tuple[fast_memory.Pool, list[fast_memory.Scratch]]:
    scratch = [fast_memory.Scratch() for _ in range(threads)]
    return fast_memory.Pool(scratch), scratch


def _run(pool: fast_memory.Pool, steps: list) -> list[list[np.ndarray]]:
    """One pooled run of synthetic steps: each is (takes, workspaces, gives): activation takes
    (bytes, named), per-thread workspace bytes, names given after the step. Returns each step's
    workspace arrays (filled, then checked untouched by the step's own takes)."""
    pool.begin(("key",))
    held: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seen = []
    for k, (takes, workspaces, gives) in enumerate(steps):
        pool.step_begin(k)
        for name, nbytes in takes:
            held[name] = pool.take((nbytes // 4,), np.dtype(np.float32))
            held[name][0][:] = k + 1
        arrays = []
        for i, nbytes in enumerate(workspaces):
            if nbytes:
                a = pool.scratch[i].take(0, nbytes // 4, np.float32)
                a[:] = -(i + 1)
                arrays.append(a)
        for name, _ in takes:  # the workspaces never overlap the step's outputs...
            assert (held[name][0] == k + 1).all()
        for live, _ in held.values():  # ... nor a value alive during the step
            assert not any(np.may_share_memory(live, a) for a in arrays)
        for i in range(1, len(arrays)):  # ... nor another thread's
            assert not np.may_share_memory(arrays[i], arrays[i - 1])
        seen.append([a.copy() for a in arrays])
        pool.step_end(k)
        for name in gives:
            pool.give(held.pop(name)[1])
    pool.end()
    return seen


# Live values large where workspaces are small and small where they are large: a workspace
# then fits in a gap of the activations. Alive at once: 8 kB in step 0, 4 + 1 + 6 = 11 kB in
# step 1, 1 + 1 + 2 in step 2; the activations' arena (8 kB) and per-thread scratch buffers
# (3 kB each) held 14 kB.
STEPS = [
    ([("a", 4096), ("b", 4096)], [0, 0], ["a"]),  # 8 kB alive, no workspace
    ([("c", 1024)], [3072, 3072], ["b"]),  # 5 kB alive, 6 kB of workspaces
    ([("d", 1024)], [2048, 0], ["c", "d"]),
]


def test_workspaces_are_placed_in_the_arena_gaps():
    pool, scratch = _pool_with()
    _run(pool, STEPS)  # records: the workspaces in the threads' own buffers
    assert all(s.held() == 0 for s in scratch)  # dropped once the layout exists
    arena = pool.held()
    assert arena == 11264  # the max over steps of (values alive + that step's workspaces)
    assert pool.peaks[("key",)] == (1, 4096 + 1024, 2 * 3072)  # where: step 1, values + ws
    for _ in range(2):  # replays: every workspace a view of the arena, nothing allocated
        allocated = pool.allocated
        for arrays in _run(pool, STEPS):
            assert all(a.size for a in arrays)
        assert pool.allocated == allocated == arena
        assert all(s.held() == 0 for s in scratch)


def test_workspace_views_are_arena_memory_and_pooled_runs_are_lean():
    """A replayed step's workspaces are views of the arena. In pooled runs `room()` is 0 (a
    chunked step's chunks follow from the shapes alone: the replay takes what the recording
    took, where the room left in its places by alignment could fit one more item), outside
    them the own buffer's free bytes."""
    pool, scratch = _pool_with()
    _run(pool, STEPS)
    pool.begin(("key",))
    held = {}
    for k, (takes, workspaces, gives) in enumerate(STEPS):
        pool.step_begin(k)
        held |= {name: pool.take((n // 4,), np.dtype(np.float32))[1] for name, n in takes}
        assert scratch[0].room(np.float32) == 0
        if workspaces[0]:
            a = scratch[0].take(0, workspaces[0] // 4 - 3, np.float32)
            assert np.shares_memory(a, pool._arena)
        pool.step_end(k)
        for name in gives:  # (the recorded run's: see `_run`)
            pool.give(held.pop(name))
    pool.end()
    scratch[0].take(0, 1008, np.float32)
    scratch[0].reset()  # the own buffer grows to 4032 bytes (a multiple of ALIGN)
    assert scratch[0].room(np.float32) == 1008


def test_a_spilling_replay_records_again():
    """A replayed step taking more than its region gets memory of its own (right values); a
    run that does not spill in between keeps the layout, `SPILLS_TO_RECORD` spilling runs in
    a row drop it and the next run records anew."""
    pool, scratch = _pool_with(1)
    steps = [([("a", 1024)], [4096], ["a"])]
    _run(pool, steps)
    layout = pool._layouts[("key",)]
    bigger = [([("a", 1024)], [8192], ["a"])]
    for _ in range(3):  # spilling runs, each followed by one that fits: the layout stays
        for _ in range(fast_memory.SPILLS_TO_RECORD - 1):
            (arrays,) = _run(pool, bigger)
            assert (arrays[0] == -1).all() and arrays[0].nbytes == 8192
            assert not np.shares_memory(arrays[0], pool._arena)
        _run(pool, steps)
        assert pool._layouts[("key",)] is layout
    for _ in range(fast_memory.SPILLS_TO_RECORD):
        assert ("key",) in pool._layouts
        _run(pool, bigger)
    assert ("key",) not in pool._layouts  # dropped: the next run records
    _run(pool, bigger)
    assert ("key",) in pool._layouts
    _run(pool, bigger)
    assert ("key",) in pool._layouts and not pool._spills  # replayed without spilling


def test_a_new_layout_starts_its_spill_count_anew():
    """A key's spilling replays count against its layout only: a layout recorded anew (after
    MAX_LAYOUTS other keys evicted it) starts from none, and evicted layouts' counts go with
    them (found by review: a stale count of 15 dropped a fresh layout after one spilling run,
    and 2,000 keys that spilled once kept 2,000 counts)."""
    pool, _ = _pool_with(1)

    def run(key, workspace: int) -> None:
        pool.begin(key)
        pool.step_begin(0)
        _, buf = pool.take((256,), np.dtype(np.float32))
        pool.scratch[0].take(0, workspace // 4, np.float32)
        pool.step_end(0)
        pool.give(buf)
        pool.end()

    run("A", 4096)  # recorded
    for _ in range(fast_memory.SPILLS_TO_RECORD - 1):
        run("A", 8192)  # spilling replays, one short of recording again
    assert pool._spills == {"A": fast_memory.SPILLS_TO_RECORD - 1}
    for i in range(fast_memory.MAX_LAYOUTS):
        run(("B", i), 4096)  # the layouts are evicted on the way
    assert "A" not in pool._layouts and "A" not in pool._spills
    run("A", 4096)  # recorded anew
    run("A", 8192)
    assert "A" in pool._layouts and pool._spills == {"A": 1}
    for i in range(3 * fast_memory.MAX_LAYOUTS):
        run(("K", i), 4096)
        run(("K", i), 8192)
    assert len(pool._spills) <= len(pool._layouts) <= fast_memory.MAX_LAYOUTS


def test_failed_runs_leave_the_pools_count_of_bytes_as_it_was():
    """A run that fails (abort) drops its takes not given back with its values: `allocated`
    stays what the pool holds, whether the run was recording, or replaying and had left its
    recording (fresh buffers from then on). It grew by each failed run's takes (found by
    review: 30 KiB -> 786 KiB over 150 runs of which a third failed)."""
    pool, _ = _pool_with(1)
    _run(pool, [([("a", 1024), ("b", 2048)], [0], ["a", "b"])])  # recorded
    base = pool.allocated
    for k in range(20):
        pool.begin(("key",) if k % 2 else ("other", k))  # a replay / a recording run
        pool.step_begin(0)
        kept = [  # (held, as a run's values are, until it fails)
            pool.take((512 + k,), np.dtype(np.float32)),  # (the replay leaves its recording)
            pool.take((64,), np.dtype(np.float32)),
        ]
        pool.abort()
        del kept
        assert pool.allocated == base, k
    _run(pool, [([("a", 1024), ("b", 2048)], [0], ["a", "b"])])  # still replayed right
    assert pool.allocated == base == pool.held()


@pytest.mark.parametrize("model", ["inception_bn", "norms_acts"])
def test_runs_alternating_split_and_inline_keep_their_layout(model):
    """While another thread's split call holds the threads (`threads._dispatch`), a plan's
    split calls run inline, every slice on scratch 0, past its recorded place: such runs are
    right (fresh memory for the rest), keep the layout when they alternate with split runs
    (two sessions in two threads re-recorded a run in three), and a session that stays inline
    records its own layout after `SPILLS_TO_RECORD` of them."""
    g = optimize(suite.build(model), "inference")[0]
    name = g.inputs[0]
    x = np.random.default_rng(3).standard_normal((8, *g.values[name].shape[1:])).astype("f4")
    want = runtime.Session(g, plan="reference").run({name: x})
    mp = pytest.MonkeyPatch()
    mp.setattr(fast_compile, "WORKERS", 2)  # (two threads' scratch whatever the machine)
    mp.setattr(fast_threads, "_skip", 0)
    sess = runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)

    def check(inline: bool) -> None:
        if inline:
            fast_threads._dispatch.acquire()
        try:
            got = sess.run({name: x})
        finally:
            if inline:
                fast_threads._dispatch.release()
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=MODEL_RTOL, atol=MODEL_ATOL)

    try:
        check(False)  # records, split
        (layout,) = plan.pool._layouts.values()
        for k in range(2 * fast_memory.SPILLS_TO_RECORD):
            check(inline=k % 2 == 1)
            assert plan.pool._layouts[next(iter(plan.pool._layouts))] is layout
        spilled = bool(plan.pool._spills)  # (after an inline run)
        for _ in range(fast_memory.SPILLS_TO_RECORD + 2):
            check(inline=True)
        assert spilled  # (the inline runs went past scratch 0's places)
        (again,) = plan.pool._layouts.values()
        assert again is not layout and not plan.pool._spills  # recorded inline
    finally:
        mp.undo()


def test_a_bound_scratch_never_takes_past_its_region():
    """A view cached for a place of a larger region (another step's, same offset) is not
    reused past this step's region: the take gets an array of its own."""
    arena = np.zeros(4096, np.uint8)
    sc = fast_memory.Scratch()
    sc.bind(arena, 0, 4096)
    assert np.shares_memory(sc.take(0, 512, np.float32), arena)  # 2048 bytes: cached
    sc.reset()
    sc.bind(arena, 0, 1024)
    a = sc.take(0, 512, np.float32)
    assert not np.shares_memory(a, arena) and sc._own == a.nbytes
    sc.reset()


def test_a_recording_run_holds_only_what_its_takes_hold():
    """A recorded run takes fresh memory and drops it at the give (only the lifetimes are
    recorded): it holds exactly its live values, no free lists (a best-fit pool held up to
    twice as much: lenet5@32's first run peaked at 3.81 MiB, now 2.41, its arena 2.39), and
    the threads' workspaces are arrays of their own dropped after each step (no own buffer
    as large as the largest step's, kept to the end of the run)."""
    pool, scratch = _pool_with(1)
    f32 = np.dtype(np.float32)
    pool.begin(("key",))
    held = []
    for k, n in enumerate((8000, 8000, 3000, 3000, 1000, 1000, 400, 400)):  # values shrink
        pool.step_begin(k)
        held.append(pool.take((n,), f32)[1])
        scratch[0].take(0, 4 * n, np.float32)[:] = 1  # a workspace 4x the step's value
        pool.step_end(k)
        assert scratch[0].held() == 0
        if len(held) > 2:  # each value dies two takes later
            pool.give(held.pop(0))
        assert pool.allocated == sum(b.nbytes for b in held) and pool.held() == 0
    for b in held:
        pool.give(b)
    pool.end()
    assert pool.held() == pool.allocated  # the arena


def test_scratch_view_cache_is_capped():
    """A long-lived plan seeing many batch sizes makes a view per (place, size): the cache of
    them starts afresh past MAX_VIEWS, and the places stay right."""
    sc = fast_memory.Scratch()
    sc.take(0, 4096, np.float32)
    sc.reset()
    for n in range(1, 3 * fast_memory.MAX_VIEWS):
        a = sc.take(0, n % 1000 + 1, np.float32)
        b = sc.take(1, 7, np.float32)
        assert not np.shares_memory(a, b)
        assert len(sc._views) <= fast_memory.MAX_VIEWS
        sc.reset()
    assert sc.held() == 4096 * 4  # no array of its own: every place fitted the buffer


def test_keep_all_runs_leave_the_pool_empty():
    """keep_all hands every buffer to the caller: the pool neither keeps nor counts them (its
    `allocated` grew by each run's buffers)."""
    g = optimize(suite.build("lenet5"), "inference")[0]
    sess = runtime.Session(g)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    for _ in range(3):
        sess.run({g.inputs[0]: x}, keep_all=True)
    plan = sess._fast(training=False, keep_all=True)
    assert plan.pool.allocated == plan.pool.held() == 0


def _watch(plan) -> list:
    """Wrap the plan's steps and its threads' scratch: per step, (workspaces taken, arrays
    alive before and after it)."""
    events: list = []
    for s in plan.parallel.scratch:
        take = s.take

        def watched(slot, size, dtype, take=take):
            a = take(slot, size, dtype)
            events[-1][1].append(a)
            return a

        s.take = watched
    for k, step in enumerate(list(plan.steps)):

        def wrapped(run, step=step):
            events.append((step.name, [], [a for a in run.env if isinstance(a, np.ndarray)]))
            step(run)
            events[-1][2].extend(a for a in run.env if isinstance(a, np.ndarray))

        plan.steps[k] = wrapped
    return events


@pytest.mark.parametrize(
    ("model", "shape"),
    # video3d at batch 1 and 2: its 3x3x3 convs as wino3d (conv.py: 3-D padded input, frames'
    # tiles, stacked taps, in the arena); vgg_bn at batch 4:
    # its first Winograd conv (256 columns) transforms its weights into the arena, the others
    # (16-64 columns) keep them (winograd.PER_RUN_MIN_COLUMNS)
    [("inception_bn", (3, 3, 32, 32)), ("video3d", 2), ("video3d", 1), ("vgg_bn", 4)],
)
def test_replayed_workspaces_never_overlap_live_values(model, shape):
    """On real plans (convs of every algorithm, pools, concat): in a replayed run every
    workspace is arena memory overlapping no value alive during its step; an arena filled with
    NaN before the run changes no output (no step reads what another left); the threads keep
    no scratch of their own."""
    g = optimize(suite.build(model), "inference")[0]
    name = g.inputs[0]
    if isinstance(shape, int):
        shape = (shape, *g.values[name].shape[1:])
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    want = ref.run({name: x})
    sess.run({name: x})  # records
    plan = sess._fast(training=False, keep_all=False)
    (layout,) = plan.pool._layouts.values()
    events = _watch(plan)
    plan.pool._arena.view(np.float32)[:] = np.nan
    got = sess.run({name: x})
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=MODEL_RTOL, atol=MODEL_ATOL)
    used = 0
    for step, workspaces, live in events:
        for a in workspaces:
            assert np.shares_memory(a, plan.pool._arena), step
            assert not any(np.may_share_memory(a, v) for v in live), step
            used += 1
    assert used > 0
    assert plan.parallel.held() == 0
    sess.run({name: x})
    (again,) = plan.pool._layouts.values()
    assert again is layout  # replayed again: no step spilled (no new record)


def test_bench_peak_counts_what_the_first_run_kept():
    """`graphnet bench`'s peak: what a warm run holds at its peak, including what the first run
    allocated and kept (prepared weights, the arena), not the first run's transient peak."""
    from graphnet.bench.engines import traced_peak

    kept: list = []

    def run() -> float:
        if not kept:
            kept.append(np.ones(1 << 18, np.float32))  # 1 MiB kept (a prepared weight)
            np.ones(1 << 21, np.float32).sum()  # 8 MiB once (a recording run's pool)
        return float(np.ones(1 << 19, np.float32).sum())  # 2 MiB while it runs

    peak = traced_peak(run)
    assert (3 << 20) <= peak < (3 << 20) + (1 << 16)


@pytest.mark.parametrize(("c", "mo"), [(48, 48), (48, 24), (24, 40), (16, 64)])
@pytest.mark.parametrize("batch", [1, 3])
def test_winograd_reuses_dead_workspaces(c, mo, batch):
    """Winograd F(4x4)'s transformed output M^T takes the place of V1 (dead once V is made,
    grown where it is for more output channels: the last place), Y1 the place of V, Y that of
    M^T and the channels-last Y Y1's: with M <= C the step needs the padded input and two
    planes of C x tiles x t^2, where M's own place made three; Y1 moves past the places when it
    does not fit V's. The crop to 9 x 11 happens in the copy out (no place for the whole tiles'
    outputs). The scratch is NaN first: a stage reading a dead place would show. The plain
    conv (float64) is the oracle."""
    from graphnet.runtime.fast import conv as fast_conv
    from graphnet.runtime.kernels.conv import conv
    from tests.oracles import float32_bound

    rng = np.random.default_rng(15)
    x = rng.standard_normal((batch, c, 9, 11)).astype(np.float32)
    w = rng.standard_normal((mo, c, 3, 3)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, c, mo)
    wp = fast_conv.prepare_weight("winograd-f4", w, 1, np.float32)
    sc = fast_memory.Scratch()
    sc.take(0, 1 << 20, np.float32)
    sc.reset()
    sc._buf.view(np.float32)[:] = np.nan
    out = np.empty((batch, mo, 9, 11), np.float32)
    fast_conv.conv_chunked("winograd-f4", spec, x, wp, out, fast_conv.Epilogue(), sc)
    need = sc.used()  # this step's places, in bytes (before the reset frees them)
    sc.reset()
    kw = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(np.float64), w.astype(np.float64), None, **kw)
    mags = conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, **kw)
    assert (np.abs(out - exact) <= float32_bound(mags, c * 9 + 64)).all()

    def span(elements: int) -> int:
        return -(-elements * 4 // fast_memory.ALIGN) * fast_memory.ALIGN

    cols = batch * 3 * 3  # tiles: ceil(9 / 4) x ceil(11 / 4) per image
    # padded input, D (then V), V1 (then M^T)
    places = [batch * c * 14 * 14, 36 * c * cols, 36 * max(c, mo) * cols]
    if 24 * mo > 36 * c:
        places.append(24 * mo * cols)  # Y1 past V's place
    assert need == sum(span(p) for p in places)


def test_memory_breakdown_parts_match_what_the_plan_holds():
    """benchmarks/memory_breakdown.py splits `graphnet bench`'s peak (its parts add up to it by
    construction); each part is checked here against what the plan independently holds: "kept"
    covers the prepared conv weights (those not sharing memory with a parameter), "run's own"
    covers the run's outputs, "arena" is the pool's arena plus the threads' scratch."""
    from benchmarks.memory_breakdown import breakdown

    name, batch = "vgg_bn", 1  # Winograd and im2col convs: prepared copies and views both
    row = breakdown(name, batch)
    g = optimize(suite.build(name), "inference")[0]
    x = np.random.default_rng(0).standard_normal((batch, *g.values[g.inputs[0]].shape[1:]))
    sess = runtime.Session(g)
    out = sess.run({g.inputs[0]: x.astype(np.float32)})
    plan = sess._fast(training=False, keep_all=False)
    prepared = 0
    for step in plan.steps:
        for *_, wp in getattr(step, "_prepared", {}).values():
            if not any(np.shares_memory(wp, p) for p in g.params.values()):
                prepared += wp.nbytes
    k, values, workspaces = next(iter(plan.pool.peaks.values()))
    assert row["arena's peak at"].startswith(plan.steps[k].name + " (")
    assert values + workspaces <= plan.pool._arena.nbytes  # (the packing's lower bound)
    mib = 2**20
    assert prepared > mib  # the check below means something: Winograd's weights are MiBs
    # Beside the prepared weights the first run keeps the FC layers' copies and, when it is
    # the process's first run, module state (the ReLU zeros block, 256 KiB of float32; cached
    # geometry): measured 0.02-0.5 MiB on this model, so 1 MiB of slack.
    assert prepared / mib <= row["kept"] <= prepared / mib + 1.0
    assert row["run's own"] >= sum(o.nbytes for o in out.values()) / mib
    assert row["arena"] * mib == pytest.approx(plan.pool.held() + plan.parallel.held())
    assert row["first run"] >= row["kept"] + row["arena"]


@pytest.mark.parametrize("model", ["vgg_bn", "video3d"])
def test_a_warm_inference_run_allocates_little_beside_its_outputs(model):
    """BatchNorm steps (the graph not optimized: no fold) on more than one image broadcast
    their per-channel vectors as one image's rows: those rows are scratch (in the arena's
    gaps), not new arrays per run. One image's row is 256 KiB in vgg_bn's first stage and
    128 KiB in video3d's (each BN took 2-3 rows per run before); what a warm run allocates
    beside its outputs is Python's objects and (C,) vectors: 13 and 70 KiB measured, 128 KiB
    allowed."""
    import tracemalloc

    g = suite.build(model)
    inp = g.inputs[0]
    shape = tuple(4 if not isinstance(d, int) else d for d in g.values[inp].shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    s = runtime.Session(g)
    for _ in range(3):
        outs = s.run({inp: x})
    tracemalloc.start()
    try:
        s.run({inp: x})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - sum(v.nbytes for v in outs.values()) < 128 * 1024


def _residual_block(c: int, hw: tuple[int, int], kernel, pads) -> tuple:
    """x -> h = ReLU(conv3x3(x)), r = ReLU(conv(x)) shaped like conv_b's output;
    out = MaxPool(ReLU(conv_b(h) + r)): conv_b's residual r dies there, r is no feed (a pooled
    buffer) and conv_b's output no graph output. Returns (graph, conv_b's node name)."""
    from graphnet import nn

    net = nn.Network("res", seed=7)
    x = net.input("x", (None, c, *hw))
    h = nn.ReLU()(nn.Conv(c, 3, padding=1)(x))
    # r (before conv_b: a fused residual is produced first): a conv of x with conv_b's output
    # shape (the rows / columns conv_b's kernel drops beyond its pads)
    ks = (kernel, kernel) if isinstance(kernel, int) else kernel
    ps = (pads, pads) if isinstance(pads, int) else pads
    r = nn.ReLU()(nn.Conv(c, (ks[0] - 2 * ps[0], ks[1] - 2 * ps[1]))(x))
    y = nn.Conv(c, kernel, padding=pads, name="conv_b")(h)
    z = nn.ReLU()(nn.add(y, r))
    net.output(nn.MaxPool(2)(z), name="out")
    return net.graph, "conv_b"


@pytest.mark.parametrize(
    ("c", "hw", "kernel", "pads", "batch", "algo", "overwrites"),
    [
        # colstack on its own rows (not the output as the sum's base)
        (16, (12, 10), 3, 1, 3, "colstack", True),
        (16, (12, 10), 3, 1, 1, "colstack", True),
        (16, (9, 7), (1, 3), (0, 1), 2, "colstack", True),  # 1x3: the input is the operand
        (16, (9, 8), 3, (1, 0), 3, "colstack", True),  # padded rows (no width pads): a crop
        (16, (11, 9), 5, 2, 2, "colstack", True),  # 5x5, own rows
        (48, (8, 8), 3, 1, 5, "winograd-f4", True),  # tiles cover the output: copied out
        (48, (6, 10), 3, 1, 4, "winograd-f4", False),  # tiles past the output: crop, then add
        (96, (8, 8), 3, 1, 1, "winograd-f2", True),  # too few F(4x4) tiles: F(2x2), exact
        (96, (7, 9), 3, 1, 1, "winograd-f2", False),  # ... its tiles past the output
        (8, (9, 7), 3, 1, 3, "im2col", False),  # exact columns: the GEMM writes the output
        (16, (9, 7), 1, 0, 3, "pointwise", False),  # the GEMM writes the output first
    ],
)
def test_conv_writes_over_a_residual_that_dies_there(
    c, hw, kernel, pads, batch, algo, overwrites, monkeypatch
):
    """A conv with a fused residual Add whose residual dies there takes the residual's buffer
    for its output, when its algorithm adds the residual while copying each chunk out of a
    workspace (`conv.overwrites_residual`); results equal the reference plan's (a replayed
    run, arena filled with NaN first, included). Every split is forced: the batch over the
    threads, or one image's GEMM rows; colstack overwrites from one image here."""
    from graphnet.runtime.fast import conv as fast_conv
    from graphnet.runtime.fast import threads
    from graphnet.runtime.fast.steps import linear

    monkeypatch.setattr(fast_conv, "COLSTACK_OVERWRITE_MIN_BATCH", 1)
    monkeypatch.setattr(linear, "ROW_SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    g, name = _residual_block(c, hw, kernel, pads)
    x = np.random.default_rng(4).standard_normal((batch, c, *hw)).astype(np.float32)
    want = runtime.Session(g, plan="reference").run({"x": x})["out"]
    sess, plain = runtime.Session(g), runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)
    (step,) = [s for s in plan.steps if s.name == name]
    # planned for the algorithms that can (`overwrites_residual` then decides per shape)
    assert step.residual is not None
    assert step.overwrite == (algo == "colstack" or algo.startswith("winograd"))
    for s in plain._fast(training=False, keep_all=False).steps:
        if hasattr(s, "overwrite"):
            s.overwrite = False  # the same plan writing every output to a buffer of its own
    shared = []
    run_step = step.__call__

    def watched(run):
        res = run.env[step.residual]
        run_step(run)
        shared.append(np.shares_memory(run.env[step.outputs[0]], res))

    plan.steps[plan.steps.index(step)] = watched
    for k in range(3):
        if k == 2:
            plan.pool._arena.view(np.float32)[:] = np.nan
        got = sess.run({"x": x})["out"]
        np.testing.assert_allclose(got, want, rtol=MODEL_RTOL, atol=MODEL_ATOL)
        plain.run({"x": x})
    assert step.ran == algo
    assert shared == [overwrites] * 3


def test_resnet_blocks_write_over_their_inputs(monkeypatch):
    """resnet20: each block's second conv writes over the block's input (colstack at 16
    channels, Winograd at 32-64): the arena's peak (a block's input, the first conv's output,
    the second's, and its workspaces) loses one activation; outputs equal the reference's.
    Two threads' workspaces whatever the machine (GRAPHNET_NUM_THREADS=1: other peaks)."""
    monkeypatch.setattr(fast_compile, "WORKERS", 2)
    g = optimize(suite.build("resnet20"), "inference")[0]
    name = g.inputs[0]
    x = np.random.default_rng(6).standard_normal((8, *g.values[name].shape[1:]))
    feeds = {name: x.astype(np.float32)}
    sess, plain = runtime.Session(g), runtime.Session(g)
    steps = sess._fast(training=False, keep_all=False).steps
    assert sum(getattr(s, "overwrite", False) for s in steps) >= 6
    for s in plain._fast(training=False, keep_all=False).steps:
        if hasattr(s, "overwrite"):
            s.overwrite = False
    want = runtime.Session(g, plan="reference").run(feeds)
    for k, v in sess.run(feeds).items():
        np.testing.assert_allclose(v, want[k], rtol=MODEL_RTOL, atol=MODEL_ATOL)
    plain.run(feeds)
    activation = 8 * 16 * 32 * 32 * 4  # bytes of one 16-channel 32x32 activation (under 8
    # images the workspaces of the convs, not the blocks, make the peak)
    assert sess.held_bytes <= plain.held_bytes - activation


def test_no_overwrite_where_the_residual_lives_on_or_is_the_input():
    """conv(x) + x (the residual is the conv's own input) and a residual still read after the
    conv: the output gets a buffer of its own."""
    from graphnet import nn

    net = nn.Network("res", seed=8)
    x0 = net.input("x", (None, 16, 10, 10))
    x = nn.ReLU()(nn.Conv(16, 3, padding=1)(x0))
    y = nn.ReLU()(nn.add(nn.Conv(16, 3, padding=1, name="own")(x), x))
    z = nn.add(nn.Conv(16, 3, padding=1, name="lives")(y), y)
    net.output(nn.MaxPool(2)(nn.add(z, y)), name="out")
    g = net.graph
    sess = runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)
    steps = {s.name: s for s in plan.steps}
    assert steps["own"].residual is not None and not steps["own"].overwrite
    assert steps["lives"].residual is not None and not steps["lives"].overwrite
    x_in = np.random.default_rng(5).standard_normal((2, 16, 10, 10)).astype(np.float32)
    want = runtime.Session(g, plan="reference").run({"x": x_in})["out"]
    for _ in range(2):
        got = sess.run({"x": x_in})["out"]
        np.testing.assert_allclose(got, want, rtol=MODEL_RTOL, atol=MODEL_ATOL)


def _downsampling_block() -> object:
    """ResNet's downsampling block: h = ReLU(conv3x3/2(x)), t = conv3x3(h), the projection
    shortcut s = conv1x1/2(x) after them in graph order, out = ReLU(t + s)."""
    from graphnet import nn

    net = nn.Network("down", seed=9)
    x0 = net.input("x", (None, 16, 16, 16))
    x = nn.ReLU()(nn.Conv(16, 3, padding=1)(x0))
    h = nn.ReLU()(nn.Conv(32, 3, stride=2, padding=1)(x))
    t = nn.Conv(32, 3, padding=1, name="second")(h)
    s = nn.Conv(32, 1, stride=2, name="shortcut")(x)
    z = nn.ReLU()(nn.add(t, s))
    net.output(nn.MaxPool(2)(z), name="out")
    return net.graph


@pytest.mark.parametrize("batch", [8, 3])
def test_projection_shortcut_runs_first_and_is_written_over(batch):
    """The block's second conv takes the Add with the shortcut's output as its residual: the
    1x1 shortcut runs first (the block's input dies there, before the second conv and its
    workspaces) and the second conv writes over the shortcut's output when its algorithm can
    (Winograd at 8 images; at 3 its few tiles run colstack, under its overwrite batch). Values
    equal the reference plan's; train mode keeps graph order (the shortcut adds t)."""
    g = _downsampling_block()
    x = np.random.default_rng(7).standard_normal((batch, 16, 16, 16)).astype(np.float32)
    want = runtime.Session(g, plan="reference").run({"x": x})["out"]
    sess = runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)
    names = [s.name for s in plan.steps]
    k, k2 = names.index("shortcut"), names.index("second")
    shortcut, second = plan.steps[k], plan.steps[k2]
    assert k < k2 and shortcut.inputs[0] in plan.frees[k]  # the block's input dies there
    assert second.residual == shortcut.outputs[0] and second.overwrite
    rows = {line.split()[0]: line for line in sess.describe().splitlines()[1:]}
    assert "runs before second" in rows["shortcut"]  # both choices visible
    assert "over its residual's buffer" in rows["second"]
    shared = []

    def watched(run, step=second):
        res = run.env[step.residual]
        step(run)
        shared.append(np.shares_memory(run.env[step.outputs[0]], res))

    plan.steps[k2] = watched
    for _ in range(2):
        np.testing.assert_allclose(
            sess.run({"x": x})["out"], want, rtol=MODEL_RTOL, atol=MODEL_ATOL
        )
    assert shared == [batch >= 8] * 2
    train = [s.name for s in sess._fast(training=True, keep_all=False).steps]
    assert train.index("second") < train.index("shortcut")


def test_a_shortcut_whose_add_stays_apart_is_not_said_to_move():
    """A 1x1 shortcut whose Add cannot fuse into the conv before it (its output broadcasts:
    (N, 48, 1, 1) against (N, 48, 8, 8)): describe() does not say it runs before that conv
    (the memory-lowering order may still run it early); results equal the reference plan's."""
    from graphnet import nn

    net = nn.Network("bc", seed=1)
    x = net.input("x", (None, 16, 8, 8))
    x1 = nn.ReLU()(nn.Conv(16, 3, padding=1)(x))
    h = nn.ReLU()(nn.Conv(48, 3, padding=1, name="first")(x1))
    t = nn.Conv(48, 3, padding=1, name="second")(h)
    s = nn.Conv(48, 1, stride=8, name="shortcut")(x1)
    net.output(nn.MaxPool(2)(nn.ReLU()(nn.add(t, s))), name="out")
    sess = runtime.Session(net.graph)
    plan = sess._fast(training=False, keep_all=False)
    assert not any("runs before" in st.why for st in plan.steps)
    assert [st.op for st in plan.steps].count("Add") == 1  # (the Add is a step of its own)
    xin = np.random.default_rng(0).standard_normal((8, 16, 8, 8)).astype(np.float32)
    want = runtime.Session(net.graph, plan="reference").run({"x": xin})["out"]
    np.testing.assert_allclose(sess.run({"x": xin})["out"], want, rtol=MODEL_RTOL, atol=MODEL_ATOL)


def test_the_last_place_grows_where_it_is():
    """A slot taken again larger grows in place when nothing was placed after it (its data
    stays, the step's total is the larger size, not both), and moves past the others otherwise."""
    sc = fast_memory.Scratch()
    sc.take(0, 4096, np.float32)
    sc.reset()  # the own buffer: 16 KiB
    a = sc.take(5, 100, np.float32)
    b = sc.take(0, 200, np.float32)
    b[:] = 7
    grown = sc.take(0, 1000, np.float32)
    assert np.shares_memory(grown, b) and (grown[:200] == 7).all()
    assert sc.used() == fast_memory._aligned(400) + fast_memory._aligned(4000)
    a2 = sc.take(5, 300, np.float32)  # not the last place: moved past slot 0
    assert not np.shares_memory(a2, a) and not np.shares_memory(a2, grown)
    assert sc.used() == fast_memory._aligned(400) + fast_memory._aligned(4000) + 1216


def _events_run(pool: fast_memory.Pool, events: list) -> tuple[dict, list]:
    """One pooled run of synthetic events: ("take", name, bytes), ("give", name), ("ws",
    bytes: scratch 0's workspace in the current step), ("step", k): step k begins (the
    previous one ends). Each array is filled with its own mark when it appears; returns (the
    arrays by name, the marks found overwritten while their arrays were alive)."""
    pool.begin(("key",))
    live: dict[str, np.ndarray] = {}
    bufs: dict[str, np.ndarray] = {}
    marks: dict[str, float] = {}
    clobbered = []
    step = None

    def check() -> None:
        clobbered.extend(n for n, a in live.items() if not (a == marks[n]).all())

    for ev in events:
        if ev[0] == "step":
            if step is not None:
                pool.step_end(step)
            step = ev[1]
            pool.step_begin(step)
            live.pop("ws", None)  # (the previous step's workspace is free)
            continue
        if ev[0] == "take":
            live[ev[1]], bufs[ev[1]] = pool.take((ev[2] // 4,), np.dtype(np.float32))
            name = ev[1]
        elif ev[0] == "ws":
            live["ws"] = pool.scratch[0].take(0, ev[1] // 4, np.float32)
            name = "ws"
        else:
            pool.give(bufs.pop(ev[1]))
            live.pop(ev[1])
            continue
        marks[name] = float(len(marks) + 1)
        live[name][:] = marks[name]
        check()
    pool.step_end(step)
    pool.end()
    return bufs, clobbered


# (recorded run, a run of the same sizes deciding otherwise): a value given later than
# recorded, another value of its size given in its stead, a workspace placed where the
# recording had a dead value, a value taken in a step with workspaces where the recording
# took it in the next step (at the workspace's place)
DIVERGENT_RUNS = [
    (
        [("step", 0), ("take", "a", 4096), ("give", "a"), ("take", "b", 4096), ("step", 1)],
        [("step", 0), ("take", "a", 4096), ("take", "b", 4096), ("give", "a"), ("step", 1)],
    ),
    (
        [("step", 0), ("take", "a", 4096), ("take", "b", 4096), ("give", "a")]
        + [("step", 1), ("take", "c", 4096), ("give", "b"), ("give", "c")],
        [("step", 0), ("take", "a", 4096), ("take", "b", 4096), ("give", "b")]
        + [("step", 1), ("take", "c", 4096), ("give", "a"), ("give", "c")],
    ),
    (
        [("step", 0), ("take", "a", 4096), ("give", "a"), ("step", 1), ("ws", 4096)],
        [("step", 0), ("take", "a", 4096), ("step", 1), ("ws", 4096), ("give", "a")],
    ),
    (
        [("step", 0), ("ws", 4096), ("step", 1), ("take", "b", 4096), ("give", "b")],
        [("step", 0), ("ws", 4096), ("take", "b", 4096), ("step", 1), ("give", "b")],
    ),
]


@pytest.mark.parametrize(("recorded", "other"), DIVERGENT_RUNS)
def test_a_replay_that_departs_from_its_recording_leaves_the_arena(recorded, other):
    """Steps decide per run (NormStep's fused pool: PReLU before or after the pool by the
    slopes' signs; threads inline or split), so a run with recorded shapes may take or give
    in another order with the same sizes: the replay checks every take, give and step
    boundary against the recorded run's and leaves the arena at the first that differs (the
    pool checked sizes only: a value then got a place another live value held). The rest of
    the run is fresh memory, no live value is overwritten, the next run records anew and then
    replays in the arena."""
    pool, _ = _pool_with(1)
    for _ in range(2):  # records, replays
        assert _events_run(pool, recorded)[1] == []
    assert ("key",) in pool._layouts
    for _ in range(2):  # departs (the layout is dropped), records the other order
        assert _events_run(pool, other)[1] == []
    assert ("key",) in pool._layouts
    bufs, clobbered = _events_run(pool, other)  # replays it: arena views
    assert clobbered == [] and all(b.base is pool._arena for b in bufs.values())
    assert _events_run(pool, recorded)[1] == []  # and back


def _norm_prelu_same_size_pool(rng: np.random.Generator):
    """GroupNorm -> PRelu -> MaxPool 3x3 (stride 1, pad 1: the pooled shape is the input's)
    fused into one step, then y = pooled * 0.5 + pooled."""
    g = Graph("norm_prelu_pool")
    g.add_input("x", (None, 6, 10, 14), "float32")
    g.add_param("scale", rng.uniform(0.5, 1.5, (6,)).astype(np.float32))
    g.add_param("bias", rng.normal(0.0, 1.0, (6,)).astype(np.float32))
    g.add_param("slope", np.full((6, 1, 1), 0.5, np.float32))
    g.add_param("k", np.float32(0.5))
    attrs = {"epsilon": 1e-5, "num_groups": 3}
    y = g.add_node("GroupNormalization", ["x", "scale", "bias"], attrs, name="norm").outputs[0]
    y = g.add_node("PRelu", [y, "slope"], {}, name="act").outputs[0]
    pool = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    p = g.add_node("MaxPool", [y], pool, name="pool").outputs[0]
    y = g.add_node("Mul", [p, "k"], {}, name="half").outputs[0]
    y = g.add_node("Add", [y, p], {}, name="sum").outputs[0]
    g.mark_output(y)
    return g, y


@pytest.mark.parametrize("batch", [1, 3])
def test_prelu_slopes_changing_sign_between_runs_keep_the_values_apart(batch):
    """The norm step with its fused PReLU and pool takes a temporary for the activation before
    the pool (a slope < 0) and none after it (every slope >= 0): with a pool keeping the shape,
    the same sizes in another order. A replay of the other decision's recording put the pooled
    output over the values it reads (max error 2.8 against the reference plan, no error
    raised); now each run matches the reference plan."""
    rng = np.random.default_rng(5)
    g, y = _norm_prelu_same_size_pool(rng)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rows = sess._fast(training=False, keep_all=False).describe()
    assert [(r["op"], r["fused"]) for r in rows][0] == ("GroupNormalization", ["act", "pool"])
    x = rng.standard_normal((batch, 6, 10, 14)).astype(np.float32)
    for slope in (0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, 0.5):
        g.set_param("slope", np.full((6, 1, 1), slope, np.float32))
        got = sess.run({"x": x})[y]
        want = ref.run({"x": x})[y]
        np.testing.assert_allclose(got, want, rtol=MODEL_RTOL, atol=MODEL_ATOL, err_msg=slope)
