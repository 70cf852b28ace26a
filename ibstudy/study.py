"""What the notebooks share: configs from notebook parameters, cached runs, tidy table files.

A training notebook calls :func:`run_study` with its parameters and the variants it compares (one run
per variant, trained or reused), and gets the concatenated tables back, also written under
``<results_dir>/tables/`` for the summary notebook. :func:`measure_runs` re-measures stored runs under
another estimator (docs/method.md §10) without retraining.

The notebooks' own policy lives here too, not in their cells: where a notebook's epochs and seeds
depart from the preset's (:data:`NOTEBOOK_DEFAULTS`, :func:`notebook_epochs`, :func:`notebook_seeds`),
notebook 08's variants (:func:`beyond_variants`) and the studies notebook 06 pools
(:data:`SUMMARY_STUDIES`, :func:`read_studies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ibstudy.checks import check_choice, check_int, check_int_list, check_real
from ibstudy.config import PRESET_SEEDS, PRESETS, MeasureConfig, TrainConfig
from ibstudy.store import Run, atomic_write_text

__all__ = [
    "BEYOND_LAMBDAS",
    "CRITIQUE_SEEDS",
    "CRITIQUE_WEIGHT_DECAYS",
    "NOTEBOOK_DEFAULTS",
    "NotebookDefaults",
    "SUMMARY_STUDIES",
    "StudyTables",
    "beyond_variants",
    "concat_tables",
    "critique_seeds",
    "intervention_variants",
    "measure_runs",
    "measure_suite",
    "notebook_epochs",
    "notebook_params",
    "notebook_seeds",
    "read_pooled_tables",
    "read_studies",
    "read_tables",
    "run_study",
    "scale_label",
    "study_config",
    "train_all",
    "write_tables",
]


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


def train_all(
    configs: Iterable[TrainConfig], *, progress: bool = True, jobs: int | str | None = None
) -> list[Run]:
    """Train every config, reusing stored complete runs and resuming partial ones; ``jobs`` runs
    side by side (None: the ``IBSTUDY_JOBS`` variable, else ``"auto"``; :mod:`ibstudy.parallel`)."""
    from ibstudy.parallel import train_runs

    return train_runs(list(configs), jobs=jobs, progress=progress)  # type: ignore[return-value]


def concat_tables(runs: Iterable[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' ``epochs`` and ``layers`` tables, concatenated (tidy: one row per run x epoch [x layer])."""
    runs = list(runs)
    if not runs:
        raise ValueError("runs must hold at least one Run")
    epochs = pd.concat([r.epochs for r in runs], ignore_index=True)
    layers = pd.concat([r.layers for r in runs], ignore_index=True)
    return epochs, layers


def measure_runs(
    runs: Iterable[Run],
    mcfg: MeasureConfig | None = None,
    epochs: Iterable[int] | None = None,
    *,
    progress: bool = False,
    jobs: int | str | None = None,
) -> pd.DataFrame:
    """The runs' measurement tables under ``mcfg`` (None: each run's own), concatenated (cached);
    ``jobs`` measures the uncached runs side by side first (:func:`measure_suite`)."""
    return measure_suite(runs, {"": mcfg}, epochs, progress=progress, jobs=jobs)[""]


def measure_suite(
    runs: Iterable[Run],
    settings: Mapping[str, MeasureConfig | None],
    epochs: Iterable[int] | None = None,
    *,
    progress: bool = False,
    jobs: int | str | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`measure_runs` under every labelled settings: the (run, settings) pairs not yet cached
    are first measured in ``jobs`` worker processes at once (None: ``IBSTUDY_JOBS``, else auto;
    :func:`ibstudy.parallel.measure_in_workers`), then every table is read here from its cache."""
    from ibstudy.measure import measure
    from ibstudy.parallel import measure_in_workers

    runs = list(runs)
    if not runs:
        raise ValueError("runs must hold at least one Run")
    wanted = None if epochs is None else list(epochs)
    pairs = [(r, mcfg) for mcfg in settings.values() for r in runs]
    measure_in_workers(pairs, wanted, jobs=jobs, progress=progress)
    return {
        label: pd.concat(
            [measure(r, mcfg, wanted, progress=progress) for r in runs], ignore_index=True
        )
        for label, mcfg in settings.items()
    }


def scale_label(cfg: TrainConfig, preset: str) -> str:
    """A one-line description of a run's scale, shown next to every number the study reports."""
    epochs = cfg.total_epochs()
    return (
        f"{cfg.dataset}, {cfg.model} (width {cfg.width:g}), {epochs} epochs, {preset} preset, "
        f"nHSIC on {cfg.eval_size} test images in chunks of m={cfg.chunk_size}"
    )


@dataclass
class StudyTables:
    """What a training notebook works with: its runs, their tables and the scale they describe."""

    runs: list[Run]
    configs: list[TrainConfig]
    epochs: pd.DataFrame
    layers: pd.DataFrame
    scale: str


def run_study(
    name: str,
    variants: Sequence[Mapping[str, Any]],
    *,
    preset: str = "quick",
    results_dir: str = "results",
    progress: bool = True,
    seeds: Sequence[int] | None = None,
    jobs: int | str | None = None,
    **params: Any,
) -> StudyTables:
    """Train (or reuse) one run per variant and seed; write ``<name>_epochs.csv`` / ``_layers.csv``.

    ``params`` are the notebook's parameters (TrainConfig fields; None keeps the preset's value) and
    each variant adds its own fields (e.g. ``{"method": "layerwise", "head": "mlp"}``). ``seeds``
    (a non-empty list of distinct integers >= 0) repeats every variant once per seed; None takes
    the preset's seeds (:data:`ibstudy.config.PRESET_SEEDS`; the ``study`` preset runs five) or,
    for presets without, ``params["seed"]``. All configs are validated before any training starts;
    ``jobs`` trains independent runs side by side (:func:`train_all`).
    """
    if seeds is None and PRESET_SEEDS.get(preset) is not None:
        seeds = list(PRESET_SEEDS[preset])
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a plain table name such as '02_lenet5', got {name!r}")
    if isinstance(variants, Mapping) or not variants:
        raise ValueError(
            f"variants must be a non-empty list of dicts of TrainConfig fields, got {variants!r}"
        )
    if seeds is not None:
        if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or not seeds:
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
        seeds = check_int_list("seeds", seeds, minimum=0)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    points = [{}] if seeds is None else [{"seed": s} for s in seeds]
    configs = [
        study_config(preset, results_dir=results_dir, **{**params, **dict(v), **p})
        for v in variants
        for p in points
    ]
    runs = train_all(configs, progress=progress, jobs=jobs)
    epochs, layers = concat_tables(runs)
    scale = scale_label(configs[0], preset)
    write_tables(name, epochs, layers, results_dir=results_dir, scale=scale)
    return StudyTables(runs=runs, configs=configs, epochs=epochs, layers=layers, scale=scale)


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


def read_pooled_tables(
    names: Sequence[str], *, results_dir: str = "results"
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The tables of several notebooks of one study concatenated, a run that several wrote counted
    once (e.g. notebook 02's runs with notebook 03's MLP-head runs); None when none has run."""
    found = [t for t in (read_tables(n, results_dir=results_dir) for n in names) if t is not None]
    if not found:
        return None
    epochs = pd.concat([t[0] for t in found], ignore_index=True)
    layers = pd.concat([t[1] for t in found], ignore_index=True)
    epochs = epochs.drop_duplicates(subset=["run", "epoch"], ignore_index=True)
    layers = layers.drop_duplicates(subset=["run", "epoch", "layer"], ignore_index=True)
    return epochs, layers


def notebook_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a notebook's namespace that :func:`run_study` takes: ``preset``,
    ``results_dir`` and every TrainConfig field (pass ``globals()`` after the parameters cell)."""
    import dataclasses

    names = {"preset", "results_dir", *(f.name for f in dataclasses.fields(TrainConfig))}
    return {k: v for k, v in namespace.items() if k in names}


@dataclass(frozen=True)
class NotebookDefaults:
    """Where a training notebook's ``epochs=None`` / ``seeds=None`` depart from its preset's."""

    epochs: Mapping[str, int] = field(default_factory=dict)  # per preset
    other_epochs: int | None = None  # at the presets ``epochs`` leaves out; None: the preset's
    one_seed: bool = False  # seeds=None trains ``seed`` alone, not the preset's seeds


_PRESET = NotebookDefaults()
#: a thin ResNet epoch costs ~7 s on a 2-core CPU: fewer epochs, one seed; 05 reuses 04's runs
_RESNET = NotebookDefaults({"quick": 2, "study": 10}, one_seed=True)
#: the training notebooks by number; 07 re-measures 02's runs, 08 trains eleven variants per seed,
#: 10 reuses 02's runs and adds tanh and weight-decay runs (:func:`critique_seeds`)
NOTEBOOK_DEFAULTS: dict[str, NotebookDefaults] = {
    "02": _PRESET,
    "03": _PRESET,
    "04": _RESNET,
    "05": _RESNET,
    "07": _PRESET,
    "08": NotebookDefaults({"quick": 3, "study": 20}, other_epochs=400, one_seed=True),
    "10": _PRESET,
}


def _defaults(notebook: str) -> NotebookDefaults:
    check_choice("notebook", notebook, list(NOTEBOOK_DEFAULTS))
    return NOTEBOOK_DEFAULTS[notebook]


def notebook_epochs(notebook: str, preset: str, epochs: int | None = None) -> int | None:
    """The epochs training ``notebook`` (e.g. ``"08"``) runs at ``preset``: ``epochs`` when given,
    else its :data:`NOTEBOOK_DEFAULTS` entry; None leaves the preset's value."""
    defaults = _defaults(notebook)
    check_choice("preset", preset, PRESETS)
    if epochs is not None:
        return check_int("epochs", epochs, minimum=1)
    return defaults.epochs.get(preset, defaults.other_epochs)


def notebook_seeds(
    notebook: str, seed: int, seeds: Sequence[int] | None = None
) -> Sequence[int] | None:
    """The seeds ``notebook`` passes to :func:`run_study`: ``seeds`` when given, else ``[seed]`` where
    it trains one seed by default, else None (the preset's seeds)."""
    if seeds is not None or not _defaults(notebook).one_seed:
        return seeds
    return [seed]


#: notebook 08's nHSIC regularizer weights (its ``lambdas`` parameter)
BEYOND_LAMBDAS: tuple[float, ...] = (0.01, 0.1)


def beyond_variants(epochs: int, lambdas: Sequence[float] = BEYOND_LAMBDAS) -> list[dict[str, Any]]:
    """Notebook 08's variants, in its order (eleven with two ``lambdas``); sequential layer-wise
    training gets ``max(1, epochs // 5)`` epochs per stage (four blocks, then the classifier)."""
    if not isinstance(lambdas, list | tuple) or not lambdas:
        raise ValueError(f"lambdas must be a non-empty list of numbers >= 0, got {lambdas!r}")
    weights = [check_real("lambdas entries", v, minimum=0.0) for v in lambdas]
    epochs = check_int("epochs", epochs, minimum=1)
    lw = {"method": "layerwise", "head": "linear"}
    return [
        {"method": "e2e"},
        dict(lw),
        {"method": "layerwise_sequential", "head": "linear", "epochs": max(1, epochs // 5)},
        {**lw, "local_loss": "supcon", "augment": True},
        {**lw, "local_loss": "similarity_matching"},
        *[
            {**lw, "nhsic_reg": reg, "nhsic_lambda": lam}
            for reg in ("global", "local")
            for lam in weights
        ],
        {"method": "forward_forward"},
        {"method": "signal_propagation"},
    ]


#: notebook 10: its new runs (tanh, weight decay > 0) train the first this many of the preset's seeds
CRITIQUE_SEEDS = 5
#: notebook 10's weight decays, the intervention of C3b's second form (0: notebook 02's E2E runs)
CRITIQUE_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-3, 1e-2)


def critique_seeds(preset: str, seed: int, seeds: Sequence[int] | None = None) -> list[int]:
    """The seeds of notebook 10's new runs: ``seeds`` when given, else the first
    :data:`CRITIQUE_SEEDS` of the preset's seeds, or ``[seed]`` at a preset without seeds."""
    check_choice("preset", preset, PRESETS)
    if seeds is not None:
        return list(check_int_list("seeds", seeds, minimum=0))
    preset_seeds = PRESET_SEEDS.get(preset)
    if preset_seeds is None:
        return [check_int("seed", seed, minimum=0)]
    return list(preset_seeds[:CRITIQUE_SEEDS])


def intervention_variants(weight_decays: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Notebook 10's E2E runs, one per weight decay (None: :data:`CRITIQUE_WEIGHT_DECAYS`): 0 is
    notebook 02's E2E config (its runs are reused); the others skip the probes, which this
    comparison does not read (probes draw from their own generator: the training is the same)."""
    if weight_decays is None:
        weight_decays = CRITIQUE_WEIGHT_DECAYS
    if not isinstance(weight_decays, list | tuple) or not weight_decays:
        raise ValueError(
            f"weight_decays must be a non-empty list of numbers >= 0, got {weight_decays!r}"
        )
    values = [check_real("weight_decays entries", v, minimum=0.0) for v in weight_decays]
    if len(set(values)) != len(values):
        raise ValueError(f"weight_decays must be distinct, got {values}")
    return [
        {"method": "e2e"} if v == 0 else {"method": "e2e", "weight_decay": v, "probe_epochs": ()}
        for v in values
    ]


#: notebook 06's studies: a label and the notebooks' tables it pools (02's runs with 03's MLP heads)
SUMMARY_STUDIES: dict[str, tuple[str, ...]] = {
    "LeNet5": ("02_lenet5", "03_heads"),
    "ResNet": ("05_resnet",),
}


def read_studies(
    studies: Mapping[str, Sequence[str]] = SUMMARY_STUDIES, *, results_dir: str = "results"
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Each study's pooled ``(epochs, layers)`` tables (:func:`read_pooled_tables`), in the order
    of ``studies``; a study none of whose notebooks has run is left out."""
    found = {
        label: read_pooled_tables(names, results_dir=results_dir)
        for label, names in studies.items()
    }
    return {label: tables for label, tables in found.items() if tables is not None}
