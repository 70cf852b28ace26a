"""Tests for per-image test outcomes of stored runs (ibstudy.outcomes)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import outcome_config as tiny

import ibstudy.outcomes as outcomes
from ibstudy.data import INFO, eval_subset, load_dataset
from ibstudy.outcomes import OUTCOME_COLUMNS, outcomes_path, outcomes_table, summarize
from ibstudy.store import Run
from ibstudy.training import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Run]:
    """An E2E run (2 epochs, weights at 0, 1, 2) and a short layer-wise run of another seed."""
    tmp = tmp_path_factory.mktemp("outcomes")
    e2e = train(tiny(tmp), progress=False)
    lw = train(tiny(tmp, method="layerwise", seed=1, epochs=1, train_size=512), progress=False)
    return [e2e, lw]


@pytest.fixture
def run_copy(runs, tmp_path) -> Run:
    """A private copy of the E2E run without outcome caches (tests that write caches use it)."""
    dst = tmp_path / runs[0].path.name
    shutil.copytree(runs[0].path, dst)
    shutil.rmtree(dst / "outcomes", ignore_errors=True)
    return Run.load(dst)


def _recorded_acc(run: Run, epoch: int) -> float:
    rows = run.epochs[run.epochs["epoch"].astype(float) == float(epoch)]
    assert len(rows) == 1
    return float(rows["test_acc"].iloc[0])


# ---------------------------------------------------------------- the outcomes
def test_accuracy_equals_the_recorded_test_acc_exactly(runs):
    test = load_dataset("mnist5k", split="test")
    for run in runs:
        table = outcomes.test_outcomes(run)
        last = run.stored_epochs()[-1]
        assert last == run.config.total_epochs()
        assert list(table.columns) == OUTCOME_COLUMNS and len(table) == INFO["mnist5k"].test_size
        assert (table["epoch"] == last).all() and (table["run"] == run.config.run_id()).all()
        assert (table["image"].to_numpy() == np.arange(len(test))).all()
        assert (table["label"].to_numpy() == test.targets.numpy()).all()  # same set, same order
        assert table["correct"].mean() == _recorded_acc(run, last)
        assert set(table["correct"]) <= {0, 1}
        assert (table["correct"] == (table["pred"] == table["label"])).all()
    epoch0 = outcomes.test_outcomes(runs[0], 0)  # an earlier stored epoch, too
    assert epoch0["correct"].mean() == _recorded_acc(runs[0], 0)
    assert _recorded_acc(runs[0], 2) > 0.5  # the check is not one of chance-level models


def test_loss_and_pred_match_a_float64_reference(runs):
    run = runs[0]
    table = outcomes.test_outcomes(run, 1)
    x, y = eval_subset(load_dataset("mnist5k", split="test"), INFO["mnist5k"].test_size)
    model = Run.load(run.path).load_model(1)
    with torch.no_grad():
        logits = model.eval()(x)
    reference = F.cross_entropy(logits.to(torch.float64), y, reduction="none").numpy()
    assert table["loss"].dtype == np.float64
    np.testing.assert_allclose(table["loss"].to_numpy(), reference, rtol=1e-6, atol=1e-7)
    assert (table["pred"].to_numpy() == logits.argmax(1).numpy()).all()
    assert model.training is False


def test_modes_are_restored(run_copy, monkeypatch):
    seen = []
    load = Run.load_model

    def load_in_train_mode(self, *args, **kwargs):
        model = load(self, *args, **kwargs).train()
        seen.append(model)
        return model

    monkeypatch.setattr(Run, "load_model", load_in_train_mode)
    outcomes.test_outcomes(run_copy)
    assert seen and seen[0].training  # evaluated in eval mode, then put back as it was


# ---------------------------------------------------------------- the cache
def test_cache_is_written_atomically_and_reused(run_copy, monkeypatch):
    first = outcomes.test_outcomes(run_copy)
    path = outcomes_path(run_copy, 2)
    assert path == run_copy.path / "outcomes" / "epoch_0002.csv" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["epoch_0002.csv"]  # no temp file left
    stamp = path.stat().st_mtime_ns

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed although the cache exists")

    monkeypatch.setattr(outcomes, "_compute", no_compute)
    second = outcomes.test_outcomes(str(run_copy.path))  # a path works too
    pd.testing.assert_frame_equal(first, second)
    assert path.stat().st_mtime_ns == stamp


def test_a_cache_older_than_its_weights_is_recomputed(run_copy):
    first = outcomes.test_outcomes(run_copy, 1)
    path = outcomes_path(run_copy, 1)
    weights = run_copy.path / "weights" / "epoch_0001.pt"
    old = weights.stat().st_mtime_ns - 10**9
    os.utime(path, ns=(old, old))  # the weights were rewritten after the cache (a retrain)
    pd.testing.assert_frame_equal(outcomes.test_outcomes(run_copy, 1), first)
    assert path.stat().st_mtime_ns > old


# ---------------------------------------------------------------- tables of several runs
def test_outcomes_table_and_summarize(runs):
    table = outcomes_table(runs)
    assert len(table) == 2 * INFO["mnist5k"].test_size
    assert table.groupby("run")["epoch"].unique().map(list).to_dict() == {
        runs[0].config.run_id(): [2], runs[1].config.run_id(): [1],
    }  # fmt: skip
    summary = summarize(table)
    assert list(summary["run"]) == [r.config.run_id() for r in runs]
    assert list(summary["method"]) == ["e2e", "layerwise"] and list(summary["seed"]) == [0, 1]
    assert list(summary["n_images"]) == [1000, 1000]
    for run, row in zip(runs, summary.itertuples(), strict=True):
        assert row.accuracy == _recorded_acc(run, row.epoch)
        part = table[table["run"] == row.run]
        assert row.test_loss == pytest.approx(part["loss"].mean(), rel=1e-12)
    at_one = outcomes_table(runs, epoch=1)
    assert set(at_one["epoch"]) == {1}
    with pytest.raises(ValueError, match="runs must hold at least one Run"):
        outcomes_table([])
    with pytest.raises(ValueError, match=r"outcomes lacks column\(s\) \['loss'\]"):
        summarize(table.drop(columns="loss"))


# ---------------------------------------------------------------- errors
def test_epoch_without_weights_lists_the_stored_ones(runs):
    with pytest.raises(ValueError, match=r"epoch 7 has no stored weights.*stored epochs: 0-2"):
        outcomes.test_outcomes(runs[0], 7)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
            outcomes.test_outcomes(runs[0], bad)


@pytest.mark.parametrize("method", ["forward_forward", "signal_propagation"])
def test_methods_without_an_argmax_prediction_are_refused(run_copy, method, monkeypatch):
    meta = json.loads((run_copy.path / "config.json").read_text())
    meta["config"].update(method=method, head="none")  # same architecture, another method
    (run_copy.path / "config.json").write_text(json.dumps(meta))
    monkeypatch.setattr(Run, "stored_epochs", lambda self: pytest.fail("work before the check"))
    with pytest.raises(ValueError, match=rf"method '{method}' does not predict.*allowed methods: "
                       r"\['e2e', 'layerwise', 'layerwise_sequential'\]"):  # fmt: skip
        outcomes.test_outcomes(run_copy.path)
    assert not (run_copy.path / "outcomes").exists()


def test_a_real_forward_forward_run_is_refused(tmp_path):
    cfg = tiny(tmp_path, method="forward_forward", epochs=1, train_size=128, probe_size=128)
    run = train(cfg, progress=False)
    with pytest.raises(ValueError, match="method 'forward_forward' does not predict"):
        outcomes.test_outcomes(run)
    # a study's outcomes skip it (and names of folders that do not exist)
    assert outcomes.outcomes_for([run.path.name, "no-such-run"], run.path.parent) is None


def test_outcomes_for_a_study_folder(runs):
    folder = runs[0].path.parent
    table = outcomes.outcomes_for([r.path.name for r in runs] * 2, folder)
    assert list(pd.unique(table["run"])) == [r.path.name for r in runs]
    assert table.groupby("run")["epoch"].first().tolist() == [2, 1]  # each run's last epoch


def test_test_outcomes_is_not_collected_as_a_test():
    assert outcomes.test_outcomes.__test__ is False
