"""How close each verdict stands to flipping (docs/method.md §12, "Stability").

Two numbers per claim x comparison, both from the registered rules of :mod:`ibstudy.claims`:

- ``margin``: the distance of the 95 % interval's end nearest 0 from 0 (the decision boundary), in
  the effect's units; positive when the interval excludes 0, negative when it contains 0 (how far
  it would have to move to exclude it), NaN without an interval. The interval is the unadjusted
  one, so a Holm-adjusted verdict can be *inconclusive* with a positive margin.
- leave one seed out: :func:`ibstudy.claims.assess` again with each seed's pair left out (the same
  claims, so the same Holm family); ``loso_flips`` counts the verdicts that differ from the full
  one, ``loso_n`` the seeds left out. A verdict that one seed flips is ``fragile``.

Fewer than :data:`MIN_SEEDS` seeds, or a claim not measured: ``loso_n`` 0, ``loso_flips`` and
``fragile`` missing ("not measured").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ibstudy.claims import CLAIMS, Arm, assess
from ibstudy.estimates import ALPHA

__all__ = [
    "MIN_SEEDS",
    "STABILITY_COLUMNS",
    "is_fragile",
    "leave_one_seed_out",
    "margin",
    "not_measured",
    "stability_text",
    "with_stability",
    "without_seed",
]

#: the columns :func:`with_stability` adds, after :data:`ibstudy.claims.ASSESS_COLUMNS`
STABILITY_COLUMNS = ["margin", "loso_flips", "loso_n", "fragile"]
#: leaving one seed out needs at least this many (two remain for a paired interval)
MIN_SEEDS = 3


def margin(ci_low: float, ci_high: float) -> float:
    """Signed distance of the interval's end nearest 0 from 0: > 0 when [ci_low, ci_high] excludes
    0, <= 0 when it contains 0, NaN when either end is missing."""
    low, high = float(ci_low), float(ci_high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return math.nan
    near = min(abs(low), abs(high))
    return near if low > 0 or high < 0 else -near


def without_seed(arm: Arm, seed: int) -> Arm:
    """``arm`` with the run of ``seed`` left out of every table."""

    def rows(table: pd.DataFrame | None) -> pd.DataFrame | None:
        if table is None or "seed" not in table.columns:
            return table
        return table[table["seed"] != seed]

    return Arm(arm.name, arm.layers[arm.layers["seed"] != seed], rows(arm.epochs),
               rows(arm.outcomes))  # fmt: skip


def leave_one_seed_out(
    candidate: Arm,
    baseline: Arm,
    claims: Iterable[str] | None = None,
    *,
    alpha: float = ALPHA,
    level: float = 0.95,
) -> pd.DataFrame:
    """The verdict of every claim (or those named: one Holm family) with each shared seed's pair
    left out in turn: columns ``seed`` (the one left out), ``claim``, ``verdict``."""
    names = list(CLAIMS) if claims is None else list(claims)
    seeds = sorted(set(candidate.seeds) & set(baseline.seeds))
    if len(seeds) < MIN_SEEDS:
        raise ValueError(
            f"leaving one seed out needs >= {MIN_SEEDS} shared seeds, got {seeds} "
            f"({candidate.name!r} vs {baseline.name!r})"
        )
    parts = []
    for seed in seeds:
        table = assess(without_seed(candidate, seed), without_seed(baseline, seed), names,
                       alpha=alpha, level=level)  # fmt: skip
        parts.append(pd.DataFrame({"seed": seed, "claim": table["claim"],
                                   "verdict": table["verdict"]}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def not_measured(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the stability columns, the margin from its intervals and no leave-one-out."""
    out = table.copy()
    out["margin"] = [margin(lo, hi) for lo, hi in zip(out["ci_low"], out["ci_high"], strict=True)]
    out["loso_flips"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out["loso_n"] = 0
    out["fragile"] = pd.array([pd.NA] * len(out), dtype="boolean")
    return out


def with_stability(
    table: pd.DataFrame,
    candidate: Arm,
    baseline: Arm,
    claims: Iterable[str] | None = None,
    *,
    alpha: float = ALPHA,
    level: float = 0.95,
) -> pd.DataFrame:
    """``table`` (:func:`ibstudy.claims.assess` of ``candidate`` vs ``baseline`` over ``claims``)
    with :data:`STABILITY_COLUMNS`; not measured below :data:`MIN_SEEDS` shared seeds."""
    out = not_measured(table)
    seeds = sorted(set(candidate.seeds) & set(baseline.seeds))
    if len(seeds) < MIN_SEEDS:
        return out
    names = list(table["claim"]) if claims is None else list(claims)
    loso = leave_one_seed_out(candidate, baseline, names, alpha=alpha, level=level)
    for i, row in out.iterrows():
        if row["verdict"] == "not measured":
            continue
        verdicts = loso.loc[loso["claim"] == row["claim"], "verdict"]
        flips = int((verdicts != row["verdict"]).sum())
        out.loc[i, "loso_flips"] = flips
        out.loc[i, "loso_n"] = len(verdicts)
        out.loc[i, "fragile"] = flips > 0
    return out


def is_fragile(value: object) -> bool | None:
    """A ``fragile`` cell as read back from a table or JSON: True, False or None (not measured)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word == "true" else False if word == "false" else None
    if isinstance(value, float) and math.isnan(value):
        return None
    return bool(value)


def _count(value: object) -> int | None:
    """An integer cell (``loso_flips``, ``loso_n``) or None when missing."""
    if value is None or value is pd.NA:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else int(number)


def stability_text(row: Mapping[str, Any]) -> str:
    """The stability of one row in words: "fragile: 1 of 5 seeds flips it", "stable: no seed of 5
    flips it" or "not measured" (with the reason when the columns are there)."""
    fragile, flips, n = (
        is_fragile(row.get("fragile")),
        _count(row.get("loso_flips")),
        _count(row.get("loso_n")),
    )
    if fragile is None or flips is None or not n:
        if row.get("verdict") == "not measured":
            return "not measured (no verdict)"
        return f"not measured (leaving one seed out needs >= {MIN_SEEDS} seeds)"
    if fragile:
        return f"fragile: {flips} of {n} seeds flip{'s' if flips == 1 else ''} it"
    return f"stable: no seed of {n} flips it"
