"""Tests for ibstudy.training: methods, recorder, checkpoints/resume, bad input."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import tiny_config

import ibstudy.training as training
from ibstudy.losses import cross_entropy
from ibstudy.methods import e2e as e2e_method
from ibstudy.training import TrainConfig, Trainer, TrainingDiverged, train

tiny = tiny_config


def assert_same_metrics(full, resumed) -> None:
    """Two runs' tables are identical, apart from run ids and wall-clock seconds."""
    drop = ["seconds", "run"]
    pd.testing.assert_frame_equal(
        full.epochs.drop(columns=drop), resumed.epochs.drop(columns=drop), check_exact=True
    )
    pd.testing.assert_frame_equal(
        full.layers.drop(columns=["run"]), resumed.layers.drop(columns=["run"]), check_exact=True
    )


# ---------------------------------------------------------------- gradients
def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def test_layerwise_block_gets_no_gradient_from_deeper_losses(tmp_path):
    tr = Trainer(tiny(tmp_path, method="layerwise"), progress=False)
    x, y = tr.plane.chunk(0)
    y = tr.y_eval[: x.shape[0]]
    loss, _ = tr.batch_loss(x, y)
    loss.backward()
    full = _grads(tr.model.blocks[0])
    tr.model.zero_grad()
    tr.heads.zero_grad()
    # block 0's own local loss alone gives exactly the same gradient
    local = cross_entropy(tr.heads[0](tr.model.blocks[0](x)), y)
    local.backward()
    for a, b in zip(full, _grads(tr.model.blocks[0]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # and the final classifier's loss reaches no block at all
    tr.model.zero_grad()
    tr.heads.zero_grad()
    h = x
    for block in tr.model.blocks:
        h = block(h.detach())
    cross_entropy(tr.model.classifier(h.detach()), y).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in tr.model.blocks.parameters())


def test_e2e_first_block_gets_gradient_from_output(tmp_path):
    tr = Trainer(tiny(tmp_path), progress=False)
    x, _ = tr.plane.chunk(0)
    loss, _ = tr.batch_loss(x, tr.y_eval[: x.shape[0]])
    loss.backward()
    assert sum(p.grad.abs().sum() for p in tr.model.blocks[0].parameters()) > 0
    assert len(tr.heads) == 0


def test_parameter_counts_equal_except_heads(tmp_path):
    e2e = Trainer(tiny(tmp_path, model="resnet18", width=0.125), progress=False)
    lw = Trainer(
        tiny(tmp_path, model="resnet18", width=0.125, method="layerwise", head="mlp"),
        progress=False,
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(e2e.model) == count(lw.model)
    assert count(lw.heads) > 0
    opt_params = sum(p.numel() for g in lw.optimizer.param_groups for p in g["params"])
    assert opt_params == count(lw.model) + count(lw.heads)


def test_sequential_freezes_earlier_blocks_and_their_batchnorm(tmp_path):
    cfg = tiny(
        tmp_path, model="resnet18", width=0.125, method="layerwise_sequential", epochs=1,
        train_size=128, probe_size=128, probe_epochs=(),
    )  # fmt: skip
    assert cfg.total_epochs() == 10  # 9 blocks + the classifier, one epoch each
    after_stage0 = train(cfg, stop_after=1, progress=False)
    model0 = after_stage0.load_model()
    after_stage1 = train(cfg, resume=True, stop_after=2, progress=False)
    model1 = after_stage1.load_model()
    s0, s1 = model0.blocks[0].state_dict(), model1.blocks[0].state_dict()
    for key in s0:  # weights and BatchNorm running statistics of the frozen stem are unchanged
        assert torch.equal(s0[key], s1[key]), key
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            model0.blocks[1].state_dict().values(),
            model1.blocks[1].state_dict().values(),
            strict=True,
        )
    ]
    assert any(changed)


# ---------------------------------------------------------------- quick preset on mnist5k
@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    runs = {}
    for method in ("e2e", "layerwise"):
        cfg = TrainConfig.preset(
            "quick", method=method, device="cpu", results_dir=str(root / "runs"), probe_steps=50
        )
        runs[method] = train(cfg, progress=False)
    return runs


def test_quick_preset_accuracy(quick_runs):
    assert quick_runs["e2e"].epochs["test_acc"].iloc[-1] >= 0.90
    assert quick_runs["layerwise"].epochs["test_acc"].iloc[-1] >= 0.85
    # both far above chance at init? no: at epoch 0 near chance
    assert quick_runs["e2e"].epochs["test_acc"].iloc[0] < 0.3


def test_quick_preset_tables(quick_runs):
    for method, run in quick_runs.items():
        assert run.complete
        assert run.epochs["epoch"].tolist() == [0, 1, 2, 3]
        layers = run.layers
        names = ["conv1", "conv2", "fc1", "fc2", "logits"]
        assert len(layers) == 4 * len(names)
        assert set(layers["layer"]) == set(names)
        assert layers.groupby("epoch")["layer_index"].apply(list).tolist() == [list(range(5))] * 4
        for col in ("nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz"):
            assert layers[col].map(math.isfinite).all(), (method, col)
        last = layers[layers.epoch == 3]
        # the labels are better captured than by a shuffled representation
        assert (last["nhsic_yz"] > last["floor_yz"]).all()
        probes = last.iloc[:4]
        assert (probes["probe_test_acc"] > 0.5).all()
        assert layers[layers.epoch < 3]["probe_test_acc"].isna().all()
        if method == "layerwise":
            assert (last["head_test_acc"].iloc[:4] > 0.5).all()
        else:
            assert layers["head_test_acc"].isna().all()
        on_disk = pd.read_csv(run.path / "layers.csv")
        pd.testing.assert_frame_equal(on_disk, layers)
        meta = json.loads((run.path / "config.json").read_text())
        assert meta["complete"] and meta["config"]["method"] == method


def test_completed_run_is_reused(quick_runs):
    run = quick_runs["e2e"]
    again = train(run.config, resume=True, progress=False)
    pd.testing.assert_frame_equal(again.epochs, run.epochs)


# ---------------------------------------------------------------- resume
@pytest.mark.parametrize("method", ["e2e", "layerwise"])
def test_resume_equals_uninterrupted(tmp_path, method):
    full = train(tiny(tmp_path / "a", method=method, probe_epochs=(1, 2)), progress=False)
    cfg = tiny(tmp_path / "b", method=method, probe_epochs=(1, 2))
    partial = train(cfg, stop_after=1, progress=False)
    assert not partial.complete and partial.epochs["epoch"].tolist() == [0, 1]
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.complete
    assert_same_metrics(full, resumed)


def test_fractional_record_points_in_order_with_steps(tmp_path):
    fractions = (0.125, 0.25, 0.5)
    cfg = tiny(tmp_path, record_fractions=fractions, probe_epochs=(2,))
    run = train(cfg, progress=False)
    steps_per_epoch = 512 // 64
    ep = run.epochs
    # 1/8, 1/4, 1/2 of 8 batches are batches 1, 2, 4: epoch = steps / steps per epoch
    assert ep["epoch"].tolist() == [0, 0.125, 0.25, 0.5, 1, 2]
    assert ep["step"].tolist() == [0, 1, 2, 4, steps_per_epoch, 2 * steps_per_epoch]
    assert ep["step"].is_monotonic_increasing and ep["epoch"].is_monotonic_increasing
    # every point has one row per layer, with the same step as the epochs table
    layers = run.layers
    per_point = layers.groupby("epoch").size()
    assert per_point.tolist() == [cfg.num_blocks() + 1] * 6
    merged = layers.merge(ep[["epoch", "step"]], on="epoch", suffixes=("", "_ep"))
    assert (merged["step"] == merged["step_ep"]).all()
    # the fitting phase is a curve: the first block's nHSIC(Y;Z) changes between the early points
    conv1 = layers[layers["layer_index"] == 0].set_index("epoch")["nhsic_yz"]
    assert conv1.loc[[0, 0.125, 0.25, 0.5, 1]].diff().abs().iloc[1:].min() > 0
    # probes only at whole epochs; sub-epoch points store no weights
    assert layers.dropna(subset=["probe_test_acc"])["epoch"].unique().tolist() == [2]
    assert run.stored_epochs() == [0, 1, 2] and run.complete
    # a whole-epoch row is the model at that epoch whether or not sub-epoch points were recorded
    plain = train(tiny(tmp_path / "plain", probe_epochs=(2,)), progress=False)
    whole = ep[ep["epoch"] == ep["epoch"].round()].reset_index(drop=True)
    cols = ["epoch", "step", "train_loss", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(whole[cols], plain.epochs[cols], check_dtype=False)


def test_fractional_points_resume_and_reload(tmp_path):
    cfg = tiny(tmp_path, record_fractions=(0.25, 0.5))
    full = train(cfg, progress=False)
    other = tiny(tmp_path / "b", record_fractions=(0.25, 0.5))
    train(other, stop_after=1, progress=False)
    resumed = train(other, resume=True, progress=False)
    drop = ["seconds", "run"]
    pd.testing.assert_frame_equal(
        full.epochs.drop(columns=drop), resumed.epochs.drop(columns=drop), check_exact=True
    )
    again = training.Run.load(cfg.run_dir())
    assert again.complete and not again.repaired
    assert again.epochs["epoch"].tolist() == [0, 0.25, 0.5, 1, 2]


@pytest.mark.parametrize(
    "fractions", [(0.0,), (1.0,), (0.5, 0.25), (-0.1,), (float("nan"),), "0.5"]
)
def test_bad_record_fractions(tmp_path, fractions):
    with pytest.raises(ValueError, match="record_fractions"):
        tiny(tmp_path, record_fractions=fractions)


def test_record_fractions_keep_old_run_ids(tmp_path):
    plain = tiny(tmp_path)
    assert "record_fractions" not in plain.identity()
    with_points = tiny(tmp_path, record_fractions=(0.5,))
    assert with_points.run_id() != plain.run_id()


def test_resume_with_other_config_names_field(tmp_path):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg, progress=False)
    other = tiny(tmp_path, epochs=1, lr=0.01, run_name=cfg.run_id())
    with pytest.raises(ValueError, match="lr: stored 0.001, given 0.01"):
        train(other, resume=True, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        train(cfg, progress=False)


def test_nan_loss_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=3, probe_epochs=())
    calls = {"n": 0}
    batches_per_epoch = 512 // 64

    def flaky(logits, y):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        if calls["n"] == batches_per_epoch + 3:  # epoch 2, batch 3
            return loss * float("nan")
        return loss

    monkeypatch.setattr(e2e_method, "cross_entropy", flaky)
    with pytest.raises(TrainingDiverged, match="epoch 2, batch 3"):
        train(cfg, progress=False)
    run = training.Run.load(cfg.run_dir())
    assert run.epochs["epoch"].tolist() == [0, 1] and not run.complete
    state = torch.load(cfg.run_dir() / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "lenet6"}, "model must be one of"),
        ({"method": "greedy"}, "method must be one of"),
        ({"method": "layerwise", "head": "conv"}, "head must be one of"),
        ({"method": "layerwise", "local_loss": "hinge"}, "local_loss must be one of"),
        ({"dataset": "cifar11"}, "dataset must be one of"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"eval_size": 300}, "eval_size must be a multiple of chunk_size"),
        ({"eval_size": 2048}, "eval_size must be <= 1000"),
        ({"head": "linear"}, "head must be 'none' when method='e2e'"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_config(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.preset("quick", results_dir=str(tmp_path), **overrides)
    assert list(tmp_path.iterdir()) == []


def test_bad_config_fails_before_data_or_files(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=0, results_dir=str(tmp_path / "runs"))

    def no_data(*a, **k):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(training, "load_splits", no_data)
    with pytest.raises(ValueError, match="epochs"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig.preset("fast")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.preset("quick", learning_rate=0.1)


def test_paper_preset_matches_spec():
    cfg = TrainConfig.preset("paper", device="cpu")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("adam", 5e-4, 128, 400)
    assert cfg.milestones == (200, 300, 350, 375) and cfg.gamma == 0.2
    assert cfg.dataset == "cifar10" and cfg.augment
    seq = TrainConfig.preset("paper", method="layerwise_sequential", device="cpu")
    assert seq.epochs == 50 and seq.head == "linear"


def test_cli_help_and_tiny_run(tmp_path, capsys):
    from ibstudy.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--method" in capsys.readouterr().out
    code = main(
        [
            "train", "--method", "layerwise", "--epochs", "1", "--train-size", "256",
            "--eval-size", "256", "--probe-size", "256", "--device", "cpu",
            "--results-dir", str(tmp_path), "--run-name", "cli",
        ]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "cli" / "layers.csv").exists()
    assert main(["train", "--model", "lenet7", "--results-dir", str(tmp_path)]) == 2
    assert "model must be one of" in capsys.readouterr().err
