"""nHSIC, the paper's estimator: NOCCO ``tr(R_X R_Z)`` with ``R = G (G + eps m I)^-1`` (docs/method.md §3).

Computed per chunk by :class:`ibstudy.hsic.InfoPlane` (X and Y sides factorized once, one Cholesky
factorization of Z per layer); its floor shuffles the samples of Z with the chunk's permutations,
which InfoPlane draws from the same seed. Reads eps (the ridge) besides the shared settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibstudy.estimators.base import ChunkMeasurer, ChunkValues, Estimator, Floor

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ibstudy.config import MeasureConfig

__all__ = ["NHSIC", "Nocco"]


@dataclass(frozen=True)
class Nocco(Estimator):
    """A NOCCO estimator computed by :class:`ibstudy.hsic.InfoPlane`; ``normalized`` divides by
    ``sqrt(tr(R_X^2) tr(R_Z^2))`` (the CKA form)."""

    normalized: bool = False

    def chunk(
        self, x: Tensor, y: Tensor, mcfg: MeasureConfig, floor: Floor, device: torch.device
    ) -> ChunkMeasurer:
        """One chunk's InfoPlane (its X and Y operators and permuted copies cached)."""
        from ibstudy.hsic import InfoPlane

        k = len(floor.perms)
        plane = InfoPlane(
            x, y, chunk_size=x.shape[0], sigma=mcfg.sigma, eps=mcfg.eps, device=device,
            floor_perms=k, seed=floor.seed, bandwidth=mcfg.bandwidth, normalized=self.normalized,
        )  # fmt: skip

        def measure(reps: Mapping[str, Tensor]) -> dict[str, ChunkValues]:
            out = plane.measure_chunk(0, reps)
            return {
                name: ChunkValues(
                    r["nhsic_xz"],
                    r["nhsic_yz"],
                    tuple(r[f"floor_xz/{j}"] for j in range(k)),
                    tuple(r[f"floor_yz/{j}"] for j in range(k)),
                )  # fmt: skip
                for name, r in out.items()
            }

        return measure


#: the paper's estimator (unbounded: nHSIC(X;X) is about m - 1)
NHSIC = Nocco("nhsic", "nHSIC (NOCCO)", "nHSIC")
