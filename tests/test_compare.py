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
FAR = ([40.0, 20.0, 8.0, 2.0], [8.0, 8.0, 8.0, 8.0])  # collapses with depth, saturates early


def jitter(profile, seed):
    """A seed's copy of a profile: the deepest block moved by seed-dependent +-0.2."""
    xz, yz = profile
    return [*xz[:3], xz[3] + 0.2 * ((seed * 7) % 3 - 1)], yz


def study(seeds=(0, 1, 2)):
    parts = []
    for s in seeds:
        parts += [
            run_tables(f"e{s}", "e2e", "e2e", s, *jitter(E2E, s), acc=0.95),
            run_tables(f"c{s}", "close", "layerwise", s, *jitter(CLOSE, s + 1), acc=0.90),
            run_tables(f"f{s}", "far", "layerwise", s, *jitter(FAR, s + 2), acc=0.93),
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
    table = compare.method_comparison(epochs, layers).set_index("variant")
    assert table.loc["e2e", "role_gap"] == 0.0 and table.loc["e2e", "n_seeds"] == 3
    assert table.loc["close", "role_gap"] < table.loc["far", "role_gap"]
    assert table.loc["e2e", "rank_accuracy"] == 1 and table.loc["close", "rank_accuracy"] == 3
    assert table.loc["close", "rank_roles"] == 2 and table.loc["far", "rank_roles"] == 3
    # C1 slopes over depth: E2E 40, 30, 20, 10 (-10/block) vs far 40, 20, 8, 2 (-12.6/block): E2E's
    # input information falls less steeply; close, 38, 29, 21, 10 (-9.3/block), falls less than E2E
    assert table.loc["far", "C1_effect"] == pytest.approx(2.6, abs=0.2)
    assert table.loc["far", "C1_verdict"] == "supported" and table.loc["far", "C1_ci_low"] > 0
    assert table.loc["close", "C1_effect"] == pytest.approx(-0.7, abs=0.2)
    assert table.loc["close", "C1_verdict"] == "contradicted"
    assert math.isnan(table.loc["e2e", "C1_effect"])
    # leave one seed out: far's effect holds in every pair of seeds, close's (small) does not
    assert table.loc["far", "C1_fragile"] == False  # noqa: E712 (a numpy bool)
    assert table.loc["close", "C1_fragile"] == True  # noqa: E712


def test_method_comparison_with_one_seed_gives_contrasts_without_intervals():
    epochs, layers = study(seeds=(0,))
    table = compare.method_comparison(epochs, layers).set_index("variant")
    assert table.loc["far", "C1_effect"] > 2
    assert math.isnan(table.loc["far", "C1_ci_low"])
    assert table.loc["far", "C1_verdict"] == "not measured (1 seed)"
    assert pd.isna(table.loc["far", "C1_fragile"])


def test_method_comparison_needs_an_e2e_variant():
    epochs, layers = study(seeds=(0,))
    no_e2e = layers[layers["variant"] != "e2e"]
    with pytest.raises(ValueError, match="needs an 'e2e' variant"):
        compare.method_comparison(epochs, no_e2e)


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
