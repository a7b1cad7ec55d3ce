"""Ioffe and Szegedy's BatchNorm result, reproduced on the shipped digits, and what dropout does.

    python benchmarks/bn_dropout.py [--seeds 3] [--epochs 20] [--baseline-epochs 60]

Trains the template CNN (INPUT -> [[CONV -> (BN) -> RELU] * 2 -> POOL] * 2 -> FC ->
RELU -> FC -> Softmax, 16/32 channels, 64 hidden) with SGD (momentum 0.9, batch 64) on the 1,438
training digits, testing on the 359 held-out ones every 10 steps:
- without BN at the base learning rate (for 3x as many epochs, so that its best accuracy is its
  plateau), with BN at 1x, 5x and 30x it (Ioffe & Szegedy's table): steps to reach the no-BN
  network's best test accuracy (same seed), best accuracy;
- with BN, with and without dropout 0.5 before the hidden FC: train (inference mode) vs test
  accuracy at the end.
Mean and standard deviation over the seeds. Then the BN network (seed 0, 1x) goes through
`optimize` and onnxruntime, which must predict the same class for every test image.

Writes benchmarks/results/bn_dropout.json (every curve) and benchmarks/bn_dropout.svg (the
learning curves: mean test accuracy per configuration, the band is min..max over seeds). Plain
SVG written here: no plotting library needed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from graphnet.data import digits  # noqa: E402
from graphnet.train.experiment import (  # noqa: E402
    BN_CONFIGS,
    DROPOUT_CONFIGS,
    Run,
    bn_table,
    curve_of,
    deploy_check,
    dropout_table,
    run_config,
)

HERE = os.path.dirname(os.path.abspath(__file__))
COLORS = ["#444444", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _points(curve: list) -> list[dict]:
    return [{"step": s, "test_accuracy": a} for s, a in curve]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}"
    )


def svg_curves(runs: list[Run], names: list[str], path: str, y_low: float = 0.8) -> None:
    """Mean test accuracy vs step per configuration, with a min..max band over seeds. Values
    below `y_low` are drawn on the bottom edge (said in the axis label)."""
    w, h, left, right, top, bottom = 640, 400, 60, 170, 20, 50
    pw, ph = w - left - right, h - top - bottom
    max_step = max(s for r in runs for s, _ in r.curve)

    def xy(step: float, acc: float) -> tuple[float, float]:
        a = min(max(acc, y_low), 1.0)
        return left + pw * step / max_step, top + ph * (1 - (a - y_low) / (1 - y_low))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    for k in range(5):  # horizontal grid
        acc = y_low + (1 - y_low) * k / 4
        _, y = xy(0, acc)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{100 * acc:.0f}</text>')
    for k in range(6):
        step = max_step * k / 5
        x, _ = xy(step, y_low)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{step:.0f}</text>')
    out.append(
        f'<text x="{left + pw / 2}" y="{h - 12}" text-anchor="middle">training steps (batch 64)'
        "</text>"
    )
    out.append(
        f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"test accuracy (%), below {100 * y_low:.0f} on the edge</text>"
    )
    for k, name in enumerate(names):
        rs = [r for r in runs if r.name == name]
        if not rs:
            continue
        steps = [s for s, _ in rs[0].curve]
        accs = np.array([[a for _, a in r.curve] for r in rs])
        color = COLORS[k % len(COLORS)]
        lo = [xy(s, a) for s, a in zip(steps, accs.min(axis=0), strict=True)]
        hi = [xy(s, a) for s, a in zip(steps, accs.max(axis=0), strict=True)]
        band = " ".join(f"{x:.1f},{y:.1f}" for x, y in lo + hi[::-1])
        out.append(f'<polygon points="{band}" fill="{color}" fill-opacity="0.15" stroke="none"/>')
        mean = " ".join(
            f"{x:.1f},{y:.1f}"
            for x, y in (xy(s, a) for s, a in zip(steps, accs.mean(axis=0), strict=True))
        )
        out.append(f'<polyline points="{mean}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = top + 14 + 18 * k
        out.append(
            f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(f'<text x="{left + pw + 36}" y="{ly}">{name} (lr {rs[0].lr:g})</text>')
    out.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=60,
        help="epochs of the no-BN network: long enough that its best accuracy is its plateau, "
        "not where the budget cut it",
    )
    p.add_argument("--base-lr", type=float, default=0.01)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--out", default=os.path.join(HERE, "results", "bn_dropout.json"))
    p.add_argument("--svg", default=os.path.join(HERE, "bn_dropout.svg"))
    p.add_argument(
        "--from-json",
        metavar="RESULTS.json",
        help="do not train: print the tables and draw the plot of a previous run's results",
    )
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as fh:
            saved = json.load(fh)
        runs = [
            Run(
                r["name"],
                r["seed"],
                r["lr"],
                curve_of(_points(r["curve"]), r["epochs"]),
                r["epochs"],
            )
            for r in saved["runs"]
        ]
        print(f"machine: {saved['machine']}\n")
        print(bn_table(runs))
        print()
        print(dropout_table(runs))
        svg_curves(runs, [c[0] for c in BN_CONFIGS], args.svg)
        return 0
    data = digits()
    print(f"machine: {machine()}")
    print(
        f"data: {len(data.x)} train / {len(data.x_test)} test digits; {args.epochs} epochs "
        f"({args.baseline_epochs} without BN) of "
        f"{-(-len(data.x) // 64)} steps; seeds 0..{args.seeds - 1}; base lr {args.base_lr:g}, "
        "SGD momentum 0.9",
        flush=True,
    )
    t0 = time.perf_counter()
    runs: list[Run] = []
    kept: dict[str, object] = {}
    for seed in range(args.seeds):
        for name, bn, drop, mult in BN_CONFIGS + DROPOUT_CONFIGS:
            if name == "BN, no dropout":
                # Exactly the "BN" run at 1x (same seed, same batches): reused, not rerun.
                twin = next(r for r in runs if r.name == "BN" and r.seed == seed)
                runs.append(Run(name, seed, twin.lr, twin.curve, twin.epochs, twin.seconds))
                continue

            def keep(g, name=name, seed=seed):
                if name == "BN" and seed == 0:
                    kept["bn"] = g

            run = run_config(
                name,
                bn,
                drop,
                mult,
                seed=seed,
                base_lr=args.base_lr,
                epochs=args.baseline_epochs if not bn else args.epochs,
                eval_every=args.eval_every,
                data=data,
                eval_train=name == "BN" or drop is not None,
                keep_graph=keep,
            )
            runs.append(run)
            print(
                f"  seed {seed} {name:18s} lr {run.lr:<5g} best test {100 * run.best:.2f}%  "
                f"final {100 * run.epochs[-1]['test_accuracy']:.2f}%  ({run.seconds:.0f} s)",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s\n")
    print(bn_table(runs))
    print()
    print(dropout_table(runs))
    print()
    print(deploy_check(kept["bn"], data.x_test))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(
            {
                "machine": machine(),
                "args": vars(args) | {"out": None, "svg": None},
                "runs": [
                    {
                        "name": r.name,
                        "seed": r.seed,
                        "lr": r.lr,
                        "curve": r.curve,
                        "epochs": r.epochs,
                    }
                    for r in runs
                ],
            },
            fh,
            indent=1,
        )
    svg_curves(runs, [c[0] for c in BN_CONFIGS], args.svg)
    print(f"\nwrote {os.path.relpath(args.out)} and {os.path.relpath(args.svg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
