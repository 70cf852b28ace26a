"""Layer-wise training: every block learns from a local loss on an auxiliary head of its own.

Simultaneous (all blocks in every step, no gradient between blocks) and sequential (one block at a
time, then the classifier); the local loss is cross-entropy, the supervised contrastive loss or
similarity matching; an optional nHSIC regularizer subtracts lambda x nHSIC(Z_k; X) (``global``) or
nHSIC(Z_k; the block's input) (``local``) (docs/method.md §7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ibstudy.checks import check_choice
from ibstudy.heads import HEADS, build_head
from ibstudy.hsic import differentiable_operators, gaussian_operator
from ibstudy.losses import cross_entropy, similarity_matching_loss, supcon_loss
from ibstudy.methods.base import Method, no_grad_blocks

if TYPE_CHECKING:
    from ibstudy.config import TrainConfig

__all__ = ["SUPCON_DIM", "Layerwise", "LayerwiseSequential"]

SUPCON_DIM = (
    128  # [ours] projection size of the auxiliary heads under the supervised contrastive loss
)


class Layerwise(Method):
    """All blocks train together, each on its own head's local loss; the classifier reads the
    detached last block."""

    name = "layerwise"
    uses_heads = True

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """head among the heads; the contrastive loss needs augmented views."""
        check_choice("head", cfg.head, HEADS)
        if cfg.local_loss == "supcon" and not cfg.augment:
            raise ValueError("local_loss='supcon' needs two augmented views: set augment=True")

    def __init__(self, cfg: TrainConfig, model: nn.Module, num_classes: int,
                 input_shape: tuple[int, int, int]) -> None:  # fmt: skip
        """One auxiliary head per block (classifier, or a projection for the contrastive loss)."""
        super().__init__(cfg, model, num_classes, input_shape)
        out_dim = SUPCON_DIM if cfg.local_loss == "supcon" else num_classes
        shapes = model.block_output_shapes(input_shape[0], input_shape[1])
        self.modules = nn.ModuleList(build_head(cfg.head, s, out_dim) for s in shapes)

    @property
    def views(self) -> int:
        """Two augmented views under the supervised contrastive loss, else one."""
        return 2 if self.cfg.local_loss == "supcon" else 1

    @property
    def scores_heads(self) -> bool:
        """The heads are classifiers under the cross-entropy local loss."""
        return self.cfg.local_loss == "cross_entropy"

    def local_loss(self, head_out: Tensor, y: Tensor) -> Tensor:
        """The local loss of one head's output (``views`` stacked copies of the batch)."""
        n_views = head_out.shape[0] // y.shape[0]
        loss = self.cfg.local_loss
        if loss == "cross_entropy":
            return cross_entropy(head_out, y.repeat(n_views))
        if loss == "supcon":
            b = y.shape[0]
            return supcon_loss(head_out[:b], head_out[b:], y)
        return similarity_matching_loss(head_out, y.repeat(n_views), self.num_classes)

    def regularizer(self, x: Tensor, inputs: list[Tensor], zs: list[Tensor]) -> Tensor:
        """lambda x the sum over the blocks of nHSIC(Z_k; X) (``global``) or nHSIC(Z_k; the block's
        input) (``local``) on the batch, with the plane's kernel (sigma * sqrt(d), eps), all blocks in
        one batched factorization; 0 without the regularizer. ``inputs[k]`` is block k's input and,
        for k >= 1, ``zs[k - 1]`` (so its operator is reused)."""
        cfg = self.cfg
        if cfg.nhsic_reg == "none":
            return zs[0].new_zeros(())
        r_z = differentiable_operators(zs, sigma=cfg.sigma, eps=cfg.eps)
        if cfg.nhsic_reg == "global":  # the network input's operator, shared by the blocks
            r_other = gaussian_operator(x, cfg.sigma, cfg.eps)
        else:  # block k's input is block k-1's output: its operator is already in r_z
            first = gaussian_operator(inputs[0], cfg.sigma, cfg.eps).to(r_z.dtype)
            r_other = torch.cat([first[None], r_z[:-1].detach()])
        values = (r_z * r_other.to(r_z.dtype)).sum(dim=(-2, -1))
        return cfg.nhsic_lambda * values.sum().to(zs[0].dtype)

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """Every block's local loss on its detached input, minus the regularizer, plus the
        classifier's cross-entropy on the detached last block."""
        h = x
        total = x.new_zeros(())
        inputs, zs = [], []
        for block, head in zip(self.blocks(), self.modules, strict=True):
            z = block(h.detach())
            total = total + self.local_loss(head(z), y)
            inputs.append(h)
            zs.append(z)
            h = z
        total = total - self.regularizer(x, inputs, zs)
        readout, logits = self.readout(h, y)
        return total + readout, logits


class LayerwiseSequential(Layerwise):
    """One block at a time (``epochs`` per stage, earlier blocks frozen), then the classifier."""

    name = "layerwise_sequential"
    staged = True

    @classmethod
    def stages(cls, cfg: TrainConfig) -> int:
        """One stage per block, then one for the classifier."""
        return cfg.num_blocks() + 1

    @classmethod
    def preset_defaults(cls, preset: str) -> dict[str, Any]:
        """The paper trains 50 epochs per stage without milestones."""
        extra = {"epochs": 50, "milestones": ()} if preset == "paper" else {}
        return {**super().preset_defaults(preset), **extra}

    def stage_of(self, epoch: int) -> int:
        """0..L-1 train the blocks, L the classifier."""
        return (epoch - 1) // self.cfg.epochs

    def trainable(self, stage: int) -> list[nn.Parameter]:
        """The stage's block and its head, or the classifier in the last stage."""
        s, blocks = max(stage, 0), self.model.blocks
        if s < len(blocks):
            return [*blocks[s].parameters(), *self.modules[s].parameters()]
        return list(self.model.classifier.parameters())

    def train_mode(self, stage: int) -> None:
        """Frozen blocks keep their BatchNorm statistics."""
        super().train_mode(stage)
        for k in range(min(stage, len(self.model.blocks))):
            self.model.blocks[k].eval()

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """Frozen blocks run without gradient; the stage's block learns from its local loss (minus
        the regularizer), or the classifier from its cross-entropy."""
        blocks, n = self.blocks(), len(self.model.blocks)
        h = no_grad_blocks(blocks[: min(stage, n)], x)
        if stage >= n:
            logits = self.model.classifier(h)
            return cross_entropy(logits, y.repeat(h.shape[0] // y.shape[0])), logits[: y.shape[0]]
        z = blocks[stage](h)
        loss = self.local_loss(self.modules[stage](z), y) - self.regularizer(x, [h], [z])
        with torch.no_grad():
            logits = self.model.classifier(no_grad_blocks(blocks[stage + 1 :], z))
        return loss, logits[: y.shape[0]]
