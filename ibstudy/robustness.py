"""Does the plane's reading survive another estimator? Helpers of notebook 07 (docs/method.md §3, §10).

Pure functions over measurement tables (:func:`ibstudy.measure.measure`) plus two small model reads:
the estimator suite (read from the registry, :mod:`ibstudy.estimators`), floor-corrected values and
z-scores, the response of each estimator to a rescaled representation, the claims table computed
under several estimators side by side, and the estimator sensitivity analysis: the claims re-decided
under each setting of eps, the chunk size m, the evaluation size N and each estimator, which
verdicts change against the reference, and per claim under how many settings it holds. Nothing is
trained: the settings re-measure stored weights (:func:`estimator_sensitivity`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from ibstudy.checks import check_int, check_real
from ibstudy.config import MeasureConfig
from ibstudy.estimators import REGISTRY
from ibstudy.estimators.plane import Plane
from ibstudy.measure import evaluating
from ibstudy.store import Run
from ibstudy.study import measure_suite
from ibstudy.tables import MEASURE_COLUMNS, check_table

__all__ = [
    "ESTIMATOR_CLAIMS",
    "PAPER_LABEL",
    "PROBE_COLUMNS",
    "claim_epochs",
    "claims_by_estimator",
    "estimator_sensitivity",
    "estimator_suite",
    "floor_corrected",
    "layer_output",
    "scale_response",
    "sensitivity_settings",
    "verdict_changes",
    "verdict_table",
    "with_probes",
    "z_scores",
]

PROBE_COLUMNS: tuple[str, ...] = ("probe_train_acc", "probe_test_acc", "head_test_acc")
#: the claims an estimator can change (the plane's), repeated under every estimator by notebook 07
ESTIMATOR_CLAIMS: tuple[str, ...] = ("C1", "C2", "C3", "C3b")
_JOIN = ["run", "method", "head", "epoch", "layer"]


#: the label of the paper's estimator in :func:`estimator_suite` (the reference of the sensitivity)
PAPER_LABEL = "paper: fixed sigma*sqrt(d)"


def estimator_suite(
    eval_size: int, chunk_size: int = 256, floor_perms: int = 5, floor_seed: int = 0
) -> dict[str, MeasureConfig]:
    """The estimators notebook 07 compares: the paper's (nHSIC, fixed bandwidth), nHSIC with the
    median bandwidth, then every other registered estimator (its title as the label) at the paper's
    kernel width rule and its own defaults (nHSIC-CKA, Rényi MI with alpha = 1.01)."""
    base = MeasureConfig(
        eval_size=eval_size, chunk_size=chunk_size, floor_perms=floor_perms, floor_seed=floor_seed
    ).validate()
    suite = {PAPER_LABEL: base, "median bandwidth": dataclasses.replace(base, bandwidth="median")}
    for name, estimator in REGISTRY.items():
        if name != base.estimator:
            suite[estimator.title] = dataclasses.replace(base, estimator=name)
    return suite


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
        plane = Plane(x, y, mcfg)
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
    reference: str | None = None,
) -> pd.DataFrame:
    """The registered claims under every estimator (sensitivity analyses, docs/method.md §12): one
    row per claim and estimator with the effect of E2E against ``baseline`` (columns to select it;
    default layer-wise with linear heads), its 95 % interval and verdict (:func:`ibstudy.claims.claims_table`: with one seed the
    contrast alone, not measured).

    Each table in ``tables`` is one estimator's measurement of the same runs (joined with the
    probe columns where C4b needs them). ``claims`` defaults to those the estimator can change
    (the plane's: C1, C2, C3, C3b), one Holm family per estimator; None takes every claim.
    ``stability`` adds each verdict's margin and leave-one-seed-out check (:mod:`ibstudy.stability`).
    ``reference`` (a key of ``tables``) adds ``reference_verdict`` (that table's verdict of the
    claim) and ``changed`` (this verdict differs from it)."""
    from ibstudy.claims import claims_table

    if not tables:
        raise ValueError("tables must map at least one estimator label to a measurement table")
    if reference is not None and reference not in tables:
        raise ValueError(
            f"reference must be one of the tables' labels {list(tables)}, got {reference!r}"
        )
    where = dict(baseline or {"method": "layerwise", "head": "linear"})
    parts = []
    for label, table in tables.items():
        check_table(table, [c for c in MEASURE_COLUMNS if c != "floor_seed"], label)
        result = claims_table(
            table, epochs, candidate={"method": "e2e"}, baselines=[where], claims=claims,
            stability=stability,
        )  # fmt: skip
        parts.append(result.assign(estimator=label))
    out = pd.concat(parts, ignore_index=True)
    if reference is not None:
        ref = out[out["estimator"] == reference].drop_duplicates("claim").set_index("claim")
        out["reference_verdict"] = out["claim"].map(ref["verdict"])
        out["changed"] = out["verdict"] != out["reference_verdict"]
    return out


# ----------------------------------------------------------------------------------------------
# estimator sensitivity: eps, m, N and the estimator itself
# ----------------------------------------------------------------------------------------------


def _grid(name: str, values: Sequence[Any], check: Callable[[str, Any], Any]) -> list[Any]:
    """The entries of one grid of settings (possibly none), each checked by ``check``."""
    if not isinstance(values, list | tuple):
        raise ValueError(f"{name} must be a list of values (or empty), got {values!r}")
    return [check(f"{name} entries", v) for v in values]


def sensitivity_settings(
    reference: MeasureConfig,
    *,
    eps_values: Sequence[float] = (),
    chunk_sizes: Sequence[int] = (),
    eval_sizes: Sequence[int] = (),
    estimators: Mapping[str, MeasureConfig] | None = None,
    dataset: str | None = None,
) -> dict[str, MeasureConfig]:
    """The settings of the sensitivity analysis, one factor at a time around ``reference`` (first,
    labelled ``"reference"``): ``eps=<v>`` for each ridge, ``m=<m>`` for each chunk size (each must
    divide the reference's eval_size), ``N=<n>`` for each evaluation size (each a multiple of the
    reference's chunk size), then ``estimators`` as given (label -> config, e.g.
    :func:`estimator_suite`; an entry equal to the reference is left out). Values equal to the
    reference's are left out; every config is validated (``dataset`` bounds N) before any work."""
    if not isinstance(reference, MeasureConfig):
        raise ValueError(f"reference must be a MeasureConfig, got {type(reference).__name__}")
    reference.validate(dataset)
    settings = {"reference": reference}
    eps_list = _grid(
        "eps_values", eps_values, lambda n, v: check_real(n, v, minimum=0.0, include_minimum=False)
    )
    m_list = _grid("chunk_sizes", chunk_sizes, lambda n, v: check_int(n, v, minimum=4))
    n_list = _grid("eval_sizes", eval_sizes, lambda n, v: check_int(n, v, minimum=4))
    bad_m = [m for m in m_list if reference.eval_size % m]
    if bad_m:
        raise ValueError(
            f"chunk_sizes must divide the reference's eval_size={reference.eval_size}, got {bad_m}"
        )
    bad_n = [n for n in n_list if n % reference.chunk_size]
    if bad_n:
        raise ValueError(
            f"eval_sizes must be multiples of the reference's chunk_size={reference.chunk_size}, "
            f"got {bad_n}"
        )
    grid = [("eps", v, f"eps={v:g}") for v in eps_list]
    grid += [("chunk_size", m, f"m={m}") for m in m_list]
    grid += [("eval_size", n, f"N={n}") for n in n_list]
    for field, value, label in grid:
        if getattr(reference, field) != value:
            settings[label] = dataclasses.replace(reference, **{field: value}).validate(dataset)
    for label, mcfg in (estimators or {}).items():
        if not isinstance(mcfg, MeasureConfig):
            raise ValueError(f"estimators[{label!r}] must be a MeasureConfig, got {mcfg!r}")
        if mcfg != reference:
            if label in settings:
                raise ValueError(f"estimators label {label!r} is already a setting's label")
            settings[label] = mcfg.validate(dataset)
    return settings


def claim_epochs(epochs: Iterable[float]) -> list[int]:
    """The whole epochs the plane's claims read: 0, the early and the late window
    (:func:`ibstudy.claims.windows`, which end at the last epoch: C1's) when the run is long enough
    for windows, else every whole epoch. C1, C3 and C3b read exactly these; C2's role spread is
    then taken over them (the reference's too)."""
    from ibstudy.claims import NotMeasured, windows

    whole = sorted({int(e) for e in epochs if float(e).is_integer() and e >= 0})
    if not whole:
        raise ValueError("epochs must hold at least one whole epoch >= 0")
    try:
        early, late = windows(whole)
    except NotMeasured:
        return whole
    return sorted({int(e) for e in (0, *early, *late) if e in whole})


def estimator_sensitivity(
    runs: Sequence[Run],
    epochs: pd.DataFrame,
    settings: Mapping[str, MeasureConfig],
    *,
    reference: str = "reference",
    stability: bool = False,
    progress: bool = False,
    jobs: int | str | None = None,
) -> pd.DataFrame:
    """The plane's claims under every setting (:func:`sensitivity_settings`), re-measured from the
    runs' stored weights at :func:`claim_epochs` of the epochs all runs stored (a setting measured
    before is read from its cache; the others ``jobs`` at a time, :func:`ibstudy.study.measure_suite`);
    :func:`claims_by_estimator` with ``reference``, so each row says whether its verdict differs
    from the reference's. Nothing is trained."""
    runs = list(runs)
    if not runs or not all(isinstance(r, Run) for r in runs):
        raise ValueError("runs must be a non-empty list of stored Runs")
    if not settings or reference not in settings:
        raise ValueError(
            f"reference must be one of the settings {list(settings)}, got {reference!r}"
        )
    for label, mcfg in settings.items():
        if not isinstance(mcfg, MeasureConfig):
            raise ValueError(f"settings[{label!r}] must be a MeasureConfig, got {mcfg!r}")
        mcfg.validate(runs[0].config.dataset)
    stored = set.intersection(*(set(r.stored_epochs()) for r in runs))
    if not stored:
        raise ValueError("the runs share no epoch with stored weights: nothing to re-measure")
    wanted = claim_epochs(stored)
    tables = measure_suite(runs, settings, wanted, progress=progress, jobs=jobs)
    return claims_by_estimator(tables, epochs, stability=stability, reference=reference)


def verdict_changes(by_setting: pd.DataFrame) -> pd.DataFrame:
    """Per setting (in order): the claims whose verdict differs from the reference's, as
    ``C1: supported -> inconclusive; ...`` (``"none"`` when every verdict stays)."""
    need = ["claim", "estimator", "verdict", "reference_verdict", "changed"]
    check_table(by_setting, need, "by_setting (claims_by_estimator with reference=)")
    rows = []
    for label, part in by_setting.groupby("estimator", sort=False):
        moved = part[part["changed"].astype(bool)]
        text = "; ".join(
            f"{r.claim}: {r.reference_verdict} -> {r.verdict}" for r in moved.itertuples()
        )
        rows.append({"setting": label, "n_changed": len(moved), "changed": text or "none"})
    return pd.DataFrame(rows, columns=["setting", "n_changed", "changed"])


def verdict_table(by_setting: pd.DataFrame) -> pd.DataFrame:
    """Per claim: the reference's verdict, under how many of the settings it holds (verdict
    supported) as ``holds`` and ``holds_under`` ("k of n"), the count of each other verdict,
    ``claimed_sign``: under how many the effect has the claimed sign (significant or not; with one
    seed the only reading), and the settings under which the verdict differs from the reference's."""
    from ibstudy.estimates import VERDICTS

    need = [
        "claim",
        "estimator",
        "verdict",
        "reference_verdict",
        "changed",
        "estimate",
        "direction",
    ]
    check_table(by_setting, need, "by_setting (claims_by_estimator with reference=)")
    rows = []
    for claim, part in by_setting.groupby("claim", sort=False):
        counts = part["verdict"].value_counts()
        n = int(part["estimator"].nunique())
        holds = int(counts.get("supported", 0))
        sign = np.where(part["direction"].astype(str) == "< 0", -1.0, 1.0)
        moved = part.loc[part["changed"].astype(bool), "estimator"].astype(str).tolist()
        rows.append({
            "claim": claim, "reference_verdict": part["reference_verdict"].iloc[0],
            "holds": holds, "settings": n, "holds_under": f"{holds} of {n}",
            **{v.replace(" ", "_"): int(counts.get(v, 0)) for v in VERDICTS if v != "supported"},
            "claimed_sign": int((part["estimate"].to_numpy(dtype=float) * sign > 0).sum()),
            "changed_under": ", ".join(moved) or "none",
        })  # fmt: skip
    return pd.DataFrame(rows)
