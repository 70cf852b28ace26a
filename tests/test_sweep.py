"""Tests for ibstudy.sweep: grid expansion and parsing, one train command per run (--dry-run), bad
input (one line, exit 2, nothing trained), a real tiny sweep reused from cache, a locked run."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

import ibstudy.training as training
from ibstudy.__main__ import main
from ibstudy.config import TrainConfig
from ibstudy.store import Run, run_lock
from ibstudy.sweep import (
    add_sweep_parser,
    command_for,
    expand_grid,
    parse_grid,
    run_sweep,
    sweep_configs,
)

TINY = [
    "--train-size", "256", "--eval-size", "256", "--chunk-size", "128", "--epochs", "1",
    "--probe-epochs", "none", "--device", "cpu", "--no-progress",
]  # fmt: skip


def tiny_configs(tmp_path) -> list[TrainConfig]:
    """The two configs of ``sweep --method e2e,layerwise *TINY --results-dir tmp_path``."""
    fixed = dict(train_size=256, eval_size=256, chunk_size=128, epochs=1, probe_epochs=())
    return sweep_configs(
        "quick", {"method": ["e2e", "layerwise"]}, **fixed, device="cpu", results_dir=str(tmp_path)
    )


def sweep(argv: list[str]) -> int:
    """Run ``sweep ARGV`` in-process through a parser holding only the sweep sub-command."""
    parser = argparse.ArgumentParser(prog="python -m ibstudy")
    sub = parser.add_subparsers()
    add_sweep_parser(sub)
    try:
        args = parser.parse_args(["sweep", *argv])
    except SystemExit as exc:  # argparse-level errors
        return int(exc.code)
    return int(args.func(args))


class _Captured(Exception):
    pass


def config_of(command: str, monkeypatch) -> TrainConfig:
    """The config (and resume flag) that ``python -m ibstudy train ...`` would train."""
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "ibstudy", "train"] and words[-1] == "--resume"
    seen = {}

    def fake_train(cfg, resume=False, **kwargs):
        seen.update(cfg=cfg, resume=resume)
        raise _Captured

    monkeypatch.setattr(training, "train", fake_train)
    with pytest.raises(_Captured):
        main(words[3:])
    assert seen["resume"] is True
    return seen["cfg"]


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("train was called")

    monkeypatch.setattr(training, "train", refuse)


# ---------------------------------------------------------------- the grid
def test_expand_grid_order_last_field_fastest():
    points = expand_grid({"method": ["e2e", "layerwise"], "seed": [0, 1, 2]})
    assert [(p["method"], p["seed"]) for p in points] == [
        ("e2e", 0), ("e2e", 1), ("e2e", 2), ("layerwise", 0), ("layerwise", 1), ("layerwise", 2),
    ]  # fmt: skip
    assert [list(p) for p in points] == [["method", "seed"]] * 6
    assert expand_grid({}) == [{}]


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"sed": [0]}, r"unknown TrainConfig field 'sed'.*allowed: \[.*'seed'"),
        ({"seed": []}, "seed: empty value list"),
        ({"lr": [1e-3, 0.001]}, "lr: duplicate value 0.001"),
        ({"seed": "012"}, "seed: the grid needs a list of values"),
    ],
)
def test_expand_grid_bad_input(grid, message):
    with pytest.raises(ValueError, match=message):
        expand_grid(grid)


def test_parse_grid_types_and_order():
    grid = parse_grid(
        [
            ("seed", "2,0"), ("lr", "1e-3, 5e-4"), ("augment", "true,false"),
            ("milestones", "20+30,none,5"), ("train_size", "none,256"), ("method", "e2e"),
            ("probe-epochs", "0+3"),
        ]
    )  # fmt: skip
    assert grid == {
        "seed": [2, 0], "lr": [1e-3, 5e-4], "augment": [True, False],
        "milestones": [(20, 30), (), (5,)], "train_size": [None, 256], "method": ["e2e"],
        "probe_epochs": [(0, 3)],
    }  # fmt: skip
    assert list(grid) == [
        "seed",
        "lr",
        "augment",
        "milestones",
        "train_size",
        "method",
        "probe_epochs",
    ]


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([("seed", "x")], "seed: expected an integer, got 'x'"),
        ([("lr", "fast")], "lr: expected a number"),
        ([("augment", "maybe")], "augment: expected true or false"),
        ([("milestones", "20+x")], "milestones: expected integers joined by '\\+'"),
        ([("train_size", "all")], "train_size: expected an integer or none"),
        ([("seed", "")], "seed: empty value list"),
        ([("seed", "0,,1")], "seed: empty value in the comma list"),
        ([("seed", "0"), ("seed", "1")], "seed: given twice"),
        ([("nope", "1")], "unknown TrainConfig field 'nope'"),
    ],
)
def test_parse_grid_bad_input(pairs, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(pairs)


def test_sweep_configs_validates_every_point_first():
    configs = sweep_configs("quick", {"method": ["e2e", "layerwise"]}, seed=3)
    assert [(c.method, c.head, c.seed) for c in configs] == [
        ("e2e", "none", 3),
        ("layerwise", "linear", 3),
    ]
    with pytest.raises(
        ValueError, match=r"grid point method='e2e', head='mlp': head must be 'none'"
    ):  # no layer-wise method in the grid: the head is a mistake, not an axis of other points
        sweep_configs("quick", {"method": ["e2e", "forward_forward"], "head": ["mlp"]})
    with pytest.raises(ValueError, match="are the same run"):  # eval_size is not part of a run's id
        sweep_configs("quick", {"eval_size": [256, 512]}, chunk_size=128)
    with pytest.raises(ValueError, match=r"both fixed and in the sweep grid"):
        sweep_configs("quick", {"seed": [0, 1]}, seed=2)
    with pytest.raises(ValueError, match="unknown TrainConfig field 'sed' in the fixed settings"):
        sweep_configs("quick", {"seed": [0, 1]}, sed=2)


def test_layerwise_only_settings_collapse_for_the_other_methods():
    """E2E + layer-wise x heads x seeds is one grid: E2E runs once per seed, with head 'none'."""
    configs = sweep_configs(
        "paper", {"method": ["e2e", "layerwise"], "head": ["linear", "mlp"], "seed": [0, 1]},
        dataset="cifar10", model="resnet50",
    )  # fmt: skip
    assert [(c.method, c.head, c.seed) for c in configs] == [
        ("e2e", "none", 0), ("e2e", "none", 1), ("layerwise", "linear", 0),
        ("layerwise", "linear", 1), ("layerwise", "mlp", 0), ("layerwise", "mlp", 1),
    ]  # fmt: skip
    assert all(c.model == "resnet50" and c.epochs == 400 for c in configs)
    regs = sweep_configs("quick", {"method": ["layerwise", "e2e"], "nhsic_reg": ["none", "global"]})
    assert [(c.method, c.nhsic_reg) for c in regs] == [
        ("layerwise", "none"), ("layerwise", "global"), ("e2e", "none"),
    ]  # fmt: skip
    fixed = sweep_configs("quick", {"method": ["layerwise", "e2e"]}, head="mlp")  # a fixed head too
    assert [(c.method, c.head) for c in fixed] == [("layerwise", "mlp"), ("e2e", "none")]


def test_dry_run_of_the_paper_grid(capsys, monkeypatch, no_training):
    argv = ["--dry-run", "--preset", "paper", "--dataset", "cifar10,cifar100", "--method",
            "e2e,layerwise", "--head", "linear,mlp", "--seed", "0,1,2"]  # fmt: skip
    assert sweep(argv) == 0
    out, err = capsys.readouterr()
    configs = [config_of(line, monkeypatch) for line in out.splitlines()]
    assert len(configs) == 18 == len({c.run_id() for c in configs})  # 2 x (1 + 2) x 3
    assert "24 grid points, 18 runs" in err
    assert sum(c.method == "e2e" for c in configs) == 6 and all(
        c.head == "none" for c in configs if c.method == "e2e"
    )


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("quick", dict(method="layerwise", head="mlp", epochs=1, train_size=256, augment=True)),
        ("study", dict(epochs=10, milestones=(), lr=2e-3, floor=False, probe_epochs=(0, 10))),
        ("study", dict(method="layerwise_sequential", epochs=2, local_loss="similarity_matching")),
        ("paper", dict(method="layerwise_sequential", save_epochs=(0, 1), weight_decay=1e-4)),
    ],
)
def test_command_for_rebuilds_the_config(monkeypatch, preset, overrides):
    cfg = TrainConfig.preset(preset, **overrides)
    command = command_for(cfg, preset)
    assert config_of(command, monkeypatch) == cfg
    assert "--head" not in command or "mlp" in command  # derived values are left to the preset
    assert command_for(cfg, preset, always=["seed"]).count("--seed 0") == 1


# ---------------------------------------------------------------- the command line
def test_dry_run_prints_one_command_per_grid_point(capsys, monkeypatch, no_training):
    assert sweep(["--dry-run", "--method", "e2e,layerwise", "--seed", "0,1,2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 6 and err == ""
    configs = [config_of(line, monkeypatch) for line in lines]
    assert [(c.method, c.seed) for c in configs] == [
        (m, s) for m in ("e2e", "layerwise") for s in (0, 1, 2)
    ]
    assert [c.head for c in configs] == ["none"] * 3 + ["linear"] * 3  # implied by the method
    base = TrainConfig.preset("quick")
    for c in configs:  # every other field is the preset's
        assert dataclasses.replace(c, method="e2e", head="none", seed=0) == base
    assert len({c.run_id() for c in configs}) == 6


def test_dry_run_keeps_fixed_options(capsys, monkeypatch):
    argv = ["--dry-run", "--preset", "study", "--epochs", "10", "--milestones", "5+8,none",
            "--lr", "2e-3", "--no-progress"]  # fmt: skip
    assert sweep(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("--no-progress --resume" in line for line in lines)
    configs = [config_of(line, monkeypatch) for line in lines]
    assert [c.milestones for c in configs] == [(5, 8), ()]
    assert all(c.epochs == 10 and c.lr == 2e-3 and c.batch_size == 64 for c in configs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fields", "1,2"], "unknown TrainConfig field 'fields'"),
        (["--seed", ""], "seed: empty value list"),
        (["--seed", "0,1,0"], "seed: duplicate value 0"),
        (["--method", "e2e", "--head", "mlp"], "error: head must be 'none' when method='e2e'"),
        (
            ["--method", "e2e,forward_forward", "--head", "mlp"],
            "grid point method='e2e': head must",
        ),
        (
            ["--method", "e2e,signal_propagation", "--local-loss", "supcon", "--augment", "true"],
            "grid point method='e2e': local_loss must be 'cross_entropy'",
        ),
        (["--seed", "x"], "seed: expected an integer"),
        (["--seed"], "argument --seed: expected one argument"),
        (["--preset", "huge"], "argument --preset: invalid choice"),
        (["stray"], "unexpected argument(s) ['stray']"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_input_is_one_line_and_runs_nothing(
    capsys, no_training, tmp_path, argv, message, dry_run
):
    flags = ["--dry-run"] if dry_run else []
    code = sweep([*flags, "--results-dir", str(tmp_path / "runs"), *argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert out == "" and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- real runs
def test_tiny_sweep_trains_then_reuses(capsys, tmp_path):
    argv = ["--method", "e2e,layerwise", *TINY, "--results-dir", str(tmp_path)]
    assert sweep(argv) == 0
    out = capsys.readouterr().out
    configs = tiny_configs(tmp_path)
    stamps = {}
    for cfg in configs:
        run = Run.load(cfg.run_dir())
        assert run.complete and len(run.epochs) == 2
        assert f"trained  {cfg.run_id()}" in out
        stamps[cfg.run_id()] = (cfg.run_dir() / "checkpoint.pt").stat().st_mtime_ns
    assert "2 of 2 run(s) finished" in out

    assert sweep(argv) == 0  # the same sweep again: both runs come from the cache
    out = capsys.readouterr().out
    for cfg in configs:
        assert f"cached   {cfg.run_id()}" in out
        assert (cfg.run_dir() / "checkpoint.pt").stat().st_mtime_ns == stamps[cfg.run_id()]
    runs = run_sweep(configs, progress=False)
    assert [r.path for r in runs] == [c.run_dir() for c in configs]


def test_locked_run_is_reported_and_the_others_run(capsys, tmp_path):
    argv = ["--method", "e2e,layerwise", *TINY, "--results-dir", str(tmp_path)]
    e2e, layerwise = tiny_configs(tmp_path)
    with run_lock(e2e.run_dir()):  # as if another process were writing the first run
        assert sweep(argv) == 1
    out, err = capsys.readouterr()
    assert f"sweep: run {e2e.run_id()} failed" in err and "being written by another process" in err
    assert f"failed   {e2e.run_id()}" in out and "1 of 2 run(s) finished" in out
    assert not (e2e.run_dir() / "checkpoint.pt").exists()
    assert Run.load(layerwise.run_dir()).complete
    assert f"trained  {layerwise.run_id()}" in out


def test_side_by_side_one_run_per_gpu(capfd, tmp_path):
    """--gpus runs the grid as processes, one per listed GPU id at a time (CUDA_VISIBLE_DEVICES);
    on this CPU machine the processes train on the CPU, which checks the scheduling."""
    argv = ["--method", "e2e,layerwise", *TINY, "--results-dir", str(tmp_path), "--no-progress"]
    assert sweep([*argv, "--gpus", "0,1"]) == 0
    out = capfd.readouterr().out
    assert "on GPU 0:" in out and "on GPU 1:" in out and "2 of 2 run(s) finished" in out
    for cfg in tiny_configs(tmp_path):
        assert Run.load(cfg.run_dir()).complete
    assert sweep([*argv, "--gpus", "0,0"]) == 2  # duplicate ids: bad input, nothing runs
