"""One benchmark of one model at one batch size: every engine on the same inputs, interleaved
timing, outputs compared, GEMM floor, peak memory. `bench_graph` returns a plain dict (JSON-ready);
`format_rows` renders the table."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphnet.bench.engines import (
    Engine,
    graphnet_engine,
    interleaved,
    max_diff,
    ort_engine,
    reference_evaluator_time,
    traced_peak,
)
from graphnet.bench.floor import gemm_engine, gemm_shapes, memory_floor
from graphnet.ir import Graph

__all__ = ["bench_graph", "format_rows", "TOLERANCE", "geomean"]

# Whole-model comparison of engines (float32, different summation orders and algorithms such as
# Winograd): |a - b| <= atol + rtol * |b|, the README's whole-model tolerances widened tenfold
# for Winograd's transforms (their rounding grows with the tile's dynamic range).
TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


def _close(ref: dict, got: dict | list) -> bool:
    a = list(ref.values())
    b = list(got.values()) if isinstance(got, dict) else list(got)
    return len(a) == len(b) and all(
        np.shape(x) == np.shape(y)
        and np.allclose(y, x, rtol=TOLERANCE["rtol"], atol=TOLERANCE["atol"])
        for x, y in zip(a, b, strict=True)
    )


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def bench_graph(
    name: str,
    graph: Graph,
    *,
    batch: int,
    rounds: int = 5,
    block: float = 0.3,
    pause: float = 0.1,
    ref_cap: float = 20.0,
    threads: int = 2,
    seed: int = 0,
    optimize: bool = True,
    reference: bool = True,
    train: bool = True,
    torch: bool = True,
    plans: tuple[str, ...] = ("fast", "reference"),
    lean: bool = False,
    progress: Callable[[], None] | None = None,
) -> dict:
    """Benchmark `graph` (as given: unoptimized) at `batch`. Engines, all on the same seeded
    inputs: ours on the optimized graph (each plan of `plans`) and on the original, onnxruntime
    with all graph optimizations and with none (`threads` intra-op threads), the bare GEMM floor,
    PyTorch eager on the optimized graph when it is installed and `torch` (see
    `graphnet.bench.torch_engine`), and once `onnx.reference` (skipped past `ref_cap` seconds);
    with `lean`, the fast plan under its memory budget too (`Session(memory="lean")`: its time,
    ratio to PyTorch and peak memory). Returns a dict of milliseconds,
    ratios, memory and output checks."""
    from graphnet.passes.manager import optimize as run_passes
    from graphnet.runtime import Session
    from graphnet.runtime.feeds import random_inputs

    opt = run_passes(graph, "inference")[0] if optimize else graph
    feeds = random_inputs(graph, batch=batch, seed=seed)
    engines: list[Engine] = []
    for plan in plans:
        engines.append(graphnet_engine(f"ours[{plan}]", opt, feeds, plan=plan))
    if lean:
        engines.append(graphnet_engine("ours[lean]", opt, feeds, plan="fast", memory="lean"))
    engines.append(graphnet_engine("ours[original]", graph, feeds, plan=plans[0]))
    engines.append(ort_engine("ort", opt, feeds, optimize=True, threads=threads))
    engines.append(ort_engine("ort[no-opt]", opt, feeds, optimize=False, threads=threads))
    torch_note = "not asked for (--no-torch)"
    if torch:
        from graphnet.bench.torch_engine import torch_engine

        torch_run, torch_note = torch_engine(opt, feeds, threads=threads)
        if torch_run is not None:
            engines.append(Engine("pytorch", torch_run, torch_note))
    if train and any(n.op in ("BatchNormalization", "Dropout") for n in graph.nodes):
        engines.append(graphnet_engine("ours[train]", graph, feeds, plan=plans[0], mode="train"))
    all_values = Session(opt, plan="reference").run(feeds, keep_all=True)
    shapes = {k: v.shape for k, v in all_values.items()}
    shapes.update({k: v.shape for k, v in opt.params.items()})
    sizes = {k: v.itemsize for k, v in all_values.items()}
    dims = gemm_shapes(opt, shapes)
    gemm_run, gemm_flops = gemm_engine(dims, seed)
    engines.append(Engine("gemm floor", gemm_run))

    outputs = {e.name: e.run() for e in engines}
    ref = outputs["ort"]
    checks = {}
    for e in engines:
        if e.name in ("ort", "gemm floor", "ours[train]"):
            continue
        checks[e.name] = {
            "max_diff": max_diff(ref, outputs[e.name]),
            "ok": _close(ref, outputs[e.name]),
        }

    timings = interleaved(engines, rounds=rounds, block=block, pause=pause, progress=progress)
    ms = {k: t.median * 1e3 for k, t in timings.items()}
    spread = {k: [x * 1e3 for x in t.spread] for k, t in timings.items()}
    row: dict = {
        "model": name,
        "batch": batch,
        "ms": ms,
        "spread_ms": spread,
        "runs": {k: len(t.times) for k, t in timings.items()},
        "checks": checks,
        "gemm_gflop": gemm_flops / 1e9,
        "pytorch_note": torch_note,
    }
    if reference:
        seconds, outs, note = reference_evaluator_time(opt, feeds, cap=ref_cap)
        row["onnx_reference_ms"] = None if seconds is None else seconds * 1e3
        row["onnx_reference_note"] = note
        if outs is not None:
            row["checks"]["onnx.reference"] = {
                "max_diff": max_diff(ref, outs),
                "ok": _close(ref, outs),
            }
    ours = f"ours[{plans[0]}]"
    from graphnet.summary import graph_macs

    model_flops = 2.0 * graph_macs(opt) * batch
    row["model_gflop"] = model_flops / 1e9
    row["gflops"] = {
        k: model_flops / (v / 1e3) / 1e9 for k, v in ms.items() if k != "gemm floor" and v > 0
    }
    row["ratio_ort"] = ms[ours] / ms["ort"]
    row["ratio_torch"] = ms[ours] / ms["pytorch"] if "pytorch" in ms else None
    row["ratio_floor"] = ms[ours] / ms["gemm floor"] if ms["gemm floor"] > 0 else None
    mem = memory_floor(opt, shapes, sizes)
    fast = Session(opt, plan=plans[0])
    wanted = {k: v for k, v in feeds.items() if k in opt.inputs}
    # A fresh session: its first run prepares the weights (counted: the graph's parameters
    # stay, so prepared copies are memory on top of them) and records the arena.
    peak = traced_peak(lambda: fast.run(wanted))
    floor = mem["params"] + mem["activations"]
    row["memory"] = {
        "params_mib": mem["params"] / 2**20,
        "live_activations_mib": mem["activations"] / 2**20,
        "ours_peak_mib": (mem["params"] + peak) / 2**20,
        # of which the arena (activations and workspaces), scratch, constant results: the
        # rest is prepared weights and the run's outputs
        "held_mib": fast.held_bytes / 2**20,
        "ratio": (mem["params"] + peak) / floor,
    }
    if lean:
        slim = Session(opt, memory="lean")
        lean_peak = traced_peak(lambda: slim.run(wanted))
        row["memory"]["lean_peak_mib"] = (mem["params"] + lean_peak) / 2**20
        row["memory"]["lean_ratio"] = (mem["params"] + lean_peak) / floor
        row["memory"]["lean_off"] = slim.lean_off  # ("": the budget was planned)
        row["ratio_torch_lean"] = ms["ours[lean]"] / ms["pytorch"] if "pytorch" in ms else None
    return row


def format_rows(rows: list[dict], *, markdown: bool = True) -> str:
    """The table: per model and batch, ms of each engine, ratios to onnxruntime, floor, memory."""
    header = [
        "model",
        "batch",
        "ours ms",
        "reference plan ms",
        "ORT ms",
        "ORT no-opt ms",
        "ours / ORT",
        "PyTorch ms",
        "ours / PyTorch",
        "GEMM floor ms",
        "ours / floor",
        "onnx.reference ms",
        "train / inference",
        "peak / floor mem",
        "outputs",
    ]
    # with lean rows (bench_graph(lean=True)): the lean plan's time, against PyTorch, its peak
    lean = any("ours[lean]" in r["ms"] for r in rows)
    if lean:
        header[-1:-1] = ["lean ms", "lean / PyTorch", "lean peak / floor"]
    lines = []
    for r in rows:
        ms = r["ms"]
        ours = next(
            k for k in ms if k.startswith("ours[") and k not in ("ours[original]", "ours[lean]")
        )
        ref_plan = ms.get("ours[reference]")
        train = ms.get("ours[train]")
        ok = all(c["ok"] for c in r["checks"].values())
        worst = max(c["max_diff"] for c in r["checks"].values())
        lines.append(
            [
                r["model"],
                str(r["batch"]),
                f"{ms[ours]:.2f}",
                "" if ref_plan is None else f"{ref_plan:.2f}",
                f"{ms['ort']:.2f}",
                f"{ms['ort[no-opt]']:.2f}",
                f"{r['ratio_ort']:.2f}",
                f"{ms['pytorch']:.2f}" if "pytorch" in ms else "",
                "" if r.get("ratio_torch") is None else f"{r['ratio_torch']:.2f}",
                f"{ms['gemm floor']:.2f}",
                "" if r["ratio_floor"] is None else f"{r['ratio_floor']:.2f}",
                f"{r['onnx_reference_ms']:.0f}"
                if r.get("onnx_reference_ms") is not None
                else r.get("onnx_reference_note", ""),
                "" if train is None else f"{train / ms['ours[original]']:.2f}",
                f"{r['memory']['ratio']:.2f}",
                ("ok" if ok else "DIFFER") + f" ({worst:.1e})",
            ]
        )
        if lean:
            slim = ms.get("ours[lean]")
            lines[-1][-1:-1] = [
                "" if slim is None else f"{slim:.2f}",
                "" if r.get("ratio_torch_lean") is None else f"{r['ratio_torch_lean']:.2f}",
                "" if slim is None else f"{r['memory']['lean_ratio']:.2f}",
            ]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row) for row in [header, *lines])
