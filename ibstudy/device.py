"""Device choice (cuda > mps > cpu) and seeding that makes CPU runs repeatable."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``device`` ("auto" | "cpu" | "cuda[:k]" | "mps"); "auto" prefers cuda, then mps, then cpu."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not re.fullmatch(r"(auto|cpu|mps|cuda(:\d+)?)", device):
        raise ValueError(
            f"device must be one of {list(DEVICES)} or 'cuda:N' with N an integer, got {device!r}"
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use device='auto' or 'cpu'"
        )
    if device == "mps" and not _mps_available():
        raise ValueError("device='mps' was requested but MPS is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); with ``deterministic`` set cuDNN's cheap flags."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
