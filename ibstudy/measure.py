"""Measurement as its own stage: the plane recorder and re-measurement of stored weights (docs/method.md §10).

Training stores the model's weights at the recorded epochs; :func:`measure` reloads them and measures
every block and the logits under any :class:`MeasureConfig` (a registered estimator of
:mod:`ibstudy.estimators`, bandwidth rule, m, eps, floor permutations), caching the table in the run
folder under the config's digest. Training itself records through the same :class:`PlaneRecorder`,
so re-measuring with a run's own measure config reproduces its ``layers.csv``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ibstudy.checks import check_int_list
from ibstudy.config import MeasureConfig
from ibstudy.estimators.plane import Plane
from ibstudy.progress import progress as progress_bar
from ibstudy.store import Run, atomic_write_text
from ibstudy.tables import MEASURE_COLUMNS, PLANE_COLUMNS

__all__ = [
    "MeasureConfig", "PlaneRecorder", "cache_path", "evaluating", "measure", "measure_columns",
    "missing_epochs",
]  # fmt: skip


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode under ``no_grad`` and restore each submodule's previous mode."""
    modes = [[(m, m.training) for m in mod.modules()] for mod in modules]
    for mod in modules:
        mod.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for group in modes:
            for m, was_training in group:
                m.train(was_training)


class PlaneRecorder:
    """Measures a block-structured model's layers on a fixed evaluation subset under one estimator
    (the registered estimator ``mcfg.estimator``, run chunk by chunk by :class:`Plane`)."""

    def __init__(
        self,
        x_eval: Tensor,
        y_eval: Tensor,
        mcfg: MeasureConfig,
        device: str | torch.device = "cpu",
    ) -> None:
        """Cache the X and Y sides of every chunk (``x_eval``/``y_eval``: the first test images)."""
        mcfg.validate()
        if x_eval.shape[0] != mcfg.eval_size:
            raise ValueError(
                f"x_eval must hold eval_size={mcfg.eval_size} images, got {x_eval.shape[0]}"
            )
        self.mcfg = mcfg
        self.device = torch.device(device)
        self.plane = Plane(x_eval, y_eval, mcfg, device=self.device)

    def measure(self, model: nn.Module) -> pd.DataFrame:
        """One row per layer (blocks, then ``logits``): layer, layer_index and the plane columns."""
        return self.table(self.measure_chunks(model, range(self.plane.num_chunks)))

    def measure_chunks(self, model: nn.Module, indices: Iterable[int]) -> list[tuple[int, Any]]:
        """``(i, result)`` for the chunks ``indices`` (a share of the work, e.g. one torchrun rank's)."""
        out = []
        names = [*model.block_names, "logits"]
        with evaluating(model):
            for i in indices:
                x, _ = self.plane.chunk(i)
                logits, zs = model(x.to(self.device), return_blocks=True)
                reps = dict(zip(names, [*zs, logits], strict=True))
                out.append((i, self.plane.measure_chunk(i, reps)))
        return out

    def table(self, results: Iterable[tuple[int, Any]]) -> pd.DataFrame:
        """The per-layer table from every chunk's ``(i, result)`` (any order)."""
        per_chunk = [r for _, r in sorted(results, key=lambda item: item[0])]
        table = self.plane.summarize(per_chunk)
        table.insert(1, "layer_index", range(len(table)))
        for col in PLANE_COLUMNS:
            if col not in table.columns:
                table[col] = math.nan
        return table[["layer", "layer_index", *PLANE_COLUMNS]]

    def layer_rows(
        self, plane: pd.DataFrame, base: dict[str, Any], probes: pd.DataFrame | None,
        head_acc: Sequence[float],
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The ``layers`` table rows of one record point: ``base`` (run columns), the plane, the
        estimator's settings, each block's probe accuracies (NaN without probes) and head accuracy."""
        settings, num_blocks, rows = self.mcfg.columns(), len(head_acc), []
        for row in plane.to_dict("records"):
            index = int(row["layer_index"])
            out = {**base, "layer": row["layer"], "layer_index": index}
            out.update({col: row[col] for col in PLANE_COLUMNS})
            out.update(settings)
            out["probe_train_acc"] = out["probe_test_acc"] = math.nan
            if probes is not None and index < num_blocks:
                out["probe_train_acc"] = float(probes.iloc[index]["probe_train_acc"])
                out["probe_test_acc"] = float(probes.iloc[index]["probe_test_acc"])
            out["head_test_acc"] = head_acc[index] if index < num_blocks else math.nan
            rows.append(out)
        return rows


def measure_columns(mcfg: MeasureConfig) -> list[str]:
    """The columns of a measurement table under ``mcfg``: :data:`ibstudy.tables.MEASURE_COLUMNS`,
    then the settings only its estimator reads (e.g. ``alpha`` for ``renyi``)."""
    return [*MEASURE_COLUMNS, *(c for c in mcfg.columns() if c not in MEASURE_COLUMNS)]


def cache_path(run: Run, mcfg: MeasureConfig) -> Path:
    """The file that caches ``run``'s measurement under ``mcfg``."""
    return run.path / "measures" / f"{mcfg.measure_id()}.csv"


def _check_epochs(run: Run, epochs: Iterable[int] | None) -> list[int]:
    """The requested epochs, each with stored weights, or ValueError saying what is available."""
    stored = run.stored_epochs()
    if not stored:
        raise ValueError(
            f"run folder {str(run.path)!r} stores no model weights (weights/epoch_NNNN.pt): it was "
            f"trained before ibstudy stored weights, or its first epoch never finished; retrain it "
            f"(train(cfg, overwrite=True) or `python -m ibstudy train ... --overwrite`) to "
            f"re-measure it"
        )
    if epochs is None:
        return stored
    wanted = sorted(set(check_int_list("epochs", epochs, minimum=0)))
    if not wanted:
        raise ValueError("epochs must name at least one epoch (or be None for every stored epoch)")
    missing = [e for e in wanted if e not in stored]
    if missing:
        raise ValueError(
            f"epochs {missing} have no stored weights in {str(run.path)!r}; stored epochs: "
            f"{_ranges(stored)}"
        )
    return wanted


def _ranges(values: Sequence[int]) -> str:
    """``0-3, 5, 8-9`` for a sorted list of ints."""
    parts, start = [], None
    for k, v in enumerate(values):
        if start is None:
            start = v
        if k + 1 == len(values) or values[k + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def _plan(
    run: Run, mcfg: MeasureConfig | None, epochs: Iterable[int] | None
) -> tuple[MeasureConfig, list[int], pd.DataFrame, list[int]]:
    """(the settings, the wanted epochs, the cached table, the wanted epochs it lacks) for
    :func:`measure`; ValueError for bad settings or epochs without stored weights."""
    mcfg = run.config.measure_config() if mcfg is None else mcfg
    if not isinstance(mcfg, MeasureConfig):
        raise ValueError(f"mcfg must be a MeasureConfig or None, got {type(mcfg).__name__}")
    mcfg.validate(run.config.dataset)
    wanted = _check_epochs(run, epochs)
    path, columns = cache_path(run, mcfg), measure_columns(mcfg)
    cached = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=columns)
    cached = cached.reindex(columns=columns)  # caches of older formats lack ``step``
    todo = [e for e in wanted if e not in set(cached["epoch"].astype(int))]
    return mcfg, wanted, cached, todo


def missing_epochs(
    run: Run, mcfg: MeasureConfig | None = None, epochs: Iterable[int] | None = None
) -> list[int]:
    """The epochs of ``epochs`` (None: every stored one) that :func:`measure` would still have to
    measure for ``run`` under ``mcfg`` (not in its cache); ValueError as :func:`measure`'s."""
    return _plan(run, mcfg, epochs)[3]


def measure(
    run: Run | str | os.PathLike[str],
    mcfg: MeasureConfig | None = None,
    epochs: Iterable[int] | None = None,
    *,
    device: str = "cpu",
    progress: bool = False,
    trust: bool = False,
) -> pd.DataFrame:
    """Measure a stored run's layers at ``epochs`` (None: every stored epoch) under ``mcfg``.

    ``mcfg=None`` is the run's own (the estimator recorded during training). Results are cached in
    ``<run>/measures/<measure_id>.csv`` (written atomically; a second call reads the cache) and
    returned as a tidy table with :func:`measure_columns`. Bad settings and missing
    weights raise ``ValueError`` before any model is loaded; training files are never modified.
    Nothing is unpickled: weights are read with torch's weights-only loader (a damaged file raises
    ValueError naming it), and a previous-format checkpoint that :meth:`Run.load` would need to
    repair the tables is refused unless ``trust=True`` (docs/method.md §10, trust model).
    """
    if not isinstance(run, Run):
        run = Run.load(run, trust=trust)
    cfg = run.config
    mcfg, wanted, cached, todo = _plan(run, mcfg, epochs)
    path, columns = cache_path(run, mcfg), measure_columns(mcfg)
    steps = dict(zip(run.epochs["epoch"].astype(float), run.epochs["step"], strict=True))
    if todo:
        from ibstudy.data import INFO, eval_subset, load_dataset
        from ibstudy.device import pick_device

        dev = pick_device(device)
        test = load_dataset(cfg.dataset, split="test", root=cfg.data_root, download=False)
        x_eval, y_eval = eval_subset(test, mcfg.eval_size)
        recorder = PlaneRecorder(x_eval, y_eval, mcfg, device=dev)
        base = {
            "run": cfg.run_id(), "method": cfg.method, "head": cfg.head, "seed": cfg.seed,
            "dataset": cfg.dataset, "num_classes": INFO[cfg.dataset].num_classes,
        }  # fmt: skip
        settings = mcfg.columns()
        frames = []
        desc = f"measure {cfg.run_id()} under {mcfg.measure_id()}"
        for epoch in progress_bar(todo, desc=desc, enabled=progress, leave=False):
            model = run.load_model(epoch, map_location=str(dev)).to(dev)
            table = recorder.measure(model)
            step = steps.get(float(epoch), math.nan)
            frames.append(table.assign(**base, epoch=epoch, step=step, **settings))
        fresh = pd.concat(frames, ignore_index=True)[columns]
        cached = fresh if cached.empty else pd.concat([cached, fresh], ignore_index=True)
        cached = cached.sort_values(["epoch", "layer_index"], kind="stable", ignore_index=True)
        atomic_write_text(path, cached.to_csv(index=False))
    out = cached[cached["epoch"].astype(int).isin(wanted)]
    return out.reset_index(drop=True)[columns]


def measure_settings(**overrides: Any) -> MeasureConfig:
    """A validated MeasureConfig from keyword settings (None values keep the default)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return MeasureConfig.from_dict({**MeasureConfig().to_dict(), **values}).validate()
