"""Tests for ibstudy.generalization: C3b's per-run data (fixed windows), on tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import generalization as gen

FLOOR = 1.0
EPOCHS = 20  # windows of 2 epochs: early 1-2, late 19-20


def run_tables(run: str, method: str, compression: float, gap: float, seed: int = 0):
    """One run: 4 blocks + logits, epochs 0..20; every block's excess over the floor is 10 in the
    early window (epochs 1-2), 10 x (1 - compression) in the late one (19-20), with a spike of 30 at
    epoch 10 that a peak rule would take for the fit; final train acc = 0.9 + gap, test acc 0.9."""
    rows = []
    for epoch in range(EPOCHS + 1):
        f = min(1.0, max(0.0, (epoch - 2) / 16))
        excess = 5.0 if epoch == 0 else 10.0 * (1 - compression * f)
        excess = 30.0 if epoch == 10 else excess
        for index, layer in enumerate(("b0", "b1", "b2", "b3", "logits")):
            rows.append(
                {
                    "run": run, "method": method, "head": "none" if method == "e2e" else "linear",
                    "seed": seed, "epoch": epoch, "layer": layer, "layer_index": index,
                    "nhsic_xz": FLOOR + excess, "nhsic_xz_std": 0.1, "floor_xz": FLOOR,
                    "floor_xz_std": 0.0,
                }
            )  # fmt: skip
    epochs = pd.DataFrame(
        {
            "run": run, "method": method, "head": rows[0]["head"], "seed": seed,
            "epoch": range(EPOCHS + 1), "train_acc": 0.9 + gap, "test_acc": 0.9,
        }
    )  # fmt: skip
    return pd.DataFrame(rows), epochs


def study(pairs: list[tuple[float, float]]):
    """Layers and epochs tables of runs with the given (compression, gap) pairs."""
    parts = [
        run_tables(f"r{i}", ("e2e", "layerwise")[i % 2], c, g, seed=i // 2)
        for i, (c, g) in enumerate(pairs)
    ]
    return (
        pd.concat([p[0] for p in parts], ignore_index=True),
        pd.concat([p[1] for p in parts], ignore_index=True),
    )


def test_compression_and_gap_per_run_are_the_known_values():
    layers, epochs = study([(0.4, 0.02), (0.0, 0.05)])
    table = gen.compression_vs_gap(layers, epochs).set_index("run")
    # late window: epochs 19-20 at 10 x (1 - 0.4): the spike at epoch 10 does not count
    assert table.loc["r0", "middle_compression"] == pytest.approx(0.4)
    assert table.loc["r1", "middle_compression"] == pytest.approx(0.0)
    assert table.loc["r0", "gap"] == pytest.approx(0.02)
    assert table.loc["r0", "n_middle"] == 2  # b1 and b2: the first and last blocks are left out
    assert math.isnan(table.loc["r0", "test_loss"])


def test_test_loss_from_outcomes():
    layers, epochs = study([(0.4, 0.02), (0.0, 0.05)])
    outcomes = pd.DataFrame(
        {"run": ["r0"] * 4 + ["r1"] * 2, "epoch": [19, 19, 20, 20, 20, 20],
         "loss": [9.0, 9.0, 0.2, 0.4, 1.0, 2.0]}
    )  # fmt: skip
    table = gen.compression_vs_gap(layers, epochs, outcomes).set_index("run")
    assert table.loc["r0", "test_loss"] == pytest.approx(0.3)  # the last epoch's images only
    assert table.loc["r1", "test_loss"] == pytest.approx(1.5)


def test_short_runs_or_no_floor_give_no_compression():
    layers, epochs = study([(0.1, 0.1), (0.2, 0.05)])
    short = layers[layers["epoch"] <= 8]
    assert gen.compression_vs_gap(short, epochs)["middle_compression"].isna().all()
    no_floor = layers.assign(floor_xz=math.nan)
    assert gen.compression_vs_gap(no_floor, epochs)["middle_compression"].isna().all()


def test_spearman_known_values():
    assert gen.spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert gen.spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert math.isnan(gen.spearman(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


def test_bad_input():
    layers, epochs = study([(0.1, 0.1)] * 2)
    with pytest.raises(ValueError, match="lacks required column"):
        gen.compression_vs_gap(layers.drop(columns="nhsic_xz"), epochs)
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        gen.compression_vs_gap(layers.assign(measure_id=["a", "b"] * (len(layers) // 2)), epochs)
