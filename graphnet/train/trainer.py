"""`Trainer`: one training step and evaluation of a graph; `fit`: the epoch loop around it.

The loss reads the model's output; when the graph ends in a Softmax over its last axis (the
template CNN) and the loss is cross-entropy, the loss reads the Softmax's input instead and
fuses softmax and cross-entropy (stable, and its gradient is simply softmax - onehot). A step is:
forward in train mode (BatchNorm batch statistics and running averages, dropout masks), the loss
and its gradient, backward to every trainable parameter, one optimizer update written back with
`Graph.set_param`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphnet.data import Dataset
from graphnet.errors import AttributeValueError, InputError
from graphnet.ir import Graph, format_shape
from graphnet.runtime.gradients import Backprop, FastBackprop, trainable_params
from graphnet.train.history import History
from graphnet.train.losses import LOSSES, cross_entropy_from_probabilities
from graphnet.train.optim import SGD, Optimizer, Schedule

__all__ = ["Trainer", "fit", "check_batch_shape", "PLANS"]

PLANS = ("fast", "reference")


class Trainer:
    """Trains `graph` in place: `step(x, y)` runs one update, `evaluate(x, y)` measures in
    inference mode. `trainable` restricts which parameters learn (default: every float parameter
    read at a differentiable input, see `trainable_params`). `plan` "fast" (the default) runs
    the step on the runtime's compiled fast plan with the fast backward rules (`FastBackprop`);
    "reference" on the plain kernels and rules (`Backprop`, the oracle)."""

    def __init__(
        self,
        graph: Graph,
        *,
        loss: str = "cross_entropy",
        optimizer: Optimizer | None = None,
        seed: int | None = 0,
        trainable: Sequence[str] | None = None,
        plan: str = "fast",
    ) -> None:
        if plan not in PLANS:
            raise AttributeValueError(f"plan must be one of {PLANS}, got {plan!r}")
        if loss not in LOSSES:
            raise AttributeValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise InputError(
                f"graph '{graph.name}' has inputs {graph.inputs} and outputs {graph.outputs}; "
                "training needs exactly one of each"
            )
        self.graph = graph
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]
        self.optimizer = optimizer if optimizer is not None else SGD(0.01, momentum=0.9)
        self.input, self.output = graph.inputs[0], graph.outputs[0]
        self.prediction, self.fused = self.output, False
        producer = graph.producers().get(self.output)
        if loss == "cross_entropy" and producer is not None and producer.op == "Softmax":
            axis = producer.attrs.get("axis", -1)
            rank = len(graph.values[producer.inputs[0]].shape or ())
            if axis == -1 or (rank and axis == rank - 1):
                self.prediction, self.fused = producer.inputs[0], True
        names = trainable_params(graph) if trainable is None else list(trainable)
        unknown = [n for n in names if n not in graph.params]
        if unknown:
            raise InputError(f"trainable parameter(s) {unknown} are not parameters of the graph")
        self.trainable = names
        self.plan = plan
        self.backprop = FastBackprop(graph) if plan == "fast" else Backprop(graph)
        self.rng = np.random.default_rng(seed)  # dropout masks
        self.steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One update on a batch; returns (loss, number of correct predictions in train mode)."""
        check_batch_shape(self.graph, x)
        if len(x) == 0:  # its mean loss is NaN: reported as a diverging learning rate below
            raise InputError(f"an empty batch (shape {format_shape(x.shape)}): nothing to learn")
        # Overflow shows up as a non-finite loss, reported below with its likely cause; NumPy's
        # own warnings (one per kernel) would only bury that message.
        with np.errstate(over="ignore", invalid="ignore"):
            tape = self.backprop.forward({self.input: x}, training=True, rng=self.rng)
            pred = tape.values[self.prediction]
            loss, dpred = self.loss_fn(pred, y)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss} at step {self.steps + 1}: the learning rate is too "
                    "high for this model, or the data holds inf/nan"
                )
            grads = self.backprop.backward(tape, {self.prediction: dpred}, self.trainable)
            params = {n: self.graph.params[n] for n in self.trainable}
            updated = self.optimizer.step(params, grads)
        for name, value in updated.items():
            self.graph.set_param(name, value)
        self.steps += 1
        correct = int((pred.argmax(axis=1) == y).sum()) if self.loss_name == "cross_entropy" else 0
        return loss, correct

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
        """(mean loss, accuracy) in inference mode on the NumPy runtime (accuracy NaN for MSE)."""
        from graphnet import runtime

        check_batch_shape(self.graph, x[:1])
        if len(x) == 0:
            raise InputError(
                "evaluate() got no examples: the mean loss and accuracy of none are undefined"
            )
        session = runtime.Session(self.graph)  # rebuilt: a plan may cache parameters
        total, correct = 0.0, 0
        for lo in range(0, len(x), batch_size):
            xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
            out = session.run({self.input: xb})[self.output]
            if self.fused:
                loss = cross_entropy_from_probabilities(out, yb)
            else:
                loss, _ = self.loss_fn(out, yb)
            total += loss * len(xb)
            if self.loss_name == "cross_entropy":
                correct += int((out.argmax(axis=1) == yb).sum())
        acc = correct / len(x) if self.loss_name == "cross_entropy" else float("nan")
        return total / len(x), acc


def _progress(total: int, desc: str, enabled: bool | None):
    """A tqdm bar on stderr, only on a terminal unless asked for; a no-op otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="step")


def check_batch_shape(graph: Graph, x: np.ndarray) -> None:
    """Refuse a batch `x` whose shape the graph's first input cannot take (static dims must
    match; every other dim is free), naming both shapes."""
    name = graph.inputs[0]
    want = graph.values[name].shape
    if want is None:
        return
    ok = len(want) == x.ndim and all(
        not isinstance(d, int) or d == a for d, a in zip(want, x.shape, strict=True)
    )
    if not ok:
        hint = ""
        if len(want) == x.ndim and isinstance(want[0], int) and want[1:] == x.shape[1:]:
            hint = " (a static batch dim: export the model with a dynamic batch axis)"
        raise InputError(
            f"input '{name}' of the model has shape {format_shape(want)}; the data "
            f"gives batches of shape {format_shape(x.shape)}{hint}"
        )


def fit(
    graph: Graph,
    data: Dataset | tuple,
    *,
    loss: str = "cross_entropy",
    optimizer: Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    schedule: Schedule | None = None,
    shuffle: bool = True,
    seed: int = 0,
    history: str | None = None,
    checkpoint: str | None = None,
    resume: bool = False,
    eval_every: int | None = None,
    eval_train: bool = False,
    trainable: Sequence[str] | None = None,
    progress: bool | None = None,
    plan: str = "fast",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> History:
    """Train `graph` in place on `data` (a `Dataset` or (x, y)) and return its `History`.

    - `optimizer`: an `SGD` or `Adam` (default SGD lr 0.01, momentum 0.9); `schedule` sets its
      learning rate per epoch from the rate it was made with (`StepLR`, `CosineLR`).
    - Each epoch visits every example once, in batches of `batch_size` (the last one smaller),
      shuffled by a generator seeded with `seed` unless `shuffle` is False. With `shuffle` False
      and `batch_size` = N, epoch e is exactly full-batch step e.
    - Metrics per epoch: mean train loss and accuracy (train mode, as the steps saw them), the
      test set's (inference mode) when the data has one, with `eval_train` the training set's
      in inference mode too; with `eval_every` k, the test metrics every k steps as well.
    - `history`: a JSON file rewritten (atomically) after every epoch. `checkpoint`: an .npz
      rewritten after every epoch (parameters, optimizer state, generators, history); with
      `resume` an existing one is loaded and training continues where it stopped, exactly as
      if it had not.
    - `progress`: a tqdm bar on stderr; by default only when stderr is a terminal.
    - `plan`: "fast" (default) or "reference", as for `Trainer`.
    """
    from graphnet.train import checkpoint as ckpt

    if not isinstance(data, Dataset):
        data = Dataset(*data)
    if not isinstance(epochs, int) or epochs < 0:
        raise AttributeValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AttributeValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise AttributeValueError(f"eval_every must be an int >= 1, got {eval_every!r}")
    schedule = schedule or Schedule()
    seeds = np.random.SeedSequence(seed).spawn(2)
    trainer = Trainer(
        graph,
        loss=loss,
        optimizer=optimizer,
        seed=int(seeds[0].generate_state(1)[0]),
        trainable=trainable,
        plan=plan,
    )
    order_rng = np.random.default_rng(seeds[1])
    base_lr = trainer.optimizer.lr
    hist = History(
        config={
            "graph": graph.name,
            "loss": loss,
            "optimizer": repr(trainer.optimizer),
            "epochs": epochs,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "seed": seed,
            "fused_softmax": trainer.fused,
            "trainable": len(trainer.trainable),
        }
    )
    start = 0
    if checkpoint and resume:
        state = ckpt.load(checkpoint, graph, trainer, order_rng)
        if state is not None:
            start, hist = state
    n = len(data.x)
    x_test, y_test = data.x_test, data.y_test
    per_epoch = math.ceil(n / batch_size)
    for epoch in range(start, epochs):
        trainer.optimizer.lr = schedule(base_lr, epoch)
        t0 = time.perf_counter()
        order = order_rng.permutation(n) if shuffle else np.arange(n)
        bar = _progress(per_epoch, f"epoch {epoch + 1}/{epochs}", progress)
        total, correct = 0.0, 0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            loss_v, right = trainer.step(data.x[idx], data.y[idx])
            total += loss_v * len(idx)
            correct += right
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_v:.4f}")
            if (
                eval_every
                and x_test is not None
                and y_test is not None
                and (trainer.steps % eval_every == 0)
            ):
                tl, ta = trainer.evaluate(x_test, y_test)
                hist.steps.append({"step": trainer.steps, "test_loss": tl, "test_accuracy": ta})
        if bar is not None:
            bar.close()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "steps": trainer.steps,
            "lr": trainer.optimizer.lr,
            "loss": total / n,
        }
        if loss == "cross_entropy":
            row["accuracy"] = correct / n
        if eval_train:
            row["train_eval_loss"], row["train_eval_accuracy"] = trainer.evaluate(data.x, data.y)
        if x_test is not None and y_test is not None:
            row["test_loss"], row["test_accuracy"] = trainer.evaluate(x_test, y_test)
        row["seconds"] = time.perf_counter() - t0
        hist.epochs.append(row)
        if history:
            hist.save(history)
        if checkpoint:
            ckpt.save(checkpoint, graph, trainer, order_rng, epoch + 1, hist)
        if on_epoch is not None:
            on_epoch(row)
    return hist
