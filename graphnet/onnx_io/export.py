"""IR -> `onnx.ModelProto`.

Each IR node is handed to its export rule (`registry.export_rule`), which emits one or more ONNX
nodes through an `ExportContext`. Parameters become initializers. A symbolic dim ("N", "4*N") is
written as a dim_param, an unknown one (None) as a dim with neither value nor name: a declared
shape is a contract onnxruntime relies on, so only what holds for every input is written.
Inference mode writes the inference graph; train mode writes
BatchNormalization with `training_mode=1` (its new running statistics become extra graph outputs)
and Dropout with `training_mode=True`.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from graphnet import dims, ops
from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Node
from graphnet.onnx_io import DEFAULT_OPSET
from graphnet.onnx_io.registry import get_export_rule

__all__ = [
    "ExportContext",
    "to_onnx",
    "save",
    "write_model",
    "atomic_write",
    "file_mode",
    "EXTERNAL_DATA_THRESHOLD",
]

MIN_OPSET = 17  # LayerNormalization appears in opset 17

EXTERNAL_DATA_THRESHOLD = 1 << 30
"""Initializer bytes above which a model is written with its tensors in a side file: protobuf
cannot serialize a message of 2 GiB or more."""


class ExportContext:
    """What an export rule writes through: ONNX nodes, constant initializers, fresh names."""

    def __init__(self, graph: Graph, *, mode: str, opset: int) -> None:
        from onnx import numpy_helper

        self._numpy_helper = numpy_helper
        self.graph = graph
        self.mode = mode
        self.training = mode == "train"
        self.opset = opset
        self.nodes: list = []
        self.initializers: dict[str, Any] = {}
        self.extra_outputs: list = []  # (name, shape, dtype)
        self._taken: set[str] = set(graph.values) | {n.name for n in graph.nodes}
        # Train mode: a parameter that a node updates (BatchNormalization's running statistics,
        # the op table's `state`) is read by every later node as its newest update, as the
        # runtime does: a BN applied twice updates its statistics twice, one after the other.
        self._latest: dict[str, str] = {}  # parameter -> value holding its newest update
        self._last_writer: dict[str, str] = {}  # parameter -> name of the last node updating it
        if self.training:
            for n in graph.nodes:
                for in_k in ops.get(n.op).state.values():
                    if in_k < len(n.inputs) and n.inputs[in_k] in graph.params:
                        self._last_writer[n.inputs[in_k]] = n.name

    def fresh(self, hint: str) -> str:
        """A name unused by any value or node of the graph or of the export so far."""
        name, k = hint, 1
        while name in self._taken:
            name = f"{hint}_{k}"
            k += 1
        self._taken.add(name)
        return name

    def emit(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        *,
        name: str,
        **attrs: Any,
    ) -> list[str]:
        """Append an ONNX node; attributes set to None are left out. In train mode an input
        naming a parameter that an earlier node updated reads that update (`updated`)."""
        from onnx import helper

        attrs = {k: _onnx_attr(v) for k, v in attrs.items() if v is not None}
        ins = [self._latest.get(i, i) for i in inputs] if self._latest else list(inputs)
        self.nodes.append(helper.make_node(op_type, ins, list(outputs), name=name, **attrs))
        return list(outputs)

    def updated(self, param: str, value: str) -> None:
        """Train mode: `value` holds the new value of parameter `param` from here on."""
        self._latest[param] = value

    def last_update(self, node: Node, param: str) -> bool:
        """Train mode: is `node` the last node that updates parameter `param`?"""
        return self._last_writer.get(param) == node.name

    def const(self, array: np.ndarray, hint: str) -> str:
        """Add a constant initializer; returns its name."""
        name = self.fresh(hint)
        self.initializers[name] = self._numpy_helper.from_array(np.asarray(array), name)
        return name

    def add_output(self, name: str, shape: Sequence | None, dtype: str) -> None:
        """Declare an extra graph output (train mode: updated running statistics)."""
        self.extra_outputs.append((name, shape, dtype))

    def value(self, name: str):
        return self.graph.values[name]


def _onnx_attr(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer, bool)):
        return int(v)
    return v


def _value_info(name: str, shape: Sequence | None, dtype: str):
    """A graph input's or output's declared type: static dims as values, symbolic ones as
    dim_params (their expression: a contract that holds for every input), unknown ones as
    dims with neither (graphnet.dims)."""
    from onnx import helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if shape is None:
        return helper.make_tensor_value_info(name, elem, None)
    vi = helper.make_tensor_value_info(name, elem, [1] * len(shape))
    for d, dim in zip(shape, vi.type.tensor_type.shape.dim, strict=True):
        dim.Clear()
        if dims.is_static(d):
            dim.dim_value = int(d)
        elif dims.is_symbolic(d):
            dim.dim_param = str(d)
    return vi


def to_onnx(
    graph: Graph,
    *,
    mode: str = "inference",
    opset: int | None = None,
    producer: str = "graphnet",
    doc: str = "",
):
    """Export `graph` to an `onnx.ModelProto` for the given mode ("inference" | "train")."""
    from onnx import helper

    from graphnet import __version__

    if mode not in ("inference", "train"):
        raise GraphNetError(f"export mode must be 'inference' or 'train', got {mode!r}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise GraphNetError(f"graphnet exports opset {MIN_OPSET} or newer, got opset {opset}")
    newest = _newest_opset()
    if opset > newest:
        raise GraphNetError(
            f"opset {opset} is newer than the installed onnx package knows (its newest is {newest})"
        )
    graph.verify()
    ctx = ExportContext(graph, mode=mode, opset=opset)
    for name, arr in graph.params.items():
        ctx.initializers[name] = ctx._numpy_helper.from_array(arr, name)
    for node in graph.nodes:
        attrs = ops.attrs_of(node, [graph.values.get(i) if i else None for i in node.inputs])
        get_export_rule(node.op, node.name)(ctx, node, attrs)
    inputs = [_value_info(i, graph.values[i].shape, graph.values[i].dtype) for i in graph.inputs]
    outputs = [_value_info(o, graph.values[o].shape, graph.values[o].dtype) for o in graph.outputs]
    outputs += [_value_info(n, s, d) for n, s, d in ctx.extra_outputs]
    g = helper.make_graph(
        ctx.nodes,
        graph.name,
        inputs,
        outputs,
        initializer=list(ctx.initializers.values()),
        doc_string=doc,
    )
    opsets = [helper.make_opsetid("", opset)]
    for domain, version in graph.meta.get("opset_import", []):
        if domain not in ("", "ai.onnx"):  # opaque nodes of other domains keep their opsets
            opsets.append(helper.make_opsetid(domain, version))
    model = helper.make_model(
        g,
        opset_imports=opsets,
        producer_name=producer,
        producer_version=__version__,
        # A custom domain's opset (an opaque node's) is unknown to onnx: it sets no minimum.
        ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
    )
    _fill_unknown_output_shapes(model)
    return model


def _newest_opset() -> int:
    from onnx import defs

    return int(defs.onnx_opset_version())


def _fill_unknown_output_shapes(model) -> None:
    """The checker wants a shape on every graph output; where graphnet does not know one (an
    opaque node's output), take onnx's inferred one."""
    import onnx

    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return
    known = {o.name: o for o in inferred.graph.output}
    for o in missing:
        if o.name in known and known[o.name].type.tensor_type.HasField("shape"):
            o.type.CopyFrom(known[o.name].type)


def file_mode(path: str | os.PathLike) -> int:
    """The permission bits a file written to `path` gets: those of the file it replaces, else
    what any tool creating a file gets (0666 minus the umask). `mkstemp` alone would give 0600."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    mask = _umask()
    return 0o666 & ~mask


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere set-and-restore is the only way.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename: readers
    never see a half-written file, and a failure (or Ctrl-C) leaves the old file as it was. The
    file gets the permissions of `file_mode`; an error names `path`, never the temporary file."""
    path = os.fspath(path)
    # The folder as the system resolves it (`link/../out` goes through the link's target), so
    # that the rename stays within one folder.
    folder = os.path.dirname(path) or "."
    mode = file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".graphnet-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray)):
                fh.write(data)
            else:
                for chunk in data:
                    fh.write(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def save(
    graph: Graph,
    path: str | os.PathLike,
    *,
    mode: str = "inference",
    opset: int | None = None,
    external_data: bool | None = None,
    **kw: Any,
) -> None:
    """Export `graph` and write it to `path` atomically (see `write_model` for external data)."""
    write_model(to_onnx(graph, mode=mode, opset=opset, **kw), path, external_data=external_data)


def write_model(model, path: str | os.PathLike, *, external_data: bool | None = None) -> int:
    """Write an ONNX model atomically; returns the bytes written. With `external_data` (by default:
    when the initializers exceed `EXTERNAL_DATA_THRESHOLD`) the tensors go to `<name>.data` beside
    the model, as `onnx.load` and onnxruntime expect; both files appear only once complete."""
    import onnx

    path = os.fspath(path)
    if external_data is None:
        external_data = (
            sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
        )
    if not external_data:
        data = model.SerializeToString()
        atomic_write(path, data)
        return len(data)
    folder = os.path.dirname(path) or "."  # as in atomic_write
    name = os.path.basename(path)
    mode = file_mode(path)
    try:
        tmpdir = tempfile.mkdtemp(prefix=".graphnet-", dir=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        tmp_model = os.path.join(tmpdir, name)
        onnx.save_model(
            copy,
            tmp_model,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{name}.data",
            size_threshold=1024,
        )
        written = 0
        for f in sorted(os.listdir(tmpdir), key=lambda f: f == name):  # the model file last
            written += os.path.getsize(os.path.join(tmpdir, f))
            os.chmod(os.path.join(tmpdir, f), mode)
            os.replace(os.path.join(tmpdir, f), os.path.join(folder, f))
        return written
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        for f in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)


def node_attrs(node: Node, attrs: dict, names: Iterable[str]) -> dict:
    """The subset `names` of resolved attributes, for rules that pass attributes straight
    through."""
    return {k: attrs[k] for k in names if k in attrs}
