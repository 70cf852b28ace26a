"""The chunked information-plane evaluator every registered estimator runs in (docs/method.md §3).

:class:`Plane` splits a fixed evaluation set into chunks of m samples, draws each chunk's floor
permutations (``floor_perms`` of them from a generator seeded ``floor_seed + i``, as
:class:`ibstudy.hsic.InfoPlane` does), lets the estimator of the :class:`~ibstudy.config.MeasureConfig`
cache the chunk's X and Y sides, and summarizes the per-chunk values of every layer as every plane
does (:class:`ibstudy.chunked.ChunkedPlane`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ibstudy.chunked import ChunkedPlane, check_rows
from ibstudy.config import MeasureConfig
from ibstudy.estimators import get_estimator
from ibstudy.estimators.base import Floor

__all__ = ["Plane", "floor_permutations"]


def floor_permutations(m: int, count: int, seed: int) -> tuple[Tensor, ...]:
    """``count`` permutations of ``range(m)`` drawn one after another from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randperm(m, generator=gen) for _ in range(count))


class Plane(ChunkedPlane):
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

    def measure_chunk(self, i: int, reps: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        """Per layer ``{"nhsic_xz", "nhsic_yz"[, "floor_xz", "floor_yz", "floor_xz/j", ...]}`` for
        chunk i (the columns keep the nHSIC names under every estimator; the table's
        ``estimator`` column says which); ``floor_*`` is the mean over the chunk's permutations."""
        self.chunk(i)  # validates i
        ready = {}
        for name, z in reps.items():
            check_rows(name, z, self.chunk_size, str(self.chunk_size))
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
