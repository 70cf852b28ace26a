"""The evidence behind the paper's claims C1-C4 (docs/method.md §1), computed from the tidy tables.

Pure functions, pandas in and pandas (or a dict) out; nothing is trained or plotted here. Every verdict
rule is spelled out in the docstring of the function that applies it, and every threshold is a keyword
argument with a documented default. Conventions shared by all functions:

- A *run* is identified by the ``run`` column (with its ``method`` and ``head``); tables may hold many.
- *Blocks* are the rows whose ``layer`` is not ``"logits"``; the *first block* has the smallest
  ``layer_index``, the *last block* the largest. The logits row is the classifier output.
- The *last epoch* of a run is the largest ``epoch`` it recorded (runs may differ: sequential
  layer-wise training records one stage per block).
- Rows with a non-finite nHSIC value are ignored.
- nHSIC values are compared only within one table, i.e. at equal m and C (docs/method.md §3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstudy.checks import check_int, check_real
from ibstudy.tables import LOGITS, RUN_KEYS, check_one_estimator, num_classes_of, seeds_of
from ibstudy.tables import blocks as _blocks
from ibstudy.tables import check_table as _check_table
from ibstudy.tables import finite as _finite
from ibstudy.tables import match_runs as _match
from ibstudy.tables import rows_of as _rows_of
from ibstudy.tables import run_keys as _runs

__all__ = [
    "VERDICTS",
    "SHAPE_STATS",
    "trajectory_shapes",
    "shape_spread",
    "fit_then_compress",
    "depth_profile",
    "claims_table",
    "accuracy_table",
    "accuracy_summary",
    "claims_per_seed",
    "excess_with_noise",
]

LAYER_REQUIRED = ("run", "method", "head", "epoch", "layer", "layer_index", "nhsic_xz", "nhsic_yz")
EPOCH_REQUIRED = ("run", "method", "head", "epoch", "train_acc", "test_acc")
VERDICTS = ("holds", "does not hold", "not measured")
#: shape statistics whose spread across blocks decides claim C2
SHAPE_STATS = ("peak_frac_xz", "final_over_peak_xz", "final_yz_norm")
_SHAPE_LABELS = {
    "peak_frac_xz": "epoch of peak nHSIC(X;Z) (fraction of training)",
    "final_over_peak_xz": "final/peak nHSIC(X;Z)",
    "final_yz_norm": "final nHSIC(Y;Z)/(C-1)",
}
STATEMENTS = {
    "C1": "E2E carries input information deeper; under layer-wise training nHSIC(X;Z) collapses "
    "with depth",
    "C2": "under E2E the layers take different roles (their information-plane trajectories differ); "
    "under layer-wise training every layer behaves like an output layer",
    "C3": "under E2E the last layer fits then compresses: late in training nHSIC(X;Z) falls while "
    "nHSIC(Y;Z) stays high (the middle-layer/generalization part is not tested here)",
    "C4a": "E2E ends more accurate than layer-wise training",
    "C4b": "layer-wise blocks become linearly separable early but saturate, while E2E's last blocks "
    "end higher (linear probes)",
}


# ----------------------------------------------------------------------------------------------
# validation and selection helpers
# ----------------------------------------------------------------------------------------------


def _check_fraction(value: object, name: str) -> float:
    """``value`` as a float in [0, 1), or ValueError."""
    return check_real(name, value, minimum=0.0, maximum=1.0, include_maximum=False)


def _check_min_epochs(value: object) -> int:
    """``min_epochs`` as an int >= 2, or ValueError."""
    return check_int("min_epochs", value, minimum=2)


def _label(key: tuple) -> str:
    """``method/head`` for layer-wise runs, ``method`` for E2E (head "none")."""
    method, head = key[1], key[2]
    if pd.isna(head) or head == "none":
        return str(method)
    return f"{method}/{head}"


def _fmt(value: float, spec: str = ".2f") -> str:
    """A number for the evidence text; NaN reads 'n/a'."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


# ----------------------------------------------------------------------------------------------
# trajectory shapes (C2)
# ----------------------------------------------------------------------------------------------


def _shape_of(traj: pd.DataFrame, num_classes: int) -> dict[str, float]:
    """Shape statistics of one layer's trajectory (rows of one run and layer, finite nHSIC)."""
    traj = traj.sort_values("epoch", kind="stable")
    epochs = traj["epoch"].to_numpy(dtype=float)
    xz = traj["nhsic_xz"].to_numpy(dtype=float)
    yz = traj["nhsic_yz"].to_numpy(dtype=float)
    peak = int(np.argmax(xz))  # first epoch reaching the maximum
    first, final = epochs[0], epochs[-1]
    span = final - first
    floor = math.nan
    if "floor_xz" in traj.columns:
        floor = float(pd.to_numeric(traj["floor_xz"], errors="coerce").to_numpy(dtype=float)[-1])
    return {
        "n_epochs": len(epochs),
        "first_epoch": first,
        "final_epoch": final,
        "peak_epoch_xz": epochs[peak],
        "peak_frac_xz": (epochs[peak] - first) / span if span > 0 else math.nan,
        "peak_xz": xz[peak],
        "final_xz": xz[-1],
        "final_over_peak_xz": xz[-1] / xz[peak] if xz[peak] > 0 else math.nan,
        "final_yz": yz[-1],
        "final_yz_norm": yz[-1] / (num_classes - 1),
        "final_xz_over_floor": xz[-1] / floor if math.isfinite(floor) and floor > 0 else math.nan,
    }


def trajectory_shapes(layers: pd.DataFrame, num_classes: int | None = None) -> pd.DataFrame:
    """Per run and layer, the shape of its information-plane trajectory over the recorded epochs.

    Columns (one row per run x layer, logits included, in depth order):
    ``peak_epoch_xz`` the first epoch where nHSIC(X;Z) reaches its maximum ``peak_xz``;
    ``peak_frac_xz`` that epoch as a fraction of the recorded span, (peak - first)/(final - first)
    (NaN with a single epoch; comparable across runs of different length);
    ``final_over_peak_xz`` final / peak nHSIC(X;Z) (1 = no compression after the peak);
    ``final_yz_norm`` final nHSIC(Y;Z) / (C - 1) (nHSIC(Y;Y) ~ C - 1, so ~1 = labels fully captured);
    ``final_xz_over_floor`` final nHSIC(X;Z) / final ``floor_xz`` (NaN without a positive floor;
    <= 1 means no input dependence detectable). See :func:`shape_spread` for the spread across layers.
    ``num_classes=None`` reads it from the table's ``num_classes`` column.
    """
    df = check_one_estimator(_check_table(layers, LAYER_REQUIRED, "layers"))
    num_classes = num_classes_of(df, num_classes)
    df = _finite(df, ["epoch", "layer_index", "nhsic_xz", "nhsic_yz"])
    if df.empty:
        raise ValueError("layers table has no row with finite epoch, nhsic_xz and nhsic_yz")
    rows = []
    for key in _runs(df):
        run_df = _rows_of(df, key)
        for (index, layer), traj in run_df.groupby(["layer_index", "layer"], sort=True):
            rows.append(
                {
                    **dict(zip(RUN_KEYS, key, strict=True)),
                    "layer": layer,
                    "layer_index": int(index),
                    **_shape_of(traj, num_classes),
                }
            )
    return pd.DataFrame(rows)


def shape_spread(shapes: pd.DataFrame, *, include_logits: bool = False) -> pd.DataFrame:
    """Per run, the range (max - min across layers) of each raw trajectory-shape statistic (a
    description; claim C2 decides on the excess over the floor, with noise: :func:`claims_table`).

    ``shapes`` is the output of :func:`trajectory_shapes`. The logits row is left out unless
    ``include_logits``: C2 is about the roles of the blocks (hidden representations). Columns
    ``spread_<stat>`` for ``peak_epoch_xz`` and every statistic in :data:`SHAPE_STATS`, plus
    ``n_layers``; NaN where fewer than two layers have a finite value.
    """
    stats = ("peak_epoch_xz", *SHAPE_STATS)
    df = _check_table(shapes, (*RUN_KEYS, "layer", *stats), "shapes")
    if not include_logits:
        df = _blocks(df)
    rows = []
    for key in _runs(df):
        run_df = _rows_of(df, key)
        row: dict[str, object] = {**dict(zip(RUN_KEYS, key, strict=True)), "n_layers": len(run_df)}
        for stat in stats:
            values = pd.to_numeric(run_df[stat], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row[f"spread_{stat}"] = values.max() - values.min() if len(values) >= 2 else math.nan
        rows.append(row)
    columns = [*RUN_KEYS, "n_layers", *(f"spread_{s}" for s in stats)]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------------
# fit then compress (C3)
# ----------------------------------------------------------------------------------------------


def _last_block_name(run_df: pd.DataFrame) -> str | None:
    """Name of the block with the largest layer_index (None without blocks)."""
    blocks = _blocks(run_df)
    if blocks.empty:
        return None
    return str(blocks.loc[blocks["layer_index"].astype(float).idxmax(), "layer"])


def _fit_compress_of(
    run_df: pd.DataFrame,
    key: tuple,
    layer: str,
    tol: float,
    tol_y: float,
    min_epochs: int,
    require_fit: bool,
) -> dict[str, object]:
    """The fit-then-compress record of one run's layer (see :func:`fit_then_compress`)."""
    traj = _finite(run_df[run_df["layer"] == layer], ["epoch", "nhsic_xz", "nhsic_yz"])
    traj = traj.sort_values("epoch", kind="stable")
    out: dict[str, object] = {**dict(zip(RUN_KEYS, key, strict=True)), "layer": layer}
    out.update(tol=tol, tol_y=tol_y, n_epochs=len(traj))
    if len(traj) < min_epochs:
        out["holds"] = None
        out["summary"] = (
            f"{layer}: {len(traj)} recorded epoch(s), fewer than min_epochs={min_epochs}: not measured"
        )
        return out
    epochs = traj["epoch"].to_numpy(dtype=float)
    xz = traj["nhsic_xz"].to_numpy(dtype=float)
    yz = traj["nhsic_yz"].to_numpy(dtype=float)
    peak = int(np.argmax(xz))
    max_yz = float(yz.max())
    out.update(
        first_epoch=int(epochs[0]),
        final_epoch=int(epochs[-1]),
        peak_epoch_xz=int(epochs[peak]),
        peak_xz=float(xz[peak]),
        final_xz=float(xz[-1]),
        xz_drop=float(1.0 - xz[-1] / xz[peak]) if xz[peak] > 0 else math.nan,
        max_yz=max_yz,
        final_yz=float(yz[-1]),
        yz_kept=float(yz[-1] / max_yz) if max_yz > 0 else math.nan,
        fit_phase=bool(peak > 0),
    )
    peak_before_final = peak < len(xz) - 1
    compressed = bool(xz[peak] > 0 and xz[-1] <= (1.0 - tol) * xz[peak])
    kept = bool(max_yz > 0 and yz[-1] >= (1.0 - tol_y) * max_yz)
    holds = peak_before_final and compressed and kept and (out["fit_phase"] or not require_fit)
    out["holds"] = bool(holds)
    where = "at initialization" if peak == 0 else f"at epoch {epochs[peak]:g}"
    out["summary"] = (
        f"{layer}: nHSIC(X;Z) peaks {where} ({_fmt(xz[peak], '.3g')}) and ends at "
        f"{_fmt(xz[-1], '.3g')} at epoch {epochs[-1]:g} ({_fmt(100 * out['xz_drop'], '.0f')}% below "
        f"peak; needs >= {100 * tol:.0f}%); nHSIC(Y;Z) ends at {_fmt(100 * out['yz_kept'], '.0f')}% of "
        f"its max (needs >= {100 * (1 - tol_y):.0f}%)"
    )
    return out


def fit_then_compress(
    layers: pd.DataFrame,
    *,
    layer: str | None = None,
    method: str = "e2e",
    head: str | None = None,
    run: str | None = None,
    tol: float = 0.05,
    tol_y: float = 0.10,
    min_epochs: int = 3,
    require_fit: bool = False,
) -> dict[str, object]:
    """Claim C3 on one run's layer: does nHSIC(X;Z) rise, then fall, while nHSIC(Y;Z) stays high?

    ``layer`` defaults to the last block (the layer just before ``"logits"``): the last hidden
    representation Z_L, which both methods train differently; pass ``layer="logits"`` for the output.
    Rule: ``holds`` is True when the epoch of peak nHSIC(X;Z) comes before the final epoch, final
    nHSIC(X;Z) <= (1 - tol) * peak, and final nHSIC(Y;Z) >= (1 - tol_y) * its maximum over epochs;
    with ``require_fit`` the peak must also come after the first recorded epoch (a visible fitting
    phase; ``fit_phase`` reports it either way). ``holds`` is None (not measured) with fewer than
    ``min_epochs`` recorded epochs. The run is picked by ``method`` (and ``head``/``run`` when several
    runs share the method). Returns the numbers behind the rule and a one-line ``summary``.
    """
    df = _check_table(layers, LAYER_REQUIRED, "layers")
    tol = _check_fraction(tol, "tol")
    tol_y = _check_fraction(tol_y, "tol_y")
    min_epochs = _check_min_epochs(min_epochs)
    key = _one_run(df, method, head, run, "layers")
    run_df = _rows_of(df, key)
    if layer is None:
        layer = _last_block_name(run_df)
        if layer is None:
            raise ValueError(f"run {key[0]!r} has no block rows (only {LOGITS!r})")
    elif layer not in set(run_df["layer"]):
        raise ValueError(
            f"layer={layer!r} not recorded for run {key[0]!r}; available: "
            f"{list(dict.fromkeys(run_df.sort_values('layer_index')['layer']))}"
        )
    return _fit_compress_of(run_df, key, layer, tol, tol_y, min_epochs, require_fit)


def _one_run(df: pd.DataFrame, method: str, head: object, run: object, name: str) -> tuple:
    """The single run matching method/head/run, or ValueError naming what is available."""
    found = _match(df, method, head, run)
    if not found:
        raise ValueError(
            f"no run in {name} with method={method!r}, head={head!r}, run={run!r}; available "
            f"(run, method, head): {_runs(df)}"
        )
    if len(found) > 1:
        raise ValueError(
            f"{len(found)} runs in {name} match method={method!r}, head={head!r}: {found}; "
            "pass head= or run= to pick one"
        )
    return found[0]


# ----------------------------------------------------------------------------------------------
# depth profile (C1)
# ----------------------------------------------------------------------------------------------


def depth_profile(layers: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """Per run and layer, the layer's row at each run's last epoch (or at ``epoch``), depth ordered.

    Keeps every column of the input and adds ``xz_over_first_block``: nHSIC(X;Z) of the layer divided
    by that of the run's first block at the same epoch (the C1 depth decay; 1 at the first block).
    With ``epoch`` given, runs that did not record it are left out; none recording it is an error.
    """
    df = check_one_estimator(_check_table(layers, LAYER_REQUIRED, "layers"))
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch must be None or an int >= 0, got {epoch!r}")
        available = sorted(pd.unique(df["epoch"]).tolist())
        df = df[df["epoch"] == epoch]
        if df.empty:
            raise ValueError(f"epoch={epoch} not recorded; available epochs: {available}")
    parts = []
    for key in _runs(df):
        run_df = _rows_of(df, key)
        at = run_df[run_df["epoch"] == run_df["epoch"].max()].sort_values("layer_index")
        blocks = _blocks(at)
        first = math.nan
        if not blocks.empty:
            first = float(blocks.loc[blocks["layer_index"].astype(float).idxmin(), "nhsic_xz"])
        ratio = at["nhsic_xz"].astype(float) / first if first > 0 else math.nan
        parts.append(at.assign(xz_over_first_block=ratio))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# accuracy (C4)
# ----------------------------------------------------------------------------------------------


def accuracy_table(epochs: pd.DataFrame, layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run: method, head, final and best test accuracy, final train accuracy, mean head accuracy.

    ``final_*`` are read at the run's last recorded epoch, ``best_test_acc`` is the maximum over
    epochs (``best_epoch`` the first epoch reaching it). ``mean_head_test_acc`` is the mean of the
    blocks' auxiliary-head test accuracies (``head_test_acc`` of ``layers``) at the run's last epoch
    in ``layers``; NaN without heads (E2E) or without ``layers``. ``last_head_test_acc`` is the
    test accuracy of the last block's own auxiliary head: under layer-wise training the final
    classifier reads globally pooled features that no local loss shaped, so the two readouts can
    differ widely. The paper compares the network's output, i.e. ``final_test_acc``.
    """
    ep = _check_table(epochs, EPOCH_REQUIRED, "epochs")
    lay = None
    if layers is not None:
        lay = _check_table(layers, (*RUN_KEYS, "epoch", "layer", "head_test_acc"), "layers")
    rows = []
    for key in _runs(ep):
        run_ep = _rows_of(ep, key).sort_values("epoch", kind="stable")
        test = pd.to_numeric(run_ep["test_acc"], errors="coerce")
        final = run_ep.iloc[-1]
        best_at = test.idxmax() if test.notna().any() else None
        head_acc = last_head = math.nan
        if lay is not None:
            run_lay = _rows_of(lay, key)
            if not run_lay.empty:
                last = _blocks(run_lay[run_lay["epoch"] == run_lay["epoch"].max()])
                last = last.sort_values("layer_index")
                values = pd.to_numeric(last["head_test_acc"], errors="coerce")
                head_acc = float(values.mean()) if values.notna().any() else math.nan
                last_head = float(values.iloc[-1]) if len(values) else math.nan
        rows.append(
            {
                **dict(zip(RUN_KEYS, key, strict=True)),
                "final_epoch": final["epoch"],
                "final_test_acc": float(final["test_acc"]),
                "best_test_acc": float(test.max()) if best_at is not None else math.nan,
                "best_epoch": run_ep.loc[best_at, "epoch"] if best_at is not None else math.nan,
                "final_train_acc": float(final["train_acc"]),
                "mean_head_test_acc": head_acc,
                "last_head_test_acc": last_head,
                "seed": int(final["seed"]) if "seed" in final.index else 0,
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# the claims table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One measured (or unmeasured) part of a claim: verdict in VERDICTS, its evidence text and the
    one number the verdict turns on (``stat``, named by ``stat_name``; pooled over seeds as mean+-std)."""

    verdict: str
    evidence: str
    stat: float = math.nan
    stat_name: str = ""


def _combine(parts: Sequence[_Part]) -> tuple[str, str, str]:
    """Verdict, measured-ness and evidence of a claim from its parts.

    Rule: "not measured" when no part was measured; otherwise "does not hold" when any measured
    part does not hold, else "holds". ``measured`` is "fully", "partly" or "no".
    """
    measured = [p for p in parts if p.verdict != "not measured"]
    if not measured:
        verdict, how = "not measured", "no"
    else:
        verdict = (
            "does not hold" if any(p.verdict == "does not hold" for p in measured) else "holds"
        )
        how = "fully" if len(measured) == len(parts) else "partly"
    return verdict, how, "; ".join(p.evidence for p in parts)


def _decide(ok: bool) -> str:
    """The verdict of a measured rule."""
    return "holds" if ok else "does not hold"


#: |difference| / noise beyond which two measured values count as different (about 95 % two-sided)
Z_CRIT = 2.0


def _last_blocks(run_df: pd.DataFrame) -> pd.DataFrame:
    """A run's block rows at its last epoch, by depth (finite nhsic_xz)."""
    blocks = _finite(_blocks(run_df), ["epoch", "layer_index", "nhsic_xz"])
    if blocks.empty:
        return blocks
    return blocks[blocks["epoch"] == blocks["epoch"].max()].sort_values("layer_index")


def _chunks(rows: pd.DataFrame) -> float:
    """Chunks the nHSIC values average over (eval_size / chunk_size), NaN when the table lacks them."""
    if {"eval_size", "chunk_size"} <= set(rows.columns):
        k = pd.to_numeric(rows["eval_size"], errors="coerce") / pd.to_numeric(
            rows["chunk_size"], errors="coerce"
        )
        if k.notna().all() and k.nunique() == 1:
            return float(k.iloc[0])
    return math.nan


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    if name not in rows.columns:
        return np.full(len(rows), math.nan)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float)


def excess_with_noise(rows: pd.DataFrame, side: str = "xz") -> tuple[np.ndarray, np.ndarray]:
    """Per row: nHSIC minus its permutation floor, and the noise (standard error) of that excess.

    Noise model: the value is a mean over k chunks whose population std is ``nhsic_<side>_std``, so
    its standard error is std / sqrt(k - 1) (std itself when k is unknown: conservative); the floor's
    mean over p permutation replicates adds ``floor_<side>_std`` / sqrt(p) (0 when the floor has a
    single replicate and so no spread: then the floor's own noise is not counted).
    """
    value, floor = _column(rows, f"nhsic_{side}"), _column(rows, f"floor_{side}")
    k = _chunks(rows)
    se_value = _column(rows, f"nhsic_{side}_std") / (math.sqrt(k - 1) if k >= 2 else 1.0)
    perms = _column(rows, "floor_perms")
    floor_std = np.nan_to_num(_column(rows, f"floor_{side}_std"), nan=0.0)
    se_floor = floor_std / np.sqrt(np.where(np.isfinite(perms) & (perms > 0), perms, 1.0))
    return value - floor, np.sqrt(se_value**2 + se_floor**2)


def _claim_c1(
    e2e: pd.DataFrame, base: pd.DataFrame, names: tuple[str, str], z_crit: float
) -> _Part:
    """C1 rule, depth by depth above the floor: at each run's last epoch, for every block in the
    deeper half (index >= n_blocks // 2), d = excess(E2E) - excess(baseline) with excess = nHSIC(X;Z)
    - floor and noise sqrt(se_E2E^2 + se_baseline^2) (:func:`excess_with_noise`); holds when d >
    z_crit x noise at a strict majority of those blocks and d < -z_crit x noise at none. Not measured
    without a floor, without a noise estimate, or when the runs' block counts differ."""
    pe, pb = _last_blocks(e2e), _last_blocks(base)
    if len(pe) < 2 or len(pe) != len(pb):
        return _Part("not measured", "needs nHSIC(X;Z) of the same >= 2 blocks in both runs")
    ee, ne = excess_with_noise(pe)
    eb, nb = excess_with_noise(pb)
    if not (np.isfinite(ee).all() and np.isfinite(eb).all()):
        return _Part("not measured", "needs the permutation floor (floor_xz) of every block")
    noise = np.sqrt(ne**2 + nb**2)
    if not (np.isfinite(noise).all() and (noise > 0).all()):
        return _Part("not measured", "no noise estimate (nhsic_xz_std) for the blocks")
    deep = range(len(pe) // 2, len(pe))
    z = (ee - eb) / noise
    more = sum(int(z[i] > z_crit) for i in deep)
    less = sum(int(z[i] < -z_crit) for i in deep)
    bits = [
        f"{pe['layer'].iloc[i]} {ee[i]:.3g}+-{ne[i]:.2g} vs {eb[i]:.3g}+-{nb[i]:.2g} (z {z[i]:.1f})"
        for i in range(len(pe))
    ]
    raw = (
        f"raw nHSIC(X;Z) last/first block: {names[0]} "
        + _fmt(float(pe["nhsic_xz"].iloc[-1]) / float(pe["nhsic_xz"].iloc[0]))
        + f", {names[1]} "
        + _fmt(float(pb["nhsic_xz"].iloc[-1]) / float(pb["nhsic_xz"].iloc[0]))
    )
    text = (
        f"nHSIC(X;Z) above the floor at the last epoch, {names[0]} vs {names[1]}: "
        + "; ".join(bits)
        + f". {names[0]} keeps more at {more} and less at {less} of the {len(deep)} deeper blocks "
        f"(rule: more at a strict majority with z > {z_crit:g}, less at none); {raw} (not used)"
    )
    stat = float(np.mean([z[i] for i in deep]))
    return _Part(_decide(2 * more > len(deep) and less == 0), text, stat, "mean z, deeper blocks")


#: replicates of the noise simulation behind C2 (fixed generator seed: verdicts are repeatable)
C2_REPLICATES = 400


def _excess_grid(run_df: pd.DataFrame, side: str) -> tuple[np.ndarray, ...] | None:
    """A run's block excess over the floor and its noise as (blocks x points) arrays, with the
    recorded epochs; None when a block misses a point, a floor or a noise estimate."""
    blocks = _finite(_blocks(run_df), ["epoch", "layer_index", f"nhsic_{side}"])
    blocks = blocks.sort_values(["layer_index", "epoch"], kind="stable")
    epochs = np.sort(pd.unique(blocks["epoch"].astype(float)))
    excess, noise = excess_with_noise(blocks, side)
    n_blocks = blocks["layer_index"].nunique()
    if len(blocks) != n_blocks * len(epochs) or not np.isfinite(excess).all():
        return None
    if not (np.isfinite(noise).all() and (noise > 0).any()):
        return None
    shape = (n_blocks, len(epochs))
    return excess.reshape(shape), noise.reshape(shape), epochs


def _role_stats(xz: np.ndarray, yz: np.ndarray, epochs: np.ndarray, num_classes: int) -> np.ndarray:
    """Per block, the C2 shape statistics on the excess over the floor: epoch of peak X-side excess
    (fraction of the span), final/peak X-side excess, final Y-side excess / (C - 1). Arrays
    (..., blocks, points) in, (..., blocks, 3) out."""
    peak = np.argmax(xz, axis=-1)
    span = epochs[-1] - epochs[0]
    peak_frac = (epochs[peak] - epochs[0]) / span if span > 0 else np.full(peak.shape, np.nan)
    top = np.take_along_axis(xz, peak[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        over = np.where(top > 0, xz[..., -1] / top, np.nan)
    return np.stack([peak_frac, over, yz[..., -1] / (num_classes - 1)], axis=-1)


def _role_spread(stats: np.ndarray) -> np.ndarray:
    """Standard deviation across blocks (axis -2) of each statistic: how different the roles are."""
    return np.nanstd(stats, axis=-2)


def _claim_c2(
    e2e: pd.DataFrame,
    base: pd.DataFrame,
    names: tuple[str, str],
    num_classes: int,
    margin: float,
    min_epochs: int,
    z_crit: float,
) -> _Part:
    """C2 rule, on the excess over the floor: for each statistic of :func:`_role_stats`, its spread
    across blocks (std) under E2E minus under the baseline, d; the noise of d is the std of d over
    C2_REPLICATES redraws of every recorded point within its noise (:func:`excess_with_noise`,
    Gaussian). E2E's layers differ more on a statistic when d > z_crit x noise and d > margin x
    the baseline's spread, less when d < -z_crit x noise; holds when more on a strict majority of the
    statistics and less on none. Not measured with < 2 blocks, < min_epochs points, or no floor."""
    grids = []
    for df in (e2e, base):
        gx, gy = _excess_grid(df, "xz"), _excess_grid(df, "yz")
        if gx is None or gy is None or gx[0].shape != gy[0].shape:
            return _Part(
                "not measured",
                "needs the floor and noise (nhsic_*_std) of every block at every recorded point",
            )
        if gx[0].shape[0] < 2 or gx[0].shape[1] < min_epochs:
            return _Part(
                "not measured", f"needs >= 2 blocks and >= {min_epochs} recorded points per run"
            )
        grids.append((gx, gy))
    rng = np.random.default_rng(0)
    observed, draws = [], []
    for (xz, nxz, epochs), (yz, nyz, _) in grids:
        observed.append(_role_spread(_role_stats(xz, yz, epochs, num_classes)))
        sx = xz + nxz * rng.standard_normal((C2_REPLICATES, *xz.shape))
        sy = yz + nyz * rng.standard_normal((C2_REPLICATES, *yz.shape))
        draws.append(_role_spread(_role_stats(sx, sy, epochs, num_classes)))
    noise = np.nanstd(draws[0] - draws[1], axis=0)
    labels = ("epoch of peak", "final/peak", "final nHSIC(Y;Z)/(C-1)")
    more = less = measured = 0
    bits, zs = [], []
    for i, label in enumerate(labels):
        a, b, n = float(observed[0][i]), float(observed[1][i]), float(noise[i])
        if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(n)):
            bits.append(f"{label}: n/a")
            continue
        measured += 1
        z = (a - b) / n if n > 0 else math.copysign(math.inf, a - b) if a != b else 0.0
        zs.append(z)
        more += int(z > z_crit and a - b > margin * b)
        less += int(z < -z_crit)
        bits.append(f"{label} {a:.3g} vs {b:.3g} (noise {n:.2g}, z {z:.1f})")
    if measured == 0:
        return _Part("not measured", "no role statistic measured for both runs")
    text = (
        f"spread across blocks (std) of the excess-over-floor trajectory statistics, {names[0]} vs "
        f"{names[1]}: " + "; ".join(bits) + f". {names[0]} differs more on {more}, less on "
        f"{less} of {measured} (rule: more on a strict majority with z > {z_crit:g} and > "
        f"{100 * margin:.0f}% of {names[1]}'s spread, less on none)"
    )
    stat = float(np.mean(np.clip(zs, -50, 50)))
    return _Part(
        _decide(2 * more > measured and less == 0), text, stat, "mean z of spread difference"
    )


def _lr_decayed(epochs: pd.DataFrame | None, key: tuple) -> bool | None:
    """Whether the run's learning rate ever fell below its first value (None: not recorded)."""
    if epochs is None or "lr" not in epochs.columns:
        return None
    lr = pd.to_numeric(_rows_of(epochs, key).sort_values("epoch")["lr"], errors="coerce").dropna()
    if lr.empty:
        return None
    return bool((lr < lr.iloc[0]).any())


def _compress_above_floor(
    traj: pd.DataFrame, tol: float, tol_y: float, z_crit: float
) -> tuple[bool, str]:
    """Fit then compress on the excess over the floor: the excess nHSIC(X;Z) peaks after the first
    and before the last recorded epoch, the final excess is below (1 - tol) x the peak's and below
    it by more than z_crit x their noise, and nHSIC(Y;Z) ends >= (1 - tol_y) x its maximum."""
    traj = traj.sort_values("epoch", kind="stable")
    excess, noise = excess_with_noise(traj)
    epochs = traj["epoch"].to_numpy(dtype=float)
    yz = traj["nhsic_yz"].to_numpy(dtype=float)
    peak = int(np.nanargmax(excess))
    drop = excess[peak] - excess[-1]
    need = z_crit * math.sqrt(noise[peak] ** 2 + noise[-1] ** 2)
    fit = 0 < peak < len(excess) - 1
    compressed = bool(excess[peak] > 0 and excess[-1] <= (1 - tol) * excess[peak] and drop > need)
    kept = bool(yz.max() > 0 and yz[-1] >= (1 - tol_y) * yz.max())
    where = "at the first recorded epoch" if peak == 0 else f"at epoch {epochs[peak]:g}"
    text = (
        f"nHSIC(X;Z) above the floor peaks {where} ({excess[peak]:.3g}) and ends at "
        f"{excess[-1]:.3g} at epoch {epochs[-1]:g} (drop {drop:.3g}; needs >= {100 * tol:.0f}% of "
        f"the peak and > {need:.2g} of noise, after a fitting phase); nHSIC(Y;Z) ends at "
        f"{100 * yz[-1] / yz.max():.0f}% of its max (needs >= {100 * (1 - tol_y):.0f}%)"
    )
    return fit and compressed and kept, text


def _claim_c3(
    e2e: pd.DataFrame,
    base: pd.DataFrame,
    epochs: pd.DataFrame | None,
    keys: tuple[tuple, tuple],
    names: tuple[str, str],
    tol: float,
    tol_y: float,
    min_epochs: int,
    z_crit: float,
    require_decay: bool,
) -> _Part:
    """C3 rule on E2E's last block, above the floor (:func:`_compress_above_floor`). Not measured
    with fewer than ``min_epochs`` recorded epochs, without floors, or (``require_decay``) when the
    learning rate never decayed: the late phase the claim is about has not been reached."""
    layer = _last_block_name(e2e)
    if layer is None:
        return _Part("not measured", f"{names[0]} has no block rows")
    traj = _finite(e2e[e2e["layer"] == layer], ["epoch", "nhsic_xz", "nhsic_yz"])
    points = traj["epoch"].astype(float)
    whole = int(points[points == points.round()].nunique())  # sub-epoch points do not count
    if whole < min_epochs:
        return _Part(
            "not measured",
            f"{names[0]} {layer}: {whole} recorded epochs, fewer than "
            f"{min_epochs}: too short to show a late compression",
        )
    decayed = _lr_decayed(epochs, keys[0])
    if require_decay and decayed is False:
        return _Part(
            "not measured",
            f"{names[0]}: the learning rate never decayed (no schedule), so the late phase has not "
            "settled; train with milestones (the study or paper preset)",
        )
    excess, _ = excess_with_noise(traj)
    if not np.isfinite(excess).all():
        return _Part("not measured", f"{names[0]} {layer}: needs the permutation floor (floor_xz)")
    holds, text = _compress_above_floor(traj, tol, tol_y, z_crit)
    peak = float(np.nanmax(excess))
    drop = (peak - float(excess[-1])) / peak if peak > 0 else math.nan
    text = f"{names[0]} last block {layer}: {text}"
    base_layer = _last_block_name(base)
    if base_layer is not None:
        other = _finite(base[base["layer"] == base_layer], ["epoch", "nhsic_xz", "nhsic_yz"])
        if len(other) >= 2 and np.isfinite(excess_with_noise(other)[0]).all():
            other_holds, _ = _compress_above_floor(other, tol, tol_y, z_crit)
            text += f"; for {names[1]}'s last block it {_decide(other_holds)}"
    return _Part(_decide(holds), text, drop, "excess drop from peak (fraction)")


def _final_test_acc(epochs: pd.DataFrame | None, key: tuple) -> float:
    """Test accuracy at the run's last recorded epoch in the epochs table (NaN when absent)."""
    if epochs is None:
        return math.nan
    run_ep = _rows_of(epochs, key)
    if run_ep.empty:  # the tables may disagree on run ids: fall back to method + head
        found = _match(epochs, key[1], key[2])
        run_ep = _rows_of(epochs, found[0]) if len(found) == 1 else run_ep
    run_ep = _finite(run_ep, ["epoch", "test_acc"])
    if run_ep.empty:
        return math.nan
    return float(run_ep.sort_values("epoch", kind="stable")["test_acc"].iloc[-1])


def _probe_profile(run_df: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Block probe test accuracies at the run's last probed epoch (sorted by depth), and the epoch."""
    if "probe_test_acc" not in run_df.columns:
        return run_df.iloc[0:0], math.nan
    probed = _finite(_blocks(run_df), ["epoch", "layer_index", "probe_test_acc"])
    if probed.empty:
        return probed, math.nan
    last = probed["epoch"].max()
    return probed[probed["epoch"] == last].sort_values("layer_index"), float(last)


def _test_size(table: pd.DataFrame | None, column: str | None) -> float:
    """How many images an accuracy was measured on (NaN when the table cannot say)."""
    if table is None:
        return math.nan
    if column is not None and column in table.columns:
        values = pd.to_numeric(table[column], errors="coerce").dropna().unique()
        return float(values[0]) if len(values) == 1 else math.nan
    if "dataset" in table.columns:
        from ibstudy.data import INFO

        names = [d for d in pd.unique(table["dataset"].dropna()) if d in INFO]
        return float(INFO[names[0]].test_size) if len(names) == 1 else math.nan
    return math.nan


def _binomial_noise(p: float, q: float, n: float) -> float:
    """Standard error of the difference of two accuracies p, q each measured on n images."""
    if not math.isfinite(n) or n <= 0:
        return 0.0
    return math.sqrt((p * (1 - p) + q * (1 - q)) / n)


def _claim_c4a(
    epochs: pd.DataFrame | None,
    keys: tuple[tuple, tuple],
    names: tuple[str, str],
    acc_margin: float,
    z_crit: float,
) -> _Part:
    """C4a rule: final test accuracy E2E - baseline > z_crit x binomial noise (the test set's size)
    + acc_margin; without a known test-set size only acc_margin is used (said in the evidence)."""
    ae, ab = _final_test_acc(epochs, keys[0]), _final_test_acc(epochs, keys[1])
    if not (math.isfinite(ae) and math.isfinite(ab)):
        return _Part("not measured", "final test accuracy: not recorded for both runs")
    n = _test_size(epochs, None)
    need = z_crit * _binomial_noise(ae, ab, n) + acc_margin
    size = f"{n:.0f} test images" if math.isfinite(n) else "test-set size unknown: no noise term"
    return _Part(
        _decide(ae - ab > need),
        f"final test accuracy {names[0]} {ae:.3f}, {names[1]} {ab:.3f}: difference "
        f"{ae - ab:+.3f}, needs > {need:.3f} ({size}, z {z_crit:g}, margin {acc_margin:g})",
        ae - ab,
        "test accuracy difference",
    )


def _claim_c4b(
    e2e: pd.DataFrame, base: pd.DataFrame, names: tuple[str, str], z_crit: float
) -> _Part:
    """C4b rule (probes, at each run's last probed epoch, same number of blocks): the last block's
    probe test accuracy E2E - baseline > z_crit x binomial noise (n = the evaluation subset), and on
    the first half of the blocks (mean) the baseline is not below E2E by more than that noise."""
    (pe, ee), (pb, eb) = _probe_profile(e2e), _probe_profile(base)
    if pe.empty or pb.empty or len(pe) != len(pb):
        return _Part("not measured", "linear probes: not measured (no probe values per block)")
    n = _test_size(e2e, "eval_size")
    n_early = max(1, len(pe) // 2)
    early_e = float(pe["probe_test_acc"].iloc[:n_early].mean())
    early_b = float(pb["probe_test_acc"].iloc[:n_early].mean())
    last_e, last_b = float(pe["probe_test_acc"].iloc[-1]), float(pb["probe_test_acc"].iloc[-1])
    need_last = z_crit * _binomial_noise(last_e, last_b, n)
    need_early = z_crit * _binomial_noise(early_e, early_b, n)
    ok = last_e - last_b > need_last and early_b >= early_e - need_early
    size = f"n = {n:.0f}" if math.isfinite(n) else "n unknown: no noise term"
    return _Part(
        _decide(ok),
        f"probe test accuracy (epoch {ee:g} vs {eb:g}, {size}): last block {names[0]} {last_e:.3f}, "
        f"{names[1]} {last_b:.3f} (rule: {names[0]} higher by > {need_last:.3f}); first {n_early} "
        f"block(s) {names[0]} {early_e:.3f}, {names[1]} {early_b:.3f} (rule: {names[1]} not lower "
        f"by > {need_early:.3f})",
        last_e - last_b,
        "last-block probe difference",
    )


def _baselines(df: pd.DataFrame, baseline: object) -> list[tuple[str, object]]:
    """(method, head) pairs to compare E2E with, from the ``baseline`` argument."""
    if baseline == "each":
        pairs = [(k[1], k[2]) for k in _runs(df) if k[1] != "e2e"]
        return list(dict.fromkeys(pairs))
    if (
        not isinstance(baseline, tuple | list)
        or len(baseline) != 2
        or not isinstance(baseline[0], str)
        or baseline[0] == "e2e"
    ):
        raise ValueError(
            "baseline must be 'each' or a (method, head) pair with a non-e2e method, e.g. "
            f"('layerwise', 'linear'); got {baseline!r}"
        )
    return [(baseline[0], baseline[1])]


def claims_table(
    layers: pd.DataFrame,
    epochs: pd.DataFrame | None,
    num_classes: int | None = None,
    *,
    scale: str,
    baseline: tuple[str, str | None] | str = ("layerwise", "linear"),
    margin: float = 0.05,
    tol: float = 0.05,
    tol_y: float = 0.10,
    acc_margin: float = 0.0,
    min_epochs: int = 3,
    z_crit: float = Z_CRIT,
    min_compress_epochs: int = 10,
    require_decay: bool = True,
) -> pd.DataFrame:
    """The claims C1-C4 with their measured evidence and a plain verdict, comparing E2E to a baseline.

    ``baseline`` is a (method, head) pair (head None = any single run of that method), or ``"each"``
    for one block of rows per layer-wise variant present. Rules (every claim reads "not measured" when
    a needed run, column or epoch is absent); ``z_crit`` is how many noise units a difference needs:
    C1: depth by depth above the permutation floor at the last epoch (:func:`_claim_c1`): E2E keeps
    more input information than the baseline, beyond noise, at a strict majority of the deeper half
    of the blocks and less at none; the raw last/first-block ratios are shown, not used.
    C2: on the excess over the floor, the spread across blocks (std) of three trajectory statistics
    (epoch of peak, final/peak, final nHSIC(Y;Z)); holds if E2E's spread exceeds the baseline's by
    more than z_crit x noise (a simulation from each point's noise) and by > margin x the baseline's
    on a strict majority of them, and falls short beyond noise on none (:func:`_claim_c2`).
    C3: E2E's last block fits then compresses *above the floor*: the excess nHSIC(X;Z) peaks after
    the first and before the last recorded epoch and falls by >= tol of the peak and by more than
    z_crit x noise, while nHSIC(Y;Z) ends >= (1 - tol_y) x its max; not measured with fewer than
    ``min_compress_epochs`` recorded epochs, or, with ``require_decay``, when the learning rate
    never decayed (the baseline's result is reported in the evidence only).
    C4a: final test accuracy E2E - baseline > z_crit x binomial noise + acc_margin.
    C4b: linear probes: the last block E2E above the baseline beyond binomial noise, and the first
    half of the blocks not below E2E beyond it (at each run's last probed epoch).
    ``measured`` says "fully", "partly" or "no" (claims with several parts); ``stat`` is the one
    number each verdict turns on (``stat_name`` says which: a mean z, a drop, a difference).
    ``layers`` may be any measurement table of one estimator (:func:`ibstudy.measure.measure`); a
    table mixing estimators is refused, and ``num_classes=None`` reads the table's own column.
    Columns: claim, statement, evidence, verdict, measured, stat, stat_name, baseline, scale.
    """
    df = check_one_estimator(_check_table(layers, LAYER_REQUIRED, "layers"))
    ep = (
        None
        if epochs is None
        else _check_table(epochs, ("run", "method", "head", "epoch", "test_acc"), "epochs")
    )
    num_classes = num_classes_of(df, num_classes)
    if not isinstance(scale, str):
        raise ValueError(f"scale must be a str describing the run's scale, got {scale!r}")
    margin = _check_fraction(margin, "margin")
    tol = _check_fraction(tol, "tol")
    tol_y = _check_fraction(tol_y, "tol_y")
    acc_margin = _check_fraction(acc_margin, "acc_margin")
    min_epochs = _check_min_epochs(min_epochs)
    z_crit = check_real("z_crit", z_crit, minimum=0.0)
    min_compress_epochs = check_int("min_compress_epochs", min_compress_epochs, minimum=2)
    pairs = _baselines(df, baseline)
    e2e_keys = _match(df, "e2e")
    if len(e2e_keys) > 1:
        raise ValueError(f"{len(e2e_keys)} E2E runs in layers: {e2e_keys}; pass one run per method")

    rows = []
    for method, head in pairs or [("layerwise", "linear")]:
        base_keys = _match(df, method, head)
        label = method if head is None else f"{method}/{head}"
        if len(base_keys) > 1:
            raise ValueError(
                f"{len(base_keys)} runs in layers match baseline {label}: {base_keys}; "
                "pass baseline=(method, head) naming one"
            )
        if not e2e_keys or not base_keys:
            absent = "e2e" if not e2e_keys else label
            why = f"no {absent} run in the tables (runs: {[_label(k) for k in _runs(df)]})"
            claims = {c: [_Part("not measured", why)] for c in STATEMENTS}
        else:
            keys = (e2e_keys[0], base_keys[0])
            names = (_label(keys[0]), _label(keys[1]))
            e2e, base = _rows_of(df, keys[0]), _rows_of(df, keys[1])
            claims = {
                "C1": [_claim_c1(e2e, base, names, z_crit)],
                "C2": [_claim_c2(e2e, base, names, num_classes, margin, min_epochs, z_crit)],
                "C3": [
                    _claim_c3(
                        e2e,
                        base,
                        ep,
                        keys,
                        names,
                        tol,
                        tol_y,
                        min_compress_epochs,
                        z_crit,
                        require_decay,
                    )
                ],
                "C4a": [_claim_c4a(ep, keys, names, acc_margin, z_crit)],
                "C4b": [_claim_c4b(e2e, base, names, z_crit)],
            }
            label = names[1]
        for claim, parts in claims.items():
            verdict, how, evidence = _combine(parts)
            measured = [p for p in parts if p.verdict != "not measured"]
            rows.append(
                {
                    "claim": claim,
                    "statement": STATEMENTS[claim],
                    "evidence": evidence,
                    "verdict": verdict,
                    "measured": how,
                    "stat": measured[0].stat if measured else math.nan,
                    "stat_name": measured[0].stat_name if measured else "",
                    "baseline": label,
                    "scale": scale,
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# several seeds
# ----------------------------------------------------------------------------------------------

_SUMMARY_VALUES = ("final_test_acc", "best_test_acc", "final_train_acc", "last_head_test_acc")


def accuracy_summary(epochs: pd.DataFrame, layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method and head: the number of seeds and mean, std (ddof=1) of the accuracies of
    :func:`accuracy_table` (final and best test, final train, the last block's own head)."""
    per_run = accuracy_table(epochs, layers)
    grouped = per_run.groupby(["method", "head"], sort=False, dropna=False)
    rows = []
    for (method, head), group in grouped:
        row: dict[str, object] = {"method": method, "head": head, "n_seeds": len(group)}
        for col in _SUMMARY_VALUES:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            row[f"{col}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        mean, std = row["final_test_acc_mean"], row["final_test_acc_std"]
        row["final_test_acc"] = (
            f"{mean:.3f}" + (f" +- {std:.3f}" if math.isfinite(std) else "")
            if math.isfinite(mean)
            else "n/a"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def claims_per_seed(
    layers: pd.DataFrame,
    epochs: pd.DataFrame | None,
    num_classes: int | None = None,
    *,
    scale: str,
    baseline: tuple[str, str | None] = ("layerwise", "linear"),
    **rules: float,
) -> pd.DataFrame:
    """:func:`claims_table` for every seed that both E2E and the baseline ran, E2E seed s against
    baseline seed s, summarized per claim as "holds in k of n seeds" (n = seeds where measured).

    Columns: claim, statement, summary, holds, measured_seeds, stat_mean, stat_std,
    evidence_summary (the verdict's number as mean +- std over the measured seeds), seeds, verdicts
    (per seed), evidence (per seed), baseline, scale. The rules and thresholds are claims_table's (``rules`` passes them).
    """
    df = check_one_estimator(_check_table(layers, LAYER_REQUIRED, "layers"))
    num_classes = num_classes_of(df, num_classes)
    method, head = baseline
    seeds = sorted(
        set(seeds_of(df[df["method"] == "e2e"]))
        & set(seeds_of(df[(df["method"] == method) & ((df["head"] == head) if head else True)]))
    )
    if not seeds:
        raise ValueError(
            f"no seed has both an e2e run and a {method}/{head} run; seeds by method: "
            f"{ {m: seeds_of(g) for m, g in df.groupby('method')} }"
        )
    per_seed = []
    for seed in seeds:
        lay = df[df["seed"] == seed] if "seed" in df.columns else df
        ep = epochs
        if epochs is not None and "seed" in epochs.columns:
            ep = epochs[epochs["seed"] == seed]
        table = claims_table(lay, ep, num_classes, scale=scale, baseline=baseline, **rules)
        per_seed.append(table.assign(seed=seed))
    both = pd.concat(per_seed, ignore_index=True)
    rows = []
    for claim, group in both.groupby("claim", sort=True):
        measured = group[group["verdict"] != "not measured"]
        k = int((measured["verdict"] == "holds").sum())
        n = len(measured)
        summary = f"holds in {k} of {n} seeds" if n else "not measured"
        if 0 < n < len(group):
            summary += f" (not measured in {len(group) - n})"
        stats = pd.to_numeric(measured["stat"], errors="coerce").dropna()
        stat_mean = float(stats.mean()) if len(stats) else math.nan
        stat_std = float(stats.std(ddof=1)) if len(stats) > 1 else math.nan
        name = next((t for t in measured["stat_name"] if t), "")
        pooled = "n/a"
        if len(stats):
            pooled = f"{name}: {stat_mean:.3g}" + (f" +- {stat_std:.2g}" if len(stats) > 1 else "")
            pooled += f" (n={len(stats)})"
        rows.append(
            {
                "claim": claim,
                "statement": STATEMENTS[claim],
                "summary": summary,
                "holds": k,
                "measured_seeds": n,
                "stat_mean": stat_mean,
                "stat_std": stat_std,
                "evidence_summary": pooled,
                "seeds": len(group),
                "verdicts": "; ".join(
                    f"seed {s}: {v}" for s, v in zip(group["seed"], group["verdict"], strict=True)
                ),
                "evidence": " | ".join(
                    f"seed {s}: {e}" for s, e in zip(group["seed"], group["evidence"], strict=True)
                ),
                "baseline": group["baseline"].iloc[0],
                "scale": scale,
            }
        )
    return pd.DataFrame(rows)
