"""Forward-Forward (Hinton, 2022) on the study's block models (docs/method.md §7).

Every block learns by a goodness loss of its own with no gradient between blocks, like layer-wise
training but without auxiliary heads. Choices the original leaves open are marked [ours] here and in
docs/method.md §7:

- the label is embedded as a fixed class pattern added to the whole image (standard normal, seed 0,
  one per class, amplitude PATTERN_SCALE in normalized units); a *neutral* embedding adds the mean of
  all patterns (every class equally). [ours] The original writes the one-hot label into the first
  pixels; with convolutional blocks whose goodness averages over the whole image that corner code
  barely reaches the goodness (measured on LeNet5: no separation of positive from negative goodness
  after 200 steps), while the spread pattern separates them within 50;
- positive data carries the true label, negative data a wrong one drawn uniformly from the others;
- every block's input is RMS-normalized per sample (so a block cannot read the goodness of the one
  below) and detached; goodness = mean squared activation of the block's output; the loss is
  softplus(theta - g_pos) + softplus(g_neg - theta) with theta = FF_THRESHOLD [ours];
- prediction: the label whose embedding gives the highest goodness summed over all blocks [ours:
  Hinton leaves out the first hidden layer];
- the final classifier is trained as a linear readout on the detached last block of a neutral pass, so
  the plane's ``logits`` row means something; the plane measures the network on neutral inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibstudy.methods.base import Method

__all__ = [
    "FF_THRESHOLD",
    "FFView",
    "ForwardForward",
    "embed_label",
    "ff_loss",
    "ff_pass",
    "ff_predict",
    "goodness",
    "rms_normalize",
]

FF_THRESHOLD = 1.0  # [ours] goodness threshold on the mean squared activation
PATTERN_SCALE = 1.0  # [ours] amplitude of the class patterns, in units of the normalized image
PATTERN_SEED = 0  # [ours] seed of the fixed class patterns


@functools.lru_cache(maxsize=8)
def _patterns(num_classes: int, shape: tuple[int, ...]) -> Tensor:
    """The fixed class patterns (num_classes, *shape): standard normal, generator seed 0, CPU."""
    gen = torch.Generator().manual_seed(PATTERN_SEED)
    return torch.randn(num_classes, *shape, generator=gen)


def embed_label(x: Tensor, labels: Tensor | None, num_classes: int) -> Tensor:
    """Images ``x`` (N, ...) plus the fixed pattern of each one's label (None: the neutral
    embedding, the mean of all class patterns, i.e. every class equally)."""
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a batch of images (N, ...), got shape {tuple(x.shape)}")
    patterns = _patterns(num_classes, tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
    if labels is None:
        return x + PATTERN_SCALE * patterns.mean(dim=0, keepdim=True)
    return x + PATTERN_SCALE * patterns[labels]


def rms_normalize(h: Tensor) -> Tensor:
    """Each sample divided by the root mean square of its features (length normalization)."""
    flat = h.flatten(1)
    rms = flat.square().mean(dim=1).add(1e-8).sqrt()
    return h / rms.view(-1, *([1] * (h.dim() - 1)))


def goodness(z: Tensor) -> Tensor:
    """Per-sample goodness: the mean squared activation."""
    return z.flatten(1).square().mean(dim=1)


def ff_pass(blocks: Sequence[Callable[[Tensor], Tensor]], x: Tensor) -> list[Tensor]:
    """Block outputs of the FF network (normalized, detached inputs) for already embedded ``x``."""
    outs, h = [], x
    for block in blocks:
        h = block(rms_normalize(h.detach()))
        outs.append(h)
    return outs


def ff_loss(
    blocks: Sequence[Callable[[Tensor], Tensor]], classifier: nn.Module, x: Tensor, y: Tensor,
    num_classes: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(the FF objective of one batch + the readout's cross-entropy, the readout's logits)."""
    wrong = (y + torch.randint(1, num_classes, y.shape, device=y.device)) % num_classes
    pos = ff_pass(blocks, embed_label(x, y, num_classes))
    neg = ff_pass(blocks, embed_label(x, wrong, num_classes))
    total = x.new_zeros(())
    for zp, zn in zip(pos, neg, strict=True):
        total = total + F.softplus(FF_THRESHOLD - goodness(zp)).mean()
        total = total + F.softplus(goodness(zn) - FF_THRESHOLD).mean()
    with torch.no_grad():
        last = ff_pass(blocks, embed_label(x, None, num_classes))[-1]
    logits = classifier(last)
    return total + F.cross_entropy(logits, y), logits


@torch.no_grad()
def ff_predict(blocks: Sequence[Callable[[Tensor], Tensor]], x: Tensor, num_classes: int) -> Tensor:
    """The label whose embedding gives the highest goodness summed over the blocks."""
    scores = []
    for c in range(num_classes):
        labels = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        outs = ff_pass(blocks, embed_label(x, labels, num_classes))
        scores.append(torch.stack([goodness(z) for z in outs]).sum(dim=0))
    return torch.stack(scores, dim=1).argmax(dim=1)


class FFView(nn.Module):
    """The network a Forward-Forward model computes, on neutrally embedded inputs: blocks with
    RMS-normalized inputs, then the readout (what the plane and the probes measure)."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.blocks = model.blocks
        self.block_names: list[str] = list(model.block_names)

    def forward(
        self, x: Tensor, return_blocks: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits, or ``(logits, block outputs)`` when ``return_blocks`` is true."""
        outs = ff_pass(self.model.blocks, embed_label(x, None, self.num_classes))
        logits = self.model.classifier(outs[-1])
        return (logits, outs) if return_blocks else logits


class ForwardForward(Method):
    """Goodness of positive (true label) against negative (wrong label) data, per block."""

    name = "forward_forward"
    argmax_prediction = False

    @classmethod
    def measured(cls, model: nn.Module, num_classes: int) -> nn.Module:
        """The network on neutrally embedded inputs."""
        return FFView(model, num_classes)

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """Every block's goodness loss plus the readout's cross-entropy."""
        return ff_loss(self.blocks(), self.model.classifier, x, y, self.num_classes)

    def predict(self, x: Tensor, logits: Any) -> Tensor:
        """The label of highest goodness."""
        return ff_predict(self.model.blocks, x, self.num_classes)
