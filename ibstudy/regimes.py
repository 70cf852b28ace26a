"""Where the gap lives: a grid of regimes (depth x difficulty), each trained E2E and layer-wise.

docs/method.md §12 ("Regimes") states everything here before its numbers exist. A :class:`Cell` is
one model on one version of the data; every cell trains E2E and layer-wise (linear heads) over the
same seeds with the same schedule (:func:`grid_configs`). :func:`cell_summary` decides each cell's
claims with the study's own rules (:func:`ibstudy.claims.assess` on the pair) and its accuracy gap
under both readouts (:mod:`ibstudy.readout`); :func:`across_cells` tests the paper's explanation
across cells (cells, not seeds, are the units); :func:`premise_regime` picks, by a rule stated in
advance, the cheapest cell where the premise (a real accuracy gap) holds.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ibstudy.checks import check_choice, check_int, check_real
from ibstudy.claims import Arm, assess
from ibstudy.compare import role_gap
from ibstudy.estimates import ALPHA, holm
from ibstudy.readout import PREDICTION, readout_effects, readout_verdict

__all__ = [
    "ACROSS",
    "GRID_DEFAULTS",
    "GridTables",
    "run_grid",
    "Cell",
    "DIFFICULTIES",
    "GRIDS",
    "across_cells",
    "cell_summary",
    "grid_cells",
    "grid_configs",
    "premise_regime",
    "spearman_permutation",
]

#: difficulty name -> the TrainConfig fields that make it (docs/method.md §6)
DIFFICULTIES: dict[str, dict[str, Any]] = {
    "digits": {"dataset": "mnist5k"},
    "few": {"dataset": "mnist5k", "train_size": 500},
    "cluttered": {"dataset": "mnist5k_cluttered"},
}
#: depth name -> the model fields (widths chosen so a cell trains in minutes on 2 CPU cores)
DEPTHS: dict[str, dict[str, Any]] = {
    "lenet5": {"model": "lenet5", "width": 1.0},
    "vgg8b": {"model": "vgg8b", "width": 0.0625},
    "resnet18": {"model": "resnet18", "width": 0.125},
}
#: the two arms of every cell: candidate (E2E) and baseline (layer-wise, linear heads)
CANDIDATE: dict[str, str] = {"method": "e2e", "head": "none"}
BASELINE: dict[str, str] = {"method": "layerwise", "head": "linear"}
#: across-cell statistics: each cell's mean accuracy gap against these per-cell columns
ACROSS: tuple[str, ...] = ("C1_estimate", "role_gap")


@dataclass(frozen=True)
class Cell:
    """One regime: a depth (model) and a difficulty (data); its name is ``<depth>/<difficulty>``."""

    depth: str
    difficulty: str

    def __post_init__(self) -> None:
        check_choice("depth", self.depth, list(DEPTHS))
        check_choice("difficulty", self.difficulty, list(DIFFICULTIES))

    @property
    def name(self) -> str:
        """``<depth>/<difficulty>``."""
        return f"{self.depth}/{self.difficulty}"

    def fields(self) -> dict[str, Any]:
        """The TrainConfig fields of this cell (model, width, dataset, train size)."""
        return {**DEPTHS[self.depth], **DIFFICULTIES[self.difficulty]}


def _cells(depths: Sequence[str], difficulties: Sequence[str]) -> tuple[Cell, ...]:
    return tuple(Cell(m, d) for m in depths for d in difficulties)


#: the grids by name, each cell listed cheapest first (measured training time on a 2-core CPU):
#: the order :func:`premise_regime` walks
GRIDS: dict[str, tuple[Cell, ...]] = {
    "smoke": _cells(("lenet5",), ("few", "cluttered")),
    "default": _cells(("lenet5", "vgg8b"), ("few", "digits", "cluttered")),
    "full": _cells(("lenet5", "vgg8b", "resnet18"), ("few", "digits", "cluttered")),
}


def grid_cells(grid: str) -> tuple[Cell, ...]:
    """The cells of the grid named ``grid`` (:data:`GRIDS`), cheapest first."""
    check_choice("grid", grid, list(GRIDS))
    return GRIDS[grid]


def grid_configs(
    cells: Sequence[Cell], *, preset: str, results_dir: str, seeds: Sequence[int], epochs: int,
    **params: Any,
) -> list[tuple[Cell, list[Any]]]:  # fmt: skip
    """Per cell, its validated TrainConfigs (E2E then layer-wise, each over ``seeds``); the same
    schedule for every cell: ``epochs`` epochs of ``preset`` without probes or sub-epoch points.
    ``params`` are further TrainConfig fields (None: the preset's); a ``train_size`` caps the
    cell's own."""
    from ibstudy.study import study_config

    check_int("epochs", epochs, minimum=1)
    params = {k: v for k, v in params.items() if v is not None}
    out = []
    for cell in cells:
        fields = {**params, **cell.fields()}
        sizes = [n for n in (params.get("train_size"), cell.fields().get("train_size")) if n]
        if sizes:
            fields["train_size"] = min(sizes)
        configs = [
            study_config(preset, results_dir=results_dir, epochs=epochs, seed=int(seed),
                         probe_epochs=(), record_fractions=(), **fields, **arm)
            for arm in (CANDIDATE, BASELINE)
            for seed in seeds
        ]  # fmt: skip
        out.append((cell, configs))
    return out


#: per preset: the grid, its seeds and its epochs (notebook 09; notebooks 02 and 03 reuse them)
GRID_DEFAULTS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "quick": ("smoke", (0, 1), 2),
    "study": ("default", (0, 1, 2), 10),
    "paper": ("full", (0, 1, 2), 40),
}


@dataclass
class GridTables:
    """A trained grid: per-cell summary, the across-cell test, the premise regime, the tables."""

    summary: pd.DataFrame
    across: pd.DataFrame
    premise: str | None
    cells: tuple[Cell, ...]
    epochs: pd.DataFrame  # with a ``cell`` column
    layers: pd.DataFrame  # with a ``cell`` column

    def claims(self, name: str) -> pd.DataFrame:
        """The study's claims table (E2E against layer-wise, linear heads) of the cell ``name``."""
        from ibstudy.claims import claims_table

        layers, epochs = self.cell_tables(name)
        return claims_table(layers, epochs, candidate=CANDIDATE, baselines=(BASELINE,))

    def premise_message(self) -> str:
        """One line: the premise regime and its gap, or that no cell has one, with each cell's gap."""
        rows = self.summary.set_index("cell")
        if self.premise is not None:
            r = rows.loc[self.premise]
            return (f"The premise holds in {self.premise}: E2E - layer-wise final test accuracy "
                    f"{r['gap_mean']:+.4f} ± {r['gap_std']:.4f} (95 % CI [{r['gap_ci_low']:+.4f}, "
                    f"{r['gap_ci_high']:+.4f}], {r['gap_k_of_n']} seeds), last-head gap "
                    f"{r['head_gap_mean']:+.4f}: the cheapest such cell of the grid.")  # fmt: skip
        cells = "; ".join(
            f"{name} {r['gap_mean']:+.4f} ± {r['gap_std']:.4f} ({r['readout_verdict']})"
            for name, r in rows.iterrows()
        )
        return f"No cell of this grid has a gap under both readouts. Gaps (E2E - LW): {cells}."

    def cell_tables(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(layers, epochs) of the cell named ``name``; ValueError listing the cells."""
        names = [c.name for c in self.cells]
        check_choice("cell", name, names)
        return (self.layers[self.layers["cell"] == name], self.epochs[self.epochs["cell"] == name])


def run_grid(
    grid: str | None = None,
    *,
    preset: str = "quick",
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    results_dir: str = "results",
    jobs: int | str | None = None,
    progress: bool = True,
    **params: Any,
) -> GridTables:
    """Train (or reuse) every cell of ``grid`` (None: :data:`GRID_DEFAULTS` of ``preset``, as are
    ``seeds`` and ``epochs``), decide each cell and the across-cell test, and write the tidy
    tables ``09_regimes_{epochs,layers,summary,across}.csv`` under ``<results_dir>/tables``."""
    from ibstudy.store import atomic_write_text
    from ibstudy.study import concat_tables, train_all, write_tables

    check_choice("preset", preset, list(GRID_DEFAULTS))
    default_grid, default_seeds, default_epochs = GRID_DEFAULTS[preset]
    cells = grid_cells(default_grid if grid is None else grid)
    seeds = list(default_seeds if seeds is None else seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"seeds must be >= 2 distinct integers (a seed-paired analysis), got {seeds}"
        )
    pairs = grid_configs(cells, preset=preset, results_dir=str(results_dir),
                         seeds=seeds, epochs=default_epochs if epochs is None else epochs,
                         **params)  # fmt: skip
    runs = train_all([c for _, configs in pairs for c in configs], progress=progress, jobs=jobs)
    by_id = {r.config.run_id(): r for r in runs}
    rows, all_epochs, all_layers = [], [], []
    for cell, configs in pairs:
        ep, lay = concat_tables([by_id[c.run_id()] for c in configs])
        ep, lay = ep.assign(cell=cell.name), lay.assign(cell=cell.name)
        rows.append(cell_summary(cell, lay, ep))
        all_epochs.append(ep)
        all_layers.append(lay)
    summary = pd.DataFrame(rows)
    across = across_cells(summary)
    epochs_table = pd.concat(all_epochs, ignore_index=True)
    layers_table = pd.concat(all_layers, ignore_index=True)
    write_tables("09_regimes", epochs_table, layers_table, results_dir=results_dir,
                 scale=f"grid {grid or default_grid}, {preset} preset")  # fmt: skip
    folder = Path(results_dir) / "tables"
    atomic_write_text(folder / "09_regimes_summary.csv", summary.to_csv(index=False))
    atomic_write_text(folder / "09_regimes_across.csv", across.to_csv(index=False))
    return GridTables(summary, across, premise_regime(summary, cells), cells, epochs_table,
                      layers_table)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# one cell
# ----------------------------------------------------------------------------------------------

_CLAIMS = ("C1", "C2", "C3", "C4a")


def cell_summary(cell: Cell, layers: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, Any]:
    """One row of the regimes table: accuracies, the gap under each readout (mean, std, interval,
    k of n, verdict) and the readout verdict, the claims C1, C2, C3, C4a decided by
    :func:`ibstudy.claims.assess` on (E2E, layer-wise) with each effect's z, and the role gap."""
    e2e = Arm.select(layers, epochs, name="e2e", **CANDIDATE)
    lw = Arm.select(layers, epochs, name="layerwise/linear", **BASELINE)
    row: dict[str, Any] = {"cell": cell.name, "depth": cell.depth, "difficulty": cell.difficulty,
                           "n_seeds": len(e2e.seeds)}  # fmt: skip
    final = {
        name: [float(arm.run(s).epochs.sort_values("epoch")["test_acc"].iloc[-1])
               for s in arm.seeds]
        for name, arm in (("e2e", e2e), ("layerwise", lw))
    }  # fmt: skip
    for name, values in final.items():
        row[f"{name}_acc_mean"] = float(np.mean(values))
        row[f"{name}_acc_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    effects = readout_effects(e2e, lw).set_index("readout")
    for readout, prefix in ((PREDICTION, "gap"), ("last_head", "head_gap")):
        for key in ("estimate", "std", "ci_low", "ci_high", "verdict", "k_of_n"):
            row[f"{prefix}_{'mean' if key == 'estimate' else key}"] = effects.loc[readout, key]
    row["readout_verdict"] = readout_verdict(effects.reset_index())
    judged = assess(e2e, lw, _CLAIMS).set_index("claim")
    for claim in _CLAIMS:
        r = judged.loc[claim]
        row[f"{claim}_estimate"] = r["estimate"]
        row[f"{claim}_ci_low"], row[f"{claim}_ci_high"] = r["ci_low"], r["ci_high"]
        row[f"{claim}_z"] = r["d"] * math.sqrt(r["n"]) if r["n"] else math.nan
        row[f"{claim}_verdict"] = r["verdict"]
    gaps = [role_gap(lw.run(s).layers, e2e.run(s).layers) for s in e2e.seeds]
    row["role_gap"] = float(np.nanmean(gaps)) if np.isfinite(gaps).any() else math.nan
    row["role_gap_std"] = float(np.nanstd(gaps, ddof=1)) if len(gaps) > 1 else math.nan
    return row


# ----------------------------------------------------------------------------------------------
# across cells
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _orders(n: int) -> np.ndarray:
    """Every permutation of ``n`` points up to 8, else 20,000 fixed-seed random ones (rows)."""
    if n <= 8:
        return np.array(list(itertools.permutations(range(n))))
    rng = np.random.default_rng(0)
    return np.array([rng.permutation(n) for _ in range(20_000)])


def spearman_permutation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Spearman's rho of ``x`` and ``y`` and its one-sided permutation p-values (rho >= observed,
    rho <= observed): exact over every permutation up to 8 points, else 20,000 fixed-seed draws."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if (
        a.shape != b.shape
        or a.ndim != 1
        or len(a) < 3
        or not np.isfinite(a).all()
        or not (np.isfinite(b).all())
    ):
        raise ValueError(f"x and y must be equal-length finite sequences of >= 3, got {a}, {b}")
    ra, rb = stats.rankdata(a), stats.rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan, 1.0, 1.0

    observed = float(np.corrcoef(ra, rb)[0, 1])
    orders = _orders(len(a))
    shuffled = rb[orders] - rb.mean()
    centred = ra - ra.mean()
    null = (shuffled @ centred) / (np.linalg.norm(centred) * np.linalg.norm(shuffled, axis=1))
    tol = 1e-12
    return observed, float(np.mean(null >= observed - tol)), float(np.mean(null <= observed + tol))


def _heterogeneity(means: np.ndarray, stds: np.ndarray, counts: np.ndarray) -> float:
    """One-way ANOVA p-value from each cell's mean, std and number of seeds: do the cells' gaps
    differ by more than the seed-to-seed noise pooled over every cell?"""
    k, total = len(means), float(np.sum(counts))
    if k < 2 or total - k < 1:
        return math.nan
    grand = float(np.sum(counts * means) / total)
    between = float(np.sum(counts * (means - grand) ** 2)) / (k - 1)
    within = float(np.sum((counts - 1) * stds**2)) / (total - k)
    if within == 0:
        return 0.0 if between > 0 else 1.0
    return float(stats.f.sf(between / within, k - 1, total - k))


def across_cells(summary: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The test of the explanation across cells (docs/method.md §12): for each column of
    :data:`ACROSS`, Spearman's rho with the cells' mean gap (prediction readout), one-sided exact
    permutation p in each direction, Holm over the columns; "holds" (rho > 0, Holm p < alpha),
    "contradicted" (rho < 0 likewise), "inconclusive", or "untestable" when the gaps do not vary
    across cells beyond their seed noise (one-way ANOVA of the seed-paired gaps, p >= alpha) or
    fewer than 3 cells."""
    alpha = check_real("alpha", alpha, minimum=0.0, maximum=1.0, include_minimum=False)
    needed = ["cell", "gap_mean", "gap_std", "n_seeds", *ACROSS]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing} (cell_summary rows); has "
                         f"{list(summary.columns)}")  # fmt: skip
    table = summary.dropna(subset=["gap_mean", *ACROSS])
    gaps = table["gap_mean"].to_numpy(dtype=float)
    stds = np.nan_to_num(table["gap_std"].to_numpy(dtype=float), nan=0.0)
    counts = table["n_seeds"].to_numpy(dtype=float)
    het = _heterogeneity(gaps, stds, counts) if len(table) >= 3 else math.nan
    rows = []
    for column in ACROSS:
        if len(table) < 3:
            rows.append({"statistic": column, "rho": math.nan, "p_greater": math.nan,
                         "p_less": math.nan})  # fmt: skip
            continue
        rho, p_greater, p_less = spearman_permutation(gaps, table[column].to_numpy(dtype=float))
        rows.append({"statistic": column, "rho": rho, "p_greater": p_greater, "p_less": p_less})
    out = pd.DataFrame(rows)
    out["p_greater_holm"] = holm(out["p_greater"].to_numpy(dtype=float))
    out["p_less_holm"] = holm(out["p_less"].to_numpy(dtype=float))
    out["n_cells"] = len(table)
    out["heterogeneity_p"] = het
    verdicts = []
    for r in out.itertuples():
        if len(table) < 3 or not het < alpha:
            verdicts.append("untestable")
        elif r.p_greater_holm < alpha and r.rho > 0:
            verdicts.append("holds")
        elif r.p_less_holm < alpha and r.rho < 0:
            verdicts.append("contradicted")
        else:
            verdicts.append("inconclusive")
    out["verdict"] = verdicts
    return out


def premise_regime(summary: pd.DataFrame, cells: Sequence[Cell]) -> str | None:
    """The first of ``cells`` (listed cheapest first) whose gap is a gap under both readouts
    (:func:`ibstudy.readout.readout_verdict` "gap": the seed-paired gap of the prediction and of
    the last head supported); None when no cell qualifies."""
    if "readout_verdict" not in summary.columns or "cell" not in summary.columns:
        raise ValueError("summary must hold cell_summary rows (columns cell, readout_verdict)")
    verdicts = dict(zip(summary["cell"], summary["readout_verdict"], strict=True))
    for cell in cells:
        if verdicts.get(cell.name) == "gap":
            return cell.name
    return None
