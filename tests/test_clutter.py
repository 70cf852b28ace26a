"""Tests for the cluttered digits (ibstudy.clutter) and the ``mnist5k_cluttered`` dataset: a pure
function of its seed, labels unchanged, every digit pixel present on the canvas, fragments cut from
the split's own other digits, bad settings named before any data is built."""

from __future__ import annotations

import pytest
import torch

from ibstudy import data
from ibstudy.clutter import Clutter, clutter_digits
from ibstudy.config import TrainConfig
from ibstudy.models import build_model


def constant_digits(values: list[float]) -> torch.Tensor:
    """Digits that are a centred 12x12 square of one value each (values identify the source)."""
    x = torch.zeros(len(values), 1, 28, 28)
    for i, v in enumerate(values):
        x[i, 0, 8:20, 8:20] = v
    return x


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    digits = constant_digits([0.1 * (i + 1) for i in range(6)])
    clutter = Clutter(canvas=40, fragments=4, fragment_size=8)
    a, ca = clutter_digits(digits, clutter, seed=3)
    b, cb = clutter_digits(digits, clutter, seed=3)
    c, _ = clutter_digits(digits, clutter, seed=4)
    assert torch.equal(a, b) and (ca == cb).all()
    assert not torch.equal(a, c)
    assert a.shape == (6, 1, 40, 40)


def test_digit_pixels_present_and_nothing_else_without_fragments() -> None:
    digits = torch.rand(5, 1, 28, 28)
    out, corners = clutter_digits(digits, Clutter(canvas=48, fragments=0), seed=0)
    for j, (r, c) in enumerate(corners):
        assert torch.equal(out[j, 0, r : r + 28, c : c + 28], digits[j, 0])
        rest = out[j, 0].clone()
        rest[r : r + 28, c : c + 28] = 0
        assert float(rest.abs().sum()) == 0.0
    assert len({tuple(c) for c in corners}) > 1  # positions vary


def test_fragments_never_hide_the_digit_and_come_from_other_digits_of_the_split() -> None:
    values = [(i + 1) / 16 for i in range(8)]  # exact in float32
    digits = constant_digits(values)
    out, corners = clutter_digits(digits, Clutter(canvas=48, fragments=6, fragment_size=8), seed=1)
    for j, (r, c) in enumerate(corners):
        assert (out[j, 0, r : r + 28, c : c + 28] >= digits[j, 0]).all()  # max compositing
        outside = out[j, 0].clone()
        outside[r : r + 28, c : c + 28] = 0
        seen = {float(v) for v in outside.unique()} - {0.0}
        assert seen and seen <= set(values) - {values[j]}  # other digits of the split


def test_real_splits_keep_labels_and_share_no_source_digit() -> None:
    plain_tr = data.load_dataset("mnist5k", split="train")
    clut_tr = data.load_dataset("mnist5k_cluttered", split="train")
    clut_te = data.load_dataset("mnist5k_cluttered", split="test")
    assert torch.equal(clut_tr.targets, plain_tr.targets)
    assert torch.equal(clut_te.targets, data.load_dataset("mnist5k", split="test").targets)
    x, _ = clut_tr[0]
    assert tuple(x.shape) == (1, 48, 48) and clut_tr.image_size == 48
    # the split's normalization constants are its own: mean 0, std 1 over the training split
    xs = data.eval_subset(clut_tr, len(clut_tr))[0]
    assert abs(float(xs.mean())) < 2e-3 and abs(float(xs.std()) - 1) < 2e-3
    # the test split is built from test digits only: train and test source indices are disjoint
    _, _, tr, te = data._mnist5k_digits()
    assert not set(tr.tolist()) & set(te.tolist())
    # each cluttered test image holds its own test digit somewhere (exactly, where no fragment lies)
    raw, _, _, te_idx = data._mnist5k_digits()
    info = data.INFO["mnist5k_cluttered"]
    img = data.eval_subset(clut_te, 1)[0][0, 0] * info.std[0] + info.mean[0]
    digit = raw[te_idx[0], 0]
    windows = img.unfold(0, 28, 1).unfold(1, 28, 1)  # (21, 21, 28, 28)
    assert bool(((windows - digit) >= -1e-5).all(-1).all(-1).any())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"canvas": 20}, "canvas"),
        ({"fragments": -1}, "fragments"),
        ({"fragment_size": 30}, "fragment_size"),
        ({"fragment_size": 0}, "fragment_size"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Clutter(**kwargs)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="mnist5k_cluttered"):
        TrainConfig(dataset="mnist5k_clutered").validate()


def test_models_on_the_canvas() -> None:
    vgg = build_model("vgg8b", 10, 1, 48, width=0.0625)
    shapes = vgg.block_output_shapes(1, 48)
    assert shapes == [(8, 48, 48), (16, 24, 24), (16, 24, 24), (32, 12, 12), (32, 6, 6),
                      (32, 3, 3), (64,)]  # fmt: skip
    assert build_model("lenet5", 10, 1, 48).block_output_shapes(1, 48)[1] == (16, 9, 9)
    cfg = TrainConfig(dataset="mnist5k_cluttered", model="vgg8b", width=0.0625)
    cfg.validate()
    assert cfg.num_blocks() == 7
