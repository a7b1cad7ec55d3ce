"""DSL layers of the activation family: ReLU, Sigmoid, Tanh, LeakyReLU, PReLU, ELU, Softmax,
LogSoftmax and Dropout.

Dropout takes exactly one of `drop=` (the DROP probability: ONNX `ratio`, PyTorch `p`, Keras
`rate`) or `keep=` (the KEEP probability, docs/formulas.md), keyword-only, so that a bare
`Dropout(0.8)` cannot be read one way and meant the other.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import format_shape
from graphnet.nn.core import Layer, Network, Tensor
from graphnet.ops.activation import DROPOUT_SCHEMES

__all__ = [
    "ReLU",
    "Sigmoid",
    "Tanh",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "LogSoftmax",
    "Dropout",
]


class _Elementwise(Layer):
    """A parameter-free activation: one node of op `op` with the attributes of `_attrs()`."""

    op = ""

    def _attrs(self) -> dict:
        return {}

    def forward(self, net: Network, x: Tensor) -> Tensor:
        return net.emit(self.op, [x], self._attrs(), name=self.node_name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._attrs().items())
        return f"{type(self).__name__}({args})"


class ReLU(_Elementwise):
    """max(0, x)."""

    kind, op = "relu", "Relu"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    kind, op = "sigmoid", "Sigmoid"


class Tanh(_Elementwise):
    """tanh(x)."""

    kind, op = "tanh", "Tanh"


class LeakyReLU(_Elementwise):
    """x if x >= 0 else alpha * x (some texts draw it with alpha = 0.1)."""

    kind, op = "leakyrelu", "LeakyRelu"

    def __init__(self, alpha: float = 0.01, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.alpha = alpha

    def _attrs(self) -> dict:
        return {"alpha": self.alpha}


class ELU(_Elementwise):
    """x if x >= 0 else alpha * (exp(x) - 1)."""

    kind, op = "elu", "Elu"

    def __init__(self, alpha: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.alpha = alpha

    def _attrs(self) -> dict:
        return {"alpha": self.alpha}


class Softmax(_Elementwise):
    """exp(x_i) / sum_k exp(x_k) along `axis` (the last one by default:
    logits of shape (N, classes))."""

    kind, op = "softmax", "Softmax"

    def __init__(self, axis: int = -1, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.axis = axis

    def _attrs(self) -> dict:
        return {"axis": self.axis}


class LogSoftmax(Softmax):
    """log(softmax(x)) along `axis`, computed without taking the log of an underflowed softmax."""

    kind, op = "logsoftmax", "LogSoftmax"


class PReLU(Layer):
    """LeakyReLU whose slope is a trained parameter, initialized to `init` (PyTorch's 0.25).

    `shared=False`: one slope per channel (axis 1), stored as (C, 1, ..., 1) so that it broadcasts
    from the right onto an N,C,spatial... input exactly as ONNX PRelu reads it. `shared=True`: one
    slope of shape (1,) for every element."""

    kind = "prelu"

    def __init__(
        self, shared: bool = False, init: float = 0.25, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.shared = shared
        self.init = init

    def forward(self, net: Network, x: Tensor) -> Tensor:
        dtype = np.dtype(x.dtype)
        if self.shared:
            shape: tuple = (1,)
        else:
            if x.shape is None or len(x.shape) < 2 or not is_static(x.shape[1]):
                raise ShapeError(
                    f"layer '{self.name}' (PReLU): a per-channel slope needs a static "
                    f"channel axis 1, got input '{x.name}'{format_shape(x.shape)}; "
                    "use PReLU(shared=True)"
                )
            shape = (x.shape[1],) + (1,) * (len(x.shape) - 2)
        slope = self.param(net, "slope", lambda: np.full(shape, self.init, dtype=dtype))
        return net.emit("PRelu", [x, slope], name=self.node_name)

    def __repr__(self) -> str:
        return f"PReLU(shared={self.shared!r}, init={self.init!r})"


class Dropout(Layer):
    """Dropout with exactly one of `drop` (DROP probability) or `keep` (KEEP probability; see
    docs/formulas.md), keyword-only. `scheme="inverted"` scales kept units by 1/keep in training
    and is the identity at inference (ONNX, PyTorch); `scheme="classic"` masks only in training and
    multiplies by keep at inference. With `return_mask=True` the layer returns (y, mask)."""

    kind = "dropout"

    def __init__(
        self,
        *positional: object,
        drop: float | None = None,
        keep: float | None = None,
        scheme: str = "inverted",
        return_mask: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if positional:
            # A bare number is ambiguous: the textbook's p keeps, PyTorch's p drops.
            v = positional[0]
            raise TypeError(
                f"Dropout takes its probability as a keyword, never positionally: "
                f"Dropout(drop={v!r}) drops {v!r} of the units (ONNX ratio, PyTorch p, Keras "
                f"rate), Dropout(keep={v!r}) keeps {v!r} of them (the textbook's p; see "
                "docs/formulas.md)"
            )
        if (drop is None) == (keep is None):
            raise AttributeValueError(
                "Dropout takes exactly one of drop= (the DROP probability, like ONNX ratio / "
                "PyTorch p / Keras rate) or keep= (the KEEP probability); got "
                f"drop={drop!r}, keep={keep!r}"
            )
        given, value = ("drop", drop) if drop is not None else ("keep", keep)
        if isinstance(value, bool) or not isinstance(value, Real):
            raise AttributeValueError(f"Dropout {given}= must be a number, got {value!r}")
        value = float(value)
        if given == "drop" and not 0.0 <= value < 1.0:
            raise AttributeValueError(
                f"Dropout drop= (DROP probability) must be in [0, 1), got {value!r}"
            )
        if given == "keep" and not 0.0 < value <= 1.0:
            raise AttributeValueError(
                f"Dropout keep= (KEEP probability) must be in (0, 1], got {value!r}"
            )
        if scheme not in DROPOUT_SCHEMES:
            raise AttributeValueError(
                f"Dropout scheme must be one of {DROPOUT_SCHEMES}, got {scheme!r}"
            )
        self.drop: float = value if given == "drop" else 1.0 - value
        self.keep: float = value if given == "keep" else 1.0 - value
        self.scheme: str = scheme
        self.return_mask: bool = return_mask

    def forward(self, net: Network, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        attrs = {"drop_prob": self.drop, "scheme": self.scheme}
        if self.return_mask:
            y, mask = net.emit("Dropout", [x], attrs, name=self.node_name, num_outputs=2)
            return y, mask
        return net.emit("Dropout", [x], attrs, name=self.node_name)

    def __repr__(self) -> str:
        # Both probabilities, rounded for reading (1 - 0.7 prints 0.3, not 0.30000000000000004).
        return f"Dropout(drop={self.drop:.6g}, keep={self.keep:.6g}, scheme={self.scheme!r})"
