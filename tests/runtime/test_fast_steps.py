"""The fast plan's non-conv steps (MaxPool, normalizations, activations, Softmax, global
pooling, Gemm, Concat) against independent formulas and onnxruntime, on odd shapes, inline and
with the batch split over the plan's threads (the work threshold patched to 0, so even these
small shapes take the threaded path).

MaxPool is exact (a max of float32 values): compared for equality with the naive loop. The
other steps compute in float32 like onnxruntime; their bounds are the single-op tolerances of
tests/helpers.py unless a test says why it needs more.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.runtime.fast import steps as fast_steps
from graphnet.runtime.fast import threads as fast_threads
from tests.helpers import export_checked, ort_run, single_node
from tests.oracles import naive_pool


@pytest.fixture(params=["inline", "threads"])
def split(request, monkeypatch):
    """Run each test twice: as the plan decides, and with every batch split over threads."""
    if request.param == "threads":
        monkeypatch.setattr(fast_threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(fast_steps, "SPLIT_MIN_FLOPS", 0)
    return request.param


def _ran_steps(graph, feeds) -> tuple[dict, runtime.Session]:
    sess = runtime.Session(graph)
    return sess.run(feeds), sess


# (spatial sizes, kernel, strides, pads, dilations, ceil_mode)
POOLS = [
    ((16, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),  # "same": the flat pass
    ((7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),
    ((7, 9), (3, 2), (1, 1), (0, 1, 2, 0), (1, 1), 0),  # asymmetric "same" pads
    ((9, 8), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 0),  # dilated "same"
    ((9, 8), (5, 1), (1, 1), (2, 0, 2, 0), (1, 1), 0),  # kernel 5 along one axis only
    ((28, 28), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),  # LeNet's
    ((7, 7), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # ceil_mode overhang
    ((11, 10), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    ((11, 10), (3, 3), (2, 3), (1, 0, 0, 2), (1, 2), 1),
    ((10,), (3,), (1,), (1, 1), (1,), 0),  # 1-D "same"
    ((10,), (4,), (3,), (2, 1), (2,), 0),
    ((4, 6, 5), (3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 0),  # 3-D "same"
    ((4, 6, 5), (1, 2, 2), (1, 2, 2), (0,) * 6, (1, 1, 1), 0),  # video's
]


@pytest.mark.parametrize("sizes, kernel, strides, pads, dilations, ceil", POOLS)
def test_max_pool_equals_naive_loop_and_onnxruntime(
    split, sizes, kernel, strides, pads, dilations, ceil
):
    attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "pads": list(pads),
        "dilations": list(dilations),
        "ceil_mode": ceil,
    }
    x = np.random.default_rng(3).standard_normal((3, 5, *sizes)).astype(np.float32)
    g = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs)
    got, sess = _ran_steps(g, {"x": x})
    assert "taps" in sess.describe()
    y = got[g.outputs[0]]
    want = naive_pool(x, kernel, strides, pads, dilations, ceil, "max").astype(np.float32)
    assert y.shape == want.shape
    assert np.array_equal(y, want)
    theirs = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert np.array_equal(y, theirs)
