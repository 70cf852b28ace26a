"""The paper's claims as registered rules: one pre-stated contrast each, estimated across seeds.

docs/method.md §12 states every contrast before its numbers exist; this module implements them.
A comparison sets a *candidate* (E2E in the paper) against a *baseline* (any other variant): each
side is an :class:`Arm`, the runs of one variant with one run per seed. A :class:`Claim` turns the
two arms into an effect with a 95 % interval (seed-paired t across seeds, or a stratified slope
across runs for C3b), and :func:`assess` decides all claims of one comparison together, Holm-adjusted:
*supported* (significant in the claimed direction), *contradicted* (significant the other way),
*inconclusive*, or *not measured* (with the reason). No rule divides by a point's own chunk
standard error: the spread between seeds already holds every point's noise.

Adding a claim is one function and one :func:`register` call; nothing else branches on its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from ibstudy.checks import check_real
from ibstudy.describe import excess
from ibstudy.estimates import (
    ALPHA,
    Effect,
    holm,
    mcnemar,
    paired_effect,
    paired_power,
    stratified_slope,
    verdict,
)
from ibstudy.tables import blocks as block_rows
from ibstudy.tables import check_one_estimator, check_table

__all__ = [
    "CLAIMS",
    "Arm",
    "Claim",
    "Estimate",
    "NotMeasured",
    "RunView",
    "assess",
    "claims_table",
    "register",
    "seed_pairs",
    "windows",
]

LAYER_REQUIRED = ("run", "method", "head", "seed", "epoch", "layer", "layer_index", "nhsic_xz")
#: whole epochs a run must record for the early/late windows of C3 and C3b
MIN_WINDOW_EPOCHS = 10
#: a window is this fraction of the whole epochs (at least one epoch)
WINDOW_FRACTION = 0.1


class NotMeasured(Exception):
    """A contrast cannot be computed from these tables (the message says why)."""


# ----------------------------------------------------------------------------------------------
# arms: the runs of one variant, one per seed
# ----------------------------------------------------------------------------------------------


class RunView(NamedTuple):
    """One run's rows: its measurement table, epochs table and per-image outcomes (may be None)."""

    seed: int
    layers: pd.DataFrame
    epochs: pd.DataFrame | None
    outcomes: pd.DataFrame | None


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: the runs of one variant (one run per seed) under one estimator.

    ``layers`` is a measurement table (``layers.csv`` or :func:`ibstudy.measure.measure`'s),
    ``epochs`` the epochs table, ``outcomes`` per-image test outcomes (:mod:`ibstudy.outcomes`);
    the last two are optional (claims needing them are then not measured)."""

    name: str
    layers: pd.DataFrame
    epochs: pd.DataFrame | None = None
    outcomes: pd.DataFrame | None = None
    seeds: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        layers = check_one_estimator(
            check_table(self.layers, LAYER_REQUIRED, f"{self.name} layers")
        )
        runs = layers.groupby("seed")["run"].nunique()
        several = runs[runs > 1]
        if len(several):
            raise ValueError(
                f"arm {self.name!r} has several runs for seed(s) {several.index.tolist()}: an arm "
                "is one variant with one run per seed; select the variant first (Arm.select)"
            )
        object.__setattr__(self, "seeds", tuple(sorted(int(s) for s in runs.index)))

    @classmethod
    def select(
        cls,
        layers: pd.DataFrame,
        epochs: pd.DataFrame | None = None,
        outcomes: pd.DataFrame | None = None,
        *,
        name: str | None = None,
        **where: object,
    ) -> Arm:
        """The arm of the rows whose columns equal ``where`` (e.g. ``method="layerwise",
        head="linear"`` or ``variant=...``) in every table given; ValueError when none match."""
        if not where:
            raise ValueError("select needs at least one column=value, e.g. method='e2e'")
        picked = []
        for label, table in (("layers", layers), ("epochs", epochs), ("outcomes", outcomes)):
            if table is None:
                picked.append(None)
                continue
            mask = pd.Series(True, index=table.index)
            for column, value in where.items():
                if column not in table.columns:
                    raise ValueError(f"{label} table has no column {column!r} to select on")
                mask &= table[column] == value
            if label == "layers" and not mask.any():
                found = {c: sorted(map(str, pd.unique(layers[c]))) for c in where}
                raise ValueError(f"no {label} rows with {where}; available values: {found}")
            picked.append(table[mask])
        label = name or "/".join(str(v) for v in where.values() if v not in (None, "none"))
        return cls(label, picked[0], picked[1], picked[2])

    def run(self, seed: int) -> RunView:
        """The rows of this arm's run of ``seed``."""

        def rows(table: pd.DataFrame | None) -> pd.DataFrame | None:
            if table is None or "seed" not in table.columns:
                return None
            part = table[table["seed"] == seed]
            return part if len(part) else None

        return RunView(seed, self.layers[self.layers["seed"] == seed], rows(self.epochs),
                       rows(self.outcomes))  # fmt: skip


def seed_pairs(candidate: Arm, baseline: Arm) -> list[int]:
    """The seeds both arms ran, or ValueError when a seed is on one side only or fewer than 2
    remain (a paired interval needs two seeds), or when the arms mix estimators or scales."""
    for left, right in ((candidate, baseline), (baseline, candidate)):
        only = sorted(set(left.seeds) - set(right.seeds))
        if only:
            raise ValueError(
                f"seed(s) {only} present for {left.name!r} only ({right.name!r} has "
                f"{list(right.seeds)}): a seed-paired analysis needs the same seeds on both sides"
            )
    if len(candidate.seeds) < 2:
        raise ValueError(
            f"a seed-paired analysis needs >= 2 seeds on both sides, got {list(candidate.seeds)} "
            f"({candidate.name!r} vs {baseline.name!r}): train more seeds"
        )
    check_one_estimator(pd.concat([candidate.layers, baseline.layers]), "the two arms' layers")
    for column in ("num_classes", "dataset", "chunk_size", "eval_size"):
        if column in candidate.layers.columns and column in baseline.layers.columns:
            values = set(pd.unique(pd.concat([candidate.layers[column], baseline.layers[column]])))
            if len(values) > 1:
                raise ValueError(f"the two arms mix {column} values {sorted(map(str, values))}")
    tables = [t for t in (candidate.epochs, baseline.epochs) if t is not None]
    if tables and all("scale" in t.columns for t in tables):
        scales = set(pd.unique(pd.concat([t["scale"] for t in tables])))
        if len(scales) > 1:
            raise ValueError(f"the two arms mix scales {sorted(map(str, scales))}")
    return list(candidate.seeds)


# ----------------------------------------------------------------------------------------------
# claims
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A claim's effect (None when not measured) with the per-seed numbers and secondary details."""

    effect: Effect | None
    per_seed: str = ""
    detail: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim: the paper's sentence, the pre-stated contrast, its claimed sign and its rule."""

    name: str
    statement: str
    contrast: str
    direction: int
    unit: str
    rule: Callable[[Arm, Arm, float], Estimate]
    #: per-seed statistic of one run, for seed-paired claims (None for across-run claims)
    statistic: Callable[[RunView], float] | None = None

    def estimate(self, candidate: Arm, baseline: Arm, level: float = 0.95) -> Estimate:
        """The claim's effect of ``candidate`` against ``baseline`` (see docs/method.md §12)."""
        return self.rule(candidate, baseline, level)

    def per_seed(self, candidate: Arm, baseline: Arm) -> pd.DataFrame:
        """Seed-paired claims: per common seed the statistic of each side and their difference
        (NaN where not measured); usable with a single seed, where no interval exists."""
        if self.statistic is None:
            raise ValueError(f"{self.name} is not a seed-paired claim")
        rows = []
        for seed in sorted(set(candidate.seeds) & set(baseline.seeds)):
            values = [_value(self.statistic, arm.run(seed)) for arm in (candidate, baseline)]
            rows.append({"seed": seed, "candidate": values[0], "baseline": values[1],
                         "difference": values[0] - values[1]})  # fmt: skip
        return pd.DataFrame(rows, columns=["seed", "candidate", "baseline", "difference"])


#: the registered claims, in report order
CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    """Add ``claim`` to :data:`CLAIMS` (its name must be new)."""
    if claim.name in CLAIMS:
        raise ValueError(f"claim {claim.name!r} is already registered")
    if claim.direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {claim.direction!r}")
    CLAIMS[claim.name] = claim
    return claim


def _value(statistic: Callable[[RunView], float], run: RunView) -> float:
    try:
        return float(statistic(run))
    except NotMeasured:
        return math.nan


def _fmt(value: float, spec: str = ".3g") -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def _interval(effect: Effect, spec: str = ".3g") -> str:
    return (
        f"{_fmt(effect.estimate, spec)} [{_fmt(effect.ci_low, spec)}, {_fmt(effect.ci_high, spec)}]"
    )


def _paired_rule(
    statistic: Callable[[RunView], float],
    detail: Callable[[Arm, Arm, list[int], float], str] | None = None,
) -> Callable[[Arm, Arm, float], Estimate]:
    """A rule for a seed-paired claim: the statistic per run, candidate minus baseline per seed,
    a t interval over the seeds (:func:`ibstudy.estimates.paired_effect`)."""

    def rule(candidate: Arm, baseline: Arm, level: float) -> Estimate:
        seeds = seed_pairs(candidate, baseline)
        pairs, reasons = [], []
        for seed in seeds:
            try:
                a = float(statistic(candidate.run(seed)))
                b = float(statistic(baseline.run(seed)))
            except NotMeasured as why:
                reasons.append(f"seed {seed}: {why}")
                continue
            pairs.append((seed, a, b))
        text = "; ".join(f"s{s}: {_fmt(a)} vs {_fmt(b)}" for s, a, b in pairs)
        extra = detail(candidate, baseline, seeds, level) if detail else ""
        if reasons:
            return Estimate(None, text, extra, "; ".join(reasons))
        effect = paired_effect([a - b for _, a, b in pairs], level)
        return Estimate(effect, text, extra)

    return rule


# ---------------------------------------------------------------- helpers on one run's rows


def _whole(layers: pd.DataFrame) -> pd.DataFrame:
    """Block rows at whole epochs (sub-epoch record points left out: re-measured tables lack them)."""
    rows = block_rows(layers)
    epoch = pd.to_numeric(rows["epoch"], errors="coerce")
    return rows[(epoch == epoch.round()) & epoch.notna()]


def _grid(layers: pd.DataFrame, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(blocks x whole epochs) excess over the floor and the epochs; NotMeasured on a gap."""
    rows = _whole(layers)
    values = rows.assign(_excess=excess(rows, side))
    grid = values.pivot_table(
        index="layer_index", columns="epoch", values="_excess", aggfunc="first"
    )
    if grid.isna().to_numpy().any() or not np.isfinite(values["_excess"]).all():
        raise NotMeasured(
            f"needs the permutation floor (floor_{side}) of every block at every epoch"
        )
    if grid.shape[0] < 2:
        raise NotMeasured("needs >= 2 blocks")
    return grid.to_numpy(dtype=float), grid.columns.to_numpy(dtype=float)


def windows(epochs: Sequence[float]) -> tuple[list[float], list[float]]:
    """The early and late windows of whole epochs (docs/method.md §12): w = max(1, round(E / 10))
    epochs each, early = 1..w, late = E-w+1..E; NotMeasured below MIN_WINDOW_EPOCHS epochs."""
    whole = sorted({float(e) for e in epochs if float(e).is_integer() and e >= 1})
    last = int(whole[-1]) if whole else 0
    if last < MIN_WINDOW_EPOCHS:
        raise NotMeasured(f"{last} whole epochs recorded, the windows need >= {MIN_WINDOW_EPOCHS}")
    w = max(1, round(WINDOW_FRACTION * last))
    early = [float(e) for e in range(1, w + 1)]
    late = [float(e) for e in range(last - w + 1, last + 1)]
    missing = sorted(set(early + late) - set(whole))
    if missing:
        raise NotMeasured(f"the windows need epochs {missing}, not recorded")
    return early, late


def window_compression(traj: pd.DataFrame, side: str = "xz") -> tuple[float, float]:
    """Mean excess over the floor in the early and late windows of one layer's rows."""
    epoch = pd.to_numeric(traj["epoch"], errors="coerce")
    early, late = windows(epoch.dropna().tolist())
    values = excess(traj, side)
    if not np.isfinite(values[epoch.isin(early + late).to_numpy()]).all():
        raise NotMeasured(f"needs the permutation floor (floor_{side}) in both windows")
    return float(values[epoch.isin(early).to_numpy()].mean()), float(
        values[epoch.isin(late).to_numpy()].mean()
    )


def _last_block(layers: pd.DataFrame) -> pd.DataFrame:
    rows = block_rows(layers)
    if rows.empty:
        raise NotMeasured("no block rows")
    return rows[rows["layer_index"] == rows["layer_index"].max()]


# ---------------------------------------------------------------- C1


def depth_slope(run: RunView) -> float:
    """C1 statistic: least-squares slope of the excess nHSIC(X;Z) over block depth (0, 1, ...) at
    the run's last whole epoch, in nHSIC units per block."""
    rows = _whole(run.layers)
    if rows.empty:
        raise NotMeasured("no block rows at whole epochs")
    last = rows[rows["epoch"] == rows["epoch"].max()].sort_values("layer_index")
    values = excess(last, "xz")
    if len(values) < 2:
        raise NotMeasured("needs >= 2 blocks")
    if not np.isfinite(values).all():
        raise NotMeasured("needs the permutation floor (floor_xz) of every block")
    return float(np.polyfit(np.arange(len(values), dtype=float), values, 1)[0])


def _c1_detail(candidate: Arm, baseline: Arm, seeds: list[int], level: float) -> str:
    """Per block, the seed-paired difference of the excess at the last whole epoch (description)."""
    bits = []
    per_block: dict[str, list[float]] = {}
    for seed in seeds:
        a, b = (_whole(arm.run(seed).layers) for arm in (candidate, baseline))
        if a.empty or b.empty:
            return ""
        a = a[a["epoch"] == a["epoch"].max()].sort_values("layer_index")
        b = b[b["epoch"] == b["epoch"].max()].sort_values("layer_index")
        if len(a) != len(b):
            return ""
        for name, x, y in zip(a["layer"], excess(a, "xz"), excess(b, "xz"), strict=True):
            per_block.setdefault(str(name), []).append(x - y)
    for name, diffs in per_block.items():
        if len(diffs) >= 2 and np.isfinite(diffs).all():
            bits.append(f"{name} {_interval(paired_effect(diffs, level))}")
    return "excess nHSIC(X;Z) difference per block: " + "; ".join(bits) if bits else ""


# ---------------------------------------------------------------- C2


def role_spread(run: RunView) -> float:
    """C2 statistic: how far apart the blocks' paths in the plane of excesses are. Each coordinate
    (excess nHSIC(X;Z), excess nHSIC(Y;Z)) over whole epochs is divided by the run's largest
    absolute value of it; the std across blocks at each epoch, averaged over epochs and the two
    coordinates."""
    spreads = []
    for side in ("xz", "yz"):
        grid, _ = _grid(run.layers, side)
        scale = float(np.max(np.abs(grid)))
        if scale == 0:
            raise NotMeasured(f"the excess of nHSIC({side[0].upper()};Z) is 0 everywhere")
        spreads.append(float(np.mean(np.std(grid / scale, axis=0))))
    return float(np.mean(spreads))


# ---------------------------------------------------------------- C3


def last_block_compression(run: RunView) -> float:
    """C3 statistic: (early - late) / early of the last block's excess nHSIC(X;Z), windows as in
    :func:`windows`; NotMeasured when the early excess is not positive."""
    early, late = window_compression(_last_block(run.layers), "xz")
    if early <= 0:
        raise NotMeasured(f"the last block's early excess is {early:.3g} <= 0: nothing to compress")
    return (early - late) / early


def _label_kept(run: RunView) -> float:
    early, late = window_compression(_last_block(run.layers), "yz")
    if early <= 0:
        raise NotMeasured("the last block's early label excess is <= 0")
    return late / early


def _c3_detail(candidate: Arm, baseline: Arm, seeds: list[int], level: float) -> str:
    """The label side, beside the contrast: late / early excess nHSIC(Y;Z) of each arm's last block."""
    bits = []
    for arm in (candidate, baseline):
        kept = [_value(_label_kept, arm.run(s)) for s in seeds]
        if len(kept) >= 2 and np.isfinite(kept).all():
            bits.append(f"{arm.name} {_interval(paired_effect(kept, level), '.2f')}")
    if not bits:
        return ""
    return "last block's label excess late/early (1 = kept): " + "; ".join(bits)


# ---------------------------------------------------------------- C4a, C4b


def final_test_accuracy(run: RunView) -> float:
    """C4a statistic: test accuracy at the run's last recorded epoch (the epochs table)."""
    if run.epochs is None:
        raise NotMeasured("no epochs table")
    rows = run.epochs.sort_values("epoch", kind="stable")
    value = float(pd.to_numeric(rows["test_acc"], errors="coerce").iloc[-1])
    if not math.isfinite(value):
        raise NotMeasured("no final test accuracy")
    return value


def _c4a_detail(candidate: Arm, baseline: Arm, seeds: list[int], level: float) -> str:
    """Per seed, exact McNemar on the per-image outcomes of the two final models (when given)."""
    bits = []
    for seed in seeds:
        a, b = candidate.run(seed).outcomes, baseline.run(seed).outcomes
        if a is None or b is None:
            return ""
        a = a[a["epoch"] == a["epoch"].max()].sort_values("image")
        b = b[b["epoch"] == b["epoch"].max()].sort_values("image")
        if len(a) != len(b) or not (a["image"].to_numpy() == b["image"].to_numpy()).all():
            return ""
        only_a, only_b, p = mcnemar(a["correct"].to_numpy(), b["correct"].to_numpy())
        bits.append(f"s{seed}: {only_a} vs {only_b} images right on one side only, p {p:.2g}")
    return f"McNemar per seed ({candidate.name} only vs {baseline.name} only): " + "; ".join(bits)


def _probed(run: RunView) -> pd.DataFrame:
    rows = block_rows(run.layers)
    if "probe_test_acc" not in rows.columns:
        raise NotMeasured("no probe_test_acc column")
    acc = pd.to_numeric(rows["probe_test_acc"], errors="coerce")
    rows = rows[acc.notna()]
    if rows.empty:
        raise NotMeasured("no probe was fitted")
    return rows[rows["epoch"] == rows["epoch"].max()].sort_values("layer_index")


def last_block_probe(run: RunView) -> float:
    """C4b statistic: the last block's linear-probe test accuracy at the run's last probed epoch."""
    return float(_probed(run)["probe_test_acc"].iloc[-1])


def _early_probe(run: RunView) -> float:
    rows = _probed(run)
    return float(rows["probe_test_acc"].iloc[: max(1, len(rows) // 2)].mean())


def _c4b_detail(candidate: Arm, baseline: Arm, seeds: list[int], level: float) -> str:
    diffs = [
        _value(_early_probe, baseline.run(s)) - _value(_early_probe, candidate.run(s))
        for s in seeds
    ]
    if len(diffs) < 2 or not np.isfinite(diffs).all():
        return ""
    return (
        f"first half of the blocks, {baseline.name} - {candidate.name} probe accuracy: "
        f"{_interval(paired_effect(diffs, level))}"
    )


# ---------------------------------------------------------------- C3b (across runs)


def _c3b_rule(candidate: Arm, baseline: Arm, level: float) -> Estimate:
    """Slope of the train-test gap on middle-layer compression, one intercept per arm (stratified);
    the test loss as a second, continuous outcome beside it."""
    from ibstudy.generalization import compression_vs_gap

    seed_pairs(candidate, baseline)  # the same validation as the paired claims
    parts = []
    for arm in (candidate, baseline):
        if arm.epochs is None:
            return Estimate(None, reason=f"{arm.name}: no epochs table")
        table = compression_vs_gap(arm.layers, arm.epochs, arm.outcomes)
        parts.append(table.assign(arm=arm.name))
    runs = pd.concat(parts, ignore_index=True)
    usable = runs.dropna(subset=["middle_compression", "gap"])
    text = "; ".join(
        f"{r.arm} s{int(r.seed)}: {_fmt(r.middle_compression, '.2f')}, gap {r.gap:+.3f}"
        for r in usable.itertuples()
    )
    if len(usable) < len(runs):
        return Estimate(None, text, reason=f"{len(runs) - len(usable)} run(s) without middle-layer "
                        "compression (needs >= 3 blocks, floors and >= 10 epochs)")  # fmt: skip
    try:
        effect = stratified_slope(usable["middle_compression"], usable["gap"], usable["arm"], level)
    except ValueError as why:
        return Estimate(None, text, reason=str(why))
    detail = (
        f"partial r {_fmt(effect.extra['r'], '.2f')} [{_fmt(effect.extra['r_low'], '.2f')}, "
        f"{_fmt(effect.extra['r_high'], '.2f')}] over {len(usable)} runs"
    )
    if "test_loss" in usable.columns and usable["test_loss"].notna().all():
        loss = stratified_slope(
            usable["middle_compression"], usable["test_loss"], usable["arm"], level
        )
        detail += f"; test-loss slope {_interval(loss)}"
    return Estimate(effect, text, detail)


# ---------------------------------------------------------------- the registry

register(Claim(
    "C1",
    "E2E carries input information deeper; under layer-wise training nHSIC(X;Z) collapses with depth",
    "slope of the excess nHSIC(X;Z) over block depth at the last epoch, candidate - baseline",
    +1, "nHSIC per block", _paired_rule(depth_slope, _c1_detail), depth_slope,
))  # fmt: skip
register(Claim(
    "C2",
    "under E2E the layers take different roles (their trajectories differ); under layer-wise "
    "training every layer behaves like an output layer",
    "role spread (std across blocks of the scaled excess trajectories), candidate - baseline",
    +1, "scaled excess", _paired_rule(role_spread), role_spread,
))  # fmt: skip
register(Claim(
    "C3",
    "under E2E the last layer fits then compresses: late in training nHSIC(X;Z) falls while "
    "nHSIC(Y;Z) stays high",
    "last block's (early - late) / early excess nHSIC(X;Z), candidate - baseline",
    +1, "fraction of the early excess", _paired_rule(last_block_compression, _c3_detail),
    last_block_compression,
))  # fmt: skip
register(Claim(
    "C3b",
    "middle layers that compress more generalize better (smaller train-test gap)",
    "slope of the gap on middle-layer compression across the runs of both arms, one intercept "
    "per arm",
    -1, "gap per unit compression", _c3b_rule,
))  # fmt: skip
register(Claim(
    "C4a",
    "E2E ends more accurate than layer-wise training",
    "final test accuracy, candidate - baseline",
    +1, "accuracy", _paired_rule(final_test_accuracy, _c4a_detail), final_test_accuracy,
))  # fmt: skip
register(Claim(
    "C4b",
    "layer-wise blocks become linearly separable early but saturate, while E2E's last blocks end "
    "higher (linear probes)",
    "last block's probe test accuracy at the last probed epoch, candidate - baseline",
    +1, "accuracy", _paired_rule(last_block_probe, _c4b_detail), last_block_probe,
))  # fmt: skip


# ----------------------------------------------------------------------------------------------
# assessing one comparison
# ----------------------------------------------------------------------------------------------

ASSESS_COLUMNS = [
    "claim", "statement", "contrast", "candidate", "baseline", "n", "estimate", "ci_low",
    "ci_high", "p", "p_holm", "verdict", "d", "power", "direction", "unit", "per_seed", "detail",
    "reason",
]  # fmt: skip


def _standardized(effect: Effect | None, claim: Claim, alpha: float) -> dict[str, float]:
    """A seed-paired effect in standard deviations of its differences (d) and the power of the
    paired t at level alpha against a true effect of that size (NaN for across-run claims)."""
    if effect is None or claim.statistic is None or not (effect.se > 0 and effect.n >= 2):
        return {"d": math.nan, "power": math.nan}
    d = effect.estimate / (effect.se * math.sqrt(effect.n))
    return {"d": d, "power": paired_power(abs(d), effect.n, alpha)}


def assess(
    candidate: Arm,
    baseline: Arm,
    claims: Iterable[str] | None = None,
    *,
    alpha: float = ALPHA,
    level: float = 0.95,
) -> pd.DataFrame:
    """Every claim (or those named) of ``candidate`` against ``baseline``: effect, 95 % interval,
    p, Holm-adjusted p over the claims measured here, the verdict (docs/method.md §12), and for
    seed-paired claims the standardized effect ``d`` with the paired t's power at it.

    ValueError before any work for unknown claims, fewer than 2 shared seeds, seeds on one side
    only, or arms that mix estimators or scales. Columns: :data:`ASSESS_COLUMNS`."""
    names = list(CLAIMS) if claims is None else list(claims)
    unknown = [c for c in names if c not in CLAIMS]
    if unknown or not names:
        raise ValueError(f"claims must name registered claims {list(CLAIMS)}, got {names}")
    alpha = check_real("alpha", alpha, minimum=0.0, maximum=1.0, include_minimum=False)
    level = check_real("level", level, minimum=0.0, maximum=1.0, include_minimum=False,
                       include_maximum=False)  # fmt: skip
    seed_pairs(candidate, baseline)
    rows = []
    for name in names:
        claim = CLAIMS[name]
        result = claim.estimate(candidate, baseline, level)
        effect = result.effect
        rows.append({
            "claim": name, "statement": claim.statement, "contrast": claim.contrast,
            "candidate": candidate.name, "baseline": baseline.name,
            "n": effect.n if effect else 0,
            "estimate": effect.estimate if effect else math.nan,
            "ci_low": effect.ci_low if effect else math.nan,
            "ci_high": effect.ci_high if effect else math.nan,
            "p": effect.p if effect else math.nan,
            **_standardized(effect, claim, alpha),
            "direction": "> 0" if claim.direction > 0 else "< 0", "unit": claim.unit,
            "per_seed": result.per_seed, "detail": result.detail, "reason": result.reason,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["verdict"] = [
        verdict(e, p, CLAIMS[c].direction, alpha)
        for c, e, p in zip(table["claim"], table["estimate"], table["p_holm"], strict=True)
    ]
    return table[ASSESS_COLUMNS]


def _one_seed(candidate: Arm, baseline: Arm, names: list[str]) -> pd.DataFrame:
    """The contrasts of a single shared seed, without interval or verdict (not measured)."""
    rows = []
    for name in names:
        claim = CLAIMS[name]
        estimate = math.nan
        if claim.statistic is not None:
            estimate = float(claim.per_seed(candidate, baseline)["difference"].iloc[0])
        rows.append({
            "claim": name, "statement": claim.statement, "contrast": claim.contrast,
            "candidate": candidate.name, "baseline": baseline.name, "n": 1,
            "estimate": estimate, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
            "p_holm": math.nan, "verdict": "not measured", "d": math.nan, "power": math.nan,
            "direction": "> 0" if claim.direction > 0 else "< 0", "unit": claim.unit,
            "per_seed": "", "detail": "",
            "reason": "1 seed: the contrast of that seed, no interval (a seed-paired analysis "
            "needs >= 2 seeds)",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=ASSESS_COLUMNS)


def claims_table(
    layers: pd.DataFrame,
    epochs: pd.DataFrame | None = None,
    outcomes: pd.DataFrame | None = None,
    *,
    candidate: dict[str, object] | None = None,
    baselines: Sequence[dict[str, object]] = ({"method": "layerwise", "head": "linear"},),
    claims: Iterable[str] | None = None,
    stability: bool = False,
) -> pd.DataFrame:
    """:func:`assess` of ``candidate`` (default E2E) against every baseline present in the tables
    (each its own Holm family); with a single shared seed, the per-seed contrasts with verdict
    "not measured" and the reason (notebooks at the quick preset). Columns: :data:`ASSESS_COLUMNS`,
    and with ``stability`` also :data:`ibstudy.stability.STABILITY_COLUMNS` (margin to 0 and the
    leave-one-seed-out check of every verdict)."""
    from ibstudy import stability as stable  # it builds on this module

    names = list(CLAIMS) if claims is None else list(claims)
    where = candidate or {"method": "e2e"}
    first = Arm.select(layers, epochs, outcomes, **where)
    parts = []
    for spec in baselines:
        present = pd.Series(True, index=layers.index)
        for column, value in spec.items():
            present &= layers[column] == value if column in layers.columns else False
        if not present.any():
            continue
        other = Arm.select(layers, epochs, outcomes, **spec)
        if len(first.seeds) == 1 and first.seeds == other.seeds:
            part = _one_seed(first, other, names)
            parts.append(stable.not_measured(part) if stability else part)
        else:
            part = assess(first, other, names)
            parts.append(stable.with_stability(part, first, other, names) if stability else part)
    if not parts:
        raise ValueError(f"none of the baselines {list(baselines)} is in the tables")
    return pd.concat(parts, ignore_index=True)
