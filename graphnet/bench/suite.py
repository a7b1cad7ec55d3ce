"""The runtime benchmark suite: six small CNNs built with the DSL, one per family the runtime must
run fast (the list and sizes are those of issue 7):

- `lenet5`: LeNet-5 style, 1x28x28, conv 5x5 -> pool -> conv 5x5 -> pool -> 3 FC;
- `vgg_bn`: the template CNN of docs/formulas.md, VGG-like, BN after every conv and dropout
  before the hidden FC (~1.6M parameters), 3x32x32;
- `resnet20`: CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels, BN), 3x32x32;
- `inception_bn`: Inception-style blocks with 1x1, 1x3+3x1, 3x3 and pool branches, all with BN;
- `norms_acts`: LayerNorm / GroupNorm / InstanceNorm with PReLU / ELU / LeakyReLU between convs;
- `video3d`: a 5-D net, Conv3d + BN + ReLU + 3-D pooling on N,C,T,H,W.

BatchNorm statistics and affine parameters are replaced by seeded random ones: a fresh net has
identity BN (mean 0, var 1, gamma 1, beta 0), with which a wrong fold or kernel could go unnoticed.
Every model has a dynamic batch dim.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphnet import nn
from graphnet.ir import Graph

__all__ = ["SUITE", "build", "suite_names"]


def _randomize_norms(graph: Graph, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        if node.op == "BatchNormalization":
            scale, bias, mean, var = node.inputs[1:5]
            c = graph.params[scale].shape
            graph.set_param(scale, rng.uniform(0.5, 1.5, c).astype(np.float32))
            graph.set_param(bias, rng.normal(0.0, 0.5, c).astype(np.float32))
            graph.set_param(mean, rng.normal(0.0, 0.5, c).astype(np.float32))
            graph.set_param(var, rng.uniform(0.5, 2.0, c).astype(np.float32))
    return graph


def lenet5(seed: int = 0) -> Graph:
    """LeNet-5 style: 1x28x28 -> conv5x5(6, same) -> ReLU -> max 2 -> conv5x5(16) -> ReLU ->
    max 2 -> FC 120 -> FC 84 -> FC 10 -> Softmax."""
    net = nn.Sequential(
        [
            nn.Conv(6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool(2),
            nn.Conv(16, 5),
            nn.ReLU(),
            nn.MaxPool(2),
            nn.Flatten(),
            nn.Linear(120),
            nn.ReLU(),
            nn.Linear(84),
            nn.ReLU(),
            nn.Linear(10),
            nn.Softmax(),
        ],
        name="lenet5",
    )
    return net.build((None, 1, 28, 28), seed=seed)


def vgg_bn(seed: int = 0) -> Graph:
    """The template CNN (docs/formulas.md), VGG-like: 3 stages of 2 x (conv3x3 -> BN -> ReLU)
    + max pool, 64/128/256 channels, then dropout -> FC 128 -> ReLU -> FC 10 -> Softmax
    (~1.67M params)."""
    t = nn.template(n=2, m=3, k=1, channels=(64, 128, 256), hidden=(128,), name="vgg_bn")
    return _randomize_norms(t.build((None, 3, 32, 32), seed=seed), seed)


def _basic_block(x: nn.Tensor, channels: int, stride: int) -> nn.Tensor:
    y = nn.Conv(channels, 3, stride=stride, padding=1, bias=False)(x)
    y = nn.ReLU()(nn.BatchNorm()(y))
    y = nn.BatchNorm()(nn.Conv(channels, 3, padding=1, bias=False)(y))
    if stride != 1 or x.shape[1] != channels:
        x = nn.BatchNorm()(nn.Conv(channels, 1, stride=stride, bias=False)(x))
    return nn.ReLU()(nn.add(x, y))


def resnet20(seed: int = 0) -> Graph:
    """CIFAR ResNet-20: conv3x3(16) + BN + ReLU, 3 stages x 3 basic blocks (16, 32, 64 channels,
    stride 2 at each new stage with a 1x1 projection shortcut), global average pool, FC 10."""
    net = nn.Network("resnet20", seed=seed)
    x = net.input("input", (None, 3, 32, 32))
    y = nn.ReLU()(nn.BatchNorm()(nn.Conv(16, 3, padding=1, bias=False)(x)))
    for stage, channels in enumerate((16, 32, 64)):
        for block in range(3):
            y = _basic_block(y, channels, 2 if stage and not block else 1)
    y = nn.Linear(10)(nn.Flatten()(nn.GlobalAvgPool()(y)))
    net.output(nn.Softmax()(y), name="output")
    return _randomize_norms(net.graph, seed)


def _cbr(x: nn.Tensor, channels: int, k, padding) -> nn.Tensor:
    return nn.ReLU()(nn.BatchNorm()(nn.Conv(channels, k, padding=padding, bias=False)(x)))


def _inception(x: nn.Tensor, c1: int, c3r: int, c3: int, cfr: int, cf: int, cp: int) -> nn.Tensor:
    a = _cbr(x, c1, 1, 0)
    b = _cbr(_cbr(x, c3r, 1, 0), c3, 3, 1)
    f = _cbr(x, cfr, 1, 0)
    f = _cbr(_cbr(f, cf, (1, 3), (0, 1)), cf, (3, 1), (1, 0))
    p = _cbr(nn.MaxPool(3, stride=1, padding=1)(x), cp, 1, 0)
    return nn.concat([a, b, f, p])


def inception_bn(seed: int = 0) -> Graph:
    """Inception-style with BN: stem conv3x3(32) -> max pool, two blocks of 1x1 / 1x1->3x3 /
    1x1->1x3->3x1 / maxpool->1x1 branches, max pool, one more block, GAP, FC 10."""
    net = nn.Network("inception_bn", seed=seed)
    x = net.input("input", (None, 3, 32, 32))
    y = nn.MaxPool(2)(_cbr(x, 32, 3, 1))
    y = _inception(y, 16, 24, 32, 8, 16, 16)
    y = _inception(y, 32, 32, 48, 16, 24, 24)
    y = nn.MaxPool(2)(y)
    y = _inception(y, 48, 48, 64, 16, 32, 32)
    y = nn.Linear(10)(nn.Flatten()(nn.GlobalAvgPool()(y)))
    net.output(nn.Softmax()(y), name="output")
    return _randomize_norms(net.graph, seed)


def norms_acts(seed: int = 0) -> Graph:
    """LayerNorm / GroupNorm / InstanceNorm with PReLU / ELU / LeakyReLU between convs, 3x32x32."""
    net = nn.Sequential(
        [
            nn.Conv(32, 3, padding=1),
            nn.GroupNorm(8),
            nn.PReLU(),
            nn.MaxPool(2),
            nn.Conv(64, 3, padding=1),
            nn.InstanceNorm(affine=True),
            nn.ELU(),
            nn.MaxPool(2),
            nn.Conv(64, 3, padding=1),
            nn.LayerNorm(),
            nn.LeakyReLU(0.1),
            nn.GlobalAvgPool(),
            nn.Flatten(),
            nn.Linear(10),
            nn.Softmax(),
        ],
        name="norms_acts",
    )
    return net.build((None, 3, 32, 32), seed=seed)


def video3d(seed: int = 0) -> Graph:
    """A video net on N,C,T,H,W = (N, 3, 8, 32, 32): 3 x (Conv3d 3x3x3 -> BN -> ReLU -> 3-D max
    pool), 16/32/64 channels, GAP, FC 10."""
    net = nn.Sequential(
        [
            nn.Conv(16, 3, padding=1, bias=False),
            nn.BatchNorm(),
            nn.ReLU(),
            nn.MaxPool((1, 2, 2)),
            nn.Conv(32, 3, padding=1, bias=False),
            nn.BatchNorm(),
            nn.ReLU(),
            nn.MaxPool(2),
            nn.Conv(64, 3, padding=1, bias=False),
            nn.BatchNorm(),
            nn.ReLU(),
            nn.MaxPool(2),
            nn.GlobalAvgPool(),
            nn.Flatten(),
            nn.Linear(10),
            nn.Softmax(),
        ],
        name="video3d",
    )
    return _randomize_norms(net.build((None, 3, 8, 32, 32), seed=seed), seed)


SUITE: dict[str, Callable[[int], Graph]] = {
    "lenet5": lenet5,
    "vgg_bn": vgg_bn,
    "resnet20": resnet20,
    "inception_bn": inception_bn,
    "norms_acts": norms_acts,
    "video3d": video3d,
}


def suite_names() -> list[str]:
    return list(SUITE)


def build(name: str, seed: int = 0) -> Graph:
    """The suite model `name`, unoptimized (BN and dropout present), parameters from `seed`."""
    return SUITE[name](seed)
