"""Geometry beside information: how clustered by class a layer's features are (critique: Goldfeld et al.
2019; docs/method.md, "Geometry, not information").

For a deterministic network I(X;Z) is constant or infinite, so what an estimator reads as compression
may be the clustering of same-class samples. This module measures that clustering directly, per block
and stored epoch, on the plane's own evaluation chunks (the first ``eval_size`` test images in chunks
of m; values averaged over the chunks, their population std over the chunks kept):

- ``snn_loss``: the soft-nearest-neighbour loss (Frosst et al. 2019; docs/method.md §4) with the
  plane's kernel on Z (bandwidth rule ``fixed``: exp(-||z - z'||^2 / (2 sigma^2 d)), i.e. temperature
  T = 2 sigma^2 d; ``median``: the median rule per chunk), so that it is the clustering that
  nHSIC(Y;Z) sees (the paper's Theorem 1). Lower = more clustered by class;
- ``snn_chance``: the same loss for a kernel that ignores the geometry (every pair weighted alike),
  -mean_i log((n_{y_i} - 1) / (m - 1)): the value without class structure;
- ``within_ratio``: within-class sum of squares / total sum of squares of the flattened features,
  in [0, 1] (0: every class collapsed to its mean; about (m - C) / (m - 1) without class structure).

:func:`geometry` reads a stored run's weights and caches its table in the run folder as
``measures/geometry-<bandwidth>-m<m>-<digest>.csv`` (cleared with the run's other measures on
overwrite, recomputed when older than the weights it read). :func:`geometry_vs_information` sets the
two measures against nHSIC(X;Z) and nHSIC(Y;Z) of the same layers and epochs (Spearman, per run),
:func:`correlation_summary` takes their mean over seeds with a t interval (the seed as the unit), and
:func:`plot_geometry` draws them side by side.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ibstudy.checks import check_choice, check_int_list
from ibstudy.config import MeasureConfig
from ibstudy.describe import excess
from ibstudy.estimates import paired_effect
from ibstudy.hsic import gram
from ibstudy.store import Run, atomic_write_text
from ibstudy.tables import LOGITS, check_one_estimator, check_table

__all__ = [
    "CORRELATION_COLUMNS",
    "GEOMETRY_COLUMNS",
    "GEOMETRY_VALUES",
    "PAIRS",
    "GeometrySettings",
    "class_geometry",
    "correlation_summary",
    "geometry",
    "geometry_cache_path",
    "geometry_runs",
    "geometry_vs_information",
    "plot_geometry",
    "snn_from_gram",
    "within_class_ratio",
]

#: the per-layer values :func:`geometry` measures (and their spread over chunks, ``<value>_std``)
GEOMETRY_VALUES: tuple[str, ...] = ("snn_loss", "snn_chance", "within_ratio")
_RUN = ["run", "method", "head", "seed", "dataset", "num_classes"]
_SETTINGS = ["eval_size", "chunk_size", "bandwidth", "sigma", "geometry_id"]
GEOMETRY_COLUMNS: list[str] = [
    *_RUN, "epoch", "layer", "layer_index", *GEOMETRY_VALUES,
    *(f"{v}_std" for v in GEOMETRY_VALUES), *_SETTINGS,
]  # fmt: skip
#: the (geometry, information) pairs :func:`geometry_vs_information` correlates, with the sign each
#: has when the plane's readings are the clustering (lower SNN loss = higher nHSIC(Y;Z); a smaller
#: within-class share = lower nHSIC(X;Z), i.e. "compression" = clustering)
PAIRS: dict[tuple[str, str], int] = {
    ("snn_loss", "nhsic_yz"): -1,
    ("within_ratio", "nhsic_xz"): 1,
    ("snn_loss", "nhsic_xz"): 1,
    ("within_ratio", "nhsic_yz"): -1,
}
SCOPES: tuple[str, ...] = ("pooled", "within_layer")
VALUE_CHOICES: tuple[str, ...] = ("excess", "raw")
CORRELATION_COLUMNS: list[str] = [
    "run", "method", "head", "seed", "geometry", "information", "value", "scope", "expected_sign",
    "spearman", "n_points",
]  # fmt: skip
#: bump when the computation changes: old caches are then not read
_VERSION = 1


# ----------------------------------------------------------------------------------------------
# one chunk
# ----------------------------------------------------------------------------------------------


def _check_labels(z: Tensor, y: Tensor) -> None:
    if not isinstance(z, Tensor) or z.dim() < 2 or z.shape[0] < 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (m >= 2, ...), got {shape}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"y must be a 1-D tensor of {z.shape[0]} integer class labels")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")


def snn_from_gram(k: Tensor, y: Tensor) -> tuple[float, float]:
    """(SNN loss, its chance value) from a kernel Gram ``k`` (m x m) and labels ``y``: -mean_i log of
    the same-class share of row i's off-diagonal mass; points without a same-class partner are left
    out of both means (ValueError when none has one)."""
    if not isinstance(k, Tensor) or k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError("k must be a square Gram matrix")
    _check_labels(k, y)
    kd = k.to(torch.float64).clone().fill_diagonal_(0.0)
    same = (y[:, None] == y[None, :]).fill_diagonal_(False)
    partners = same.sum(dim=1)
    ok = partners > 0
    if not bool(ok.any()):
        raise ValueError("y needs at least two samples of one class (an SNN loss needs partners)")
    share = (kd * same).sum(dim=1)[ok] / kd.sum(dim=1)[ok]
    m = k.shape[0]
    chance = partners[ok].to(torch.float64) / (m - 1)
    return float(-torch.log(share).mean()), float(-torch.log(chance).mean())


def within_class_ratio(z: Tensor, y: Tensor) -> float:
    """Within-class / total sum of squares of the flattened rows of ``z`` (float64); NaN for a
    constant representation."""
    _check_labels(z, y)
    f = z.detach().reshape(z.shape[0], -1).to(torch.float64)
    total = float((f - f.mean(dim=0)).square().sum())
    if total == 0.0:
        return math.nan
    within = 0.0
    for label in torch.unique(y):
        part = f[y == label]
        within += float((part - part.mean(dim=0)).square().sum())
    return within / total


def class_geometry(
    z: Tensor, y: Tensor, bandwidth: str = "fixed", sigma: float = 5.0
) -> dict[str, float]:
    """``snn_loss``, ``snn_chance`` and ``within_ratio`` of one chunk (features ``z``, labels ``y``),
    the SNN loss under the plane's Gaussian kernel (``bandwidth`` ``fixed``: sigma sqrt(d);
    ``median``: the median rule), computed in float64."""
    check_choice("bandwidth", bandwidth, ("fixed", "median"))
    _check_labels(z, y)
    f = z.detach().reshape(z.shape[0], -1).to(torch.float64)
    kernel = "gaussian" if bandwidth == "fixed" else "gaussian_median"
    loss, chance = snn_from_gram(gram(f, kernel, sigma), y)
    return {"snn_loss": loss, "snn_chance": chance, "within_ratio": within_class_ratio(f, y)}


# ----------------------------------------------------------------------------------------------
# a stored run
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometrySettings:
    """The part of a :class:`MeasureConfig` the geometry reads: evaluation subset, m, kernel."""

    eval_size: int
    chunk_size: int
    bandwidth: str
    sigma: float

    @classmethod
    def of(cls, mcfg: MeasureConfig) -> GeometrySettings:
        """The settings of a (validated) measure config."""
        return cls(mcfg.eval_size, mcfg.chunk_size, mcfg.bandwidth, float(mcfg.sigma))

    def geometry_id(self) -> str:
        """``geometry-<bandwidth>-m<m>-<10 hex digits of the settings' hash>``."""
        text = json.dumps({**self.__dict__, "version": _VERSION}, sort_keys=True)
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        return f"geometry-{self.bandwidth}-m{self.chunk_size}-{digest}"

    def columns(self) -> dict[str, object]:
        """The settings as table columns."""
        return {**self.__dict__, "geometry_id": self.geometry_id()}


def geometry_cache_path(run: Run, mcfg: MeasureConfig) -> Path:
    """The file that caches ``run``'s geometry under ``mcfg``'s evaluation subset, m and kernel."""
    return run.path / "measures" / f"{GeometrySettings.of(mcfg).geometry_id()}.csv"


def _fresh(path: Path, run: Run, epochs: Sequence[int]) -> bool:
    """Whether the cache exists and is newer than every weights file it covers (a retrain redoes it)."""
    if not path.exists():
        return False
    mtime = path.stat().st_mtime_ns
    files = [run.path / "weights" / f"epoch_{e:04d}.pt" for e in epochs]
    return all(f.exists() and f.stat().st_mtime_ns <= mtime for f in files)


def geometry(
    run: Run | str | os.PathLike[str],
    mcfg: MeasureConfig | None = None,
    epochs: Iterable[int] | None = None,
    *,
    device: str = "cpu",
    progress: bool = False,
) -> pd.DataFrame:
    """Per block and stored epoch (or the ``epochs`` asked for), the class geometry of the block's
    features on the plane's evaluation chunks under ``mcfg`` (None: the run's own estimator):
    :data:`GEOMETRY_COLUMNS`, means over the chunks and ``<value>_std`` their spread. Cached in the
    run folder (:func:`geometry_cache_path`); bad settings or missing weights raise ValueError
    before any model is loaded."""
    from ibstudy.measure import evaluating

    if not isinstance(run, Run):
        run = Run.load(run)
    cfg = run.config
    mcfg = cfg.measure_config() if mcfg is None else mcfg
    if not isinstance(mcfg, MeasureConfig):
        raise ValueError(f"mcfg must be a MeasureConfig or None, got {type(mcfg).__name__}")
    mcfg.validate(cfg.dataset)
    stored = run.stored_epochs()
    if not stored:
        raise ValueError(f"run folder {str(run.path)!r} stores no model weights: retrain it")
    wanted = stored if epochs is None else sorted(set(check_int_list("epochs", list(epochs))))
    missing = [e for e in wanted if e not in stored]
    if missing or not wanted:
        raise ValueError(f"epochs {missing or wanted} have no stored weights; stored: {stored}")
    settings = GeometrySettings.of(mcfg)
    path = geometry_cache_path(run, mcfg)
    cached = (
        pd.read_csv(path) if _fresh(path, run, wanted) else pd.DataFrame(columns=GEOMETRY_COLUMNS)
    )
    todo = [e for e in wanted if e not in set(cached["epoch"].astype(int))]
    if todo:
        from tqdm import tqdm

        from ibstudy.data import INFO, eval_subset, load_dataset

        test = load_dataset(cfg.dataset, split="test", root=cfg.data_root, download=False)
        x_eval, y_eval = eval_subset(test, mcfg.eval_size)
        m = mcfg.chunk_size
        base = {
            "run": cfg.run_id(), "method": cfg.method, "head": cfg.head, "seed": cfg.seed,
            "dataset": cfg.dataset, "num_classes": INFO[cfg.dataset].num_classes,
        }  # fmt: skip
        rows = []
        for epoch in tqdm(todo, desc=f"geometry {settings.geometry_id()}", disable=not progress):
            model = run.load_model(epoch, map_location=device)
            per_layer: dict[str, list[dict[str, float]]] = {}
            with evaluating(model):
                for start in range(0, mcfg.eval_size, m):
                    x, y = x_eval[start : start + m], y_eval[start : start + m]
                    _, zs = model(x.to(device), return_blocks=True)
                    for name, z in zip(model.block_names, zs, strict=True):
                        values = class_geometry(z.cpu(), y, settings.bandwidth, settings.sigma)
                        per_layer.setdefault(name, []).append(values)
            for index, name in enumerate(model.block_names):
                chunks = pd.DataFrame(per_layer[name])
                row = {**base, "epoch": epoch, "layer": name, "layer_index": index}
                for value in GEOMETRY_VALUES:
                    row[value] = float(chunks[value].mean())
                    row[f"{value}_std"] = float(chunks[value].std(ddof=0))
                rows.append({**row, **settings.columns()})
        fresh = pd.DataFrame(rows, columns=GEOMETRY_COLUMNS)
        cached = fresh if cached.empty else pd.concat([cached, fresh], ignore_index=True)
        cached = cached.sort_values(["epoch", "layer_index"], kind="stable", ignore_index=True)
        atomic_write_text(path, cached.to_csv(index=False))
    out = cached[cached["epoch"].astype(int).isin(wanted)]
    return out.reset_index(drop=True)[GEOMETRY_COLUMNS]


def geometry_runs(
    runs: Iterable[Run], mcfg: MeasureConfig | None = None, *, progress: bool = False
) -> pd.DataFrame:
    """:func:`geometry` of every run (each under ``mcfg``, None: its own estimator), concatenated."""
    frames = [geometry(r, mcfg, progress=progress) for r in runs]
    if not frames:
        raise ValueError("runs must hold at least one Run")
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# beside information
# ----------------------------------------------------------------------------------------------


def _information(layers: pd.DataFrame, value: str) -> pd.DataFrame:
    """The block rows of a one-estimator layers table, each (run, epoch, layer) once, with nHSIC
    read as ``value`` (above the floor or raw)."""
    info = check_one_estimator(layers)[layers["layer"] != LOGITS]
    info = info.drop_duplicates(["run", "epoch", "layer"]).copy()
    for side in ("xz", "yz"):
        info[f"nhsic_{side}"] = excess(info, side) if value == "excess" else info[f"nhsic_{side}"]
    return info


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from ibstudy.generalization import spearman

    return spearman(x, y) if len(x) >= 3 else math.nan


def geometry_vs_information(
    geometry_table: pd.DataFrame, layers: pd.DataFrame, *, value: str = "excess"
) -> pd.DataFrame:
    """Per run and each pair of :data:`PAIRS`, Spearman's correlation between a geometry measure and
    an nHSIC coordinate over the run's blocks x whole epochs (``scope`` ``pooled``) and over epochs
    within each block, averaged over the blocks (``within_layer``: how the two move in time).
    ``value`` ``excess`` reads nHSIC above its permutation floor (the study's reading), ``raw`` the
    value itself. Columns: :data:`CORRELATION_COLUMNS`."""
    check_choice("value", value, VALUE_CHOICES)
    check_table(geometry_table, ("run", "epoch", "layer", *GEOMETRY_VALUES), "geometry")
    check_table(layers, ("run", "epoch", "layer", "nhsic_xz", "nhsic_yz"), "layers")
    info = _information(layers, value)
    info = info[["run", "epoch", "layer", "nhsic_xz", "nhsic_yz"]]
    info = info.assign(epoch=pd.to_numeric(info["epoch"], errors="coerce").astype(float))
    geo = geometry_table.assign(epoch=geometry_table["epoch"].astype(float))
    joined = geo.merge(info, on=["run", "epoch", "layer"], how="inner")
    if joined.empty:
        raise ValueError(
            "geometry and layers tables share no (run, epoch, layer): measure the same runs"
        )
    rows = []
    for run_id, part in joined.groupby("run", sort=False):
        first = part.iloc[0]
        for (geo_col, info_col), sign in PAIRS.items():
            ok = part[np.isfinite(part[[geo_col, info_col]].to_numpy(dtype=float)).all(axis=1)]
            within = [
                _spearman(blk[geo_col].to_numpy(float), blk[info_col].to_numpy(float))
                for _, blk in ok.groupby("layer", sort=False)
            ]
            within = [r for r in within if math.isfinite(r)]
            for scope, rho in (
                ("pooled", _spearman(ok[geo_col].to_numpy(float), ok[info_col].to_numpy(float))),
                ("within_layer", float(np.mean(within)) if within else math.nan),
            ):
                rows.append({
                    "run": run_id, "method": first["method"], "head": first["head"],
                    "seed": first["seed"], "geometry": geo_col, "information": info_col,
                    "value": value, "scope": scope, "expected_sign": sign, "spearman": rho,
                    "n_points": len(ok),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlation_summary(
    correlations: pd.DataFrame, by: Sequence[str] = ("method", "head"), level: float = 0.95
) -> pd.DataFrame:
    """Per ``by`` group, pair and scope: the mean over runs (seeds) of the per-run Spearman
    correlation with its t interval over the runs (NaN with fewer than two), and ``n_seeds``."""
    by = list(by)
    keys = [*by, "geometry", "information", "scope"]
    check_table(correlations, [*keys, "expected_sign", "spearman"], "correlations")
    rows = []
    for key, part in correlations.groupby(keys, sort=False, dropna=False):
        rho = part["spearman"].to_numpy(dtype=float)
        rho = rho[np.isfinite(rho)]
        low = high = math.nan
        if len(rho) >= 2:
            effect = paired_effect(rho, level)
            low, high = effect.ci_low, effect.ci_high
        rows.append({
            **dict(zip(keys, key, strict=True)), "expected_sign": int(part["expected_sign"].iloc[0]),
            "n_seeds": len(rho), "mean_spearman": float(rho.mean()) if len(rho) else math.nan,
            "ci_low": low, "ci_high": high,
        })  # fmt: skip
    return pd.DataFrame(rows)


_LABELS = {
    "nhsic_xz": "nHSIC(X;Z)",
    "nhsic_yz": "nHSIC(Y;Z)",
    "snn_below_chance": "SNN chance - SNN loss",
    "within_ratio": "within-class / total variance",
}


def plot_geometry(
    geometry_table: pd.DataFrame,
    layers: pd.DataFrame,
    *,
    by: str = "method",
    value: str = "excess",
    title: str = "",
):
    """One column per block, rows: nHSIC(X;Z), nHSIC(Y;Z) (``value``: above the floor or raw), how
    far the SNN loss lies below its chance value (0: no clustering the kernel sees) and the
    within-class share of variance, over whole epochs; one line per ``by`` group (mean over its
    runs, band: +-1 std across them)."""
    from matplotlib.lines import Line2D

    from ibstudy.plots import StudyFigure

    check_choice("value", value, VALUE_CHOICES)
    check_table(geometry_table, ("run", "epoch", "layer", "layer_index", by, *GEOMETRY_VALUES),
                "geometry")  # fmt: skip
    check_table(layers, ("run", "epoch", "layer", "nhsic_xz", "nhsic_yz"), "layers")
    info = _information(layers, value)
    info = info.assign(epoch=pd.to_numeric(info["epoch"], errors="coerce").astype(float))
    geo = geometry_table.assign(
        epoch=geometry_table["epoch"].astype(float),
        snn_below_chance=geometry_table["snn_chance"] - geometry_table["snn_loss"],
    )
    joined = geo.merge(info[["run", "epoch", "layer", "nhsic_xz", "nhsic_yz"]],
                       on=["run", "epoch", "layer"], how="inner")  # fmt: skip
    if joined.empty:
        raise ValueError("geometry and layers tables share no (run, epoch, layer)")
    rows = ["nhsic_xz", "nhsic_yz", "snn_below_chance", "within_ratio"]
    layer_order = joined.drop_duplicates("layer").sort_values("layer_index")["layer"].tolist()
    groups = list(dict.fromkeys(joined[by].astype(str)))
    import seaborn as sns

    palette = dict(zip(groups, sns.color_palette("colorblind", len(groups)), strict=True))
    fig = StudyFigure(figsize=(2.9 * len(layer_order) + 1.6, 2.3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(layer_order), squeeze=False, sharex=True)
    for c, layer in enumerate(layer_order):
        for r, column in enumerate(rows):
            ax = axes[r, c]
            for group in groups:
                sub = joined[(joined["layer"] == layer) & (joined[by].astype(str) == group)]
                stats = sub.groupby("epoch")[column].agg(["mean", "std"]).reset_index()
                ax.plot(stats["epoch"], stats["mean"], color=palette[group], lw=1.4)
                ax.fill_between(stats["epoch"], stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), color=palette[group],
                                alpha=0.2, lw=0)  # fmt: skip
            label = _LABELS[column]
            if column.startswith("nhsic") and value == "excess":
                label += " - floor"
            ax.set_ylabel(label if c == 0 else "", fontsize=8)
            ax.set_title(layer if r == 0 else "", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
    handles = [Line2D([], [], color=palette[g], lw=1.6, label=g) for g in groups]
    fig.legend(handles=handles, loc="outside right upper", title=by, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
