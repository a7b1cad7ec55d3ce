"""Generate PyTorch autograd references for graphnet's training tests (tests/data/train/).

PyTorch is not a dependency of graphnet: this script runs once and its output is committed.

    pip install torch==2.13.0        # the CPU build, for this script only
    python scripts/make_grad_references.py

For each network `<name>` it writes `<name>.onnx` (the model in eval mode, TorchScript exporter,
TrainingMode.PRESERVE so BatchNormalization nodes stay, dynamic batch) and `<name>.npz` holding:
- `x` (B, ...) float32 inputs (digits from graphnet's own data, so training means something) and
  `y` (B,) int64 labels;
- `loss` and `grad/<initializer>`: the mean softmax cross-entropy of the model in TRAIN mode
  (BatchNorm with batch statistics) on that batch and its gradient for every trainable parameter,
  computed in float64 (the float32 parameters upcast exactly), so a float64 graphnet run must agree
  to ~1e-12;
- `sgd/<initializer>` and `adam/<initializer>`: every parameter after STEPS full-batch float32
  steps of torch.optim.SGD(lr, momentum, weight_decay) and torch.optim.Adam(lr, weight_decay),
  the running statistics included. PyTorch updates running_var with the UNBIASED batch variance;
  ONNX (and graphnet) with the biased one, so the stored running_var follows the ONNX rule from
  the same batch statistics (recorded by a hook); running_mean is PyTorch's own.
No network has Dropout: PyTorch's masks cannot be reproduced; dropout's gradient is checked by
finite differences instead.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    sys.exit("this script needs PyTorch: pip install torch==2.13.0")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from graphnet.data import digits  # noqa: E402

__all__ = ["OUT_DIR", "STEPS", "SGD_ARGS", "ADAM_ARGS", "BATCH", "main"]

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "train")
STEPS = 3
BATCH = 24
SGD_ARGS = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
ADAM_ARGS = {"lr": 0.01, "weight_decay": 1e-3}


class CnnBN(nn.Module):
    """The template CNN, small: [conv -> BN -> ReLU] x2 -> pool, strided grouped conv,
    FC -> ReLU -> FC -> Softmax (the loss fuses with the Softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.softmax(self.fc2(x), dim=1)

    logits_of_output = True  # the exported output is softmax(logits)


class Residual(nn.Module):
    """A residual block with PReLU, a ConvTranspose, GroupNorm, ELU, LayerNorm, an average pool
    (ceil mode, padding excluded), concat and a global pool: logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.PReLU(4)
        self.conv = nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)
        self.ln = nn.LayerNorm([8, 5, 5])
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stem(x)))
        y = F.elu(self.gn(self.conv(x)))
        x = x + y
        x = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        z = F.leaky_relu(self.up(x), 0.1)
        z = F.max_pool2d(z, 2, stride=2)
        x = torch.cat([x, z], dim=1)
        x = torch.tanh(self.ln(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    logits_of_output = False


class Conv1d3d(nn.Module):
    """1-D and 3-D paths: the 8x8 image read as 8 rows of a sequence (Conv1d, dilation, stride,
    InstanceNorm1d) and as a 1x8x8 volume (Conv3d, BatchNorm3d, MaxPool3d); then Sigmoid, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(8, 6, 3, stride=2, padding=2, dilation=2, bias=False)
        self.inorm = nn.InstanceNorm1d(6, affine=True)
        self.c3 = nn.Conv3d(1, 3, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn3 = nn.BatchNorm3d(3)
        self.fc = nn.Linear(6 * 4 + 3 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.reshape(x.shape[0], 8, 8)
        a = torch.sigmoid(self.inorm(self.c1(seq))).flatten(1)
        vol = x.reshape(x.shape[0], 1, 1, 8, 8)
        b = F.max_pool3d(F.relu(self.bn3(self.c3(vol))), (1, 2, 2)).flatten(1)
        return self.fc(torch.cat([a, b], dim=1))

    logits_of_output = False


NETWORKS = {"cnn_bn": CnnBN, "residual": Residual, "conv1d3d": Conv1d3d}


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if model.logits_of_output:  # log(softmax) then NLL: cross-entropy of the logits
        return F.nll_loss(torch.log(model(x)), y)
    return F.cross_entropy(model(x), y)


def _bn_hooks(model: nn.Module, stats: dict[str, dict[str, torch.Tensor]]) -> list:
    """Record, per BN module, the running statistics updated by the ONNX rule (biased var)."""
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            stats[name] = {
                "running_mean": mod.running_mean.detach().clone(),
                "running_var": mod.running_var.detach().clone(),
            }

            def hook(m, inputs, name=name):
                x = inputs[0].detach()
                axes = [0] + list(range(2, x.dim()))
                mean = x.mean(dim=axes)
                var = x.var(dim=axes, unbiased=False)
                alpha = 1.0 - m.momentum  # ONNX's momentum
                s = stats[name]
                s["running_mean"] = alpha * s["running_mean"] + (1 - alpha) * mean
                s["running_var"] = alpha * s["running_var"] + (1 - alpha) * var

            hooks.append(mod.register_forward_pre_hook(hook))
    return hooks


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, opt_name: str) -> dict[str, np.ndarray]:
    model = copy.deepcopy(model).train()
    stats: dict[str, dict[str, torch.Tensor]] = {}
    hooks = _bn_hooks(model, stats)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), **SGD_ARGS)
    else:
        opt = torch.optim.Adam(model.parameters(), **ADAM_ARGS)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(model, xt, yt).backward()
        opt.step()
    for h in hooks:
        h.remove()
    out = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for name, s in stats.items():
        for key, value in s.items():
            out[f"{name}.{key}"] = value.numpy().astype(np.float32)
    return {k: v for k, v in out.items() if not k.endswith("num_batches_tracked")}


def export(name: str, model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    import onnx

    path = os.path.join(OUT_DIR, f"{name}.onnx")
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(x),),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
        )
    names = {t.name for t in onnx.load(path).graph.initializer}
    trainable = {k for k, _ in model.named_parameters()}
    missing = sorted(trainable - names)
    if missing:
        raise SystemExit(f"{name}: parameters {missing} are not initializers of the export")

    data: dict[str, np.ndarray] = {"x": x, "y": y}
    m64 = copy.deepcopy(model).double().train()
    loss = _loss(m64, torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y))
    loss.backward()
    data["loss"] = np.array(loss.item())
    for k, p in m64.named_parameters():
        data[f"grad/{k}"] = p.grad.numpy()
    for opt_name in ("sgd", "adam"):
        for k, v in _train(model, x, y, opt_name).items():
            data[f"{opt_name}/{k}"] = v
    np.savez_compressed(os.path.join(OUT_DIR, f"{name}.npz"), **data)
    print(f"wrote {name}.onnx and {name}.npz (loss {loss.item():.6f})")


def main() -> int:
    os.makedirs(OUT_DIR, exist_ok=True)
    d = digits()
    x, y = d.x[:BATCH].copy(), d.y[:BATCH].copy()
    for k, (name, make) in enumerate(NETWORKS.items()):
        torch.manual_seed(100 + k)
        model = make()
        # Non-trivial BN statistics and affine parameters, so that none of them is a no-op.
        gen = torch.Generator().manual_seed(200 + k)
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                with torch.no_grad():
                    mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=gen))
                    mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=gen))
                    mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=gen))
                    mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=gen))
        export(name, model, x, y)
    return 0


if __name__ == "__main__":
    sys.exit(main())
