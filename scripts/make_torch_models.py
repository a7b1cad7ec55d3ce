"""Generate the PyTorch-exported ONNX models that graphnet's tests import (tests/data/torch/).

PyTorch is not a dependency of graphnet: the models are generated once by this script and the
.onnx/.npz files are committed, so the tests never need torch. To regenerate:

    pip install torch==2.13.0 onnxscript     # the CPU build; onnxscript for the dynamo exporter
    python scripts/make_torch_models.py      # writes tests/data/torch/*.onnx and *.npz

Everything is seeded (weights, BatchNorm statistics, inputs), so a re-run gives the same numbers.
For each model `<name>.onnx` there is `<name>.npz` holding, for each batch size `B` in `BATCHES`
(the batch axis is dynamic in every model), the seeded input under `b{B}/<input name>` and
PyTorch's own outputs under `b{B}/<ONNX graph output name>`.

TorchScript exports (dynamo=False) of eval-mode models use TrainingMode.PRESERVE: the same
graph as the default EVAL except that the exporter does not fuse Conv+BN itself, so the files
keep their BatchNormalization nodes. The dynamo export cnn_dynamo keeps its defaults (optimize=True,
which folds BN into the convs): it is the file a user gets. Eval-mode exports contain no Dropout
node (both exporters drop it), only `bn_train` has one.

Models (all in eval mode except `bn_train`; channels 4-16, inputs about (N, 3, 16, 16)):
- cnn_ts_op9/13/17: Conv-BN-ReLU-MaxPool x2 -> AdaptiveAvgPool(1) -> flatten -> Dropout ->
  Linear -> ReLU -> Linear -> Softmax, TorchScript exporter at opsets 9, 13 and 17.
- cnn_dynamo: the same model through the dynamo exporter (torch.export + onnxscript);
  cnn_dynamo_raw: the same with the exporter's optimize=False.
- resnet_block: residual blocks (identity and 1x1-conv shortcuts), depthwise, grouped and
  transposed (groups=2) convs each followed by BN, conv without bias + BN, BN->BN, BatchNorm1d
  after a Linear.
- view_flatten: `x.view(x.size(0), -1)` (Shape/Gather/Unsqueeze/Concat/Reshape) and
  `torch.flatten(x, 1)` before fully connected layers.
- norms_acts: LayerNorm over (C,H,W), GroupNorm, InstanceNorm2d(affine), PReLU, ELU, LeakyReLU,
  Sigmoid, Tanh, LogSoftmax, ceil-mode pools (avg with count_include_pad), 1xk/kx1 convs, concat.
- ws_conv: weight-standardized convs exported without constant folding, so the graph computes
  ReduceMean/Sub/Div/Sqrt on the weight initializer.
- bn_train: exported with TrainingMode.TRAINING (BatchNormalization and Dropout in training
  mode). Its `features` output (BN with batch statistics) is deterministic; `dropped` is the
  dropout of `features` with ratio `BN_TRAIN_DROPOUT`, random, so only its pattern is testable.
  Its .npz also holds PyTorch's eval-mode outputs under `b{B}/eval/<output name>` (running
  statistics as stored in the file), i.e. what the graph computes in inference mode.
- conv3d_video: Conv3d + BatchNorm3d + ReLU + MaxPool3d + AvgPool3d on (N, 3, 4, 8, 8).
- gn_ln, gn_ln_op13: GroupNorm then LayerNorm over (C, H, W) (see `GroupNormLayerNorm`), at
  opsets 17 and 13 (LayerNorm as primitive ops there).
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - a message beats a traceback for a generator script
    sys.exit("this script needs PyTorch: pip install torch==2.13.0 onnxscript")

__all__ = ["BATCHES", "BN_TRAIN_DROPOUT", "OUT_DIR", "main"]

OUT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "torch"
)
BATCHES = (1, 3)
"""Batch sizes saved per model: 1 exercises broadcasting over a unit batch, 3 a real one."""
BN_TRAIN_DROPOUT = 0.25
MAX_BYTES = 200_000


# ----------------------------------------------------------------------------- models


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm seeded non-trivial statistics and affine parameters, so that a
    wrong epsilon, a swapped mean/var or a missing fold shows in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        elif (
            isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)) and m.weight is not None
        ):
            with torch.no_grad():  # the defaults (1, 0) would hide a wrong scale/shift order
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)


def conv_bn_relu(cin: int, cout: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool x2 -> AdaptiveAvgPool(1) -> flatten -> Dropout -> MLP -> Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(3, 8),
            nn.MaxPool2d(2),
            *conv_bn_relu(8, 16),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return torch.softmax(self.head(x), dim=1)


class ResBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut (identity, or 1x1 conv + BN when the shape changes), relu."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.short(x))


class ResNetBlock(nn.Module):
    """Every Conv/ConvTranspose/Linear + BN pairing the BN-folding pass has to get right."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.block1 = ResBlock(8, 8, 1)
        self.block2 = ResBlock(8, 16, 2)
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 2, stride=2, groups=2), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.bnbn = nn.Sequential(nn.BatchNorm2d(8), nn.BatchNorm2d(8))
        self.fc = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block2(self.block1(self.stem(x)))
        x = self.up(self.grouped(self.depthwise(x)))
        features = self.bnbn(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))
        return features, logits


class ViewFlatten(nn.Module):
    """The two flatten idioms before a fully connected layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # -> (N, 4, 8, 8)
        self.fc_view = nn.Linear(4 * 8 * 8, 10)
        self.fc_flat = nn.Linear(4 * 8 * 8, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.conv(x))
        return self.fc_view(x.view(x.size(0), -1)), self.fc_flat(torch.flatten(x, 1))


class NormsActs(nn.Module):
    """Normalizations, activations, ceil-mode pools, 1xk/kx1 convs and a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.ln = nn.LayerNorm([8, 16, 16])
        self.prelu = nn.PReLU(8)
        with torch.no_grad():  # per-channel slopes of both signs: a shared slope would pass too
            self.prelu.weight.copy_(torch.linspace(-0.5, 0.7, 8))
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)
        self.max = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv_1x3 = nn.Conv2d(8, 8, (1, 3), padding=(0, 1))
        self.conv_3x1 = nn.Conv2d(8, 8, (3, 1), padding=(1, 0))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.prelu(self.ln(self.conv0(x)))
        b = F.elu(self.gn(a))
        c = F.leaky_relu(self.inorm(b), 0.1)
        p = self.avg(c)  # (N, 8, 9, 9): ceil mode adds a window that overhangs the padding
        u = torch.sigmoid(self.conv_1x3(p))
        v = torch.tanh(self.conv_3x1(p))
        h = torch.flatten(F.adaptive_avg_pool2d(torch.cat([u, v], 1), 1), 1)
        return F.log_softmax(self.fc(h), dim=1), self.max(c)  # max: (N, 8, 8, 8)


class GroupNormLayerNorm(nn.Module):
    """GroupNorm, then a LayerNorm over (C, H, W): the TorchScript exporter writes GroupNorm as
    Reshape -> InstanceNormalization -> Reshape back to a shape computed by Shape (its dims
    unknown until run time), and at opset 13 LayerNorm as primitive ops (ReduceMean, Sub, Pow,
    Sqrt, Div, Mul, Add with 0-d constants)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, stride=2)
        self.gn = nn.GroupNorm(4, 16)
        self.ln = nn.LayerNorm([16, 8, 8])
        self.fc = nn.Linear(16 * 8 * 8, 10)
        with torch.no_grad():  # non-trivial affine parameters: a dropped scale would show
            for norm in (self.gn, self.ln):
                norm.weight.copy_(torch.rand(norm.weight.shape) + 0.5)
                norm.bias.copy_(torch.randn(norm.bias.shape) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.ln(self.gn(self.conv(x))))
        return self.fc(torch.flatten(h, 1))


class WSConv2d(nn.Conv2d):
    """Conv2d whose forward standardizes its weight per output channel (weight standardization)."""

    eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        w = (w - mean) / torch.sqrt(var + self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class WSNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            WSConv2d(3, 8, 3, padding=1),
            nn.GroupNorm(2, 8),
            nn.ReLU(),
            WSConv2d(8, 8, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(4, 8),
            nn.ReLU(),
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))


class BNTrain(nn.Module):
    """Conv-BN-ReLU then Dropout; exported in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(BN_TRAIN_DROPOUT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.bn(self.conv(x)))
        return features, self.drop(features)


class Video3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(3, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),  # (N, 8, 4, 4, 4)
            nn.AvgPool3d(2),  # (N, 8, 2, 2, 2)
        )
        self.fc = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.fc(torch.flatten(f, 1))


# ----------------------------------------------------------------------------- export


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = make()
    randomize_bn(model, torch.Generator().manual_seed(seed + 1000))
    return model


def _inputs(shape: tuple[int, ...], seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {b: rng.standard_normal((b, *shape[1:])).astype(np.float32) for b in BATCHES}


def export(
    name: str,
    model: nn.Module,
    shape: tuple[int, ...],
    outputs: list[str],
    *,
    seed: int,
    opset: int = 17,
    dynamo: bool = False,
    training: bool = False,
    fold: bool = True,
    optimize: bool = True,
) -> None:
    """Export `model` to `<name>.onnx` and save inputs + PyTorch outputs to `<name>.npz`."""
    path = os.path.join(OUT_DIR, f"{name}.onnx")
    xs = _inputs(shape, seed)
    # Reference outputs first, on a copy: a training-mode export traces the model, and tracing a
    # train-mode BN would update the running statistics that the file then stores.
    ref = copy.deepcopy(model).train(training)
    data: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for b, x in xs.items():
            torch.manual_seed(seed)  # dropout masks, for the record only
            ys = ref(torch.from_numpy(x))
            ys = ys if isinstance(ys, tuple) else (ys,)
            data[f"b{b}/input"] = x
            for out, y in zip(outputs, ys, strict=True):
                data[f"b{b}/{out}"] = y.numpy()
    model.train(training)
    example = (torch.from_numpy(xs[BATCHES[-1]]),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if dynamo:
            torch.onnx.export(
                model,
                example,
                path,
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=outputs,
                dynamic_shapes=({0: torch.export.Dim("N")},),
                external_data=False,
                optimize=optimize,
            )
            _strip_debug_metadata(path)
        else:
            torch.onnx.export(
                model,
                example,
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=outputs,
                dynamic_axes={"input": {0: "N"}, **{o: {0: "N"} for o in outputs}},
                # PRESERVE on an eval-mode model writes the same inference graph as EVAL, minus
                # the exporter's own Conv+BN fusion (EVAL only), so BatchNormalization nodes stay
                # for graphnet's importer and folding pass to deal with.
                training=torch.onnx.TrainingMode.TRAINING
                if training
                else torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=fold and not training,
            )
    if not (dynamo and optimize):  # the dynamo optimizer folds BN into conv weights, same names
        _check_params_written(model, path)
    if training:
        # The traced forward pass updated the BN running statistics that the file stores; the
        # eval-mode reference (what the graph computes in inference mode) must use those.
        model.eval()
        with torch.no_grad():
            for b, x in xs.items():
                for out, y in zip(outputs, model(torch.from_numpy(x)), strict=True):
                    data[f"b{b}/eval/{out}"] = y.numpy()
    np.savez(os.path.join(OUT_DIR, f"{name}.npz"), **data)


def _strip_debug_metadata(path: str) -> None:
    """Drop the dynamo exporter's per-node debug metadata (stack traces with this machine's paths
    and line numbers): the file then depends only on the model, and semantics are unchanged."""
    import onnx

    model = onnx.load(path)
    for node in model.graph.node:
        del node.metadata_props[:]
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del vi.metadata_props[:]
    for t in model.graph.initializer:
        del t.metadata_props[:]
    onnx.save(model, path)


def _check_params_written(model: nn.Module, path: str) -> None:
    """Every initializer named after a state_dict entry holds that entry's current value."""
    import onnx
    from onnx import numpy_helper

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for t in onnx.load(path).graph.initializer:
        if t.name in state:
            np.testing.assert_array_equal(numpy_helper.to_array(t), state[t.name], err_msg=t.name)


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    x2d = (1, 3, 16, 16)
    for opset in (9, 13, 17):
        export(f"cnn_ts_op{opset}", _seeded(SmallCNN, 0), x2d, ["probs"], seed=0, opset=opset)
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's backend)
    except ImportError:
        print("skipping cnn_dynamo: onnxscript is not installed (pip install onnxscript)")
    else:
        export("cnn_dynamo", _seeded(SmallCNN, 0), x2d, ["probs"], seed=0, opset=18, dynamo=True)
        # Without onnxscript's graph optimizer: BatchNormalization, Identity and the shape
        # arithmetic of the flatten stay, as a user exporting with optimize=False gets them.
        export(
            "cnn_dynamo_raw",
            _seeded(SmallCNN, 0),
            x2d,
            ["probs"],
            seed=0,
            opset=18,
            dynamo=True,
            optimize=False,
        )
    export("resnet_block", _seeded(ResNetBlock, 1), x2d, ["features", "logits"], seed=1)
    export("view_flatten", _seeded(ViewFlatten, 2), x2d, ["logits_view", "logits_flatten"], seed=2)
    export("norms_acts", _seeded(NormsActs, 3), x2d, ["log_probs", "max_pooled"], seed=3)
    # No constant folding: the exporter would otherwise fold the standardization of the weight.
    export("ws_conv", _seeded(WSNet, 4), x2d, ["logits"], seed=4, fold=False)
    export("bn_train", _seeded(BNTrain, 5), x2d, ["features", "dropped"], seed=5, training=True)
    export("conv3d_video", _seeded(Video3D, 6), (1, 3, 4, 8, 8), ["features", "logits"], seed=6)
    export("gn_ln", _seeded(GroupNormLayerNorm, 7), x2d, ["logits"], seed=7)
    export("gn_ln_op13", _seeded(GroupNormLayerNorm, 7), x2d, ["logits"], seed=7, opset=13)

    too_big = []
    for f in sorted(os.listdir(OUT_DIR)):
        size = os.path.getsize(os.path.join(OUT_DIR, f))
        print(f"{f:28s} {size:8d} bytes")
        if size > MAX_BYTES:
            too_big.append(f)
    if too_big:
        sys.exit(f"files over {MAX_BYTES} bytes: {too_big}")


if __name__ == "__main__":
    main()
