"""The toy experiment (paper Fig 4): the SNN/HSIC identity on Z1, Fig 4's geometry, determinism.

Also bad input; the identity itself (ibstudy.losses.snn_hsic_identity) is tested in test_losses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ibstudy.losses import kernel_mass, snn_hsic_identity, snn_loss
from ibstudy.toy import (
    HISTORY_COLUMNS,
    TOY_METHODS,
    ToyConfig,
    aux_direction,
    aux_direction_coordinates,
    paper_first_layer,
    train_toy,
)


@pytest.fixture(scope="module")
def runs():
    """Both methods at the notebook's default settings (history every 50 steps to save time)."""
    return {m: train_toy(m, record_every=50) for m in TOY_METHODS}


# --------------------------------------------------------------------------------------------------
# the identity tr(K H L H) = sum_i D'_i (r_i - 1/C) + m (1 - 1/C) on the trained first layer
# --------------------------------------------------------------------------------------------------
def test_identity_and_jensen_on_trained_first_layer(runs):
    for run in runs.values():
        out = snn_hsic_identity(run.z1(), run.y_eval, run.config.snn_temperature)
        assert out["abs_diff"] < 1e-8
        # the history's hsic_yz is this HSIC (float32 Z1 there, float64 here)
        assert run.history["hsic_yz"].iloc[-1] == pytest.approx(out["hsic"], rel=1e-4)
        assert out["mean_r"] > out["exp_neg_snn"]  # Jensen, strict for unequal r_i
        # the history's mean kernel mass is the identity's factor D'_i / (m - 1)
        mass = kernel_mass(run.z1().double(), run.config.snn_temperature).mean()
        assert run.history["mean_kernel_mass"].iloc[-1] == float(mass)


# --------------------------------------------------------------------------------------------------
# the trained first layer: paper Fig 4's geometry
# --------------------------------------------------------------------------------------------------
def test_both_methods_learn_the_task(runs):
    for run in runs.values():
        last = run.history.iloc[-1]
        assert last["accuracy"] > 0.9
        assert last["aux_accuracy"] > 0.85  # a linear readout (radius is the clean separator)
        assert last["loss"] < 0.5 * run.history["loss"].iloc[0]


def test_layerwise_first_layer_stretches_the_label_direction(runs):
    lw, e2e = runs["layerwise"], runs["e2e"]
    # same initial layer, so the same starting point in the plane
    assert lw.history["nhsic_xz"].iloc[0] == pytest.approx(e2e.history["nhsic_xz"].iloc[0])
    # the layer-wise W is anisotropic (paper: sqrt(1.9)/sqrt(0.1) = 4.4); the E2E W stays near-isotropic
    assert lw.history["sv_ratio"].iloc[-1] > 3.0
    assert e2e.history["sv_ratio"].iloc[-1] < 1.5
    # ... stretched along the auxiliary classifier's direction (Fig 4's x-axis)
    assert lw.summary()["alignment"] > 0.9
    coords = lw.aux_coordinates()
    assert float(coords[:, 0].std() / coords[:, 1].std()) > 3.0
    assert lw.summary()["sv_max"] ** 2 + lw.summary()["sv_min"] ** 2 == pytest.approx(2.0)


def test_layerwise_discards_input_information_e2e_keeps_it(runs):
    lw, e2e = runs["layerwise"].history, runs["e2e"].history
    assert lw["nhsic_xz"].iloc[-1] < 0.85 * lw["nhsic_xz"].iloc[0]
    assert e2e["nhsic_xz"].iloc[-1] > 0.95 * e2e["nhsic_xz"].iloc[0]
    assert lw["nhsic_xz"].iloc[-1] < e2e["nhsic_xz"].iloc[-1] - 3.0
    # label information stays near its ceiling C - 1 = 1 for both
    assert lw["nhsic_yz"].min() > 0.95 and e2e["nhsic_yz"].min() > 0.95


def test_history_layout():
    run = train_toy("e2e", n_train=200, n_eval=64, steps=25, record_every=10)
    h = run.history
    assert list(h.columns) == list(HISTORY_COLUMNS)
    assert h["step"].tolist() == [0, 10, 20, 25]
    assert (h["method"] == "e2e").all()
    assert h.drop(columns="method").notna().all().all()


def test_snn_local_loss_and_minibatches():
    run = train_toy("layerwise", local_loss="snn", n_train=200, n_eval=64, steps=5, batch_size=64)
    # the recorded loss is the SNN loss of the trained layer's Z1 on the whole training set
    want = float(snn_loss(run.z1(run.x_train), run.y_train, run.config.snn_temperature))
    assert run.history["loss"].iloc[-1] == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------------
def test_deterministic_given_seed_and_global_rng_untouched():
    kw = dict(n_train=200, n_eval=64, steps=20, record_every=10, batch_size=50)
    torch.manual_seed(123)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_toy("layerwise", seed=3, **kw)
    assert torch.equal(before, torch.get_rng_state()) and torch.get_num_threads() == threads
    b = train_toy("layerwise", seed=3, **kw)
    c = train_toy("layerwise", seed=4, **kw)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert torch.equal(a.weight(), b.weight())
    assert not a.history["nhsic_xz"].equals(c.history["nhsic_xz"])


# --------------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------------
def test_aux_direction_coordinates_known_values_and_isometry():
    v = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # class 1 minus class 0 = (0, 2): u = (0, 1)
    z = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(aux_direction_coordinates(z, v), torch.tensor([[2.0, -1.0]]))
    assert torch.allclose(aux_direction(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8]))
    zr = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    vr = torch.randn(2, 2, generator=torch.Generator().manual_seed(1))
    coords = aux_direction_coordinates(zr, vr)
    assert torch.allclose(coords.norm(dim=1), zr.norm(dim=1), atol=1e-5)
    assert torch.allclose(aux_direction_coordinates(zr, 5 * vr), coords, atol=1e-5)


def test_paper_first_layer_in_aux_coordinates():
    w = paper_first_layer()
    assert torch.allclose(w @ w.T, torch.diag(torch.tensor([1.9, 0.1])))
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    z = x @ w.T
    assert torch.allclose(aux_direction_coordinates(z, torch.tensor([1.0, 0.0])), z)


def test_geometry_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="v_weight"):
        aux_direction(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="zero"):
        aux_direction(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="z1"):
        aux_direction_coordinates(torch.zeros(4, 3), torch.ones(2))


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "greedy"}, "method must be one of \\['layerwise', 'e2e'\\]"),
        ({"n_train": 101}, "n_train must be even"),
        ({"n_eval": 2}, "n_eval must be an integer >= 4"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"record_every": 0}, "record_every"),
        ({"local_loss": "mse"}, "local_loss must be one of"),
        ({"kernel": "linear"}, "kernel must be one of"),
        ({"sigma": float("nan")}, "sigma"),
        ({"weight_norm": 0.0}, "weight_norm"),
        ({"batch_size": 5000}, "batch_size must be <= n_train"),
        ({"seed": -1}, "seed"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_train_toy_rejects_bad_input(kwargs, message):
    kwargs = {"method": "e2e", **kwargs}
    with pytest.raises(ValueError, match=message):
        train_toy(kwargs.pop("method"), **kwargs)


# ---------------------------------------------------------------- ablations of the toy's choices
def test_aux_init_random_starts_v_away_from_zero():
    from ibstudy.toy import ToyNet

    torch.manual_seed(0)
    assert ToyNet().aux.weight.abs().sum() == 0
    torch.manual_seed(0)
    assert ToyNet(aux_init="random").aux.weight.abs().sum() > 0
    with pytest.raises(ValueError, match=r"aux_init must be one of \['zero', 'random'\]"):
        ToyConfig("e2e", aux_init="normal").validate()


def test_converged_on_known_histories():
    from ibstudy.toy_ablation import converged

    steps = np.arange(0, 101, 10)
    flat = pd.DataFrame({"step": steps, "loss": 1.0 / (1 + steps) + 0.5})
    assert converged(flat)  # 0.5099 -> 0.5099: change 0.2 % over the last 20 steps
    falling = pd.DataFrame({"step": steps, "loss": 1.0 - 0.009 * steps})
    assert not converged(falling)  # 0.28 -> 0.10 over the last 20 steps
    near_zero = pd.DataFrame({"step": steps, "loss": 1e-3 * 0.5**steps})
    assert converged(near_zero)  # halves every step, but by less than atol = 1e-3
    assert not converged(near_zero, atol=0.0)
    assert not converged(falling.iloc[:1])  # a single point cannot show convergence


def test_toy_ablation_rows_and_validation_first(monkeypatch):
    from ibstudy import toy_ablation as ta

    base = dict(n_train=200, n_eval=64, steps=20, record_every=10)
    table = ta.toy_ablation(
        base, {"baseline": {}, "free W norm": {"weight_norm": None}}, seeds=[0, 1]
    )
    assert len(table) == 2 * 2 * 2 and set(table["steps"]) == {20}
    assert set(table["method"]) == {"e2e", "layerwise"}
    free = table[table["variant"] == "free W norm"]
    fixed = table[table["variant"] == "baseline"]
    assert not free["sv_ratio"].equals(fixed["sv_ratio"])  # the variant changed the runs
    assert table["xz_kept"].between(0, 2).all()

    def boom(*args, **kwargs):
        raise AssertionError("trained before every config was validated")

    monkeypatch.setattr(ta, "train_toy", boom)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ta.toy_ablation(base, {"ok": {}, "bad": {"sigma": -1.0}}, seeds=[0])
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        ta.toy_ablation(base, seeds=[])
