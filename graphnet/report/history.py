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
"acc" another, the rest (the learning rate) a third. A graphnet history whose "steps" list holds
two or more evaluations (`fit(eval_every=k)`) also gets those curves against the step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from graphnet.errors import InputError
from graphnet.report.images import line_chart_svg

__all__ = ["load_history", "load_steps", "history_charts"]

_X_KEYS = ("epoch", "epochs", "step")
# Bookkeeping per epoch (graphnet's trainer writes steps and seconds): not learning curves.
_SKIP = {"steps", "step", "seconds", "time", "elapsed", "epoch", "epochs"}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _read(source: str | os.PathLike | Any) -> tuple[Any, str]:
    """(the parsed history, how to name it in an error) from a path, parsed JSON data or an
    object with `to_dict()` (graphnet.train.History)."""
    where = "training history"
    data = source.to_dict() if hasattr(source, "to_dict") else source  # graphnet.train.History
    if isinstance(source, (str, os.PathLike)):
        where = f"training history '{os.fspath(source)}'"
        try:
            with open(source, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise InputError(f"cannot read {where}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:  # a binary file (an .npz, a model) given by mistake
            raise InputError(f"{where} is not a JSON text file (it is not UTF-8 text)") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} is not valid JSON: {exc}") from None
    return data, where


def load_history(source: str | os.PathLike | Any) -> tuple[list[float], dict[str, list]]:
    """(x values, {series name: values with None for gaps}) from a path, parsed JSON data or a
    `graphnet.train.History`. Raises `InputError` naming the file and what is wrong with it."""
    return _per_epoch(*_read(source))


def load_steps(source: str | os.PathLike | Any) -> tuple[list[float], dict[str, list]] | None:
    """The evaluations graphnet's `fit(eval_every=k)` records every k steps (the "steps" list of
    its history: test loss and accuracy by step), as (steps, {series: values}); None when the
    history has fewer than two of them (a short run's few epochs say little; its steps do)."""
    data, _ = _read(source)
    rows = data.get("steps") if isinstance(data, Mapping) else None
    if not isinstance(rows, list) or len(rows) < 2:
        return None
    if not all(isinstance(r, Mapping) and _number(r.get("step")) is not None for r in rows):
        return None
    names = {k: None for r in rows for k, v in r.items() if k != "step" and _number(v) is not None}
    if not names:
        return None
    return [float(r["step"]) for r in rows], {k: [_number(r.get(k)) for r in rows] for k in names}


def _per_epoch(data: Any, where: str) -> tuple[list[float], dict[str, list]]:
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


def history_charts(
    xs: list[float], series: Mapping[str, list], *, xlabel: str = "epoch"
) -> list[str]:
    """SVG charts: losses together, accuracies together, anything else (the learning rate) on a
    third chart; `xlabel` names the x axis (per-step charts: "step", titles "... by step")."""
    groups: dict[str, dict[str, list]] = {"loss": {}, "accuracy": {}, "other": {}}
    for name, vals in series.items():
        low = name.lower()
        key = "loss" if "loss" in low else "accuracy" if "acc" in low else "other"
        groups[key][name] = vals
    only_lr = bool(groups["other"]) and all(
        k.lower() in ("lr", "learning_rate") for k in groups["other"]
    )
    by = "" if xlabel == "epoch" else f" by {xlabel}"
    return [
        line_chart_svg(xs, g, title=title + by, xlabel=xlabel)
        for title, g in (
            ("loss", groups["loss"]),
            ("accuracy", groups["accuracy"]),
            ("learning rate" if only_lr else "other metrics", groups["other"]),
        )
        if g
    ]
