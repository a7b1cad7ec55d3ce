"""Optimizers (PyTorch's definitions) and learning-rate schedules.

An optimizer maps (parameters, gradients) to new parameters and keeps its own state (momentum
buffers, Adam's moments) by parameter name; `lr` is an attribute the schedule sets each epoch.
Arithmetic is in the parameters' dtype, as PyTorch does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from graphnet.errors import AttributeValueError

__all__ = ["Optimizer", "SGD", "Adam", "Schedule", "Constant", "StepLR", "CosineLR"]


def _check(name: str, value: float, low: float, high: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value < high:
        raise AttributeValueError(f"{name} must be a number in [{low}, {high}), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: `step(params, grads) -> new params`, plus state as flat arrays by name."""

    lr: float

    def step(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer's state as named arrays (for checkpoints)."""
        return {}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_arrays` returned."""


class SGD(Optimizer):
    """PyTorch's SGD: g = grad + weight_decay * p;  v = momentum * v + g (v = g at the first
    step);  p = p - lr * v  (with nesterov: p = p - lr * (g + momentum * v))."""

    def __init__(
        self,
        lr: float = 0.01,
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.lr = _check("lr", lr, 0.0)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.nesterov = bool(nesterov)
        self.buffers: dict[str, np.ndarray] = {}

    def step(self, params, grads):
        out = {}
        for name, g in grads.items():
            p = params[name]
            d = g + p.dtype.type(self.weight_decay) * p if self.weight_decay else g
            if self.momentum:
                buf = self.buffers.get(name)
                buf = d.copy() if buf is None else p.dtype.type(self.momentum) * buf + d
                self.buffers[name] = buf
                d = d + p.dtype.type(self.momentum) * buf if self.nesterov else buf
            out[name] = (p - p.dtype.type(self.lr) * d).astype(p.dtype, copy=False)
        return out

    def state_arrays(self):
        return {f"momentum/{k}": v for k, v in self.buffers.items()}

    def load_state_arrays(self, arrays):
        self.buffers = {
            k.split("/", 1)[1]: np.array(v) for k, v in arrays.items() if k.startswith("momentum/")
        }

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g})"
        )


class Adam(Optimizer):
    """PyTorch's Adam: g = grad + weight_decay * p;  m = b1 m + (1 - b1) g;
    v = b2 v + (1 - b2) g^2;  p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr = _check("lr", lr, 0.0)
        self.betas = (_check("beta1", betas[0], 0.0, 1.0), _check("beta2", betas[1], 0.0, 1.0))
        self.eps = _check("eps", eps, 0.0)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        b1, b2 = self.betas
        out = {}
        for name, g in grads.items():
            p = params[name]
            f = p.dtype.type
            if self.weight_decay:
                g = g + f(self.weight_decay) * p
            m = self.m.get(name, np.zeros_like(p))
            v = self.v.get(name, np.zeros_like(p))
            m = f(b1) * m + f(1 - b1) * g
            v = f(b2) * v + f(1 - b2) * g * g
            self.m[name], self.v[name] = m, v
            step_size = f(self.lr / (1 - b1**self.t))
            denom = np.sqrt(v) / f(math.sqrt(1 - b2**self.t)) + f(self.eps)
            out[name] = (p - step_size * m / denom).astype(p.dtype, copy=False)
        return out

    def state_arrays(self):
        arrays = {f"m/{k}": v for k, v in self.m.items()}
        arrays.update({f"v/{k}": v for k, v in self.v.items()})
        arrays["t"] = np.array(self.t)
        return arrays

    def load_state_arrays(self, arrays):
        self.m = {k[2:]: np.array(v) for k, v in arrays.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(v) for k, v in arrays.items() if k.startswith("v/")}
        self.t = int(arrays.get("t", 0))

    def __repr__(self) -> str:
        return (
            f"Adam(lr={self.lr:g}, betas={self.betas}, eps={self.eps:g}, "
            f"weight_decay={self.weight_decay:g})"
        )


class Schedule:
    """The learning rate of each epoch (0-based) from the base rate; constant by default."""

    def __call__(self, base_lr: float, epoch: int) -> float:
        return base_lr


Constant = Schedule


class StepLR(Schedule):
    """PyTorch's StepLR: lr = base * gamma^(epoch // step_size)."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        if not isinstance(step_size, int) or step_size < 1:
            raise AttributeValueError(f"step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, _check("gamma", gamma, 0.0)

    def __call__(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(Schedule):
    """PyTorch's CosineAnnealingLR over its first half-period:
    lr = min_lr + (base - min_lr) (1 + cos(pi epoch / t_max)) / 2, held at min_lr after t_max."""

    def __init__(self, t_max: int, min_lr: float = 0.0) -> None:
        if not isinstance(t_max, int) or t_max < 1:
            raise AttributeValueError(f"t_max must be an int >= 1, got {t_max!r}")
        self.t_max, self.min_lr = t_max, _check("min_lr", min_lr, 0.0)

    def __call__(self, base_lr: float, epoch: int) -> float:
        cos = (1 + math.cos(math.pi * min(epoch, self.t_max) / self.t_max)) / 2
        return self.min_lr + (base_lr - self.min_lr) * cos
