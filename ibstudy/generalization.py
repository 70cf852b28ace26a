"""C3b's data: per run, middle-layer compression, the train-test gap and the test loss.

The paper's reading (docs/method.md §1) is that E2E's middle layers compress input information late in
training and that this goes with better generalization. One run cannot test that; a study can, by
setting each run's middle-layer compression against how well it generalizes. Per run:

- *middle-layer compression*: the mean, over its middle blocks (every block but the first and the
  last), of (early - late) / early of the excess nHSIC(X;Z) over the permutation floor, early and
  late being the fixed windows of :func:`ibstudy.claims.windows` (the first and last tenth of the
  whole epochs; never an argmax over noisy points);
- *gap*: the final epoch's train accuracy minus its test accuracy (the train accuracy is the running
  mean over the last epoch's batches, as the trainer records it);
- *test_loss*: the mean cross-entropy of the final model on the test set, from the per-image outcomes
  (:mod:`ibstudy.outcomes`) when given: a continuous outcome beside the gap.

The claim itself (a slope stratified by arm, with its interval) is :data:`ibstudy.claims.CLAIMS`
["C3b"].
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ibstudy.claims import NotMeasured, window_compression
from ibstudy.tables import RUN_KEYS, check_one_estimator, check_table, rows_of, run_keys
from ibstudy.tables import blocks as block_rows

__all__ = ["compression_vs_gap", "spearman"]


def _middle_compression(blocks: pd.DataFrame, index: int) -> float:
    traj = blocks[blocks["layer_index"] == index]
    try:
        early, late = window_compression(traj, "xz")
    except NotMeasured:
        return math.nan
    return (early - late) / early if early > 0 else math.nan


def compression_vs_gap(
    layers: pd.DataFrame, epochs: pd.DataFrame, outcomes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per run: ``middle_compression``, ``gap`` = final train - test accuracy, ``test_loss`` (NaN
    without outcomes), ``final_test_acc``, ``n_middle``; runs with fewer than 3 blocks, floors or
    10 whole epochs get a NaN compression."""
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
        middle = indices[1:-1]
        drops = [_middle_compression(blocks, i) for i in middle]
        loss = math.nan
        if outcomes is not None:
            mine = outcomes[outcomes["run"] == key[0]]
            if len(mine):
                loss = float(mine[mine["epoch"] == mine["epoch"].max()]["loss"].mean())
        rows.append(
            {
                **dict(zip(RUN_KEYS, key, strict=True)),
                "seed": final.get("seed", math.nan),
                "middle_compression": float(np.mean(drops)) if middle else math.nan,
                "n_middle": len(middle),
                "gap": float(final["train_acc"]) - float(final["test_acc"]),
                "test_loss": loss,
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
