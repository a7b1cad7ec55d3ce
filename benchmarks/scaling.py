"""Benchmark: does every stage scale linearly with the graph's size?

    python benchmarks/scaling.py [--nodes 1000,5000,20000] [--repeat 3] [--markdown]

Builds a chain of Conv -> BatchNorm -> ReLU blocks with the DSL (`graphnet.nn.Sequential`; 4
channels on an 8x8 input, so the arrays stay tiny and the IR's bookkeeping is what is timed) with
about N nodes, and times each stage on it:

- build:    `Sequential([...]).build(...)`, the DSL emitting every node (shapes inferred);
- export:   `graph.to_onnx()` (IR -> ModelProto);
- import:   `graphnet.load(model)` (ModelProto -> IR, ONNX shape inference included);
- optimize: `passes.optimize(graph)`, the default `inference` pipeline (every BN folded).

Each time is the CPU time of this process (`time.process_time`: other load on a shared machine
does not count), the median of --repeat runs, each started with what is alive before it frozen
out of the garbage collector's way (`gc.freeze`: the benchmark's other graphs are not the stage's
cost); the first size is also run once untimed, to warm up
imports. The table gives microseconds per node and, per stage, the ratio of its per-node cost
to the one at the first size: 1.0 is linear, 2.0 is twice the cost per node. The target is a
ratio of at most 2 at 20,000 nodes for every stage. The ratios are taken within one run, so a
machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

# The checkout's graphnet, even where another one is installed: the repository root first.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

import graphnet  # noqa: E402
from graphnet import nn  # noqa: E402
from graphnet.passes import optimize  # noqa: E402

__all__ = ["chain", "measure", "main"]

STAGES = ("build", "export", "import", "optimize")


def chain(num_nodes: int, channels: int = 4) -> nn.Sequential:
    """A Sequential of Conv -> BN -> ReLU blocks with about `num_nodes` nodes (3 per block)."""
    layers: list[nn.Layer] = []
    for _ in range(max(1, num_nodes // 3)):
        layers += [nn.Conv(channels, 3, padding="same"), nn.BatchNorm(), nn.ReLU()]
    return nn.Sequential(layers)


def _median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        out = None
        # Objects alive before the stage (the previous stages' graphs and models) are moved out of
        # the garbage collector's reach: its full collections would rescan them, charging a stage
        # for the size of what the benchmark happens to hold, not for its own work.
        gc.collect()
        gc.freeze()
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
        gc.unfreeze()
    return statistics.median(times), out


def measure(num_nodes: int, repeat: int = 3, channels: int = 4) -> dict[str, float]:
    """Seconds per stage (median of `repeat`) on a chain of about `num_nodes` nodes; also the
    exact node count under "nodes"."""
    shape = (None, channels, 8, 8)
    t_build, graph = _median_time(lambda: chain(num_nodes, channels).build(shape), repeat)
    t_export, model = _median_time(graph.to_onnx, repeat)
    t_import, _ = _median_time(lambda: graphnet.load(model), repeat)
    t_opt, (opt, _) = _median_time(lambda: optimize(graph), repeat)
    assert opt.op_counts().get("BatchNormalization", 0) == 0, "a BatchNorm was left unfolded"
    return {
        "nodes": float(len(graph)),
        "build": t_build,
        "export": t_export,
        "import": t_import,
        "optimize": t_opt,
    }


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python " + (
        platform.python_version()
    )


def render(rows: list[dict[str, float]], markdown: bool) -> str:
    base = rows[0]
    head = ["nodes"] + [f"{s} us/node (x)" for s in STAGES]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---:|" * len(head))
    else:
        lines.append("  ".join(f"{h:>22}" for h in head))
    for r in rows:
        cells = [f"{int(r['nodes']):,}"]
        for s in STAGES:
            per = r[s] / r["nodes"] * 1e6
            ratio = per / (base[s] / base["nodes"] * 1e6)
            cells.append(f"{per:.0f} ({ratio:.2f})")
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("  ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="1000,5000,20000", help="comma-separated node counts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",")]
    measure(sizes[0], repeat=1)  # warm-up: imports, caches
    here = os.path.abspath(graphnet.__file__).startswith(_ROOT + os.sep)
    where = "this checkout" if here else "installed"
    rows = []
    for n in sizes:
        rows.append(measure(n, args.repeat))
        print(f"# {int(rows[-1]['nodes'])} nodes done", file=sys.stderr, flush=True)
    print(
        f"# {machine()}; graphnet {graphnet.__version__} ({where}); CPU time, median of "
        f"{args.repeat}; (x) = per-node cost / that at {sizes[0]:,}"
    )
    print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
