"""Tests for ibstudy.robustness (notebook 07's helpers) and the notebook glue in ibstudy.study."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibstudy import robustness
from ibstudy.config import MeasureConfig
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
    assert len(out) == 9
    med = out[out["estimator"] == "median bandwidth"]["nhsic_xz"].to_numpy()
    np.testing.assert_allclose(med, med[0], rtol=1e-9)
    fixed = out[out["estimator"].str.startswith("paper")]["nhsic_xz"].to_numpy()
    assert fixed[0] < 0.5 * fixed[-1]
    with pytest.raises(ValueError, match="factors entries must be a finite number"):
        robustness.scale_response(x, y, z, [0.0], suite)


def test_estimator_suite():
    suite = robustness.estimator_suite(512, 256, floor_perms=3)
    assert [m.bandwidth for m in suite.values()] == ["fixed", "median", "fixed"]
    assert [m.estimator for m in suite.values()] == ["nhsic", "nhsic", "nhsic_cka"]
    assert all(isinstance(m, MeasureConfig) and m.floor_perms == 3 for m in suite.values())
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
