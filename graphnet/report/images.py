"""Pictures of arrays without an imaging library: PNG encoding with zlib, channel mosaics, bar
strips and line charts as small inline SVGs.

PNG (RFC 2083) is a signature and three chunks here: IHDR (size, 8-bit grey + alpha), IDAT (the
zlib-compressed rows, each prefixed by its filter byte 0) and IEND; each chunk ends with the CRC-32
of its type and data. That is twenty lines, which is why this module does not depend on Pillow.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np

__all__ = [
    "png_bytes",
    "data_uri",
    "downsample",
    "mosaic",
    "bar_strip_svg",
    "probability_bars_svg",
    "line_chart_svg",
]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(grey: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """Encode an (H, W) uint8 image, with an optional (H, W) uint8 alpha, as PNG."""
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"png_bytes needs an (H, W) uint8 array, got {grey.dtype}{grey.shape}")
    h, w = grey.shape
    if alpha is None:
        pixels, colour = grey, 0  # colour type 0: greyscale
    else:
        pixels, colour = np.stack([grey, np.asarray(alpha, np.uint8)], axis=-1).reshape(h, 2 * w), 4
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels], axis=1)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def downsample(maps: np.ndarray, side: int) -> np.ndarray:
    """Average (C, H, W) maps over f x f blocks, f the smallest factor that brings both sides to
    at most `side` (edges padded by repetition so every block is whole)."""
    c, h, w = maps.shape
    f = max(1, math.ceil(max(h, w) / side))
    if f == 1:
        return maps
    ph, pw = -h % f, -w % f
    if ph or pw:
        maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)), mode="edge")
    c, h, w = maps.shape
    return maps.reshape(c, h // f, f, w // f, f).mean(axis=(2, 4))


def mosaic(maps: np.ndarray, *, gap: int = 1) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    """Tile (C, H, W) maps into one image, `gap` transparent pixels between tiles; one grey scale
    for the whole layer (black = the layer's minimum, white = its maximum), as ConvNetJS draws
    activations, so channels compare by brightness. Returns (grey, alpha, columns, min, max)."""
    maps = np.asarray(maps, np.float64)
    c, h, w = maps.shape
    cols = max(1, math.ceil(math.sqrt(c * h / w)))  # a roughly square picture
    cols = min(cols, c)
    rows = math.ceil(c / cols)
    finite = maps[np.isfinite(maps)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = np.zeros_like(maps) if hi <= lo else (maps - lo) / (hi - lo)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    tiles = np.round(scaled * 255).astype(np.uint8)
    # Each tile padded by the gap on its right and bottom, then (rows, cols, h', w') ->
    # (rows, h', cols, w'): the mosaic in one reshape; the last gap row and column are cut.
    grey = np.zeros((rows * cols, h + gap, w + gap), np.uint8)
    alpha = np.zeros_like(grey)
    grey[:c, :h, :w] = tiles
    alpha[:c, :h, :w] = 255

    def assemble(t: np.ndarray) -> np.ndarray:
        t = t.reshape(rows, cols, h + gap, w + gap).transpose(0, 2, 1, 3)
        t = t.reshape(rows * (h + gap), cols * (w + gap))
        return t[: t.shape[0] - gap, : t.shape[1] - gap]

    grey, alpha = assemble(grey), assemble(alpha)
    return grey, alpha, cols, lo, hi


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def bar_strip_svg(
    values: np.ndarray,
    *,
    width: int = 320,
    height: int = 56,
    max_bars: int = 320,
    label: str = "",
) -> str:
    """Values as vertical bars around a zero line (positive up, negative down), at most
    `max_bars` of them (a longer vector is averaged in equal groups, and the title says so),
    drawn `width` x `height` px.

    Compact on purpose (a DenseNet report holds hundreds of strips): one bar is one unit of
    the drawing's x axis and the y axis runs over 0..100 (the SVG is stretched to its size), so
    a bar is a vertical line with integer coordinates, "M12 40V71"."""
    v = np.asarray(values, np.float64).ravel()
    n_total = v.size
    group = math.ceil(v.size / max_bars) if v.size > max_bars else 1
    if group > 1:
        pad = -v.size % group
        v = np.pad(v, (0, pad), mode="edge").reshape(-1, group).mean(axis=1)
    v = np.nan_to_num(v)
    top, bottom = max(float(v.max(initial=0.0)), 0.0), min(float(v.min(initial=0.0)), 0.0)
    span = (top - bottom) or 1.0
    zero = round(4 + 92 * top / span)
    ends = np.round(zero - 92 * v / span).astype(int)
    pos = "".join(f"M{k} {zero}V{e}" for k, e in enumerate(ends) if e < zero)
    neg = "".join(f"M{k} {zero}V{e}" for k, e in enumerate(ends) if e > zero)
    n = max(len(v), 1)
    note = f"{label}: {n_total} values" + (f" (averaged in groups of {group})" if group > 1 else "")
    if n_total:
        note += f", min {_fmt(float(np.min(values)))}, max {_fmt(float(np.max(values)))}"
    # Bar k is a line at x = k, 0.8 units wide; the view runs from -0.5 to n - 0.5.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" width="{width}" '
        f'height="{height}" viewBox="-0.5 0 {n} 100" preserveAspectRatio="none">'
        f"<title>{escape(note)}</title>"
        f'<path d="{pos}" stroke="#2f6db5" stroke-width="0.8"/>'
        f'<path d="{neg}" stroke="#c23b3d" stroke-width="0.8"/>'
        f'<path d="M-0.5 {zero}H{n}" stroke="#999" stroke-width="0.5" '
        f'vector-effect="non-scaling-stroke"/></svg>'
    )


def probability_bars_svg(probs: np.ndarray, *, top: int = 10, width: int = 320) -> str:
    """The `top` most likely classes as horizontal bars, labelled with class index and value."""
    p = np.asarray(probs, np.float64).ravel()
    order = np.argsort(-p, kind="stable")[:top]
    row = 16
    height = row * len(order) + 4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="probs" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for k, c in enumerate(order):
        y = 2 + k * row
        w = max(0.0, min(1.0, float(p[c]))) * (width - 110)
        parts.append(
            f'<text x="0" y="{y + 11}" font-size="11">class {int(c)}</text>'
            f'<rect x="60" y="{y + 2}" width="{w:.1f}" height="{row - 4}" fill="#c96d12"/>'
            f'<text x="{64 + w:.1f}" y="{y + 11}" font-size="10">{float(p[c]):.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float, n: int = 4, *, whole: bool = False) -> list[float]:
    """About `n` round tick values covering [lo, hi] (`whole`: steps of at least 1)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if whole:
        step = max(1.0, round(step))
    start = math.ceil(lo / step) * step
    out = []
    t = start
    while t <= hi + 1e-12 * step:
        out.append(round(t, 12))
        t += step
    return out


_SERIES_COLOURS = ("#2f6db5", "#c96d12", "#3f8f3a", "#c23b3d", "#8a4f9e", "#23817b")


def line_chart_svg(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    xlabel: str = "epoch",
    width: int = 420,
    height: int = 220,
) -> str:
    """Series against `x` on one chart with axes, round ticks and a legend above the plot
    (missing points, None, break a line). Whole-number x values (epochs) get whole-number ticks;
    a constant series sits mid-height in a range of half its value either side."""
    left, right, top, bottom = 48, 12, 24 + 13 * ((len(series) + 2) // 3), 34
    pw, ph = width - left - right, height - top - bottom
    xs = [float(v) for v in x]
    ys = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(v)]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        half = abs(y0) / 2 or 0.5
        y0, y1 = y0 - half, y1 + half
    whole = all(v == int(v) for v in xs)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-size="10">',
        f'<text x="{left}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>',
    ]
    for t in _ticks(y0, y1):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            f'stroke="#eee"/><text x="{left - 4}" y="{sy(t) + 3:.1f}" '
            f'text-anchor="end">{_fmt(t)}</text>'
        )
    for t in _ticks(x0, x1, whole=whole):
        parts.append(
            f'<text x="{sx(t):.1f}" y="{top + ph + 13}" text-anchor="middle">{_fmt(t)}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    for k, (name, vals) in enumerate(series.items()):
        colour = _SERIES_COLOURS[k % len(_SERIES_COLOURS)]
        d, pen = [], "M"
        for xv, yv in zip(xs, vals, strict=False):
            if yv is None or not math.isfinite(float(yv)):
                pen = "M"
                continue
            d.append(f"{pen}{sx(xv):.1f},{sy(float(yv)):.1f}")
            pen = "L"
        parts.append(f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if len(xs) <= 40:
            for xv, yv in zip(xs, vals, strict=False):
                if yv is not None and math.isfinite(float(yv)):
                    parts.append(
                        f'<circle cx="{sx(xv):.1f}" cy="{sy(float(yv)):.1f}" r="2.2" '
                        f'fill="{colour}"/>'
                    )
        # The legend: three entries per row between the title and the plot.
        lx, ly = left + (k % 3) * (pw // 3), 30 + 13 * (k // 3)
        parts.append(
            f'<rect x="{lx}" y="{ly - 5}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
