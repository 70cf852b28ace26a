"""The run folder: :class:`Run`, its files, and the one atomic-write helper every writer uses.

A run folder ``<results_dir>/<run_id>/`` holds ``config.json`` (config, id, completeness),
``checkpoint.pt`` (everything needed to resume), ``epochs.csv`` and ``layers.csv`` (tidy tables,
docs/method.md §10), ``weights/epoch_NNNN.pt`` (model weights at the stored epochs) and
``measures/<digest>.csv`` (re-measurements under other estimators). Every file is written to a temp
file in the same folder and renamed, so no reader ever sees a half-written file under its real name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ibstudy.config import TrainConfig
from ibstudy.tables import EPOCH_COLUMNS, LAYER_COLUMNS, SETTING_COLUMNS

if TYPE_CHECKING:
    from ibstudy.models import BlockNet

__all__ = [
    "FORMAT",
    "Run",
    "atomic_write",
    "atomic_write_text",
    "atomic_torch_save",
    "weights_path",
    "write_meta",
]

#: run-folder format: 2 = stored weights and measure settings outside the run id
FORMAT = 2


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path`` (mode 0644).

    The folder is created when missing; on any failure the temp file is removed and ``path`` keeps
    its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def weights_path(run_dir: str | os.PathLike[str], epoch: int) -> Path:
    """Where a run stores its model weights after ``epoch``."""
    return Path(run_dir) / "weights" / f"epoch_{int(epoch):04d}.pt"


def write_meta(path: Path, cfg: TrainConfig, complete: bool) -> None:
    """Write the run folder's ``config.json`` (config, run id, completeness, format)."""
    meta = {"config": cfg.to_dict(), "run_id": cfg.run_id(), "complete": complete, "format": FORMAT}
    atomic_write_text(path / "config.json", json.dumps(meta, indent=2) + "\n")


def _normalized(table: pd.DataFrame, columns: list[str], cfg: TrainConfig) -> pd.DataFrame:
    """A stored table with the current schema: columns added by later formats are filled in."""
    from ibstudy.data import INFO

    fill: dict[str, Any] = {"dataset": cfg.dataset, "num_classes": INFO[cfg.dataset].num_classes}
    if "nhsic_xz" in columns:
        settings = cfg.measure_config().columns()
        fill.update({k: settings[k] for k in SETTING_COLUMNS})
    table = table.copy()
    for col in columns:
        if col not in table.columns:
            table[col] = fill.get(col, float("nan")) if len(table) else pd.Series(dtype=object)
    return table[columns]


@dataclass
class Run:
    """A training run's config, folder and tidy metric tables (``epochs`` and ``layers``)."""

    config: TrainConfig
    path: Path
    epochs: pd.DataFrame
    layers: pd.DataFrame
    complete: bool
    format: int = FORMAT

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        """Read a run folder written by :func:`ibstudy.training.train` (any format)."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise ValueError(f"path {str(path)!r} holds no run (config.json missing)")
        meta = json.loads((path / "config.json").read_text())
        cfg = TrainConfig.from_dict(meta["config"])
        tables = []
        for name, columns in (("epochs.csv", EPOCH_COLUMNS), ("layers.csv", LAYER_COLUMNS)):
            file = path / name
            table = pd.read_csv(file) if file.exists() else pd.DataFrame(columns=columns)
            tables.append(_normalized(table, columns, cfg))
        return cls(
            config=cfg,
            path=path,
            epochs=tables[0],
            layers=tables[1],
            complete=bool(meta.get("complete", False)),
            format=int(meta.get("format", 1)),
        )

    def stored_epochs(self) -> list[int]:
        """Epochs whose weights are stored under ``weights/`` (sorted)."""
        folder = self.path / "weights"
        if not folder.is_dir():
            return []
        found = []
        for file in folder.glob("epoch_*.pt"):
            stem = file.stem.removeprefix("epoch_")
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def build_model(self) -> BlockNet:
        """A freshly initialized model of the run's architecture (eval mode)."""
        from ibstudy.data import INFO
        from ibstudy.models import build_model

        cfg = self.config
        info = INFO[cfg.dataset]
        model = build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width
        )
        return model.eval()

    def load_model(self, epoch: int | None = None, map_location: str = "cpu") -> BlockNet:
        """The model after ``epoch`` (from ``weights/``), or of the last checkpoint (eval mode)."""
        import torch

        model = self.build_model()
        if epoch is None:
            state = torch.load(
                self.path / "checkpoint.pt", map_location=map_location, weights_only=False
            )
            model.load_state_dict(state["model"])
        else:
            state = torch.load(
                weights_path(self.path, epoch), map_location=map_location, weights_only=True
            )
            model.load_state_dict(state)
        return model.eval()
