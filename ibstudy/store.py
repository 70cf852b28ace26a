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
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    "RunLocked",
    "UntrustedCheckpoint",
    "WriteFailed",
    "clean_stale_temps",
    "load_checkpoint",
    "read_meta",
    "run_lock",
    "table_problem",
    "write_tables",
    "atomic_write",
    "atomic_write_text",
    "atomic_torch_save",
    "weights_path",
    "whole_epochs",
    "write_meta",
    "weight_epochs",
]

#: run-folder format: 2 = stored weights and measure settings outside the run id
FORMAT = 2
#: checkpoint format: 2 = only tensors and plain values (torch's weights-only loader reads it);
#: 1 (no ``format`` key) = RNG states pickled as numpy objects, readable only by unpickling
CHECKPOINT_FORMAT = 2


class WriteFailed(OSError):
    """A file of the run folder could not be written (disk full, read-only, ...); nothing was replaced."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path`` (mode 0644).

    The folder is created when missing; on any failure the temp file is removed and ``path`` keeps
    its previous content. Failures of the write itself are raised as :class:`WriteFailed`, naming the
    file and the free space left (``KeyboardInterrupt`` passes through unchanged).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise WriteFailed(
            f"could not write {str(path)!r} ({type(exc).__name__}: {exc}); {free / 2**20:.0f} MiB "
            f"free on that disk; the previous file, if any, is unchanged"
        ) from exc
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
    """Write the run folder's ``config.json`` (config, run id, completeness, format, and the
    intra-op thread count that trains it: a run's numbers depend on it, its identity does not)."""
    import torch

    meta = {
        "config": cfg.to_dict(), "run_id": cfg.run_id(), "complete": complete, "format": FORMAT,
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    atomic_write_text(path / "config.json", json.dumps(meta, indent=2) + "\n")


def write_tables(path: Path, epochs: pd.DataFrame, layers: pd.DataFrame) -> None:
    """Write ``epochs.csv`` then ``layers.csv`` of a run folder, each atomically."""
    atomic_write_text(path / "epochs.csv", epochs.to_csv(index=False))
    atomic_write_text(path / "layers.csv", layers.to_csv(index=False))


def read_meta(path: Path) -> dict[str, Any]:
    """The run folder's ``config.json`` as a dict, or ValueError naming the file and the fix."""
    file = Path(path) / "config.json"
    fix = "delete the run folder to retrain, or pass overwrite=True (--overwrite)"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
        TrainConfig.from_dict(meta["config"])
    except FileNotFoundError:
        raise ValueError(f"path {str(path)!r} holds no run (config.json missing)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(file)!r} is damaged ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{str(file)!r} is damaged (not a JSON object); {fix}")
    return meta


class RunLocked(ValueError):
    """Another process holds the run folder's lock."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``path`` (its ``.lock`` file) for the ``with`` body.

    The operating system releases the lock when the process dies, so a killed run never leaves a
    stale lock. A second writer fails at once with :class:`RunLocked` naming the holder's pid.
    """
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLocked(
            f"run folder {str(path)!r} is being written by another process (pid {holder}); wait "
            f"for it to finish, or choose another run_name"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove temp files that killed saves left in the run folder and its weights/ (hold the lock)."""
    removed = []
    for folder in (path, path / "weights"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _read_table(file: Path, columns: list[str]) -> pd.DataFrame | None:
    """A stored CSV table (None when absent), or ValueError naming the damaged file."""
    if not file.exists():
        return None
    try:
        table = pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(file)!r} is damaged ({type(exc).__name__}: {exc})") from None
    if "epoch" not in table.columns or "run" not in table.columns:
        raise ValueError(f"{str(file)!r} is damaged (columns {list(table.columns)[:6]}...)")
    return table


def whole_epochs(epochs: pd.DataFrame) -> int:
    """How many whole epochs (0, 1, ...) an epochs table records (sub-epoch points not counted)."""
    ep = pd.to_numeric(epochs["epoch"], errors="coerce").dropna()
    return int((ep == ep.round()).sum())


def table_problem(epochs: pd.DataFrame, layers: pd.DataFrame, num_layers: int) -> str | None:
    """Why the two tables do not describe epochs 0..E (sub-epoch points between them allowed, all
    in increasing order) with ``num_layers`` rows each (None if they do)."""
    ep = pd.to_numeric(epochs["epoch"], errors="coerce")
    values = [float(v) for v in ep]
    whole = [v for v in values if v == round(v)]
    increasing = all(b > a for a, b in zip(values, values[1:], strict=False))
    if ep.isna().any() or not increasing or whole != [float(k) for k in range(len(whole))]:
        return f"epochs.csv holds epochs {values[:8]}..., not 0..E in increasing order"
    if pd.to_numeric(epochs["test_acc"], errors="coerce").isna().any():
        return "epochs.csv has rows without test_acc (truncated?)"
    counts = layers.groupby("epoch").size() if len(layers) else pd.Series(dtype=int)
    expected = {v: num_layers for v in values}
    if {float(k): int(v) for k, v in counts.items()} != expected:
        return (
            f"layers.csv holds {len(layers)} rows for epochs {sorted(float(k) for k in counts.index)}"
            f", expected {num_layers} layers x the {len(values)} epochs of epochs.csv"
        )
    if pd.to_numeric(layers["nhsic_xz"], errors="coerce").isna().any():
        return "layers.csv has rows without nhsic_xz (truncated?)"
    return None


def _normalized(table: pd.DataFrame, columns: list[str], cfg: TrainConfig) -> pd.DataFrame:
    """A stored table with the current schema: columns added by later formats are filled in."""
    from ibstudy.data import INFO

    fill: dict[str, Any] = {
        "seed": cfg.seed, "dataset": cfg.dataset, "num_classes": INFO[cfg.dataset].num_classes,
    }  # fmt: skip
    if "nhsic_xz" in columns:
        settings = cfg.measure_config().columns()
        fill.update({k: settings[k] for k in SETTING_COLUMNS})
    table = table.copy()
    for col in columns:
        if col not in table.columns:
            table[col] = fill.get(col, float("nan")) if len(table) else pd.Series(dtype=object)
    return table[columns]


class UntrustedCheckpoint(ValueError):
    """A checkpoint that only unpickling can read (an earlier format, or not ibstudy's): refused
    unless the caller trusts it (``trust=True``, ``--trust-checkpoint``)."""


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` of an exception on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}"


def _refusal(file: Path) -> str:
    return (
        f"{str(file)!r} is refused: it can only be read by unpickling (a checkpoint of an earlier "
        f"ibstudy version, or one not written by ibstudy), and unpickling can execute code; if you "
        f"trust whoever wrote it, pass --trust-checkpoint (trust=True)"
    )


def load_checkpoint(
    path: Path, map_location: str = "cpu", *, trust: bool = False
) -> dict[str, Any]:
    """The run folder's ``checkpoint.pt``, read with torch's weights-only loader.

    A checkpoint that loader cannot read but unpickling could (the previous format pickled numpy's
    RNG state) raises :class:`UntrustedCheckpoint` naming the file, unless ``trust=True``: then it
    is unpickled, which can execute code. Any other unreadable file raises ValueError naming it
    and the fix.
    """
    import torch

    file = Path(path) / "checkpoint.pt"
    damaged = "delete the run folder or pass overwrite=True (--overwrite) to retrain"
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        if not (isinstance(exc, pickle.UnpicklingError) and zipfile.is_zipfile(file)):
            raise ValueError(
                f"{str(file)!r} is damaged ({_one_line(exc, 120)}); {damaged}"
            ) from None
        if not trust:
            raise UntrustedCheckpoint(_refusal(file)) from None
        try:
            state = torch.load(file, map_location=map_location, weights_only=False)
        except Exception as unpickled:
            raise ValueError(
                f"{str(file)!r} is damaged ({_one_line(unpickled, 120)}); {damaged}"
            ) from None
    if not isinstance(state, dict) or "epoch_rows" not in state:
        raise ValueError(f"{str(file)!r} is damaged (not an ibstudy checkpoint); {damaged}")
    return state


def _rows_from_checkpoint(
    path: Path, trust: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The tables stored inside ``checkpoint.pt`` (None when it is absent or unreadable);
    :class:`UntrustedCheckpoint` when only unpickling could read it and ``trust`` is False."""
    try:
        state = load_checkpoint(path, trust=trust)
    except UntrustedCheckpoint:
        raise
    except (FileNotFoundError, ValueError):
        return None
    return (
        pd.DataFrame(state["epoch_rows"], columns=EPOCH_COLUMNS),
        pd.DataFrame(state["layer_rows"], columns=LAYER_COLUMNS),
    )


@dataclass
class Run:
    """A training run's config, folder and tidy metric tables (``epochs`` and ``layers``)."""

    config: TrainConfig
    path: Path
    epochs: pd.DataFrame
    layers: pd.DataFrame
    complete: bool
    format: int = FORMAT
    repaired: bool = False  # the tables were rebuilt from checkpoint.pt (damaged or behind on disk)
    trust: bool = field(default=False, repr=False, compare=False)  # may unpickle checkpoint.pt

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, trust: bool = False) -> Run:
        """Read a run folder written by :func:`ibstudy.training.train` (any format).

        The tables are checked against the config (epochs 0..E in order, one row per layer and
        epoch, E = the last epoch for a complete run); damaged or incomplete tables are rebuilt from
        the rows stored in ``checkpoint.pt`` when it covers them, else a ValueError names the file.
        Nothing is unpickled: a checkpoint of the previous format (readable only by unpickling,
        which can execute code) is refused naming the file, unless ``trust=True``.
        """
        path = Path(path)
        meta = read_meta(path)
        cfg = TrainConfig.from_dict(meta["config"])
        complete = bool(meta.get("complete", False))
        num_layers = cfg.num_blocks() + 1
        found: list[pd.DataFrame | None] = [None, None]
        problem = None
        repaired = False
        try:
            found = [
                _read_table(path / "epochs.csv", EPOCH_COLUMNS),
                _read_table(path / "layers.csv", LAYER_COLUMNS),
            ]
        except ValueError as exc:
            problem = str(exc)
        if problem is None and any(f is None for f in found):
            problem = "epochs.csv or layers.csv is missing"
        if problem is None:
            problem = table_problem(found[0], found[1], num_layers)
        if problem is None and complete and whole_epochs(found[0]) != cfg.total_epochs() + 1:
            problem = (
                f"run marked complete but epochs.csv ends at epoch {whole_epochs(found[0]) - 1}"
            )
        if problem is not None:
            try:
                rebuilt = _rows_from_checkpoint(path, trust)
            except UntrustedCheckpoint as exc:
                raise UntrustedCheckpoint(
                    f"run folder {str(path)!r} has damaged tables ({problem}); to repair them, {exc}"
                ) from None
            if rebuilt is not None and table_problem(*rebuilt, num_layers) is None:
                found = list(rebuilt)
                complete = complete and whole_epochs(rebuilt[0]) == cfg.total_epochs() + 1
                repaired = True
            elif all(f is None for f in found) and rebuilt is None and not complete:
                pass  # a run whose first epoch (epoch 0) was never saved: no tables yet
            else:
                raise ValueError(
                    f"run folder {str(path)!r} has damaged tables ({problem}) that checkpoint.pt "
                    f"does not repair; resume the run (train(cfg, resume=True) or `python -m "
                    f"ibstudy train ... --resume`) to rewrite them from its checkpoint, or delete "
                    f"the folder to retrain"
                )
        epochs = found[0] if found[0] is not None else pd.DataFrame(columns=EPOCH_COLUMNS)
        layers = found[1] if found[1] is not None else pd.DataFrame(columns=LAYER_COLUMNS)
        return cls(
            config=cfg,
            path=path,
            epochs=_normalized(epochs, EPOCH_COLUMNS, cfg),
            layers=_normalized(layers, LAYER_COLUMNS, cfg),
            complete=complete,
            format=int(meta.get("format", 1)),
            repaired=repaired,
            trust=trust,
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
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width,
            activation=cfg.activation,
        )  # fmt: skip
        return model.eval()

    def load_model(
        self, epoch: int | None = None, map_location: str = "cpu", *, trust: bool | None = None
    ) -> BlockNet:
        """The model after ``epoch`` (from ``weights/``), or of the last checkpoint (eval mode).

        Weights are read with torch's weights-only loader; a missing or damaged weights file (or
        one of another model) raises ValueError naming the file and the fix. ``trust`` (None: as
        the run was loaded) only matters for ``epoch=None`` with a previous-format checkpoint.
        """
        import torch

        model = self.build_model()
        if epoch is None:
            trust = self.trust if trust is None else trust
            file = self.path / "checkpoint.pt"
            state = load_checkpoint(self.path, map_location, trust=trust)["model"]
            fix = "delete the run folder or pass overwrite=True (--overwrite) to retrain"
        else:
            file = weights_path(self.path, epoch)
            fix = (
                f"retrain the run to store it again (train(cfg, overwrite=True) or `python -m "
                f"ibstudy train ... --overwrite`), or leave epoch {epoch} out (--epochs / epochs=)"
            )
            if not file.exists():
                stored = ", ".join(str(e) for e in self.stored_epochs()) or "none"
                raise ValueError(
                    f"epoch {epoch} has no stored weights in {str(self.path)!r} ({str(file)!r} is "
                    f"missing); stored epochs: {stored}"
                )
            try:
                state = torch.load(file, map_location=map_location, weights_only=True)
            except Exception as exc:
                raise ValueError(f"{str(file)!r} is damaged ({_one_line(exc)}); {fix}") from None
        try:
            model.load_state_dict(state)
        except Exception as exc:
            raise ValueError(
                f"{str(file)!r} holds weights of another model ({_one_line(exc)}); {fix}"
            ) from None
        from ibstudy.data import INFO
        from ibstudy.methods import get_method

        num_classes = INFO[self.config.dataset].num_classes
        return get_method(self.config.method).measured(model, num_classes).eval()  # type: ignore[return-value]


#: models with at least this many parameters store weights on a log-spaced epoch schedule
LARGE_MODEL_PARAMS = 1_000_000
LOG_SCHEDULE_POINTS = 24  # [ours] about this many stored epochs for a large model


def weight_epochs(total: int, num_params: int, save_epochs: Sequence[int] = ()) -> tuple[int, ...]:
    """Epochs whose model weights a run stores: ``save_epochs`` if given, else every epoch for models
    below ``LARGE_MODEL_PARAMS`` parameters and a log-spaced schedule (always 0, 1 and ``total``) above."""
    if save_epochs:
        return tuple(sorted(set(int(e) for e in save_epochs)))
    if num_params < LARGE_MODEL_PARAMS or total <= LOG_SCHEDULE_POINTS:
        return tuple(range(total + 1))
    ratio = total ** (1.0 / (LOG_SCHEDULE_POINTS - 1))
    points = {0, total, *(round(ratio**k) for k in range(LOG_SCHEDULE_POINTS))}
    return tuple(sorted(p for p in points if 0 <= p <= total))
