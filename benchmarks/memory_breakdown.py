"""Benchmark: where the fast plan's peak memory goes, per suite model and batch.

    python benchmarks/memory_breakdown.py [--models lenet5,vgg_bn] [--batch 1,32]

`graphnet bench` prints one number per row, peak / floor: the parameters + what a fresh session
allocates and still holds at the peak of its second run (tracemalloc), against the parameters +
the largest set of simultaneously live activations. This splits our side: what the first run
kept beside the arena ("kept": mostly the prepared weights: colstack's transposed copies,
im2col's copies with the bias column under a GEMM depth of BIAS_COLUMN_MAX_DEPTH (views of the
parameters above), Winograd's transformed weights where its GEMMs have few columns (at batch 1;
with more, winograd.PER_RUN_MIN_COLUMNS, a step transforms them into its workspace on every
run); also the ReLU zeros block and small caches), the arena of activation buffers and conv
workspaces (those per-run transformed weights among them) with the threads' scratch
(`Session.held_bytes`), what a warm run allocates on top ("run's own": its outputs and the
temporaries of steps that allocate), and the first run's own peak (it records the arena: each
value and workspace in fresh memory while it lives, so about the arena and the kept weights).
onnxruntime's arena is not visible to tracemalloc: its memory is not compared here
(benchmarks/runtime_vs_ort.py compares resident memory). The machine is named above the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from graphnet.bench.floor import memory_floor  # noqa: E402
from graphnet.bench.machine import machine  # noqa: E402
from graphnet.bench.suite import build, suite_names  # noqa: E402
from graphnet.passes.manager import optimize  # noqa: E402
from graphnet.runtime import Session  # noqa: E402
from graphnet.runtime.feeds import random_inputs  # noqa: E402

MIB = 2**20
COLUMNS = ["params", "activations", "kept", "arena", "run's own", "first run", "peak / floor"]
PEAK = "arena's peak at"
"""The step where the recorded run's live bytes peaked (the arena's lower bound): its node,
algorithm, MiB of values + MiB of the threads' workspaces alive then."""


def breakdown(name: str, batch: int) -> dict[str, Any]:
    """MiB of each part for one suite model at `batch`, the bench's peak / floor ratio, and the
    step where the arena's live bytes peak (`Pool.peaks`)."""
    graph = build(name)
    opt = optimize(graph, "inference")[0]
    feeds = random_inputs(graph, batch=batch, seed=0)
    values = Session(opt, plan="reference").run(feeds, keep_all=True)
    shapes = {k: v.shape for k, v in values.items()}
    shapes.update({k: v.shape for k, v in opt.params.items()})
    floor = memory_floor(opt, shapes, {k: v.itemsize for k, v in values.items()})
    wanted = {k: v for k, v in feeds.items() if k in opt.inputs}
    session = Session(opt)
    tracemalloc.start()
    try:
        session.run(wanted)
        kept, first = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        session.run(wanted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = session.held_bytes
    plan = session._fast(training=False, keep_all=False)
    k, values, workspaces = next(iter(plan.pool.peaks.values()))
    step = plan.steps[k]
    return {
        "params": floor["params"] / MIB,
        "activations": floor["activations"] / MIB,
        "kept": (kept - held) / MIB,
        "arena": held / MIB,
        "run's own": (peak - kept) / MIB,
        "first run": first / MIB,
        "peak / floor": (floor["params"] + peak) / (floor["params"] + floor["activations"]),
        "arena's peak at": f"{step.name} ({getattr(step, 'ran', '') or step.algo}):"
        f" {values / MIB:.2f} + {workspaces / MIB:.2f}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(suite_names()))
    p.add_argument("--batch", default="1,32")
    args = p.parse_args(argv)
    Session(optimize(build("lenet5"), "inference")[0]).run(  # one-time imports and caches
        {k: v for k, v in random_inputs(build("lenet5"), batch=1, seed=0).items()}
    )
    info = machine()
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        "MiB; kept: what the first run kept beside the arena (mostly the weights in the layouts"
        " the kernels read, beside the graph's own); run's own: a warm run's allocations on top"
        " (outputs, temporaries); first run: its tracemalloc peak (parameters not included);"
        " arena's peak at: the step, values + workspaces alive there"
    )
    print(f"{'model':13s} {'batch':>5s} " + " ".join(f"{c:>12s}" for c in COLUMNS) + f"  {PEAK}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            row = breakdown(name, batch)
            cells = " ".join(f"{row[c]:12.2f}" for c in COLUMNS)
            print(f"{name:13s} {batch:5d} {cells}  {row[PEAK]}", flush=True)


if __name__ == "__main__":
    main()
