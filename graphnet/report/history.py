"""Learning curves from a training history (the JSON file `graphnet train --history H.json` writes).

Accepted forms (the first is the training loop's; the others are what hand-written or other
tools' histories usually look like):

- an object holding a list of per-epoch objects under "epochs" (graphnet's `History.save`:
  `{"config": {...}, "epochs": [{"epoch": 1, "loss": 2.1, "accuracy": 0.31, ...}], ...}`) or
  "history" (other keys are ignored);
- the list alone: `[{"epoch": 1, "loss": 2.1, ...}, ...]`;
- an object of equal-length lists: `{"loss": [...], "val_loss": [...]}` (Keras' `history`).

Every numeric key except the x axis ("epoch", else the row number from 1) and bookkeeping
("steps", "seconds") is a series. Series whose name holds "loss" share one chart, those holding
"acc" another, the rest (the learning rate) a third.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from graphnet.errors import InputError
from graphnet.report.images import line_chart_svg

__all__ = ["load_history", "history_charts"]

_X_KEYS = ("epoch", "epochs", "step")
# Bookkeeping per epoch (graphnet's trainer writes steps and seconds): not learning curves.
_SKIP = {"steps", "step", "seconds", "time", "elapsed", "epoch", "epochs"}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def load_history(source: str | os.PathLike | Any) -> tuple[list[float], dict[str, list]]:
    """(x values, {series name: values with None for gaps}) from a path, parsed JSON data or a
    `graphnet.train.History`. Raises `InputError` naming the file and what is wrong with it."""
    where = "training history"
    data = source.to_dict() if hasattr(source, "to_dict") else source  # graphnet.train.History
    if isinstance(source, (str, os.PathLike)):
        where = f"training history '{os.fspath(source)}'"
        try:
            with open(source, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise InputError(f"cannot read {where}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} is not valid JSON: {exc}") from None
    if isinstance(data, Mapping):
        for key in ("history", "epochs"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    rows: list[Mapping[str, Any]]
    if isinstance(data, Mapping):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if not lists:
            raise InputError(f"{where}: expected a list of per-epoch objects or of lists")
        n = max(len(v) for v in lists.values())
        rows = [{k: (v[i] if i < len(v) else None) for k, v in lists.items()} for i in range(n)]
    elif isinstance(data, list):
        rows = list(data)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise InputError(
                    f"{where}: entry {i} is {type(r).__name__}, expected an object per epoch"
                )
    else:
        got = type(data).__name__
        raise InputError(f"{where}: expected a list of per-epoch objects, got {got}")
    if not rows:
        raise InputError(f"{where} holds no epochs")
    xkey = next((k for k in _X_KEYS if all(_number(r.get(k)) is not None for r in rows)), None)
    xs = [float(r[xkey]) for r in rows] if xkey else [float(i + 1) for i in range(len(rows))]
    names: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k != xkey and k not in _SKIP and _number(v) is not None:
                names[k] = None
    if not names:
        raise InputError(f"{where}: no numeric values (such as loss or accuracy) per epoch")
    series = {k: [_number(r.get(k)) for r in rows] for k in names}
    return xs, series


def history_charts(xs: list[float], series: Mapping[str, list]) -> list[str]:
    """SVG charts: losses together, accuracies together, anything else (the learning rate) on a
    third chart."""
    groups: dict[str, dict[str, list]] = {"loss": {}, "accuracy": {}, "other": {}}
    for name, vals in series.items():
        low = name.lower()
        key = "loss" if "loss" in low else "accuracy" if "acc" in low else "other"
        groups[key][name] = vals
    only_lr = bool(groups["other"]) and all(
        k.lower() in ("lr", "learning_rate") for k in groups["other"]
    )
    return [
        line_chart_svg(xs, g, title=title)
        for title, g in (
            ("loss", groups["loss"]),
            ("accuracy", groups["accuracy"]),
            ("learning rate" if only_lr else "other metrics", groups["other"]),
        )
        if g
    ]
