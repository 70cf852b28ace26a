"""What every information-plane evaluator shares: a fixed evaluation set cut into chunks of m
samples, the keys of one layer's per-chunk result, and the per-layer summary table (docs/method.md §3).

:class:`ChunkedPlane` is the base of :class:`ibstudy.hsic.InfoPlane` (NOCCO, cached factors) and
:class:`ibstudy.estimators.plane.Plane` (any registered estimator); a subclass sets the attributes
below and implements ``measure_chunk``. The summary: per layer, the mean over chunks and its
population std (ddof=0); with a floor, its mean and its std (ddof=1) over the k permutation
replicates (replicate j averages permutation j over the chunks; NaN for k = 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

__all__ = ["ChunkedPlane", "check_rows"]


def check_rows(name: str, z: object, rows: int, what: str) -> None:
    """ValueError unless layer ``name``'s ``z`` is a tensor with ``rows`` rows (``what`` says so)."""
    if not isinstance(z, Tensor) or z.dim() == 0 or z.shape[0] != rows:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"layer {name!r}: expected a tensor with {what} rows, got {shape}")


class ChunkedPlane:
    """The chunking, keys and summary of a plane evaluator; subclasses set ``num_chunks``,
    ``chunk_size``, ``floor_perms``, ``_x`` and ``_y`` and implement ``measure_chunk``."""

    num_chunks: int
    chunk_size: int
    floor_perms: int
    _x: Tensor
    _y: Tensor

    def measure_chunk(self, i: int, reps: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        """Per layer, the :meth:`keys` of chunk i's values (implemented by each evaluator)."""
        raise NotImplementedError

    def keys(self) -> list[str]:
        """The keys of one layer's result in :meth:`measure_chunk`."""
        keys = ["nhsic_xz", "nhsic_yz"]
        if self.floor_perms:
            keys += ["floor_xz", "floor_yz"]
            for j in range(self.floor_perms):
                keys += [f"floor_xz/{j}", f"floor_yz/{j}"]
        return keys

    def chunk(self, i: int) -> tuple[Tensor, Tensor]:
        """The i-th chunk's (x, y) on the evaluator's device: what a trainer feeds the model."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_chunks:
            raise ValueError(
                f"chunk index i must be an integer in [0, {self.num_chunks}), got {i!r}"
            )
        sl = slice(i * self.chunk_size, (i + 1) * self.chunk_size)
        return self._x[sl], self._y[sl]

    def summarize(self, per_chunk: Sequence[Mapping[str, Mapping[str, float]]]) -> pd.DataFrame:
        """One row per layer: means over all chunks and their (population, ddof=0) std over chunks;
        with a floor, its mean and its std over the permutation replicates (ddof=1; NaN for k = 1)."""
        if len(per_chunk) != self.num_chunks:
            raise ValueError(
                f"per_chunk must hold one result per chunk ({self.num_chunks}), got {len(per_chunk)}"
            )
        layers = list(per_chunk[0])
        for j, res in enumerate(per_chunk):
            if list(res) != layers:
                raise ValueError(f"per_chunk[{j}] has layers {list(res)}, expected {layers}")
        rows = []
        for layer in layers:
            vals = {
                k: torch.tensor([res[layer][k] for res in per_chunk], dtype=torch.float64)
                for k in self.keys()
            }
            row: dict[str, object] = {"layer": layer}
            for side in ("xz", "yz"):
                row[f"nhsic_{side}"] = float(vals[f"nhsic_{side}"].mean())
            for side in ("xz", "yz"):
                row[f"nhsic_{side}_std"] = float(vals[f"nhsic_{side}"].std(correction=0))
            if self.floor_perms:
                for side in ("xz", "yz"):
                    row[f"floor_{side}"] = float(vals[f"floor_{side}"].mean())
                    reps = torch.stack(
                        [vals[f"floor_{side}/{j}"].mean() for j in range(self.floor_perms)]
                    )
                    row[f"floor_{side}_std"] = (
                        float(reps.std(correction=1)) if self.floor_perms > 1 else math.nan
                    )
            rows.append(row)
        columns = ["layer", "nhsic_xz", "nhsic_yz", "nhsic_xz_std", "nhsic_yz_std"]
        if self.floor_perms:
            columns += ["floor_xz", "floor_yz", "floor_xz_std", "floor_yz_std"]
        return pd.DataFrame(rows, columns=columns)

    def measure(self, reps: Mapping[str, Tensor]) -> pd.DataFrame:
        """Whole representations (N, ...) per layer: ``measure_chunk`` over all chunks, then
        ``summarize``."""
        n = self.num_chunks * self.chunk_size
        for name, z in reps.items():
            check_rows(name, z, n, f"N = {n}")
        m = self.chunk_size
        per_chunk = [
            self.measure_chunk(i, {k: z[i * m : (i + 1) * m] for k, z in reps.items()})
            for i in range(self.num_chunks)
        ]
        return self.summarize(per_chunk)
