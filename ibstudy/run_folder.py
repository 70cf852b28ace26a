"""A run folder before training: is it writable, whose is it, and what does a resume start from.

Under the run folder's lock, :func:`prepare` decides between a fresh run, a stored complete run to
reuse and a checkpoint to resume; a folder that belongs to another config is refused naming the
fields that differ (docs/method.md §10).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ibstudy.checkpoint_state import safe_state
from ibstudy.config import MEASURE_FIELDS, TrainConfig
from ibstudy.store import (
    CHECKPOINT_FORMAT,
    Run,
    atomic_torch_save,
    clean_stale_temps,
    load_checkpoint,
    read_meta,
    write_tables,
)

__all__ = ["prepare", "writable_run_dir"]


def _config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The identity fields where two configs differ, as ``field: stored ..., given ...``."""
    da, db = a.identity(), b.identity()
    return [f"{k}: stored {db[k]!r}, given {da[k]!r}" for k in da if da[k] != db.get(k)]


def writable_run_dir(cfg: TrainConfig) -> Path:
    """The run folder, created; ValueError at once when ``results_dir`` is a file or not writable."""
    root, path = Path(cfg.results_dir), cfg.run_dir()
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(
                    f"results_dir {str(root)!r} cannot be created: {str(folder)!r} is a file; choose "
                    f"another results_dir (--results-dir)"
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ValueError(
            f"results_dir {str(root)!r} is not writable ({exc.strerror or exc}); choose another "
            f"results_dir (--results-dir)"
        ) from None
    return path


def _clear_run(path: Path) -> None:
    """Remove a run's files (overwrite=True): checkpoint, tables, config, weights and caches."""
    for name in ("checkpoint.pt", "epochs.csv", "layers.csv", "config.json"):
        (path / name).unlink(missing_ok=True)
    for folder in ("weights", "measures", "outcomes"):
        shutil.rmtree(path / folder, ignore_errors=True)


def _checkpoint_for(
    cfg: TrainConfig, path: Path, has_meta: bool, trust: bool = False
) -> dict[str, Any] | None:
    """The run folder's checkpoint if it belongs to ``cfg`` (None without one); ValueError if not
    (:class:`ibstudy.store.UntrustedCheckpoint` for a previous-format one without ``trust``)."""
    if not (path / "checkpoint.pt").exists():
        return None
    state = load_checkpoint(path, trust=trust)
    stored = state.get("identity")
    if stored is None and not has_meta:
        raise ValueError(
            f"run folder {str(path)!r} holds a checkpoint.pt without config.json and without a "
            f"stored config identity, so it cannot be tied to this config; pass overwrite=True "
            f"(--overwrite) to start over"
        )
    if stored is not None and stored != cfg.identity():
        diffs = [
            f"{k}: checkpoint {stored.get(k)!r}, given {v!r}"
            for k, v in cfg.identity().items()
            if stored.get(k) != v
        ]
        raise ValueError(
            f"checkpoint.pt in {str(path)!r} belongs to another config ({'; '.join(diffs)}); "
            f"choose another run_name, or pass overwrite=True (--overwrite) to replace it"
        )
    return state


def prepare(
    cfg: TrainConfig, path: Path, resume: bool, overwrite: bool, trust: bool = False
) -> tuple[TrainConfig, Run | None, dict[str, Any] | None]:
    """Under the run folder's lock: (the config to train, the stored complete run to return or
    None, the checkpoint to resume from or None); ValueError for a folder that cannot be used."""
    clean_stale_temps(path)
    has_meta = (path / "config.json").exists()
    if overwrite:
        _clear_run(path)
        return cfg, None, None
    if has_meta or (path / "checkpoint.pt").exists():
        if has_meta:
            stored = TrainConfig.from_dict(read_meta(path)["config"])
            diffs = _config_differences(cfg, stored)
            if diffs:
                raise ValueError(
                    f"run folder {str(path)!r} holds a run with a different config ("
                    + "; ".join(diffs)
                    + "): choose another run_name, or pass overwrite=True to replace it"
                )
            # the stored run keeps recording with its own estimator settings
            cfg = dataclasses.replace(cfg, **{f: getattr(stored, f) for f in MEASURE_FIELDS})
        if not resume:
            raise ValueError(
                f"run folder {str(path)!r} exists: pass resume=True to continue (or reuse) it, "
                f"or overwrite=True to start over"
            )
        if has_meta:
            run = Run.load(path, trust=trust)
            if run.complete:
                if run.repaired:  # tables rebuilt from the checkpoint: write them back
                    write_tables(path, run.epochs, run.layers)
                if trust:  # a trusted previous-format checkpoint: rewrite it in the safe format
                    _rewrite_safe(path)
                return cfg, run, None
    return cfg, None, _checkpoint_for(cfg, path, has_meta, trust)


def _rewrite_safe(path: Path) -> None:
    """Rewrite a (trusted) previous-format ``checkpoint.pt`` in the current format."""
    if not (path / "checkpoint.pt").exists():
        return
    state = load_checkpoint(path, trust=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        atomic_torch_save(safe_state(state), path / "checkpoint.pt")
