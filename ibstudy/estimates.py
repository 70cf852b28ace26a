"""Effects with confidence intervals, and the verdict a pre-stated contrast gives (docs/method.md §12).

Pure functions over numbers (numpy in, dataclasses out). A claim is decided on an *effect*: a
seed-paired difference estimated across seeds with a t interval, or a slope in a stratified
regression across runs; never on a count of per-seed votes. Verdicts come from Holm-adjusted
p-values of the claims tested together, in the claim's stated direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = [
    "ALPHA",
    "VERDICTS",
    "Effect",
    "fisher_interval",
    "holm",
    "mcnemar",
    "paired_effect",
    "paired_power",
    "stratified_slope",
    "verdict",
]

#: family-wise error rate of the claims tested together (Holm)
ALPHA = 0.05
#: the words a verdict can be; "not measured" when the contrast could not be computed
VERDICTS = ("supported", "contradicted", "inconclusive", "not measured")


@dataclass(frozen=True)
class Effect:
    """An estimate with its standard error, degrees of freedom, two-sided p and interval."""

    estimate: float
    se: float
    df: float
    p: float
    ci_low: float
    ci_high: float
    n: int
    level: float = 0.95
    extra: dict[str, float] = field(default_factory=dict)


def _t_effect(estimate: float, se: float, df: float, n: int, level: float) -> Effect:
    """An Effect from a t statistic; an exact zero se gives p 0 (a nonzero estimate) or 1."""
    if not (math.isfinite(estimate) and math.isfinite(se) and df >= 1):
        return Effect(estimate, se, df, math.nan, math.nan, math.nan, n, level)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(estimate) / se, df))
    else:
        p = 0.0 if estimate != 0 else 1.0
    return Effect(estimate, se, df, p, estimate - half, estimate + half, n, level)


def paired_effect(differences: Sequence[float], level: float = 0.95) -> Effect:
    """Mean of seed-paired differences with a one-sample t interval and two-sided p (df = n - 1).

    Needs at least 2 finite differences (ValueError otherwise: a paired analysis has no interval
    from one seed)."""
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or len(d) < 2 or not np.isfinite(d).all():
        raise ValueError(
            f"a paired effect needs >= 2 finite seed-paired differences, got {d.tolist()}"
        )
    n = len(d)
    return _t_effect(float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), n - 1, n, level)


def stratified_slope(
    x: Sequence[float], y: Sequence[float], strata: Sequence[object], level: float = 0.95
) -> Effect:
    """Slope b of y = a_stratum + b x (one intercept per stratum, least squares) with its t interval
    (df = n - strata - 1); ``extra`` holds the partial correlation ``r`` and its Fisher interval.

    Equivalent to regressing the within-stratum centred y on the within-stratum centred x, so a
    correlation made by the strata alone (one method compresses more and generalizes better for
    reasons of its own) does not count. ValueError with too few runs for a residual degree of
    freedom or when x does not vary within any stratum."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.asarray([str(s) for s in strata])
    if not (len(xs) == len(ys) == len(labels)) or not (
        np.isfinite(xs).all() and np.isfinite(ys).all()
    ):
        raise ValueError("x, y and strata must be equal-length sequences of finite numbers")
    groups = sorted(set(labels.tolist()))
    n, df = len(xs), len(xs) - len(groups) - 1
    if df < 1:
        raise ValueError(
            f"a stratified slope needs more runs than strata + 1: {n} runs in {len(groups)} strata"
        )
    xc, yc = xs.copy(), ys.copy()
    for g in groups:
        at = labels == g
        xc[at] -= xs[at].mean()
        yc[at] -= ys[at].mean()
    sxx = float(xc @ xc)
    if sxx <= 0:
        raise ValueError("x does not vary within any stratum: no slope can be estimated")
    b = float(xc @ yc) / sxx
    resid = yc - b * xc
    se = math.sqrt(float(resid @ resid) / df / sxx)
    effect = _t_effect(b, se, df, n, level)
    syy = float(yc @ yc)
    r = float(xc @ yc) / math.sqrt(sxx * syy) if syy > 0 else math.nan
    low, high = fisher_interval(r, n - len(groups), level)
    return Effect(**{**effect.__dict__, "extra": {"r": r, "r_low": low, "r_high": high}})


def fisher_interval(r: float, n_eff: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher-z interval of a correlation from ``n_eff`` effective observations (NaN if < 4)."""
    if not math.isfinite(r) or n_eff < 4:
        return math.nan, math.nan
    z = math.atanh(min(max(r, -0.999999), 0.999999))
    half = float(stats.norm.ppf(0.5 + level / 2)) / math.sqrt(n_eff - 3)
    return math.tanh(z - half), math.tanh(z + half)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out


def verdict(estimate: float, p_adjusted: float, direction: int, alpha: float = ALPHA) -> str:
    """ "supported" when the adjusted p < alpha and the estimate has the claim's sign (``direction``
    +1 or -1), "contradicted" when significant the other way, "inconclusive" otherwise, "not
    measured" without an estimate."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not (math.isfinite(estimate) and math.isfinite(p_adjusted)):
        return "not measured"
    if p_adjusted >= alpha or estimate == 0:
        return "inconclusive"
    return "supported" if estimate * direction > 0 else "contradicted"


def mcnemar(correct_a: Sequence[int], correct_b: Sequence[int]) -> tuple[int, int, float]:
    """Exact McNemar test on paired per-image correctness: (a right and b wrong, a wrong and b
    right, two-sided binomial p on the discordant pairs; 1.0 without any)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired correctness needs two equal-length vectors, got {a.shape}, {b.shape}"
        )
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    total = only_a + only_b
    p = 1.0 if total == 0 else float(stats.binomtest(only_a, total, 0.5).pvalue)
    return only_a, only_b, p


def paired_power(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` seeds when the true mean
    difference is ``d`` standard deviations of the differences (noncentral t)."""
    if n < 2:
        raise ValueError(f"n must be >= 2 seeds, got {n}")
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = d * math.sqrt(n)
    # both tails as upper tails (the lower one by symmetry: nct.cdf is NaN far in its tail)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))
