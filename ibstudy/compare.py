"""Training methods side by side against E2E (notebook 08, docs/method.md §12).

Every run is named by its *variant* (:func:`variant_label`: method, head, local loss, regularizer),
and :func:`method_comparison` sets E2E against each variant with the registered claims' own contrasts
(:data:`ibstudy.claims.CLAIMS`: C1, does E2E's input information fall less steeply with depth? C2,
do E2E's layers differ more in role?) on arms selected by their ``variant`` label, with a 95 %
interval when the variant has two or more seeds, and one distance, ``role_gap``: how far the
variant's depth profile above the floor is from E2E's at the last epoch,

    role_gap = mean over blocks of ( |xz_v - xz_E2E| / max(|xz_E2E|) + |yz_v - yz_E2E| / max(|yz_E2E|) ) / 2

with xz, yz the excess of nHSIC(X;Z), nHSIC(Y;Z) over their permutation floors (0 = the same layer
roles as E2E). The closing ranking orders the variants by final test accuracy and by role_gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ibstudy.claims import CLAIMS, Arm, assess
from ibstudy.config import TrainConfig
from ibstudy.describe import excess
from ibstudy.stability import with_stability
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
        ea, eb = excess(a, side), excess(b, side)
        scale = float(np.max(np.abs(eb)))
        if not (np.isfinite(ea).all() and np.isfinite(eb).all()) or scale == 0:
            return math.nan
        parts.append(np.abs(ea - eb) / scale)
    return float(np.mean((parts[0] + parts[1]) / 2))


#: the claims whose contrasts rank the variants against E2E
COMPARED = ("C1", "C2")


def method_comparison(epochs: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per variant (tables with a ``variant`` column, one run per variant and seed, an ``e2e``
    variant present for every seed): mean final test accuracy and role_gap over seeds, and for C1
    and C2 the contrast E2E - variant (its per-seed mean; with >= 2 seeds its 95 % interval and the
    verdict, Holm over the two claims; "not measured (1 seed)" otherwise; ``<claim>_fragile``:
    whether leaving one seed out flips the verdict, NA below 3 seeds), and the two ranks
    (1 = most accurate / most E2E-like roles)."""
    check_table(epochs, ("run", "variant", "method", "seed", "epoch", "test_acc"), "epochs")
    check_table(layers, ("run", "variant", "method", "seed", "epoch", "layer_index"), "layers")
    if "e2e" not in set(layers["variant"]):
        raise ValueError(f"needs an 'e2e' variant; variants: {sorted(set(layers['variant']))}")
    reference = Arm.select(layers, epochs, name="e2e", variant="e2e")
    rows = []
    for variant in pd.unique(layers["variant"]):
        arm = Arm.select(layers, epochs, name=str(variant), variant=variant)
        accuracy, gaps = [], []
        for seed in arm.seeds:
            run = arm.run(seed)
            final = run.epochs.sort_values("epoch") if run.epochs is not None else None
            accuracy.append(float(final["test_acc"].iloc[-1]) if final is not None else math.nan)
            gaps.append(role_gap(run.layers, reference.run(seed).layers))
        row: dict[str, object] = {
            "variant": variant, "n_seeds": len(arm.seeds),
            "final_test_acc": float(np.mean(accuracy)), "role_gap": float(np.mean(gaps)),
        }  # fmt: skip
        if variant != "e2e":
            judged = None
            if len(arm.seeds) >= 2:
                table = assess(reference, arm, COMPARED)
                judged = with_stability(table, reference, arm, COMPARED).set_index("claim")
            for claim in COMPARED:
                per_seed = CLAIMS[claim].per_seed(reference, arm)
                row[f"{claim}_effect"] = float(per_seed["difference"].mean())
                if judged is None:
                    row[f"{claim}_ci_low"] = row[f"{claim}_ci_high"] = math.nan
                    row[f"{claim}_verdict"] = f"not measured ({len(arm.seeds)} seed)"
                    row[f"{claim}_fragile"] = pd.NA
                else:
                    for key in ("ci_low", "ci_high", "verdict", "fragile"):
                        row[f"{claim}_{key}"] = judged.loc[claim, key]
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["rank_accuracy"] = summary["final_test_acc"].rank(ascending=False, method="min")
    summary["rank_roles"] = summary["role_gap"].rank(ascending=True, method="min")
    return summary
