"""Training data held on the device (issue 13): same batches as the CPU DataLoader for a seed,
augmentation on the device, and the trainer's throughput switches on a CPU (warnings, same numbers)."""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd
import pytest
import torch
from test_data import _write_cifar10
from torch.utils.data import Subset

from ibstudy.data import load_dataset, make_loader
from ibstudy.device_data import DeviceData
from ibstudy.training import TrainConfig, Trainer, train


def _assert_same_batches(ds, dev: DeviceData, batch_size: int, seed: int, epoch: int) -> None:
    cpu = list(make_loader(ds, batch_size, seed=seed, epoch=epoch))
    gpu = list(dev.batches(batch_size, seed=seed, epoch=epoch))
    assert len(cpu) == len(gpu) == dev.num_batches(batch_size)
    for (xa, ya), (xb, yb) in zip(cpu, gpu, strict=True):
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed, epoch", [(0, 1), (3, 7)])
def test_mnist5k_batches_equal_the_loader(seed, epoch):
    train_set = load_dataset("mnist5k", split="train")
    _assert_same_batches(train_set, DeviceData(train_set, "cpu"), 64, seed, epoch)
    subset = Subset(train_set, range(500))  # train_size: the first n images, short last batch
    _assert_same_batches(subset, DeviceData(subset, "cpu"), 128, seed, epoch)


def test_cifar10_batches_equal_the_loader(tmp_path):
    _write_cifar10(tmp_path, n=40)
    train_set = load_dataset("cifar10", split="train", root=tmp_path)
    dev = DeviceData(train_set, "cpu")
    assert dev.images.dtype == torch.uint8 and dev.images.shape == (200, 3, 32, 32)
    _assert_same_batches(train_set, dev, 32, seed=1, epoch=2)


def test_device_flips_and_translations():
    base = load_dataset("mnist5k", split="train")
    subset = Subset(base, range(256))
    plain = torch.cat([x for x, _ in DeviceData(subset, "cpu").batches(256, seed=0, epoch=1)])
    shifted = DeviceData(subset, "cpu", augment=True)
    aug = torch.cat([x for x, _ in shifted.batches(256, seed=0, epoch=1)])
    again = torch.cat([x for x, _ in shifted.batches(256, seed=0, epoch=1)])
    assert torch.equal(aug, again)  # the augmentation is seeded by (seed, epoch)
    other = torch.cat([x for x, _ in shifted.batches(256, seed=0, epoch=2)])
    assert not torch.equal(aug, other)
    # each augmented digit is its plain image shifted by at most 2 pixels in each direction
    fill = float(plain.min())
    padded = torch.nn.functional.pad(plain, (2, 2, 2, 2), value=fill)
    for i in range(0, 256, 37):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(5) for dx in range(5)]
        assert any(torch.allclose(aug[i], c, atol=1e-6) for c in crops)
    assert (aug != plain).flatten(1).any(dim=1).float().mean() > 0.5  # most digits moved


def test_cifar_flips_on_device(tmp_path):
    _write_cifar10(tmp_path, n=40)
    train_set = load_dataset("cifar10", split="train", root=tmp_path)
    plain = torch.cat([x for x, _ in DeviceData(train_set, "cpu").batches(200, seed=0, epoch=1)])
    dev = DeviceData(train_set, "cpu", augment=True)
    aug = torch.cat([x for x, _ in dev.batches(200, seed=0, epoch=1)])
    flipped = torch.tensor([torch.equal(a, p.flip(-1)) for a, p in zip(aug, plain, strict=True)])
    kept = torch.tensor([torch.equal(a, p) for a, p in zip(aug, plain, strict=True)])
    assert bool((flipped | kept).all()) and 60 < int(flipped.sum()) < 140  # about half


def test_bad_dataset():
    with pytest.raises(ValueError, match="ds must be an ImageDataset"):
        DeviceData([(torch.zeros(1, 32, 32), 0)], "cpu")


def test_trainer_on_device_data_gives_the_same_run(tmp_path):
    """device_data='on' (here on the CPU) trains on the same batches: same numbers as the loader."""
    base = dict(
        train_size=512, eval_size=256, chunk_size=128, probe_size=256, probe_steps=10, epochs=2,
        device="cpu",
    )  # fmt: skip
    off = train(
        TrainConfig.preset("quick", results_dir=str(tmp_path / "a"), **base), progress=False
    )
    on_cfg = TrainConfig.preset("quick", results_dir=str(tmp_path / "b"), device_data="on", **base)
    on = train(on_cfg, progress=False)
    assert on_cfg.run_id() == off.config.run_id()  # an execution detail, not part of the identity
    cols = ["epoch", "step", "train_loss", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(on.epochs[cols], off.epochs[cols], rtol=1e-5)


def test_cuda_switches_warn_on_cpu_and_change_nothing(tmp_path):
    cfg = TrainConfig.preset(
        "quick", train_size=256, eval_size=256, chunk_size=128, probe_size=256, epochs=1,
        device="cpu", results_dir=str(tmp_path), compile=True, channels_last=True,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(cfg, progress=False)
    text = " ".join(str(w.message) for w in caught)
    assert "compile=True is used on CUDA only" in text and "channels_last=True" in text
    assert run.complete


class _BackwardFails(torch.autograd.Function):
    """Identity whose backward raises, as a lazily compiled backward that fails would."""

    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("inductor: backward compilation failed")


@pytest.mark.parametrize("method", ["e2e", "layerwise"])
@pytest.mark.parametrize("stage", ["forward", "backward"])
def test_a_failing_compiled_model_falls_back_to_eager(tmp_path, method, stage):
    """torch.compile only runs on CUDA, so its failure is staged here by a stub compiler: the
    'compiled' parts fail (in the forward or in its backward) at the third call; the batch is redone
    eagerly, a warning says so, and the epoch equals an eager one to the bit."""
    extra = {} if method == "e2e" else {"method": "layerwise", "head": "linear"}
    cfg = TrainConfig.preset(
        "quick", train_size=512, eval_size=256, chunk_size=128, probe_size=256, epochs=1,
        batch_size=64, device="cpu", results_dir=str(tmp_path), **extra,
    )  # fmt: skip
    eager = Trainer(cfg, progress=False)
    want = eager.train_epoch(1)
    calls = iter(range(1, 10_000))

    def staged(module):
        def forward(h):
            out = module(h)
            if next(calls) != 3:
                return out
            if stage == "forward":
                raise RuntimeError("inductor: forward compilation failed")
            return _BackwardFails.apply(out)

        return forward

    tr = Trainer(dataclasses.replace(cfg, compile=True), progress=False, compiler=staged)
    assert tr.compiled
    with pytest.warns(UserWarning, match=f"torch.compile failed during training.*{stage}"):
        got = tr.train_epoch(1)
    assert not tr.compiled
    assert (got["train_loss"], got["train_acc"]) == (want["train_loss"], want["train_acc"])
    for a, b in zip(tr.model.parameters(), eager.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"device_data": "gpu"}, r"device_data must be one of \['auto', 'on', 'off'\]"),
        ({"compile": "yes"}, "compile"),
        (
            {"device_data": "on", "method": "layerwise", "local_loss": "supcon", "augment": True},
            "device_data='on' cannot give the two augmented views",
        ),
    ],
)
def test_bad_switches(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.preset("quick", results_dir=str(tmp_path), **overrides)
