"""Benchmark: graphnet's `optimize` against the peer ONNX optimizers, on the same models.

    python benchmarks/optimize_peers.py [--models resnet,torch/] [--tools graphnet,onnxsim]
                                        [--repeat 3] [--markdown]

Tools (a peer that is not installed says so in its column; a tool that fails on a model shows
"error: <reason>" in that cell and the run goes on):
- graphnet       `graphnet.load(path)` -> `passes.manager.optimize(graph, "inference")` ->
                 `graph.to_onnx()` (opset 21);
- graphnet-fold  the same with the opt-in `max_constant_bytes` (no practical limit): constant
                 results of any size are materialised, as the folding peers do (so the zoo's
                 ConstantOfShape weights become initializers and the file grows);
- ort-basic,     onnxruntime's offline optimization: an `InferenceSession` with
  ort-extended   `graph_optimization_level` ORT_ENABLE_BASIC / ORT_ENABLE_EXTENDED and
                 `optimized_model_filepath` (extended may write com.microsoft contrib ops such as
                 FusedConv; nodes are counted as written);
- onnxoptimizer  `onnxoptimizer.optimize(onnx.load(path), get_fuse_and_elimination_passes())`,
                 the pass list onnxsim itself uses;
- onnxsim        `onnxsim.simplify(path)` (its own output check off: check_n=0, the default);
- onnxslim       `onnxslim.slim(path)`.

What is timed: the wall time from the model file on disk to the optimized model, i.e. reading
the file is included for every tool. For graphnet: load + optimize + export to a ModelProto. For
onnxruntime: creating the session, which reads, optimizes and writes the optimized file (plus the
session's own initialisation, which its offline mode cannot skip). Each tool runs `--repeat`
times per model; the table shows the median.

Columns per model and tool: nodes after (top-level graph nodes as written), BatchNormalization
and Dropout nodes left, max |diff| of every output against the original model, both run by
onnxruntime with its optimizations OFF (so the tool's rewrite is what is measured) on the same
seeded random inputs (`runtime.feeds.random_inputs`), and the median wall time in ms.

Models: the committed PyTorch exports (tests/data/torch/*.onnx), the onnx package's light zoo
models (weights stored as ConstantOfShape, so tools that fold constants materialise them), and
the DSL's template CNN exported in inference form with BatchNorm and Dropout present (its
BN statistics randomised, seeded, so that a wrong fold shows in the diff).

This is a benchmark, not a test: it prints, and it exits 0 even when a tool fails on a model.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Run from a checkout without installing: the repository root holds graphnet/, passes/, runtime/.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

__all__ = [
    "Model",
    "collect_models",
    "random_feeds",
    "ort_run",
    "TOOLS",
    "Result",
    "bench_model",
    "main",
]

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
OURS = ("graphnet", "graphnet-fold")
"""Our own columns: never counted as peers of each other."""


# ----------------------------------------------------------------------------------------- models
@dataclass
class Model:
    """A benchmark model: a display name ('torch/cnn_dynamo', 'zoo/resnet50', 'dsl/template')
    and the ONNX file every tool reads."""

    name: str
    path: str


def collect_models(workdir: str, *, seed: int = 0) -> list[Model]:
    """The committed PyTorch exports, the onnx package's light zoo models and the DSL template
    (written into `workdir`)."""
    import onnx

    models = [
        Model("torch/" + _stem(p), p)
        for p in sorted(glob.glob(os.path.join(_ROOT, "tests/data/torch/*.onnx")))
    ]
    zoo = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
    models += [
        Model("zoo/" + _stem(p).removeprefix("light_"), p)
        for p in sorted(glob.glob(os.path.join(zoo, "*.onnx")))
    ]
    models.append(Model("dsl/template", _template(workdir, seed)))
    return models


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _template(workdir: str, seed: int) -> str:
    """The template CNN, exported for inference with its BatchNorm and Dropout nodes.
    A fresh net has identity BN statistics (mean 0, var 1, gamma 1, beta 0), with which a wrong
    fold could go unnoticed, so they are replaced by seeded random ones."""
    from graphnet import nn

    graph = nn.template(n=2, m=2, k=1, channels=(16, 32), hidden=(64,)).build((None, 3, 32, 32))
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        if node.op == "BatchNormalization":
            scale, bias, mean, var = node.inputs[1:5]
            c = graph.params[scale].shape
            graph.params[scale] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            graph.params[bias] = rng.normal(0.0, 0.5, c).astype(np.float32)
            graph.params[mean] = rng.normal(0.0, 0.5, c).astype(np.float32)
            graph.params[var] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    path = os.path.join(workdir, "template.onnx")
    graph.save(path, mode="inference")
    return path


def random_feeds(path: str, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """`runtime.feeds.random_inputs` of the model as graphnet imports it. If graphnet cannot
    import it, the same recipe (standard normal floats, seeded) from the ONNX graph inputs that
    are not initializers, so that peers are still compared on a model graphnet fails on."""
    import onnx

    try:
        import graphnet
        from graphnet.runtime.feeds import random_inputs

        return random_inputs(graphnet.load(path), batch=batch, seed=seed)
    except Exception:
        pass
    model = onnx.load(path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    rng, feeds = np.random.default_rng(seed), {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 4, size=shape).astype(dtype)
        else:
            feeds[vi.name] = rng.random(shape) < 0.5
    return feeds


def dead_inputs(model, feeds: dict[str, np.ndarray]) -> list:
    """Graph inputs that are neither fed, nor initializers, nor read by any node. onnxruntime's
    offline optimizer leaves such inputs behind in IR-version-3 models (the zoo's): it folds the
    ConstantOfShape weights and drops the shape initializers, but not their graph-input entries."""
    inits = {i.name for i in model.graph.initializer}
    read = {i for n in model.graph.node for i in n.input}
    return [
        vi
        for vi in model.graph.input
        if vi.name not in feeds and vi.name not in inits and vi.name not in read
    ]


def ort_run(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a ModelProto with onnxruntime, its graph optimizations off (we measure the tool's
    rewrite, not ORT's), feeding the inputs the model still has; inputs that nothing reads
    (`dead_inputs`) get zeros, since onnxruntime insists on them."""
    import onnx
    import onnxruntime as ort

    feeds = dict(feeds)
    for vi in dead_inputs(model, feeds):
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        feeds[vi.name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(
        zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True)
    )


# ------------------------------------------------------------------------------------------ tools
# A tool is `fn(path, out_path) -> onnx.ModelProto | None`; None means "written to out_path"
# (onnxruntime's offline mode only writes a file). Everything inside `fn` is timed.
def _graphnet(path: str, out_path: str, **options):
    import graphnet
    from graphnet.passes.manager import optimize

    graph, _report = optimize(graphnet.load(path), "inference", **options)
    return graph.to_onnx()


MATERIALISE_BYTES = 2**31
"""graphnet-fold's `max_constant_bytes`: any constant a protobuf file can hold."""


def _graphnet_fold(path: str, out_path: str):
    return _graphnet(path, out_path, max_constant_bytes=MATERIALISE_BYTES)


def _ort(level: str) -> Callable:
    def run(path: str, out_path: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, f"ORT_ENABLE_{level.upper()}"
        )
        so.optimized_model_filepath = out_path
        so.log_severity_level = 3  # warnings about unused initializers would flood the table
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return None

    return run


def _onnxoptimizer(path: str, out_path: str):
    import onnx
    import onnxoptimizer

    return onnxoptimizer.optimize(onnx.load(path), onnxoptimizer.get_fuse_and_elimination_passes())


def _onnxsim(path: str, out_path: str):
    import onnxsim

    model, _check_ok = onnxsim.simplify(path)  # check_n=0: no output check, so _check_ok is moot
    return model


def _onnxslim(path: str, out_path: str):
    import onnxslim

    return onnxslim.slim(path)


# name -> (module whose absence means "not installed", function)
TOOLS: dict[str, tuple[str, Callable]] = {
    "graphnet": ("graphnet", _graphnet),
    "graphnet-fold": ("graphnet", _graphnet_fold),
    "ort-basic": ("onnxruntime", _ort("basic")),
    "ort-extended": ("onnxruntime", _ort("extended")),
    "onnxoptimizer": ("onnxoptimizer", _onnxoptimizer),
    "onnxsim": ("onnxsim", _onnxsim),
    "onnxslim": ("onnxslim", _onnxslim),
}


def installed(module: str) -> bool:
    """Can `module` be imported? (An import error of any kind counts as not installed.)"""
    try:
        __import__(module)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------- results
@dataclass
class Result:
    """One tool on one model. `error`: the tool failed (every cell shows it); `run_error`: its
    output could not be run by onnxruntime (the diff cell shows it); `note`: a remark on the
    original model printed under the tables."""

    nodes: int = 0
    bn: int = 0
    dropout: int = 0
    diff: float | None = None
    ms: float = 0.0
    runs: int = 0
    ops: Counter = field(default_factory=Counter)
    bn_after_linear: int = 0
    dead_inputs: int = 0
    mb: float = 0.0
    error: str | None = None
    run_error: str | None = None
    note: str | None = None


def short_error(exc: BaseException, limit: int = 60) -> str:
    """'error: <first line of the message, cut>' for a table cell."""
    text = str(exc).strip()
    msg = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    return "error: " + (msg if len(msg) <= limit else msg[: limit - 3] + "...")


def count(model) -> tuple[int, Counter, int]:
    """(top-level nodes, op counter keyed 'Conv' or 'com.microsoft.FusedConv', BN nodes whose X
    is made by a Conv/ConvTranspose/Gemm/MatMul)."""
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    ops = Counter(
        (f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type
        for n in model.graph.node
    )
    bn_after = sum(
        1
        for n in model.graph.node
        if n.op_type == "BatchNormalization" and made_by.get(n.input[0]) in LINEAR_OPS
    )
    return len(model.graph.node), ops, bn_after


def max_diff(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> float:
    """max |a - b| over every output (matched by name, else by position), in float64."""
    names = list(reference)
    got = (
        [outputs[n] for n in names] if all(n in outputs for n in names) else list(outputs.values())
    )
    if len(got) != len(names):
        raise ValueError(f"{len(got)} outputs instead of {len(names)}")
    worst = 0.0
    for name, a, b in zip(names, reference.values(), got, strict=True):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"output {name} has shape {np.shape(b)} instead of {np.shape(a)}")
        if np.size(a):
            d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
            worst = max(worst, float(np.nan_to_num(d, nan=np.inf).max()))
    return worst


def time_tool(fn: Callable, path: str, out_path: str, repeat: int, budget: float):
    """Run `fn` up to `repeat` times, stopping early once `budget` seconds are spent (at least
    one run: the slow cells, e.g. materialising VGG-19's 140 M weights, would otherwise take
    minutes). Returns (last output, list of seconds per run)."""
    times: list[float] = []
    out = None
    while len(times) < repeat and (not times or sum(times) < budget):
        out = None
        gc.collect()  # the previous run's garbage is not collected on this run's clock
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(path, out_path)
        times.append(time.perf_counter() - t0)
    return out, times


def bench_model(
    model: Model,
    tools: list[str],
    *,
    repeat: int = 3,
    budget: float = 4.0,
    workdir: str,
    seed: int = 0,
    batch: int = 1,
) -> dict[str, Result]:
    """Every tool on one model; {"original": Result, tool: Result, ...}."""
    import onnx

    original = onnx.load(model.path)
    n, ops, bn_after = count(original)
    results = {
        "original": Result(
            n,
            ops["BatchNormalization"],
            ops["Dropout"],
            ops=ops,
            bn_after_linear=bn_after,
            mb=original.ByteSize() / 2**20,
        )
    }
    if training_mode(original):
        results[
            "original"
        ].note = (
            "training-mode export: outputs use batch statistics/random masks, any diff expected"
        )
    feeds = random_feeds(model.path, seed=seed, batch=batch)
    reference = ort_run(original, feeds)
    for tool in tools:
        module, fn = TOOLS[tool]
        if not installed(module):
            results[tool] = Result(error="not installed")
            continue
        out_path = os.path.join(workdir, f"{tool}.onnx")
        try:
            optimized, times = time_tool(fn, model.path, out_path, repeat, budget)
            if optimized is None:
                optimized = onnx.load(out_path)
        except Exception as exc:  # a tool failing on a model is a result, not a crash
            results[tool] = Result(error=short_error(exc))
            continue
        res = Result(ms=statistics.median(times) * 1e3, runs=len(times))
        res.nodes, res.ops, res.bn_after_linear = count(optimized)
        res.bn, res.dropout = res.ops["BatchNormalization"], res.ops["Dropout"]
        res.dead_inputs = len(dead_inputs(optimized, feeds))
        res.mb = optimized.ByteSize() / 2**20
        try:
            res.diff = max_diff(reference, ort_run(optimized, feeds))
        except Exception as exc:
            res.run_error = short_error(exc)
        results[tool] = res
    return results


def warm_up(model: Model, tools: list[str], workdir: str) -> None:
    """One untimed run of each tool, so that first-call costs (lazy imports, onnxruntime's
    kernel registry) are not charged to whichever model comes first."""
    for tool in tools:
        module, fn = TOOLS[tool]
        if installed(module):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn(model.path, os.path.join(workdir, f"warm-{tool}.onnx"))
            except Exception:
                pass  # the benchmark proper reports the failure


# ----------------------------------------------------------------------------------------- output
def _cells(results: dict[str, Result], tools: list[str], what: str, repeat: int) -> list[str]:
    out = []
    for t in tools:
        r = results[t]
        if r.error:
            out.append(r.error)
        elif what == "nodes":
            out.append(f"{r.nodes}/{r.bn}/{r.dropout}" + ("*" if r.dead_inputs else ""))
        elif what == "diff":
            out.append(r.run_error or f"{r.diff:.1e}")
        elif what == "mb":
            out.append(_mb(r.mb))
        else:
            out.append(f"{r.ms:.0f}" + ("" if r.runs >= repeat else f" ({r.runs}x)"))
    return out


def tables(
    all_results: dict[str, dict], tools: list[str], repeat: int
) -> list[tuple[str, list[str], list[list[str]]]]:
    """The three tables: (title, header, rows)."""
    header = ["model", "original"] + tools
    out = []
    for what, title in (
        ("nodes", "nodes after / BatchNormalization left / Dropout left"),
        (
            "diff",
            "max |diff| vs the original (onnxruntime, optimizations off, seeded random inputs)",
        ),
        ("ms", "median wall time, ms (file on disk -> optimized model)"),
        (
            "mb",
            "model size, MB (serialized; folding the zoo's ConstantOfShape weights "
            "materialises them)",
        ),
    ):
        rows = []
        for name, res in all_results.items():
            o = res["original"]
            first = {"nodes": f"{o.nodes}/{o.bn}/{o.dropout}", "mb": _mb(o.mb)}.get(what, "")
            rows.append([name, first] + _cells(res, tools, what, repeat))
        out.append((title, header, rows))
    return out


def _mb(mb: float) -> str:
    return f"{mb:.3f}" if mb < 1 else f"{mb:.1f}"


def render(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table as aligned plain text, or as markdown (bold title, right-aligned numbers)."""
    if markdown:

        def row(cells: list[str]) -> str:  # a '|' inside a cell ("max |diff|") would split it
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        lines = [
            f"**{title}**",
            "",
            row(header),
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        ]
        lines += [row(r) for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            str(x).ljust(w) if i == 0 else str(x).rjust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join(
        [title, fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    )


def gaps(all_results: dict[str, dict], tools: list[str]) -> list[str]:
    """Where our columns miss the aims, at most three lines per model and column: BN left after a
    linear op; more nodes than the best peer writing standard ONNX (with the op types that make the
    difference, both ways) and than a peer writing contrib ops; slower than some peers."""
    lines = []
    for name, res in all_results.items():
        for me in (t for t in OURS if t in tools):
            lines += _gaps_of(name, res, me, tools)
    return lines


def _gaps_of(name: str, res: dict, me: str, tools: list[str]) -> list[str]:
    lines: list[str] = []
    ours = res.get(me)
    if ours is None or ours.error == "not installed":
        return lines
    if ours.error:
        return [f"{name}: {me} {ours.error}"]
    if ours.bn_after_linear:
        lines.append(
            f"{name}: {me} leaves {ours.bn_after_linear} BatchNormalization after "
            f"{'/'.join(LINEAR_OPS)}"
        )
    peers = [t for t in tools if t not in OURS and not res[t].error]
    standard = [t for t in peers if not _contrib(res[t])]
    best = min(standard, key=lambda t: res[t].nodes, default=None)
    if best is not None and res[best].nodes < ours.nodes:
        peer = res[best]
        line = (
            f"{name}: {me} {ours.nodes} nodes vs {best} {peer.nodes}: {me} has more "
            f"{_fmt(ours.ops - peer.ops)}"
        )
        if peer.ops - ours.ops:
            line += f"; {best} has more {_fmt(peer.ops - ours.ops)}"
        lines.append(line)
    for t in peers:
        if (
            _contrib(res[t])
            and res[t].nodes < ours.nodes
            and (best is None or res[t].nodes < res[best].nodes)
        ):
            lines.append(
                f"{name}: {t} {res[t].nodes} nodes (vs {me} {ours.nodes}) with contrib ops "
                f"{_fmt(Counter({k: v for k, v in res[t].ops.items() if '.' in k}))}"
            )
    faster = [f"{t} {res[t].ms:.0f}" for t in peers if res[t].ms < ours.ms]
    if faster:
        lines.append(f"{name}: {me} {ours.ms:.0f} ms, slower than " + ", ".join(faster) + " ms")
    return lines


def _contrib(r: Result) -> bool:
    """Does the output use ops outside the standard ONNX domain (e.g. com.microsoft.FusedConv)?"""
    return any("." in op for op in r.ops)


def _fmt(c: Counter) -> str:
    return ", ".join(f"{op} +{k}" for op, k in c.most_common())


def summary(all_results: dict[str, dict], tools: list[str]) -> list[str]:
    """Per column of ours: on how many models it has no more nodes than every peer (also counting
    only peers whose output is standard ONNX, since graphnet writes no contrib ops), and is
    fastest."""
    out = []
    for me in (t for t in OURS if t in tools):
        fewest = fewest_std = fastest = total = 0
        for res in all_results.values():
            ours = res.get(me)
            if ours is None or ours.error:
                continue
            total += 1
            peers = [res[t] for t in tools if t not in OURS and not res[t].error]
            fewest += all(ours.nodes <= p.nodes for p in peers)
            fewest_std += all(ours.nodes <= p.nodes for p in peers if not _contrib(p))
            fastest += all(ours.ms <= p.ms for p in peers)
        out.append(
            f"{me} has no more nodes than any peer on {fewest}/{total} models "
            f"({fewest_std}/{total} against peers whose output is standard ONNX), is fastest on "
            f"{fastest}/{total}"
        )
    return out


def training_mode(model) -> bool:
    """Does the model compute in training mode (BN with training_mode=1, Dropout with a
    training_mode input)? Then its outputs use batch statistics / random masks, and an
    inference optimizer is expected to change them."""
    for n in model.graph.node:
        if n.op_type == "BatchNormalization" and any(
            a.name == "training_mode" and a.i for a in n.attribute
        ):
            return True
        if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            return True
    return False


LEGEND = (
    "nodes cell: nodes/BN/Dropout as written (ops of other domains, e.g. onnxruntime's "
    "com.microsoft FusedConv, count as one node each); * = the written model declares graph inputs "
    "that no node reads (fed zeros to run it); time cell (kx) = median of only k runs, the "
    "--budget was spent"
)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the tables to stdout, progress to stderr."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", help="comma-separated substrings of model names (e.g. 'zoo/,template')"
    )
    ap.add_argument("--tools", help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per tool and model; the median is shown (default 3)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=4.0,
        help="stop repeating a cell once this many seconds are spent on it (default 4)",
    )
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for README.md)")
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the random inputs and of the template"
    )
    ap.add_argument(
        "--batch", type=int, default=1, help="size of dynamic dims in the random inputs"
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    tools = (
        list(TOOLS) if not args.tools else [t.strip() for t in args.tools.split(",") if t.strip()]
    )
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tools {unknown}; known: {list(TOOLS)}")
    wanted = (
        [m.strip().lower() for m in args.models.split(",") if m.strip()] if args.models else None
    )

    versions = {t: _version(TOOLS[t][0]) for t in tools}
    print("tools: " + ", ".join(f"{t} {v}" for t, v in versions.items()), file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gn-bench-") as workdir:
        everything = collect_models(workdir, seed=args.seed)
        models = [
            m for m in everything if wanted is None or any(w in m.name.lower() for w in wanted)
        ]
        if not models:
            ap.error(f"no model matches --models; models: {', '.join(m.name for m in everything)}")
        warm_up(min(everything, key=lambda m: os.path.getsize(m.path)), tools, workdir)
        all_results = {}
        for m in models:
            print(f"  {m.name} ...", file=sys.stderr, flush=True)
            all_results[m.name] = bench_model(
                m,
                tools,
                repeat=args.repeat,
                budget=args.budget,
                workdir=workdir,
                seed=args.seed,
                batch=args.batch,
            )
    print(
        "\n\n".join(
            render(*t, markdown=args.markdown) for t in tables(all_results, tools, args.repeat)
        )
    )
    bullet = "- " if args.markdown else "  "
    print()
    print(f"{bullet.strip() + ' ' if args.markdown else ''}{LEGEND}")
    for line in summary(all_results, tools):
        print(f"{bullet.strip() + ' ' if args.markdown else ''}{line}")
    for name, res in all_results.items():
        if res["original"].note:
            print(f"{bullet.strip() + ' ' if args.markdown else ''}{name}: {res['original'].note}")
    print()
    print("**Where graphnet loses**" if args.markdown else "where graphnet loses:")
    print("\n".join(bullet + g for g in gaps(all_results, tools) or ["nowhere"]))
    print(
        f"\n{args.repeat} runs per cell (median), budget {args.budget:g} s per cell; "
        + ", ".join(f"{t} {v}" for t, v in versions.items())
        + f"; total {time.perf_counter() - started:.0f} s"
    )
    return 0


def _version(module: str) -> str:
    if not installed(module):
        return "not installed"
    if module == "graphnet":
        import graphnet

        return graphnet.__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
