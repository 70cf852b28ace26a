"""Tests for ibstudy.probes: separable vs random labels, invariances, determinism, model mode."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ibstudy.heads import pool_features
from ibstudy.models import build_model
from ibstudy.probes import block_features, fit_probe, probe_blocks


def _blobs(n: int, d: int, c: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: unit-variance noise around c random centres of norm ``sep``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1) * sep
    y = torch.arange(n) % c
    return centres[y] + torch.randn(n, d, generator=g), y


def _split(x: torch.Tensor, y: torch.Tensor):
    h = x.shape[0] // 2
    return x[:h], y[:h], x[h:], y[h:]


def test_separable_blobs_high_accuracy() -> None:
    x, y = _blobs(800, 20, 4, sep=8.0, seed=0)
    tr, te = fit_probe(*_split(x, y)[:2], *_split(x, y)[2:], 4)
    assert tr >= 0.95 and te >= 0.95


def test_random_labels_test_accuracy_near_chance() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1600, 50, generator=g)
    y = torch.randint(0, 4, (1600,), generator=g)
    tr, te = fit_probe(x[:400], y[:400], x[400:], y[400:], 4)
    assert abs(te - 0.25) < 0.06  # 1200 test points: chance +- ~4 standard errors
    assert tr > te + 0.1  # 50 features on 400 points: the probe memorizes part of the noise


def test_invariant_to_per_feature_affine_rescaling() -> None:
    x, y = _blobs(
        400, 10, 3, sep=3.0, seed=2
    )  # overlapping blobs: accuracies strictly inside (0,1)
    xtr, ytr, xte, yte = _split(x, y)
    scale = torch.logspace(-3, 3, 10)
    shift = torch.linspace(-50, 50, 10)
    a = fit_probe(xtr, ytr, xte, yte, 3)
    b = fit_probe(xtr * scale + shift, ytr, xte * scale + shift, yte, 3)
    assert 0.5 < a[1] < 1.0
    assert a == pytest.approx(b, abs=1.0 / 200 + 1e-9)  # at most one point differs


def test_deterministic_for_a_seed_and_accepts_image_shaped_features() -> None:
    x, y = _blobs(300, 48, 3, sep=2.0, seed=3)
    x = x.reshape(300, 3, 4, 4)
    xtr, ytr, xte, yte = _split(x, y)
    first = fit_probe(xtr, ytr, xte, yte, 3, steps=15, seed=7)
    second = fit_probe(xtr, ytr, xte, yte, 3, steps=15, seed=7)
    assert first == second
    assert fit_probe(xtr.flatten(1), ytr, xte.flatten(1), yte, 3, steps=15, seed=7) == first


def test_constant_feature_does_not_break_standardization() -> None:
    x, y = _blobs(200, 5, 2, sep=8.0, seed=4)
    x = torch.cat([x, torch.full((200, 1), 3.0)], dim=1)
    tr, te = fit_probe(*_split(x, y)[:2], *_split(x, y)[2:], 2)
    assert tr >= 0.95 and te >= 0.95


def _image_blobs(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _blobs(n, 3 * 32 * 32, c, sep=40.0, seed=seed)
    return x.reshape(n, 3, 32, 32), y


def test_block_features_match_forward_and_restore_mode() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 3, 32, width=0.125)
    x = torch.randn(10, 3, 32, 32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = block_features(model, x, batch_size=4)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():  # eval mode inside: BN statistics untouched
        assert torch.equal(v, before[k]), k
    model.eval()
    with torch.no_grad():
        _, zs = model(x, return_blocks=True)
    assert len(feats) == len(model.blocks)
    for f, z in zip(feats, zs, strict=True):
        assert f.shape == (10, pool_features(z).shape[1]) and f.shape[1] <= 2048
        torch.testing.assert_close(f, pool_features(z), rtol=1e-4, atol=1e-5)
    assert not model.training  # eval stays eval
    block_features(model, x)
    assert not model.training


def test_block_features_restores_mode_on_error() -> None:
    model = build_model("lenet5", 3, 3, 32).train()
    with pytest.raises(RuntimeError):
        block_features(model, torch.randn(2, 1, 32, 32))  # wrong channel count
    assert model.training


def test_probe_blocks_table_on_lenet5() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", 3, 3, 32)
    x, y = _image_blobs(240, 3, seed=5)
    model.train()
    table = probe_blocks(model, x[:120], y[:120], x[120:], y[120:], 3, steps=50)
    assert model.training
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["layer", "layer_index", "probe_train_acc", "probe_test_acc"]
    assert table["layer"].tolist() == ["conv1", "conv2", "fc1", "fc2"]
    assert table["layer_index"].tolist() == [0, 1, 2, 3]
    assert table[["probe_train_acc", "probe_test_acc"]].apply(lambda s: s.between(0, 1)).all().all()
    # the classes are far apart in input space: the first block keeps them linearly separable
    assert table.loc[0, "probe_test_acc"] >= 0.9
    again = probe_blocks(model, x[:120], y[:120], x[120:], y[120:], 3, steps=50)
    pd.testing.assert_frame_equal(table, again)
    # a subset of the blocks (each torchrun rank fits its share): the same rows, to the bit
    part = probe_blocks(
        model, x[:120], y[:120], x[120:], y[120:], 3, steps=50, blocks=range(1, 4, 2)
    )
    pd.testing.assert_frame_equal(part, table.iloc[[1, 3]].reset_index(drop=True))
    empty = probe_blocks(model, x[:120], y[:120], x[120:], y[120:], 3, steps=50, blocks=[])
    assert len(empty) == 0 and list(empty.columns) == list(table.columns)
    for bad in ([4], [1, 1], [-1]):
        with pytest.raises(ValueError, match=r"blocks must be distinct block indices in \[0, 3\]"):
            probe_blocks(model, x[:120], y[:120], x[120:], y[120:], 3, blocks=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"train_y": torch.zeros(9, dtype=torch.long)}, "train_y"),
        ({"test_y": torch.full((10,), 5)}, "test_y"),
        ({"train_y": torch.zeros(10)}, "integer"),
        ({"test_feats": torch.zeros(10, 4)}, "feature count"),
    ],
)
def test_fit_probe_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "train_feats": torch.randn(10, 3),
        "train_y": torch.arange(10) % 2,
        "test_feats": torch.randn(10, 3),
        "test_y": torch.arange(10) % 2,
        "num_classes": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_probe(**args)


def test_block_features_and_probe_blocks_bad_input() -> None:
    model = build_model("lenet5", 3, 3, 32)
    with pytest.raises(ValueError, match="batch_size"):
        block_features(model, torch.randn(2, 3, 32, 32), batch_size=0)
    with pytest.raises(ValueError, match="y_train"):
        x = torch.randn(4, 3, 32, 32)
        probe_blocks(
            model, x, torch.zeros(3, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 3
        )


def _reference_probe(xtr, ytr, xte, yte, c: int, steps: int, wd: float) -> tuple[float, float]:
    """The probe's objective minimized in float64 with the feature-major (D, C) weight, by the
    same L-BFGS: an independent reference for the class-major float32 fit."""
    xtr, xte = xtr.double(), xte.double()
    mean, std = xtr.mean(0), xtr.std(0, correction=0)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    w = (0.01 * torch.randn(xtr.shape[1], c, generator=torch.Generator().manual_seed(0))).double()
    w.requires_grad_(True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, history_size=20, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr) + 0.5 * wd * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (
            ((xtr @ w + b).argmax(1) == ytr).double().mean().item(),
            ((xte @ w + b).argmax(1) == yte).double().mean().item(),
        )


def test_the_float32_probe_reaches_the_float64_reference_optimum() -> None:
    """A strongly convex probe (L2 1e-2) has one optimum: the class-major float32 fit and a
    float64 feature-major reference classify the same points (one point of slack each)."""
    x, y = _blobs(1200, 64, 5, sep=2.5, seed=5)  # overlapping: accuracies strictly inside (0, 1)
    xtr, ytr, xte, yte = _split(x, y)
    got = fit_probe(xtr, ytr, xte, yte, 5, steps=300, weight_decay=1e-2)
    want = _reference_probe(xtr, ytr, xte, yte, 5, steps=300, wd=1e-2)
    assert 0.5 < want[1] < 0.99
    assert got == pytest.approx(want, abs=1.0 / 600 + 1e-9)
