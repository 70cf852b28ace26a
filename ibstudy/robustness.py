"""Does the plane's reading survive another estimator? Helpers of notebook 07 (docs/method.md §3, §10).

Pure functions over measurement tables (:func:`ibstudy.measure.measure`) plus two small model reads:
the estimator suite, floor-corrected values and z-scores, the response of each estimator to a
rescaled representation, and the claims table computed under several estimators side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from ibstudy.checks import check_int, check_real
from ibstudy.config import MeasureConfig
from ibstudy.hsic import InfoPlane
from ibstudy.measure import evaluating
from ibstudy.store import Run
from ibstudy.tables import MEASURE_COLUMNS, check_table

__all__ = [
    "ESTIMATOR_CLAIMS",
    "PROBE_COLUMNS",
    "claims_by_estimator",
    "estimator_suite",
    "floor_corrected",
    "layer_output",
    "scale_response",
    "with_probes",
    "z_scores",
]

PROBE_COLUMNS: tuple[str, ...] = ("probe_train_acc", "probe_test_acc", "head_test_acc")
#: the claims an estimator can change (the plane's), repeated under every estimator by notebook 07
ESTIMATOR_CLAIMS: tuple[str, ...] = ("C1", "C2", "C3", "C3b")
_JOIN = ["run", "method", "head", "epoch", "layer"]


def estimator_suite(
    eval_size: int, chunk_size: int = 256, floor_perms: int = 5, floor_seed: int = 0
) -> dict[str, MeasureConfig]:
    """The estimators notebook 07 compares: the paper's (fixed bandwidth), median bandwidth, nHSIC-CKA."""
    base = MeasureConfig(
        eval_size=eval_size, chunk_size=chunk_size, floor_perms=floor_perms, floor_seed=floor_seed
    ).validate()
    return {
        "paper: fixed sigma*sqrt(d)": base,
        "median bandwidth": MeasureConfig(**{**base.to_dict(), "bandwidth": "median"}),
        "nHSIC-CKA": MeasureConfig(**{**base.to_dict(), "estimator": "nhsic_cka"}),
    }


def z_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``excess_xz``/``excess_yz`` (value - floor mean) and ``z_xz``/``z_yz`` (excess / floor std)."""
    check_table(table, ["nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz"], "measurement")
    out = table.copy()
    for side in ("xz", "yz"):
        excess = out[f"nhsic_{side}"] - out[f"floor_{side}"]
        out[f"excess_{side}"] = excess
        std = out.get(f"floor_{side}_std", pd.Series(np.nan, index=out.index))
        out[f"z_{side}"] = excess / std.where(std > 0)
    return out


def floor_corrected(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every nHSIC value replaced by its excess over the permutation floor (floor 0).

    The estimator columns say so (``<estimator>-excess``), so the table never mixes with the raw one.
    """
    check_table(table, ["nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz"], "measurement")
    if table[["floor_xz", "floor_yz"]].isna().all().all():
        raise ValueError(
            "table has no permutation floor (floor_perms=0): measure it with floor_perms >= 1"
        )
    out = table.copy()
    for side in ("xz", "yz"):
        out[f"nhsic_{side}"] = out[f"nhsic_{side}"] - out[f"floor_{side}"]
        out[f"floor_{side}"] = 0.0
    if "estimator" in out.columns:
        out["estimator"] = out["estimator"].astype(str) + "-excess"
    if "measure_id" in out.columns:
        out["measure_id"] = out["measure_id"].astype(str) + "-excess"
    return out


def with_probes(measured: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """A measurement table with the probe and head accuracies of the training record joined in."""
    check_table(measured, _JOIN, "measured")
    check_table(layers, [*_JOIN, *PROBE_COLUMNS], "layers")
    extra = layers[[*_JOIN, *PROBE_COLUMNS]].drop_duplicates(subset=_JOIN)
    base = measured.drop(columns=[c for c in PROBE_COLUMNS if c in measured.columns])
    # epochs are floats in the training record (sub-epoch points), ints in a re-measurement
    extra = extra.astype({"epoch": float})
    merged = base.astype({"epoch": float}).merge(extra, on=_JOIN, how="left")
    return merged.astype({"epoch": measured["epoch"].dtype})


def layer_output(run: Run, epoch: int, layer: str, x: Tensor) -> Tensor:
    """The output of ``layer`` (a block name or ``"logits"``) of ``run``'s model after ``epoch`` on x."""
    model = run.load_model(epoch)
    names = [*model.block_names, "logits"]
    if layer not in names:
        raise ValueError(f"layer must be one of {names}, got {layer!r}")
    with evaluating(model):
        logits, zs = model(x, return_blocks=True)
    return [*zs, logits][names.index(layer)]


def scale_response(
    x: Tensor,
    y: Tensor,
    z: Tensor,
    factors: Sequence[float],
    estimators: Mapping[str, MeasureConfig],
) -> pd.DataFrame:
    """nHSIC(X; cZ) and nHSIC(Y; cZ) for every factor c and estimator (same data, same chunks).

    A measure of information should not move when a representation is only rescaled; the paper's
    fixed bandwidth sigma * sqrt(d) does, the median heuristic does not (docs/method.md §3).
    """
    if not factors:
        raise ValueError("factors must hold at least one positive number")
    facs = [check_real("factors entries", f, minimum=0.0, include_minimum=False) for f in factors]
    rows = []
    for label, mcfg in estimators.items():
        mcfg.validate()
        check_int("x rows", x.shape[0], minimum=mcfg.eval_size, maximum=mcfg.eval_size)
        plane = InfoPlane(
            x, y, chunk_size=mcfg.chunk_size, sigma=mcfg.sigma, eps=mcfg.eps,
            floor_perms=mcfg.floor_perms, seed=mcfg.floor_seed, bandwidth=mcfg.bandwidth,
            estimator=mcfg.estimator,
        )  # fmt: skip
        for c in facs:
            res = plane.measure({"z": z * c}).iloc[0]
            rows.append(
                {
                    "estimator": label,
                    "factor": c,
                    "nhsic_xz": float(res["nhsic_xz"]),
                    "nhsic_yz": float(res["nhsic_yz"]),
                    "floor_xz": float(res.get("floor_xz", math.nan)),
                    "floor_yz": float(res.get("floor_yz", math.nan)),
                }
            )
    return pd.DataFrame(rows)


def claims_by_estimator(
    tables: Mapping[str, pd.DataFrame],
    epochs: pd.DataFrame,
    *,
    baseline: Mapping[str, object] | None = None,
    claims: Sequence[str] | None = ESTIMATOR_CLAIMS,
    stability: bool = False,
) -> pd.DataFrame:
    """The registered claims under every estimator (sensitivity analyses, docs/method.md §12): one
    row per claim and estimator with the effect of E2E against ``baseline`` (columns to select it;
    default layer-wise with linear heads), its 95 % interval and verdict (:func:`ibstudy.claims.claims_table`: with one seed the
    contrast alone, not measured).

    Each table in ``tables`` is one estimator's measurement of the same runs (joined with the
    probe columns where C4b needs them). ``claims`` defaults to those the estimator can change
    (the plane's: C1, C2, C3, C3b), one Holm family per estimator; None takes every claim.
    ``stability`` adds each verdict's margin and leave-one-seed-out check (:mod:`ibstudy.stability`)."""
    from ibstudy.claims import claims_table

    if not tables:
        raise ValueError("tables must map at least one estimator label to a measurement table")
    where = dict(baseline or {"method": "layerwise", "head": "linear"})
    parts = []
    for label, table in tables.items():
        check_table(table, [c for c in MEASURE_COLUMNS if c != "floor_seed"], label)
        result = claims_table(
            table, epochs, candidate={"method": "e2e"}, baselines=[where], claims=claims,
            stability=stability,
        )  # fmt: skip
        parts.append(result.assign(estimator=label))
    return pd.concat(parts, ignore_index=True)
