"""Training: losses, optimizers, schedules, `Trainer` and `fit`.

    from graphnet import nn, train
    from graphnet.data import digits

    graph = nn.template(channels=(16, 32), hidden=(64,)).build((None, 1, 8, 8))
    history = train.fit(graph, digits(), optimizer=train.SGD(0.05, momentum=0.9), epochs=10)
    history.column("test_accuracy")

Gradients come from `graphnet.runtime.gradients` (one backward rule per op); the forward in train
mode is the runtime's (BatchNorm batch statistics, dropout masks), so the trained graph exports
and optimizes like any other.
"""

from __future__ import annotations

from graphnet.train.history import History
from graphnet.train.losses import cross_entropy_from_probabilities, mse, softmax_cross_entropy
from graphnet.train.optim import SGD, Adam, Constant, CosineLR, Optimizer, Schedule, StepLR
from graphnet.train.trainer import Trainer, fit

__all__ = [
    "fit",
    "Trainer",
    "History",
    "SGD",
    "Adam",
    "Optimizer",
    "Schedule",
    "Constant",
    "StepLR",
    "CosineLR",
    "softmax_cross_entropy",
    "cross_entropy_from_probabilities",
    "mse",
]
