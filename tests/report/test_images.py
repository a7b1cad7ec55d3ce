"""PNG encoding, channel mosaics, downsampling and the small SVG charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from graphnet.report.images import (
    bar_strip_svg,
    downsample,
    line_chart_svg,
    mosaic,
    png_bytes,
    probability_bars_svg,
)
from tests.report.pngdecode import decode_png

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 4), (64, 64)])
def test_png_round_trip(shape):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    alpha = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(png_bytes(grey))[..., 0], grey)
    both = decode_png(png_bytes(grey, alpha))
    np.testing.assert_array_equal(both[..., 0], grey)
    np.testing.assert_array_equal(both[..., 1], alpha)


def test_png_rejects_other_arrays():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        png_bytes(np.zeros((2, 2, 3), np.uint8))


def test_downsample_is_block_mean():
    x = np.arange(2 * 6 * 9, dtype=np.float64).reshape(2, 6, 9)
    y = downsample(x, 3)  # factor 3 on both axes
    want = np.array(
        [
            [
                [x[c, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].mean() for j in range(3)]
                for i in range(2)
            ]
            for c in range(2)
        ]
    )
    np.testing.assert_allclose(y, want)
    assert downsample(x, 16) is x
    # 7 rows with factor 2: the last block repeats the edge row.
    z = downsample(np.arange(7.0).reshape(1, 7, 1), 4)
    np.testing.assert_allclose(z.ravel(), [0.5, 2.5, 4.5, 6.0])


def test_mosaic_places_every_channel_with_one_scale():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(5, 3, 4))
    grey, alpha, cols, lo, hi = mosaic(maps, gap=1)
    assert (lo, hi) == (maps.min(), maps.max())
    rows = -(-5 // cols)
    assert grey.shape == (rows * 4 - 1, cols * 5 - 1)
    for c in range(5):
        r, k = divmod(c, cols)
        tile = grey[r * 4 : r * 4 + 3, k * 5 : k * 5 + 4]
        want = np.round((maps[c] - lo) / (hi - lo) * 255)
        np.testing.assert_array_equal(tile, want)
        assert (alpha[r * 4 : r * 4 + 3, k * 5 : k * 5 + 4] == 255).all()
    # Gaps and the unused tiles are transparent.
    assert alpha.sum() == 255 * 5 * 3 * 4


def test_mosaic_of_constant_maps_is_flat():
    grey, _, _, lo, hi = mosaic(np.full((2, 3, 3), 7.0))
    assert lo == hi == 7.0 and (grey == 0).all()


def test_bar_strip_svg():
    v = np.array([1.0, -2.0, 0.5, 0.0])
    root = ET.fromstring(bar_strip_svg(v, width=40, height=28, label="fc"))
    pos, neg, _ = root.findall(f"{SVG}path")
    # y runs 0..100 with 4 units of margin: the zero line at 4 + 92 * 1/3, bars end at their
    # value on that scale from the rounded zero (1.0 at the top, -2.0 at the bottom).
    assert pos.get("d") == "M0 35V4M2 35V20"  # 35 - 92 * 0.5 / 3 = 19.7
    assert neg.get("d") == "M1 35V96"
    assert root.get("viewBox") == "-0.5 0 4 100"
    assert "4 values" in root.find(f"{SVG}title").text
    many = ET.fromstring(bar_strip_svg(np.arange(1000.0), max_bars=100))
    assert "averaged in groups of 10" in many.find(f"{SVG}title").text
    assert many.get("viewBox") == "-0.5 0 100 100"


def test_probability_bars_are_the_top_classes_in_order():
    p = np.array([0.1, 0.6, 0.05, 0.25])
    root = ET.fromstring(probability_bars_svg(p, top=3))
    labels = [t.text for t in root.findall(f"{SVG}text") if t.text.startswith("class")]
    assert labels == ["class 1", "class 3", "class 0"]


def test_line_chart_svg():
    root = ET.fromstring(
        line_chart_svg(
            [1, 2, 3], {"loss": [2.0, 1.0, None], "val_loss": [2.5, 1.5, 1.2]}, title="loss"
        )
    )
    paths = [p for p in root.findall(f"{SVG}path")]
    assert len(paths) == 2
    assert paths[0].get("d").count("L") == 1  # the gap (None) ends the first line
    assert paths[1].get("d").count("L") == 2


def test_chart_ticks_and_legend():
    root = ET.fromstring(line_chart_svg([1, 2, 3], {"lr": [0.05, 0.05, 0.05]}, title="lr"))
    texts = [t.text for t in root.findall(f"{SVG}text")]
    # Epochs are whole numbers: no 1.5 tick; the constant series gets a range around it.
    assert "1.5" not in texts and {"1", "2", "3"} <= set(texts)
    ticks = [float(t) for t in texts if t not in ("lr", "epoch", "1", "2", "3")]
    assert min(ticks) < 0.05 < max(ticks) and "lr" in texts
