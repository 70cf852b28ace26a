"""Tests for ibstudy.estimates: known values, references computed another way, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ibstudy import estimates as E


def test_paired_effect_known_values() -> None:
    d = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd 1.2910, se 0.6455, t_{3,0.975} = 3.182446
    eff = E.paired_effect(d)
    se = math.sqrt(np.var(d, ddof=1) / 4)
    assert eff.estimate == pytest.approx(2.5)
    assert eff.se == pytest.approx(se)
    assert eff.df == 3 and eff.n == 4
    assert eff.ci_low == pytest.approx(2.5 - 3.182446 * se, rel=1e-6)
    assert eff.ci_high == pytest.approx(2.5 + 3.182446 * se, rel=1e-6)
    # two-sided p of t = 3.873 on 3 df
    assert eff.p == pytest.approx(0.030466, rel=1e-3)


def test_paired_effect_interval_and_p_agree() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = rng.normal(0.3, 1.0, size=5)
        eff = E.paired_effect(d)
        excludes = eff.ci_low > 0 or eff.ci_high < 0
        assert excludes == (eff.p < 0.05)


def test_paired_effect_bad_input() -> None:
    with pytest.raises(ValueError, match=">= 2 finite"):
        E.paired_effect([1.0])
    with pytest.raises(ValueError, match=">= 2 finite"):
        E.paired_effect([1.0, math.nan])


def test_holm_against_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, math.nan, 0.2]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> max-accumulated 0.09, 0.2*1 -> 0.2
    out = E.holm(p)
    assert out[0] == pytest.approx(0.04)
    assert out[2] == pytest.approx(0.09)
    assert out[1] == pytest.approx(0.09)
    assert out[4] == pytest.approx(0.2)
    assert math.isnan(out[3])


def test_verdict_words() -> None:
    assert E.verdict(1.0, 0.01, +1) == "supported"
    assert E.verdict(-1.0, 0.01, +1) == "contradicted"
    assert E.verdict(-1.0, 0.01, -1) == "supported"
    assert E.verdict(1.0, 0.2, +1) == "inconclusive"
    assert E.verdict(math.nan, math.nan, +1) == "not measured"
    with pytest.raises(ValueError, match="direction"):
        E.verdict(1.0, 0.01, 0)


def test_stratified_slope_equals_dummy_regression() -> None:
    rng = np.random.default_rng(1)
    strata = np.repeat(["a", "b", "c"], 5)
    offsets = {"a": 0.0, "b": 5.0, "c": -3.0}
    x = rng.normal(size=15) + np.array([offsets[s] for s in strata])
    y = -0.7 * x + np.array([2 * offsets[s] for s in strata]) + rng.normal(0, 0.3, 15)
    eff = E.stratified_slope(x, y, strata)
    design = np.column_stack([x, *(strata == s for s in "abc")]).astype(float)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    sigma2 = resid @ resid / (15 - 4)
    cov = sigma2 * np.linalg.inv(design.T @ design)
    assert eff.estimate == pytest.approx(coef[0], rel=1e-9)
    assert eff.se == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert eff.df == 11
    assert eff.ci_high < 0 and eff.extra["r"] < 0 and eff.extra["r_high"] < 0


def test_stratified_slope_ignores_a_correlation_made_by_the_strata() -> None:
    # within each stratum y does not depend on x; across strata both move together
    rng = np.random.default_rng(2)
    strata = np.repeat(["a", "b"], 6)
    x = rng.normal(size=12) + np.where(strata == "a", 0.0, 10.0)
    y = rng.normal(size=12) + np.where(strata == "a", 0.0, -10.0)
    pooled = np.corrcoef(x, y)[0, 1]
    assert pooled < -0.9
    eff = E.stratified_slope(x, y, strata)
    assert eff.ci_low < 0 < eff.ci_high


def test_stratified_slope_bad_input() -> None:
    with pytest.raises(ValueError, match="more runs than strata"):
        E.stratified_slope([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ["a", "a", "b"])
    with pytest.raises(ValueError, match="does not vary"):
        E.stratified_slope([1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])


def test_mcnemar_exact() -> None:
    a = np.array([1] * 90 + [1] * 8 + [0] * 2)
    b = np.array([1] * 90 + [0] * 8 + [1] * 2)
    only_a, only_b, p = E.mcnemar(a, b)
    assert (only_a, only_b) == (8, 2)
    # two-sided binomial: 2 * P(X <= 2 | n=10, 1/2) = 2 * 56/1024
    assert p == pytest.approx(2 * 56 / 1024)
    assert E.mcnemar(a, a)[2] == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        E.mcnemar(a, a[:-1])


def test_paired_power_matches_simulation() -> None:
    rng = np.random.default_rng(3)
    d, n = 1.5, 5
    hits = sum(E.paired_effect(rng.normal(d, 1.0, n)).p < 0.05 for _ in range(4000))
    assert E.paired_power(d, n) == pytest.approx(hits / 4000, abs=0.03)
    assert E.paired_power(0.0, n) == pytest.approx(0.05, abs=1e-9)
    # far in the tail (scipy's nct.cdf gives NaN there): finite and near 1
    assert E.paired_power(4.0, 5, 0.05 / 6) == pytest.approx(0.983, abs=0.002)
    assert E.paired_power(3.5, 20) == pytest.approx(1.0, abs=1e-6)


def test_fisher_interval_contains_r() -> None:
    low, high = E.fisher_interval(0.5, 20)
    assert low < 0.5 < high
    assert all(math.isnan(v) for v in E.fisher_interval(0.5, 3))
