"""graphnet as an ONNX backend (`onnx.backend.base.Backend`), the interface `onnxruntime.backend`
offers and ONNX's conformance suite (`onnx.backend.test.BackendTest`) drives:

    rep = graphnet.backend.prepare(model)          # import once (graphnet.onnx_io.importer)
    outputs = rep.run([x])                         # run many times (runtime.Session)
    outputs = graphnet.backend.run_model(model, {"x": x})
    outputs = graphnet.backend.run_node(node, [x], opset_version=13)

Inputs are a list (in the order of the model's non-initializer graph inputs), a dict by name, or a
single array when the model has one input. Outputs come back as a namedtuple-like tuple in the
order of the model's graph outputs (also indexable by output name).

The mode rule. ONNX bakes the train/inference choice into some nodes; graphnet's IR does not (the
mode is chosen when a graph runs, DESIGN.md "IR choices"), so the backend chooses it from the model:
the graph runs in train mode iff some node asks for training, i.e.
- a BatchNormalization with `training_mode=1` (opset 14+) or, at opsets 7-13, with
  running-statistics outputs (their presence was what asked for training then), or
- a Dropout (opset 12+) whose `training_mode` input is a constant True (initializer or Constant);
otherwise it runs in inference mode. The mode is the whole graph's: in a model that also has
Dropouts without a training_mode (inference ones in ONNX), those drop too, as in graphnet's own
train mode. A Dropout whose training_mode is computed at run time follows that value whatever the
mode. `prepare(model, mode="train" | "inference")` overrides the rule; `seed=` seeds the generator
that train-mode Dropout draws from (its masks are graphnet's own: they cannot equal another
runtime's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from graphnet.errors import InputError
from graphnet.ir import Graph

__all__ = [
    "GraphnetBackend",
    "GraphnetRep",
    "prepare",
    "run_model",
    "run_node",
    "supports_device",
    "model_mode",
]


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of `name` if an initializer or a `Constant` node (tensor `value`) of the main
    graph holds it, else None."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and list(n.output) == [name]:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def model_mode(model: onnx.ModelProto) -> str:
    """ "train" if a node of `model` asks for training (see the module docstring), else
    "inference"."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "BatchNormalization":
            if any(a.name == "training_mode" and a.i for a in n.attribute):
                return "train"
            if 7 <= opset < 14 and any(n.output[1:]):  # then the statistics outputs meant training
                return "train"
        elif n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            # A training_mode computed at run time decides for itself (the IR Dropout reads it).
            flag = _constant(model, n.input[2])
            if flag is not None and flag.size == 1 and bool(flag.reshape(())):
                return "train"
    return "inference"


class GraphnetRep(BackendRep):
    """A model imported into the IR and planned once (`runtime.Session`), ready to run many
    times."""

    def __init__(self, graph: Graph, *, mode: str, seed: int | None = None) -> None:
        from graphnet import runtime

        self.graph = graph
        self.mode = mode
        self.session = runtime.Session(graph)
        if seed is not None:
            self.session.seed(seed)

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        names = self.graph.inputs
        if isinstance(inputs, Mapping):
            return {k: np.asarray(v) for k, v in inputs.items()}
        if isinstance(inputs, np.ndarray) or np.isscalar(inputs):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(names):
            raise InputError(
                f"graph '{self.graph.name}' takes {len(names)} input(s) {list(names)}, "
                f"got {len(inputs)}"
            )
        return {name: np.asarray(arr) for name, arr in zip(names, inputs, strict=True)}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on `inputs` (list in graph-input order, dict by name, or one array); returns the
        outputs in graph-output order as a namedtuple-like tuple."""
        outs = self.session.run(
            self._feeds(inputs), mode=kwargs.get("mode", self.mode), seed=kwargs.get("seed")
        )
        names = list(self.graph.outputs)
        values = [np.asarray(outs[n]) for n in names]
        # namedtupledict accepts any output name (it maps names that are not identifiers).
        return namedtupledict("Outputs", names)(*values)


class GraphnetBackend(Backend):
    """ONNX backend executing through graphnet's importer and NumPy runtime (CPU only)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> GraphnetRep:
        """Check and import `model`; `mode` ("train" | "inference", default: the module's rule)
        and `seed` (train-mode Dropout) may be given."""
        if not cls.supports_device(device):
            raise InputError(f"graphnet runs on CPU only, not on {device!r}")
        super().prepare(model, device, **kwargs)  # onnx.checker.check_model
        return cls._rep(model, **kwargs)

    @staticmethod
    def _rep(
        model: onnx.ModelProto, *, mode: str | None = None, seed: int | None = None, **_: Any
    ) -> GraphnetRep:
        from graphnet.onnx_io.importer import from_onnx

        return GraphnetRep(from_onnx(model), mode=mode or model_mode(model), seed=seed)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        """Prepare and run once."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run one ONNX node: a one-node model is built around it (graph inputs typed from the
        given arrays, opset `opset_version` or onnx's newest) and run. The node is checked by
        onnx's checker; the model around it is not (its outputs are untyped unless `outputs_info`
        types them)."""
        from onnx import helper

        if not cls.supports_device(device):
            raise InputError(f"graphnet runs on CPU only, not on {device!r}")
        super().run_node(node, inputs, device, outputs_info, **kwargs)  # onnx.checker.check_node
        opset = int(kwargs.pop("opset_version", onnx.defs.onnx_opset_version()))
        names = [i for i in node.input if i]
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            feeds = {name: np.asarray(v) for name, v in zip(names, inputs, strict=True)}
        graph_inputs = [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ]
        graph_outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        if outputs_info is not None:
            graph_outputs = [
                helper.make_tensor_value_info(
                    o, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape
                )
                for o, (dt, shape) in zip([o for o in node.output if o], outputs_info, strict=True)
            ]
        graph = helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return cls._rep(model, **kwargs).run(feeds)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only the CPU: graphnet's runtime is NumPy."""
        try:
            return Device(device).type == DeviceType.CPU
        except Exception:  # an unparsable device string is not one we support
            return False


prepare = GraphnetBackend.prepare
run_model = GraphnetBackend.run_model
run_node = GraphnetBackend.run_node
supports_device = GraphnetBackend.supports_device
