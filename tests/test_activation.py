"""Tests for the activation option (issue 24): tanh LeNet5 and VGG, relu ids kept, ResNet refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ibstudy.__main__ import main
from ibstudy.config import TrainConfig
from ibstudy.models import ACTIVATIONS, MODELS, build_model
from ibstudy.store import Run


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_tanh_lenet5_blocks_lie_in_open_unit_interval():
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1, 28, activation="tanh").eval()
    assert _count(model, nn.Tanh) == 4 and _count(model, nn.ReLU) == 0
    x = torch.rand(32, 1, 28, 28)
    with torch.no_grad():
        _, blocks = model(x, return_blocks=True)
    assert len(blocks) == 4
    for name, z in zip(model.block_names, blocks, strict=True):
        assert bool((z.abs() < 1).all()), name  # every block ends in tanh (then max-pool)
        assert bool((z < 0).any()), name  # not a ReLU: negative values occur


def test_relu_lenet5_is_the_default_and_unchanged():
    torch.manual_seed(0)
    default = build_model("lenet5", 10, 1, 28)
    torch.manual_seed(0)
    relu = build_model("lenet5", 10, 1, 28, activation="relu")
    assert _count(default, nn.ReLU) == 4 and _count(default, nn.Tanh) == 0
    assert str(default) == str(relu)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        _, blocks = default(x, return_blocks=True)
    assert all(bool((z >= 0).all()) for z in blocks)


@pytest.mark.parametrize("name", ["lenet5", "vgg8b", "vgg11b"])
def test_activation_changes_no_parameter(name):
    """Same seed, same weights: the activation has no parameters and draws no random numbers."""
    width = 1.0 if name == "lenet5" else 0.125
    torch.manual_seed(3)
    relu = build_model(name, 10, 3, 32, width=width)
    torch.manual_seed(3)
    tanh = build_model(name, 10, 3, 32, width=width, activation="tanh")
    a, b = relu.state_dict(), tanh.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["vgg8b", "vgg11b"])
def test_tanh_vgg_blocks_are_bounded(name):
    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32, width=0.125, activation="tanh").eval()
    assert _count(model, nn.ReLU) == 0
    assert _count(model, nn.Tanh) == len(model.blocks)  # one per block
    with torch.no_grad():
        _, blocks = model(torch.randn(4, 3, 32, 32), return_blocks=True)
    for z in blocks:
        assert bool((z.abs() <= 1).all())
        assert bool((z < 0).any())


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("resnet")])
def test_resnet_refuses_tanh(name):
    with pytest.raises(ValueError, match=r"activation must be one of \['relu'\]"):
        build_model(name, 10, 3, 32, width=0.125, activation="tanh")
    with pytest.raises(ValueError, match=r"activation must be one of \['relu'\]"):
        TrainConfig(model=name, dataset="cifar10", activation="tanh").validate()
    build_model(name, 10, 3, 32, width=0.125, activation="relu")  # relu stays allowed


@pytest.mark.parametrize("bad", ["gelu", "ReLU", "", None, 1])
def test_unknown_activation_is_refused(bad):
    allowed = str(list(ACTIVATIONS)).replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(ValueError, match=rf"activation must be one of {allowed}"):
        build_model("lenet5", 10, 1, 28, activation=bad)
    with pytest.raises(ValueError, match=rf"activation must be one of {allowed}"):
        TrainConfig(activation=bad).validate()


@pytest.mark.parametrize("preset", ["quick", "study", "paper"])
def test_relu_run_ids_are_unchanged_and_tanh_ids_differ(preset):
    cfg = TrainConfig.preset(preset)
    assert cfg.activation == "relu"
    assert "activation" not in cfg.identity()  # relu ids are the ids from before the option
    explicit = TrainConfig.preset(preset, activation="relu")
    assert explicit.run_id() == cfg.run_id()
    tanh = TrainConfig.preset(preset, activation="tanh")
    assert tanh.identity()["activation"] == "tanh"
    assert tanh.run_id() != cfg.run_id()
    assert dataclasses.replace(cfg, activation="tanh").run_id() == tanh.run_id()


def test_config_round_trip_and_old_configs_load_as_relu():
    cfg = TrainConfig.preset("quick", activation="tanh")
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again.activation == "tanh" and again.run_id() == cfg.run_id()
    old = TrainConfig.preset("quick").to_dict()
    old.pop("activation")  # a config.json written before the option existed
    assert TrainConfig.from_dict(old).activation == "relu"
    assert TrainConfig.from_dict(old).run_id() == TrainConfig.preset("quick").run_id()


def test_models_built_from_a_config_use_its_activation(tmp_path: Path):
    cfg = TrainConfig.preset("quick", activation="tanh")
    assert cfg.num_blocks() == 4
    run = Run(cfg, tmp_path, pd.DataFrame(), pd.DataFrame(), complete=False)
    model = run.build_model()
    assert _count(model, nn.Tanh) == 4 and _count(model, nn.ReLU) == 0


def test_cli_lists_activation(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--activation" in capsys.readouterr().out


def test_a_tanh_run_trains_stores_and_reloads_as_tanh(tmp_path: Path):
    """A tanh LeNet5 trains through train(), its run id says it differs, and the stored weights
    reload into a tanh model whose blocks give the training record's outputs' range."""
    from conftest import tiny_config

    from ibstudy.training import train

    run = train(tiny_config(tmp_path, activation="tanh", train_size=256, probe_size=256,
                            epochs=1, probe_epochs=()), progress=False)  # fmt: skip
    assert run.complete and run.config.activation == "tanh"
    model = run.load_model(1)
    x = torch.randn(4, 1, 32, 32)
    _, zs = model(x, return_blocks=True)
    assert all(float(z.detach().abs().max()) < 1.0 for z in zs[2:])  # fc1, fc2 end in tanh
