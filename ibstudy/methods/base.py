"""The protocol every training method follows: *what* is learned, never *how* a step runs.

A method owns its objective, its auxiliary modules (heads, projections), which parameters train in
which stage and how it predicts; :mod:`ibstudy.engine` owns precision, memory format, compile,
torchrun and device data; :class:`ibstudy.training.Trainer` runs the loop and never asks which
method it runs. Config rules of a method live in its :meth:`Method.check` (docs/method.md §7, and
its section "How to add a method").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ibstudy.losses import cross_entropy

if TYPE_CHECKING:
    from ibstudy.config import TrainConfig

__all__ = ["STAGELESS", "Method"]

#: the stage of a method that trains the whole network throughout (no stages)
STAGELESS = -1


class Method:
    """One training method on a block model (``model.blocks``, ``model.classifier``).

    Subclasses set the class attributes, build their auxiliary modules into ``self.modules`` (stored
    in checkpoints as ``heads``) and implement :meth:`loss`; the rest has working defaults.
    """

    #: the name in the registry and in ``TrainConfig.method``
    name: ClassVar[str] = ""
    #: trains its blocks through auxiliary heads (``head`` and ``local_loss`` apply; may add the
    #: nHSIC regularizer); the other methods take head "none" and the default local loss
    uses_heads: ClassVar[bool] = False
    #: trains in stages (one block at a time, then the classifier), ``epochs`` per stage
    staged: ClassVar[bool] = False
    #: predicts the argmax of the classifier's logits (per-image outcomes can be stored)
    argmax_prediction: ClassVar[bool] = True

    # ------------------------------------------------------------------ config rules
    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """Raise ValueError naming the field for a setting this method does not accept."""
        from ibstudy.methods import layerwise_methods

        if cfg.head != "none":
            raise ValueError(
                f"head must be 'none' when method={cfg.method!r} (it has no auxiliary heads; "
                f"heads belong to the layer-wise methods), got {cfg.head!r}"
            )
        if cfg.local_loss != "cross_entropy":
            raise ValueError(
                f"local_loss must be 'cross_entropy' when method={cfg.method!r}, got "
                f"{cfg.local_loss!r}"
            )
        if cfg.nhsic_reg != "none":
            allowed = " or ".join(repr(m) for m in layerwise_methods())
            raise ValueError(
                f"nhsic_reg={cfg.nhsic_reg!r} needs a layer-wise method ({allowed}), got "
                f"method={cfg.method!r}; use nhsic_reg='none'"
            )

    @classmethod
    def stages(cls, cfg: TrainConfig) -> int:
        """How many times ``cfg.epochs`` the run trains (1 unless the method is staged)."""
        return 1

    @classmethod
    def preset_defaults(cls, preset: str) -> dict[str, Any]:
        """Preset fields this method changes (before the user's overrides)."""
        return {"head": "linear"} if cls.uses_heads else {}

    @classmethod
    def measured(cls, model: nn.Module, num_classes: int) -> nn.Module:
        """The network the plane and the probes measure, given the trained block model."""
        return model

    # ------------------------------------------------------------------ one run
    def __init__(self, cfg: TrainConfig, model: nn.Module, num_classes: int,
                 input_shape: tuple[int, int, int]) -> None:  # fmt: skip
        """Hold the run's model; subclasses build their auxiliary modules here (in RNG order)."""
        self.cfg = cfg
        self.model = model
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.modules = nn.ModuleList()
        self.parts: dict[str, Callable[..., Any]] = dict(self.compilable())

    def compilable(self) -> dict[str, nn.Module]:
        """The modules the engine may compile, by name; :meth:`loss` calls them via ``parts``."""
        return {f"blocks.{k}": block for k, block in enumerate(self.model.blocks)}

    def use(self, parts: dict[str, Callable[..., Any]]) -> None:
        """Call ``parts`` (compiled versions, by name) from now on; names left out run eagerly."""
        self.parts = {**dict(self.compilable()), **parts}

    def blocks(self) -> list[Callable[..., Any]]:
        """The blocks as the loss calls them (compiled where the engine compiled them)."""
        return [self.parts[f"blocks.{k}"] for k in range(len(self.model.blocks))]

    @property
    def views(self) -> int:
        """Augmented views per training image the loss needs (2 for a contrastive loss)."""
        return 1

    @property
    def scores_heads(self) -> bool:
        """True when ``modules`` are per-block classifiers whose test accuracy is reported."""
        return False

    def stage_of(self, epoch: int) -> int:
        """The stage that trains ``epoch`` (1-based); :data:`STAGELESS` for unstaged methods."""
        return STAGELESS

    def trainable(self, stage: int) -> list[nn.Parameter]:
        """The parameters the optimizer steps in ``stage``."""
        return [*self.model.parameters(), *self.modules.parameters()]

    def train_mode(self, stage: int) -> None:
        """Set train/eval modes for ``stage`` (frozen parts keep their BatchNorm statistics)."""
        self.model.train()
        self.modules.train()

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        """(the objective of one batch, the logits its training accuracy is read from); ``x`` may
        hold ``views`` stacked copies of the ``y.shape[0]`` images."""
        raise NotImplementedError

    def predict(self, x: Tensor, logits: Tensor) -> Tensor:
        """The method's own prediction for images ``x`` whose classifier gave ``logits``."""
        return logits.argmax(1)

    def view(self) -> nn.Module:
        """The network the plane and the probes measure."""
        return self.measured(self.model, self.num_classes)

    def readout(self, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The final classifier on detached features ``h``: (its cross-entropy, its logits)."""
        n_views = h.shape[0] // y.shape[0]
        logits = self.model.classifier(h.detach())
        return cross_entropy(logits, y.repeat(n_views)), logits[: y.shape[0]]


def no_grad_blocks(blocks: list[Callable[..., Any]], h: Tensor) -> Tensor:
    """``h`` through ``blocks`` without recording gradients."""
    with torch.no_grad():
        for block in blocks:
            h = block(h)
    return h
