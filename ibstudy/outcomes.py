"""Per-image test outcomes of a stored run, computed from its stored weights (docs/method.md §10).

:func:`test_outcomes` reloads the model a run stored after an epoch (``weights/epoch_NNNN.pt``) and
scores every image of the run's test split: label, prediction (the classifier's argmax, as the
trainer scores it), correctness and the per-image cross-entropy. The table is cached in the run
folder as ``outcomes/epoch_NNNN.csv`` (written atomically; a second call reads it), so paired
per-image comparisons of runs need no retraining and no change to training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ibstudy.checks import check_int
from ibstudy.methods import REGISTRY
from ibstudy.store import Run, atomic_write

__all__ = [
    "ARGMAX_METHODS",
    "OUTCOME_COLUMNS",
    "outcomes_for",
    "outcomes_path",
    "outcomes_table",
    "summarize",
    "test_outcomes",
]

#: the methods whose prediction is the classifier's argmax (Forward-Forward predicts the label of
#: highest goodness, signal propagation the most similar class target: no per-image logits loss)
ARGMAX_METHODS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.argmax_prediction)
#: one row per test image
OUTCOME_COLUMNS: list[str] = [
    "run", "method", "head", "seed", "dataset", "epoch", "image", "label", "pred", "correct",
    "loss",
]  # fmt: skip
_INT_COLUMNS = ("seed", "epoch", "image", "label", "pred", "correct")
_STR_COLUMNS = ("run", "method", "head", "dataset")
_SUMMARY_KEYS = ["run", "method", "head", "seed", "dataset", "epoch"]
_BATCH = 256  # test batches, as the trainer scores them


def outcomes_path(run: Run, epoch: int) -> Path:
    """The file that caches ``run``'s per-image test outcomes after ``epoch``."""
    return run.path / "outcomes" / f"epoch_{int(epoch):04d}.csv"


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the outcome columns in order and fixed dtypes (fresh and cached alike)."""
    table = table[OUTCOME_COLUMNS].copy()
    for col in _INT_COLUMNS:
        table[col] = table[col].astype("int64")
    for col in _STR_COLUMNS:
        table[col] = table[col].astype(str).astype(object)
    table["loss"] = table["loss"].astype("float64")
    return table.reset_index(drop=True)


def _check_epoch(run: Run, epoch: int | None) -> int:
    """``epoch`` (None: the last stored one) if its weights are stored, else ValueError."""
    from ibstudy.measure import _ranges

    stored = run.stored_epochs()
    if not stored:
        raise ValueError(
            f"run folder {str(run.path)!r} stores no model weights (weights/epoch_NNNN.pt), so "
            f"its test outcomes cannot be computed; retrain it (train(cfg, overwrite=True) or "
            f"`python -m ibstudy train ... --overwrite`)"
        )
    if epoch is None:
        return stored[-1]
    epoch = check_int("epoch", epoch, minimum=0)
    if epoch not in stored:
        raise ValueError(
            f"epoch {epoch} has no stored weights in {str(run.path)!r}; stored epochs: "
            f"{_ranges(stored)}"
        )
    return epoch


def _compute(run: Run, epoch: int) -> pd.DataFrame:
    """Score every test image with the model stored after ``epoch`` (CPU, eval mode, no grad)."""
    import torch
    import torch.nn.functional as F

    from ibstudy.data import load_dataset, make_loader
    from ibstudy.measure import evaluating

    cfg = run.config
    test = load_dataset(cfg.dataset, split="test", root=cfg.data_root, download=False)
    model = run.load_model(epoch, map_location="cpu")
    labels, preds, losses = [], [], []
    with evaluating(model):
        for x, y in make_loader(test, _BATCH, shuffle=False):
            logits = model(x)
            labels.append(y)
            preds.append(logits.argmax(1))
            losses.append(F.cross_entropy(logits.double(), y, reduction="none"))
    label, pred = torch.cat(labels), torch.cat(preds)
    table = pd.DataFrame(
        {
            "run": cfg.run_id(), "method": cfg.method, "head": cfg.head, "seed": cfg.seed,
            "dataset": cfg.dataset, "epoch": epoch, "image": range(len(label)),
            "label": label.numpy(), "pred": pred.numpy(),
            "correct": (pred == label).to(torch.int64).numpy(), "loss": torch.cat(losses).numpy(),
        }
    )  # fmt: skip
    return _typed(table)


def test_outcomes(run: Run | str | os.PathLike[str], epoch: int | None = None) -> pd.DataFrame:
    """One row per test image (:data:`OUTCOME_COLUMNS`) for the model stored after ``epoch``
    (None: the last stored epoch), cached in ``<run>/outcomes/epoch_NNNN.csv``."""
    if not isinstance(run, Run):
        run = Run.load(run)
    method = run.config.method
    if method not in ARGMAX_METHODS:
        raise ValueError(
            f"method {method!r} does not predict by the classifier's argmax, so it has no "
            f"per-image outcomes here; allowed methods: {list(ARGMAX_METHODS)}"
        )
    epoch = _check_epoch(run, epoch)
    path = outcomes_path(run, epoch)
    weights = run.path / "weights" / f"epoch_{epoch:04d}.pt"
    if path.exists() and path.stat().st_mtime_ns >= weights.stat().st_mtime_ns:
        return _typed(pd.read_csv(path))  # a cache older than its weights (a retrain) is redone
    table = _compute(run, epoch)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


test_outcomes.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def outcomes_table(
    runs: Iterable[Run | str | os.PathLike[str]], epoch: int | None = None
) -> pd.DataFrame:
    """:func:`test_outcomes` of every run concatenated (``epoch`` None: each run's last stored)."""
    frames = [test_outcomes(r, epoch) for r in runs]
    if not frames:
        raise ValueError("runs must hold at least one Run")
    return pd.concat(frames, ignore_index=True)


def summarize(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per run (and epoch): accuracy (mean correct), test_loss (mean loss) and n_images."""
    missing = [c for c in (*_SUMMARY_KEYS, "correct", "loss") if c not in outcomes.columns]
    if missing:
        raise ValueError(
            f"outcomes lacks column(s) {missing}; pass a table from test_outcomes or "
            f"outcomes_table (columns {OUTCOME_COLUMNS})"
        )
    grouped = outcomes.groupby(_SUMMARY_KEYS, sort=False)
    return grouped.agg(
        accuracy=("correct", "mean"), test_loss=("loss", "mean"), n_images=("correct", "size")
    ).reset_index()


def outcomes_for(run_ids: Iterable[str], runs_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """Final-epoch outcomes of the named runs stored under ``runs_dir`` (a study's
    ``results/runs``), skipping runs whose folder is absent or whose method has no argmax
    prediction; None when none qualifies."""
    runs = []
    for run_id in dict.fromkeys(str(r) for r in run_ids):
        path = Path(runs_dir) / run_id
        if (path / "config.json").exists():
            run = Run.load(path)
            if run.config.method in ARGMAX_METHODS and run.stored_epochs():
                runs.append(run)
    return outcomes_table(runs) if runs else None
