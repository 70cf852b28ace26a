"""The tidy schema of the study's tables and the selection helpers that claims and plots share.

Three tables join training and analysis (docs/method.md §10):

- ``epochs``: one row per run x record point (losses, accuracies, learning rate, time); a record
  point is a whole epoch or, with ``record_fractions``, a fraction of the first epoch: ``epoch`` is
  then fractional (optimizer steps so far / steps per epoch) and ``step`` the global optimizer step;
- a *measurement* table: one row per run x epoch x layer (nHSIC values, their spread over chunks, the
  permutation floor and its spread) plus the estimator's settings as columns, so a table never
  silently mixes estimators;
- ``layers``: the measurement recorded during training, plus probe and auxiliary-head accuracies.

Every table carries ``dataset`` and ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "EPOCH_COLUMNS",
    "LAYER_COLUMNS",
    "LOGITS",
    "as_list",
    "MEASURE_COLUMNS",
    "PLANE_COLUMNS",
    "RUN_KEYS",
    "SETTING_COLUMNS",
    "blocks",
    "check_one_estimator",
    "check_table",
    "finite",
    "last_epoch",
    "match_runs",
    "num_classes_of",
    "rows_of",
    "run_keys",
    "seed_mean",
    "seeds_of",
    "select",
]

LOGITS = "logits"
RUN_KEYS: tuple[str, ...] = ("run", "method", "head")
_RUN_COLUMNS = ["run", "method", "head", "seed", "dataset", "num_classes"]
EPOCH_COLUMNS: list[str] = [
    *_RUN_COLUMNS, "epoch", "step", "train_loss", "train_acc", "test_acc", "lr", "seconds",
]  # fmt: skip
#: the estimator settings every measurement table carries (MeasureConfig.columns())
SETTING_COLUMNS: list[str] = [
    "eval_size", "chunk_size", "bandwidth", "sigma", "eps", "floor_perms", "estimator",
    "floor_seed", "measure_id",
]  # fmt: skip
#: the measured values per run x epoch x layer
PLANE_COLUMNS: list[str] = [
    "nhsic_xz", "nhsic_yz", "nhsic_xz_std", "nhsic_yz_std",
    "floor_xz", "floor_yz", "floor_xz_std", "floor_yz_std",
]  # fmt: skip
MEASURE_COLUMNS: list[str] = [
    *_RUN_COLUMNS, "epoch", "step", "layer", "layer_index", *PLANE_COLUMNS, *SETTING_COLUMNS,
]  # fmt: skip
LAYER_COLUMNS: list[str] = [
    *MEASURE_COLUMNS, "probe_train_acc", "probe_test_acc", "head_test_acc",
]  # fmt: skip


def check_table(table: object, required: Iterable[str], name: str) -> pd.DataFrame:
    """Raise ValueError unless ``table`` is a non-empty DataFrame holding every required column."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{name} table lacks required column(s) {missing}; it has {list(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{name} table is empty")
    return table


def check_one_estimator(table: pd.DataFrame, name: str = "layers") -> pd.DataFrame:
    """Raise ValueError when a measurement table mixes estimators (several ``measure_id`` values)."""
    if "measure_id" in table.columns:
        ids = sorted(str(v) for v in pd.unique(table["measure_id"].dropna()))
        if len(ids) > 1:
            raise ValueError(
                f"{name} table mixes {len(ids)} estimators (measure_id {ids}); nHSIC values are "
                "comparable only under one estimator: select one measure_id first"
            )
    return table


def num_classes_of(table: pd.DataFrame, given: object = None) -> int:
    """The number of classes: ``given`` if not None, else the table's single ``num_classes`` value."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {given!r}")
        return int(given)
    if "num_classes" not in table.columns:
        raise ValueError(
            "num_classes: the table has no 'num_classes' column; pass num_classes= explicitly"
        )
    values = sorted(int(v) for v in pd.unique(table["num_classes"].dropna()))
    if len(values) != 1:
        raise ValueError(
            f"num_classes: the table holds {values or 'no'} class counts; select one dataset first"
        )
    return values[0]


def finite(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows whose ``columns`` are all finite numbers."""
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return df[np.isfinite(values).all(axis=1)]


def last_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last epoch (the largest ``epoch`` the run recorded), in table order."""
    check_table(table, ["run", "epoch"], "table")
    return table[table["epoch"] == table.groupby("run")["epoch"].transform("max")].copy()


def run_keys(df: pd.DataFrame) -> list[tuple[object, object, object]]:
    """The (run, method, head) triples of a table, in order of first appearance."""
    keys = df[list(RUN_KEYS)].drop_duplicates()
    return [tuple(k) for k in keys.itertuples(index=False, name=None)]


def _same(a: object, b: object) -> bool:
    """Equality that treats two missing values as equal."""
    if pd.isna(a) and pd.isna(b):
        return True
    return bool(a == b)


def match_runs(
    df: pd.DataFrame, method: str, head: object = None, run: object = None
) -> list[tuple]:
    """The (run, method, head) triples matching ``method`` and, when given, ``head``/``run``."""
    found = []
    for key in run_keys(df):
        if key[1] != method:
            continue
        if head is not None and not _same(key[2], head):
            continue
        if run is not None and key[0] != run:
            continue
        found.append(key)
    return found


def rows_of(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """Rows of one run (matched on run, method and head)."""
    mask = (df["run"] == key[0]) & (df["method"] == key[1])
    mask &= df["head"].isna() if pd.isna(key[2]) else df["head"] == key[2]
    return df[mask]


def blocks(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the blocks (every layer but the logits)."""
    return df[df["layer"] != LOGITS]


def as_list(values: object) -> list:
    """A scalar or an iterable of values as a list (strings count as scalars)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        return [values]
    return list(values)


def select(df: pd.DataFrame, column: str, wanted: object, param: str) -> pd.DataFrame:
    """Rows whose ``column`` is in ``wanted`` (None keeps all); unknown values raise ValueError."""
    if wanted is None:
        return df
    wanted = as_list(wanted)
    if not wanted:
        raise ValueError(f"{param} must not be empty")
    if column not in df.columns:
        raise ValueError(f"{param}={wanted!r} given but the table has no column {column!r}")
    available = list(pd.unique(df[column]))
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ValueError(
            f"{param}: unknown value(s) {unknown}; available: {sorted(available, key=str)}"
        )
    return df[df[column].isin(wanted)]


def seeds_of(table: pd.DataFrame) -> list[int]:
    """The seeds a table holds (``[0]``-like single entry for tables without a ``seed`` column)."""
    if "seed" not in table.columns:
        return [0]
    return sorted(int(s) for s in pd.unique(table["seed"].dropna()))


def seed_mean(
    table: pd.DataFrame,
    values: Sequence[str],
    keys: Sequence[str] = ("method", "head", "epoch", "layer", "layer_index"),
) -> pd.DataFrame:
    """Mean of ``values`` over seeds per ``keys``, with ``<value>_seed_std`` (ddof=1; NaN for one
    seed) and ``n_seeds``; other columns constant within a group are kept, ``run`` names the group."""
    keys = [k for k in keys if k in table.columns]
    check_table(table, [*keys, *values], "table")
    numeric = table.copy()
    for col in values:
        numeric[col] = pd.to_numeric(numeric[col], errors="coerce")
    grouped = numeric.groupby(keys, sort=False, dropna=False)
    out = grouped[list(values)].mean()
    stds = grouped[list(values)].std(ddof=1).add_suffix("_seed_std")
    count = grouped.size().rename("n_seeds")
    out = pd.concat([out, stds, count], axis=1).reset_index()
    constant = [
        c for c in table.columns
        if c not in (*keys, *values, "run", "seed")
        and (grouped[c].nunique(dropna=False) <= 1).all()
    ]  # fmt: skip
    if constant:
        out = out.merge(grouped[constant].first().reset_index(), on=keys, how="left")
    label = out["method"].astype(str)
    if "head" in out.columns:
        label = label + "/" + out["head"].astype(str)
    out.insert(0, "run", label + " (seed mean)")
    return out
