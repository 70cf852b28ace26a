"""A training config that runs in seconds on a CPU, shared by the tests that train real runs."""

from __future__ import annotations

from pathlib import Path

from ibstudy.config import TrainConfig


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """The quick preset on 1,024 digits for 2 epochs, plane on 256 images, no probes; ``overrides``
    replace any field; runs are stored under ``tmp_path / "runs"``."""
    base = dict(
        train_size=1024, batch_size=32, lr=2e-3, eval_size=256, chunk_size=128, probe_size=256,
        probe_steps=20, epochs=2, device="cpu", results_dir=str(tmp_path / "runs"),
        probe_epochs=(),
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig.preset("quick", **base)
