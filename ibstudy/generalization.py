"""C3's second half across runs: does middle-layer compression go with better generalization?

The paper's reading (docs/method.md §6) is that E2E's middle layers compress input information late in
training and that this goes with better generalization. One run cannot test that; a study can, by
setting each run's middle-layer compression against its train-test accuracy gap, over every method,
head and seed it trained. The rule (:func:`claim_c3b`):

- a run's *middle-layer compression* is the mean, over its middle blocks (every block but the first
  and the last), of (peak - final) / peak of nHSIC(X;Z) *above the permutation floor* over its
  recorded points (0 = no compression, 1 = back to the floor);
- its *gap* is the final epoch's train accuracy minus its test accuracy (the train accuracy is the
  running mean over the last epoch's batches, as the trainer records it);
- the claim holds when Spearman's rank correlation between the two is negative and a one-sided
  permutation test gives p < ``alpha`` over at least ``min_runs`` runs; "not measured" with fewer
  runs, blocks or floors.

Runs of different methods differ in both quantities for reasons of their own, so a pooled
correlation can come from the method alone: the evidence also gives the rank correlation within
each method that has three or more runs (reported, not used).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ibstudy.checks import check_int, check_real
from ibstudy.claims import excess_with_noise
from ibstudy.tables import RUN_KEYS, check_one_estimator, check_table, rows_of, run_keys
from ibstudy.tables import blocks as block_rows

__all__ = ["STATEMENT", "claim_c3b", "compression_vs_gap", "spearman"]

STATEMENT = (
    "middle layers that compress more (late fall of nHSIC(X;Z) above the floor) generalize better "
    "(smaller train-test accuracy gap), across methods, heads and seeds"
)
#: random permutations of the test (fixed generator seed: the p-value is repeatable)
PERMUTATIONS = 20_000


def compression_vs_gap(layers: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``middle_compression`` (see the module docstring), ``gap`` = final train - test
    accuracy, ``n_middle`` blocks used; runs with fewer than 3 blocks or no floor get NaN."""
    lay = check_one_estimator(
        check_table(layers, (*RUN_KEYS, "epoch", "layer", "layer_index", "nhsic_xz"), "layers")
    )
    ep = check_table(epochs, (*RUN_KEYS, "epoch", "train_acc", "test_acc"), "epochs")
    rows = []
    for key in run_keys(ep):
        run_ep = rows_of(ep, key).sort_values("epoch", kind="stable")
        final = run_ep.iloc[-1]
        blocks = block_rows(rows_of(lay, key))
        indices = sorted(blocks["layer_index"].astype(int).unique())
        middle, drops = indices[1:-1], []
        for index in middle:
            traj = blocks[blocks["layer_index"] == index].sort_values("epoch", kind="stable")
            excess, _ = excess_with_noise(traj)
            peak = float(np.max(excess)) if len(excess) else math.nan
            ok = np.isfinite(excess).all() and peak > 0
            drops.append((peak - float(excess[-1])) / peak if ok else math.nan)
        rows.append(
            {
                **dict(zip(RUN_KEYS, key, strict=True)),
                "seed": final.get("seed", math.nan),
                "middle_compression": float(np.mean(drops)) if middle else math.nan,
                "n_middle": len(middle),
                "gap": float(final["train_acc"]) - float(final["test_acc"]),
                "final_test_acc": float(final["test_acc"]),
            }
        )
    return pd.DataFrame(rows)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx = pd.Series(x).rank().to_numpy(dtype=float)
    ry = pd.Series(y).rank().to_numpy(dtype=float)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _p_negative(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """One-sided permutation p-value of a rank correlation <= ``rho`` (add-one estimate)."""
    rng = np.random.default_rng(0)
    rx = pd.Series(x).rank().to_numpy(dtype=float)
    ry = pd.Series(y).rank().to_numpy(dtype=float)
    perms = np.argsort(rng.random((PERMUTATIONS, len(ry))), axis=1)
    shuffled = ry[perms]
    rx_c, sh_c = rx - rx.mean(), shuffled - shuffled.mean(axis=1, keepdims=True)
    rhos = (sh_c @ rx_c) / (np.linalg.norm(rx_c) * np.linalg.norm(sh_c, axis=1))
    return float((1 + np.sum(rhos <= rho + 1e-12)) / (1 + PERMUTATIONS))


def claim_c3b(
    layers: pd.DataFrame,
    epochs: pd.DataFrame,
    *,
    scale: str,
    min_runs: int = 5,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The C3b verdict as one row in :func:`ibstudy.claims.claims_table`'s columns (baseline "all
    runs"): negative Spearman correlation of middle-layer compression with the gap at p < alpha."""
    min_runs = check_int("min_runs", min_runs, minimum=3)
    alpha = check_real("alpha", alpha, minimum=0.0, maximum=1.0, include_minimum=False)
    if not isinstance(scale, str):
        raise ValueError(f"scale must be a str describing the runs' scale, got {scale!r}")
    table = compression_vs_gap(layers, epochs)
    usable = table.dropna(subset=["middle_compression", "gap"])
    verdict, stat = "not measured", math.nan
    if len(usable) < min_runs:
        evidence = (
            f"{len(usable)} run(s) with >= 3 blocks, floors and accuracies; the rule needs >= "
            f"{min_runs}"
        )
    else:
        x = usable["middle_compression"].to_numpy(dtype=float)
        y = usable["gap"].to_numpy(dtype=float)
        stat = spearman(x, y)
        if not math.isfinite(stat):
            evidence = "middle-layer compression or gap is the same for every run: no ranking"
        else:
            p = _p_negative(x, y, stat)
            verdict = "holds" if stat < 0 and p < alpha else "does not hold"
            per_method = []
            for method, group in usable.groupby(["method", "head"], sort=False):
                label = "/".join(str(m) for m in method if m != "none")
                within = spearman(group["middle_compression"].to_numpy(), group["gap"].to_numpy())
                per_method.append(
                    f"{label}: compression {group['middle_compression'].mean():.2f}, gap "
                    f"{group['gap'].mean():+.3f}"
                    + (f", rho {within:.2f}" if len(group) >= 3 and math.isfinite(within) else "")
                    + f" (n={len(group)})"
                )
            evidence = (
                f"Spearman rho(middle-layer compression above the floor, train-test gap) = "
                f"{stat:.2f} over {len(usable)} runs, one-sided permutation p = {p:.3g} (rule: "
                f"rho < 0 and p < {alpha:g}); per method: " + "; ".join(per_method)
            )
    row = {
        "claim": "C3b", "statement": STATEMENT, "evidence": evidence, "verdict": verdict,
        "measured": "no" if verdict == "not measured" else "fully", "stat": stat,
        "stat_name": "Spearman rho", "baseline": "all runs", "scale": scale,
    }  # fmt: skip
    return pd.DataFrame([row])
