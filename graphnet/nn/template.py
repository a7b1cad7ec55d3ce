"""The classic template of a deep CNN, as a `Sequential`:

    INPUT -> [[CONV -> RELU] * N -> POOL?] * M -> [FC -> RELU] * K -> Softmax

with optional BatchNorm after every conv (before its ReLU, where Ioffe and Szegedy place it) and
Dropout before every hidden FC layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphnet.errors import AttributeValueError
from graphnet.nn.core import Layer, Sequential

__all__ = ["template"]


def template(
    *,
    n: int = 2,
    m: int = 2,
    k: int = 1,
    channels: Sequence[int] = (16, 32),
    hidden: Sequence[int] = (64,),
    classes: int = 10,
    kernel_size: int = 3,
    pool: bool = True,
    batchnorm: bool = True,
    drop: float | None = None,
    keep: float | None = None,
    name: str = "template",
    dropout: object = None,
) -> Sequential:
    """Build the template: M stages of N (conv [-> BN] -> ReLU) followed by a 2x2 max pool
    (if `pool`), then Flatten, K (dropout -> FC -> ReLU) and a final FC to `classes` + Softmax.

    `channels` gives each stage's conv width (one per stage, or one for all); `hidden` gives each
    hidden FC width likewise. Dropout before each hidden FC layer is given as for `Dropout`: at
    most one of `drop=` (the DROP probability) or `keep=` (the KEEP probability; see
    docs/formulas.md); neither gives drop=0.5, and drop=0 (or keep=1) gives no dropout layers.
    """
    from graphnet.nn import BatchNorm, Conv, Dropout, Flatten, Linear, MaxPool, ReLU, Softmax

    if dropout is not None:
        raise AttributeValueError(
            f"template takes drop= (the DROP probability) or keep= (the KEEP probability, the "
            f"textbook's p; docs/formulas.md), not dropout={dropout!r}"
        )
    if drop is not None and keep is not None:
        raise AttributeValueError(f"template takes drop= or keep=, not both ({drop}, {keep})")
    if drop is None and keep is None:
        drop = 0.5
    # drop=0 / keep=1: no dropout layers (Dropout itself checks the ranges).
    with_dropout = (keep is not None and keep != 1) or (drop is not None and drop != 0)
    for label, v in (("n", n), ("m", m), ("k", k)):
        if v < 0:
            raise AttributeValueError(f"template: {label} must be >= 0, got {v}")
    channels = _per_stage(channels, m, "channels")
    hidden = _per_stage(hidden, k, "hidden")
    layers: list[Layer] = []
    for stage in range(m):
        for _ in range(n):
            layers.append(Conv(channels[stage], kernel_size, padding="same", bias=not batchnorm))
            if batchnorm:
                layers.append(BatchNorm())
            layers.append(ReLU())
        if pool:
            layers.append(MaxPool(2))
    layers.append(Flatten())
    for width in hidden:
        if with_dropout:
            layers.append(Dropout(keep=keep) if keep is not None else Dropout(drop=drop))
        layers += [Linear(width), ReLU()]
    layers += [Linear(classes), Softmax(axis=-1)]
    return Sequential(layers, name=name)


def _per_stage(widths: Sequence[int] | int, count: int, what: str) -> list[int]:
    if isinstance(widths, int):
        return [widths] * count
    widths = list(widths)
    if len(widths) == 1:
        return widths * count
    if len(widths) != count:
        raise AttributeValueError(f"template: {what} has {len(widths)} entries for {count} stages")
    return widths
