"""What a network predicts with: its readouts, defined once (docs/method.md §12, "Readout").

A layer-wise network's prediction is, as the paper's layer-wise training defines it, its final
classifier trained on the detached last block (:data:`PREDICTION`, ``"classifier"``); every accuracy
the study compares uses it unless it says otherwise. Beside it, ``"last_head"`` is the last block's
own auxiliary head, the classifier its local loss trained. An E2E network has one output, so its
side of every comparison is always its classifier. A gap (candidate - baseline) that is supported
under one readout only is a *readout effect*, not a gap (:func:`readout_verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstudy.claims import Arm, NotMeasured, RunView, final_test_accuracy, seed_pairs
from ibstudy.estimates import ALPHA, Effect, paired_effect, verdict
from ibstudy.tables import blocks as block_rows

__all__ = [
    "PREDICTION",
    "READOUTS",
    "Readout",
    "get_readout",
    "last_head_accuracy",
    "readout_effects",
    "readout_verdict",
]


def last_head_accuracy(run: RunView) -> float:
    """The last block's auxiliary-head test accuracy at the run's last recorded point."""
    rows = block_rows(run.layers)
    if "head_test_acc" not in rows.columns or rows.empty:
        raise NotMeasured("no head_test_acc column")
    last = rows[rows["epoch"] == rows["epoch"].max()]
    value = float(pd.to_numeric(last.sort_values("layer_index")["head_test_acc"]).iloc[-1])
    if not math.isfinite(value):
        raise NotMeasured("the run has no auxiliary heads (E2E) or did not score them")
    return value


@dataclass(frozen=True)
class Readout:
    """One way to read a network's prediction: its name, what it is, its accuracy on one run."""

    name: str
    description: str
    accuracy: Callable[[RunView], float]


#: the readouts by name; the first is the network's prediction
READOUTS: dict[str, Readout] = {
    r.name: r
    for r in (
        Readout("classifier", "final classifier on the detached last block (the paper's)",
                final_test_accuracy),
        Readout("last_head", "the last block's own auxiliary head", last_head_accuracy),
    )
}  # fmt: skip
#: the readout every accuracy comparison uses unless it names another
PREDICTION = "classifier"


def get_readout(name: str) -> Readout:
    """The registered readout ``name``; ValueError listing the known ones."""
    if name not in READOUTS:
        raise ValueError(f"readout must be one of {list(READOUTS)}, got {name!r}")
    return READOUTS[name]


def readout_effects(candidate: Arm, baseline: Arm, level: float = 0.95) -> pd.DataFrame:
    """Per readout of the baseline: the seed-paired accuracy gap, candidate's prediction minus the
    baseline's readout, with its interval, p and verdict (claimed sign +); "not measured" where
    the baseline lacks that readout. Columns: readout, n, estimate, std, ci_low, ci_high, p,
    verdict, k_of_n (seeds with a positive gap, as "k of n"), reason."""
    seeds = seed_pairs(candidate, baseline)
    rows = []
    for readout in READOUTS.values():
        try:
            diffs = [
                final_test_accuracy(candidate.run(s)) - readout.accuracy(baseline.run(s))
                for s in seeds
            ]
        except NotMeasured as why:
            rows.append({"readout": readout.name, "n": 0, "estimate": math.nan,
                         "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                         "p": math.nan, "verdict": "not measured", "k_of_n": "",
                         "reason": str(why)})  # fmt: skip
            continue
        effect: Effect = paired_effect(diffs, level)
        rows.append({
            "readout": readout.name, "n": effect.n, "estimate": effect.estimate,
            "std": float(np.std(diffs, ddof=1)), "ci_low": effect.ci_low,
            "ci_high": effect.ci_high, "p": effect.p,
            "verdict": verdict(effect.estimate, effect.p, +1, ALPHA),
            "k_of_n": f"{sum(d > 0 for d in diffs)} of {len(diffs)}", "reason": "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def readout_verdict(effects: pd.DataFrame) -> str:
    """ "gap" when the prediction's gap and every measured other readout's are supported,
    "readout effect" when some but not all measured readouts support it, "no gap" otherwise."""
    if "readout" not in effects.columns or PREDICTION not in set(effects["readout"]):
        raise ValueError(f"effects must hold a {PREDICTION!r} row (readout_effects' table)")
    measured = effects[effects["verdict"] != "not measured"]
    supported = measured["verdict"] == "supported"
    if len(measured) and supported.all():
        return "gap"
    return "readout effect" if supported.any() else "no gap"
