"""Interventions: change one thing about training and ask whether the plane's readings move with it.

**C3b, second form** (docs/method.md §12; the critique "correlation is not cause", Saxe et al. 2018).
C3b's first form sets, across runs, middle-layer compression against the train-test gap: a
correlation. Here an intervention that changes generalization (weight decay at three or more
levels, the same seeds at every level) is applied, and the question is whether middle-layer
compression moves with the gap under it. :func:`intervention_effect` is the rule, a pure function
of a tidy table with one row per run (``seed``, the level column, ``middle_compression``, ``gap``):

1. levels are replaced by their ranks 0, 1, ..., L-1 (sorted by value: only the order of the
   levels counts, so 0, 1e-3, 1e-2 and 0, 1, 2 give the same result);
2. per seed, the least-squares slope over the rank of the gap and of the compression;
3. the **gap effect** and the **compression effect** are the means of those per-seed slopes over
   the seeds, each with its 95 % t interval (df = seeds - 1): the seed is the unit, as everywhere
   in the study (:func:`ibstudy.estimates.paired_effect`);
4. verdict: *not measured* when the gap effect's interval holds 0 (the intervention did not move
   generalization, so there is nothing to follow) or a run has no compression; otherwise the
   predicted sign of the compression effect is ``direction`` x the gap effect's sign (``direction``
   -1: compression rises where the gap falls); *holds* when the compression effect's interval
   excludes 0 on the predicted side, *contradicted* when it excludes 0 on the other side,
   *inconclusive* otherwise.

"Holds" needs both intervals to exclude 0 (an intersection-union test: no multiplicity correction),
so when compression does not depend on the level its rate is at most 2.5 %, whatever the gap does
(tests/test_intervention.py measures it on simulated tables shaped like the study's). Beside the
verdict, for description only: the per-level means and Spearman's correlation across the levels
of the level means of compression and gap.

:func:`tag_runs` adds a config field (``weight_decay``, ``activation``) to tables as a column;
:func:`claims_under` assesses the registered claims once per value of such a column (one Holm
family each), and :func:`claim_shift` asks whether a change (tanh for ReLU) moves them: per seed, a
claim's contrast (and the candidate's own statistic) under the change minus under the reference,
with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from ibstudy.checks import check_real
from ibstudy.claims import CLAIMS, Arm, claims_table
from ibstudy.config import TrainConfig
from ibstudy.estimates import Effect, paired_effect
from ibstudy.generalization import spearman
from ibstudy.tables import check_one_estimator, check_table

__all__ = [
    "MIN_LEVELS",
    "MIN_SEEDS",
    "RESULT_COLUMNS",
    "SHIFT_COLUMNS",
    "VERDICTS",
    "InterventionResult",
    "assess_intervention",
    "claim_shift",
    "claims_under",
    "intervention_effect",
    "intervention_points",
    "plot_intervention",
    "tag_runs",
]

#: an intervention needs at least this many levels (two would only give a difference)
MIN_LEVELS = 3
#: and the same seeds at every level, at least this many (an interval needs two)
MIN_SEEDS = 2
VERDICTS: tuple[str, ...] = ("holds", "contradicted", "inconclusive", "not measured")
RESULT_COLUMNS: list[str] = [
    "verdict", "n_seeds", "n_levels", "gap_effect", "gap_ci_low", "gap_ci_high",
    "compression_effect", "compression_ci_low", "compression_ci_high", "predicted_sign",
    "spearman_levels", "reason",
]  # fmt: skip


@dataclass(frozen=True)
class InterventionResult:
    """The rule's outcome: the verdict, both effects (None when not computed), the per-seed slopes,
    the per-level means and the descriptive Spearman correlation across levels."""

    verdict: str
    reason: str
    gap: Effect | None
    compression: Effect | None
    predicted_sign: int
    per_seed: pd.DataFrame
    per_level: pd.DataFrame
    spearman_levels: float
    n_levels: int
    n_seeds: int

    def summary(self) -> pd.DataFrame:
        """One row with :data:`RESULT_COLUMNS`."""

        def ends(effect: Effect | None) -> tuple[float, float, float]:
            if effect is None:
                return math.nan, math.nan, math.nan
            return effect.estimate, effect.ci_low, effect.ci_high

        gap, comp = ends(self.gap), ends(self.compression)
        row = {
            "verdict": self.verdict, "n_seeds": self.n_seeds, "n_levels": self.n_levels,
            "gap_effect": gap[0], "gap_ci_low": gap[1], "gap_ci_high": gap[2],
            "compression_effect": comp[0], "compression_ci_low": comp[1],
            "compression_ci_high": comp[2], "predicted_sign": self.predicted_sign,
            "spearman_levels": self.spearman_levels, "reason": self.reason,
        }  # fmt: skip
        return pd.DataFrame([row], columns=RESULT_COLUMNS)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def _check_points(
    points: pd.DataFrame, by: str, measure: str, outcome: str, min_seeds: int = MIN_SEEDS
) -> pd.DataFrame:
    """The validated table (numeric level, integer seeds, balanced seeds x levels)."""
    for name, value in (("by", by), ("measure", measure), ("outcome", outcome)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a column name, got {value!r}")
    check_table(points, ("seed", by, measure, outcome), "points")
    level = pd.to_numeric(points[by], errors="coerce")
    if level.isna().any() or not np.isfinite(level.to_numpy(dtype=float)).all():
        raise ValueError(f"points[{by!r}] must hold finite numbers (the intervention's levels)")
    seed = pd.to_numeric(points["seed"], errors="coerce")
    if seed.isna().any() or (seed != seed.round()).any():
        raise ValueError("points['seed'] must hold integer seeds")
    table = points.assign(**{by: level.astype(float), "seed": seed.astype(int)})
    levels = sorted(table[by].unique())
    if len(levels) < MIN_LEVELS:
        raise ValueError(
            f"{by} must take at least {MIN_LEVELS} levels (an intervention with two levels only "
            f"gives a difference), got {levels}"
        )
    counts = table.groupby(["seed", by]).size()
    if (counts > 1).any():
        twice = [tuple(k) for k in counts[counts > 1].index]
        raise ValueError(f"each (seed, {by}) must be one run; several runs for {twice}")
    seeds = sorted(table["seed"].unique())
    missing = [(s, v) for s in seeds for v in levels if (s, v) not in counts.index]
    if missing:
        raise ValueError(
            f"every seed must run at every level of {by} (seed-paired); missing (seed, {by}): "
            f"{missing}"
        )
    if len(seeds) < min_seeds:
        raise ValueError(
            f"a seed-paired interval needs >= {min_seeds} seeds at every level, got {seeds}"
        )
    return table


def _check_options(direction: int, level: float) -> float:
    """ValueError unless ``direction`` is +1 or -1 and ``level`` lies in (0, 1); the level."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    return check_real("level", level, minimum=0.0, maximum=1.0, include_minimum=False,
                      include_maximum=False)  # fmt: skip


def _per_level(table: pd.DataFrame, by: str, measure: str, outcome: str) -> pd.DataFrame:
    """Per level: the number of runs and the mean and std (ddof 1) of ``outcome`` and ``measure``."""
    values = table[[measure, outcome]].apply(pd.to_numeric, errors="coerce")
    return (
        table.assign(**{measure: values[measure], outcome: values[outcome]})
        .groupby(by)
        .agg(n=("seed", "size"), **{
            f"{outcome}_mean": (outcome, "mean"), f"{outcome}_std": (outcome, "std"),
            f"{measure}_mean": (measure, "mean"), f"{measure}_std": (measure, "std"),
        })
        .reset_index()
    )  # fmt: skip


def intervention_effect(
    points: pd.DataFrame,
    by: str = "weight_decay",
    *,
    measure: str = "middle_compression",
    outcome: str = "gap",
    direction: int = -1,
    level: float = 0.95,
) -> InterventionResult:
    """The C3b second-form rule of the module docstring on ``points`` (one row per run: ``seed``,
    ``by`` the intervention's level, ``measure`` and ``outcome``). ``direction`` -1 predicts that
    ``measure`` moves against ``outcome`` (more compression, smaller gap). ValueError before any
    work for missing columns, non-numeric levels, fewer than 3 levels or 2 seeds, or a seed
    missing a level or holding it twice."""
    level = _check_options(direction, level)
    table = _check_points(points, by, measure, outcome)
    levels = sorted(table[by].unique())
    rank = {v: float(i) for i, v in enumerate(levels)}
    table = table.assign(_rank=table[by].map(rank))
    values = table[[measure, outcome]].apply(pd.to_numeric, errors="coerce")
    per_level = _per_level(table, by, measure, outcome)
    n_levels, seeds = len(levels), sorted(table["seed"].unique())
    bad = table[~np.isfinite(values.to_numpy(dtype=float)).all(axis=1)]
    empty = pd.DataFrame(columns=["seed", f"{outcome}_slope", f"{measure}_slope"])
    if len(bad):
        where = ", ".join(f"seed {r.seed} at {by}={r[by]:g}" for _, r in bad.iterrows())
        return InterventionResult(
            "not measured", f"no {measure} or {outcome} for {where} (compression needs >= 10 "
            "epochs, 3 blocks and floors)", None, None, 0, empty, per_level, math.nan, n_levels,
            len(seeds),
        )  # fmt: skip
    table = table.assign(**{measure: values[measure], outcome: values[outcome]})
    rows = []
    for seed in seeds:
        part = table[table["seed"] == seed].sort_values("_rank")
        x = part["_rank"].to_numpy(dtype=float)
        rows.append({
            "seed": seed, f"{outcome}_slope": _slope(x, part[outcome].to_numpy(dtype=float)),
            f"{measure}_slope": _slope(x, part[measure].to_numpy(dtype=float)),
        })  # fmt: skip
    per_seed = pd.DataFrame(rows)
    gap = paired_effect(per_seed[f"{outcome}_slope"].to_numpy(), level)
    comp = paired_effect(per_seed[f"{measure}_slope"].to_numpy(), level)
    rho = spearman(per_level[f"{measure}_mean"].to_numpy(), per_level[f"{outcome}_mean"].to_numpy())
    alpha = 1.0 - level

    def excludes_zero(effect: Effect) -> bool:
        return math.isfinite(effect.p) and effect.p < alpha and effect.estimate != 0

    common = (per_seed, per_level, rho, n_levels, len(seeds))
    if not excludes_zero(gap):
        reason = (
            f"the intervention did not move {outcome}: its effect {gap.estimate:.3g} per level "
            f"[{gap.ci_low:.3g}, {gap.ci_high:.3g}] holds 0, so there is nothing to follow"
        )
        return InterventionResult("not measured", reason, gap, comp, 0, *common)
    predicted = direction * (1 if gap.estimate > 0 else -1)
    if not excludes_zero(comp):
        verdict = "inconclusive"
    else:
        verdict = "holds" if comp.estimate * predicted > 0 else "contradicted"
    reason = (
        f"{outcome} moved by {gap.estimate:.3g} per level [{gap.ci_low:.3g}, {gap.ci_high:.3g}]; "
        f"{measure} was predicted to move {'up' if predicted > 0 else 'down'} and moved "
        f"{comp.estimate:.3g} per level [{comp.ci_low:.3g}, {comp.ci_high:.3g}]"
    )
    return InterventionResult(verdict, reason, gap, comp, predicted, *common)


def assess_intervention(
    points: pd.DataFrame,
    by: str = "weight_decay",
    *,
    measure: str = "middle_compression",
    outcome: str = "gap",
    direction: int = -1,
    level: float = 0.95,
) -> InterventionResult:
    """:func:`intervention_effect`; with a single seed (a notebook at the quick preset) the per-level
    table and the verdict "not measured" (an interval needs two seeds), other bad input as there."""
    _check_options(direction, level)
    table = _check_points(points, by, measure, outcome, min_seeds=1)
    if table["seed"].nunique() >= MIN_SEEDS:
        return intervention_effect(
            points, by, measure=measure, outcome=outcome, direction=direction, level=level
        )
    empty = pd.DataFrame(columns=["seed", f"{outcome}_slope", f"{measure}_slope"])
    reason = f"1 seed: a seed-paired interval needs >= {MIN_SEEDS} seeds at every level"
    per_level = _per_level(table, by, measure, outcome)
    return InterventionResult("not measured", reason, None, None, 0, empty, per_level, math.nan,
                              table[by].nunique(), 1)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# from the study's tables
# ----------------------------------------------------------------------------------------------


def tag_runs(table: pd.DataFrame, configs: Iterable[TrainConfig], field_name: str) -> pd.DataFrame:
    """A copy of ``table`` with the column ``field_name`` (a TrainConfig field, e.g. ``weight_decay``
    or ``activation``) read from the config that trained each run; ValueError for a run without
    a config or an unknown field."""
    configs = list(configs)
    if field_name not in {f.name for f in fields(TrainConfig)}:
        raise ValueError(f"field_name must be a TrainConfig field, got {field_name!r}")
    values = {cfg.run_id(): getattr(cfg, field_name) for cfg in configs}
    check_table(table, ("run",), "table")
    missing = sorted(set(table["run"]) - set(values))
    if missing:
        raise ValueError(f"runs {missing[:3]} have no config in configs")
    return table.assign(**{field_name: table["run"].map(values)})


def intervention_points(
    layers: pd.DataFrame, epochs: pd.DataFrame, configs: Iterable[TrainConfig], by: str
) -> pd.DataFrame:
    """One row per run for :func:`intervention_effect`: :func:`ibstudy.generalization.
    compression_vs_gap`'s columns plus ``by`` from the runs' configs."""
    from ibstudy.generalization import compression_vs_gap

    points = compression_vs_gap(layers, epochs)
    return tag_runs(points, configs, by)


# ----------------------------------------------------------------------------------------------
# a changed activation: do the claims' contrasts move?
# ----------------------------------------------------------------------------------------------


def claims_under(
    layers: pd.DataFrame,
    epochs: pd.DataFrame,
    by: str,
    *,
    baselines: Sequence[dict[str, object]] = ({"method": "layerwise", "head": "linear"},),
    claims: Iterable[str] | None = None,
    stability: bool = True,
) -> pd.DataFrame:
    """:func:`ibstudy.claims.claims_table` of E2E against ``baselines`` once per value of the column
    ``by`` (e.g. ``activation``, from :func:`tag_runs`), each its own Holm family, ``by`` a column."""
    check_table(layers, ("run", by), "layers")
    check_table(epochs, ("run", by), "epochs")
    names = None if claims is None else list(claims)
    parts = []
    for value in pd.unique(layers[by]):
        part = claims_table(layers[layers[by] == value], epochs[epochs[by] == value],
                            baselines=baselines, claims=names, stability=stability)  # fmt: skip
        parts.append(part.assign(**{by: value}))
    return pd.concat(parts, ignore_index=True)


SHIFT_COLUMNS: list[str] = [
    "claim", "quantity", "n", "reference", "changed", "shift", "ci_low", "ci_high", "p",
]  # fmt: skip


def claim_shift(
    reference: tuple[Arm, Arm],
    changed: tuple[Arm, Arm],
    claims: Sequence[str] = ("C1", "C2", "C3"),
    level: float = 0.95,
) -> pd.DataFrame:
    """For each seed-paired claim, per seed shared by all four arms, the contrast candidate - baseline
    under ``changed`` minus under ``reference`` (``quantity`` ``contrast``), and the candidate's own
    statistic under ``changed`` minus under ``reference`` (``candidate``); their mean over the seeds
    with a t interval (NaN below two seeds or where a statistic is not measured)."""
    unknown = [c for c in claims if c not in CLAIMS or CLAIMS[c].statistic is None]
    if unknown or not claims:
        seeded = [c for c, claim in CLAIMS.items() if claim.statistic is not None]
        raise ValueError(f"claims must name seed-paired claims {seeded}, got {list(claims)}")
    arms = [*reference, *changed]
    if len(arms) != 4 or not all(isinstance(a, Arm) for a in arms):
        raise ValueError("reference and changed must each be a (candidate, baseline) pair of Arms")
    check_one_estimator(pd.concat([a.layers for a in arms]), "the four arms' layers")
    rows = []
    for name in claims:
        claim = CLAIMS[name]
        ref, new = claim.per_seed(*reference), claim.per_seed(*changed)
        both = ref.merge(new, on="seed", suffixes=("_ref", "_new"))
        for quantity, column in (("contrast", "difference"), ("candidate", "candidate")):
            a = both[f"{column}_ref"].to_numpy(dtype=float)
            b = both[f"{column}_new"].to_numpy(dtype=float)
            diff = b - a
            row = {
                "claim": name, "quantity": quantity, "n": len(both),
                "reference": float(np.mean(a)) if len(a) else math.nan,
                "changed": float(np.mean(b)) if len(b) else math.nan,
                "shift": float(np.mean(diff)) if len(diff) else math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
            }  # fmt: skip
            if len(diff) >= 2 and np.isfinite(diff).all():
                effect = paired_effect(diff, level)
                row.update(ci_low=effect.ci_low, ci_high=effect.ci_high, p=effect.p)
            rows.append(row)
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


# ----------------------------------------------------------------------------------------------
# figure
# ----------------------------------------------------------------------------------------------


def plot_intervention(
    points: pd.DataFrame,
    result: InterventionResult | None = None,
    by: str = "weight_decay",
    *,
    measure: str = "middle_compression",
    outcome: str = "gap",
):
    """Left and middle: the gap and the compression per level (one line per seed, level on a
    rank axis labelled by value); right: compression against gap, one colour per level. The
    title carries the rule's verdict when ``result`` is given."""
    import seaborn as sns

    from ibstudy.plots import StudyFigure

    check_table(points, ("seed", by, measure, outcome), "points")
    levels = sorted(pd.to_numeric(points[by]).unique())
    rank = {v: i for i, v in enumerate(levels)}
    data = points.assign(_rank=pd.to_numeric(points[by]).map(rank))
    palette = dict(zip(levels, sns.color_palette("viridis", len(levels)), strict=True))
    fig = StudyFigure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, column in zip(axes[:2], (outcome, measure), strict=True):
        for _, part in data.sort_values("_rank").groupby("seed"):
            ax.plot(part["_rank"], part[column], marker="o", color="0.5", lw=0.8, ms=4)
        means = data.groupby("_rank")[column].mean()
        ax.plot(means.index, means.to_numpy(), color="black", lw=2, marker="s", label="mean")
        ax.set_xticks(range(len(levels)), [f"{v:g}" for v in levels])
        ax.set(xlabel=by, ylabel=column)
    for value in levels:
        part = data[data[by] == value]
        axes[2].scatter(part[outcome], part[measure], color=palette[value], label=f"{value:g}",
                        edgecolor="0.25", linewidth=0.3)  # fmt: skip
    axes[2].set(xlabel=outcome, ylabel=measure)
    axes[2].legend(title=by, fontsize=7)
    if not pd.to_numeric(points[measure], errors="coerce").notna().any():
        for ax in axes[1:]:
            ax.text(0.5, 0.5, f"no run with a {measure}\n(needs >= 10 epochs, 3 blocks, floors)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8)  # fmt: skip
    if result is not None:
        fig.suptitle(f"intervention on {by}: {result.verdict} ({result.n_seeds} seeds x "
                     f"{result.n_levels} levels)", fontsize=10)  # fmt: skip
    return fig
