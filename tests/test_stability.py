"""Tests for ibstudy.stability: the margin of an interval from 0 and the leave-one-seed-out check,
on tables whose verdicts are known."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import claims, nulls, stability
from ibstudy.estimates import paired_effect

#: seed-paired differences in final test accuracy (E2E - layer-wise) and what they give
STEADY = [0.010, 0.011, 0.009, 0.0105, 0.0095]  # every seed the same: supported, no seed flips it
CARRIED = [0.017, 0.005, 0.012, 0.007, 0.005]  # supported; without seed 2 it is not (p 0.06)
OUTLIER = [0.020, 0.004, 0.005, 0.0045, 0.0055]  # inconclusive only because of seed 0 (p 0.06)


def accuracy_tables(differences: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Layers and epochs tables of E2E and layer-wise runs, one per seed, whose final test
    accuracies differ by ``differences`` (the layers table holds one row per run: C4a reads only
    the epochs)."""
    layers, epochs = [], []
    for seed, diff in enumerate(differences):
        for method, head, acc in (("e2e", "none", 0.9 + diff), ("layerwise", "linear", 0.9)):
            run = f"{method}-s{seed}"
            layers.append({"run": run, "method": method, "head": head, "seed": seed, "epoch": 1,
                           "layer": "conv1", "layer_index": 0, "nhsic_xz": 0.5})  # fmt: skip
            for epoch, test_acc in ((0, 0.1), (1, acc)):
                epochs.append({"run": run, "method": method, "head": head, "seed": seed,
                               "epoch": epoch, "test_acc": test_acc})  # fmt: skip
    return pd.DataFrame(layers), pd.DataFrame(epochs)


def c4a(differences: list[float]) -> pd.Series:
    layers, epochs = accuracy_tables(differences)
    table = claims.claims_table(layers, epochs, claims=["C4a"], stability=True)
    assert len(table) == 1
    return table.iloc[0]


def test_margin_is_the_near_end_signed_by_whether_the_interval_excludes_0() -> None:
    assert stability.margin(0.1, 0.5) == 0.1
    assert stability.margin(-0.5, -0.2) == 0.2
    assert stability.margin(-0.1, 0.3) == -0.1
    assert stability.margin(-0.3, 0.1) == -0.1
    assert stability.margin(0.0, 0.2) == 0.0
    assert math.isnan(stability.margin(math.nan, 0.2))


def test_a_clear_effect_in_every_seed_is_not_fragile() -> None:
    row = c4a(STEADY)
    effect = paired_effect(STEADY)
    assert row["verdict"] == "supported"
    assert row["margin"] == pytest.approx(effect.ci_low, rel=1e-9) and row["margin"] > 0
    assert (row["loso_flips"], row["loso_n"], row["fragile"]) == (0, 5, False)
    assert stability.stability_text(row) == "stable: no seed of 5 flips it"


def test_a_verdict_that_one_seed_carries_is_fragile() -> None:
    row = c4a(CARRIED)
    assert row["verdict"] == "supported" and row["margin"] > 0
    assert (row["loso_flips"], row["loso_n"], row["fragile"]) == (1, 5, True)
    assert stability.stability_text(row) == "fragile: 1 of 5 seeds flips it"
    layers, epochs = accuracy_tables(CARRIED)
    arms = [claims.Arm.select(layers, epochs, **w) for w in claims_specs()]
    loso = stability.leave_one_seed_out(*arms, ["C4a"])
    assert loso["seed"].tolist() == [0, 1, 2, 3, 4]
    assert loso["verdict"].tolist() == ["supported"] * 2 + ["inconclusive"] + ["supported"] * 2


def test_an_outlier_seed_that_hides_an_effect_makes_the_verdict_fragile() -> None:
    row = c4a(OUTLIER)
    assert row["verdict"] == "inconclusive" and row["margin"] < 0
    assert (row["loso_flips"], row["fragile"]) == (1, True)


def test_fewer_than_three_seeds_is_not_measured() -> None:
    row = c4a(STEADY[:2])
    assert row["verdict"] == "supported" and row["margin"] > 0  # the interval exists
    assert row["loso_n"] == 0 and pd.isna(row["loso_flips"]) and pd.isna(row["fragile"])
    assert stability.stability_text(row).startswith("not measured (leaving one seed out needs")
    one = c4a(STEADY[:1])
    assert one["verdict"] == "not measured" and math.isnan(one["margin"]) and one["loso_n"] == 0
    assert stability.stability_text(one) == "not measured (no verdict)"
    layers, epochs = accuracy_tables(STEADY[:2])
    arms = [claims.Arm.select(layers, epochs, **w) for w in claims_specs()]
    with pytest.raises(ValueError, match=">= 3 shared seeds"):
        stability.leave_one_seed_out(*arms, ["C4a"])


def claims_specs() -> list[dict[str, object]]:
    return [{"method": "e2e"}, {"method": "layerwise", "head": "linear"}]


def test_without_seed_leaves_that_run_out_of_every_table() -> None:
    layers, epochs = accuracy_tables(STEADY)
    arm = claims.Arm.select(layers, epochs, method="e2e")
    rest = stability.without_seed(arm, 3)
    assert rest.seeds == (0, 1, 2, 4) and 3 not in set(rest.epochs["seed"])
    assert rest.name == arm.name and rest.outcomes is None


def test_default_columns_are_unchanged_and_every_claim_gets_stability() -> None:
    candidate, baseline = nulls.simulate_arms(np.random.default_rng(3), effect={"C3": 0.3})
    layers = pd.concat([candidate.layers, baseline.layers], ignore_index=True)
    epochs = pd.concat([candidate.epochs, baseline.epochs], ignore_index=True)
    plain = claims.claims_table(layers, epochs)
    assert list(plain.columns) == claims.ASSESS_COLUMNS
    table = claims.claims_table(layers, epochs, stability=True)
    assert list(table.columns) == claims.ASSESS_COLUMNS + stability.STABILITY_COLUMNS
    pd.testing.assert_frame_equal(table[claims.ASSESS_COLUMNS], plain)
    measured = table[table["verdict"] != "not measured"]
    assert set(measured["loso_n"]) == {5} and measured["loso_flips"].between(0, 5).all()
    assert (measured["fragile"] == (measured["loso_flips"] > 0)).all()
    assert table.set_index("claim").loc["C3", "verdict"] == "supported"
    bare = claims.claims_table(layers, None, claims=["C1", "C4a"], stability=True)
    c4a = bare.set_index("claim").loc["C4a"]  # no epochs table: not measured, nor its stability
    assert c4a["verdict"] == "not measured" and c4a["loso_n"] == 0 and pd.isna(c4a["fragile"])
    assert bare.set_index("claim").loc["C1", "loso_n"] == 5
    for row in table.itertuples():  # the margin is the interval's near end, signed
        if row.verdict != "not measured":
            excludes = row.ci_low > 0 or row.ci_high < 0
            assert abs(row.margin) == min(abs(row.ci_low), abs(row.ci_high))
            assert (row.margin > 0) == excludes
    back = pd.read_csv(io.StringIO(table.to_csv(index=False)))  # as the report reads it
    for before, after in zip(table.to_dict("records"), back.to_dict("records"), strict=True):
        assert stability.stability_text(after) == stability.stability_text(before)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("True", True), ("false", False), (math.nan, None),
     (None, None), (pd.NA, None), ("", None), (np.bool_(True), True)],
)  # fmt: skip
def test_is_fragile_reads_every_form_a_table_gives(value: object, expected: bool | None) -> None:
    assert stability.is_fragile(value) is expected
