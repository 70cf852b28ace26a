"""What the training notebooks share: configs from notebook parameters, cached runs, tidy table files.

A notebook calls :func:`study_config` with its parameters, :func:`train_all` to train (or reuse) one run
per method, and :func:`write_tables` to leave tidy CSVs under ``<results_dir>/tables/`` for the summary
notebook.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ibstudy.training import Run, TrainConfig, atomic_write_text, train


def study_config(
    preset: str = "quick",
    *,
    results_dir: str = "results",
    epochs: int | None = None,
    **params: Any,
) -> TrainConfig:
    """A validated TrainConfig from notebook parameters; runs are stored in ``<results_dir>/runs``.

    ``epochs=None`` keeps the preset's value; other ``params`` are TrainConfig fields (None = preset);
    ``probe_epochs="all"`` probes at every epoch.
    """
    overrides = {k: v for k, v in params.items() if v is not None}
    if epochs is not None:
        overrides["epochs"] = epochs
    all_probes = overrides.get("probe_epochs") == "all"
    if all_probes:
        overrides.pop("probe_epochs")
    cfg = TrainConfig.preset(preset, results_dir=str(Path(results_dir) / "runs"), **overrides)
    if all_probes:
        cfg.probe_epochs = tuple(range(cfg.total_epochs() + 1))
    return cfg


def train_all(configs: Iterable[TrainConfig], *, progress: bool = True) -> list[Run]:
    """Train every config, reusing stored complete runs and resuming partial ones."""
    return [train(cfg, resume=True, progress=progress) for cfg in configs]


def tables(runs: Iterable[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' ``epochs`` and ``layers`` tables, concatenated (tidy: one row per run x epoch [x layer])."""
    runs = list(runs)
    if not runs:
        raise ValueError("runs must hold at least one Run")
    epochs = pd.concat([r.epochs for r in runs], ignore_index=True)
    layers = pd.concat([r.layers for r in runs], ignore_index=True)
    return epochs, layers


def scale_label(cfg: TrainConfig, preset: str) -> str:
    """A one-line description of a run's scale, shown next to every number the study reports."""
    epochs = cfg.total_epochs()
    return (
        f"{cfg.dataset}, {cfg.model} (width {cfg.width:g}), {epochs} epochs, {preset} preset, "
        f"nHSIC on {cfg.eval_size} test images in chunks of m={cfg.chunk_size}"
    )


def write_tables(
    name: str,
    epochs: pd.DataFrame,
    layers: pd.DataFrame,
    *,
    results_dir: str = "results",
    scale: str = "",
) -> Path:
    """Write ``<name>_epochs.csv`` / ``<name>_layers.csv`` (with a ``scale`` column) atomically."""
    folder = Path(results_dir) / "tables"
    for kind, frame in (("epochs", epochs), ("layers", layers)):
        atomic_write_text(
            folder / f"{name}_{kind}.csv", frame.assign(scale=scale).to_csv(index=False)
        )
    return folder


def read_tables(
    name: str, *, results_dir: str = "results"
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The tables a notebook wrote with :func:`write_tables`, or None when it has not run."""
    folder = Path(results_dir) / "tables"
    paths = [folder / f"{name}_{kind}.csv" for kind in ("epochs", "layers")]
    if not all(p.exists() for p in paths):
        return None
    return pd.read_csv(paths[0]), pd.read_csv(paths[1])
