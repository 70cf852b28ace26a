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


def np_gaussian_gram(x: Any, sigma: float) -> Any:
    """Reference Gaussian Gram ``exp(-||u - u'||^2 / (2 sigma^2 d))`` in float64 numpy, from the rule."""
    import numpy as np

    f = np.asarray(x).reshape(len(x), -1).astype(np.float64)
    d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma**2 * f.shape[1]))


def np_renyi_entropy(k: Any, alpha: float) -> float:
    """Reference matrix-based Rényi entropy (bits) of ``k / tr(k)``: the definition, with eigenvalues
    below the rank tolerance n * eps * max|lambda| counted as 0."""
    import numpy as np

    a = k / np.trace(k)
    lam = np.linalg.eigvalsh(a)
    lam = np.where(lam <= a.shape[0] * np.finfo(np.float64).eps * np.abs(lam).max(), 0.0, lam)
    return float(np.log2(np.sum(lam**alpha)) / (1.0 - alpha))


def _one_thread_per_xdist_worker() -> None:
    """Under pytest-xdist (``make test``: one worker per core) every worker and the processes it
    starts use one intra-op thread: two workers with torch's default threads each would contend
    for the same cores and run slower together than one after the other."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        torch.set_num_threads(1)


_one_thread_per_xdist_worker()
