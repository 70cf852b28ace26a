"""Training methods side by side against E2E (notebook 08, docs/method.md §12).

Every run is named by its *variant* (:func:`variant_label`: method, head, local loss, regularizer),
and :func:`method_comparison` sets each variant against the E2E run of the same seed with the claims'
own rules (C1: does E2E keep more input information at depth than the variant? C2: do E2E's layers
differ more in role?) and one distance, ``role_gap``: how far the variant's depth profile above the
floor is from E2E's at the last epoch,

    role_gap = mean over blocks of ( |xz_v - xz_E2E| / max(|xz_E2E|) + |yz_v - yz_E2E| / max(|yz_E2E|) ) / 2

with xz, yz the excess of nHSIC(X;Z), nHSIC(Y;Z) over their permutation floors (0 = the same layer
roles as E2E). The closing ranking orders the variants by final test accuracy and by role_gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ibstudy.claims import claims_table, excess_with_noise
from ibstudy.config import TrainConfig
from ibstudy.tables import blocks as block_rows
from ibstudy.tables import check_table

__all__ = ["label_tables", "method_comparison", "role_gap", "variant_label"]


def variant_label(cfg: TrainConfig) -> str:
    """A short name for what a config trains: ``layerwise/linear supcon``, ``... +nHSIC global 0.01``."""
    label = cfg.method if cfg.head == "none" else f"{cfg.method}/{cfg.head}"
    if cfg.local_loss != "cross_entropy":
        label += f" {cfg.local_loss}"
    if cfg.nhsic_reg != "none":
        label += f" +nHSIC {cfg.nhsic_reg} {cfg.nhsic_lambda:g}"
    return label


def label_tables(
    tables: Iterable[pd.DataFrame], configs: Iterable[TrainConfig]
) -> list[pd.DataFrame]:
    """Copies of the tables with a ``variant`` column from the configs that trained their runs."""
    labels = {cfg.run_id(): variant_label(cfg) for cfg in configs}
    out = []
    for table in tables:
        missing = sorted(set(table["run"]) - set(labels))
        if missing:
            raise ValueError(f"runs {missing[:3]} have no config in configs")
        out.append(table.assign(variant=table["run"].map(labels)))
    return out


def _last_blocks(layers: pd.DataFrame) -> pd.DataFrame:
    blocks = block_rows(layers)
    return blocks[blocks["epoch"] == blocks["epoch"].max()].sort_values("layer_index")


def role_gap(variant: pd.DataFrame, reference: pd.DataFrame) -> float:
    """The module docstring's distance between two runs' last-epoch depth profiles above the floor."""
    a, b = _last_blocks(variant), _last_blocks(reference)
    if len(a) != len(b) or a.empty:
        return math.nan
    parts = []
    for side in ("xz", "yz"):
        ea, _ = excess_with_noise(a, side)
        eb, _ = excess_with_noise(b, side)
        scale = float(np.max(np.abs(eb)))
        if not (np.isfinite(ea).all() and np.isfinite(eb).all()) or scale == 0:
            return math.nan
        parts.append(np.abs(ea - eb) / scale)
    return float(np.mean((parts[0] + parts[1]) / 2))


def method_comparison(
    epochs: pd.DataFrame, layers: pd.DataFrame, *, scale: str, **rules: float
) -> pd.DataFrame:
    """Per variant and seed (tables with a ``variant`` column, one E2E run per seed): final test
    accuracy, role_gap, and the C1 / C2 verdicts and numbers of E2E against the variant; then per
    variant the means over seeds and the two ranks (1 = most accurate / most E2E-like roles)."""
    check_table(epochs, ("run", "variant", "method", "seed", "epoch", "test_acc"), "epochs")
    check_table(layers, ("run", "variant", "method", "seed", "epoch", "layer_index"), "layers")
    rows = []
    for seed, lay in layers.groupby("seed", sort=True):
        ep = epochs[epochs["seed"] == seed]
        e2e = lay[lay["variant"] == "e2e"]
        if e2e["run"].nunique() != 1:
            raise ValueError(
                f"seed {seed}: needs exactly one 'e2e' run, found {e2e['run'].nunique()}"
            )
        for variant, vlay in lay.groupby("variant", sort=False):
            vep = ep[ep["variant"] == variant].sort_values("epoch")
            row: dict[str, object] = {
                "variant": variant, "seed": seed,
                "final_test_acc": float(vep["test_acc"].iloc[-1]),
                "role_gap": role_gap(vlay, e2e),
            }  # fmt: skip
            if variant != "e2e":
                pair = pd.concat([e2e, vlay.assign(method="other", head="none")])
                pair_ep = pd.concat(
                    [ep[ep["variant"] == "e2e"], vep.assign(method="other", head="none")]
                )
                table = claims_table(
                    pair, pair_ep, scale=scale, baseline=("other", None), **rules
                ).set_index("claim")
                for claim in ("C1", "C2"):
                    row[f"{claim}_verdict"] = table.loc[claim, "verdict"]
                    row[f"{claim}_stat"] = table.loc[claim, "stat"]
            rows.append(row)
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby("variant", sort=False).agg(
        n_seeds=("seed", "nunique"),
        final_test_acc=("final_test_acc", "mean"),
        role_gap=("role_gap", "mean"),
        **{
            f"{c}_{k}": (f"{c}_{k}", "mean" if k == "stat" else _holds)
            for c in ("C1", "C2")
            for k in ("stat", "verdict")
            if f"{c}_{k}" in per_seed.columns
        },
    )
    summary["rank_accuracy"] = summary["final_test_acc"].rank(ascending=False, method="min")
    summary["rank_roles"] = summary["role_gap"].rank(ascending=True, method="min")
    return summary.reset_index()


def _holds(verdicts: pd.Series) -> str:
    """``k of n`` seeds where the verdict is "holds" (n = seeds where it was measured)."""
    measured = [v for v in verdicts.dropna() if v != "not measured"]
    if not measured:
        return "not measured"
    return f"{sum(v == 'holds' for v in measured)} of {len(measured)}"
