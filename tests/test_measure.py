"""Tests for measurement as its own stage: stored weights, MeasureConfig, measure(), the CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

import ibstudy.measure as measure_mod
from ibstudy.__main__ import main
from ibstudy.config import MeasureConfig, TrainConfig
from ibstudy.hsic import InfoPlane, gaussian_median, nhsic, nhsic_cka
from ibstudy.measure import cache_path, measure
from ibstudy.store import Run
from ibstudy.tables import MEASURE_COLUMNS
from ibstudy.training import train

NHSIC = ["nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz", "nhsic_xz_std", "nhsic_yz_std"]


def tiny(tmp_path, **overrides) -> TrainConfig:
    """The shared tiny config without probes."""
    return tiny_config(tmp_path, **{"probe_epochs": (), **overrides})


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Run:
    """One tiny trained layer-wise run (2 epochs, weights at 0, 1, 2)."""
    tmp = tmp_path_factory.mktemp("measure")
    return train(tiny(tmp, method="layerwise"), progress=False)


@pytest.fixture
def run_copy(stored, tmp_path) -> Run:
    """A private copy of the stored run (tests that write caches or damage files use it)."""
    dst = tmp_path / stored.path.name
    shutil.copytree(stored.path, dst)
    shutil.rmtree(dst / "measures", ignore_errors=True)
    return Run.load(dst)


def _files(run: Run) -> dict[str, bytes]:
    return {n: (run.path / n).read_bytes() for n in ("checkpoint.pt", "epochs.csv", "layers.csv")}


# ---------------------------------------------------------------- stored weights
def test_weights_stored_every_epoch_and_match_checkpoint(stored):
    assert stored.stored_epochs() == [0, 1, 2]
    last = stored.load_model(2).state_dict()
    final = stored.load_model().state_dict()
    assert all(torch.equal(last[k], final[k]) for k in final)
    first = stored.load_model(0).state_dict()
    assert not all(torch.equal(first[k], final[k]) for k in final)  # training moved the weights


def test_tables_carry_dataset_classes_and_estimator(stored):
    layers = stored.layers
    assert set(layers["dataset"]) == {"mnist5k"} and set(layers["num_classes"]) == {10}
    assert set(stored.epochs["dataset"]) == {"mnist5k"}
    assert layers["measure_id"].nunique() == 1
    assert layers["measure_id"].iloc[0] == stored.config.measure_config().measure_id()
    assert set(layers["bandwidth"]) == {"fixed"} and set(layers["chunk_size"]) == {128}


# ---------------------------------------------------------------- re-measurement
def test_default_remeasure_reproduces_recorded_layers(run_copy):
    before = _files(run_copy)
    table = measure(run_copy)
    recorded = run_copy.layers.sort_values(["epoch", "layer_index"], ignore_index=True)
    assert len(table) == len(recorded) == 3 * 5
    assert (table["layer"].to_numpy() == recorded["layer"].to_numpy()).all()
    np.testing.assert_allclose(
        table[NHSIC].to_numpy(float), recorded[NHSIC].to_numpy(float), rtol=1e-9, atol=0
    )
    assert _files(run_copy) == before  # checkpoint.pt, epochs.csv, layers.csv untouched
    assert cache_path(run_copy, run_copy.config.measure_config()).is_file()


def test_cache_is_hit_on_second_call(run_copy, monkeypatch):
    mcfg = MeasureConfig(eval_size=256, chunk_size=64, bandwidth="median", floor_perms=2)
    first = measure(run_copy, mcfg)

    def boom(*args, **kwargs):
        raise AssertionError("model loaded although the cache holds every epoch")

    monkeypatch.setattr(Run, "load_model", boom)
    second = measure(run_copy, mcfg)
    pd.testing.assert_frame_equal(first, second, check_dtype=False)
    # a subset of epochs is served from the same cache
    assert list(measure(run_copy, mcfg, epochs=[1])["epoch"].unique()) == [1]


def test_cache_grows_with_new_epochs(run_copy):
    mcfg = MeasureConfig(eval_size=256, chunk_size=128, eps=1e-3)
    measure(run_copy, mcfg, epochs=[2])
    assert sorted(pd.read_csv(cache_path(run_copy, mcfg))["epoch"].unique()) == [2]
    table = measure(run_copy, mcfg, epochs=[0, 2])
    assert sorted(table["epoch"].unique()) == [0, 2]
    assert sorted(pd.read_csv(cache_path(run_copy, mcfg))["epoch"].unique()) == [0, 2]


def test_failed_remeasure_leaves_files_and_caches_untouched(run_copy, monkeypatch):
    good = MeasureConfig(eval_size=256, chunk_size=128, eps=1e-3)
    measure(run_copy, good, epochs=[0])
    cache = cache_path(run_copy, good)
    before = {**_files(run_copy), "cache": cache.read_bytes()}
    calls = {"n": 0}
    real = measure_mod.PlaneRecorder.measure

    def fail_second(self, model):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real(self, model)

    monkeypatch.setattr(measure_mod.PlaneRecorder, "measure", fail_second)
    with pytest.raises(RuntimeError, match="injected"):
        measure(run_copy, good, epochs=[0, 1, 2])
    assert {**_files(run_copy), "cache": cache.read_bytes()} == before
    leftovers = [p.name for p in run_copy.path.rglob(".*.tmp")]
    assert leftovers == []


def test_floor_spread_with_several_permutations(run_copy):
    table = measure(run_copy, MeasureConfig(eval_size=256, chunk_size=128, floor_perms=6))
    assert (table["floor_xz_std"] > 0).all() and (table["floor_yz_std"] > 0).all()
    assert table["floor_xz_std"].notna().all()
    one = measure(run_copy, MeasureConfig(eval_size=256, chunk_size=128, floor_perms=1))
    assert one["floor_xz_std"].isna().all()  # a single replicate has no spread
    # the first permutation of each chunk is the same with k = 1 and k = 6: k = 1 is a prefix
    np.testing.assert_allclose(one["nhsic_xz"], table["nhsic_xz"], rtol=1e-12)


# ---------------------------------------------------------------- estimator properties
def _data(m: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 12, generator=g, dtype=torch.float64)
    y = torch.arange(m) % 4
    z = torch.tanh(x[:, :6] @ torch.randn(6, 5, generator=g, dtype=torch.float64)) + y[:, None]
    return x, y, z


def test_median_bandwidth_invariant_to_scale_fixed_is_not():
    x, y, z = _data()
    median = InfoPlane(x, y, chunk_size=32, bandwidth="median", eps=1e-3)
    fixed = InfoPlane(x, y, chunk_size=32, bandwidth="fixed", eps=1e-3)
    for c in (0.1, 7.0):
        a = median.measure({"z": z}).iloc[0]
        b = median.measure({"z": z * c}).iloc[0]
        assert b["nhsic_xz"] == pytest.approx(a["nhsic_xz"], rel=1e-9)
        assert b["nhsic_yz"] == pytest.approx(a["nhsic_yz"], rel=1e-9)
        fa, fb = fixed.measure({"z": z}).iloc[0], fixed.measure({"z": z * c}).iloc[0]
        assert abs(fb["nhsic_xz"] / fa["nhsic_xz"] - 1) > 0.05


def test_plane_estimators_equal_the_direct_forms():
    x, y, z = _data()
    m = 32
    med = InfoPlane(x, y, chunk_size=m, bandwidth="median", eps=1e-3).measure_chunk(1, {"z": z[m:]})
    gx, gz = gaussian_median(x[m:]), gaussian_median(z[m:])
    # nhsic on precomputed Grams: a linear kernel on the Gram's square root would differ; compare
    # against the operators built from the same median Grams instead
    from ibstudy.hsic import _trace_product, center, nocco_operator

    ref = _trace_product(nocco_operator(center(gx), 1e-3), nocco_operator(center(gz), 1e-3))
    assert med["z"]["nhsic_xz"] == pytest.approx(ref, rel=1e-9)
    cka = InfoPlane(x, y, chunk_size=m, normalized=True, eps=1e-2).measure_chunk(0, {"z": z[:m]})
    assert cka["z"]["nhsic_xz"] == pytest.approx(nhsic_cka(x[:m], z[:m], eps=1e-2), rel=1e-9)
    assert cka["z"]["nhsic_yz"] == pytest.approx(
        nhsic_cka(y[:m], z[:m], kernel_a="linear", eps=1e-2), rel=1e-9
    )
    assert 0.0 <= cka["z"]["nhsic_xz"] <= 1.0


def test_floor_mean_approaches_its_expectation():
    """E_P tr(R_X P R_Z P^T) = tr(R_X) tr(R_Z) / (m - 1) for a uniformly random permutation P."""
    x, y, z = _data(m=48, seed=3)
    eps = 1e-2
    ip = InfoPlane(x, y, chunk_size=48, eps=eps, floor_perms=400, seed=1)
    row = ip.measure({"z": z}).iloc[0]
    from ibstudy.hsic import center, gram, nocco_operator

    tr_x = float(nocco_operator(center(gram(x, "gaussian")), eps).trace())
    tr_z = float(nocco_operator(center(gram(z, "gaussian")), eps).trace())
    expected = tr_x * tr_z / 47
    # 400 replicates: the mean's standard error is std / 20; allow 4 of them
    assert row["floor_xz"] == pytest.approx(expected, abs=4 * row["floor_xz_std"] / 20)
    assert row["nhsic_xz"] > row["floor_xz"] + 5 * row["floor_xz_std"]  # z depends on x
    assert nhsic(x, z, eps=eps) == pytest.approx(row["nhsic_xz"], rel=1e-9)


# ---------------------------------------------------------------- bad input
@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail if measure() loads a model or a dataset (bad input must be refused before)."""

    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the input was checked")

    monkeypatch.setattr(Run, "load_model", boom)
    monkeypatch.setattr("ibstudy.data.load_dataset", boom)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(chunk_size=100), "chunk_size must divide eval_size"),
        (dict(bandwidth="silverman"), r"bandwidth must be one of \['fixed', 'median'\]"),
        (dict(estimator="cka"), r"estimator must be one of \['nhsic', 'nhsic_cka', 'renyi'\]"),
        (dict(eval_size=2048, chunk_size=256), "eval_size must be <= 1000"),
        (dict(eps=0.0), "eps must be a finite number"),
        (dict(eps=math.inf), "eps must be a finite number"),
        (dict(estimator="renyi", alpha=1.0), r"alpha must be > 0 and != 1"),
        (dict(estimator="renyi", alpha=-0.5), r"alpha must be a finite number in \(0, inf\]"),
        (dict(alpha=3.0), r"alpha is a setting of the estimator\(s\) \['renyi'\] only"),
        (dict(floor_perms=-1), "floor_perms must be an integer >= 0"),
    ],
)
def test_bad_measure_config(stored, no_heavy_work, settings, message):
    mcfg = MeasureConfig(**{**MeasureConfig(eval_size=256, chunk_size=128).to_dict(), **settings})
    with pytest.raises(ValueError, match=message):
        measure(stored, mcfg)


def test_missing_weights_named_before_loading(stored, no_heavy_work):
    with pytest.raises(
        ValueError, match=r"epochs \[7\] have no stored weights.*stored epochs: 0-2"
    ):
        measure(stored, None, epochs=[7])


def test_run_without_weights_says_what_to_do(run_copy):
    shutil.rmtree(run_copy.path / "weights")
    meta = json.loads((run_copy.path / "config.json").read_text())
    meta.pop("format")
    (run_copy.path / "config.json").write_text(json.dumps(meta))
    old = Run.load(run_copy.path)  # an older run folder still loads
    assert old.format == 1 and len(old.layers) == 15
    with pytest.raises(ValueError, match="stores no model weights.*retrain"):
        measure(old)


def test_old_tables_are_filled_with_the_current_schema(run_copy):
    layers = pd.read_csv(run_copy.path / "layers.csv")
    old = layers.drop(columns=["dataset", "num_classes", "measure_id", "floor_xz_std", "bandwidth"])
    old.to_csv(run_copy.path / "layers.csv", index=False)
    loaded = Run.load(run_copy.path).layers
    assert list(loaded.columns) == list(layers.columns)
    assert set(loaded["measure_id"]) == set(layers["measure_id"])
    assert set(loaded["num_classes"]) == {10} and loaded["floor_xz_std"].isna().all()


# ---------------------------------------------------------------- identity and the CLI
def test_measure_settings_leave_the_run_id(tmp_path):
    a = tiny(tmp_path)
    b = tiny(tmp_path, chunk_size=64, sigma=2.0, eps=1e-3, floor=False, save_epochs=(0, 2))
    assert a.run_id() == b.run_id()
    assert a.run_id() != tiny(tmp_path, lr=2e-3).run_id()


def test_resume_with_other_measure_settings_keeps_the_stored_ones(run_copy, tmp_path):
    cfg = run_copy.config
    other = TrainConfig.from_dict(
        {**cfg.to_dict(), "chunk_size": 64, "results_dir": str(run_copy.path.parent)}
    )
    again = train(other, resume=True, progress=False)  # complete: reused, nothing retrained
    assert again.path == run_copy.path
    assert set(again.layers["chunk_size"]) == {128}


def test_cli_measure(run_copy, capsys):
    code = main(["measure", str(run_copy.path), "--bandwidth", "median", "--chunk-size", "64",
                 "--epochs", "2", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "measures/nhsic-median-m64-" in out and "logits" in out
    assert len(list((run_copy.path / "measures").glob("*.csv"))) == 1


def test_cli_measure_bad_input_is_one_line(run_copy, capsys):
    assert main(["measure", str(run_copy.path), "--chunk-size", "100", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: chunk_size must divide eval_size")
    assert main(["measure", str(run_copy.path / "nope")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_measure_nan_free(stored):
    table = measure(stored, MeasureConfig(eval_size=256, chunk_size=128, estimator="nhsic_cka"))
    assert table[["nhsic_xz", "nhsic_yz"]].map(math.isfinite).all().all()
    assert ((table["nhsic_xz"] >= 0) & (table["nhsic_xz"] <= 1)).all()


def test_renyi_remeasure_writes_alpha_and_is_cached(run_copy, monkeypatch):
    mcfg = MeasureConfig(eval_size=256, chunk_size=128, estimator="renyi", floor_perms=3)
    table = measure(run_copy, mcfg)
    assert list(table.columns) == [*MEASURE_COLUMNS, "alpha"] and set(table["alpha"]) == {1.01}
    assert set(table["estimator"]) == {"renyi"} and len(table) == 3 * 5
    assert table["measure_id"].iloc[0].startswith("renyi-fixed-m128-")
    values = table[["nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz", "floor_xz_std"]]
    assert values.map(math.isfinite).all().all() and (values >= 0).all().all()
    # the first block of a trained network carries information about its input above the floor
    last = table[table["epoch"] == 2].iloc[0]
    assert last["nhsic_xz"] > last["floor_xz"] + 5 * last["floor_xz_std"]

    def boom(*args, **kwargs):
        raise AssertionError("model loaded although the cache holds every epoch")

    monkeypatch.setattr(Run, "load_model", boom)
    pd.testing.assert_frame_equal(measure(run_copy, mcfg), table, check_dtype=False)


def test_remeasure_with_a_registered_estimator_matches_the_plane(run_copy):
    """measure() of the nHSIC estimators through the registry reproduces InfoPlane on the run."""
    from ibstudy.data import eval_subset, load_dataset

    mcfg = MeasureConfig(eval_size=256, chunk_size=128, estimator="nhsic_cka", floor_perms=2)
    table = measure(run_copy, mcfg, epochs=[2])
    x, y = eval_subset(load_dataset("mnist5k", split="test", root="data"), 256)
    model = run_copy.load_model(2).eval()
    with torch.no_grad():
        logits, zs = model(x, return_blocks=True)
    plane = InfoPlane(x, y, chunk_size=128, floor_perms=2, normalized=True)
    ref = plane.measure(dict(zip([*model.block_names, "logits"], [*zs, logits], strict=True)))
    np.testing.assert_allclose(table[NHSIC].to_numpy(float), ref[NHSIC].to_numpy(float), rtol=1e-12)


def test_plots_and_descriptions_take_any_measure_table(stored):
    from matplotlib.figure import Figure

    from ibstudy import describe, plots

    median = measure(stored, MeasureConfig(eval_size=256, chunk_size=128, bandwidth="median"))
    assert isinstance(plots.plot_plane(median), Figure)
    profile = describe.depth_profile(median)
    assert list(profile["layer"]) == ["conv1", "conv2", "fc1", "fc2", "logits"]
    mixed = pd.concat([median, stored.layers], ignore_index=True)
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        plots.plot_plane(mixed)
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        describe.depth_profile(mixed)
