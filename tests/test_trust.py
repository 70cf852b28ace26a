"""Run folders are data, not code: loading a shared run never executes what is inside it.

Checkpoints are read with torch's weights-only loader; one of the previous format (pickled RNG
states) is refused naming the file unless the caller trusts it; damaged weights files name the file
and the fix (docs/method.md §10, trust model)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import outcome_config as tiny_config

from ibstudy.__main__ import main
from ibstudy.config import TrainConfig
from ibstudy.data import INFO
from ibstudy.measure import measure
from ibstudy.models import build_model
from ibstudy.outcomes import outcomes_for, test_outcomes
from ibstudy.store import Run, UntrustedCheckpoint
from ibstudy.study import read_pooled_tables
from ibstudy.training import train


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """The shared tiny config on 256 digits with 10 probe steps."""
    return tiny_config(tmp_path, **{"train_size": 256, "probe_steps": 10, **overrides})


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): the code a shared file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Run:
    """An uninterrupted tiny run (2 epochs, weights at 0, 1, 2)."""
    return train(tiny(tmp_path_factory.mktemp("reference")), progress=False)


def _copy(run: Run, tmp_path: Path) -> TrainConfig:
    """A copy of ``run`` under ``tmp_path``; returns the config whose run_dir() it is."""
    cfg = tiny(tmp_path)
    shutil.copytree(run.path, cfg.run_dir())
    return cfg


def _write_old_format(path: Path, numpy_rows: bool = True) -> None:
    """Rewrite ``path/checkpoint.pt`` as the previous version wrote it: numpy's RNG state as the
    tuple of ``np.random.get_state()``, Python's as ``random.getstate()``, no ``format`` key."""
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    rng, key = state["rng"], state["rng"]["numpy"]
    old_numpy = (
        key["bit_generator"], key["key"].numpy().astype(np.uint32), key["pos"], key["has_gauss"],
        key["cached_gaussian"],
    )  # fmt: skip
    assert type(old_numpy[1]) is type(np.random.get_state()[1])
    state["rng"] = {"torch": rng["torch"], "numpy": old_numpy, "python": rng["python"]}
    del state["format"]
    if numpy_rows:  # numpy scalars in the rows, as older trainers could leave them
        state["epoch_rows"] = [
            {k: np.float64(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in state["epoch_rows"]
        ]
    torch.save(state, path / "checkpoint.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path / "checkpoint.pt", weights_only=True)


def _same_tables(run: Run, ref: Run) -> None:
    pd.testing.assert_frame_equal(
        run.epochs.drop(columns="seconds"), ref.epochs.drop(columns="seconds")
    )
    pd.testing.assert_frame_equal(run.layers, ref.layers)


# ---------------------------------------------------------------- the new format
def test_checkpoint_is_read_by_the_weights_only_loader(reference):
    state = torch.load(reference.path / "checkpoint.pt", weights_only=True)
    assert state["format"] == 2 and state["epoch"] == 2
    assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)
    assert isinstance(state["rng"]["python"], tuple)
    plain = (int, float, str, bool, type(None))
    for row in state["epoch_rows"] + state["layer_rows"]:
        assert all(type(v) in plain for v in row.values()), row


# ---------------------------------------------------------------- a malicious checkpoint
@pytest.fixture
def malicious(reference, tmp_path) -> tuple[TrainConfig, Path]:
    """A copy of the reference run whose checkpoint.pt carries a payload and whose layers.csv is
    missing (so every reader would want to repair the tables from the checkpoint)."""
    cfg = _copy(reference, tmp_path)
    marker = tmp_path / "pwned"
    state = {"epoch_rows": [], "layer_rows": [], "payload": Payload(marker)}
    torch.save(state, cfg.run_dir() / "checkpoint.pt")
    (cfg.run_dir() / "layers.csv").unlink()
    return cfg, marker


def test_the_payload_is_live_when_trusted(malicious):
    cfg, marker = malicious
    try:
        Run.load(cfg.run_dir(), trust=True)  # trust means trust: the payload runs
    except ValueError:
        pass
    assert marker.exists()


def test_run_load_and_measure_never_unpickle(malicious, capsys):
    cfg, marker = malicious
    file = re.escape(str(cfg.run_dir() / "checkpoint.pt"))
    expected = rf"layers\.csv is missing.*{file}.*refused.*unpickling.*--trust-checkpoint"
    with pytest.raises(UntrustedCheckpoint, match=expected):
        Run.load(cfg.run_dir())
    with pytest.raises(UntrustedCheckpoint, match=expected):
        measure(cfg.run_dir())
    assert main(["measure", str(cfg.run_dir()), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(cfg.run_dir() / "checkpoint.pt") in err and "--trust-checkpoint" in err
    assert not marker.exists()


def test_resume_never_unpickles(malicious, capsys):
    cfg, marker = malicious
    file = re.escape(str(cfg.run_dir() / "checkpoint.pt"))
    with pytest.raises(UntrustedCheckpoint, match=rf"{file}.*--trust-checkpoint"):
        train(cfg, resume=True, progress=False)
    (cfg.run_dir() / "config.json").unlink()  # a checkpoint alone: read to tie it to the config
    with pytest.raises(UntrustedCheckpoint, match=rf"{file}.*--trust-checkpoint"):
        train(cfg, resume=True, progress=False)
    args = ["train", "--epochs", "2", "--train-size", "256", "--eval-size", "256"]
    args += ["--chunk-size", "128", "--probe-size", "256", "--probe-steps", "10", "--lr", "2e-3"]
    args += ["--batch-size", "32", "--probe-epochs", "", "--device", "cpu", "--no-progress"]
    args += ["--results-dir", cfg.results_dir, "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cfg.run_dir() / "checkpoint.pt") in err
    assert "--trust-checkpoint" in err
    assert not marker.exists()


def test_study_readers_never_unpickle(malicious, tmp_path):
    cfg, marker = malicious
    assert read_pooled_tables(["02_lenet5"], results_dir=str(tmp_path)) is None
    with pytest.raises(UntrustedCheckpoint, match=re.escape(str(cfg.run_dir() / "checkpoint.pt"))):
        outcomes_for([cfg.run_id()], cfg.results_dir)
    assert not marker.exists()


# ---------------------------------------------------------------- the previous format
def test_previous_format_resumes_only_with_trust(reference, tmp_path, capsys):
    cfg = tiny(tmp_path)
    train(cfg, stop_after=1, progress=False)
    _write_old_format(cfg.run_dir())
    file = re.escape(str(cfg.run_dir() / "checkpoint.pt"))
    with pytest.raises(UntrustedCheckpoint, match=rf"^'{file}' is refused.*--trust-checkpoint"):
        train(cfg, resume=True, progress=False)
    run = train(cfg, resume=True, progress=False, trust=True)
    assert run.complete and not run.repaired
    _same_tables(run, reference)
    for epoch in (1, 2):
        a, b = run.load_model(epoch).state_dict(), reference.load_model(epoch).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert torch.load(run.path / "checkpoint.pt", weights_only=True)["format"] == 2


def test_previous_format_repairs_tables_only_with_trust(reference, tmp_path):
    cfg = _copy(reference, tmp_path)
    _write_old_format(cfg.run_dir())
    (cfg.run_dir() / "layers.csv").unlink()
    with pytest.raises(UntrustedCheckpoint, match="--trust-checkpoint"):
        Run.load(cfg.run_dir())
    run = Run.load(cfg.run_dir(), trust=True)
    assert run.repaired and run.complete
    _same_tables(run, reference)
    assert len(measure(cfg.run_dir(), epochs=[2], trust=True)) == cfg.num_blocks() + 1
    # a trusted resume of the complete run rewrites the checkpoint in the safe format
    train(cfg, resume=True, progress=False, trust=True)
    assert torch.load(cfg.run_dir() / "checkpoint.pt", weights_only=True)["format"] == 2
    _same_tables(Run.load(cfg.run_dir()), reference)


# ---------------------------------------------------------------- damaged weights files
def _foreign(path: Path, cfg: TrainConfig) -> None:
    info = INFO[cfg.dataset]
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.image_size, 2.0)
    torch.save(model.state_dict(), path)


DAMAGE = {
    "truncated": lambda p, cfg: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "not-a-zip": lambda p, cfg: p.write_bytes(b"not a zip file at all"),
    "wrong-keys": lambda p, cfg: torch.save({"conv.weight": torch.zeros(3)}, p),
    "another-model": _foreign,
    "payload": lambda p, cfg: torch.save({"x": Payload(p.parent / "pwned")}, p),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_weights_name_the_file(reference, tmp_path, capsys, damage):
    cfg = _copy(reference, tmp_path)
    file = cfg.run_dir() / "weights" / "epoch_0001.pt"
    DAMAGE[damage](file, cfg)
    expected = rf"{re.escape(str(file))}.*retrain the run.*leave epoch 1 out \(--epochs"
    run = Run.load(cfg.run_dir())
    with pytest.raises(ValueError, match=expected):
        run.load_model(1)
    with pytest.raises(ValueError, match=expected):
        test_outcomes(run, 1)
    assert main(["measure", str(cfg.run_dir()), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(file) in err
    assert "--epochs" in err
    assert not (file.parent / "pwned").exists()
    assert main(["measure", str(cfg.run_dir()), "--epochs", "0,2", "--no-progress"]) == 0
