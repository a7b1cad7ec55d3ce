"""A channel Concat whose only reader is a MaxPool tiling it takes the pool
(`CompiledPlan._pool_concats`, `ConcatStep.pool`, `MaxPoolStep.pool_channels`): each input is
pooled into its channel slice of the pooled output, no concatenation made. The max is exact, so
the fused plan must equal the plan without the fusion bit for bit (the same convs run in both);
against the plain kernels and onnxruntime within the convs' float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.fast.steps import ConcatStep, MaxPoolStep
from graphnet.runtime.fast.steps import pool as fast_pool
from tests.helpers import export_checked, ort_run
from tests.oracles import naive_pool

# Convs of 5-54 products of O(0.3) weights and O(1) inputs: float32 rounding ~1e-6 relative;
# a misplaced channel slice or a wrong window is off by O(0.1).
RTOL, ATOL = 1e-5, 1e-5


def _net(
    kernel: tuple,
    sizes: tuple = (8, 6),
    cat_readers: int = 1,
    pads: int = 0,
    convs_only: bool = False,
) -> Graph:
    """x (N, 5, *sizes) -> branches of every kind -> channel Concat -> MaxPool(kernel, stride
    kernel, `pads`) -> output: a 1x1 conv with ReLU, a 3x3 conv, a 3x1 conv, a "same" 3x3
    MaxPool, x itself (a graph input: someone else's array) and a Relu of x (`convs_only`:
    the three convs, which a batch-1 plan places in the Concat's buffer). With
    `cat_readers` 2 the Concat is also negated into a second output."""
    rng = np.random.default_rng(21)
    g = Graph("concat_pool")
    g.add_input("x", (None, 5, *sizes))

    def conv(name, m, kh, kw, act=True):
        g.add_param(f"{name}.w", (0.3 * rng.standard_normal((m, 5, kh, kw))).astype(np.float32))
        g.add_param(f"{name}.b", rng.standard_normal(m).astype(np.float32))
        attrs = {"pads": [kh // 2, kw // 2, kh // 2, kw // 2], "strides": [1, 1]}
        y = g.add_node("Conv", ["x", f"{name}.w", f"{name}.b"], attrs, name=name).outputs[0]
        return g.add_node("Relu", [y], {}, name=f"{name}.relu").outputs[0] if act else y

    same = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    ins = [conv("pw", 3, 1, 1), conv("c33", 7, 3, 3, act=False), conv("c31", 4, 3, 1)]
    if not convs_only:
        ins += [
            g.add_node("MaxPool", ["x"], same, name="same").outputs[0],
            "x",
            g.add_node("Relu", ["x"], {}, name="rx").outputs[0],
        ]
    cat = g.add_node("Concat", ins, {"axis": 1}, name="cat").outputs[0]
    attrs = {"kernel_shape": list(kernel), "strides": list(kernel), "pads": [pads] * 4}
    g.mark_output(g.add_node("MaxPool", [cat], attrs, name="pool").outputs[0])
    if cat_readers > 1:
        g.mark_output(g.add_node("Neg", [cat], {}, name="neg").outputs[0])
    return g


def _unfused(g: Graph, monkeypatch) -> runtime.Session:
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_pool_concats", lambda self: None)
        sess = runtime.Session(g)
        for training in (False, True):  # compiled now, without the fusion
            sess._fast(training=training, keep_all=False)
    return sess


# inf - inf in the convs on a helper thread, where the caller's np.errstate does not reach
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kernel, sizes", [((2, 2), (8, 6)), ((2, 3), (6, 9)), ((3, 1), (9, 4))])
@pytest.mark.parametrize("chunk", ["planes", "default"])
def test_concat_takes_its_tiling_pool(pool_split, monkeypatch, kernel, sizes, chunk):
    """The pool is fused into the Concat (the plan has no MaxPool step for it, describe() says
    so; its inputs are not all convs, so it is never placed: see the placed test below); at
    batch 1, 3, 5 and batch 1 again (one plan), with chunks of a few planes (a chunk is then
    rounded to whole images of a channel slice) or the default: bit for bit the unfused plan's
    output, and the plain kernels' and onnxruntime's within the convs' rounding; inputs with
    -inf and +inf."""
    g = _net(kernel, sizes)
    sess, plain = runtime.Session(g), _unfused(g, monkeypatch)
    steps = sess._fast(training=False, keep_all=False).steps
    (cat,) = [s for s in steps if isinstance(s, ConcatStep)]
    assert cat.pool is not None and cat.pool.name == "pool" and "pool" in cat.fused
    assert [s.name for s in steps if isinstance(s, MaxPoolStep)] == ["same"]
    if chunk == "planes":  # chunks of one image per input, however many channels it has
        monkeypatch.setattr(fast_pool, "POOL_CHUNK_BYTES", 4)
    row = next(line for line in sess.describe().splitlines() if line.startswith("cat "))
    assert "pool fused" in row
    ref = runtime.Session(g, plan="reference")
    rng = np.random.default_rng(22)
    for batch in (1, 3, 5, 1):
        x = rng.standard_normal((batch, 5, *sizes)).astype(np.float32)
        x.reshape(-1)[::7] = -np.inf  # (the convs see finite values: -inf only in the pools)
        x.reshape(-1)[::11] = np.inf
        xs = {"x": np.where(np.isfinite(x), x, 0).astype(np.float32)}
        for feeds in ({"x": x}, xs):
            with np.errstate(invalid="ignore"):  # (inf - inf in the convs: NaN, both plans)
                got = sess.run(feeds)[g.outputs[0]]
                assert np.array_equal(got, plain.run(feeds)[g.outputs[0]], equal_nan=True)
        got = sess.run(xs)[g.outputs[0]]
        for want in (ref.run(xs)[g.outputs[0]], ort_run(export_checked(g), xs)[g.outputs[0]]):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
        # train mode's forward fuses it too (no op here depends on the mode)
        got = sess.run(xs, mode="train")[g.outputs[0]]
        assert np.array_equal(got, plain.run(xs, mode="train")[g.outputs[0]])
    train = sess._fast(training=True, keep_all=False).steps
    assert [s.name for s in train if isinstance(s, MaxPoolStep)] == ["same"]


@pytest.mark.parametrize(
    "kernel, pads, readers",
    [((3, 3), 0, 1), ((2, 2), 1, 1), ((2, 2), 0, 2)],
)
def test_concat_keeps_a_pool_it_cannot_take(monkeypatch, kernel, pads, readers):
    """Not fused: a pool that does not tile the Concat (3x3 / 3 on 8x6; a padded 2x2) or a
    Concat read by another node too; the results as the plain kernels'."""
    g = _net(kernel, (8, 6), cat_readers=readers, pads=pads)
    sess = runtime.Session(g)
    steps = sess._fast(training=False, keep_all=False).steps
    (cat,) = [s for s in steps if isinstance(s, ConcatStep)]
    assert cat.pool is None and "pool" in [s.name for s in steps]
    x = np.random.default_rng(23).standard_normal((3, 5, 8, 6)).astype(np.float32)
    got, want = sess.run({"x": x}), runtime.Session(g, plan="reference").run({"x": x})
    for k in g.outputs:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_inception_second_block_pools_its_branches(monkeypatch):
    """inception_bn: the second block's Concat takes the 2x2 pool after it; at batch 3 the
    whole net equals the unfused plan's bit for bit, optimized in inference and as built
    (BatchNorm steps) in train mode."""
    from graphnet.bench import suite
    from graphnet.passes.manager import optimize

    x = np.random.default_rng(24).standard_normal((3, 3, 32, 32)).astype(np.float32)
    for g, mode in (
        (optimize(suite.build("inception_bn"), "inference")[0], "inference"),
        (suite.build("inception_bn"), "train"),
    ):
        sess, plain = runtime.Session(g), _unfused(g, monkeypatch)
        fused = [
            s.name
            for s in sess._fast(training=mode == "train", keep_all=False).steps
            if isinstance(s, ConcatStep) and s.pool is not None
        ]
        assert len(fused) == 1
        # (train mode updates the BatchNorm running statistics: its forward reads none)
        got = sess.run({g.inputs[0]: x}, mode=mode)
        want = plain.run({g.inputs[0]: x}, mode=mode)
        for k in g.outputs:
            assert np.array_equal(got[k], want[k]), k


@pytest.mark.parametrize(
    "planes, images", [(1, 0), (4, 0), (7, 0), (12, 0), (100, 0)] + [(0, 1), (0, 2), (0, 5)]
)
@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 3)])
def test_tiled_part_writes_a_channel_slice_in_chunks_of_whole_images(planes, images, kernel):
    """`_tiled_part` into a channel slice of a larger output (its images apart): chunks of
    `planes` planes rounded to whole images (5 planes an image: 1 -> 1 image, 7 -> 1, 12 -> 2
    with a short last chunk, 100 -> all) or of `images` images as given, exact against the
    naive loop; the channels around the slice untouched."""
    rng = np.random.default_rng(25)
    x = rng.standard_normal((3, 5, 6, 6)).astype(np.float32)
    x.reshape(-1)[::9] = -np.inf
    out = np.full((3, 9, 6 // kernel[0], 6 // kernel[1]), 7.0, np.float32)
    MaxPoolStep._tiled_part(x, out[:, 2:7], kernel, Scratch(), planes * 36 * 4, images)
    want = naive_pool(x, kernel, kernel, (0,) * 4, (1, 1), 0, "max")
    assert np.array_equal(out[:, 2:7], want.astype(np.float32))
    assert (out[:, :2] == 7).all() and (out[:, 7:] == 7).all()


def test_placed_concat_at_batch_1_runs_its_pool_on_the_concatenation(monkeypatch):
    """A Concat of convs only: at batch 1 the convs write into their slices of its buffer
    (placed), and the fused pool then runs on that concatenation (not `pool_channels`); at
    batch 3 the inputs are pooled into their slices. Both bit for bit the unfused plan's, and
    the plain kernels' within the convs' rounding."""
    g = _net((2, 2), (8, 6), convs_only=True)
    sess, plain = runtime.Session(g), _unfused(g, monkeypatch)
    ref = runtime.Session(g, plan="reference")
    steps = sess._fast(training=False, keep_all=False).steps
    (cat,) = [s for s in steps if isinstance(s, ConcatStep)]
    assert cat.pool is not None and cat.placed
    calls = {"pool": 0, "pool_channels": 0}
    whole, channels = MaxPoolStep.__call__, MaxPoolStep.pool_channels

    def count(name, fn):
        def wrapped(self, *args):
            calls[name] += 1
            return fn(self, *args)

        return wrapped

    monkeypatch.setattr(MaxPoolStep, "__call__", count("pool", whole))
    monkeypatch.setattr(MaxPoolStep, "pool_channels", count("pool_channels", channels))
    rng = np.random.default_rng(26)
    for batch, want in ((1, {"pool": 1, "pool_channels": 0}), (3, {"pool": 0, "pool_channels": 1})):
        x = rng.standard_normal((batch, 5, 8, 6)).astype(np.float32)
        calls.update(pool=0, pool_channels=0)
        got = sess.run({"x": x})[g.outputs[0]]
        assert calls == want
        assert np.array_equal(got, plain.run({"x": x})[g.outputs[0]])
        np.testing.assert_allclose(got, ref.run({"x": x})[g.outputs[0]], rtol=RTOL, atol=ATOL)


class _CountingScratch(Scratch):
    """A Scratch that counts `_tiled_part`'s chunks (one take of slot 1, m2, per chunk)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks = 0

    def take(self, slot, size, dtype):
        self.chunks += slot == 1
        return super().take(slot, size, dtype)


@pytest.mark.parametrize("images", [1, 2, 4])
def test_tiled_part_into_a_whole_output_chunks_whole_images(images):
    """`_tiled_part` with `images` given and a contiguous output (a batch-1 or one-image thread
    slice of `pool_channels`): chunks of `images` whole images (all their channel planes), not
    of `images` planes (a fused Concat + pool ran 1.5-4x slower in one-plane chunks); exact
    against the naive pool."""
    rng = np.random.default_rng(27)
    x = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    y = np.empty((4, 64, 4, 4), np.float32)
    scratch = _CountingScratch()
    MaxPoolStep._tiled_part(x, y, (2, 2), scratch, 0, images)
    assert scratch.chunks == -(-4 // images)
    assert np.array_equal(y, naive_pool(x, (2, 2), (2, 2), (0,) * 4, (1, 1), 0, "max"))
