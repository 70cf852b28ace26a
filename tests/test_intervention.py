"""C3b's second form (ibstudy.intervention): known values, a planted relation holds, noise-only tables
shaped like the study's never hold (rate measured over 200 simulated nulls), invariances, the
claims' shift under a changed activation, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ibstudy.claims import Arm, claims_table
from ibstudy.config import TrainConfig
from ibstudy.estimates import stratified_slope
from ibstudy.intervention import (
    RESULT_COLUMNS,
    SHIFT_COLUMNS,
    assess_intervention,
    claim_shift,
    claims_under,
    intervention_effect,
    plot_intervention,
    tag_runs,
)
from ibstudy.nulls import simulate_arms
from ibstudy.stability import without_seed
from ibstudy.study import CRITIQUE_WEIGHT_DECAYS, critique_seeds, intervention_variants

LEVELS = CRITIQUE_WEIGHT_DECAYS  # notebook 10's: 0.0, 1e-3, 1e-2
N_NULLS = 200


def simulate(
    rng: np.random.Generator,
    *,
    seeds: int = 3,
    levels: tuple[float, ...] = LEVELS,
    gap_step: float = -0.006,
    compression_step: float = 0.0,
    slope_sd: float = 0.05,
) -> pd.DataFrame:
    """One study's runs, shaped like notebook 10's: the gap (about 0.03, seed spread 0.002) moves by
    ``gap_step`` per level; middle-layer compression (about 0.3) has a seed offset (sd 0.1), a
    random per-seed slope over the levels (sd ``slope_sd``: trained networks differ in how they
    respond) around ``compression_step``, and run noise (sd 0.05)."""
    rows = []
    for seed in range(seeds):
        offset, slope = rng.normal(0, 0.1), rng.normal(compression_step, slope_sd)
        gap_offset = rng.normal(0, 0.002)
        for rank, level in enumerate(levels):
            rows.append({
                "seed": seed, "weight_decay": level,
                "gap": 0.03 + gap_offset + gap_step * rank + rng.normal(0, 0.002),
                "middle_compression": 0.3 + offset + slope * rank + rng.normal(0, 0.05),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _exact(gap_step: float = -0.01, comp_step: float = 0.05) -> pd.DataFrame:
    rows = [
        {"seed": s, "weight_decay": v, "gap": 0.03 + gap_step * r + 0.001 * s,
         "middle_compression": 0.2 + comp_step * r + 0.1 * s}
        for s in range(3) for r, v in enumerate(LEVELS)
    ]  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- known values


def test_exact_linear_relation_holds_with_known_slopes():
    result = intervention_effect(_exact())
    assert result.verdict == "holds" and result.predicted_sign == 1
    assert result.gap.estimate == pytest.approx(-0.01) and result.gap.se == pytest.approx(
        0, abs=1e-15
    )
    assert result.compression.estimate == pytest.approx(0.05)
    assert np.allclose(result.per_seed["gap_slope"], -0.01)
    assert np.allclose(result.per_seed["middle_compression_slope"], 0.05)
    assert result.spearman_levels == pytest.approx(-1)
    assert result.n_seeds == 3 and result.n_levels == 3
    per_level = result.per_level.set_index("weight_decay")
    assert per_level.loc[1e-2, "gap_mean"] == pytest.approx(0.03 - 0.02 + 0.001)
    summary = result.summary()
    assert list(summary.columns) == RESULT_COLUMNS and summary["verdict"].iloc[0] == "holds"


def test_the_interval_is_the_t_interval_over_the_per_seed_slopes():
    points = simulate(np.random.default_rng(5), seeds=4, compression_step=0.1)
    result = intervention_effect(points)
    slopes = []
    for _, part in points.groupby("seed"):
        slopes.append(np.polyfit(np.arange(3.0), part["middle_compression"].to_numpy(), 1)[0])
    mean, se = np.mean(slopes), np.std(slopes, ddof=1) / 2
    half = stats.t.ppf(0.975, 3) * se
    assert result.compression.estimate == pytest.approx(mean, rel=1e-12)
    assert result.compression.ci_low == pytest.approx(mean - half, rel=1e-10)
    assert result.compression.ci_high == pytest.approx(mean + half, rel=1e-10)


def test_compression_moving_with_the_gap_contradicts_and_direction_flips_it():
    points = _exact(gap_step=-0.01, comp_step=-0.05)  # both fall together
    assert intervention_effect(points).verdict == "contradicted"
    assert intervention_effect(points, direction=1).verdict == "holds"


def test_only_the_order_of_the_levels_and_not_the_row_order_counts():
    points = simulate(np.random.default_rng(6), compression_step=0.1)
    base = intervention_effect(points).summary()
    shuffled = points.sample(frac=1.0, random_state=1)
    relabelled = points.assign(
        weight_decay=points["weight_decay"].map(dict(zip(LEVELS, (0, 1, 5), strict=True)))
    )
    for other in (shuffled, relabelled):
        pd.testing.assert_frame_equal(intervention_effect(other).summary(), base)


def test_an_intervention_that_does_not_move_the_gap_is_not_measured():
    points = _exact(gap_step=0.0).assign(gap=lambda d: 0.03 + 0.001 * d["seed"] * d["seed"])
    result = intervention_effect(points)
    assert result.verdict == "not measured" and "did not move gap" in result.reason


def test_runs_without_compression_are_not_measured():
    points = _exact()
    points.loc[4, "middle_compression"] = math.nan
    result = intervention_effect(points)
    assert result.verdict == "not measured" and "seed 1" in result.reason
    assert result.compression is None


# ---------------------------------------------------------------------------------- error rates


def _rate(**kwargs) -> float:
    rng = np.random.default_rng(2024)
    verdicts = [intervention_effect(simulate(rng, **kwargs)).verdict for _ in range(N_NULLS)]
    return verdicts.count("holds") / N_NULLS


def test_planted_relation_holds():
    """Power: with 3 seeds the t interval (df 2) and the gap's own check need a large effect."""
    assert _rate(compression_step=0.3, slope_sd=0.02) >= 0.9
    assert _rate(compression_step=0.15, slope_sd=0.02, seeds=5) >= 0.95


@pytest.mark.parametrize("gap_step", [-0.006, 0.006, 0.0])
@pytest.mark.parametrize("seeds", [3, 5])
def test_noise_only_tables_do_not_hold(gap_step, seeds):
    """Compression independent of the level (whether or not the gap moves): the rate of "holds" over
    200 simulated studies stays at or below 0.05 (one-sided 2.5 % by construction; 3 Monte-Carlo
    standard errors at 0.025 are 0.033 above it)."""
    assert _rate(gap_step=gap_step, seeds=seeds) <= 0.05


def _pooled_holds(points: pd.DataFrame) -> bool:
    """A rule that treats the runs as independent given a seed intercept: one slope over all runs
    (df = runs - seeds - 1), blind to seeds that respond differently to the intervention."""
    rank = points["weight_decay"].rank(method="dense").to_numpy() - 1
    comp = stratified_slope(rank, points["middle_compression"], points["seed"])
    gap = stratified_slope(rank, points["gap"], points["seed"])
    return comp.p < 0.05 and gap.p < 0.05 and comp.estimate * gap.estimate < 0


def test_a_rule_that_pools_the_runs_would_be_caught():
    """Trained networks differ in how they respond to the intervention (random slopes): the pooled
    slope's false-positive rate is well above 0.05, the seed-paired rule's is not."""
    rng = np.random.default_rng(7)
    tables = [simulate(rng, slope_sd=0.3) for _ in range(N_NULLS)]
    pooled = np.mean([_pooled_holds(t) for t in tables])
    paired = np.mean([intervention_effect(t).verdict == "holds" for t in tables])
    assert pooled > 0.07 and paired <= 0.05


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "points, kwargs, message",
    [
        (_exact().drop(columns="gap"), {}, "lacks required column"),
        (_exact()[_exact()["weight_decay"] != 1e-3], {}, "at least 3 levels"),
        (_exact().drop(index=4), {}, "missing"),
        (pd.concat([_exact(), _exact().iloc[:1]]), {}, "one run"),
        (_exact()[_exact()["seed"] == 0], {}, ">= 2 seeds"),
        (_exact().assign(weight_decay="high"), {}, "finite numbers"),
        (_exact().assign(seed=0.5), {}, "integer seeds"),
        (_exact(), {"direction": 0}, "direction"),
        (_exact(), {"level": 1.5}, "level"),
        (_exact(), {"by": "lr"}, "lacks required column"),
        ("table", {}, "DataFrame"),
    ],
)  # fmt: skip
def test_bad_input_is_refused(points, kwargs, message):
    with pytest.raises(ValueError, match=message):
        intervention_effect(points, **kwargs)


# ---------------------------------------------------------------------------------- helpers


def test_tag_runs_reads_the_field_from_the_configs(tmp_path):
    configs = [
        TrainConfig.preset("quick", weight_decay=wd, results_dir=str(tmp_path)) for wd in LEVELS
    ]
    table = pd.DataFrame({"run": [c.run_id() for c in configs][::-1], "x": [1, 2, 3]})
    tagged = tag_runs(table, configs, "weight_decay")
    assert tagged["weight_decay"].tolist() == list(LEVELS)[::-1]
    with pytest.raises(ValueError, match="field_name"):
        tag_runs(table, configs, "decay")
    with pytest.raises(ValueError, match="no config"):
        tag_runs(table.assign(run="elsewhere"), configs, "weight_decay")


def test_plot_intervention_draws_three_panels():
    points = _exact()
    fig = plot_intervention(points, intervention_effect(points))
    assert len(fig.axes) == 3 and "holds" in fig._suptitle.get_text()


def _arms(seed: int, effect: dict[str, float] | None = None) -> tuple[Arm, Arm]:
    return simulate_arms(np.random.default_rng(seed), n_seeds=4, effect=effect, outcomes=False)


def test_claim_shift_is_zero_for_the_same_arms_and_finds_a_planted_change():
    reference = _arms(0)
    same = claim_shift(reference, reference, ("C1", "C3"))
    assert list(same.columns) == SHIFT_COLUMNS and len(same) == 4
    assert np.allclose(same["shift"], 0) and (same["n"] == 4).all()
    changed = _arms(0, effect={"C3": 0.6})  # same draws, the candidate's last block compresses more
    shift = claim_shift(reference, changed, ("C3",)).set_index("quantity")
    assert shift.loc["contrast", "shift"] == pytest.approx(0.6, abs=0.1)
    assert shift.loc["contrast", "ci_low"] > 0


def test_claim_shift_refuses_claims_without_a_per_seed_statistic():
    reference = _arms(0)
    with pytest.raises(ValueError, match="seed-paired claims"):
        claim_shift(reference, reference, ("C3b",))


def test_assess_intervention_reports_one_seed_and_otherwise_applies_the_rule():
    one = assess_intervention(_exact()[_exact()["seed"] == 0])
    assert one.verdict == "not measured" and "1 seed" in one.reason and one.n_levels == 3
    assert one.per_level["gap_mean"].notna().all()
    pd.testing.assert_frame_equal(
        assess_intervention(_exact()).summary(), intervention_effect(_exact()).summary()
    )
    with pytest.raises(ValueError, match="at least 3 levels"):
        assess_intervention(_exact()[_exact()["weight_decay"] > 0])
    with pytest.raises(ValueError, match="direction"):
        assess_intervention(_exact()[_exact()["seed"] == 0], direction=2)


def test_notebook_10_policy():
    assert critique_seeds("study", 0) == [0, 1, 2, 3, 4]
    assert critique_seeds("quick", 4) == [4] and critique_seeds("study", 0, [7, 8]) == [7, 8]
    variants = intervention_variants()
    assert variants[0] == {"method": "e2e"}  # notebook 02's E2E config: its runs are reused
    assert [v.get("weight_decay", 0.0) for v in variants] == list(CRITIQUE_WEIGHT_DECAYS)
    assert all(v["probe_epochs"] == () for v in variants[1:])
    for bad in ([], [0.0, 0.0], [-1e-3], "0.01"):
        with pytest.raises(ValueError, match="weight_decays"):
            intervention_variants(bad)
    with pytest.raises(ValueError, match="preset"):
        critique_seeds("huge", 0)


def test_claim_shift_with_one_seed_has_no_interval():
    one = tuple(without_seed(without_seed(without_seed(a, 1), 2), 3) for a in _arms(0))
    shift = claim_shift(one, one, ("C1",))
    assert (shift["n"] == 1).all() and np.allclose(shift["shift"], 0)
    assert shift["ci_low"].isna().all()


def test_claims_under_is_one_claims_table_per_value():
    tables = []
    for activation, seed in (("relu", 0), ("tanh", 1)):
        e2e, lw = _arms(seed)
        layers = pd.concat([e2e.layers, lw.layers]).assign(activation=activation)
        epochs = pd.concat([e2e.epochs, lw.epochs]).assign(activation=activation)
        tables.append((layers, epochs))
    layers = pd.concat([t[0] for t in tables])
    epochs = pd.concat([t[1] for t in tables])
    both = claims_under(layers, epochs, "activation", claims=("C1", "C3"), stability=False)
    assert list(pd.unique(both["activation"])) == ["relu", "tanh"]
    for activation, (lay, ep) in zip(("relu", "tanh"), tables, strict=True):
        alone = claims_table(lay, ep, claims=("C1", "C3"))
        mine = both[both["activation"] == activation].drop(columns="activation")
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), alone)
    with pytest.raises(ValueError, match="lacks required column"):
        claims_under(layers, epochs, "width")
