"""Descriptions of runs from the tidy tables: trajectory shapes, depth profiles, accuracies, excess.

Pure functions, pandas in and pandas (or a dict) out; nothing is trained, plotted or decided here:
the claims' verdicts live in :mod:`ibstudy.claims` (docs/method.md §12). Conventions:

- A *run* is identified by the ``run`` column (with its ``method`` and ``head``); tables may hold many.
- *Blocks* are the rows whose ``layer`` is not ``"logits"``; the *first block* has the smallest
  ``layer_index``, the *last block* the largest. The logits row is the classifier output.
- The *last epoch* of a run is the largest ``epoch`` it recorded.
- Rows with a non-finite nHSIC value are ignored.
- nHSIC values are compared only within one table, i.e. at equal m and C (docs/method.md §3).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ibstudy.checks import check_int, check_real
from ibstudy.tables import LOGITS, RUN_KEYS, check_one_estimator, num_classes_of
from ibstudy.tables import blocks as _blocks
from ibstudy.tables import check_table as _check_table
from ibstudy.tables import finite as _finite
from ibstudy.tables import match_runs as _match
from ibstudy.tables import rows_of as _rows_of
from ibstudy.tables import run_keys as _runs

__all__ = [
    "SHAPE_STATS",
    "accuracy_summary",
    "accuracy_table",
    "depth_profile",
    "excess",
    "excess_with_noise",
    "fit_then_compress",
    "shape_spread",
    "trajectory_shapes",
]

LAYER_REQUIRED = ("run", "method", "head", "epoch", "layer", "layer_index", "nhsic_xz", "nhsic_yz")
EPOCH_REQUIRED = ("run", "method", "head", "epoch", "train_acc", "test_acc")

#: shape statistics of one trajectory (descriptions; no verdict turns on them)
SHAPE_STATS = ("peak_frac_xz", "final_over_peak_xz", "final_yz_norm")

# ----------------------------------------------------------------------------------------------
# validation and selection helpers
# ----------------------------------------------------------------------------------------------


def _check_fraction(value: object, name: str) -> float:
    """``value`` as a float in [0, 1), or ValueError."""
    return check_real(name, value, minimum=0.0, maximum=1.0, include_maximum=False)


def _check_min_epochs(value: object) -> int:
    """``min_epochs`` as an int >= 2, or ValueError."""
    return check_int("min_epochs", value, minimum=2)


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
    """A description of one run's layer: does its raw nHSIC(X;Z) rise, then fall, while nHSIC(Y;Z)
    stays high? Not claim C3's verdict (that is a contrast across seeds, :mod:`ibstudy.claims`):
    this reads one noisy trajectory with a peak rule, for notebooks that show a single run.

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
# excess over the permutation floor
# ----------------------------------------------------------------------------------------------


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


def excess(rows: pd.DataFrame, side: str = "xz") -> np.ndarray:
    """Per row: nHSIC(X;Z) (``side="xz"``) or nHSIC(Y;Z) (``"yz"``) minus its permutation floor
    (NaN where the table has no floor)."""
    if side not in ("xz", "yz"):
        raise ValueError(f"side must be 'xz' or 'yz', got {side!r}")
    return _column(rows, f"nhsic_{side}") - _column(rows, f"floor_{side}")


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
