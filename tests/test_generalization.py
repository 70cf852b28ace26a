"""Tests for ibstudy.generalization: C3's second half across runs, on tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import generalization as gen

FLOOR = 1.0


def run_tables(run: str, method: str, compression: float, gap: float, seed: int = 0):
    """One run: 4 blocks + logits, epochs 0..4; the middle blocks' excess over the floor peaks at 10
    (epoch 2) and ends at 10 x (1 - compression); final train acc = 0.9 + gap, test acc 0.9."""
    rows = []
    for epoch in range(5):
        for index, layer in enumerate(("b0", "b1", "b2", "b3", "logits")):
            if epoch <= 2:
                excess = 5.0 * epoch
            else:
                excess = 10.0 - (epoch - 2) / 2 * 10.0 * compression
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
            "epoch": range(5), "train_acc": 0.9 + gap, "test_acc": 0.9,
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
    assert table.loc["r0", "middle_compression"] == pytest.approx(0.4)
    assert table.loc["r1", "middle_compression"] == pytest.approx(0.0)
    assert table.loc["r0", "gap"] == pytest.approx(0.02)
    assert table.loc["r0", "n_middle"] == 2  # b1 and b2: the first and last blocks are left out


def test_more_compression_smaller_gap_holds_and_the_reverse_does_not():
    pairs = [(0.1 * k, 0.10 - 0.01 * k) for k in range(8)]  # perfectly anti-ranked
    row = gen.claim_c3b(*study(pairs), scale="synthetic").iloc[0]
    assert row["verdict"] == "holds" and row["stat"] == pytest.approx(-1.0)
    assert "p = " in row["evidence"] and row["claim"] == "C3b"
    reverse = [(0.1 * k, 0.03 + 0.01 * k) for k in range(8)]
    row = gen.claim_c3b(*study(reverse), scale="synthetic").iloc[0]
    assert row["verdict"] == "does not hold" and row["stat"] == pytest.approx(1.0)


def test_too_few_runs_or_no_floor_is_not_measured():
    layers, epochs = study([(0.1, 0.1), (0.2, 0.05), (0.3, 0.01)])
    assert gen.claim_c3b(layers, epochs, scale="s").iloc[0]["verdict"] == "not measured"
    layers, epochs = study([(0.1 * k, 0.1 - 0.01 * k) for k in range(6)])
    no_floor = layers.assign(floor_xz=math.nan)
    row = gen.claim_c3b(no_floor, epochs, scale="s").iloc[0]
    assert row["verdict"] == "not measured" and "needs >= 5" in row["evidence"]


def test_noise_only_holds_at_most_at_the_test_level():
    """Independent compression and gap: the permutation test holds in about alpha of the tables."""
    rng = np.random.default_rng(0)
    trials, held = 300, 0
    for _ in range(trials):
        x, y = rng.random(9), rng.random(9)
        rho = gen.spearman(x, y)
        held += int(rho < 0 and gen._p_negative(x, y, rho) < 0.05)
    assert held / trials < 0.09  # 0.05 expected; binomial sd 0.013


def test_spearman_known_values():
    assert gen.spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert gen.spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert math.isnan(gen.spearman(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"min_runs": 2}, "min_runs"), ({"alpha": 0.0}, "alpha"), ({"scale": 3}, "scale")],
)
def test_bad_input(kwargs, message):
    layers, epochs = study([(0.1, 0.1)] * 5)
    args = {"scale": "s", **kwargs}
    with pytest.raises(ValueError, match=message):
        gen.claim_c3b(layers, epochs, **args)
