"""Tests for ibstudy.robustness (notebook 07's helpers) and the notebook glue in ibstudy.study."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibstudy import robustness
from ibstudy.config import MeasureConfig, TrainConfig
from ibstudy.store import Run
from ibstudy.study import notebook_params, run_study
from ibstudy.tables import MEASURE_COLUMNS


def _measured(
    values: dict[str, list[float]],
    floors: dict[str, list[float]],
    mid: str = "m1",
    seeds: tuple[int, ...] = (0,),
):
    """A measurement table of two runs per seed (e2e, layerwise) x epochs 0-3 x three layers."""
    rows = []
    runs = [(s, mh, e) for s in seeds for mh in (("e2e", "none"), ("layerwise", "linear"))
            for e in range(4)]  # fmt: skip
    for seed, (method, head), epoch in runs:
        for index, layer in enumerate(["b1", "b2", "logits"]):
            f = floors[method][index]
            v = f + (values[method][index] - f) * (1 + 0.1 * epoch + 0.01 * seed)
            rows.append(
                {
                    "run": f"{method}-{seed}", "method": method, "head": head, "seed": seed,
                    "dataset": "mnist5k",
                    "num_classes": 10, "epoch": epoch, "step": 10 * epoch, "layer": layer,
                    "layer_index": index,
                    "nhsic_xz": v, "nhsic_yz": 5.0 + index, "nhsic_xz_std": 0.1,
                    "nhsic_yz_std": 0.1, "floor_xz": f, "floor_yz": 1.0,
                    "floor_xz_std": 0.5, "floor_yz_std": 0.0, "eval_size": 512,
                    "chunk_size": 256, "bandwidth": "fixed", "sigma": 5.0, "eps": 1e-5,
                    "floor_perms": 5, "estimator": "nhsic", "floor_seed": 0, "measure_id": mid,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)[MEASURE_COLUMNS]


def test_floor_corrected_and_z_scores():
    t = _measured(
        {"e2e": [10, 8, 6], "layerwise": [10, 5, 3]}, {"e2e": [9, 7, 5], "layerwise": [9, 4, 2]}
    )
    fc = robustness.floor_corrected(t)
    np.testing.assert_allclose(fc["nhsic_xz"], t["nhsic_xz"] - t["floor_xz"])
    assert (fc["floor_xz"] == 0).all() and set(fc["estimator"]) == {"nhsic-excess"}
    assert set(fc["measure_id"]) == {"m1-excess"}
    z = robustness.z_scores(t)
    np.testing.assert_allclose(z["z_xz"], (t["nhsic_xz"] - t["floor_xz"]) / 0.5)
    assert z["z_yz"].isna().all()  # a zero floor spread gives no z-score, not an infinity
    with pytest.raises(ValueError, match="no permutation floor"):
        robustness.floor_corrected(t.assign(floor_xz=math.nan, floor_yz=math.nan))


def test_claims_by_estimator_flags_a_floor_driven_c1():
    # raw values: layer-wise loses input information with depth faster ...
    raw = _measured(
        {"e2e": [10, 9, 8], "layerwise": [10, 6, 4]},
        {"e2e": [9, 8, 7], "layerwise": [9, 5, 3]},
        seeds=(0, 1, 2),
    )
    # ... but above the floor both keep exactly the same: C1's effect must be 0 under both tables
    epochs = (
        raw[["run", "method", "head", "seed", "epoch"]]
        .drop_duplicates()
        .assign(train_acc=0.9, test_acc=0.9)
    )
    table = robustness.claims_by_estimator(
        {"raw": raw, "excess": robustness.floor_corrected(raw)}, epochs
    )
    c1 = table[table["claim"] == "C1"].set_index("estimator")
    assert np.allclose(c1["estimate"], 0.0)
    assert set(c1["verdict"]) == {"inconclusive"}
    assert set(table["estimator"]) == {"raw", "excess"} and len(table) == 2 * 4
    assert set(table["claim"]) == {"C1", "C2", "C3", "C3b"}  # the claims an estimator can change
    assert {"estimate", "ci_low", "ci_high", "p_holm", "verdict"} <= set(table.columns)
    assert "fragile" not in table.columns  # stability only when asked
    stable = robustness.claims_by_estimator({"raw": raw}, epochs, stability=True)
    c1 = stable[stable["claim"] == "C1"].iloc[0]
    assert int(c1["loso_n"]) == 3 and int(c1["loso_flips"]) == 0  # a zero effect in every seed


def test_claims_refuse_mixed_estimators():
    a = _measured(
        {"e2e": [1, 1, 1], "layerwise": [1, 1, 1]},
        {"e2e": [0] * 3, "layerwise": [0] * 3},
        seeds=(0, 1),
    )
    b = a.assign(measure_id="m2")
    epochs = (
        a[["run", "method", "head", "seed", "epoch"]]
        .drop_duplicates()
        .assign(train_acc=1.0, test_acc=1.0)
    )
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        robustness.claims_by_estimator({"mixed": pd.concat([a, b])}, epochs)


def test_scale_response_median_flat_fixed_moves():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.arange(64) % 2
    z = x[:, :4] + 0.3 * torch.randn(64, 4, generator=g, dtype=torch.float64)
    suite = robustness.estimator_suite(64, 32, floor_perms=2)
    out = robustness.scale_response(x, y, z, [0.1, 1.0, 10.0], suite)
    assert len(out) == 3 * len(suite)
    med = out[out["estimator"] == "median bandwidth"]["nhsic_xz"].to_numpy()
    np.testing.assert_allclose(med, med[0], rtol=1e-9)
    fixed = out[out["estimator"].str.startswith("paper")]["nhsic_xz"].to_numpy()
    assert fixed[0] < 0.5 * fixed[-1]
    with pytest.raises(ValueError, match="factors entries must be a finite number"):
        robustness.scale_response(x, y, z, [0.0], suite)


def test_estimator_suite_reads_the_registry():
    from ibstudy.estimators import estimator_names

    suite = robustness.estimator_suite(512, 256, floor_perms=3)
    assert list(suite)[:3] == [robustness.PAPER_LABEL, "median bandwidth", "nHSIC-CKA"]
    assert [m.bandwidth for m in suite.values()] == ["fixed", "median", "fixed", "fixed"]
    assert [m.estimator for m in suite.values()] == ["nhsic", *estimator_names()]
    assert all(isinstance(m, MeasureConfig) and m.floor_perms == 3 for m in suite.values())
    assert list(suite.values())[-1].alpha == 1.01  # Rényi at its default order
    with pytest.raises(ValueError, match="chunk_size must divide eval_size"):
        robustness.estimator_suite(500, 256)


def test_notebook_params_and_run_study_input():
    ns = {
        "preset": "quick",
        "model": "lenet5",
        "first_layer": "conv1",
        "results_dir": "r",
        "np": np,
    }
    assert notebook_params(ns) == {"preset": "quick", "model": "lenet5", "results_dir": "r"}
    with pytest.raises(ValueError, match="variants must be a non-empty list"):
        run_study("02_x", [])
    with pytest.raises(ValueError, match="name must be a plain table name"):
        run_study("a/b", [dict(method="e2e")])
    with pytest.raises(ValueError, match="method must be one of"):
        run_study("02_x", [dict(method="greedy")])


def test_read_pooled_tables_counts_a_shared_run_once(tmp_path):
    from ibstudy.study import read_pooled_tables, write_tables

    t = _measured(
        {"e2e": [3, 2, 1], "layerwise": [3, 2, 1]}, {"e2e": [1] * 3, "layerwise": [1] * 3}
    )
    epochs = t[["run", "method", "head", "seed", "epoch"]].drop_duplicates().assign(test_acc=0.9)
    write_tables("a", epochs, t, results_dir=str(tmp_path), scale="s")
    lw = t["method"] == "layerwise"
    write_tables("b", epochs[epochs["method"] == "layerwise"], t[lw], results_dir=str(tmp_path))
    pooled_epochs, pooled_layers = read_pooled_tables(["a", "b", "c"], results_dir=str(tmp_path))
    assert len(pooled_layers) == len(t) and len(pooled_epochs) == len(epochs)
    assert read_pooled_tables(["c"], results_dir=str(tmp_path)) is None


def test_with_probes_joins_float_epochs_without_a_warning():
    """The training record's epochs are floats (sub-epoch points), a re-measurement's are ints:
    the join matches 1 with 1.0, keeps the re-measurement's dtype and warns about nothing."""
    import warnings

    from ibstudy.robustness import PROBE_COLUMNS, with_probes

    keys = {"run": "r", "method": "e2e", "head": "none", "layer": "conv1"}
    measured = pd.DataFrame([{**keys, "epoch": e, "nhsic_xz": 0.5} for e in (0, 1, 2)])
    layers = pd.DataFrame(
        [{**keys, "epoch": e, **{c: e / 10 for c in PROBE_COLUMNS}} for e in (0.0, 0.125, 1.0, 2.0)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = with_probes(measured, layers)
    assert out["epoch"].dtype == measured["epoch"].dtype and list(out["epoch"]) == [0, 1, 2]
    assert list(out[PROBE_COLUMNS[0]]) == [0.0, 0.1, 0.2]


# ---------------------------------------------------------------- estimator sensitivity
def test_sensitivity_settings_vary_one_factor_at_a_time():
    ref = MeasureConfig(eval_size=512, chunk_size=256, floor_perms=3)
    suite = robustness.estimator_suite(512, 256, floor_perms=3)
    settings = robustness.sensitivity_settings(
        ref, eps_values=[1e-7, 1e-5, 1e-3, 1e-1], chunk_sizes=[128, 256, 512],
        eval_sizes=[256, 512, 768], estimators=suite, dataset="mnist5k",
    )  # fmt: skip
    assert list(settings) == [
        "reference", "eps=1e-07", "eps=0.001", "eps=0.1", "m=128", "m=512", "N=256", "N=768",
        "median bandwidth", "nHSIC-CKA", "Rényi MI (matrix-based)",
    ]  # fmt: skip
    assert settings["reference"] is ref  # the suite's paper entry equals it: left out
    for label, mcfg in settings.items():
        changed = {k for k, v in mcfg.to_dict().items() if ref.to_dict().get(k) != v}
        expected = {"eps": {"eps"}, "m=": {"chunk_size"}, "N=": {"eval_size"}}
        for prefix, fields in expected.items():
            if label.startswith(prefix):
                assert changed == fields, label
    assert settings["eps=0.1"].eps == 0.1 and settings["N=768"].eval_size == 768
    assert settings["Rényi MI (matrix-based)"].estimator == "renyi"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(chunk_sizes=[100]), r"chunk_sizes must divide the reference's eval_size=512"),
        (dict(eval_sizes=[300]), r"eval_sizes must be multiples of the reference's chunk_size"),
        (dict(eval_sizes=[1024]), r"eval_size must be <= 1000"),
        (dict(eps_values=[math.inf]), r"eps_values entries must be a finite number"),
        (dict(eps_values=[0.0]), r"eps_values entries must be a finite number"),
        (dict(eps_values="1e-5"), r"eps_values must be a list of values"),
        (dict(estimators={"x": MeasureConfig(estimator="renyi", alpha=1.0)}), "alpha must be"),
    ],
)
def test_sensitivity_settings_refuse_bad_input(kwargs, message):
    ref = MeasureConfig(eval_size=512, chunk_size=256)
    with pytest.raises(ValueError, match=message):
        robustness.sensitivity_settings(ref, dataset="mnist5k", **kwargs)


def test_claim_epochs_are_the_windows_claims_read():
    assert robustness.claim_epochs(range(41)) == [0, 1, 2, 3, 4, 37, 38, 39, 40]
    assert all(type(e) is int for e in robustness.claim_epochs(range(41)))  # measure() needs ints
    assert robustness.claim_epochs([0, 0.5, 1, 2, 3]) == [0, 1, 2, 3]  # too short for windows
    assert robustness.claim_epochs(range(1, 13)) == [1, 12]  # w = 1
    with pytest.raises(ValueError, match="at least one whole epoch"):
        robustness.claim_epochs([0.5])


def _sensitivity_tables():
    """Three settings of the same runs: the reference, one that moves C1, one that keeps it."""
    ref = _measured(  # excess over the floor: e2e 1, 2, 3 by depth, layer-wise 1, 1, 1
        {"e2e": [10, 9, 8], "layerwise": [10, 6, 4]},
        {"e2e": [9, 7, 5], "layerwise": [9, 5, 3]},
        seeds=(0, 1, 2),
    )
    flat = ref.assign(nhsic_xz=ref["floor_xz"] + 1.0)  # equal excess everywhere: C1's effect 0
    epochs = (
        ref[["run", "method", "head", "seed", "epoch"]]
        .drop_duplicates()
        .assign(train_acc=0.9, test_acc=0.9)
    )
    return {"reference": ref, "flat": flat, "same": ref.assign(measure_id="m2")}, epochs


def test_verdict_changes_and_table_count_the_settings():
    tables, epochs = _sensitivity_tables()
    by = robustness.claims_by_estimator(tables, epochs, reference="reference")
    c1 = by[by["claim"] == "C1"].set_index("estimator")
    assert c1.loc["reference", "verdict"] == "supported"  # e2e keeps more input info with depth
    assert c1.loc["flat", "verdict"] == "inconclusive" and bool(c1.loc["flat", "changed"])
    assert not c1.loc["same", "changed"] and set(c1["reference_verdict"]) == {"supported"}
    changes = robustness.verdict_changes(by).set_index("setting")
    assert list(changes.index) == ["reference", "flat", "same"]
    assert changes.loc["reference", "changed"] == "none" and changes.loc["same", "n_changed"] == 0
    assert "C1: supported -> inconclusive" in changes.loc["flat", "changed"]
    table = robustness.verdict_table(by).set_index("claim")
    assert list(table.index) == ["C1", "C2", "C3", "C3b"]
    assert table.loc["C1", "holds"] == 2 and table.loc["C1", "holds_under"] == "2 of 3"
    assert table.loc["C1", "inconclusive"] == 1 and table.loc["C1", "changed_under"] == "flat"
    counted = table[["holds", "contradicted", "inconclusive", "not_measured"]].sum(axis=1)
    assert (counted == table["settings"]).all()
    assert table.loc["C1", "claimed_sign"] == 2  # the flat setting's effect is exactly 0
    with pytest.raises(ValueError, match="reference must be one of"):
        robustness.claims_by_estimator(tables, epochs, reference="paper")
    with pytest.raises(ValueError, match="lacks required column"):
        robustness.verdict_table(robustness.claims_by_estimator(tables, epochs))


def test_estimator_sensitivity_measures_the_claim_epochs_only(monkeypatch):
    """It re-measures every setting at the claims' epochs (no training) and compares verdicts."""
    tables, epochs = _sensitivity_tables()
    ref = MeasureConfig(eval_size=512, chunk_size=256, floor_perms=3)
    settings = {"reference": ref, "flat": dataclasses.replace(ref, eps=1e-3)}
    calls = []

    class FakeRun(Run):
        def __init__(self, stored):
            self._stored = stored

        def stored_epochs(self):
            return self._stored

        @property
        def config(self):
            return TrainConfig()

    def fake_measure_suite(runs, settings, wanted, progress=False, jobs=None):
        out = {}
        for label, mcfg in settings.items():
            calls.append((mcfg, list(wanted)))
            table = tables["reference" if mcfg is ref else "flat"]
            out[label] = table[table["epoch"].isin(wanted)]
        return out

    monkeypatch.setattr(robustness, "measure_suite", fake_measure_suite)
    runs = [FakeRun([0, 1, 2, 3]), FakeRun([0, 1, 2, 3, 4])]
    by = robustness.estimator_sensitivity(runs, epochs, settings)
    assert [c[1] for c in calls] == [[0, 1, 2, 3]] * 2  # the epochs every run stored
    assert set(by["estimator"]) == {"reference", "flat"} and "changed" in by.columns
    with pytest.raises(ValueError, match="reference must be one of the settings"):
        robustness.estimator_sensitivity(runs, epochs, {"flat": ref})
    with pytest.raises(ValueError, match="runs must be a non-empty list of stored Runs"):
        robustness.estimator_sensitivity([], epochs, settings)
