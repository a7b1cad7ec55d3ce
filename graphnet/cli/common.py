"""What every `graphnet` command shares: `CliError`, the exit codes, the whole-model tolerances,
loading models, running onnxruntime, the file promises and the progress bar.

The file promises (README, "The optimizer and the CLI"): an input is never modified, every output
is checked before any work is done (`check_output`), written atomically with the permissions any
other tool gives a new file, and "-" as a report file means standard output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from graphnet.runtime.compare import WHOLE_MODEL_ATOL, WHOLE_MODEL_RTOL
from graphnet.summary import count

__all__ = [
    "EXIT_OK",
    "EXIT_DIFF",
    "EXIT_USAGE",
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "EXIT_CODES",
    "CHECK_RTOL",
    "CHECK_ATOL",
    "CliError",
    "load_graph",
    "load_model",
    "ort_outputs",
    "check_output",
    "check_distinct",
    "check_inputs_exist",
    "input_paths",
    "read_inputs",
    "parse_passes",
    "onnx_softmax_outputs",
    "declares_training",
    "declared_mode",
    "describe_mode",
    "write_text",
    "count",
    "Steps",
    "steps",
]

EXIT_OK = 0
EXIT_DIFF = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success (check: the runtimes agree)",
    EXIT_DIFF: "a check or a verification found a difference (nothing is written)",
    EXIT_USAGE: "bad usage or bad input: a missing file, an invalid model, an error in your code",
    EXIT_BUG: "an error inside graphnet (a bug: please report it with the --debug traceback)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); no partial file is left",
}

CHECK_RTOL, CHECK_ATOL = WHOLE_MODEL_RTOL, WHOLE_MODEL_ATOL


class CliError(Exception):
    """A user-facing failure: printed as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------- inputs
def _not_a_file(path: str) -> str | None:
    """Why `path` cannot be read as an input file (None: it can be tried)."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return "is a folder, not a file"
    return "is not a regular file" if os.path.exists(path) else "no such file"


def check_inputs_exist(paths: Iterable[str]) -> None:
    for path in paths:
        what = _not_a_file(path)
        if what:
            raise CliError(f"{path}: {what}")


def input_paths(items: Sequence[str]) -> dict[str, str]:
    """`-i NAME=PATH.npy` options -> {input name: path}, each file checked to exist."""
    paths: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CliError(f"-i expects NAME=PATH.npy, got {item!r}")
        if name in paths:
            raise CliError(f"input '{name}' is given twice")
        paths[name] = path
    for name, path in paths.items():
        what = _not_a_file(path)
        if what:
            raise CliError(f"input '{name}': {path}: {what}")
    return paths


def read_inputs(paths: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The arrays of `input_paths`' files (one array per .npy; never unpickled)."""
    feeds = {}
    for name, path in paths.items():
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise CliError(f"input '{name}': {path} is not a readable .npy file ({exc})") from None
        if not isinstance(feeds[name], np.ndarray):
            raise CliError(f"input '{name}': {path} holds several arrays (.npz); give one .npy")
    return feeds


def parse_passes(text: str | None) -> str | list[str]:
    """`--passes a,b` -> pass names, pipeline names expanded (None or "": the `inference`
    pipeline); an unknown name is a CliError with the closest known names ("did you mean")."""
    import difflib

    from graphnet.passes.base import all_passes
    from graphnet.passes.manager import PIPELINES

    if not text:
        return "inference"
    known = all_passes()
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in PIPELINES:
            names.extend(PIPELINES[part])
        elif part in known:
            names.append(part)
        else:
            close = difflib.get_close_matches(part, [*known, *PIPELINES], n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise CliError(
                f"no pass named '{part}'{hint} (passes: {', '.join(sorted(known))}; pipelines: "
                f"{', '.join(PIPELINES)}; see --list-passes)"
            )
    if not names:
        raise CliError(f"--passes {text!r} names no pass")
    return names


def load_model(path: str):
    """The `onnx.ModelProto` in `path`, or a one-line error."""
    import onnx

    check_inputs_exist([path])
    try:
        return onnx.load(path)
    except Exception as exc:
        raise CliError(f"{path} is not a readable ONNX model: {exc}") from None


def load_graph(path: str, model: Any = None):
    """The graph of the ONNX model in `path` (`model`: the already-read ModelProto)."""
    from graphnet.onnx_io.importer import load

    if model is None:
        check_inputs_exist([path])
        return load(path)
    return load(model)


def ort_outputs(
    model: Any, feeds: Mapping[str, np.ndarray], extra: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """onnxruntime's outputs of `model` (a ModelProto) on `feeds` (inputs it does not take are
    ignored), plus the intermediate values `extra` that exist in the model."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    produced = {o for n in model.graph.node for o in n.output}
    declared = {o.name for o in model.graph.output}
    extra = [e for e in dict.fromkeys(extra) if e in produced and e not in declared]
    if extra:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.graph.output.extend(helper.make_empty_tensor_value_info(e) for e in extra)
        model = copy
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        wanted = {i.name for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:  # onnxruntime's own limits (an op or dtype it has no kernel for)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(
            f"onnxruntime cannot run the model, so nothing compares with it: {first}"
        ) from None
    return dict(zip(names, outs, strict=True))


def onnx_softmax_outputs(model: Any) -> dict[str, Any]:
    """{graph output: `SoftmaxOutput`} for the outputs of an ONNX model that a Softmax or
    LogSoftmax node writes (see `graphnet.runtime.compare`)."""
    from graphnet.runtime.compare import SoftmaxOutput

    outputs = {o.name for o in model.graph.output}
    return {
        n.output[0]: SoftmaxOutput(n.input[0], n.op_type == "LogSoftmax")
        for n in model.graph.node
        if n.op_type in ("Softmax", "LogSoftmax") and n.output and n.output[0] in outputs
    }


def declares_training(model: Any) -> bool:
    """Does the ONNX model run BatchNormalization or Dropout in training mode (PyTorch's TRAINING
    export, graphnet's train-mode export)? Its declared mode is then "train". As the backend's
    `model_mode`, and also when a Dropout's training_mode is computed at run time (it may be
    true: its masks are random)."""
    from onnx import helper, numpy_helper

    from graphnet.backend import model_mode
    from graphnet.onnx_io.decode import constant_value

    if model_mode(model) == "train":  # includes opset 7-13 BN with statistics outputs
        return True

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update(
        (n.output[0], constant_value(n))
        for n in model.graph.node
        if n.op_type == "Constant" and n.output
    )
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            if any(
                a.name == "training_mode" and helper.get_attribute_value(a) for a in n.attribute
            ):
                return True
        if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            flag = consts.get(n.input[2])
            if flag is None or bool(np.asarray(flag).reshape(-1)[0]):
                return True
    return False


def describe_mode(mode: str, declared: str, chosen: bool) -> str:
    """The "mode: ..." line of `check` and `run`: the mode used and where it comes from."""
    if chosen and mode != declared:
        article = "an" if declared == "inference" else "a"
        return f"mode: {mode} (--mode; the model itself is {article} {declared}-mode export)"
    if declared == "train":
        return f"mode: {mode} (the model has training-mode BatchNormalization or Dropout)"
    return f"mode: {mode}"


def declared_mode(model: Any) -> str:
    """ "train" when the model declares training-mode nodes (`declares_training`), else
    "inference": the mode `check` and `run` use unless `--mode` says otherwise."""
    return "train" if declares_training(model) else "inference"


# ---------------------------------------------------------------------------------- outputs
def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str, *, inputs: Sequence[str] = (), flag: str = "-o") -> None:
    """Refuse, before any work, an output that would overwrite an input (the same file by
    `os.path.samefile`: other spellings, hard and symbolic links included), that names a
    folder, or whose folder does not exist or cannot be written."""
    for i in inputs:
        if os.path.exists(path) and _same(path, i):
            raise CliError(f"{flag} {path} is the input {i}: refusing to overwrite an input")
    if os.path.isdir(path):
        raise CliError(f"{flag} {path} is a folder; give a file name")
    # The folder as written, not normalized: the system resolves `x/../out` through x, which
    # must then exist (abspath would drop it).
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise CliError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: cannot write to folder {folder}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise CliError(f"{flag} {path} exists and is not a regular file")


def check_distinct(paths: Mapping[str, str | None]) -> None:
    """Refuse two output options that name the same file ({flag: path}; "-" and None skipped)."""
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if not path or path == "-":
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise CliError(f"{seen[key]} and {flag} name the same file {path}")
        seen[key] = flag


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically, or to standard output when `path` is "-"."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from graphnet.onnx_io.export import atomic_write

    atomic_write(path, text.encode())


# --------------------------------------------------------------------------------- progress
class Steps:
    """A progress bar over named steps, on stderr and only when stderr is a terminal (so logs,
    pipes and tests never see it). `steps("importing")` starts the next step."""

    def __init__(self, total: int, *, enabled: bool = True, desc: str = "") -> None:
        self._bar = None
        if enabled and total > 0 and _stderr_is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {n_fmt}/{total_fmt} {bar} {elapsed}  {postfix}",
            )
        self._started = False

    def __call__(self, what: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(what, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def steps(total: int, *, enabled: bool = True, desc: str = "") -> Iterator[Steps]:
    """`with steps(3, desc="check") as step: step("importing"); ...`: see `Steps`."""
    bar = Steps(total, enabled=enabled, desc=desc)
    try:
        yield bar
    finally:
        bar.close()
