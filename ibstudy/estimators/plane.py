"""The chunked information-plane evaluator every registered estimator runs in (docs/method.md §3).

:class:`Plane` splits a fixed evaluation set into chunks of m samples, draws each chunk's floor
permutations (``floor_perms`` of them from a generator seeded ``floor_seed + i``, as
:class:`ibstudy.hsic.InfoPlane` does), lets the estimator of the :class:`~ibstudy.config.MeasureConfig`
cache the chunk's X and Y sides, and summarizes the per-chunk values of every layer: the mean over
chunks and its population std, and the floor's mean and its std (ddof=1) over the k permutation
replicates (replicate j averages permutation j over the chunks; NaN for k = 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from ibstudy.config import MeasureConfig
from ibstudy.estimators import get_estimator
from ibstudy.estimators.base import Floor

__all__ = ["Plane", "floor_permutations"]


def floor_permutations(m: int, count: int, seed: int) -> tuple[Tensor, ...]:
    """``count`` permutations of ``range(m)`` drawn one after another from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randperm(m, generator=gen) for _ in range(count))


def _check_rows(name: str, z: object, rows: int, what: str) -> None:
    if not isinstance(z, Tensor) or z.dim() == 0 or z.shape[0] != rows:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"layer {name!r}: expected a tensor with {what} rows, got {shape}")


class Plane:
    """Values of (X;Z) and (Y;Z) per layer under one MeasureConfig's estimator, chunk by chunk.

    ``x_eval`` holds ``mcfg.eval_size`` inputs and ``y_eval`` their integer class labels (>= 0);
    ``device`` (default: that of ``x_eval``) holds the caches and does the work (``"mps"`` means
    the CPU: no float64 there). Results per chunk are plain dicts of floats (``measure_chunk``), so
    parts measured apart (one torchrun rank each) can be gathered and then summarized.
    """

    def __init__(
        self,
        x_eval: Tensor,
        y_eval: Tensor,
        mcfg: MeasureConfig,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(mcfg, MeasureConfig):
            raise ValueError(f"mcfg must be a MeasureConfig, got {type(mcfg).__name__}")
        mcfg.validate()
        if not isinstance(x_eval, Tensor) or x_eval.dim() == 0 or len(x_eval) != mcfg.eval_size:
            got = tuple(x_eval.shape) if isinstance(x_eval, Tensor) else type(x_eval).__name__
            raise ValueError(f"x_eval must hold eval_size={mcfg.eval_size} samples, got {got}")
        if (
            not isinstance(y_eval, Tensor)
            or y_eval.dim() != 1
            or y_eval.is_floating_point()
            or y_eval.is_complex()
            or y_eval.dtype == torch.bool
        ):
            desc = (
                f"shape {tuple(y_eval.shape)}, dtype {y_eval.dtype}"
                if isinstance(y_eval, Tensor)
                else type(y_eval).__name__
            )
            raise ValueError(f"y_eval must be a 1-D integer tensor of class labels, got {desc}")
        if len(y_eval) != len(x_eval) or bool((y_eval < 0).any()):
            raise ValueError(
                f"y_eval must hold {len(x_eval)} class labels >= 0 (one per x_eval sample), got "
                f"{len(y_eval)} with min {int(y_eval.min()) if len(y_eval) else None}"
            )
        if x_eval.is_floating_point() and not bool(torch.isfinite(x_eval).all()):
            raise ValueError("x_eval contains NaN or Inf values")
        device = torch.device(device) if device is not None else x_eval.device
        self.device = torch.device("cpu") if device.type == "mps" else device
        self.mcfg = mcfg
        self.estimator = get_estimator(mcfg.estimator)
        self.chunk_size = mcfg.chunk_size
        self.num_chunks = mcfg.eval_size // mcfg.chunk_size
        self.floor_perms = mcfg.floor_perms
        self._x = x_eval.to(self.device)
        self._y = y_eval.to(self.device)
        self._measurers = []
        for i in range(self.num_chunks):
            seed = mcfg.floor_seed + i
            floor = Floor(floor_permutations(self.chunk_size, self.floor_perms, seed), seed)
            self._measurers.append(self.estimator.chunk(*self.chunk(i), mcfg, floor, self.device))

    def keys(self) -> list[str]:
        """The keys of one layer's result in :meth:`measure_chunk`."""
        keys = ["nhsic_xz", "nhsic_yz"]
        if self.floor_perms:
            keys += ["floor_xz", "floor_yz"]
            for j in range(self.floor_perms):
                keys += [f"floor_xz/{j}", f"floor_yz/{j}"]
        return keys

    def chunk(self, i: int) -> tuple[Tensor, Tensor]:
        """The i-th chunk's (x, y) on ``self.device``: what a trainer feeds the model for chunk i."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_chunks:
            raise ValueError(
                f"chunk index i must be an integer in [0, {self.num_chunks}), got {i!r}"
            )
        sl = slice(i * self.chunk_size, (i + 1) * self.chunk_size)
        return self._x[sl], self._y[sl]

    def measure_chunk(self, i: int, reps: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        """Per layer ``{"nhsic_xz", "nhsic_yz"[, "floor_xz", "floor_yz", "floor_xz/j", ...]}`` for
        chunk i (the columns keep the nHSIC names under every estimator; the table's
        ``estimator`` column says which); ``floor_*`` is the mean over the chunk's permutations."""
        self.chunk(i)  # validates i
        ready = {}
        for name, z in reps.items():
            _check_rows(name, z, self.chunk_size, str(self.chunk_size))
            z = z.detach().to(self.device)
            if z.is_floating_point() and not bool(torch.isfinite(z).all()):
                raise ValueError(f"layer {name!r} contains NaN or Inf values (chunk {i})")
            ready[name] = z
        values = self._measurers[i](ready)
        k = self.floor_perms
        out: dict[str, dict[str, float]] = {}
        for name in ready:
            v = values[name]
            if len(v.floor_xz) != k or len(v.floor_yz) != k:
                raise ValueError(
                    f"estimator {self.estimator.name!r} returned {len(v.floor_xz)} floor values "
                    f"for layer {name!r}, expected floor_perms={k}"
                )
            res = {"nhsic_xz": float(v.xz), "nhsic_yz": float(v.yz)}
            if k:
                res["floor_xz"] = sum(v.floor_xz) / k
                res["floor_yz"] = sum(v.floor_yz) / k
                for j in range(k):
                    res[f"floor_xz/{j}"] = float(v.floor_xz[j])
                    res[f"floor_yz/{j}"] = float(v.floor_yz[j])
            out[name] = res
        return out

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
        """Whole representations (N, ...) per layer: ``measure_chunk`` over all chunks, then ``summarize``."""
        n = self.num_chunks * self.chunk_size
        for name, z in reps.items():
            _check_rows(name, z, n, f"N = {n}")
        m = self.chunk_size
        per_chunk = [
            self.measure_chunk(i, {k: z[i * m : (i + 1) * m] for k, z in reps.items()})
            for i in range(self.num_chunks)
        ]
        return self.summarize(per_chunk)
