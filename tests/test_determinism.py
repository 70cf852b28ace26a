"""Bitwise reproducibility on one machine (docs/method.md §13): the same config trained twice in one
process gives the same tables and weights to the bit, so a source of nondeterminism inside the code
(an unseeded generator, a set's order, a global state left behind) is caught here, not by a
verdict that moves between two runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from conftest import tiny_config

from ibstudy.training import train

TIMING = ["seconds"]  # wall-clock columns: the only ones allowed to differ


def test_training_twice_in_one_process_is_bitwise_equal(tmp_path: Path) -> None:
    runs = [train(tiny_config(tmp_path / side), progress=False) for side in ("a", "b")]
    first, second = runs
    assert first.path != second.path and first.path.name == second.path.name
    assert len(first.epochs) >= 2 and len(first.layers) > 0
    pd.testing.assert_frame_equal(
        first.epochs.drop(columns=TIMING), second.epochs.drop(columns=TIMING), check_exact=True
    )
    assert not set(TIMING) & set(first.layers.columns)
    pd.testing.assert_frame_equal(first.layers, second.layers, check_exact=True)
    files = sorted(p.name for p in (first.path / "weights").glob("epoch_*.pt"))
    assert f"epoch_{first.config.epochs:04d}.pt" in files  # the final weights are among them
    assert files == sorted(p.name for p in (second.path / "weights").glob("epoch_*.pt"))
    for name in files:
        a, b = (torch.load(run.path / "weights" / name, weights_only=True) for run in runs)
        assert list(a) == list(b)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
