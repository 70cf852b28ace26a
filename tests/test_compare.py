"""Tests for ibstudy.compare: variant labels, the role gap and the method ranking on known tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import compare
from ibstudy.config import TrainConfig

BLOCKS = ("b0", "b1", "b2", "b3")


def run_tables(run, variant, method, seed, xz_last, yz_last, acc, epochs=4):
    """A run whose blocks grow linearly to (xz_last, yz_last) above a floor of 1.0 / 0.1."""
    rows = []
    for epoch in range(epochs + 1):
        f = epoch / epochs
        for index, layer in enumerate((*BLOCKS, "logits")):
            xz = 1.0 + f * (xz_last[index] if index < 4 else 5.0)
            yz = 0.1 + f * (yz_last[index] if index < 4 else 8.0)
            rows.append(
                {
                    "run": run, "variant": variant, "method": method, "head": "none", "seed": seed,
                    "num_classes": 10, "epoch": epoch, "layer": layer, "layer_index": index,
                    "nhsic_xz": xz, "nhsic_yz": yz, "nhsic_xz_std": 0.1, "nhsic_yz_std": 0.1,
                    "floor_xz": 1.0, "floor_yz": 0.1,
                }
            )  # fmt: skip
    ep = pd.DataFrame(
        {
            "run": run, "variant": variant, "method": method, "head": "none", "seed": seed,
            "epoch": range(epochs + 1), "train_acc": acc, "test_acc": acc,
        }
    )  # fmt: skip
    return pd.DataFrame(rows), ep


E2E = ([40.0, 30.0, 20.0, 10.0], [2.0, 4.0, 6.0, 8.0])
CLOSE = ([38.0, 29.0, 21.0, 10.0], [2.0, 4.0, 6.0, 8.0])  # nearly E2E's profile
FAR = ([10.0, 5.0, 2.0, 1.0], [8.0, 8.0, 8.0, 8.0])  # collapses and saturates early


def study(seeds=(0, 1)):
    parts = []
    for s in seeds:
        parts += [
            run_tables(f"e{s}", "e2e", "e2e", s, *E2E, acc=0.95),
            run_tables(f"c{s}", "close", "layerwise", s, *CLOSE, acc=0.90),
            run_tables(f"f{s}", "far", "layerwise", s, *FAR, acc=0.93),
        ]
    return (
        pd.concat([p[1] for p in parts], ignore_index=True),
        pd.concat([p[0] for p in parts], ignore_index=True),
    )


def test_role_gap_known_values():
    lay, _ = run_tables("a", "e2e", "e2e", 0, *E2E, acc=0.9)
    assert compare.role_gap(lay, lay) == 0.0
    close, _ = run_tables("c", "close", "layerwise", 0, *CLOSE, acc=0.9)
    # xz differences 2, 1, 1, 0 over max 40; yz equal: mean over blocks of (d/40 + 0) / 2
    assert compare.role_gap(close, lay) == pytest.approx(np.mean([2, 1, 1, 0]) / 40 / 2)
    assert math.isnan(compare.role_gap(close.assign(floor_xz=math.nan), lay))


def test_method_comparison_ranks_and_verdicts():
    epochs, layers = study()
    table = compare.method_comparison(epochs, layers, scale="synthetic").set_index("variant")
    assert table.loc["e2e", "role_gap"] == 0.0 and table.loc["e2e", "n_seeds"] == 2
    assert table.loc["close", "role_gap"] < table.loc["far", "role_gap"]
    assert table.loc["e2e", "rank_accuracy"] == 1 and table.loc["close", "rank_accuracy"] == 3
    assert table.loc["close", "rank_roles"] == 2 and table.loc["far", "rank_roles"] == 3
    # E2E keeps far more input information at depth than "far" (C1 holds in both seeds), not
    # beyond noise more than "close" at the deeper blocks (b2: 20 vs 21, b3 equal)
    assert table.loc["far", "C1_verdict"] == "2 of 2"
    assert table.loc["close", "C1_verdict"] == "0 of 2"
    assert table.loc["far", "C1_stat"] > 10


def test_method_comparison_needs_one_e2e_run_per_seed():
    epochs, layers = study(seeds=(0,))
    no_e2e = layers[layers["variant"] != "e2e"]
    with pytest.raises(ValueError, match="needs exactly one 'e2e' run"):
        compare.method_comparison(epochs, no_e2e, scale="s")


def test_variant_labels_and_label_tables():
    assert compare.variant_label(TrainConfig()) == "e2e"
    lw = TrainConfig(method="layerwise", head="mlp", nhsic_reg="local", nhsic_lambda=0.1)
    assert compare.variant_label(lw) == "layerwise/mlp +nHSIC local 0.1"
    sm = TrainConfig(method="layerwise", head="linear", local_loss="similarity_matching")
    assert compare.variant_label(sm) == "layerwise/linear similarity_matching"
    table = pd.DataFrame({"run": [lw.run_id(), sm.run_id()]})
    (out,) = compare.label_tables([table], [lw, sm])
    assert out["variant"].tolist() == [compare.variant_label(lw), compare.variant_label(sm)]
    with pytest.raises(ValueError, match="have no config"):
        compare.label_tables([table], [lw])
