"""Activation pictures show the runtime's values: decoded images against the values normalized
by hand, BatchNorm charts against the parameters, probabilities against the output; the pixel
budget bounds the total; a graph that cannot run says why."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.report.activations import _distinct, compute_activations
from graphnet.runtime.feeds import random_inputs
from tests.report.models import resnet_graph, template_graph
from tests.report.pngdecode import decode_data_uri


def _uri(html: str) -> str:
    return re.search(r'src="(data:image/png;base64,[^"]+)"', html).group(1)


def test_conv_maps_are_the_runtime_values():
    graph = template_graph()
    feeds = random_inputs(graph, batch=2, seed=5)
    acts = compute_activations(graph, feeds)
    assert acts.error is None and acts.source == "the given input"
    by = acts.by_node()
    conv1 = next(v for v in by["conv1"] if v.kind == "maps")
    assert "all 16 channels, 28\u00d728" in conv1.caption
    assert conv1.caption.startswith("(1,16,28,28)")  # the batch of 2 was cut to its first item
    # The input comes first, like ConvNetJS's first layer: the image itself.
    first = acts.visuals[0]
    assert first.node == "input:input" and first.kind == "maps"
    img0 = decode_data_uri(_uri(first.html))[..., 0]
    x = feeds["input"][0, 0].astype(np.float64)
    np.testing.assert_array_equal(img0, np.round((x - x.min()) / (x.max() - x.min()) * 255))
    img = decode_data_uri(_uri(conv1.html))
    # Pictured from a run on the first batch item alone (the dynamic batch is cut to it), whose
    # values are item 0 of the whole batch's (up to float32 summation order in the BLAS).
    want = runtime.run(graph, {"input": feeds["input"][:1]}, keep_all=True)["conv1.out"][0]
    whole = runtime.run(graph, feeds, keep_all=True)["conv1.out"][0]
    np.testing.assert_allclose(want, whole, rtol=1e-5, atol=1e-6)
    want = want.astype(np.float64)
    lo, hi = want.min(), want.max()
    assert f"black {lo:.3g}, white {hi:.3g}" in conv1.caption
    cols = 4  # 16 square maps: a 4 x 4 grid
    for c in range(16):
        r, k = divmod(c, cols)
        tile = img[r * 29 : r * 29 + 28, k * 29 : k * 29 + 28]
        np.testing.assert_array_equal(tile[..., 0], np.round((want[c] - lo) / (hi - lo) * 255))
        assert (tile[..., 1] == 255).all()
    # Every conv and pool layer has maps, every FC a bar strip, every BN its statistics.
    kinds = {(v.node, v.kind) for v in acts.visuals}
    for n in graph.nodes:
        if n.op in ("Conv", "MaxPool"):
            assert (n.name, "maps") in kinds
        if n.op == "Gemm":
            assert (n.name, "bars") in kinds
        if n.op == "BatchNormalization":
            assert (n.name, "bn") in kinds


def test_caption_tells_close_ends_apart():
    assert _distinct(0.107001, 0.107023) == ("0.107", "0.10702")  # 5 digits tell them apart
    assert _distinct(-2.81234, 2.5678) == ("-2.81", "2.57")


def test_bn_statistics_and_probabilities():
    graph = resnet_graph()
    acts = compute_activations(graph, seed=1)
    assert acts.source.startswith("seeded random input (seed 1")
    bn = next(v for v in acts.visuals if v.node == "bn1" and v.kind == "bn")
    mean = graph.params["bn1.running_mean"]
    assert f"mean in [{mean.min():.3g}, {mean.max():.3g}]" in bn.caption
    # Global average pooling gives one value per channel: a bar strip, not 1x1 images.
    gap = next(v for v in acts.visuals if v.node == "gap1")
    assert gap.kind == "bars"
    probs = next(v for v in acts.visuals if v.kind == "probs")
    assert probs.node == "output:probs" and "already probabilities" in probs.caption
    out = runtime.run(graph, random_inputs(graph, batch=1, seed=1))["probs"][0]
    top = int(np.argmax(out))
    assert f"class {top}<" in probs.html
    assert f"{out[top]:.3f}" in probs.html


def test_logits_get_a_softmax_and_say_so():
    net = nn.Sequential([nn.Flatten(), nn.Linear(5)])
    graph = net.build((None, 2, 3, 3))
    acts = compute_activations(graph)
    probs = next(v for v in acts.visuals if v.kind == "probs")
    assert "softmax of the output" in probs.caption


def test_pixel_budget_bounds_the_pictures():
    layers: list = []
    for _ in range(12):
        layers += [nn.Conv(64, 3, padding="same"), nn.ReLU()]
    graph = nn.Sequential(layers).build((None, 3, 40, 40))
    budget = 60_000
    acts = compute_activations(graph, pixel_budget=budget)
    pixels = 0
    for v in acts.visuals:
        if v.kind == "maps":
            a = decode_data_uri(_uri(v.html))[..., 1]
            pixels += int((a > 0).sum())
            if v.op == "Conv":
                assert re.search(r"\d+ of 64 channels, 40\u00d740 shown at \d+\u00d7\d+", v.caption)
    assert 0 < pixels <= budget


def test_a_graph_that_cannot_run_says_why():
    graph = template_graph()
    acts = compute_activations(graph, {"input": np.zeros((1, 1, 28, 28), np.float64)})
    assert acts.error is not None and "could not run" in acts.error
    assert all(v.kind == "bn" for v in acts.visuals)  # parameters are still shown


@pytest.mark.parametrize("shape", [(None, 4, 30), (None, 2, 5, 6, 7)])
def test_1d_and_3d_conv_maps(shape):
    graph = nn.Sequential([nn.Conv(3, 3, padding="same")]).build(shape)
    acts = compute_activations(graph)
    maps = [v for v in acts.visuals if v.kind == "maps"]
    assert [v.node for v in maps] == ["input:input", "conv1"]
    img = decode_data_uri(_uri(maps[1].html))
    assert img[..., 0].max() == 255 and img[..., 0][img[..., 1] > 0].min() == 0
