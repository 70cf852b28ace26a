"""End-to-end training: one cross-entropy on the network's output, backpropagated through every block."""

from __future__ import annotations

from torch import Tensor, nn

from ibstudy.losses import cross_entropy
from ibstudy.methods.base import Method

__all__ = ["E2E"]


class E2E(Method):
    """The baseline: the whole network learns from the output loss alone (docs/method.md §7)."""

    name = "e2e"

    def compilable(self) -> dict[str, nn.Module]:
        """The whole model, compiled as one graph."""
        return {"model": self.model}

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """The output's cross-entropy and the logits."""
        logits = self.parts["model"](x)
        return cross_entropy(logits, y), logits
