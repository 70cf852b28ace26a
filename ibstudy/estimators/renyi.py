"""Matrix-based Rényi alpha-order mutual information (Sanchez Giraldo, Rao & Príncipe 2015): a
non-HSIC estimator of the plane, in bits (docs/method.md §3).

Per chunk, ``I(X;Z) = S(A_X) + S(A_Z) - S(A_X o A_Z / tr(A_X o A_Z))`` on trace-normalized Gram
matrices (:mod:`ibstudy.renyi`), X and Z under the nHSIC plane's kernel width rule (``bandwidth``,
``sigma``), Y under the class-equality Gram. Reads ``alpha`` (> 0, != 1; default 1.01), not eps.
The floor is the same value with the samples of Z shuffled by the chunk's permutations: a shuffle
keeps S(A_Z), so only the joint entropy is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibstudy.estimators.base import BANDWIDTH_KERNELS, ChunkMeasurer, ChunkValues, Estimator, Floor

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ibstudy.config import MeasureConfig

__all__ = ["RENYI", "RenyiMI"]


@dataclass(frozen=True)
class RenyiMI(Estimator):
    """The matrix-based Rényi mutual information of order ``MeasureConfig.alpha``."""

    def check(self, mcfg: MeasureConfig) -> None:
        """alpha must be > 0 and != 1 (:func:`ibstudy.renyi.check_alpha`)."""
        from ibstudy.renyi import check_alpha

        check_alpha(mcfg.alpha)

    def chunk(
        self, x: Tensor, y: Tensor, mcfg: MeasureConfig, floor: Floor, device: torch.device
    ) -> ChunkMeasurer:
        """The chunk's trace-1 Grams of X and Y and their entropies, cached."""
        from ibstudy.renyi import data_gram, renyi_entropy, renyi_joint_entropy

        kernel, sigma, alpha = BANDWIDTH_KERNELS[mcfg.bandwidth], mcfg.sigma, mcfg.alpha

        def trace_one(t: Tensor, kern: str) -> Tensor:
            return data_gram(t.to(device), kern, sigma)

        sides = [
            (a, renyi_entropy(a, alpha)) for a in (trace_one(x, kernel), trace_one(y, "linear"))
        ]
        perms = [p.to(sides[0][0].device) for p in floor.perms]

        def measure(reps: Mapping[str, Tensor]) -> dict[str, ChunkValues]:
            out = {}
            for name, z in reps.items():
                az = trace_one(z, kernel)
                s_z = renyi_entropy(az, alpha)
                shuffled = [az[p][:, p] for p in perms]  # the Gram of z[p]
                xz, yz = (
                    [s + s_z - renyi_joint_entropy(a, b, alpha) for b in (az, *shuffled)]
                    for a, s in sides
                )
                out[name] = ChunkValues(xz[0], yz[0], tuple(xz[1:]), tuple(yz[1:]))
            return out

        return measure


RENYI = RenyiMI("renyi", "Rényi MI (matrix-based)", "bits", settings=("alpha",))
