"""Tests for ibstudy.config, ibstudy.checks, ibstudy.tables and ibstudy.store (no training)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ibstudy import checks
from ibstudy.config import (
    MEASURE_FIELDS,
    PRESET_SEEDS,
    PRESETS,
    MeasureConfig,
    TrainConfig,
)
from ibstudy.store import LARGE_MODEL_PARAMS, atomic_write, atomic_write_text, weight_epochs
from ibstudy.tables import check_one_estimator, num_classes_of, select


# ---------------------------------------------------------------- config without torch
def test_config_lists_presets_without_importing_torch():
    code = (
        "import sys, ibstudy.config as c; print(','.join(c.PRESETS)); "
        "c.MeasureConfig(chunk_size=100).to_dict(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(PRESETS)


# ---------------------------------------------------------------- MeasureConfig
def test_measure_config_digest_and_id():
    a, b = MeasureConfig(), MeasureConfig(bandwidth="median")
    assert a.digest() != b.digest() and len(a.digest()) == 10
    assert a.measure_id().startswith("nhsic-fixed-m256-")
    assert MeasureConfig.from_dict(b.to_dict()) == b
    assert b.columns()["measure_id"] == b.measure_id()
    with pytest.raises(ValueError, match=r"unknown MeasureConfig field\(s\) \['sigmas'\]"):
        MeasureConfig.from_dict({"sigmas": 1.0})


def test_train_config_measure_config_is_the_recorded_estimator():
    cfg = TrainConfig(eval_size=256, chunk_size=128, sigma=2.0, eps=1e-3, floor=False, seed=4)
    m = cfg.measure_config()
    assert (m.eval_size, m.chunk_size, m.sigma, m.eps, m.floor_perms) == (256, 128, 2.0, 1e-3, 0)
    assert (m.bandwidth, m.estimator, m.floor_seed) == ("fixed", "nhsic", 0)  # not the run seed


def test_floor_perms_sets_the_recorded_floor_and_is_validated(tmp_path):
    assert TrainConfig().floor_perms == 1 and "floor_perms" in MEASURE_FIELDS
    cfg = TrainConfig.preset("quick", floor_perms=4, results_dir=str(tmp_path))
    assert cfg.measure_config().floor_perms == 4
    off = TrainConfig.preset("quick", floor_perms=4, floor=False, results_dir=str(tmp_path))
    assert off.measure_config().floor_perms == 0  # floor off: no permutations whatever the count
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"floor_perms must be an integer >= 1, got"):
            TrainConfig.preset("quick", floor_perms=bad, results_dir=str(tmp_path))


def test_study_preset_seeds_and_floor():
    assert PRESET_SEEDS["study"] == (0, 1, 2, 3, 4)
    study = TrainConfig.preset("study")
    assert study.floor_perms == 3 and study.measure_config().floor_perms == 3
    assert TrainConfig.preset("quick").floor_perms == TrainConfig.preset("paper").floor_perms == 1


def test_old_configs_without_floor_perms_load_with_one_permutation():
    d = TrainConfig.preset("study").to_dict()
    del d["floor_perms"]  # config.json of runs stored before the field existed
    assert TrainConfig.from_dict(d).measure_config().floor_perms == 1


#: run ids computed before floor_perms existed: measure settings never change a run's id
RUN_ID_PINS = [
    ({}, None, "lenet5-e2e-none-mnist5k-s0-c32a3991"),
    ({}, "quick", "lenet5-e2e-none-mnist5k-s0-1928a47f"),
    ({"method": "layerwise", "head": "mlp", "seed": 1}, "quick",
     "lenet5-layerwise-mlp-mnist5k-s1-f89846a8"),
    ({"seed": 3}, "study", "lenet5-e2e-none-mnist5k-s3-26f3d7f7"),
    ({"method": "layerwise", "seed": 4}, "study", "lenet5-layerwise-linear-mnist5k-s4-92f39e98"),
    ({"method": "layerwise", "nhsic_reg": "global", "nhsic_lambda": 0.05}, "study",
     "lenet5-layerwise-linear-mnist5k-s0-a67b83c6"),
    ({"method": "layerwise_sequential", "epochs": 10}, "study",
     "lenet5-layerwise_sequential-linear-mnist5k-s0-d4d12260"),
    ({"floor": False, "eval_size": 1000, "chunk_size": 250}, "study",
     "lenet5-e2e-none-mnist5k-s0-42f0e225"),
    ({"model": "resnet18"}, "paper", "resnet18-e2e-none-cifar10-s0-0e605264"),
    ({"method": "forward_forward"}, "study", "lenet5-forward_forward-none-mnist5k-s0-b0316411"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, preset, run_id", RUN_ID_PINS)
def test_run_ids_are_pinned(overrides, preset, run_id):
    cfg = TrainConfig(**overrides) if preset is None else TrainConfig.preset(preset, **overrides)
    assert cfg.run_id() == run_id
    for perms in (1, 3, 7):  # the floor's permutations never change the id
        assert dataclasses.replace(cfg, floor_perms=perms).run_id() == run_id


# ---------------------------------------------------------------- weight schedule
def test_weight_epochs_small_model_every_epoch():
    assert weight_epochs(40, 60_000) == tuple(range(41))


def test_weight_epochs_large_model_log_spaced():
    epochs = weight_epochs(400, LARGE_MODEL_PARAMS)
    assert epochs[0] == 0 and epochs[1] == 1 and epochs[-1] == 400
    assert list(epochs) == sorted(set(epochs)) and 15 <= len(epochs) <= 26
    gaps = [b - a for a, b in zip(epochs, epochs[1:], strict=False)]
    assert gaps[0] <= 2 and max(gaps) > 20  # dense early, sparse late
    assert weight_epochs(10, LARGE_MODEL_PARAMS) == tuple(range(11))  # short runs: every epoch


def test_weight_epochs_override():
    assert weight_epochs(400, 10**8, (400, 0, 50, 50)) == (0, 50, 400)


def test_save_epochs_validated(tmp_path):
    with pytest.raises(ValueError, match=r"save_epochs must lie in \[0, 3\]"):
        TrainConfig.preset("quick", save_epochs=(0, 9), results_dir=str(tmp_path))


# ---------------------------------------------------------------- checks
def test_check_int():
    assert checks.check_int("n", 3, minimum=1) == 3
    for bad in (True, 2.0, "3", None):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            checks.check_int("n", bad, minimum=1)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\], got 5"):
        checks.check_int("n", 5, minimum=1, maximum=4)


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 0.0, True, "1"])
def test_check_real_refuses(bad):
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\]"):
        checks.check_real("lr", bad, minimum=0.0, include_minimum=False)


def test_check_real_and_choice_and_lists():
    assert checks.check_real("g", 1, minimum=0.0, maximum=1.0) == 1.0
    with pytest.raises(ValueError, match=r"g must be a finite number in \[0, 1\)"):
        checks.check_real("g", 1.0, minimum=0.0, maximum=1.0, include_maximum=False)
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        checks.check_choice("mode", "c", ("a", "b"))
    assert checks.check_int_list("e", [3, 1]) == (3, 1)
    with pytest.raises(ValueError, match="e must be strictly increasing"):
        checks.check_int_list("e", [3, 1], increasing=True)
    with pytest.raises(ValueError, match="e entries must be an integer >= 0"):
        checks.check_int_list("e", [1, -2], minimum=0)
    with pytest.raises(ValueError, match="flag must be True or False"):
        checks.check_bool("flag", 1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", math.inf, "lr must be a finite number"),
        ("weight_decay", math.inf, "weight_decay must be a finite number"),
        ("milestones", (5, "x"), "milestones entries must be an integer"),
    ],
)
def test_train_config_uses_the_checks(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.preset("quick", results_dir=str(tmp_path), **{field: value})


# ---------------------------------------------------------------- tables
def _table(**cols) -> pd.DataFrame:
    base = {"run": ["a", "a"], "method": ["e2e", "e2e"], "head": ["none", "none"]}
    return pd.DataFrame({**base, **cols})


def test_check_one_estimator():
    ok = _table(measure_id=["x", "x"])
    assert check_one_estimator(ok) is ok
    with pytest.raises(ValueError, match=r"mixes 2 estimators \(measure_id \['x', 'y'\]\)"):
        check_one_estimator(_table(measure_id=["x", "y"]))
    assert check_one_estimator(_table()) is not None  # old tables without the column pass


def test_num_classes_of():
    assert num_classes_of(_table(num_classes=[10, 10])) == 10
    assert num_classes_of(_table(), 3) == 3
    with pytest.raises(ValueError, match="pass num_classes= explicitly"):
        num_classes_of(_table())
    with pytest.raises(ValueError, match=r"holds \[10, 100\] class counts"):
        num_classes_of(_table(num_classes=[10, 100]))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        num_classes_of(_table(), 1)


def test_select():
    t = _table(layer=["conv1", "fc1"])
    assert list(select(t, "layer", "fc1", "layers")["layer"]) == ["fc1"]
    with pytest.raises(ValueError, match=r"layers: unknown value\(s\) \['fc9'\]"):
        select(t, "layer", ["fc9"], "layers")


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one" and oct(os.stat(target).st_mode & 0o777) == "0o644"

    def half(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "one"  # the old content survives a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]  # no temp file left
