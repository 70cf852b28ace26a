"""Several seeds: aggregation (tables.seed_mean, describe.accuracy_summary), seed bands in the plane,
run_study(seeds=...), the study preset (seed-paired claims: tests/test_claims.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ibstudy import describe, plots
from ibstudy.config import TrainConfig, scaled_milestones
from ibstudy.study import run_study
from ibstudy.tables import seed_mean


def _layers(decay: dict[tuple[str, int], float]) -> pd.DataFrame:
    """Two blocks + logits, epochs 0-3; the second block's nHSIC(X;Z) is decay x the first's."""
    rows = []
    for (method, seed), d in decay.items():
        head = "none" if method == "e2e" else "linear"
        for epoch in range(4):
            for index, layer in enumerate(["b1", "b2", "logits"]):
                xz = 10.0 * (d if index else 1.0) + 0.1 * epoch
                rows.append(
                    {
                        "run": f"{method}-s{seed}", "method": method, "head": head, "seed": seed,
                        "dataset": "mnist5k", "num_classes": 10, "epoch": epoch, "layer": layer,
                        "layer_index": index, "nhsic_xz": xz, "nhsic_yz": 5.0 + epoch,
                        "nhsic_xz_std": 0.1, "nhsic_yz_std": 0.1,
                        "floor_xz": 1.0, "floor_yz": 0.1, "head_test_acc": 0.9 if index else 0.5,
                        "probe_test_acc": math.nan, "measure_id": "m",
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def _epochs(acc: dict[tuple[str, int], float]) -> pd.DataFrame:
    rows = []
    for (method, seed), a in acc.items():
        head = "none" if method == "e2e" else "linear"
        for epoch in range(4):
            rows.append(
                {
                    "run": f"{method}-s{seed}", "method": method, "head": head, "seed": seed,
                    "epoch": epoch, "train_acc": a, "test_acc": a if epoch == 3 else 0.1,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_seed_mean_known_values():
    t = _layers({("e2e", 0): 0.5, ("e2e", 1): 0.7, ("e2e", 2): 0.9})
    m = seed_mean(t, ["nhsic_xz"])
    b2 = m[(m["layer"] == "b2") & (m["epoch"] == 0)].iloc[0]
    assert b2["nhsic_xz"] == pytest.approx(7.0)
    assert b2["nhsic_xz_seed_std"] == pytest.approx(2.0)  # std of 5, 7, 9 (ddof=1)
    assert b2["n_seeds"] == 3 and b2["run"] == "e2e/none (seed mean)"
    assert b2["floor_xz"] == 1.0  # constant columns are kept
    assert len(m) == 4 * 3
    one = seed_mean(t[t["seed"] == 0], ["nhsic_xz"])
    assert one["nhsic_xz_seed_std"].isna().all()


def test_accuracy_summary_mean_std_and_readouts():
    ep = _epochs(
        {("e2e", 0): 0.90, ("e2e", 1): 0.92, ("layerwise", 0): 0.80, ("layerwise", 1): 0.84}
    )
    lay = _layers({("e2e", 0): 1, ("e2e", 1): 1, ("layerwise", 0): 1, ("layerwise", 1): 1})
    per_run = describe.accuracy_table(ep, lay)
    assert set(per_run["seed"]) == {0, 1}
    assert (per_run["last_head_test_acc"] == 0.9).all()  # the last block's (b2) own head
    summary = describe.accuracy_summary(ep, lay).set_index("method")
    assert summary.loc["e2e", "n_seeds"] == 2
    assert summary.loc["e2e", "final_test_acc_mean"] == pytest.approx(0.91)
    assert summary.loc["layerwise", "final_test_acc_std"] == pytest.approx(
        np.std([0.8, 0.84], ddof=1)
    )
    assert summary.loc["e2e", "final_test_acc"] == "0.910 +- 0.014"


def test_plane_seed_mean_band():
    t = _layers({("e2e", 0): 0.5, ("e2e", 1): 0.7, ("layerwise", 0): 0.4, ("layerwise", 1): 0.6})
    fig = plots.plot_plane(t, seeds="mean")
    assert isinstance(fig, Figure)
    bars = [c for ax in fig.axes for c in ax.containers]
    assert bars  # error bars across seeds are drawn
    with pytest.raises(ValueError, match=r"seeds must be one of \['each', 'mean'\]"):
        plots.plot_plane(t, seeds="median")


@pytest.mark.parametrize(
    "seeds, message",
    [
        ([], "seeds must be a non-empty list"),
        ([0, -1], "seeds entries must be an integer >= 0"),
        ([0, 1.5], "seeds entries must be an integer"),
        ([1, 1], "seeds must be distinct"),
        ("012", "seeds must be a non-empty list"),
    ],
)
def test_run_study_bad_seeds(tmp_path, monkeypatch, seeds, message):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the seeds were checked")

    monkeypatch.setattr("ibstudy.study.train_all", boom)
    with pytest.raises(ValueError, match=message):
        run_study("x", [dict(method="e2e")], seeds=seeds, results_dir=str(tmp_path))


def test_run_study_expands_seeds(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        "ibstudy.study.train_all", lambda cfgs, progress, jobs=None: seen.extend(cfgs) or []
    )
    monkeypatch.setattr(
        "ibstudy.study.concat_tables", lambda runs: (pd.DataFrame(), pd.DataFrame())
    )
    monkeypatch.setattr("ibstudy.study.write_tables", lambda *a, **k: None)
    run_study(
        "x", [dict(method="e2e"), dict(method="layerwise")], seeds=[0, 2], results_dir=str(tmp_path)
    )
    assert [(c.method, c.seed) for c in seen] == [
        ("e2e", 0), ("e2e", 2), ("layerwise", 0), ("layerwise", 2),
    ]  # fmt: skip


def test_study_preset_scales_the_schedule(tmp_path):
    cfg = TrainConfig.preset("study", results_dir=str(tmp_path))
    assert cfg.epochs == 40 and cfg.milestones == (20, 30, 35, 38) and cfg.gamma == 0.2
    assert cfg.probe_epochs == (0, 10, 20, 40)
    short = TrainConfig.preset("study", epochs=10, results_dir=str(tmp_path))
    assert short.milestones == scaled_milestones(10) == (5, 8, 9)
    with pytest.raises(ValueError, match="milestones must lie within the 10 epochs"):
        TrainConfig.preset("paper", epochs=10, probe_epochs=(10,), results_dir=str(tmp_path))
