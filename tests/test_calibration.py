"""Calibration of the claim rules (docs/method.md §12, "Error rates and power").

Simulated studies with the real table structure (:mod:`ibstudy.nulls`): no difference between the
arms must give each rule a false-positive rate of at most alpha (and the Holm family at most alpha),
within Monte-Carlo error; planted effects must be found, and their opposites contradicted; and the
harness must flag a rule that is miscalibrated on purpose (a test that cannot fail is a defect).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ibstudy.claims import CLAIMS, Arm, Claim, Estimate, NotMeasured, assess, seed_pairs
from ibstudy.describe import excess_with_noise
from ibstudy.estimates import Effect
from ibstudy.nulls import EFFECTS, LENET5_BLOCKS, decide, error_rates, simulate_arms
from ibstudy.outcomes import OUTCOME_COLUMNS
from ibstudy.tables import EPOCH_COLUMNS, LAYER_COLUMNS
from ibstudy.tables import blocks as block_rows

ALPHA = 0.05
NULL_DRAWS = 150  # ~0.15 s each: the fast false-positive check
POWER_DRAWS = 20  # per planted set and sign
# clear effects, in each contrast's units: 7-10 null standard errors of the estimate in the
# simulator (at 5 seeds, Holm over 6 claims needs t > ~5 on 4 df). Every claim but C3b planted
# together; C3b alone (planting it moves the accuracies, C4a's noise).
PLANTED = {"C1": 6.0, "C2": 0.12, "C3": 0.8, "C4a": 0.025, "C4b": 0.03}
OPPOSITE = {"C1": -6.0, "C2": -0.12, "C3": -0.8, "C4a": -0.025, "C4b": -0.04}
PLANTED_C3B = {"C3b": -0.25}


def bound(n: int, alpha: float = ALPHA) -> float:
    """The largest rate compatible with a true rate alpha: alpha + 3 binomial MC standard errors."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


def row(rates: pd.DataFrame, claim: str) -> pd.Series:
    return rates[rates["claim"] == claim].iloc[0]


# ----------------------------------------------------------------------------------------------
# the simulated tables are the study's
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arms() -> tuple[Arm, Arm]:
    return simulate_arms(np.random.default_rng(0))


def test_tables_have_the_trainers_columns_and_pass_validation(arms) -> None:
    cand, base = arms
    assert (cand.name, base.name) == ("e2e", "layerwise/linear")
    for arm, (method, head) in zip(arms, (("e2e", "none"), ("layerwise", "linear")), strict=True):
        assert list(arm.layers.columns) == LAYER_COLUMNS
        assert list(arm.epochs.columns) == EPOCH_COLUMNS
        assert list(arm.outcomes.columns) == OUTCOME_COLUMNS
        for table in (arm.layers, arm.epochs, arm.outcomes):
            assert set(table["method"]) == {method} and set(table["head"]) == {head}
            assert set(table["dataset"]) == {"mnist5k"}
        assert set(arm.layers["num_classes"]) == {10}
    assert seed_pairs(cand, base) == [0, 1, 2, 3, 4]
    # pooled tables select back into the same arms (the study's own path)
    layers = pd.concat([cand.layers, base.layers], ignore_index=True)
    epochs = pd.concat([cand.epochs, base.epochs], ignore_index=True)
    again = Arm.select(layers, epochs, method="layerwise", head="linear")
    assert again.seeds == base.seeds and again.name == base.name


def test_tables_have_the_study_scale_structure(arms) -> None:
    layers, epochs = arms[0].layers, arms[0].epochs
    settings = layers[["eval_size", "chunk_size", "floor_perms", "measure_id"]].drop_duplicates()
    assert len(settings) == 1
    eval_size, chunk_size, floor_perms, _ = settings.iloc[0]
    assert chunk_size * 2 == eval_size == 512 and floor_perms == 3  # k = 2 chunks
    assert set(layers["measure_id"]) == set(arms[1].layers["measure_id"])
    assert list(pd.unique(layers["layer"])) == [*LENET5_BLOCKS, "logits"]
    run = layers[layers["seed"] == 0]
    points = sorted(pd.unique(run["epoch"]))
    assert points[0] == 0 and points[-1] == 40 and len(points) == 41 + 3
    sub = [e for e in points if 0 < e < 1]
    assert sub == pytest.approx([8 / 63, 16 / 63, 32 / 63])  # batches of the first epoch
    # k = 2: the recorded std is |c1 - c2| / 2, itself very noisy (CV of a half-normal ~ 0.76)
    std = run[run["layer"] == "conv1"]["nhsic_xz_std"]
    assert std.std() / std.mean() > 0.5
    # the floor is most of the value; values of the plausible order
    blocks = block_rows(layers)
    share = (blocks["floor_xz"] / blocks["nhsic_xz"]).groupby(blocks["layer"]).mean()
    assert share.between(0.85, 0.98).all()
    assert blocks["nhsic_xz"].between(90, 200).all()
    assert (layers["nhsic_yz"] <= 9).all() and layers["nhsic_yz"].max() > 8.5
    # probes at 0, 10, 20, 40 on blocks only; the learning rate decays at 20, 30, 35, 38
    probed = layers[layers["probe_test_acc"].notna()]
    assert sorted(pd.unique(probed["epoch"])) == [0, 10, 20, 40]
    assert "logits" not in set(probed["layer"])
    lr = epochs[epochs["seed"] == 0].set_index("epoch")["lr"]
    assert lr[20] == pytest.approx(1e-3) and lr[21] == pytest.approx(2e-4)
    assert lr[40] == pytest.approx(1e-3 * 0.2**4)
    # the final test accuracy is the per-image outcomes' mean, as the trainer's is
    final = epochs[epochs["epoch"] == 40].set_index("seed")["test_acc"]
    per_image = arms[0].outcomes.groupby("seed")["correct"].mean()
    assert np.allclose(final.sort_index(), per_image.sort_index())
    assert 0.95 < final.mean() < 0.99


def test_assess_runs_on_simulated_tables_with_every_detail(arms) -> None:
    table = assess(*arms)
    assert list(table["claim"]) == list(CLAIMS)
    assert "not measured" not in set(table["verdict"])
    details = dict(zip(table["claim"], table["detail"], strict=True))
    assert details["C4a"].startswith("McNemar per seed")  # the per-image path ran
    assert "test-loss slope" in details["C3b"]
    assert details["C1"] and details["C3"] and details["C4b"]


def test_fast_decision_equals_assess() -> None:
    rng = np.random.default_rng(5)
    for effect in (None, PLANTED):
        cand, base = simulate_arms(rng, effect=effect)
        pd.testing.assert_frame_equal(decide(cand, base), decide(cand, base, fast=False))


def test_without_a_floor_the_floor_claims_are_not_measured() -> None:
    cand, base = simulate_arms(np.random.default_rng(1), floor_perms=0, outcomes=False)
    table = decide(cand, base)
    verdicts = dict(zip(table["claim"], table["verdict"], strict=True))
    assert {verdicts[c] for c in ("C1", "C2", "C3", "C3b")} == {"not measured"}
    assert verdicts["C4a"] != "not measured"


def test_simulator_rejects_bad_effects() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="effect names"):
        simulate_arms(rng, effect={"C9": 1.0})
    with pytest.raises(ValueError, match="out of reach"):
        simulate_arms(rng, effect={"C2": 5.0})
    with pytest.raises(ValueError, match="middle layers"):
        simulate_arms(rng, n_blocks=2, effect={"C3b": -0.1})
    with pytest.raises(ValueError, match="n_draws"):
        error_rates(0)
    assert set(EFFECTS) == set(CLAIMS)


# ----------------------------------------------------------------------------------------------
# false positives, power, and a rule that must fail
# ----------------------------------------------------------------------------------------------


def check_null(rates: pd.DataFrame, draws: int) -> None:
    limit = bound(draws)
    for name in CLAIMS:
        r = row(rates, name)
        assert r["measured"] == draws, name
        assert r["p_rate"] <= limit, f"{name}: p < {ALPHA} in {r['p_rate']:.3f} of null draws"
        assert r["significant"] <= limit, name
    family = row(rates, "family")
    assert family["significant"] <= limit, f"family-wise rate {family['significant']:.3f}"


def test_false_positive_rates_are_at_most_alpha() -> None:
    check_null(error_rates(NULL_DRAWS, seed=101, alpha=ALPHA), NULL_DRAWS)


@pytest.mark.parametrize("sign", [1, -1])
def test_planted_effects_are_found_in_their_direction(sign: int) -> None:
    for planted in (
        PLANTED if sign > 0 else OPPOSITE,
        {k: sign * v for k, v in PLANTED_C3B.items()},
    ):
        rates = error_rates(POWER_DRAWS, seed=202 + sign, effect=planted, alpha=ALPHA)
        for name, value in planted.items():
            r = row(rates, name)
            right = "supported" if value * CLAIMS[name].direction > 0 else "contradicted"
            wrong = "contradicted" if right == "supported" else "supported"
            assert r[right] > 0.8, f"{name}={value}: {right} in only {r[right]:.2f} of draws"
            assert r[wrong] == 0, f"{name}={value}: {wrong} in {r[wrong]:.2f} of draws"
            assert np.sign(r["estimate_mean"]) == np.sign(value)


def _naive_c1(candidate: Arm, baseline: Arm, level: float) -> Estimate:
    """C1's contrast with the pre-registration rule's flaw: its standard error comes from each
    point's chunk noise only (z interval), ignoring the spread between trained networks."""
    diffs, variances = [], []
    for seed in seed_pairs(candidate, baseline):
        slopes = []
        for arm in (candidate, baseline):
            rows = block_rows(arm.run(seed).layers)
            last = rows[rows["epoch"] == rows["epoch"].max()].sort_values("layer_index")
            value, se = excess_with_noise(last, "xz")
            if not np.isfinite(se).all():
                raise NotMeasured("needs chunk and floor std")
            depth = np.arange(len(value)) - (len(value) - 1) / 2
            slopes.append(
                (depth @ value / (depth @ depth), (depth**2 @ se**2) / (depth @ depth) ** 2)
            )
        diffs.append(slopes[0][0] - slopes[1][0])
        variances.append(slopes[0][1] + slopes[1][1])
    n = len(diffs)
    est, se = float(np.mean(diffs)), math.sqrt(sum(variances)) / n
    p = float(2 * stats.norm.sf(abs(est) / se))
    half = float(stats.norm.ppf(0.5 + level / 2)) * se
    return Estimate(Effect(est, se, math.inf, p, est - half, est + half, n, level))


NAIVE_C1 = Claim("C1 naive", "", "", +1, "nHSIC per block", _naive_c1)


def test_the_harness_flags_a_rule_that_ignores_seed_variance() -> None:
    draws = 150  # its true false-positive rate here is ~0.18
    rates = error_rates(draws, seed=303, claims=[NAIVE_C1])
    assert row(rates, "C1 naive")["measured"] == draws
    assert row(rates, "C1 naive")["p_rate"] > bound(draws)  # miscalibrated: caught
    assert row(rates, "family")["significant"] > bound(draws)


# ----------------------------------------------------------------------------------------------
# the large version (make test-all)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_false_positive_rates_are_at_most_alpha_large() -> None:
    draws = 4000
    check_null(error_rates(draws, seed=404, alpha=ALPHA), draws)


@pytest.mark.slow
@pytest.mark.parametrize("seed_share", [0.5])
def test_false_positive_rates_with_seed_effects_shared_by_the_arms(seed_share: float) -> None:
    draws = 1000
    check_null(error_rates(draws, seed=505, seed_share=seed_share), draws)
