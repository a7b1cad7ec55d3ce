"""The Python DSL: layers, `Sequential`, the functional `Network`, and the classic CNN template.

Layers infer their input sizes (channels, features) from the tensor they are applied to, so only
output sizes are given: `Conv(16, 3)`, `Linear(10)`.
"""

from __future__ import annotations

from graphnet.nn.activation import (
    ELU,
    Dropout,
    LeakyReLU,
    LogSoftmax,
    PReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from graphnet.nn.conv import Conv, Conv1d, Conv2d, Conv3d, ConvTranspose, WSConv
from graphnet.nn.core import Layer, Network, Sequential, Tensor, add, concat
from graphnet.nn.linear import FC, Flatten, Linear, Maxout
from graphnet.nn.normalization import LRN, BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from graphnet.nn.pooling import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool
from graphnet.nn.template import template

__all__ = [
    "Conv",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose",
    "WSConv",
    "ELU",
    "Dropout",
    "LeakyReLU",
    "LogSoftmax",
    "PReLU",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "FC",
    "Flatten",
    "Linear",
    "Maxout",
    "AvgPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "MaxPool",
    "Layer",
    "Network",
    "Sequential",
    "Tensor",
    "add",
    "concat",
    "template",
    "BatchNorm",
    "LayerNorm",
    "InstanceNorm",
    "GroupNorm",
    "LRN",
]
