"""Benchmark: graphnet's NumPy runtime against onnxruntime, inference latency and peak memory.

    python benchmarks/runtime_vs_ort.py [--models zoo/resnet,torch/] [--repeat 5] [--budget 5]
                                        [--no-optimize] [--markdown] [--plan fast|reference]

The six-model DSL suite of issue 7 (with the GEMM floor, onnx.reference and interleaved timing)
is `python -m graphnet bench --suite` (graphnet/bench); this script covers the model files.

Same models as benchmarks/optimize_peers.py, same seeded random inputs. For each model:
- graphnet: `graphnet.load(path)`, then (unless --no-optimize) `passes.manager.optimize(graph)`,
  then a `runtime.Session`; onnxruntime: an `InferenceSession` on the file, CPU provider, its
  default session options (ORT_ENABLE_ALL, all cores) or ORT_DISABLE_ALL with --no-optimize.
  So each runtime runs with its own optimizer, as a user would get it.
- latency: one untimed warm-up run, then up to --repeat runs (stopping early once --budget
  seconds are spent); the median in ms. Session creation is not timed.
- memory, from the process' resident set (Linux /proc; sees NumPy's buffers and onnxruntime's
  C++ arena alike, so these are the comparable columns):
  * held: RSS after session creation and the warm-up run minus RSS before the session was
    made (weights, plan, onnxruntime's arena; for graphnet also what load/optimize left to
    the allocator);
  * run peak: the rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the
    RSS just before one warmed-up run: the extra memory one inference needs. onnxruntime
    reuses its arena, so it is near 0 there; graphnet allocates its activations per run;
- tracemalloc: the peak of Python-visible allocations during one run, graphnet only: NumPy
  reports its buffers to tracemalloc, onnxruntime's arena does not (it would show ~0).
- max |diff| between the two runtimes' outputs (a sanity check, not a test).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # the sibling benchmark module, when imported rather than run

from optimize_peers import collect_models, max_diff, random_feeds, render, short_error  # noqa: E402

__all__ = ["measure", "bench_model", "main"]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(make: Callable[[], Callable[[], dict]], repeat: int, budget: float) -> dict:
    """`make()` builds a session and returns its run function. Latency (median ms over up to
    `repeat` runs within `budget` s, after one warm-up run), memory held, RSS peak rise and
    tracemalloc peak (MiB) of one run, and the outputs of the last run."""
    gc.collect()
    rss_start = _status_kib("VmRSS")
    run = make()
    outputs = run()  # warm-up: first-call costs (caches, ORT's arena growth) are not latency
    gc.collect()
    rss_before = _status_kib("VmRSS")
    held = (
        None if rss_start is None or rss_before is None else max(0, rss_before - rss_start) / 1024
    )
    rss_peak = None
    if _reset_peak_rss() and rss_before is not None:
        run()
        peak = _status_kib("VmHWM")
        rss_peak = None if peak is None else max(0, peak - rss_before) / 1024
    gc.collect()
    tracemalloc.start()
    try:
        run()
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    times: list[float] = []
    while len(times) < repeat and (not times or sum(times) < budget):
        t0 = time.perf_counter()
        outputs = run()
        times.append(time.perf_counter() - t0)
    return {
        "ms": statistics.median(times) * 1e3,
        "runs": len(times),
        "held": held,
        "rss": rss_peak,
        "traced": traced / 2**20,
        "outputs": outputs,
    }


PLAN = "fast"  # --plan: graphnet's fast plan or the reference plan (plain kernels)


def _graphnet_runner(path: str, feeds: dict, optimize: bool) -> Callable[[], dict]:
    import graphnet
    from graphnet import runtime
    from graphnet.passes.manager import optimize as run_passes

    graph = graphnet.load(path)
    if optimize:
        graph, _ = run_passes(graph, "inference")
    sess = runtime.Session(graph, plan=PLAN)
    wanted = {k: v for k, v in feeds.items() if k in graph.inputs}
    return lambda: sess.run(wanted)


def _ort_runner(path: str, feeds: dict, optimize: bool) -> Callable[[], dict]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    ins = {k: v for k, v in feeds.items() if k in wanted}
    return lambda: dict(zip(names, sess.run(names, ins), strict=True))


RUNNERS = {"graphnet": _graphnet_runner, "onnxruntime": _ort_runner}


def _measure_one(
    runtime_name: str, path: str, feeds: dict, optimize: bool, repeat: int, budget: float
) -> dict:
    """`measure` one runtime on one model, errors as {"error": ...}; runs in a child process."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return measure(lambda: RUNNERS[runtime_name](path, feeds, optimize), repeat, budget)
    except Exception as exc:  # a runtime failing on a model is a result, not a crash
        return {"error": short_error(exc)}


def bench_model(
    path: str, *, repeat: int, budget: float, optimize: bool, seed: int, batch: int
) -> dict:
    """{"graphnet": measurement or {"error": ...}, "onnxruntime": ..., "diff": float | str}.

    Each measurement runs in a fresh forked process, so that resident-memory figures start from
    the same clean baseline instead of from whatever the previous model left to the allocator."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    feeds = random_feeds(path, seed=seed, batch=batch)
    out: dict = {}
    for name in RUNNERS:
        with ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("fork")
        ) as pool:
            try:
                out[name] = pool.submit(
                    _measure_one, name, path, feeds, optimize, repeat, budget
                ).result()
            except Exception as exc:  # the child died (e.g. out of memory)
                out[name] = {"error": short_error(exc)}
    ours, theirs = out["graphnet"], out["onnxruntime"]
    try:
        out["diff"] = f"{max_diff(theirs['outputs'], ours['outputs']):.1e}"
    except Exception as exc:
        out["diff"] = "n/a" if "error" in ours or "error" in theirs else short_error(exc)
    for r in (ours, theirs):
        r.pop("outputs", None)
    return out


def _cell(r: dict, key: str, fmt: str, repeat: int) -> str:
    if "error" in r:
        return r["error"]
    if r[key] is None:
        return "n/a"
    text = format(r[key], fmt)
    return text + (f" ({r['runs']}x)" if key == "ms" and r["runs"] < repeat else "")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; the table goes to stdout, progress to stderr."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", help="comma-separated substrings of model names (e.g. 'zoo/,template')"
    )
    ap.add_argument(
        "--repeat", type=int, default=5, help="timed runs per model and runtime (default 5)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=5.0,
        help="stop repeating once this many seconds are spent (default 5)",
    )
    ap.add_argument(
        "--no-optimize",
        action="store_true",
        help="run the graph as imported (ours) / with ORT_DISABLE_ALL (onnxruntime)",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="print a markdown table (for README.md)"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the random inputs and of the template"
    )
    ap.add_argument(
        "--batch", type=int, default=1, help="size of dynamic dims in the random inputs"
    )
    ap.add_argument(
        "--plan",
        choices=("fast", "reference"),
        default="fast",
        help="graphnet's compiled fast plan (default) or the plain kernels node by node",
    )
    args = ap.parse_args(argv)
    global PLAN
    PLAN = args.plan
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    wanted = (
        [m.strip().lower() for m in args.models.split(",") if m.strip()] if args.models else None
    )
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gn-bench-") as workdir:
        everything = collect_models(workdir, seed=args.seed)
        models = [
            m for m in everything if wanted is None or any(w in m.name.lower() for w in wanted)
        ]
        if not models:
            ap.error(f"no model matches --models; models: {', '.join(m.name for m in everything)}")
        for m in models:
            print(f"  {m.name} ...", file=sys.stderr, flush=True)
            r = bench_model(
                m.path,
                repeat=args.repeat,
                budget=args.budget,
                optimize=not args.no_optimize,
                seed=args.seed,
                batch=args.batch,
            )
            g, o = r["graphnet"], r["onnxruntime"]
            ratio = (
                f"{g['ms'] / o['ms']:.1f}"
                if "error" not in g and "error" not in o and o["ms"] > 0
                else "n/a"
            )
            rows.append(
                [
                    m.name,
                    _cell(g, "ms", ".2f", args.repeat),
                    _cell(o, "ms", ".2f", args.repeat),
                    ratio,
                    _cell(g, "held", ".1f", args.repeat),
                    _cell(o, "held", ".1f", args.repeat),
                    _cell(g, "rss", ".1f", args.repeat),
                    _cell(o, "rss", ".1f", args.repeat),
                    _cell(g, "traced", ".1f", args.repeat),
                    r["diff"],
                ]
            )
    header = [
        "model",
        "graphnet ms",
        "ORT ms",
        "ratio",
        "graphnet held MiB",
        "ORT held MiB",
        "graphnet run peak MiB",
        "ORT run peak MiB",
        "graphnet tracemalloc MiB",
        "max |diff|",
    ]
    mode = (
        "optimized (graphnet optimize / ORT_ENABLE_ALL)" if not args.no_optimize else "unoptimized"
    )
    title = f"inference latency (median) and peak memory of one run, {mode}, batch {args.batch}"
    print(render(title, header, rows, args.markdown))
    print(
        "\nratio = graphnet ms / ORT ms; held = resident memory the session keeps; run peak = "
        "rise of the peak resident memory during one warmed-up run; tracemalloc = peak of "
        "NumPy/Python allocations during one run (blind to ORT's C++ arena, hence graphnet only); "
        f"total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
