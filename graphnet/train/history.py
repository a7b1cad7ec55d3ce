"""`History`: what a training run measured, per epoch (and per k steps), as JSON for plotting."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """`config`: how the run was set up; `epochs`: one dict per epoch (epoch, steps, lr, loss,
    accuracy, test_loss, test_accuracy, seconds, ...); `steps`: test metrics every k steps when
    asked for."""

    config: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "epochs": self.epochs, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(dict(d.get("config", {})), list(d.get("epochs", [])), list(d.get("steps", [])))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (a reader never sees half a file)."""
        from graphnet.onnx_io.export import atomic_write

        atomic_write(path, (self.to_json() + "\n").encode())

    def column(self, key: str) -> list[Any]:
        """One metric over the epochs, e.g. `history.column("test_accuracy")`."""
        return [row.get(key) for row in self.epochs]
