"""What the tests share: the one tiny training config every test that trains a real run builds on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ibstudy.config import TrainConfig

#: LeNet5 on 512 mnist5k digits for 2 epochs, plane on 256 images (the quick preset otherwise)
TINY: dict[str, Any] = dict(
    train_size=512, eval_size=256, chunk_size=128, probe_size=256, probe_steps=20, epochs=2,
    device="cpu",
)  # fmt: skip


def tiny_config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    """The tiny config with ``overrides``; runs are stored under ``tmp_path / "runs"``."""
    return TrainConfig.preset(
        "quick", **{**TINY, "results_dir": str(tmp_path / "runs"), **overrides}
    )


def outcome_config(tmp_path: Path, **overrides: Any) -> TrainConfig:
    """The tiny config on 1,024 digits, batches of 32 at lr 2e-3 and no probes (the outcome,
    trust and method tests: seconds per run, accuracy well above chance)."""
    base = dict(train_size=1024, batch_size=32, lr=2e-3, probe_epochs=())
    return tiny_config(tmp_path, **{**base, **overrides})


def sigint_as_default() -> None:
    """``preexec_fn`` for a child that the test interrupts: SIGINT back to its default, so Python
    turns it into KeyboardInterrupt even when the suite was started in the background (a shell
    starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
