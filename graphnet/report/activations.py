"""What every layer computes on one input, as pictures (values from the NumPy runtime, run once with
`keep_all=True`):

- the graph's image inputs and its conv and pool layers: the channel maps of the first batch
  item as a grid of grey images, one grey scale per layer (black = the layer's minimum, white =
  its maximum), as ConvNetJS shows them. A pixel budget for the whole report bounds the file: a
  layer shows at most as many channels, at as many pixels per side, as its share of the budget
  allows (the caption says how many of how many, and at which size: maps bigger than that are
  averaged over square blocks);
- global pools and fully connected layers: a bar strip of the vector (positive up, negative down);
- the graph's outputs: the ten most likely classes (a softmax is applied first when the output
  is not already a probability distribution, and the caption says so);
- BatchNormalization: its running mean and running variance per channel (parameters, not values
  of the run, but what a reader wants to see next to the layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Node, format_shape
from graphnet.report.images import (
    bar_strip_svg,
    data_uri,
    downsample,
    mosaic,
    png_bytes,
    probability_bars_svg,
)

__all__ = ["Visual", "Activations", "compute_activations", "PIXEL_BUDGET"]

# Pixels of channel maps in the whole report. A grey+alpha PNG of real activations compresses to
# about a byte per pixel, base64 adds a third: ~1.3 MB for the images of even the largest model.
PIXEL_BUDGET = 1_000_000
_LAYER_MAX = 64 * 64 * 16  # a small model's layer shows at most this many pixels
_LAYER_MIN = 2_048
_MAX_SIDE = 48  # maps are shown at most this many pixels per side (bigger ones are averaged)
_MIN_CHANNELS = 16  # shrink the maps before showing fewer channels than this
_BN_BARS = 128  # BatchNorm statistics of more channels are averaged in groups (a DenseNet has 121)


@dataclass
class Visual:
    """One picture of one node: `kind` is "maps", "bars", "probs" or "bn"; `html` the fragment
    (an `<img>` or inline SVGs); `caption` says what is shown."""

    node: str
    op: str
    kind: str
    caption: str
    html: str


@dataclass
class Activations:
    """The visuals of a run, in graph order; `source` says which input was used; `error` is set
    (and `visuals` holds only the BatchNorm statistics) when the graph could not be run."""

    visuals: list[Visual] = field(default_factory=list)
    source: str = ""
    error: str | None = None

    def by_node(self) -> dict[str, list[Visual]]:
        out: dict[str, list[Visual]] = {}
        for v in self.visuals:
            out.setdefault(v.node, []).append(v)
        return out


def _family(node: Node) -> str:
    from graphnet.report.drawing import op_family

    return op_family(node)


def _is_map_layer(node: Node) -> bool:
    return _family(node) in ("conv", "pooling")


def compute_activations(
    graph: Graph,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    source: str | None = None,
    pixel_budget: int = PIXEL_BUDGET,
) -> Activations:
    """Run `graph` once on `feeds` (default: seeded standard-normal inputs, dynamic dims of size 1)
    and picture every conv/pool/FC layer, the outputs and the BatchNorm statistics."""
    from graphnet import runtime

    result = Activations()
    if feeds is None:
        from graphnet.runtime.feeds import random_inputs

        try:
            feeds = random_inputs(graph, batch=1, seed=seed)
        except GraphNetError as exc:
            result.error = f"no input to run the graph on: {exc}"
        result.source = source or f"seeded random input (seed {seed}, standard normal)"
    else:
        result.source = source or "the given input"
        feeds = _first_item(graph, feeds)
    values: Mapping[str, np.ndarray] = {}
    if result.error is None:
        try:
            values = runtime.run(graph, dict(feeds or {}), keep_all=True)
        except GraphNetError as exc:
            result.error = f"the NumPy runtime could not run this graph: {exc}"
    maps_nodes = [
        n
        for n in graph.nodes
        if _is_map_layer(n) and n.outputs[0] in values and _spatial(values[n.outputs[0]]) > 1
    ]
    given = {k: np.asarray(v) for k, v in (feeds or {}).items()} if values else {}
    images = [i for i, a in given.items() if a.dtype.kind == "f" and _spatial(a) > 1]
    per_layer = int(
        min(_LAYER_MAX, max(_LAYER_MIN, pixel_budget // max(1, len(maps_nodes) + len(images))))
    )
    # The input first, as ConvNetJS shows it: an image's channels (the first batch item).
    for name in images:
        result.visuals.append(_maps_visual(f"input:{name}", "input", given[name], per_layer))
    for n in graph.nodes:
        out = values.get(n.outputs[0]) if n.outputs else None
        if out is not None and np.asarray(out).dtype.kind == "f":
            v = _node_visual(n, np.asarray(out), per_layer)
            if v is not None:
                result.visuals.append(v)
        if n.op == "BatchNormalization":
            v = _bn_visual(graph, n, values)
            if v is not None:
                result.visuals.append(v)
    for name in graph.outputs:
        out = values.get(name)
        if out is not None and np.asarray(out).dtype.kind == "f":
            v = _output_visual(graph, name, np.asarray(out))
            if v is not None:
                result.visuals.append(v)
    return result


def _first_item(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the first batch item is pictured: where an input's batch dim is dynamic, run on that
    item alone (at inference each item is computed independently, so its values are the same,
    and keeping every intermediate value of a batch of 64 would take 64 times the memory)."""
    out = {}
    for name, arr in feeds.items():
        a = np.asarray(arr)
        v = graph.values.get(name)
        shape = v.shape if v is not None and v.shape else ()
        dynamic = len(shape) == a.ndim > 0 and not isinstance(shape[0], int)
        out[name] = a[:1] if dynamic and a.shape[0] > 1 else a
    return out


def _spatial(a: np.ndarray) -> int:
    return int(np.prod(a.shape[2:])) if a.ndim >= 3 else 0


def _node_visual(n: Node, out: np.ndarray, per_layer: int) -> Visual | None:
    shape = format_shape(out.shape)
    if _is_map_layer(n) and out.ndim >= 3:
        if _spatial(out) > 1:
            return _maps_visual(n.name, n.op, out, per_layer)
        vec = out[0].reshape(-1)
        return Visual(
            n.name,
            n.op,
            "bars",
            f"{shape}: one value per channel (first batch item)",
            bar_strip_svg(vec, label=n.name),
        )
    if _family(n) == "linear" and out.ndim == 2:
        return Visual(
            n.name,
            n.op,
            "bars",
            f"{shape}: the output vector of the first batch item",
            bar_strip_svg(out[0], label=n.name),
        )
    return None


def _maps_visual(name: str, op: str, out: np.ndarray, per_layer: int) -> Visual:
    x = out[0]
    if x.ndim == 2:  # (C, L): each channel a one-pixel-high strip
        x = x[:, None, :]
    elif x.ndim > 3:  # (C, T, H, W) video: the middle frame
        x = x[:, x.shape[1] // 2]
        while x.ndim > 3:
            x = x[:, x.shape[1] // 2]
    c, h, w = x.shape
    side = min(max(h, w), _MAX_SIDE)
    k = min(c, max(1, per_layer // max(1, _shown(h, w, side))))
    while k < min(c, _MIN_CHANNELS) and side > 8:
        side = max(8, side * 3 // 4)
        k = min(c, max(1, per_layer // max(1, _shown(h, w, side))))
    small = downsample(x[:k], side)
    grey, alpha, cols, lo, hi = mosaic(small)
    sh, sw = small.shape[1:]
    what = f"{k} of {c} channels" if k < c else "1 channel" if c == 1 else f"all {c} channels"
    size = f"{h}\u00d7{w}" + (f" shown at {sh}\u00d7{sw}" if (sh, sw) != (h, w) else "")
    shape = format_shape(out.shape)
    if hi <= lo:
        return Visual(
            name,
            op,
            "maps",
            f"{shape}: every value of {what} equals {lo:.4g}",
            f'<p class="flat">all values {lo:.4g}</p>',
        )
    black, white = _distinct(lo, hi)
    caption = f"{shape}: {what}, {size}; black {black}, white {white}"
    # Small pictures are scaled up (pixelated, by a whole factor) to about 200 px across, so a
    # 7x7 map or an 8x8 digit is visible.
    zoom = max(1, min(12, round(200 / grey.shape[1])))
    img = (
        f'<img class="actmap" alt="{escape(name)} activations" width="{grey.shape[1] * zoom}" '
        f'height="{grey.shape[0] * zoom}" src="{data_uri(png_bytes(grey, alpha))}">'
    )
    return Visual(name, op, "maps", caption, img)


def _distinct(lo: float, hi: float) -> tuple[str, str]:
    """The ends of a range with as many significant digits as it takes to tell them apart (3 to
    9): a layer whose values span 0.10700 to 0.10702 must not read "0.107 to 0.107"."""
    for digits in range(3, 10):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            return a, b
    return a, b


def _shown(h: int, w: int, side: int) -> int:
    f = max(1, math.ceil(max(h, w) / side))
    return math.ceil(h / f) * math.ceil(w / f)


def _bn_visual(graph: Graph, n: Node, values: Mapping[str, np.ndarray]) -> Visual | None:
    """Running mean and variance: parameters, or (in models that compute them, e.g. with
    ConstantOfShape) the values of the run."""
    if len(n.inputs) < 5:
        return None
    stats = [graph.params.get(i, values.get(i)) for i in n.inputs[3:5]]
    if any(s is None for s in stats):
        return None
    mean, var = (np.asarray(s, np.float64).ravel() for s in stats)
    html = (
        '<div class="bnrow"><span>running mean</span>'
        + bar_strip_svg(mean, label=f"{n.name} running mean", height=40, max_bars=_BN_BARS)
        + '</div><div class="bnrow"><span>running var</span>'
        + bar_strip_svg(var, label=f"{n.name} running variance", height=40, max_bars=_BN_BARS)
        + "</div>"
    )
    caption = (
        f"running statistics of {mean.size} channels: mean in [{mean.min():.3g}, "
        f"{mean.max():.3g}], variance in [{var.min():.3g}, {var.max():.3g}]"
    )
    return Visual(n.name, n.op, "bn", caption, html)


def _output_visual(graph: Graph, name: str, out: np.ndarray) -> Visual | None:
    vec = out[0] if out.ndim >= 2 else out
    if out.ndim >= 3 and _spatial(out) != 1:
        return None
    vec = np.asarray(vec, np.float64).ravel()
    if vec.size < 2 or not np.all(np.isfinite(vec)):
        return None
    is_dist = bool(np.all(vec >= 0) and abs(vec.sum() - 1.0) < 1e-3)
    how = "the output (already probabilities)"
    if not is_dist:
        e = np.exp(vec - vec.max())
        vec = e / e.sum()
        how = "softmax of the output (it is not a probability distribution)"
    caption = f"output '{name}' {format_shape(out.shape)}: top classes, {how}"
    return Visual(f"output:{name}", "output", "probs", caption, probability_bars_svg(vec))
