"""Ablations of the toy's own choices (docs/method.md §5): does its picture depend on them?

The toy of notebook 01 makes three choices of its own (:mod:`ibstudy.toy`): the kernel width
sigma = 1, a first layer W of fixed Frobenius norm, and an auxiliary classifier v that starts at zero.
:func:`toy_ablation` retrains both methods with each choice undone, over several seeds, and reports
per run the final geometry of W and the information the first layer keeps; :func:`converged` says
whether a run's Z1 loss had stopped moving, so that step counts can be chosen and reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ibstudy.checks import check_int_list, check_real
from ibstudy.toy import TOY_METHODS, ToyConfig, train_toy

__all__ = ["ABLATIONS", "converged", "toy_ablation"]

#: the toy's choices, each undone in turn ("baseline" keeps them all)
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "sigma 0.5": {"sigma": 0.5},
    "sigma 2": {"sigma": 2.0},
    "free W norm": {"weight_norm": None},
    "random v init": {"aux_init": "random"},
}


def converged(
    history: pd.DataFrame, window: float = 0.2, tol: float = 0.01, atol: float = 1e-3
) -> bool:
    """True when the Z1 loss changed by at most ``tol`` (relative) or ``atol`` (absolute: a loss
    already near 0 keeps shrinking by large factors) over the last ``window`` of the steps."""
    window = check_real("window", window, minimum=0.0, maximum=1.0, include_minimum=False)
    tol = check_real("tol", tol, minimum=0.0)
    atol = check_real("atol", atol, minimum=0.0)
    steps = history["step"].to_numpy()
    loss = history["loss"].to_numpy(dtype=float)
    start = steps[-1] * (1.0 - window)
    before = loss[steps <= start]
    if len(history) < 2 or len(before) == 0 or not math.isfinite(loss[-1]):
        return False
    change = abs(loss[-1] - before[-1])
    return bool(change <= tol * abs(before[-1]) or change <= atol)


def toy_ablation(
    base: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
) -> pd.DataFrame:
    """Train both methods for every variant (``base`` settings updated by the variant's) and seed.

    One row per variant x seed x method: ``xz_kept`` = final / step-0 nHSIC(X;Z1), ``sv_ratio``
    (W's largest / smallest singular value), final nHSIC(Y;Z1), output and auxiliary accuracy, the
    step count and whether the Z1 loss had converged (:func:`converged`). Every config is validated
    before the first run trains. Histories are recorded every steps/10 steps unless ``base`` says.
    """
    variants = ABLATIONS if variants is None else variants
    seeds = check_int_list("seeds", seeds, minimum=0)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if not variants:
        raise ValueError("variants must name at least one variant")
    plan = []
    for name, change in variants.items():
        for seed in seeds:
            for method in TOY_METHODS:
                every = max(1, int(base.get("steps", 300)) // 10)
                settings = {"record_every": every, **base, **change, "seed": seed}
                ToyConfig(method, **settings).validate()
                plan.append((name, seed, method, settings))
    rows = []
    for name, seed, method, settings in plan:
        run = train_toy(method, **settings)
        hist = run.history
        first, last = hist.iloc[0], hist.iloc[-1]
        rows.append(
            {
                "variant": name, "seed": seed, "method": method,
                "xz_kept": float(last["nhsic_xz"] / first["nhsic_xz"]),
                "sv_ratio": float(last["sv_ratio"]), "nhsic_yz": float(last["nhsic_yz"]),
                "accuracy": float(last["accuracy"]), "aux_accuracy": float(last["aux_accuracy"]),
                "steps": int(last["step"]), "converged": converged(hist),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)
