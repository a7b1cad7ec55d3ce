"""Reverse-mode differentiation over the IR.

`Backprop(graph)` plans a graph once (order, resolved attributes, kernels, backward rules), then:

- `forward(feeds, training=True, rng=...)` runs the plain kernels in graph order and records
  every value and everything each kernel returned (a `Tape`): the Dropout masks it drew, the
  values BatchNorm normalized. In train mode it is the runtime's train mode exactly (batch
  statistics, running averages updated in the parameters, masks drawn from `rng`).
- `backward(tape, seeds, wrt)` walks the nodes in reverse topological order from the seed
  gradients (e.g. d loss / d logits), calls each node's rule once, and sums the gradients of a
  value read by several nodes (a residual input, a shared weight). Only the nodes between `wrt`
  and the seeds run, and a rule that can is told which of its inputs need a gradient.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.errors import GraphNetError, KernelError, ShapeError, UnsupportedOpError
from graphnet.ir import Graph, Node, format_shape
from graphnet.runtime.fast.threads import blas_single_threaded
from graphnet.runtime.gradients import Gradient, get_gradient, has_gradient
from graphnet.runtime.kernels import Kernel, get_kernel

__all__ = ["Backprop", "Tape", "trainable_params"]

_FLOAT_KINDS = ("f",)


def _is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind in _FLOAT_KINDS


@dataclass
class _Step:
    node: Node
    kernel: Kernel
    attrs: dict[str, Any]
    rule: Gradient | None
    state: dict[int, str]  # train mode: kernel output index -> parameter it replaces
    extra: dict[str, Any]
    slots: list[int] = field(default_factory=list)  # inputs that can carry a gradient


@dataclass
class Tape:
    """What a forward run recorded: every value by name (inputs and parameters included), what
    each node's kernel returned, and the mode it ran in."""

    values: dict[str, np.ndarray]
    results: list[tuple] = field(default_factory=list)
    training: bool = True
    records: dict[str, Any] = field(default_factory=dict)  # node -> what a fast step kept


def _differentiable_slots(node: Node) -> list[int]:
    """Input positions of `node` that can carry a gradient (by its rule's `nondiff`)."""
    if not has_gradient(node.op):
        return []
    nondiff = get_gradient(node.op).nondiff
    return [k for k, i in enumerate(node.inputs) if i and k not in nondiff]


def trainable_params(graph: Graph) -> list[str]:
    """The float parameters some node reads at a differentiable input: weights, biases, BN's
    scale and shift, PReLU slopes; not BatchNorm's running statistics, shapes, Pow exponents or
    Clip bounds. In graph order of first use."""
    names: dict[str, None] = {}
    for n in graph.nodes:
        for k in _differentiable_slots(n):
            i = n.inputs[k]
            if i in graph.params and _is_float(graph.params[i].dtype):
                names.setdefault(i)
    return list(names)


class Backprop:
    """A graph planned for training: a recording forward and its reverse-mode backward."""

    def __init__(self, graph: Graph) -> None:
        graph.verify()
        self.graph = graph
        self._steps: list[_Step] = []
        for n in graph.nodes:
            if n.op == "Opaque":
                raise UnsupportedOpError(
                    f"no kernel for op '{n.attrs.get('op_type')}' at node '{n.name}'"
                )
            spec = ops.get(n.op)
            kern = get_kernel(n.op, n.name)
            attrs = ops.attrs_of(n, [graph.values.get(i) if i else None for i in n.inputs])
            state = {
                out_k: n.inputs[in_k]
                for out_k, in_k in spec.state.items()
                if in_k < len(n.inputs) and n.inputs[in_k] in graph.params
            }
            extra = (
                {"num_outputs": len(n.outputs)}
                if "num_outputs" in inspect.signature(kern.fn).parameters
                else {}
            )
            rule = get_gradient(n.op) if has_gradient(n.op) else None
            slots = _differentiable_slots(n)
            self._steps.append(_Step(n, kern, attrs, rule, state, extra, slots))
        self._requires: dict[frozenset[str], dict[str, bool]] = {}

    # ---------------------------------------------------------------------------- forward
    def forward(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        training: bool = True,
        rng: np.random.Generator | None = None,
        params: dict[str, np.ndarray] | None = None,
    ) -> Tape:
        """Run every node with the plain kernels and record all values. `params` replaces the
        graph's parameters (e.g. float64 copies for a gradient check); BatchNorm's new running
        statistics are written back into it (train mode), or into the graph's parameters."""
        g = self.graph
        missing = [i for i in g.inputs if i not in feeds]
        if missing:
            raise GraphNetError(f"graph '{g.name}': missing input(s) {missing}")
        rng = rng if rng is not None else np.random.default_rng()
        source = g.params if params is None else params
        env: dict[str, np.ndarray] = {i: np.asarray(feeds[i]) for i in g.inputs}
        tape = Tape(env, [], training)
        for step in self._steps:
            n = step.node
            args: list[np.ndarray | None] = []
            for i in n.inputs:
                if not i:
                    args.append(None)
                elif i in env:
                    args.append(env[i])
                else:
                    env[i] = source[i]
                    args.append(env[i])
            kwargs = dict(step.attrs, **step.extra)
            if step.kernel.context:
                kwargs["training"] = training
                kwargs["rng"] = rng
            try:
                result = step.kernel.fn(*args, **kwargs)
            except GraphNetError as exc:
                raise type(exc)(f"while executing {_describe(n, args)}: {exc}") from exc
            except Exception as exc:
                raise KernelError(
                    f"while executing {_describe(n, args)}: {type(exc).__name__}: {exc}"
                ) from exc
            outs = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            tape.results.append(outs)
            for name, arr in zip(n.outputs, outs, strict=False):
                env[name] = arr
            if training:
                for out_k, pname in step.state.items():
                    new = outs[out_k].astype(source[pname].dtype, copy=False)
                    if params is None:
                        g.set_param(pname, new)
                    else:
                        params[pname] = new
        return tape

    # --------------------------------------------------------------------------- backward
    def _requires_grad(self, wrt: frozenset[str]) -> dict[str, bool]:
        """Value name -> whether it depends on a value in `wrt` through differentiable
        inputs (and is a float, so that a gradient can flow through it)."""
        if wrt in self._requires:
            return self._requires[wrt]
        req = {name: True for name in wrt}
        for step in self._steps:
            n = step.node
            if any(req.get(n.inputs[k], False) for k in step.slots):
                for o in n.outputs:
                    v = self.graph.values.get(o)
                    req[o] = v is None or _is_float(v.dtype)
        self._requires[wrt] = req
        return req

    def backward(
        self, tape: Tape, seeds: Mapping[str, np.ndarray], wrt: Iterable[str]
    ) -> dict[str, np.ndarray]:
        """d(loss)/d(value) for each value in `wrt` (parameters or graph inputs), given
        `seeds` = {value: d(loss)/d(value)} for the values the loss reads. A value in `wrt` the
        loss does not depend on gets zeros."""
        wrt = list(wrt)
        unknown = [w for w in wrt if w not in tape.values and w not in self.graph.params]
        if unknown:
            raise GraphNetError(f"cannot differentiate with respect to unknown value(s) {unknown}")
        # BLAS on one thread: the rules' products are small, and OpenBLAS's own threads spin and
        # wait at the end of every call (a 64x256 @ 256x64 product measured 30x slower with two
        # threads on a busy 2-core machine; see runtime/fast/threads.py).
        with blas_single_threaded():
            grads = self._walk(tape, seeds, wrt)
        out = {}
        for w in wrt:
            if w in grads:
                out[w] = grads[w]
            else:
                ref = tape.values[w] if w in tape.values else self.graph.params[w]
                out[w] = np.zeros_like(ref)
        return out

    def _walk(
        self, tape: Tape, seeds: Mapping[str, np.ndarray], wrt: list[str]
    ) -> dict[str, np.ndarray]:
        """The gradients of every value between `wrt` and the seeds, node by node in reverse."""
        req = self._requires_grad(frozenset(wrt))
        grads: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in seeds.items()}
        values = tape.values
        wanted = set(wrt)
        for k in range(len(self._steps) - 1, -1, -1):
            step = self._steps[k]
            n = step.node
            inputs = n.inputs
            # (one flag per input: the slots that carry a gradient and lead to `wrt`)
            needs = [False] * len(inputs)
            for s in step.slots:
                needs[s] = req.get(inputs[s], False)
            if not any(needs):
                continue
            outputs = n.outputs
            dy = grads.get(outputs[0])
            if len(outputs) > 1:
                extra = [o for o in outputs[1:] if o in grads]
                if extra:
                    raise UnsupportedOpError(
                        f"node '{n.name}' ({n.op}): the loss depends on its output(s) {extra}; "
                        "only the gradient of its first output is defined"
                    )
            if dy is None:
                continue
            assert step.rule is not None  # slots is empty for ops without a rule
            args = [values[i] if i else None for i in inputs]
            kwargs: dict[str, Any] = dict(step.attrs, out=tape.results[k])
            if step.rule.context:
                kwargs["training"] = tape.training
            if step.rule.takes_needs:
                kwargs["needs"] = tuple(needs)
            if outputs[0] not in wanted:
                # dY is read by this node only: dropped from the walk (once the rule is done
                # with it, its memory is free for the next rule's arrays, still in cache)
                del grads[outputs[0]]
            try:
                result = self._differentiate(k, step, dy, args, kwargs, tape, tuple(needs))
            except GraphNetError as exc:
                raise type(exc)(f"while differentiating {_describe(n, args)}: {exc}") from exc
            except Exception as exc:
                raise KernelError(
                    f"while differentiating {_describe(n, args)}: {type(exc).__name__}: {exc}"
                ) from exc
            for s, (name, g) in enumerate(zip(n.inputs, result, strict=False)):
                arg = args[s]
                if not needs[s] or g is None or arg is None:
                    continue
                if g.shape != arg.shape:
                    raise ShapeError(
                        f"gradient rule of node '{n.name}' ({n.op}) returned "
                        f"{format_shape(g.shape)} for input '{name}' of shape "
                        f"{format_shape(arg.shape)}"
                    )
                grads[name] = grads[name] + g if name in grads else g
        return grads

    def _differentiate(
        self,
        k: int,
        step: _Step,
        dy: np.ndarray,
        args: list,
        kwargs: dict,
        tape: Tape,
        needs: tuple[bool, ...],
    ) -> Any:
        """Node k's gradients: its rule called on dY, its inputs and the keyword arguments
        (`needs` among them if the rule takes it)."""
        assert step.rule is not None
        return step.rule.fn(dy, *args, **kwargs)


def _describe(n: Node, args: list) -> str:
    shapes = " ".join(format_shape(a.shape) if a is not None else "<none>" for a in args)
    return f"{n.name} ({n.op}): inputs {shapes}"
