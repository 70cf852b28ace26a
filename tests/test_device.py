"""Tests for ibstudy.device."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ibstudy.device import pick_device, seed_everything


def test_auto_and_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert pick_device("auto").type == "cuda"
    elif not torch.backends.mps.is_available():
        assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_absent_says_so():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match="auto"):
        pick_device("tpu")


def test_seed_everything_repeats_all_generators():
    seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
