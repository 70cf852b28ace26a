"""Signal propagation (Kohan, Rietman & Siegelmann, 2023) on the study's block models (docs/method.md §7).

- a learned linear projection maps each class's one-hot target to the input's shape; the batch and
  the C class targets go through each block together (one batch, shared BatchNorm statistics);
- block k's loss is the cross-entropy of the cosine similarities between each input's output and every
  class target's output, divided by SP_TEMPERATURE [ours]; the gradient reaches the projection through
  the first block only, and nothing crosses between blocks;
- prediction: the class whose target is most similar at the last block; the final classifier is a
  linear readout on the detached last block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibstudy.methods.base import Method

if TYPE_CHECKING:
    from ibstudy.config import TrainConfig

__all__ = [
    "SP_TEMPERATURE",
    "SignalPropagation",
    "similarities",
    "sp_loss",
    "sp_predict",
    "sp_projection",
]

SP_TEMPERATURE = 0.1  # [ours] temperature of the signal-propagation similarity logits


def sp_projection(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The learned map from a one-hot class target to the input's shape."""
    size = 1
    for s in input_shape:
        size *= s
    return nn.Sequential(nn.Linear(num_classes, size), nn.Unflatten(1, tuple(input_shape)))


def similarities(z: Tensor, t: Tensor) -> Tensor:
    """Cosine similarities (N, C) between every sample's and every class target's features."""
    return F.normalize(z.flatten(1), dim=1) @ F.normalize(t.flatten(1), dim=1).T


def sp_loss(
    blocks: Sequence[Callable[[Tensor], Tensor]], classifier: nn.Module, projection: nn.Module,
    x: Tensor, y: Tensor, num_classes: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(the signal-propagation objective of one batch + the readout's cross-entropy, its logits)."""
    n = x.shape[0]
    t = projection(torch.eye(num_classes, dtype=x.dtype, device=x.device))
    h = torch.cat([x, t])
    total = x.new_zeros(())
    for k, block in enumerate(blocks):
        h = block(h if k == 0 else h.detach())  # the projection learns through block 0 only
        total = total + F.cross_entropy(similarities(h[:n], h[n:]) / SP_TEMPERATURE, y)
    logits = classifier(h[:n].detach())
    return total + F.cross_entropy(logits, y), logits


@torch.no_grad()
def sp_predict(
    blocks: Sequence[Callable[[Tensor], Tensor]], projection: nn.Module, x: Tensor, num_classes: int
) -> Tensor:
    """The class whose target is most similar to the input at the last block."""
    n = x.shape[0]
    h = torch.cat([x, projection(torch.eye(num_classes, dtype=x.dtype, device=x.device))])
    for block in blocks:
        h = block(h)
    return similarities(h[:n], h[n:]).argmax(dim=1)


class SignalPropagation(Method):
    """The class targets, projected to the input's shape, travel with the batch through every block."""

    name = "signal_propagation"
    argmax_prediction = False

    def __init__(self, cfg: TrainConfig, model: nn.Module, num_classes: int,
                 input_shape: tuple[int, int, int]) -> None:  # fmt: skip
        """The learned target projection is this method's one auxiliary module."""
        super().__init__(cfg, model, num_classes, input_shape)
        self.modules = nn.ModuleList([sp_projection(num_classes, input_shape)])

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """Every block's similarity loss plus the readout's cross-entropy."""
        return sp_loss(self.blocks(), self.model.classifier, self.modules[0], x, y,
                       self.num_classes)  # fmt: skip

    def predict(self, x: Tensor, logits: Any) -> Tensor:
        """The class whose target is most similar at the last block."""
        return sp_predict(self.model.blocks, self.modules[0], x, self.num_classes)
