"""Class geometry beside information (ibstudy.geometry): known values, invariances, the SNN loss
against the float64 reference in ibstudy.losses, a stored run re-read and cached, bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from ibstudy import geometry as geo
from ibstudy.config import MeasureConfig
from ibstudy.data import eval_subset, load_dataset
from ibstudy.losses import snn_loss
from ibstudy.measure import evaluating
from ibstudy.store import Run
from ibstudy.training import train


def _clustered(rng: np.random.Generator, m: int = 40, classes: int = 4, d: int = 6, spread=0.3):
    y = torch.arange(m) % classes
    centres = torch.tensor(rng.normal(size=(classes, d)) * 3.0)
    z = centres[y] + spread * torch.tensor(rng.normal(size=(m, d)))
    return z, y


# ---------------------------------------------------------------------------------- one chunk


def test_within_ratio_known_value_and_extremes():
    z = torch.tensor([[0.0], [2.0], [10.0], [12.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # within: 1 + 1 + 1 + 1; total around the mean 6: 36 + 16 + 16 + 36
    assert geo.within_class_ratio(z, y) == pytest.approx(4 / 104, abs=1e-15)
    collapsed = torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 0.0], [5.0, 0.0]])
    assert geo.within_class_ratio(collapsed, y) == 0.0
    assert math.isnan(geo.within_class_ratio(torch.ones(4, 3), y))  # constant: no variance


def test_within_ratio_invariances():
    rng = np.random.default_rng(0)
    z, y = _clustered(rng, spread=1.0)
    base = geo.within_class_ratio(z, y)
    q, _ = np.linalg.qr(rng.normal(size=(z.shape[1], z.shape[1])))
    moved = 3.5 * z @ torch.tensor(q) + torch.tensor(rng.normal(size=z.shape[1]))
    perm = torch.tensor(rng.permutation(z.shape[0]))
    assert geo.within_class_ratio(moved, y) == pytest.approx(base, rel=1e-12)
    assert geo.within_class_ratio(z[perm], y[perm]) == pytest.approx(base, rel=1e-12)
    assert 0.0 < base < 1.0


@pytest.mark.parametrize("sigma", [0.3, 1.0, 5.0])
def test_snn_loss_matches_the_reference_at_the_plane_bandwidth(sigma):
    """The fixed rule's kernel is exp(-||z - z'||^2 / (2 sigma^2 d)): an SNN temperature 2 sigma^2 d."""
    rng = np.random.default_rng(1)
    z, y = _clustered(rng, m=30, classes=3, d=5, spread=1.0)
    values = geo.class_geometry(z, y, "fixed", sigma)
    reference = float(snn_loss(z, y, temperature=2 * sigma**2 * z.shape[1]))
    assert values["snn_loss"] == pytest.approx(reference, rel=1e-10)


def test_snn_loss_under_the_median_rule_matches_the_reference():
    rng = np.random.default_rng(2)
    z, y = _clustered(rng, m=24, classes=3, d=4, spread=1.0)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1).numpy()
    median = float(np.median(d2[np.triu_indices(len(z), 1)]))
    values = geo.class_geometry(z, y, "median")
    assert values["snn_loss"] == pytest.approx(float(snn_loss(z, y, 2 * median)), rel=1e-10)


def test_snn_chance_is_the_loss_without_geometry():
    y = torch.arange(20) % 4  # 4 classes of 5: every point has 4 of 19 others in its class
    loss, chance = geo.snn_from_gram(torch.ones(20, 20), y)
    assert chance == pytest.approx(math.log(19 / 4), abs=1e-14)
    assert loss == pytest.approx(chance, abs=1e-14)
    z, y = _clustered(np.random.default_rng(3), m=40, classes=4, spread=0.05)
    values = geo.class_geometry(z, y, "fixed", 0.5)
    assert values["snn_loss"] < 0.01 * values["snn_chance"]  # tightly clustered: near 0
    assert values["within_ratio"] < 0.01


def test_singletons_are_left_out_of_the_snn_means():
    y = torch.tensor([0, 0, 1, 2])  # classes 1 and 2 have no partner
    k = torch.ones(4, 4)
    loss, chance = geo.snn_from_gram(k, y)
    assert loss == pytest.approx(math.log(3.0)) and chance == pytest.approx(math.log(3.0))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: geo.class_geometry(torch.ones(4, 2), torch.tensor([0, 0, 1, 1]), "mean"),
         "bandwidth"),
        (lambda: geo.class_geometry(torch.ones(4, 2), torch.tensor([0.0, 0, 1, 1])), "integer"),
        (lambda: geo.within_class_ratio(torch.ones(4, 2), torch.tensor([0, 1])), "y must"),
        (lambda: geo.snn_from_gram(torch.ones(3, 3), torch.tensor([0, 1, 2])), "partners"),
        (lambda: geo.snn_from_gram(torch.ones(3, 2), torch.tensor([0, 1, 1])), "square"),
    ],
)  # fmt: skip
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------- a stored run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return train(tiny_config(tmp_path_factory.mktemp("geo"), probe_epochs=()), progress=False)


def test_a_stored_run_is_measured_per_block_and_epoch(run):
    table = geo.geometry(run)
    assert list(table.columns) == geo.GEOMETRY_COLUMNS
    assert sorted(table["epoch"].unique()) == run.stored_epochs() == [0, 1, 2]
    assert len(table) == 3 * len(run.build_model().block_names)
    assert table["within_ratio"].between(0, 1).all() and np.isfinite(table["snn_loss"]).all()
    assert (table["run"] == run.config.run_id()).all()
    # the same numbers from the model's own features, chunk by chunk (float64 reference)
    cfg = run.config
    x, y = eval_subset(load_dataset(cfg.dataset, split="test", download=False), cfg.eval_size)
    model = run.load_model(2)
    chunks = []
    with evaluating(model):
        for start in range(0, cfg.eval_size, cfg.chunk_size):
            _, zs = model(x[start : start + cfg.chunk_size], return_blocks=True)
            chunks.append([
                geo.class_geometry(z, y[start : start + cfg.chunk_size], "fixed", cfg.sigma)
                for z in zs
            ])  # fmt: skip
    last = table[table["epoch"] == 2].sort_values("layer_index")
    for index, row in enumerate(last.itertuples()):
        for value in geo.GEOMETRY_VALUES:
            expected = np.mean([c[index][value] for c in chunks])
            assert getattr(row, value) == pytest.approx(expected, rel=1e-12)


def test_the_table_is_cached_and_redone_after_a_retrain(run, monkeypatch):
    first = geo.geometry(run)
    path = geo.geometry_cache_path(run, run.config.measure_config())
    assert path.exists() and path.parent.name == "measures"
    calls = []

    def counting(self, epoch=None, **kwargs):
        calls.append(epoch)
        return original(self, epoch, **kwargs)

    original = Run.load_model
    monkeypatch.setattr(Run, "load_model", counting)
    again = geo.geometry(run)
    pd.testing.assert_frame_equal(again, first)
    assert calls == []  # read from the cache
    weights = run.path / "weights" / "epoch_0001.pt"
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(weights, ns=(later, later))  # as if the run had been retrained
    redone = geo.geometry(run)
    assert calls == [0, 1, 2]
    pd.testing.assert_frame_equal(redone, first)


def test_a_median_measure_config_gets_its_own_cache(run):
    median = MeasureConfig(eval_size=256, chunk_size=128, bandwidth="median")
    table = geo.geometry(run, median, epochs=[2])
    assert set(table["bandwidth"]) == {"median"} and set(table["epoch"]) == {2}
    assert geo.geometry_cache_path(run, median) != geo.geometry_cache_path(
        run, run.config.measure_config()
    )


def test_bad_settings_are_refused_before_any_model_is_loaded(run, monkeypatch):
    monkeypatch.setattr(Run, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match="no stored weights"):
        geo.geometry(run, epochs=[7])
    with pytest.raises(ValueError, match="mcfg must be a MeasureConfig"):
        geo.geometry(run, {"bandwidth": "fixed"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        geo.geometry(run, MeasureConfig(eval_size=256, chunk_size=100))


def test_geometry_beside_the_runs_plane(run):
    table = geo.geometry(run)
    corr = geo.geometry_vs_information(table, run.layers)
    assert list(corr.columns) == geo.CORRELATION_COLUMNS
    assert len(corr) == len(geo.PAIRS) * len(geo.SCOPES)
    pooled = corr[corr["scope"] == "pooled"]
    assert (pooled["n_points"] == len(table)).all()  # whole epochs only: the plane's sub-epoch
    assert pooled["spearman"].between(-1, 1).all()  # points have no weights
    fig = geo.plot_geometry(table.assign(method="e2e"), run.layers)
    assert len(fig.axes) == 4 * 4


# ---------------------------------------------------------------------------------- correlations


def _tables(sign: float, floors: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows_geo, rows_info = [], []
    for seed in (0, 1):
        for layer_index, layer in enumerate(("a", "b", "c")):
            for epoch in range(5):
                yz = 0.1 * epoch + layer_index + 0.01 * seed
                xz = 5 - 0.3 * epoch * (layer_index + 1)
                base = {"run": f"r{seed}", "epoch": epoch, "layer": layer}
                rows_geo.append({**base, "method": "e2e", "head": "none", "seed": seed,
                                 "layer_index": layer_index, "snn_loss": sign * -yz,
                                 "snn_chance": 2.3, "within_ratio": 0.1 * xz})  # fmt: skip
                floor = 0.5 * epoch if floors else 0.0
                rows_info.append({**base, "nhsic_xz": xz + floor, "floor_xz": floor,
                                  "nhsic_yz": yz + floor, "floor_yz": floor})  # fmt: skip
    return pd.DataFrame(rows_geo), pd.DataFrame(rows_info)


def test_planted_monotone_relations_give_spearman_one():
    geometry_table, layers = _tables(1.0)
    corr = geo.geometry_vs_information(geometry_table, layers).set_index(
        ["run", "geometry", "information", "scope"]
    )
    for run_id in ("r0", "r1"):
        for scope in geo.SCOPES:
            assert corr.loc[(run_id, "snn_loss", "nhsic_yz", scope), "spearman"] == pytest.approx(
                -1
            )
            assert corr.loc[(run_id, "within_ratio", "nhsic_xz", scope), "spearman"] == (
                pytest.approx(1)
            )
    raw = geo.geometry_vs_information(geometry_table, layers, value="raw")
    assert set(raw["value"]) == {"raw"}  # the floors grow with epochs: raw values differ
    raw_rho = raw.set_index(["run", "geometry", "information", "scope"])["spearman"]
    assert raw_rho.loc[("r0", "within_ratio", "nhsic_xz", "pooled")] < 1
    summary = geo.correlation_summary(geo.geometry_vs_information(geometry_table, layers))
    row = summary[(summary["geometry"] == "snn_loss") & (summary["information"] == "nhsic_yz")]
    assert (row["n_seeds"] == 2).all() and np.allclose(row["mean_spearman"], -1)
    assert np.allclose(row["ci_low"], -1) and np.allclose(row["ci_high"], -1)  # no spread


def test_correlation_summary_interval_over_seeds():
    corr = pd.DataFrame({
        "method": "e2e", "head": "none", "geometry": "snn_loss", "information": "nhsic_yz",
        "scope": "pooled", "expected_sign": -1, "spearman": [-0.2, -0.4, -0.9],
    })  # fmt: skip
    out = geo.correlation_summary(corr).iloc[0]
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std([-0.2, -0.4, -0.9], ddof=1) / math.sqrt(3)
    assert out["mean_spearman"] == pytest.approx(-0.5)
    assert out["ci_low"] == pytest.approx(-0.5 - half) and out["ci_high"] == pytest.approx(
        -0.5 + half
    )


def test_tables_without_common_points_are_refused():
    geometry_table, layers = _tables(1.0)
    with pytest.raises(ValueError, match="share no"):
        geo.geometry_vs_information(geometry_table, layers.assign(run="other"))
    with pytest.raises(ValueError, match="value"):
        geo.geometry_vs_information(geometry_table, layers, value="relative")
    with pytest.raises(ValueError, match="lacks required column"):
        geo.geometry_vs_information(geometry_table.drop(columns="snn_loss"), layers)
    mixed = pd.concat([layers.assign(measure_id="a"), layers.assign(measure_id="b")])
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        geo.geometry_vs_information(geometry_table, mixed)
