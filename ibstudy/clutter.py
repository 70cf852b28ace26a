"""Cluttered digits: each digit at a random place on a larger canvas among fragments of other digits.

The "cluttered MNIST" construction (docs/method.md §6): a 28x28 digit is placed whole at a uniformly
random position of a ``canvas`` x ``canvas`` black image, and ``fragments`` crops of ``fragment_size``
x ``fragment_size`` pixels, cut at random places from other digits of the *same split*, are pasted at
random places. Pixels combine by maximum, so every pixel of the digit is still present (it can only be
brightened where a fragment overlaps it). Labels are unchanged; one fixed generator seed per split
makes the data a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ibstudy.checks import check_int

__all__ = ["Clutter", "clutter_digits"]

DIGIT_SIZE = 28


@dataclass(frozen=True)
class Clutter:
    """How a split is cluttered: canvas side, number and side of the fragments, generator seeds."""

    canvas: int = 48
    fragments: int = 6
    fragment_size: int = 8
    train_seed: int = 1
    test_seed: int = 2

    def __post_init__(self) -> None:
        check_int("fragments", self.fragments, minimum=0)
        check_int("fragment_size", self.fragment_size, minimum=1)
        check_int("canvas", self.canvas, minimum=1)
        if self.canvas < DIGIT_SIZE:
            raise ValueError(
                f"canvas must be >= {DIGIT_SIZE} (a whole digit must fit), got {self.canvas}"
            )
        if self.fragment_size > DIGIT_SIZE:
            raise ValueError(
                f"fragment_size must be <= {DIGIT_SIZE} (cut from a {DIGIT_SIZE}-px digit) and "
                f"<= canvas={self.canvas}, got {self.fragment_size}"
            )
        check_int("train_seed", self.train_seed, minimum=0)
        check_int("test_seed", self.test_seed, minimum=0)

    def seed(self, split: str) -> int:
        """The generator seed of ``split`` (``"train"`` or ``"test"``)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
        return self.train_seed if split == "train" else self.test_seed


def clutter_digits(digits: Tensor, clutter: Clutter, seed: int) -> tuple[Tensor, np.ndarray]:
    """``digits`` (N, 1, 28, 28) in [0, 1] on cluttered canvases (N, 1, canvas, canvas), and the
    (N, 2) top-left corners where each digit was placed; fragments come from ``digits`` themselves
    (never from the digit they surround), so splits built separately share no source digit."""
    if not isinstance(clutter, Clutter):
        raise ValueError(f"clutter must be a Clutter, got {type(clutter).__name__}")
    if digits.ndim != 4 or tuple(digits.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(
            f"digits must have shape (N, 1, {DIGIT_SIZE}, {DIGIT_SIZE}), got {tuple(digits.shape)}"
        )
    n = digits.shape[0]
    if clutter.fragments and n < 2:
        raise ValueError(f"digits must hold >= 2 images to cut fragments from others, got {n}")
    rng = np.random.default_rng(seed)
    side, f, k = clutter.canvas, clutter.fragment_size, clutter.fragments
    corners = rng.integers(0, side - DIGIT_SIZE + 1, size=(n, 2))
    # fragment i of image j: a source digit != j (uniform over the others), a crop corner, a place
    source = rng.integers(0, n - 1, size=(n, k)) if k else np.zeros((n, 0), dtype=np.int64)
    source = source + (source >= np.arange(n)[:, None])
    crop = rng.integers(0, DIGIT_SIZE - f + 1, size=(n, k, 2))
    place = rng.integers(0, side - f + 1, size=(n, k, 2))
    src = digits.numpy() if digits.dtype == torch.float32 else digits.float().numpy()
    out = np.zeros((n, 1, side, side), dtype=np.float32)
    for j in range(n):
        canvas = out[j, 0]
        for i in range(k):
            (cr, cc), (pr, pc) = crop[j, i], place[j, i]
            patch = src[source[j, i], 0, cr : cr + f, cc : cc + f]
            np.maximum(
                canvas[pr : pr + f, pc : pc + f], patch, out=canvas[pr : pr + f, pc : pc + f]
            )
        r, c = corners[j]
        view = canvas[r : r + DIGIT_SIZE, c : c + DIGIT_SIZE]
        np.maximum(view, src[j, 0], out=view)
    return torch.from_numpy(out), corners
