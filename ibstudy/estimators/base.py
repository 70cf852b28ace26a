"""What an estimator of the information plane is: one small interface (docs/method.md §3, §10).

An :class:`Estimator` turns one chunk of the evaluation set into a measurer: given the chunk's
inputs X and labels Y (and the :class:`~ibstudy.config.MeasureConfig`), it caches what does not
depend on the layer, and its measurer returns, per layer, the chunk's value of (X;Z) and (Y;Z) and
the same value with the samples of Z shuffled by each floor permutation (:class:`ChunkValues`).
Chunking, the floor's permutations and the summary over chunks are shared by every estimator
(:mod:`ibstudy.estimators.plane`). Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ibstudy.config import MeasureConfig

__all__ = ["BANDWIDTH_KERNELS", "ChunkMeasurer", "ChunkValues", "Estimator", "Floor"]

#: the kernel width rule every kernel estimator shares: MeasureConfig.bandwidth -> kernel of
#: :func:`ibstudy.hsic.gram` (fixed: sigma * sqrt(d), the paper's; median: per chunk)
BANDWIDTH_KERNELS: dict[str, str] = {"fixed": "gaussian", "median": "gaussian_median"}


class ChunkValues(NamedTuple):
    """One layer on one chunk: the values of (X;Z) and (Y;Z) and, per floor permutation, the same
    with the samples of Z shuffled (empty tuples without a floor)."""

    xz: float
    yz: float
    floor_xz: tuple[float, ...]
    floor_yz: tuple[float, ...]


class Floor(NamedTuple):
    """A chunk's floor permutations (none without a floor) and the seed they were drawn from:
    ``torch.randperm(m, generator=torch.Generator().manual_seed(seed))``, one after another."""

    perms: tuple[Tensor, ...]
    seed: int


#: measures the layers of one chunk: layer name -> representation (m, ...) to their values
ChunkMeasurer = Callable[[Mapping[str, "Tensor"]], dict[str, ChunkValues]]


@dataclass(frozen=True)
class Estimator:
    """One registered estimator: its name (``MeasureConfig.estimator``), a title for figures, the
    unit of its values, and ``settings``: the MeasureConfig fields beyond the shared ones that it
    reads (they enter its digest and are written as table columns; other estimators leave them out).

    Subclasses implement :meth:`chunk` and, when they have settings of their own, :meth:`check`.
    """

    name: str
    title: str
    unit: str
    settings: tuple[str, ...] = ()

    def check(self, mcfg: MeasureConfig) -> None:
        """Raise ValueError naming a bad value of one of this estimator's own settings."""

    def chunk(
        self,
        x: Tensor,
        y: Tensor,
        mcfg: MeasureConfig,
        floor: Floor,
        device: torch.device,
    ) -> ChunkMeasurer:
        """Cache one chunk's X side (``x``, m samples) and Y side (``y``, 1-D integer labels) on
        ``device``; the measurer it returns gives each layer's :class:`ChunkValues`, the floor
        being the value with Z's samples reordered by each of ``floor.perms`` (``z[perm]``)."""
        raise NotImplementedError(f"estimator {self.name!r} does not implement chunk()")
